/**
 * Arrow IPC files as the on-disk cache format. A dataset is written record batch by record batch (images as HF-style
 * structs {bytes, path} holding encoded PNG/JPEG bytes, captions as utf8), and read back either at random by
 * record batch (an LRU of a few batches, never the whole file) or as a sequential stream.
 */
import fs from "node:fs";
import path from "node:path";
import {
  Binary, Field, List, makeBuilder, makeData, RecordBatch, RecordBatchFileWriter, RecordBatchReader, Schema, Struct,
  tableFromIPC, Utf8, type DataType, type Vector,
} from "apache-arrow";
import type { AsyncRecordBatchFileReader } from "apache-arrow";
import type { Table } from "./table.js";
import { Loader, LruCache } from "./lru.js";
import type { DataSource, DatasetRow, ImageValue } from "../types.js";
import { isRawImage } from "../types.js";
import { encodePng } from "../image.js";
import { makeDirs } from "../../io/dirs.js";

const BATCH_META = "controlnet-ts.batch_size";

/** An Arrow cell → a plain value (structs become objects, binary stays bytes, lists stay vectors). */
function plain(vec: Vector, i: number): unknown {
  if (vec.type instanceof Struct) {
    if (!vec.isValid(i)) return null;
    const o: Record<string, unknown> = {};
    for (const f of (vec.type as Struct).children) o[f.name] = plain(vec.getChild(f.name)!, i);
    return o;
  }
  return vec.get(i);
}

/** Random access over an Arrow IPC *file* (the format with a footer); record batches are loaded on demand. */
export class ArrowTable implements Table {
  readonly columns: string[];
  readonly description: string;
  private readonly batches: Loader<number, RecordBatch>;
  readonly cache: LruCache<number, RecordBatch>;

  private constructor(
    readonly file: string,
    private readonly fh: fs.promises.FileHandle,
    private readonly reader: AsyncRecordBatchFileReader,
    private readonly batchStarts: number[],
    cacheBatches: number,
  ) {
    this.columns = reader.schema.fields.map((f) => f.name);
    this.description = `arrow ${file} (${this.numRows} rows)`;
    this.cache = new LruCache(Infinity, cacheBatches);
    this.batches = new Loader(this.cache, async (b) => {
      const rb = await this.reader.readRecordBatch(b);
      if (!rb) throw new Error(`${this.file}: record batch ${b} unreadable`);
      return { value: rb, bytes: 0 };
    });
  }

  get numRows(): number {
    return this.batchStarts[this.batchStarts.length - 1]!;
  }

  /** Opens an Arrow IPC file. cacheBatches bounds how many decoded record batches stay in memory (default 4). */
  static async open(file: string, opts: { cacheBatches?: number } = {}): Promise<ArrowTable> {
    const fh = await fs.promises.open(file, "r");
    try {
      const reader = await RecordBatchReader.from(fh);
      await reader.open();
      if (!reader.isFile()) {
        throw new Error("is an Arrow IPC stream (no footer), which cannot be read at random; read it with iterateArrowRows() or rewrite it with writeArrowDataset()");
      }
      const fr = reader as unknown as AsyncRecordBatchFileReader;
      const n = fr.numRecordBatches;
      const starts = [0];
      const bs = Number(fr.schema.metadata.get(BATCH_META) ?? NaN);
      if (Number.isInteger(bs) && bs > 0 && n > 0) {
        // our own files: every batch but the last holds batch_size rows, so only the last is read to count
        const last = await fr.readRecordBatch(n - 1);
        for (let b = 0; b < n - 1; b++) starts.push(starts[b]! + bs);
        starts.push(starts[n - 1]! + (last?.numRows ?? 0));
      } else {
        // foreign files: one pass reading each batch once (none kept) to count rows
        for (let b = 0; b < n; b++) starts.push(starts[b]! + ((await fr.readRecordBatch(b))?.numRows ?? 0));
      }
      return new ArrowTable(file, fh, fr, starts, opts.cacheBatches ?? 4);
    } catch (e) {
      await fh.close();
      throw new Error(`${file}: ${(e as Error).message}`);
    }
  }

  async readCells(row: number, columns: readonly string[]): Promise<unknown[]> {
    let b = 0;
    while (row >= this.batchStarts[b + 1]!) b++;
    const rb = await this.batches.get(b);
    const i = row - this.batchStarts[b]!;
    return columns.map((c) => {
      const v = rb.getChild(c);
      return v ? plain(v, i) : null;
    });
  }

  async close(): Promise<void> {
    await this.fh.close();
  }
}

interface StreamMessage {
  start: number;
  end: number;
  /** 1 Schema, 2 DictionaryBatch, 3 RecordBatch (Arrow's MessageHeader union). */
  type: number;
  /** Rows, for record batches. */
  rows: number;
}

/**
 * Indexes the messages of an Arrow IPC *stream* (HF `datasets` cache files and `save_to_disk` shards use this
 * format) without reading the bodies: each message is [0xFFFFFFFF] int32 metadataSize, a flatbuffer Message
 * (header type, header, bodyLength), then the body. Only the few flatbuffer fields needed are decoded.
 */
