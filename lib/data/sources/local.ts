/**
 * Opens a dataset on disk whatever its layout, by what the folder holds (first match wins):
 * 1. `prompt.json` → lllyasviel's fill50k layout (source/, target/);
 * 2. parquet files → Hub parquet shards (the `train` split's files when names mention splits);
 * 3. `metadata.jsonl` (in the folder or its train/) → HF imagefolder;
 * 4. `train.jsonl` → the loading-script layout (zips beside it are read lazily) or paths on disk;
 * 5. `.arrow` files → our Arrow cache.
 * A single .parquet / .arrow / .jsonl / prompt.json file may be given directly.
 */
import fs from "node:fs";
import path from "node:path";
import { ArrowTable } from "./arrow.js";
import { imagefolderTable, JsonlTable, promptJsonTable, scriptLayoutTable } from "./folder.js";
import { findParquetFiles, ParquetTable } from "./parquet.js";
import type { Table } from "./table.js";

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
  if (!fs.existsSync(target)) throw new Error(`dataset path not found: ${target}`);
  const st = fs.statSync(target);
  if (st.isFile()) return openFile(target, opts);
  const has = (f: string): boolean => fs.existsSync(path.join(target, f));
  if (has("prompt.json")) return promptJsonTable(path.join(target, "prompt.json"));
  const parquet = findParquetFiles(target, opts.split ?? "train", opts.config);
  if (parquet.length) return ParquetTable.open(parquet, { cacheBytes: opts.parquetCacheBytes });
  for (const m of ["metadata.jsonl", "train/metadata.jsonl", "metadata.json"]) {
    if (has(m)) return imagefolderTable(path.join(target, m), opts);
  }
  for (const j of [`${opts.split ?? "train"}.jsonl`, "train.jsonl"]) {
    if (has(j)) return scriptLayoutTable(path.join(target, j), opts);
  }
  const arrows = fs.readdirSync(target).filter((f) => f.endsWith(".arrow")).sort();
  if (arrows.length === 1) return ArrowTable.open(path.join(target, arrows[0]!), { cacheBatches: opts.arrowCacheBatches });
  if (arrows.length > 1) throw new Error(`${target}: several .arrow files (${arrows.join(", ")}); pass one of them`);
  throw new Error(
    `${target}: no dataset layout recognised (looked for prompt.json, *.parquet, metadata.jsonl, train.jsonl with images.zip/conditioning_images.zip, *.arrow); it holds: ${fs.readdirSync(target).slice(0, 20).join(", ")}`,
  );
}

async function openFile(file: string, opts: OpenLocalOptions): Promise<Table> {
  const base = path.basename(file);
  if (file.endsWith(".parquet")) return ParquetTable.open([file], { cacheBytes: opts.parquetCacheBytes });
  if (file.endsWith(".arrow") || file.endsWith(".feather")) return ArrowTable.open(file, { cacheBatches: opts.arrowCacheBatches });
  if (base === "prompt.json") return promptJsonTable(file);
  if (base.startsWith("metadata.")) return imagefolderTable(file, opts);
  if (file.endsWith(".jsonl")) return scriptLayoutTable(file, opts);
  throw new Error(`${file}: unknown dataset file type (expected .parquet, .arrow, .jsonl or prompt.json)`);
}

export type { JsonlTable };
