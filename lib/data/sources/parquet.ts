/**
 * Parquet shards as the Hub stores datasets (`data/train-00000-of-00004.parquet`, or `default/train/0000.parquet` on
 * refs/convert/parquet). Images are HF Image structs `{bytes, path}`. Rows are read one row group at a time with
 * hyparquet (`utf8: false` so image bytes stay bytes) and decoded row groups sit in a byte-bounded LRU cache, so a
 * shuffled pass never holds the whole dataset.
 */
import fs from "node:fs";
import path from "node:path";
import { asyncBufferFromFile, parquetMetadataAsync, parquetReadObjects, parquetSchema, type AsyncBuffer, type FileMetaData } from "hyparquet";
import type { Table } from "./table.js";
import { Loader, LruCache } from "./lru.js";
import { cardConfigFiles } from "./card.js";
import { InputError } from "../../io/input-error.js";
import { filesOfSplit, filesUnder } from "./splits.js";

interface Shard {
  file: string;
  buffer: AsyncBuffer;
  metadata: FileMetaData;
  /** First global row of each row group, plus the end. */
  groupStarts: number[];
}

/**
 * Parquet files under `dir` (recursively), sorted: those of the dataset card's config (README.md's `configs:`,
 * cardConfigFiles) where it declares them; else restricted to the folder named `config` when there is one, then to the
 * files named after `split` by datasets' keywords (train / training, …). Files named only after other splits are no
 * train data: refused, as the script's dataset["train"] fails. An imagefolder's metadata.parquet is not data.
 */
export function findParquetFiles(dir: string, split = "train", config?: string): string[] {
  const all = filesUnder(dir, (name) => name.endsWith(".parquet") && name !== "metadata.parquet");
  if (!all.length) return all;
  const fromCard = cardConfigFiles(dir, all, split, config);
  if (fromCard) {
    if (!fromCard.length) throw new InputError(`${dir}: its card's config ${config ? `'${config}' ` : ""}names no parquet files of split '${split}'`);
    return fromCard;
  }
  if (config) {
    // `<config>/train/*.parquet` (refs/convert/parquet) or `data/<config>/…`: keep that config's files when present
    const inConfig = all.filter((f) => path.relative(dir, f).replace(/\\/g, "/").split("/").slice(0, -1).includes(config));
    if (inConfig.length) all.splice(0, all.length, ...inConfig);
  }
  return filesOfSplit(dir, all, split, "parquet files");
}

export class ParquetTable implements Table {
  readonly columns: string[];
  readonly numRows: number;
  readonly description: string;
  private readonly groups: Loader<string, Record<string, unknown>[]>;

  private constructor(private readonly shards: Shard[], private readonly shardStarts: number[], cacheBytes: number) {
    this.columns = parquetSchema(shards[0]!.metadata).children.map((c) => c.element.name);
    this.numRows = shardStarts[shardStarts.length - 1]!;
    const where = shards.length === 1 ? shards[0]!.file : `${path.dirname(shards[0]!.file)} (${shards.length} shards)`;
    this.description = `parquet ${where} (${this.numRows} rows)`;
    this.groups = new Loader(new LruCache(cacheBytes), (key) => this.loadGroup(key));
  }

  /** Opens the given shards (all must share the first one's columns). cacheBytes bounds the decoded row groups kept. */
  static async open(files: string[], opts: { cacheBytes?: number } = {}): Promise<ParquetTable> {
    if (!files.length) throw new Error("no parquet files");
    const shards: Shard[] = [];
    const starts = [0];
    for (const file of files) {
      const buffer = await asyncBufferFromFile(file);
      let metadata: FileMetaData;
      try {
        metadata = await parquetMetadataAsync(buffer);
      } catch (e) {
        throw new Error(`${file}: not a readable parquet file (${(e as Error).message})`);
      }
      const groupStarts = [0];
      for (const rg of metadata.row_groups) groupStarts.push(groupStarts[groupStarts.length - 1]! + Number(rg.num_rows));
      shards.push({ file, buffer, metadata, groupStarts });
      starts.push(starts[starts.length - 1]! + Number(metadata.num_rows));
    }
    const t = new ParquetTable(shards, starts, opts.cacheBytes ?? 256 * 2 ** 20);
    for (const s of shards.slice(1)) {
      const cols = parquetSchema(s.metadata).children.map((c) => c.element.name);
      const missing = t.columns.filter((c) => !cols.includes(c));
      if (missing.length) throw new Error(`${s.file}: lacks columns ${missing.join(", ")} of ${shards[0]!.file}`);
    }
    return t;
  }

  private locate(row: number): { shard: number; group: number; offset: number } {
    let s = 0;
    while (row >= this.shardStarts[s + 1]!) s++;
    const local = row - this.shardStarts[s]!;
    const gs = this.shards[s]!.groupStarts;
    let g = 0;
    while (local >= gs[g + 1]!) g++;
    return { shard: s, group: g, offset: local - gs[g]! };
  }

  private async loadGroup(key: string): Promise<{ value: Record<string, unknown>[]; bytes: number }> {
    const [s, g, cols] = key.split("|") as [string, string, string];
    const shard = this.shards[Number(s)]!;
    const rows = await parquetReadObjects({
      file: shard.buffer,
      metadata: shard.metadata,
      columns: JSON.parse(cols) as string[],
      rowStart: shard.groupStarts[Number(g)]!,
      rowEnd: shard.groupStarts[Number(g) + 1]!,
      utf8: false,
    });
    const bytes = Number(shard.metadata.row_groups[Number(g)]!.total_byte_size);
    return { value: rows, bytes };
  }

  async readCells(row: number, columns: readonly string[]): Promise<unknown[]> {
    const { shard, group, offset } = this.locate(row);
    const rows = await this.groups.get(`${shard}|${group}|${JSON.stringify(columns)}`);
    const r = rows[offset]!;
    return columns.map((c) => r[c]);
  }
}
