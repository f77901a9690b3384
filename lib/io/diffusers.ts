/**
 * diffusers / transformers model folders and diffusers pipeline folders, as `save_pretrained` writes them.
 *
 * A model folder holds `config.json` plus weights in one of these forms (the first that exists wins, diffusers names
 * before transformers names, like `from_pretrained` with `use_safetensors=True`):
 *   diffusion_pytorch_model[.<variant>].safetensors            one file (diffusers)
 *   diffusion_pytorch_model.safetensors.index[.<variant>].json  shards listed in a `weight_map` (diffusers)
 *   model[.<variant>].safetensors / model.safetensors.index[.<variant>].json   (transformers)
 * Tensors stay in PyTorch layout here; models convert with lib/io/layout.ts when they load them.
 *
 * Pickle checkpoints (.bin/.ckpt/.pt/.pth) are refused: unpickling runs arbitrary code from the file, and we never do
 * that. The error says how to convert them to safetensors with Python diffusers.
 *
 * A pipeline folder holds `model_index.json` naming each component's library and class; each component is a subfolder.
 */
import fs from "node:fs";
import path from "node:path";
import { fsyncDir, readSafetensors, readSafetensorsHeader, writeSafetensors } from "./safetensors.js";
import type { HostTensor } from "./safetensors.js";
import { makeDirs } from "./dirs.js";
import { InputError } from "./input-error.js";

/** The diffusers version we write into configs: the pinned reference release (tests/reference), whose formats we follow. */
export const DIFFUSERS_VERSION = "0.42.1";
/** The transformers version written into transformers-style configs we create. */
export const TRANSFORMERS_VERSION = "4.57.1";

export const DIFFUSERS_WEIGHTS_NAME = "diffusion_pytorch_model.safetensors";
export const TRANSFORMERS_WEIGHTS_NAME = "model.safetensors";
const CONFIG_NAME = "config.json";
const PICKLE_EXTENSIONS = [".bin", ".ckpt", ".pt", ".pth", ".pkl", ".pickle"];

/** `diffusion_pytorch_model.safetensors` + `fp16` → `diffusion_pytorch_model.fp16.safetensors` (diffusers' rule). */
export function addVariant(fileName: string, variant?: string): string {
  if (!variant) return fileName;
  const parts = fileName.split(".");
  return [...parts.slice(0, -1), variant, parts[parts.length - 1]].join(".");
}

export function isPickleFile(file: string): boolean {
  return PICKLE_EXTENSIONS.includes(path.extname(file).toLowerCase());
}

/** The error for a pickle checkpoint: why we refuse it and the one-liner that converts it. */
export function pickleRefusal(file: string): InputError {
  return new InputError(
    `Refusing to load ${file}: it is a PyTorch pickle checkpoint, and loading a pickle executes code stored in the file ` +
      `(controlnet-ts never unpickles). Convert it to safetensors once with Python diffusers, e.g.\n` +
      `  python -c "from diffusers import DiffusionPipeline; DiffusionPipeline.from_pretrained('<model>').save_pretrained('<out_dir>', safe_serialization=True)"\n` +
      `(for a single model use its class, e.g. ControlNetModel; for a single-file .ckpt use ` +
      `StableDiffusionPipeline.from_single_file('<file>.ckpt').save_pretrained('<out_dir>', safe_serialization=True)), ` +
      `then load <out_dir>.`,
  );
}