async function indexStream(fh: fs.promises.FileHandle): Promise<StreamMessage[]> {
  const { size } = await fh.stat();
  const msgs: StreamMessage[] = [];
  let pos = 0;
  const head = Buffer.alloc(8);
  while (pos + 4 <= size) {
    await fh.read(head, 0, 8, pos);
    let metaLen = head.readInt32LE(0);
    let metaStart = pos + 4;
    if (metaLen === -1) { metaLen = head.readInt32LE(4); metaStart = pos + 8; } // continuation marker
    if (metaLen === 0) break; // end of stream
    const meta = Buffer.alloc(metaLen);
    await fh.read(meta, 0, metaLen, metaStart);
    // flatbuffers: root uoffset → table; table's soffset → vtable; vtable slots give field offsets
    const table = meta.readUInt32LE(0);
    const vtable = table - meta.readInt32LE(table);
    const vlen = meta.readUInt16LE(vtable);
    const field = (id: number): number => (4 + 2 * id < vlen ? meta.readUInt16LE(vtable + 4 + 2 * id) : 0);
    const type = field(1) ? meta.readUInt8(table + field(1)) : 0;
    const bodyLength = field(3) ? Number(meta.readBigInt64LE(table + field(3))) : 0;
    let rows = 0;
    if (type === 3 && field(2)) {
      const hp = table + field(2);
      const ht = hp + meta.readUInt32LE(hp); // RecordBatch table; field 0 = length (int64)
      const hv = ht - meta.readInt32LE(ht);
      const hvlen = meta.readUInt16LE(hv);
      const f0 = 4 < hvlen ? meta.readUInt16LE(hv + 4) : 0;
      rows = f0 ? Number(meta.readBigInt64LE(ht + f0)) : 0;
    }
    const end = metaStart + metaLen + bodyLength;
    msgs.push({ start: pos, end, type, rows });
    pos = end;
  }
  return msgs;
}

/**
 * Random access over an Arrow IPC *stream* file: its messages are indexed once, then a record batch is read by
 * handing apache-arrow the schema message + that batch's message (dictionaries included) as a small stream.
 */
export class ArrowStreamTable implements Table {
  readonly columns: string[];
  readonly description: string;
  readonly cache: LruCache<number, RecordBatch>;
  private readonly batches: Loader<number, RecordBatch>;

  private constructor(
    readonly file: string,
    private readonly fh: fs.promises.FileHandle,
    private readonly prefix: Buffer,
    private readonly records: StreamMessage[],
    private readonly batchStarts: number[],
    columns: string[],
    cacheBatches: number,
  ) {
    this.columns = columns;
    this.description = `arrow stream ${file} (${this.numRows} rows)`;
    this.cache = new LruCache(Infinity, cacheBatches);
    this.batches = new Loader(this.cache, async (b) => {
      const m = this.records[b]!;
      const body = Buffer.alloc(m.end - m.start);
      await this.fh.read(body, 0, body.length, m.start);
      const t = tableFromIPC(Buffer.concat([this.prefix, body, EOS]));
      const rb = t.batches[0];
      if (!rb) throw new Error(`${this.file}: record batch ${b} unreadable`);
      return { value: rb, bytes: 0 };
    });
  }

  get numRows(): number {
    return this.batchStarts[this.batchStarts.length - 1]!;
  }

  static async open(file: string, opts: { cacheBatches?: number } = {}): Promise<ArrowStreamTable> {
    const fh = await fs.promises.open(file, "r");
    try {
      const msgs = await indexStream(fh);
      const schema = msgs.find((m) => m.type === 1);
      if (!schema) throw new Error("no schema message");
      // the schema and every dictionary batch go in front of each record batch read
      const prefixParts: Buffer[] = [];
      for (const m of msgs.filter((x) => x.type === 1 || x.type === 2)) {
        const b = Buffer.alloc(m.end - m.start);
        await fh.read(b, 0, b.length, m.start);
        prefixParts.push(b);
      }
      const prefix = Buffer.concat(prefixParts);
      const columns = tableFromIPC(Buffer.concat([prefix, EOS])).schema.fields.map((f) => f.name);
      const records = msgs.filter((m) => m.type === 3);
      const starts = [0];
      for (const r of records) starts.push(starts[starts.length - 1]! + r.rows);
      return new ArrowStreamTable(file, fh, prefix, records, starts, columns, opts.cacheBatches ?? 4);
    } catch (e) {
      await fh.close();
      throw new Error(`${file}: not a readable Arrow IPC stream (${(e as Error).message})`);
    }
  }

  async readCells(row: number, columns: readonly string[]): Promise<unknown[]> {
    let b = 0;
    while (row >= this.batchStarts[b + 1]!) b++;
    const rb = await this.batches.get(b);
    const i = row - this.batchStarts[b]!;
    return columns.map((c) => {
      const v = rb.getChild(c);
      return v ? plain(v, i) : null;
    });
  }

  async close(): Promise<void> {
    await this.fh.close();
  }
}

/** End-of-stream marker: continuation + zero length. */
const EOS = Buffer.from([0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]);

