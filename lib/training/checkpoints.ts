/**
 * Training checkpoints with train_controlnet.py's semantics and crash-safe writes.
 *
 * Layout (under output_dir, as the script): `checkpoint-<global_step>/` holding
 *   controlnet/                 the ControlNet as a diffusers folder (written by a callback: the model's savePretrained)
 *   optimizer.safetensors       the optimizer state dict (step, moments; 8-bit codes packed in int32)
 *   scheduler.json              the lr scheduler state
 *   random_states.json          the RNG states
 *   data_state.json             the position in the data order
 *   training_state.json         global step and whatever else the loop records
 *   checkpoint.json             the completion marker, written last: format, step, every file with its size and SHA-256
 *
 * Every part above is written into every checkpoint (the trainer always has them; controlnet_ema/ is the one optional
 * folder, with use_ema, through `extra`), so a checkpoint lacking one — deleted along with its marker entries — is
 * damaged, never resumed with that part silently fresh. Its step must agree three ways: the folder's name, the
 * marker's `step` and training_state.json's `global_step`. Markers written before checksums were recorded
 * (commits 587d5ed to 4583983, the same format version) have no `sha256`: loading one says so, once, and checks sizes.
 *
 * Atomicity: everything is written into `checkpoint-<step>.tmp-<pid>`, every file and folder is fsynced, the marker is
 * written, and only then the folder is renamed to `checkpoint-<step>` (and the parent fsynced). A rename is atomic, so
 * a process killed at any moment leaves either no new checkpoint or a complete one; the previous ones are untouched.
 * Readers only ever consider `checkpoint-<N>` folders whose marker matches their files; leftovers of killed writers
 * (`*.tmp-<pid>` of dead processes) are removed by `cleanStaleCheckpoints`.
 *
 * checkpoints_total_limit: the script removes, before saving, the oldest `len − limit + 1` checkpoints so that at most
 * `limit` remain after the save. We remove the very same set, but only once the new checkpoint is in place — the
 * final state is identical, and even `limit = 1` never leaves a window without a loadable checkpoint.
 */
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { readSafetensors, writeSafetensors } from "../io/safetensors.js";
import { holdTemp, writerGone } from "../io/diffusers.js";
import type { StateTensor } from "./optim/types.js";
import { makeDirs } from "../io/dirs.js";

export const CHECKPOINT_FORMAT = "controlnet-ts-checkpoint";
export const CHECKPOINT_VERSION = 1;
const MARKER = "checkpoint.json";
const NAME_RE = /^checkpoint-(\d+)$/;
const TMP_RE = /^checkpoint-(\d+)\.(tmp|old)-(\d+)$/;

/** What a checkpoint holds. All but `training` and `extra` are required: a checkpoint without one of them could not
 *  resume the run exactly, and loading refuses it. */
export interface CheckpointParts {
  /** Writes the ControlNet into `dir` (created beforehand): the model's savePretrained. */
  controlnet: (dir: string) => void | Promise<void>;
  /** The optimizer's state dict. */
  optimizer: () => Map<string, StateTensor>;
  /** The lr scheduler's state (JSON-serialisable). */
  lrScheduler: () => unknown;
  /** RNG states by purpose, e.g. { noise: rng.getState(), data: ... } (JSON-serialisable). */
  rng: () => unknown;
  /** The data loader's position (JSON-serialisable). */
  data: () => unknown;
  /** Anything else the loop needs to resume: epoch, args … (JSON-serialisable). The step is added. */
  training?: () => Record<string, unknown>;
  /** Test hook / extension: more files, written into the checkpoint folder before the marker. */
  extra?: (dir: string) => void | Promise<void>;
}

export interface CheckpointInfo {
  step: number;
  path: string;
}

export interface SaveOptions {
  /** --checkpoints_total_limit (null/undefined: keep all). */
  totalLimit?: number | null;
}

export interface SaveResult extends CheckpointInfo {
  /** Checkpoint folders removed by the total limit. */
  removed: string[];
}