function readJson(file: string, what: string): Record<string, unknown> {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (e) {
    throw new InputError(`Cannot read ${what} ${file}: ${(e as Error).message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new InputError(`Invalid ${what} ${file}: not valid JSON (${(e as Error).message})`);
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) throw new InputError(`Invalid ${what} ${file}: not a JSON object`);
  return json as Record<string, unknown>;
}

export interface WeightFiles {
  /** The single file or the index file that was found. */
  source: string;
  /** Shard file → tensor names in it (one entry, all names, for a single file). */
  shards: Map<string, string[] | "all">;
}

/** Finds the weights of a model folder (see the module comment for the search order). */
export function findWeightFiles(dir: string, opts: { variant?: string } = {}): WeightFiles {
  const { variant } = opts;
  for (const base of [DIFFUSERS_WEIGHTS_NAME, TRANSFORMERS_WEIGHTS_NAME]) {
    const single = path.join(dir, addVariant(base, variant));
    if (fs.existsSync(single)) return { source: single, shards: new Map([[single, "all"]]) };
    const index = path.join(dir, addVariant(`${base}.index.json`, variant));
    if (fs.existsSync(index)) return { source: index, shards: readShardIndex(index) };
  }
  const present = fs.readdirSync(dir);
  const pickles = present.filter(isPickleFile);
  if (pickles.length) throw pickleRefusal(path.join(dir, pickles[0]!));
  const others = present.filter((f) => f.endsWith(".safetensors") || f.endsWith(".safetensors.index.json") || /\.safetensors\.index\.[^.]+\.json$/.test(f));
  const wanted = variant ? `the "${variant}" variant (${addVariant(DIFFUSERS_WEIGHTS_NAME, variant)})` : DIFFUSERS_WEIGHTS_NAME;
  throw new InputError(
    `No weights found in model folder ${dir}: looked for ${wanted} or ${addVariant(TRANSFORMERS_WEIGHTS_NAME, variant)} ` +
      `(or their .index.json shards)` + (others.length ? `; the folder has ${others.join(", ")}${variant ? "" : " (name its variant to load one: fp16 for diffusion_pytorch_model.fp16.safetensors)"}` : ""),
  );
}

/** Parses a `*.safetensors.index.json`, checking that every shard is a plain file name inside the same folder. */
function readShardIndex(index: string): Map<string, string[]> {
  const json = readJson(index, "shard index");
  const map = json.weight_map;
  if (typeof map !== "object" || map === null || Array.isArray(map)) throw new InputError(`Invalid shard index ${index}: no "weight_map" object`);
  const shards = new Map<string, string[]>();
  const dir = path.dirname(index);
  for (const [name, file] of Object.entries(map as Record<string, unknown>)) {
    // An index from the internet must not point outside its folder.
    if (typeof file !== "string" || file === "" || file !== path.basename(file) || file === "." || file === ".." || file.includes("\\")) {
      throw new InputError(`Invalid shard index ${index}: tensor "${name}" maps to ${JSON.stringify(file)}, not a file name in the same folder`);
    }
    if (isPickleFile(file)) throw pickleRefusal(path.join(dir, file));
    const full = path.join(dir, file);
    if (!shards.has(full)) shards.set(full, []);
    shards.get(full)!.push(name);
  }
  for (const shard of shards.keys()) {
    if (!fs.existsSync(shard)) throw new InputError(`Shard index ${index} lists ${path.basename(shard)}, which is missing from the folder`);
  }
  return shards;
}

/** Where a tensor read by `loadModelFolder` came from: its file and the dtype stored there (F32, F16, I32, …). */
export interface TensorOrigin {
  file: string;
  dtype: string;
}
const origins = new WeakMap<HostTensor, TensorOrigin>();

/** The file and stored dtype of a tensor `loadModelFolder` returned (undefined for tensors built in memory). A float32
 *  HostTensor may have been F16/BF16/F64 in the file, an int32 one any integer type: models use this to say which. */
export function tensorOrigin(t: HostTensor): TensorOrigin | undefined {
  return origins.get(t);
}

/** Reads a model folder's config.json and weights (PyTorch layout, float32/int32). `only` limits the tensors read. */
export function loadModelFolder(
  dir: string,
  opts: { variant?: string; only?: string[] } = {},
): { config: Record<string, unknown>; tensors: Map<string, HostTensor> } {
  if (isPickleFile(dir)) throw pickleRefusal(dir);
  if (!fs.existsSync(dir)) throw new InputError(`Model folder not found: ${dir}`);
  if (!fs.statSync(dir).isDirectory()) throw new InputError(`Not a model folder: ${dir} is a file (expected a folder with config.json and weights)`);
  const configFile = path.join(dir, CONFIG_NAME);
  if (!fs.existsSync(configFile)) throw new InputError(`Model folder ${dir} has no ${CONFIG_NAME}`);
  const config = readJson(configFile, "model config");
  const { shards } = findWeightFiles(dir, opts);
  const only = opts.only ? new Set(opts.only) : undefined;
  const tensors = new Map<string, HostTensor>();
  for (const [file, names] of shards) {
    let want = names === "all" ? undefined : names;
    if (only) want = (want ?? [...readSafetensorsHeader(file).entries.keys()]).filter((n) => only.has(n));
    if (want && want.length === 0) continue;
    const read = readSafetensors(file, { only: want });
    for (const [name, t] of read.tensors) {
      if (tensors.has(name)) throw new InputError(`Model folder ${dir}: tensor "${name}" appears in more than one shard`);
      tensors.set(name, t);
      origins.set(t, { file, dtype: read.entries.get(name)!.dtype });
    }
  }
  if (only) {
    const missing = [...only].filter((n) => !tensors.has(n));
    if (missing.length) throw new InputError(`Model folder ${dir} has no tensor named ${missing.map((m) => `"${m}"`).join(", ")}`);
  }
  return { config, tensors };
}

/** JSON with keys sorted at every level, 2-space indent, trailing newline — what diffusers' `to_json_string` writes. */
export function stableJson(value: unknown): string {
  const sortDeep = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(sortDeep);
    if (v && typeof v === "object") {
      return Object.fromEntries(Object.keys(v).sort().map((k) => [k, sortDeep((v as Record<string, unknown>)[k])]));
    }
    return v;
  };
  return JSON.stringify(sortDeep(value), null, 2) + "\n";
}

export interface SaveModelOptions {
  /** The Python class that loads the folder, e.g. "ControlNetModel" or "CLIPTextModel". */
  className: string;
  config: Record<string, unknown>;
  /** PyTorch layout. */
  tensors: Map<string, HostTensor> | Record<string, HostTensor>;
  /** DIFFUSERS_WEIGHTS_NAME (default) or TRANSFORMERS_WEIGHTS_NAME; the latter writes a transformers-style config. */
  weightsName?: string;
  /** Split the weights into shards of at most this many bytes with an index, like `max_shard_size`. */
  maxShardBytes?: number;
  /** Where the one line about lookalike weight files kept in `dir` goes (see `publishFolder`). Default console.warn. */
  warn?: (line: string) => void;
}

/**
 * Writes a model folder that `from_pretrained` loads: config.json and the weights (F32, metadata `format: pt`).
 * Atomic: everything is written into a temporary sibling folder first and moved into place only when complete
 * (see `publishFolder`), so a crash never leaves a half-written model.
 */
export function saveModelFolder(dir: string, opts: SaveModelOptions): void {
  const weightsName = opts.weightsName ?? DIFFUSERS_WEIGHTS_NAME;
  if (!weightsName.endsWith(".safetensors") || weightsName !== path.basename(weightsName)) {
    throw new Error(`saveModelFolder: weightsName must be a .safetensors file name, got ${weightsName}`);
  }
  const transformersStyle = weightsName.startsWith("model.") || weightsName === TRANSFORMERS_WEIGHTS_NAME;
  const config: Record<string, unknown> = { ...opts.config };
  if (transformersStyle) {
    config.architectures ??= [opts.className];
    config.transformers_version ??= TRANSFORMERS_VERSION;
  } else {
    config._class_name = opts.className;
    config._diffusers_version ??= DIFFUSERS_VERSION;
  }
  const tensors = opts.tensors instanceof Map ? opts.tensors : new Map(Object.entries(opts.tensors));
  const files = new Map<string, (target: string) => void>();
  files.set(CONFIG_NAME, (f) => writeFileDurable(f, stableJson(config)));
  const shards = planShards(tensors, opts.maxShardBytes);
  if (shards.length === 1) {
    files.set(weightsName, (f) => writeSafetensors(f, shards[0]!, { format: "pt" }));
  } else {
    const base = weightsName.slice(0, -".safetensors".length);
    const weightMap: Record<string, string> = {};
    let total = 0;
    shards.forEach((shard, i) => {
      const name = `${base}-${String(i + 1).padStart(5, "0")}-of-${String(shards.length).padStart(5, "0")}.safetensors`;
      for (const [k, t] of shard) { weightMap[k] = name; total += t.data.byteLength; }
      files.set(name, (f) => writeSafetensors(f, shard, { format: "pt" }));
    });
    files.set(`${weightsName}.index.json`, (f) => writeFileDurable(f, stableJson({ metadata: { total_size: total }, weight_map: weightMap })));
  }
  publishFolder(dir, files, { modelClass: modelClassOf(config), warn: opts.warn });
}

/** The class a model folder's config names: diffusers' `_class_name`, else transformers' first `architectures` entry. */
export function modelClassOf(config: Record<string, unknown>): string | null {
  if (typeof config._class_name === "string") return config._class_name;
  const arch = config.architectures;
  if (Array.isArray(arch) && typeof arch[0] === "string") return arch[0];
  return null;
}

/**
 * Throws (one line, nothing written) when `dir` holds a config.json of another model than `modelClass`: saving there
 * would replace that model's config and weights (e.g. --output_dir pointing at a base model's unet/). A folder with no
 * config.json, or with one of the same class (an earlier save of ours), may be saved into. Exported so a run can check
 * its output_dir before training instead of at the final save.
 */
export function checkSaveTarget(dir: string, modelClass: string | null): void {
  const file = path.join(dir, CONFIG_NAME);
  if (!fs.existsSync(file)) return;
  const what = modelClass ? `a ${modelClass}` : "this model";
  let found: string | null;
  try {
    found = modelClassOf(readJson(file, "model config"));
  } catch (e) {
    throw new InputError(`Not saving ${what} into ${dir}: its ${CONFIG_NAME} is not a model config we can read (${(e as Error).message}); nothing was written, the folder is unchanged — choose another output folder`);
  }
  if (found === modelClass) return;
  throw new InputError(
    `Not saving ${what} into ${dir}: it holds another model (its ${CONFIG_NAME} is ${found ? `a ${found}'s` : "one without _class_name or architectures"}); ` +
      `nothing was written, the folder is unchanged — choose another output folder`,
  );
}

/** Greedy shards in name order (deterministic), each at most maxBytes unless one tensor alone is larger. */
function planShards(tensors: Map<string, HostTensor>, maxBytes?: number): Map<string, HostTensor>[] {
  const names = [...tensors.keys()].sort();
  if (!maxBytes) return [new Map(names.map((n) => [n, tensors.get(n)!]))];
  const shards: Map<string, HostTensor>[] = [];
  let cur = new Map<string, HostTensor>();
  let size = 0;
  for (const n of names) {
    const t = tensors.get(n)!;
    if (cur.size && size + t.data.byteLength > maxBytes) { shards.push(cur); cur = new Map(); size = 0; }
    cur.set(n, t);
    size += t.data.byteLength;
  }
  shards.push(cur);
  return shards;
}

/** Replaces `file` with `text` all at once: written beside it, synced, then renamed over it (a crash leaves the old
 *  file or the new one, never an empty or partial one).
 *
 *  The temporary is hidden, `.<name>.tmp-<pid>`: a crash between write and rename (kill -9) leaves it behind, and a
 *  hidden name keeps it out of a hub push (uploadFolder skips hidden entries) and out of sight. Writing the same file
 *  again removes such leftovers of writers that are gone, and the `<name>.tmp-<pid>` ones earlier versions left. */
export function writeFileAtomic(file: string, text: string | Uint8Array): void {
  const dir = path.dirname(file);
  const base = path.basename(file);
  const tmp = path.join(dir, `.${base}.tmp-${process.pid}`);
  const release = holdTemp(tmp);
  try {
    cleanStaleFileTemps(dir, base);
    try {
      writeFileDurable(tmp, text);
      fs.renameSync(tmp, file);
    } catch (e) {
      fs.rmSync(tmp, { force: true });
      // the file the caller asked for, not the hidden temporary, is what a message should name
      if ((e as NodeJS.ErrnoException).path === tmp) (e as NodeJS.ErrnoException).path = file;
      throw e;
    }
  } finally {
    release();
  }
}

/** Removes `.<base>.tmp-<pid>` / `<base>.tmp-<pid>` files in `dir` whose writer is gone (see writeFileAtomic). */
function cleanStaleFileTemps(dir: string, base: string): void {
  removeStale(dir, new RegExp(`^\\.?${escapeRe(base)}\\.tmp-(\\d+)$`), { filesOnly: true });
}

/** Removes the entries of `parent` that `re` names (its group 1: the writer's pid) whose writer is gone; `filesOnly`
 *  leaves anything but a file of such a name alone. */
function removeStale(parent: string, re: RegExp, opts: { filesOnly?: boolean } = {}): void {
  let names: string[];
  try {
    names = fs.readdirSync(parent);
  } catch {
    return;
  }
  for (const name of names) {
    const m = re.exec(name);
    const p = path.join(parent, name);
    if (!m || !writerGone(Number(m[1]), p)) continue;
    try {
      if (!opts.filesOnly || fs.lstatSync(p).isFile()) fs.rmSync(p, { recursive: true, force: true });
    } catch {
      // gone meanwhile
    }
  }
}

const escapeRe = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

export function writeFileDurable(file: string, text: string | Uint8Array): void {
  const fd = fs.openSync(file, "w");
  try {
    withPath(file, () => {
      fs.writeFileSync(fd, text);
      fs.fsyncSync(fd);
    });
  } finally {
    fs.closeSync(fd);
  }
}

/** Runs a write through a file descriptor, giving its error the file's path: Node's errors of fd writes carry none
 *  (ENOSPC said "no space left on device, write" without saying where). */
export function withPath<T>(file: string, write: () => T): T {
  try {
    return write();
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (err && typeof err === "object" && err.code && !err.path) err.path = file;
    throw e;
  }
}

/**
 * What a save of weights `<stem>.safetensors` writes: the single file, its shards `<stem>-NNNNN-of-NNNNN.safetensors`
 * and their index `<stem>.safetensors.index.json`. (`stem` is the weights name without `.safetensors`, e.g.
 * `diffusion_pytorch_model`.)
 */
function savedWeightsRe(stem: string): RegExp {
  const s = escapeRe(stem);
  return new RegExp(`^(?:${s}(?:-\\d{5}-of-\\d{5})?\\.safetensors|${s}\\.safetensors\\.index\\.json)$`);
}

/** The weights stems of a save's files (`diffusion_pytorch_model` for `diffusion_pytorch_model-00001-of-00002.safetensors`). */
function weightStems(files: Map<string, unknown>): string[] {
  const stems = new Set<string>();
  for (const n of files.keys()) {
    if (n.endsWith(".safetensors.index.json")) stems.add(n.slice(0, -".safetensors.index.json".length));
    else if (n.endsWith(".safetensors")) stems.add(n.replace(/(-\d{5}-of-\d{5})?\.safetensors$/, ""));
  }
  return [...stems];
}

/**
 * The weight files of an earlier save that this one replaces: only names this save's writer produces for the same
 * weights name (`<stem>.safetensors`, `<stem>-NNNNN-of-NNNNN.safetensors`, `<stem>.safetensors.index.json`) that it
 * does not write now. They must go, or a loader sees two sets of weights: diffusers' from_pretrained takes a stale
 * index over a new single file, and our findWeightFiles a stale single file over a new index. Nothing else is removed:
 * `my.safetensors`, `diffusion_pytorch_model_backup.safetensors` are the user's (README: "a .safetensors of yours in
 * output_dir stays").
 */
function staleWeights(existing: string[], files: Map<string, unknown>): string[] {
  const ours = weightStems(files).map(savedWeightsRe);
  return existing.filter((n) => !files.has(n) && ours.some((re) => re.test(n)));
}

/**
 * Files kept beside the new weights that a loader could still pick instead of them, so the save names them in one
 * line. We never write these (our writer has no variants and no pickles), so they may be the user's and are kept:
 *   `<stem>.<variant>.safetensors`, `<stem>.safetensors.index.<variant>.json`, variant shards — from_pretrained loads
 *     them only when asked for `variant="<variant>"`, but then silently, even if they are another model's;
 *   `<stem>.bin` (and its variants/shards) — loaded only with use_safetensors=False or when no safetensors exist
 *     (diffusers prefers safetensors), listed for the same reason.
 * Deleting them would lose a user's file (e.g. an fp16 export they keep there); keeping them silently would let a
 * variant load the wrong weights without a word. So they stay, and the save says so.
 */
function lookalikeWeights(existing: string[], files: Map<string, unknown>): string[] {
  const stems = weightStems(files);
  return existing.filter((n) => !files.has(n) && stems.some((stem) => {
    if (!n.startsWith(`${stem}.`) && !n.startsWith(`${stem}-`)) return false;
    if (savedWeightsRe(stem).test(n)) return false;
    const rest = n.slice(stem.length);
    return /^(?:-\d{5}-of-\d{5})?(?:\.[^.]+)?\.(?:safetensors|bin)$/.test(rest) ||
      /^(?:\.[^.]+)?-\d{5}-of-\d{5}\.(?:safetensors|bin)$/.test(rest) ||
      /^\.(?:safetensors|bin)\.index(?:\.[^.]+)?\.json$/.test(rest);
  }));
}

/** `diffusion_pytorch_model.fp16.safetensors` → `fp16`; null for a file without a variant (`.bin`, other shards). */
function variantOf(name: string, stems: string[]): string | null {
  for (const stem of stems) {
    if (!name.startsWith(stem)) continue;
    const m = /^(?:-\d{5}-of-\d{5})?\.([^.]+?)(?:-\d{5}-of-\d{5})?\.(?:safetensors|bin)$/.exec(name.slice(stem.length)) ??
      /^\.(?:safetensors|bin)\.index\.([^.]+)\.json$/.exec(name.slice(stem.length));
    if (m && m[1] !== "safetensors" && m[1] !== "bin") return m[1]!;
  }
  return null;
}

/** A save's temporary folder inside the destination: `<dir>/.tmp-<pid>-<random>`. */
const TEMP_RE = /^\.(?:tmp|old)-(\d+)-[a-z0-9]+$/;
/** Where earlier versions put it (a sibling `.<name>.tmp-<pid>-<random>`); such leftovers are cleaned too. */
const siblingTempRe = (name: string) => new RegExp(`^\\.${name.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}\\.(?:tmp|old)-(\\d+)-[a-z0-9]+$`);

/** The temporaries this process is writing now (absolute paths): with our own pid in its name, only these are live. */
const ownTemps = new Set<string>();

/** Marks `p` as a temporary this process is writing until the returned function is called. */
export function holdTemp(p: string): () => void {
  const abs = path.resolve(p);
  ownTemps.add(abs);
  return () => ownTemps.delete(abs);
}

/**
 * Whether the writer of the temporary `p` (named with its pid) is gone, so the temporary is stale. Our own pid counts
 * as gone unless we are writing `p` now: in a container every run is pid 1, and the previous run's temporaries carry
 * the same pid as ours.
 */
export function writerGone(pid: number, p: string): boolean {
  if (pid === process.pid) return !ownTemps.has(path.resolve(p));
  return !pidAlive(pid);
}

/** Whether a process with this pid runs (or exists and is not ours to signal). */
function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** Removes temporary folders of saves into `dir` whose writer process is gone (a crash mid-save). */
function cleanStaleTemps(dir: string): void {
  removeStale(dir, TEMP_RE);
  removeStale(path.dirname(dir), siblingTempRe(path.basename(dir)));
}

/**
 * Writes `files` (name → writer) into a temporary folder inside `dir`, then renames each complete file into `dir`
 * (weights first, config.json last) and removes weight files of a previous save that the new one does not have
 * (`staleWeights`: only names our writer produces for the same weights name). Other content of `dir` (checkpoint-N/,
 * logs of a training output folder, the user's own .safetensors) is kept; kept files a loader could take instead of
 * the new weights (a `.fp16.` variant, a `.bin`) are named in one line through `opts.warn` (`lookalikeWeights`).
 *
 * With `opts.modelClass`, a `dir` whose config.json belongs to another model class is refused before anything is
 * written (`checkSaveTarget`): a save must not turn a base model's unet/ into a ControlNet.
 *
 * The temporary folder lives inside `dir`, never beside it: `dir` may be its own filesystem (a Docker volume, a mount
 * point), where a rename from the parent fails with EXDEV, and a crash must not leave a model-sized orphan outside
 * `dir`. Each rename is atomic; readers need config.json, which comes last. Temporaries of writers that died are
 * removed by the next save. A failed save leaves the previous files as they were (and no folder if there was none).
 */
export function publishFolder(
  dir: string,
  files: Map<string, (target: string) => void>,
  opts: { modelClass?: string | null; warn?: (line: string) => void } = {},
): void {
  dir = path.resolve(dir);
  // a config.json of another model is not ours to replace (e.g. output_dir = a base model's unet/): refuse first
  if (files.has(CONFIG_NAME) && opts.modelClass !== undefined) checkSaveTarget(dir, opts.modelClass);
  const created = !fs.existsSync(dir);
  makeDirs(dir);
  cleanStaleTemps(dir);
  const tmpName = `.tmp-${process.pid}-${Math.random().toString(36).slice(2, 10)}`;
  const tmp = path.join(dir, tmpName);
  const release = holdTemp(tmp);
  try {
    fs.mkdirSync(tmp);
    try {
      for (const [name, write] of files) write(path.join(tmp, name));
      fsyncDir(tmp);
    } catch (e) {
      fs.rmSync(tmp, { recursive: true, force: true });
      if (created) fs.rmSync(dir, { recursive: true, force: true });
      throw e;
    }
    const existing = fs.readdirSync(dir).filter((n) => n !== tmpName);
    const order = [...files.keys()].sort((a, b) => Number(a === CONFIG_NAME) - Number(b === CONFIG_NAME));
    try {
      for (const name of order) fs.renameSync(path.join(tmp, name), path.join(dir, name));
    } finally {
      // a failed rename leaves the files already moved (each complete) and no temporary behind
      fs.rmSync(tmp, { recursive: true, force: true });
    }
    const stale = staleWeights(existing, files);
    for (const name of stale) fs.rmSync(path.join(dir, name), { force: true });
    const kept = lookalikeWeights(existing, files);
    if (kept.length) {
      const stems = weightStems(files);
      const variants = [...new Set(kept.map((n) => variantOf(n, stems)).filter((v): v is string => v !== null))];
      const how = [
        ...(variants.length ? [`from_pretrained with ${variants.map((v) => `variant="${v}"`).join(" or ")}`] : []),
        ...(kept.some((n) => n.endsWith(".bin") || n.includes(".bin.index")) ? ["use_safetensors=False"] : []),
      ].join(" or ");
      (opts.warn ?? console.warn)(
        `${dir}: kept ${kept.join(", ")} (not written by this save): ${how || "a loader"} would load ${kept.length === 1 ? "it" : "them"} ` +
          `instead of the new weights — delete ${kept.length === 1 ? "it" : "them"} if stale`,
      );
    }
  } finally {
    release();
  }
  fsyncDir(dir);
  fsyncDir(path.dirname(dir));
}

export interface PipelineComponent {
  name: string;
  /** "diffusers", "transformers", or null for a disabled component (e.g. safety_checker: [null, null]). */
  library: string | null;
  className: string | null;
  /** The component's subfolder. */
  path: string;
  exists: boolean;
}

export interface PipelineFolder {
  dir: string;
  className: string;
  diffusersVersion?: string;
  /** model_index.json as parsed. */
  config: Record<string, unknown>;
  components: Map<string, PipelineComponent>;
}

/** Reads a pipeline folder's model_index.json; components are the `[library, class]` entries. */
export function loadPipelineFolder(dir: string): PipelineFolder {
  const indexFile = path.join(dir, "model_index.json");
  if (!fs.existsSync(indexFile)) {
    const hint = fs.existsSync(path.join(dir, CONFIG_NAME)) ? " (it has config.json: a model folder, not a pipeline)" : "";
    throw new InputError(`Pipeline folder ${dir} has no model_index.json${hint}`);
  }
  const config = readJson(indexFile, "pipeline index");
  if (typeof config._class_name !== "string") throw new InputError(`Invalid pipeline index ${indexFile}: no "_class_name"`);
  const components = new Map<string, PipelineComponent>();
  for (const [name, v] of Object.entries(config)) {
    if (name.startsWith("_") || !Array.isArray(v) || v.length !== 2) continue;
    const [library, className] = v as unknown[];
    if ((library !== null && typeof library !== "string") || (className !== null && typeof className !== "string")) continue;
    if (name !== path.basename(name) || name === "..") throw new InputError(`Invalid pipeline index ${indexFile}: component name ${JSON.stringify(name)}`);
    const p = path.join(dir, name);
    components.set(name, { name, library, className, path: p, exists: fs.existsSync(p) });
  }
  return {
    dir,
    className: config._class_name,
    diffusersVersion: typeof config._diffusers_version === "string" ? config._diffusers_version : undefined,
    config,
    components,
  };
}

/** A component's folder and class; a clear error if the pipeline lacks it or it is disabled/missing on disk. */
export function pipelineComponent(pipe: PipelineFolder, name: string): PipelineComponent & { className: string } {
  const c = pipe.components.get(name);
  if (!c) {
    throw new InputError(`Pipeline ${pipe.dir} (${pipe.className}) has no "${name}" component; it has ${[...pipe.components.keys()].join(", ")}`);
  }
  if (c.className === null) throw new InputError(`Pipeline ${pipe.dir}: component "${name}" is disabled (null) in model_index.json`);
  if (!c.exists) throw new InputError(`Pipeline ${pipe.dir}: component "${name}" (${c.className}) has no folder ${c.path}`);
  return c as PipelineComponent & { className: string };
}
