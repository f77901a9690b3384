/**
 * Opens a dataset on disk whatever its layout, by what the folder holds (first match wins):
 * 1. `prompt.json` → lllyasviel's fill50k layout (source/, target/);
 * 2. parquet files → Hub parquet shards (the `train` split's files when names mention splits);
 * 3. `metadata.jsonl` / `metadata.csv` / `metadata.json` files (all of the split's, at any depth) → HF imagefolder;
 * 4. `train.jsonl` → the loading-script layout (zips beside it are read lazily) or paths on disk;
 * 5. `datasets` save_to_disk folders (state.json, or dataset_dict.json + <split>/state.json) and `.arrow` files (the split's, by name) →
 *    Arrow IPC, file or stream format (our cache, or HF's cache shards, concatenated in name order).
 * A single .parquet / .arrow / .jsonl / prompt.json file may be given directly.
 */
import fs from "node:fs";
import path from "node:path";
import { openArrow } from "./arrow.js";
import { imagefolderTable, JsonlTable, promptJsonTable, scriptLayoutTable } from "./folder.js";
import { findParquetFiles, ParquetTable } from "./parquet.js";
import { filesOfSplit, filesUnder } from "./splits.js";
import { ConcatTable, withDatasetFiles, type Table } from "./table.js";
import { InputError } from "../../io/input-error.js";

export interface OpenLocalOptions {
  split?: string;
  /** dataset_config_name: the config folder of a multi-config parquet repo. */
  config?: string;
  /** Refuse absolute / `..` paths in metadata (set for hub snapshots). */
  strictPaths?: boolean;
  warn?: (m: string) => void;
  /** Decoded parquet row groups kept in memory (bytes). */
  parquetCacheBytes?: number;
  /** Decoded Arrow record batches kept in memory. */
  arrowCacheBatches?: number;
}

export async function openLocalTable(target: string, opts: OpenLocalOptions = {}): Promise<Table> {
  if (!fs.existsSync(target)) throw new InputError(`dataset path not found: ${target}`);
  const st = fs.statSync(target);
  if (st.isFile()) return openFile(target, opts);
  const has = (f: string): boolean => fs.existsSync(path.join(target, f));
  if (has("prompt.json")) return promptJsonTable(path.join(target, "prompt.json"));
  const parquet = findParquetFiles(target, opts.split ?? "train", opts.config);
  if (parquet.length) return withFiles(await ParquetTable.open(parquet, { cacheBytes: opts.parquetCacheBytes }), target, opts);
  // every metadata file of the split, at any depth, as datasets' imagefolder (only the first of five fixed places was
  // read: a nested one's rows were dropped, or the folder refused); each names its images from its own folder
  const metadata = filesUnder(target, (name) => /^metadata\.(jsonl|csv|json)$/.test(name));
  if (metadata.length) {
    const [first, ...more] = filesOfSplit(target, metadata, opts.split ?? "train", "metadata files");
    return imagefolderTable(first!, { ...opts, moreMetadata: more });
  }
  for (const j of [`${opts.split ?? "train"}.jsonl`, "train.jsonl"]) {
    if (has(j)) return scriptLayoutTable(path.join(target, j), opts);
  }
  const split = opts.split ?? "train";
  if (has("dataset_dict.json") && fs.existsSync(path.join(target, split, "state.json"))) return openSaveToDisk(path.join(target, split), opts);
  if (has("state.json")) return openSaveToDisk(target, opts);
  // HF cache shards (<name>-<split>-0000N-of-0000M.arrow) are picked by split as datasets picks data files
  const arrows = fs.readdirSync(target).filter((f) => f.endsWith(".arrow")).sort().map((f) => path.join(target, f));
  if (arrows.length) return withFiles(await concatArrow(filesOfSplit(target, arrows, split, ".arrow files"), opts, `arrow ${target}`), target, opts);
  throw new InputError(
    `${target}: no dataset layout recognised (looked for prompt.json, *.parquet, metadata.jsonl, train.jsonl with images.zip/conditioning_images.zip, *.arrow); it holds: ${fs.readdirSync(target).slice(0, 20).join(", ")}`,
  );
}

async function openFile(file: string, opts: OpenLocalOptions): Promise<Table> {
  const base = path.basename(file);
  const dir = path.dirname(file);
  if (file.endsWith(".parquet")) return withFiles(await ParquetTable.open([file], { cacheBytes: opts.parquetCacheBytes }), dir, opts);
  if (file.endsWith(".arrow") || file.endsWith(".feather")) return withFiles(await openArrow(file, { cacheBatches: opts.arrowCacheBatches }), dir, opts);
  if (base === "prompt.json") return promptJsonTable(file);
  if (base.startsWith("metadata.")) return imagefolderTable(file, opts);
  if (file.endsWith(".jsonl")) return scriptLayoutTable(file, opts);
  throw new InputError(`${file}: unknown dataset file type (expected .parquet, .arrow, .jsonl or prompt.json)`);
}

/** Arrow shards (any IPC format) as one table. */
async function concatArrow(files: string[], opts: OpenLocalOptions, label: string): Promise<Table> {
  const parts: Table[] = [];
  for (const f of files) parts.push(await openArrow(f, { cacheBatches: opts.arrowCacheBatches }));
  return parts.length === 1 ? parts[0]! : new ConcatTable(parts, `${label} (${files.length} shards)`);
}

/** A `datasets` Dataset.save_to_disk folder: state.json lists the .arrow shards (IPC stream format). */
async function openSaveToDisk(dir: string, opts: OpenLocalOptions): Promise<Table> {
  const state = JSON.parse(fs.readFileSync(path.join(dir, "state.json"), "utf8")) as { _data_files?: { filename: string }[] };
  const files = (state._data_files ?? []).map((f) => f.filename);
  if (!files.length) throw new InputError(`${dir}/state.json lists no data files`);
  for (const f of files) if (!isSafeName(f)) throw new InputError(`${dir}/state.json: refused data file name ${f}`);
  return withFiles(await concatArrow(files.map((f) => path.join(dir, f)), opts, `save_to_disk ${dir}`), dir, opts);
}

/** Lets a table's path-only image cells be read from `dir` (strictly inside it for hub snapshots). */
function withFiles<T extends Table>(table: T, dir: string, opts: OpenLocalOptions): T {
  return withDatasetFiles(table, dir, opts.strictPaths ?? false);
}

function isSafeName(f: string): boolean {
  return !f.includes("/") && !f.includes("\\") && f !== ".." && f !== ".";
}

export type { JsonlTable };