interface Marker {
  format: string;
  version: number;
  step: number;
  files: Record<string, number>;
  /** SHA-256 (hex) of every file (markers written before checksums were added have none). */
  sha256?: Record<string, string>;
  created: string;
}

/** The files every checkpoint holds besides the ControlNet folder (CheckpointParts: optimizer, lrScheduler, rng, data,
 *  and training_state.json, always written). */
const REQUIRED_FILES = ["optimizer.safetensors", "scheduler.json", "random_states.json", "data_state.json", "training_state.json"];
/** Model folders (diffusers layout: config.json + *.safetensors weights, maybe sharded): controlnet/ always,
 *  controlnet_ema/ when the run had use_ema (the trainer's `extra`). Every .json/.safetensors file in them must be in
 *  the marker (what loading reads is what the marker vouches for). */
const REQUIRED_MODEL_FOLDERS = ["controlnet"];
const OPTIONAL_MODEL_FOLDERS = ["controlnet_ema"];

/** SHA-256 of a file, read in 1 MiB pieces. */
function fileSha256(file: string): string {
  const h = crypto.createHash("sha256");
  const buf = Buffer.alloc(1 << 20);
  const fd = fs.openSync(file, "r");
  try {
    for (let n; (n = fs.readSync(fd, buf, 0, buf.length, null)) > 0; ) h.update(buf.subarray(0, n));
  } finally {
    fs.closeSync(fd);
  }
  return h.digest("hex");
}

/** The `checkpoint-<N>` folders in outputDir, complete or not, ascending by step (what the script's limit counts). */
export function listCheckpointDirs(outputDir: string): CheckpointInfo[] {
  // (none in a file: the launcher's summary after a worker refused such an output_dir crashed on ENOTDIR)
  if (!fs.existsSync(outputDir) || !fs.statSync(outputDir).isDirectory()) return [];
  const out: CheckpointInfo[] = [];
  for (const e of fs.readdirSync(outputDir, { withFileTypes: true })) {
    const m = NAME_RE.exec(e.name);
    if (m && e.isDirectory()) out.push({ step: Number(m[1]), path: path.join(outputDir, e.name) });
  }
  return out.sort((a, b) => a.step - b.step);
}

/** Only the checkpoints whose completion marker matches their contents, ascending by step. */
export function listCheckpoints(outputDir: string): CheckpointInfo[] {
  return listCheckpointDirs(outputDir).filter((c) => verifyCheckpoint(c.path) === null);
}

/** The training checkpoint `dir` is, or lies inside (its controlnet/, a folder under it), else null. Writing there
 *  breaks the checkpoint: its files are checksummed. */
export function enclosingCheckpoint(dir: string): string | null {
  for (let d = path.resolve(dir); ; d = path.dirname(d)) {
    if (hasMarker(d)) return d;
    if (path.dirname(d) === d) return null;
  }
}

/** A checkpoint's completion marker (throws when it cannot be read or parsed). */
function readMarker(dir: string): Marker {
  return JSON.parse(fs.readFileSync(path.join(dir, MARKER), "utf8")) as Marker;
}

/** Whether `dir` is one of our checkpoints, complete or damaged: its completion marker (written last, after every
 *  file) is of this library's format, or is there but no longer parses. */
export function hasMarker(dir: string): boolean {
  if (!fs.existsSync(path.join(dir, MARKER))) return false;
  try {
    return readMarker(dir).format === CHECKPOINT_FORMAT;
  } catch {
    return true; // our marker's name, unreadable: damaged after it was written (a foreign tool's would not be there)
  }
}

/** The step in a checkpoint folder's name (`checkpoint-N`, or a writer's `checkpoint-N.tmp-<pid>` / `.old-<pid>`), or
 *  null for a folder named otherwise (a copy under another name: infer accepts those). */
function folderStep(dir: string): number | null {
  const name = path.basename(path.resolve(dir));
  const m = NAME_RE.exec(name) ?? TMP_RE.exec(name);
  return m ? Number(m[1]) : null;
}