/** Opens an Arrow IPC file of either format: file (footer) → ArrowTable, stream → ArrowStreamTable. */
export async function openArrow(file: string, opts: { cacheBatches?: number } = {}): Promise<ArrowTable | ArrowStreamTable> {
  const fh = await fs.promises.open(file, "r");
  const magic = Buffer.alloc(6);
  await fh.read(magic, 0, 6, 0);
  await fh.close();
  return magic.toString("latin1") === "ARROW1" ? ArrowTable.open(file, opts) : ArrowStreamTable.open(file, opts);
}

/** Streams the rows of an Arrow IPC file or stream in order, one record batch in memory at a time. */
export async function* iterateArrowRows(file: string, columns?: readonly string[]): AsyncGenerator<Record<string, unknown>> {
  const reader = await RecordBatchReader.from(fs.createReadStream(file));
  for await (const rb of reader) {
    const cols = columns ?? rb.schema.fields.map((f) => f.name);
    for (let i = 0; i < rb.numRows; i++) {
      const o: Record<string, unknown> = {};
      for (const c of cols) {
        const v = rb.getChild(c);
        o[c] = v ? plain(v, i) : null;
      }
      yield o;
    }
  }
}

const IMAGE_TYPE = (): Struct => new Struct([new Field("bytes", new Binary(), true), new Field("path", new Utf8(), true)]);

async function imageBytes(v: ImageValue): Promise<Uint8Array> {
  return isRawImage(v) ? encodePng(v) : v;
}

export interface WriteArrowOptions {
  /** Rows per record batch (default 64). Small batches keep random reads cheap. */
  batchSize?: number;
  /** Called after each batch with the number of rows written so far. */
  onProgress?: (rowsWritten: number, total: number) => void;
  /** Skip rows whose `get` rejects (default true); their indices are returned. */
  skipBadRows?: boolean;
}

/**
 * Writes a source as an Arrow IPC file with columns image, conditioning_image (structs {bytes, path}) and text
 * (utf8, or list<utf8> when the first row has several captions). Streams: one batch of rows in memory at a time;
 * atomic (temporary file, then rename).
 */
export async function writeArrowDataset(source: DataSource, file: string, opts: WriteArrowOptions = {}): Promise<{ rows: number; skipped: number[] }> {
  const batchSize = opts.batchSize ?? 64;
  const skipBad = opts.skipBadRows ?? true;
  const skipped: number[] = [];
  let textType: DataType | undefined;
  let schema: Schema | undefined;
  makeDirs(path.dirname(path.resolve(file)));
  const tmp = `${file}.tmp-${process.pid}`;
  const out = fs.createWriteStream(tmp);
  const done = new Promise<void>((res, rej) => { out.on("finish", res); out.on("error", rej); });
  const writer = new RecordBatchFileWriter();
  writer.pipe(out);
  let rows = 0;
  let pending: DatasetRow[] = [];
  const begin = (first: DatasetRow | undefined): Schema => {
    textType = first && Array.isArray(first.text) ? new List(new Field("item", new Utf8(), true)) : new Utf8();
    const meta = new Map([[BATCH_META, String(batchSize)]]);
    const s = new Schema([new Field("image", IMAGE_TYPE(), true), new Field("conditioning_image", IMAGE_TYPE(), true), new Field("text", textType, true)], meta);
    writer.reset(undefined, s);
    return s;
  };
  // every batch but the last holds exactly batchSize rows (readers rely on it), so good rows are buffered
  const flush = async (): Promise<void> => {
    if (!pending.length) return;
    schema ??= begin(pending[0]);
    const ib = makeBuilder({ type: IMAGE_TYPE(), nullValues: [null, undefined] });
    const cb = makeBuilder({ type: IMAGE_TYPE(), nullValues: [null, undefined] });
    const tb = makeBuilder({ type: textType!, nullValues: [null, undefined] });
    const isList = textType instanceof List;
    for (const r of pending) {
      ib.append({ bytes: await imageBytes(r.image), path: null } as never);
      cb.append({ bytes: await imageBytes(r.conditioning_image), path: null } as never);
      // a utf8 column keeps the first caption of a list (the schema is fixed by the first row)
      tb.append((isList ? (Array.isArray(r.text) ? r.text : [r.text]) : Array.isArray(r.text) ? r.text[0] ?? "" : r.text) as never);
    }
    const data = makeData({ type: new Struct(schema.fields), length: pending.length, children: [ib.finish().flush(), cb.finish().flush(), tb.finish().flush()] });
    writer.write(new RecordBatch(schema, data));
    rows += pending.length;
    pending = [];
    opts.onProgress?.(rows, source.length);
  };
  try {
    for (let i = 0; i < source.length; i++) {
      try {
        pending.push(await source.get(i));
      } catch (e) {
        if (!skipBad) throw e;
        skipped.push(i);
      }
      if (pending.length === batchSize) await flush();
    }
    await flush();
    schema ??= begin(undefined);
    writer.finish();
    await done;
    fs.renameSync(tmp, file);
  } catch (e) {
    writer.abort?.();
    out.destroy();
    fs.rmSync(tmp, { force: true });
    throw e;
  }
  return { rows, skipped };
}
