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

/** The diffusers version we write into configs: the release whose file formats we follow. */
export const DIFFUSERS_VERSION = "0.35.2";
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
export function pickleRefusal(file: string): Error {
  return new Error(
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
    throw new Error(`Cannot read ${what} ${file}: ${(e as Error).message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new Error(`Invalid ${what} ${file}: not valid JSON (${(e as Error).message})`);
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) throw new Error(`Invalid ${what} ${file}: not a JSON object`);
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
  throw new Error(
    `No weights found in model folder ${dir}: looked for ${wanted} or ${addVariant(TRANSFORMERS_WEIGHTS_NAME, variant)} ` +
      `(or their .index.json shards)` + (others.length ? `; the folder has ${others.join(", ")}${variant ? "" : " (pass variant: to pick one)"}` : ""),
  );
}

/** Parses a `*.safetensors.index.json`, checking that every shard is a plain file name inside the same folder. */
function readShardIndex(index: string): Map<string, string[]> {
  const json = readJson(index, "shard index");
  const map = json.weight_map;
  if (typeof map !== "object" || map === null || Array.isArray(map)) throw new Error(`Invalid shard index ${index}: no "weight_map" object`);
  const shards = new Map<string, string[]>();
  const dir = path.dirname(index);
  for (const [name, file] of Object.entries(map as Record<string, unknown>)) {
    // An index from the internet must not point outside its folder.
    if (typeof file !== "string" || file === "" || file !== path.basename(file) || file === "." || file === ".." || file.includes("\\")) {
      throw new Error(`Invalid shard index ${index}: tensor "${name}" maps to ${JSON.stringify(file)}, not a file name in the same folder`);
    }
    if (isPickleFile(file)) throw pickleRefusal(path.join(dir, file));
    const full = path.join(dir, file);
    if (!shards.has(full)) shards.set(full, []);
    shards.get(full)!.push(name);
  }
  for (const shard of shards.keys()) {
    if (!fs.existsSync(shard)) throw new Error(`Shard index ${index} lists ${path.basename(shard)}, which is missing from the folder`);
  }
  return shards;
}

/** Reads a model folder's config.json and weights (PyTorch layout, float32/int32). `only` limits the tensors read. */
export function loadModelFolder(
  dir: string,
  opts: { variant?: string; only?: string[] } = {},
): { config: Record<string, unknown>; tensors: Map<string, HostTensor> } {
  if (isPickleFile(dir)) throw pickleRefusal(dir);
  if (!fs.existsSync(dir)) throw new Error(`Model folder not found: ${dir}`);
  if (!fs.statSync(dir).isDirectory()) throw new Error(`Not a model folder: ${dir} is a file (expected a folder with config.json and weights)`);
  const configFile = path.join(dir, CONFIG_NAME);
  if (!fs.existsSync(configFile)) throw new Error(`Model folder ${dir} has no ${CONFIG_NAME}`);
  const config = readJson(configFile, "model config");
  const { shards } = findWeightFiles(dir, opts);
  const only = opts.only ? new Set(opts.only) : undefined;
  const tensors = new Map<string, HostTensor>();
  for (const [file, names] of shards) {
    let want = names === "all" ? undefined : names;
    if (only) want = (want ?? [...readSafetensorsHeader(file).entries.keys()]).filter((n) => only.has(n));
    if (want && want.length === 0) continue;
    for (const [name, t] of readSafetensors(file, { only: want }).tensors) {
      if (tensors.has(name)) throw new Error(`Model folder ${dir}: tensor "${name}" appears in more than one shard`);
      tensors.set(name, t);
    }
  }
  if (only) {
    const missing = [...only].filter((n) => !tensors.has(n));
    if (missing.length) throw new Error(`Model folder ${dir} has no tensor named ${missing.map((m) => `"${m}"`).join(", ")}`);
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
  publishFolder(dir, files);
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
 *  file or the new one, never an empty or partial one). */
export function writeFileAtomic(file: string, text: string): void {
  const tmp = `${file}.tmp-${process.pid}`;
  try {
    writeFileDurable(tmp, text);
    fs.renameSync(tmp, file);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw e;
  }
}

export function writeFileDurable(file: string, text: string): void {
  const fd = fs.openSync(file, "w");
  try {
    fs.writeFileSync(fd, text);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** Names a save owns: a folder holding only these can be swapped whole. */
function isModelFile(name: string): boolean {
  return name === CONFIG_NAME || name.endsWith(".safetensors") || /\.safetensors\.index(\.[^.]+)?\.json$/.test(name);
}

/**
 * The weight files of an earlier save that this one replaces, as diffusers' save_pretrained finds them: files named
 * like this save's weights (`diffusion_pytorch_model…`: other shard counts, variants, its index) that it does not
 * write. Anything else in the folder (a base model's `.safetensors` kept there, notes) is the user's and stays.
 */
function staleWeights(existing: string[], files: Map<string, unknown>): string[] {
  const stems = [...files.keys()].filter((n) => n.endsWith(".safetensors")).map((n) => n.replace(/(-\d{5}-of-\d{5})?\.safetensors$/, ""));
  return existing.filter((n) => n !== CONFIG_NAME && isModelFile(n) && !files.has(n) && stems.some((stem) => n.startsWith(stem)));
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
  const sweep = (parent: string, re: RegExp) => {
    let names: string[];
    try {
      names = fs.readdirSync(parent);
    } catch {
      return;
    }
    for (const name of names) {
      const m = re.exec(name);
      if (m && writerGone(Number(m[1]), path.join(parent, name))) fs.rmSync(path.join(parent, name), { recursive: true, force: true });
    }
  };
  sweep(dir, TEMP_RE);
  sweep(path.dirname(dir), siblingTempRe(path.basename(dir)));
}

/**
 * Writes `files` (name → writer) into a temporary folder inside `dir`, then renames each complete file into `dir`
 * (weights first, config.json last) and removes weight files of a previous save that the new one does not have.
 * Other content of `dir` (checkpoint-N/, logs of a training output folder) is kept.
 *
 * The temporary folder lives inside `dir`, never beside it: `dir` may be its own filesystem (a Docker volume, a mount
 * point), where a rename from the parent fails with EXDEV, and a crash must not leave a model-sized orphan outside
 * `dir`. Each rename is atomic; readers need config.json, which comes last. Temporaries of writers that died are
 * removed by the next save. A failed save leaves the previous files as they were (and no folder if there was none).
 */
export function publishFolder(dir: string, files: Map<string, (target: string) => void>): void {
  dir = path.resolve(dir);
  const created = !fs.existsSync(dir);
  fs.mkdirSync(dir, { recursive: true });
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
    throw new Error(`Pipeline folder ${dir} has no model_index.json${hint}`);
  }
  const config = readJson(indexFile, "pipeline index");
  if (typeof config._class_name !== "string") throw new Error(`Invalid pipeline index ${indexFile}: no "_class_name"`);
  const components = new Map<string, PipelineComponent>();
  for (const [name, v] of Object.entries(config)) {
    if (name.startsWith("_") || !Array.isArray(v) || v.length !== 2) continue;
    const [library, className] = v as unknown[];
    if ((library !== null && typeof library !== "string") || (className !== null && typeof className !== "string")) continue;
    if (name !== path.basename(name) || name === "..") throw new Error(`Invalid pipeline index ${indexFile}: component name ${JSON.stringify(name)}`);
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
    throw new Error(`Pipeline ${pipe.dir} (${pipe.className}) has no "${name}" component; it has ${[...pipe.components.keys()].join(", ")}`);
  }
  if (c.className === null) throw new Error(`Pipeline ${pipe.dir}: component "${name}" is disabled (null) in model_index.json`);
  if (!c.exists) throw new Error(`Pipeline ${pipe.dir}: component "${name}" (${c.className}) has no folder ${c.path}`);
  return c as PipelineComponent & { className: string };
}