/** Every file under `dir`, relative, with "/" separators ([] when there is no such folder). */
function filesUnder(dir: string): string[] {
  let entries: fs.Dirent[];
  try {
    entries = fs.readdirSync(dir, { withFileTypes: true, recursive: true });
  } catch {
    return [];
  }
  return entries.filter((e) => !e.isDirectory()).map((e) => path.relative(dir, path.join(e.parentPath, e.name)).split(path.sep).join("/"));
}

/** What is wrong with the marker's list of parts and steps (no file is hashed), or null. */
function checkContents(dir: string, marker: Marker): string | null {
  if (!Number.isSafeInteger(marker.step) || marker.step < 0) return `${MARKER}'s step is ${JSON.stringify(marker.step)}, not a step number`;
  const named = folderStep(dir);
  if (named !== null && named !== marker.step) return `${MARKER} says step ${marker.step}, the folder's name says ${named}`;
  if (marker.files === null || typeof marker.files !== "object" || Array.isArray(marker.files)) return `${MARKER} lists no files`;
  const listed = Object.keys(marker.files);
  const unsafe = listed.find((rel) => path.isAbsolute(rel) || rel.split(/[\\/]/).includes(".."));
  if (unsafe !== undefined) return `${MARKER} names a file outside the checkpoint (${unsafe})`;
  const bad = listed.find((rel) => !Number.isSafeInteger(marker.files[rel]) || marker.files[rel]! < 0);
  if (bad !== undefined) return `${MARKER} gives no size for ${bad}`;
  for (const rel of REQUIRED_FILES) if (!(rel in marker.files)) return `${MARKER} does not list ${rel}, which every checkpoint has`;
  for (const folder of [...REQUIRED_MODEL_FOLDERS, ...OPTIONAL_MODEL_FOLDERS]) {
    const inMarker = listed.filter((rel) => rel.startsWith(`${folder}/`));
    // what is loaded from these folders (config, weights, shard index) is what the marker vouches for: no such file
    // may be left out of it (a stray .DS_Store may)
    const onDisk = filesUnder(path.join(dir, folder)).filter((rel) => /\.(json|safetensors)$/.test(rel)).map((rel) => `${folder}/${rel}`);
    const unlisted = onDisk.find((rel) => !(rel in marker.files));
    if (unlisted !== undefined) return `file ${unlisted} is not in ${MARKER} (added, or its entry removed, after the checkpoint was written)`;
    if (!inMarker.length && OPTIONAL_MODEL_FOLDERS.includes(folder)) continue;
    if (!inMarker.length) return `${MARKER} lists nothing in ${folder}/, which every checkpoint has`;
    if (!inMarker.includes(`${folder}/config.json`)) return `${MARKER} does not list ${folder}/config.json`;
    if (!inMarker.some((rel) => /^[^/]+\/[^/]+\.safetensors$/.test(rel))) return `${MARKER} lists no weights (*.safetensors) in ${folder}/`;
  }
  if (marker.sha256 !== undefined) {
    const sums = marker.sha256 as unknown;
    if (sums === null || typeof sums !== "object" || Array.isArray(sums)) return `${MARKER}'s sha256 is not a table of checksums`;
    const table = sums as Record<string, unknown>;
    const unsummed = listed.find((rel) => typeof table[rel] !== "string" || !/^[0-9a-f]{64}$/.test(table[rel] as string));
    if (unsummed !== undefined) return `${MARKER} has no valid SHA-256 for ${unsummed}`;
    const extra = Object.keys(table).find((rel) => !(rel in marker.files));
    if (extra !== undefined) return `${MARKER} has a SHA-256 for ${extra} but does not list the file`;
  }
  return null;
}

/** training_state.json's `global_step` against the marker's step (null when they agree). */
function checkTrainingStep(dir: string, marker: Marker): string | null {
  let state: unknown;
  try {
    state = JSON.parse(fs.readFileSync(path.join(dir, "training_state.json"), "utf8"));
  } catch (e) {
    return `training_state.json does not parse (${(e as Error).message})`;
  }
  const global = state !== null && typeof state === "object" ? (state as Record<string, unknown>).global_step : undefined;
  if (global !== marker.step) return `training_state.json says global_step ${JSON.stringify(global)}, ${MARKER} says step ${marker.step}`;
  return null;
}

export interface VerifyOptions {
  /** Hash every file against the marker (loading does this); else sizes only (listing many checkpoints stays cheap). */
  checksums?: boolean;
  /** With `checksums`: receives the one line saying a marker of before checksums has none (default console.warn). */
  warn?: (line: string) => void;
}

/** null when `dir` is a complete checkpoint, else the reason it is not: the marker, every part the trainer writes, the
 *  step (folder name, marker, training_state.json) and each file's size; with `checksums`, its SHA-256 too. */
export function verifyCheckpoint(dir: string, opts: VerifyOptions = {}): string | null {
  let marker: Marker;
  try {
    marker = readMarker(dir);
  } catch (e) {
    return `no readable ${MARKER} (${(e as Error).message})`;
  }
  if (marker === null || typeof marker !== "object") return `${MARKER} is not a ${CHECKPOINT_FORMAT} marker`;
  if (marker.format !== CHECKPOINT_FORMAT) return `${MARKER} is not a ${CHECKPOINT_FORMAT} marker`;
  if (marker.version > CHECKPOINT_VERSION) return `checkpoint format version ${marker.version} is newer than this library's ${CHECKPOINT_VERSION}`;
  const contents = checkContents(dir, marker);
  if (contents) return contents;
  for (const [rel, size] of Object.entries(marker.files)) {
    let st: fs.Stats;
    try {
      st = fs.statSync(path.join(dir, rel));
    } catch {
      return `missing file ${rel}`;
    }
    if (st.size !== size) return `file ${rel} has ${st.size} bytes, the marker says ${size}`;
  }
  const steps = checkTrainingStep(dir, marker);
  if (steps) return steps;
  if (opts.checksums) {
    if (marker.sha256 === undefined) {
      (opts.warn ?? console.warn)(`warning: ${dir}: its ${MARKER} records no SHA-256 checksums (written by a controlnet-ts ` +
        "from before they were added); its files were checked by size only, a flipped bit would go unnoticed");
    }
    for (const [rel, sum] of Object.entries(marker.sha256 ?? {})) {
      if (fileSha256(path.join(dir, rel)) !== sum) return `file ${rel} does not match its SHA-256 in ${MARKER} (corrupted)`;
    }
  }
  return null;
}

/** Which other complete checkpoint could be taken instead of `dir` (in its folder), as advice for a refusal. */
function otherCheckpointAdvice(dir: string): string {
  const parent = path.dirname(path.resolve(dir));
  const others = listCheckpoints(parent).filter((c) => path.resolve(c.path) !== path.resolve(dir));
  const other = others.at(-1);
  return other
    ? `The newest other complete checkpoint can be resumed instead: resume_from_checkpoint ${other.path}.`
    : `No other complete checkpoint is in ${parent}.`;
}

/**
 * Removes the leftovers of writers that died. A dead writer's `checkpoint-N.tmp-<pid>` is deleted — unless it is
 * complete and `checkpoint-N` is missing (killed between setting aside an old same-step copy and the final rename):
 * then it is moved into place. A `checkpoint-N.old-<pid>` (that set-aside copy) is put back if `checkpoint-N` is
 * still missing, else deleted. Folders of live writers are left alone. Returns the removed paths.
 */
export function cleanStaleCheckpoints(outputDir: string): string[] {
  if (!fs.existsSync(outputDir)) return [];
  const removed: string[] = [];
  const stale = fs
    .readdirSync(outputDir)
    .map((name) => ({ name, m: TMP_RE.exec(name) }))
    .filter((e): e is { name: string; m: RegExpExecArray } => e.m !== null && writerGone(Number(e.m[3]), path.join(outputDir, e.name)))
    .sort((a, b) => (a.m[2] === b.m[2] ? 0 : a.m[2] === "tmp" ? -1 : 1)); // newer (tmp) before older (old) copies
  for (const { name, m } of stale) {
    const p = path.join(outputDir, name);
    const final = path.join(outputDir, `checkpoint-${m[1]}`);
    if (!fs.existsSync(final) && verifyCheckpoint(p) === null) {
      fs.renameSync(p, final);
      fsyncPath(outputDir);
      continue;
    }
    fs.rmSync(p, { recursive: true, force: true });
    removed.push(p);
  }
  return removed;
}

function fsyncPath(p: string): void {
  let fd: number | undefined;
  try {
    fd = fs.openSync(p, "r");
    fs.fsyncSync(fd);
  } catch {
    /* best effort: some filesystems refuse fsync on directories */
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

/** fsyncs every file and folder under dir (depth first) and returns the files with their sizes. */
function syncTree(dir: string, base = dir, files: Record<string, number> = {}): Record<string, number> {
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) syncTree(p, base, files);
    else if (e.isFile()) {
      fsyncPath(p);
      files[path.relative(base, p).split(path.sep).join("/")] = fs.statSync(p).size;
    }
  }
  fsyncPath(dir);
  return files;
}

function writeJson(file: string, value: unknown): void {
  fs.writeFileSync(file, JSON.stringify(value, null, 2) + "\n");
}

/** The set the script's total limit removes before saving a new checkpoint. */
export function checkpointsToRemove(existing: CheckpointInfo[], totalLimit: number | null | undefined, newStep: number): CheckpointInfo[] {
  if (totalLimit === null || totalLimit === undefined) return [];
  const others = existing.filter((c) => c.step !== newStep);
  if (others.length < totalLimit) return [];
  return others.slice(0, others.length - totalLimit + 1);
}

/** Why checkpoint-<step> was not written, and which checkpoint the run can go on from. */
function notWritten(outputDir: string, step: number, why: string): string {
  const kept = listCheckpoints(outputDir).at(-1);
  return `could not write checkpoint-${step} in ${outputDir}: ${why}; ` + (kept ? `the last complete checkpoint is ${kept.path}` : "no earlier checkpoint exists");
}

/** `accelerator.save_state(output_dir/checkpoint-<step>)` with the total limit, written atomically. */
export async function saveCheckpoint(outputDir: string, step: number, parts: CheckpointParts, opts: SaveOptions = {}): Promise<SaveResult> {
  if (!Number.isSafeInteger(step) || step < 0) throw new Error(`checkpoint step must be a non-negative integer, got ${step}`);
  const lacking = (["controlnet", "optimizer", "lrScheduler", "rng", "data"] as const).filter((k) => typeof parts[k] !== "function");
  if (lacking.length) throw new Error(`saveCheckpoint: checkpoint-${step} needs ${lacking.join(", ")} (every checkpoint holds them); nothing was written`);
  if (opts.totalLimit !== undefined && opts.totalLimit !== null && (!Number.isInteger(opts.totalLimit) || opts.totalLimit < 0)) {
    throw new Error(`checkpoints_total_limit must be an integer >= 0, got ${opts.totalLimit}`);
  }
  makeDirs(outputDir);
  cleanStaleCheckpoints(outputDir);
  // the limit counts and removes our checkpoints only: a checkpoint-N folder without our marker (a user's weights, a
  // copy) is no checkpoint of this run's — resume passes it over — and is never deleted
  const toRemove = checkpointsToRemove(listCheckpointDirs(outputDir).filter((c) => hasMarker(c.path)), opts.totalLimit, step);
  const final = path.join(outputDir, `checkpoint-${step}`);
  // a folder of that name (a checkpoint of a step redone after a resume) is replaced; a file is not ours to delete
  if (fs.existsSync(final) && !fs.statSync(final).isDirectory()) {
    throw new Error(notWritten(outputDir, step, `${final} is a file, not a checkpoint folder, and is not replaced`));
  }
  const tmp = path.join(outputDir, `checkpoint-${step}.tmp-${process.pid}`);
  const release = holdTemp(tmp);
  try {
    return await writeCheckpointFolder(outputDir, step, parts, tmp, final, toRemove);
  } finally {
    release();
  }
}

async function writeCheckpointFolder(outputDir: string, step: number, parts: CheckpointParts, tmp: string, final: string,
  toRemove: CheckpointInfo[]): Promise<SaveResult> {
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(tmp);
  try {
    const d = path.join(tmp, "controlnet");
    fs.mkdirSync(d);
    await parts.controlnet(d);
    writeSafetensors(path.join(tmp, "optimizer.safetensors"), parts.optimizer(), { format: "controlnet-ts-optimizer" });
    writeJson(path.join(tmp, "scheduler.json"), parts.lrScheduler());
    writeJson(path.join(tmp, "random_states.json"), parts.rng());
    writeJson(path.join(tmp, "data_state.json"), parts.data());
    writeJson(path.join(tmp, "training_state.json"), { ...(parts.training?.() ?? {}), global_step: step });
    if (parts.extra) await parts.extra(tmp);
    const files = syncTree(tmp);
    const sha256 = Object.fromEntries(Object.keys(files).map((rel) => [rel, fileSha256(path.join(tmp, rel))]));
    const marker: Marker = { format: CHECKPOINT_FORMAT, version: CHECKPOINT_VERSION, step, files, sha256, created: new Date().toISOString() };
    const fd = fs.openSync(path.join(tmp, MARKER), "w");
    fs.writeSync(fd, JSON.stringify(marker, null, 2) + "\n");
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fsyncPath(tmp);
  } catch (e) {
    fs.rmSync(tmp, { recursive: true, force: true });
    // name what was being saved (ENOSPC on a file descriptor carries no path)
    let why = (e as Error).message;
    if ((e as NodeJS.ErrnoException).code === "ENOSPC" && toRemove.length) {
      // the script deletes them first; here they stay until the new one is complete, which needs one more's room
      why += ` (checkpoints_total_limit removes ${toRemove.map((c) => path.basename(c.path)).join(", ")} only once the new checkpoint is ` +
        "complete, so that a crash never leaves none: saving needs room for one checkpoint more than the limit)";
    }
    throw new Error(notWritten(outputDir, step, why), { cause: e });
  }
  // Move into place. Re-saving an existing step (e.g. after a resume) sets the old copy aside first.
  let old: string | null = null;
  if (fs.existsSync(final)) {
    old = path.join(outputDir, `checkpoint-${step}.old-${process.pid}`);
    fs.rmSync(old, { recursive: true, force: true });
    fs.renameSync(final, old);
  }
  fs.renameSync(tmp, final);
  fsyncPath(outputDir);
  if (old) fs.rmSync(old, { recursive: true, force: true });
  const removed: string[] = [];
  for (const c of toRemove) {
    fs.rmSync(c.path, { recursive: true, force: true });
    removed.push(c.path);
  }
  if (removed.length) fsyncPath(outputDir);
  return { step, path: final, removed };
}

/** Files `accelerator.save_state` writes (PyTorch pickles and friends) that a controlnet-ts checkpoint never has. */
const ACCELERATE_FILE = /^(optimizer(_\d+)?\.bin|scheduler(_\d+)?\.bin|sampler(_\d+)?\.bin|random_states_\d+\.pkl|scaler\.pt|custom_checkpoint_\d+\.pkl|pytorch_model(_\d+)?\.bin|model(_\d+)?\.safetensors)$/;

/** A checkpoint folder written by accelerate (diffusers' train_controlnet.py), not by us. */
export class ForeignCheckpointError extends Error {
  override name = "ForeignCheckpointError";
  constructor(readonly outputDir: string, readonly checkpoints: string[], readonly controlnetDir: string | null) {
    const names = checkpoints.map((c) => path.basename(c)).join(", ");
    super(
      `${outputDir} holds checkpoints written by diffusers' train_controlnet.py / accelerate (${names}); their optimizer, ` +
        "lr-scheduler and RNG states are PyTorch pickles, which controlnet-ts cannot restore, and it does not write over " +
        "another tool's checkpoints, so nothing was changed. " +
        (controlnetDir
          ? `Their ControlNet weights can be the starting point: rerun with --controlnet_model_name_or_path=${controlnetDir} and a new --output_dir.`
          : "Use a new --output_dir."),
    );
  }
}

/** The `checkpoint-<N>` folders in outputDir that accelerate wrote (no controlnet-ts marker, accelerate's files). */
export function listForeignCheckpoints(outputDir: string): CheckpointInfo[] {
  return listCheckpointDirs(outputDir).filter((c) => {
    if (fs.existsSync(path.join(c.path, MARKER))) return false;
    return fs.readdirSync(c.path).some((f) => ACCELERATE_FILE.test(f));
  });
}

/** Refuses an output_dir holding accelerate checkpoints (resuming, or a fresh run that would overwrite or prune them),
 *  or files named like checkpoints (a checkpoint of that step would replace them). */
export function assertNoForeignCheckpoints(outputDir: string): void {
  const files = fs.existsSync(outputDir) ? fs.readdirSync(outputDir).filter((n) => NAME_RE.test(n) && !fs.statSync(path.join(outputDir, n)).isDirectory()) : [];
  if (files.length) {
    const one = files.length === 1;
    throw new Error(`${outputDir} holds ${files.join(", ")}, ${one ? "a file" : "files"} where checkpoint folders go: a checkpoint of that step ` +
      `would replace ${one ? "it" : "them"}, so nothing was changed. Move ${one ? "it" : "them"} away or use another --output_dir.`);
  }
  const foreign = listForeignCheckpoints(outputDir);
  if (!foreign.length) return;
  const last = foreign.at(-1)!;
  const cn = path.join(last.path, "controlnet");
  throw new ForeignCheckpointError(outputDir, foreign.map((c) => c.path), fs.existsSync(path.join(cn, "config.json")) ? cn : null);
}

export interface ResumeResolution {
  /** The checkpoint to load, or null to start fresh. */
  checkpoint: CheckpointInfo | null;
  /** What to tell the user (the script prints it when starting fresh). */
  message: string;
}

/** The script's line ("Resuming from checkpoint checkpoint-2"); the whole path for a checkpoint outside outputDir. */
function resumingMessage(outputDir: string, checkpoint: string): string {
  const inside = path.resolve(path.dirname(checkpoint)) === path.resolve(outputDir);
  return `Resuming from checkpoint ${inside ? path.basename(checkpoint) : checkpoint}`;
}

/**
 * --resume_from_checkpoint: "latest" → the complete checkpoint with the highest step in outputDir (none: start fresh,
 * with the script's message); otherwise the script's lookup — the basename inside outputDir — and failing that the
 * path as given (a checkpoint of another run). An explicit checkpoint that is missing or incomplete is an error.
 */
export function resolveResume(outputDir: string, resumeFrom: string | null | undefined): ResumeResolution {
  assertNoForeignCheckpoints(outputDir);
  if (!resumeFrom) return { checkpoint: null, message: "Starting a new training run." };
  if (resumeFrom === "latest") {
    cleanStaleCheckpoints(outputDir);
    // checkpoints are renamed into place complete, so a newest one whose marker is ours but whose files do not match it
    // was damaged afterwards: taking an older one instead would silently redo steps (a folder with no marker of ours —
    // copied by hand, another tool's — is not one of our checkpoints and is passed over)
    const newest = listCheckpointDirs(outputDir).filter((c) => hasMarker(c.path)).at(-1);
    const damage = newest && verifyCheckpoint(newest.path);
    if (newest && damage) {
      const before = listCheckpoints(outputDir).at(-1);
      throw new Error(`resume_from_checkpoint latest: the newest checkpoint ${newest.path} is damaged (${damage}); nothing was changed. ` +
        (before ? `Resume the one before by name (resume_from_checkpoint ${path.basename(before.path)}) or remove ${path.basename(newest.path)}.`
          : `Remove ${path.basename(newest.path)} to start a new run.`));
    }
    const all = listCheckpoints(outputDir);
    const last = all.at(-1);
    if (!last) return { checkpoint: null, message: `Checkpoint '${resumeFrom}' does not exist. Starting a new training run.` };
    return { checkpoint: last, message: resumingMessage(outputDir, last.path) };
  }
  // The script's lookup first (the basename inside output_dir), then the path as given (a checkpoint elsewhere).
  const candidates = [path.join(outputDir, path.basename(resumeFrom)), resumeFrom];
  for (const p of candidates) {
    if (!fs.existsSync(p)) continue;
    const m = NAME_RE.exec(path.basename(path.resolve(p)));
    if (!m) throw new Error(`resume_from_checkpoint '${resumeFrom}': folder name must be checkpoint-<step>`);
    if (listForeignCheckpoints(path.dirname(path.resolve(p))).some((c) => path.resolve(c.path) === path.resolve(p))) {
      const cn = path.join(p, "controlnet");
      throw new ForeignCheckpointError(path.dirname(p), [p], fs.existsSync(path.join(cn, "config.json")) ? cn : null);
    }
    const why = verifyCheckpoint(p);
    if (why) throw new Error(`resume_from_checkpoint '${p}' is not a complete checkpoint: ${why}; nothing was changed. ${otherCheckpointAdvice(p)}`);
    return { checkpoint: { step: Number(m[1]), path: p }, message: resumingMessage(outputDir, p) };
  }
  throw new Error(`resume_from_checkpoint '${resumeFrom}' does not exist (looked at ${candidates.join(" and ")})`);
}

export interface LoadedCheckpoint {
  step: number;
  path: string;
  /** The ControlNet's diffusers folder (load it with the model's fromPretrained); always there in a loaded checkpoint. */
  controlnetDir: string | null;
  /** The optimizer's state dict; always there in a loaded checkpoint. */
  optimizer: Map<string, StateTensor> | null;
  lrScheduler: unknown;
  rng: unknown;
  data: unknown;
  training: Record<string, unknown>;
}

/** A checkpoint's training_state.json (its `run` identity among others) without loading the rest; {} if unreadable. */
export function readTrainingState(dir: string): Record<string, unknown> {
  try {
    return JSON.parse(fs.readFileSync(path.join(dir, "training_state.json"), "utf8")) as Record<string, unknown>;
  } catch {
    return {};
  }
}

/** Reads a checkpoint written by saveCheckpoint. Verified first, checksums included (a flipped bit names its file):
 *  a damaged one is refused in one line naming what is wrong and the newest other complete checkpoint beside it.
 *  `warn` receives the one line about a marker of before checksums (default console.warn). */
export function loadCheckpoint(dir: string, opts: { warn?: (line: string) => void } = {}): LoadedCheckpoint {
  const refuse = (why: string) => new Error(`'${dir}' is not a complete checkpoint: ${why}; nothing was changed. ${otherCheckpointAdvice(dir)}`);
  const why = verifyCheckpoint(dir, { checksums: true, warn: opts.warn });
  if (why) throw refuse(why);
  const marker = readMarker(dir);
  const json = (rel: string): unknown => {
    try {
      return JSON.parse(fs.readFileSync(path.join(dir, rel), "utf8"));
    } catch (e) {
      throw refuse(`${rel} does not parse (${(e as Error).message})`);
    }
  };
  const training = json("training_state.json");
  if (training === null || typeof training !== "object" || Array.isArray(training)) throw refuse("training_state.json is not a JSON object");
  let optimizer: Map<string, StateTensor>;
  try {
    optimizer = readSafetensors(path.join(dir, "optimizer.safetensors")).tensors as Map<string, StateTensor>;
  } catch (e) {
    throw refuse(`optimizer.safetensors does not read (${(e as Error).message})`);
  }
  return {
    step: marker.step,
    path: dir,
    controlnetDir: path.join(dir, "controlnet"),
    optimizer,
    lrScheduler: json("scheduler.json"),
    rng: json("random_states.json"),
    data: json("data_state.json"),
    training: training as Record<string, unknown>,
  };
}
