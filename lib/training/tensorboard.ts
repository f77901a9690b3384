/**
 * TensorBoard event files without TensorFlow: the record framing and the few protobuf fields we need, by hand.
 *
 * File: `events.out.tfevents.<unix seconds>.<host>.<pid>.0` in the log directory. Each record is
 *   u64le length · u32le masked_crc32c(length bytes) · data · u32le masked_crc32c(data)
 * with masked(c) = ((c >>> 15) | (c << 17)) + 0xa282ead8. The data is a serialised `tensorflow.Event`:
 *   wall_time (1, double) · step (2, int64) · file_version (3, string; the first record, "brain.Event:2") ·
 *   summary (5) → value (1, repeated) → tag (1) + simple_value (2, float) | image (4) → height (1), width (2),
 *   colorspace (3), encoded_image_string (4, PNG) | metadata (9) → plugin_data (1) → plugin_name (1), content (2)
 *   (the hparams plugin's summaries).
 * A reader (used by the tests, and handy to inspect runs) parses records back and verifies every CRC.
 *
 * Also here: the JSON-lines log (one object per line) that the notebook widgets follow.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { crc32c } from "@aws-crypto/crc32c";
import { makeDirs } from "../io/dirs.js";
import { withPath } from "../io/diffusers.js";

export function maskedCrc32c(data: Uint8Array): number {
  const c = crc32c(data) >>> 0;
  return (((c >>> 15) | (c << 17)) + 0xa282ead8) >>> 0;
}

// ---- protobuf encoding (only what the Event message needs) ----

class ProtoWriter {
  private chunks: Uint8Array[] = [];
  private size = 0;

  private push(b: Uint8Array): void {
    this.chunks.push(b);
    this.size += b.length;
  }
  private varint(v: number | bigint): void {
    let x = BigInt.asUintN(64, BigInt(v));
    const out: number[] = [];
    while (x >= 0x80n) {
      out.push(Number(x & 0x7fn) | 0x80);
      x >>= 7n;
    }
    out.push(Number(x));
    this.push(Uint8Array.from(out));
  }
  private tag(field: number, wire: number): void {
    this.varint((field << 3) | wire);
  }
  double(field: number, v: number): this {
    this.tag(field, 1);
    const b = new Uint8Array(8);
    new DataView(b.buffer).setFloat64(0, v, true);
    this.push(b);
    return this;
  }
  float(field: number, v: number): this {
    this.tag(field, 5);
    const b = new Uint8Array(4);
    new DataView(b.buffer).setFloat32(0, v, true);
    this.push(b);
    return this;
  }
  int(field: number, v: number | bigint): this {
    this.tag(field, 0);
    this.varint(v);
    return this;
  }
  bytes(field: number, b: Uint8Array): this {
    this.tag(field, 2);
    this.varint(b.length);
    this.push(b);
    return this;
  }
  string(field: number, s: string): this {
    return this.bytes(field, Buffer.from(s, "utf8"));
  }
  message(field: number, m: ProtoWriter): this {
    return this.bytes(field, m.finish());
  }
  finish(): Uint8Array {
    return Buffer.concat(this.chunks, this.size);
  }
}

export interface EncodedImage {
  /** PNG bytes. */
  png: Uint8Array;
  height: number;
  width: number;
  /** 1 grey, 3 RGB, 4 RGBA. */
  channels: 1 | 3 | 4;
}

function eventBytes(step: number, wallTime: number, fill: (e: ProtoWriter) => void): Uint8Array {
  const e = new ProtoWriter().double(1, wallTime).int(2, step);
  fill(e);
  return e.finish();
}

export function frameRecord(data: Uint8Array): Uint8Array {
  const out = new Uint8Array(8 + 4 + data.length + 4);
  const dv = new DataView(out.buffer);
  dv.setBigUint64(0, BigInt(data.length), true);
  dv.setUint32(8, maskedCrc32c(out.subarray(0, 8)), true);
  out.set(data, 12);
  dv.setUint32(12 + data.length, maskedCrc32c(data), true);
  return out;
}

/** Encodes raw 8-bit pixels (HWC) as PNG through sharp (loaded on first use). */
export async function encodePng(pixels: Uint8Array, width: number, height: number, channels: 1 | 3 | 4): Promise<EncodedImage> {
  if (pixels.length !== width * height * channels) throw new Error(`encodePng: ${pixels.length} bytes for ${width}x${height}x${channels}`);
  const sharp = (await import("sharp")).default;
  const png = await sharp(Buffer.from(pixels.buffer, pixels.byteOffset, pixels.byteLength), { raw: { width, height, channels } }).png().toBuffer();
  return { png: new Uint8Array(png), width, height, channels };
}

/**
 * Tiles images into one: up to `nrow` per row, `padding` pixels (value 0) around each cell (torchvision's make_grid
 * with the defaults nrow 8, padding 2; the demo's grids). SummaryWriter.add_images tiles with
 * torch.utils.tensorboard's own make_grid instead — 8 per row, no padding — which is makeGrid(…, 8, 0).
 * All images HWC uint8 of the same size and channel count.
 */
export function makeGrid(images: Uint8Array[], width: number, height: number, channels: number, nrow = 8, padding = 2): { pixels: Uint8Array; width: number; height: number } {
  if (images.length === 0) throw new Error("makeGrid: no images");
  const cols = Math.min(nrow, images.length);
  const rows = Math.ceil(images.length / cols);
  const cw = width + padding;
  const ch = height + padding;
  const W = cols * cw + padding;
  const H = rows * ch + padding;
  const out = new Uint8Array(W * H * channels);
  images.forEach((img, k) => {
    if (img.length !== width * height * channels) throw new Error(`makeGrid: image ${k} has ${img.length} bytes`);
    const x0 = (k % cols) * cw + padding;
    const y0 = Math.floor(k / cols) * ch + padding;
    for (let y = 0; y < height; y++) {
      out.set(img.subarray(y * width * channels, (y + 1) * width * channels), ((y0 + y) * W + x0) * channels);
    }
  });
  return { pixels: out, width: W, height: H };
}

/** The hparams plugin's DataType values (tensorboard/plugins/hparams/api.proto). */
const HPARAMS_STRING = 1;
const HPARAMS_FLOAT64 = 3;

/** A float as PyYAML writes it: Python's repr (shortest digits; exponent form below 1e-4 and from 1e16) with a `.`
 *  in the mantissa, so Python reads it back as a float. */
function yamlFloat(v: number): string {
  if (!Number.isFinite(v)) return Number.isNaN(v) ? ".nan" : v > 0 ? ".inf" : "-.inf";
  const [mantissa, exp] = v.toExponential().split("e") as [string, string];
  const e = Number(exp);
  if (e < -4 || e >= 16) return `${mantissa.includes(".") ? mantissa : `${mantissa}.0`}e${e < 0 ? "-" : "+"}${String(Math.abs(e)).padStart(2, "0")}`;
  const fixed = String(v);
  return fixed.includes(".") ? fixed : `${fixed}.0`;
}

/** A string as a YAML scalar: plain where PyYAML writes it plain (names, paths), else double-quoted. */
function yamlString(v: string): string {
  const plain = /^[A-Za-z_/.][\w./-]*(:[\w./-]+)*$/.test(v) && !/^(y|n|yes|no|true|false|on|off|null)$/i.test(v) && !/^[.]?\d|^\.(inf|nan)$/i.test(v);
  return plain ? v : JSON.stringify(v);
}

/** yaml.dump of a flat dict of scalars (keys sorted, as PyYAML's default); `floats`: keys whose integral values are
 *  Python floats (written 1.0, not 1). */
export function toYaml(values: Record<string, string | number | boolean | null>, floats: ReadonlySet<string> = new Set()): string {
  return Object.keys(values).sort().map((k) => {
    const v = values[k];
    const text = v === null || v === undefined ? "null" : typeof v === "boolean" ? String(v) : typeof v === "number"
      ? (Number.isInteger(v) && !floats.has(k) ? String(v) : yamlFloat(v)) : yamlString(v);
    return `${k}: ${text}\n`;
  }).join("");
}

export class TensorBoardWriter {
  readonly path: string;
  private fd: number | null;

  constructor(logDir: string, opts: { now?: Date } = {}) {
    makeDirs(logDir);
    const unix = Math.floor((opts.now ?? new Date()).getTime() / 1000);
    this.path = path.join(logDir, `events.out.tfevents.${unix}.${os.hostname()}.${process.pid}.0`);
    this.fd = fs.openSync(this.path, "a");
    this.write(eventBytes(0, Date.now() / 1000, (e) => e.string(3, "brain.Event:2")));
  }

  private write(event: Uint8Array): void {
    if (this.fd === null) throw new Error("TensorBoardWriter is closed");
    const fd = this.fd;
    withPath(this.path, () => fs.writeSync(fd, frameRecord(event)));
  }

  addScalar(tag: string, value: number, step: number, wallTime = Date.now() / 1000): void {
    const v = new ProtoWriter().string(1, tag).float(2, value);
    this.write(eventBytes(step, wallTime, (e) => e.message(5, new ProtoWriter().message(1, v))));
  }

  /** Several scalars of one step in one event (what accelerate's tracker.log does for a dict). */
  addScalars(values: Record<string, number>, step: number, wallTime = Date.now() / 1000): void {
    const summary = new ProtoWriter();
    for (const [tag, value] of Object.entries(values)) summary.message(1, new ProtoWriter().string(1, tag).float(2, value));
    this.write(eventBytes(step, wallTime, (e) => e.message(5, summary)));
  }

  addImage(tag: string, image: EncodedImage, step: number, wallTime = Date.now() / 1000): void {
    const img = new ProtoWriter().int(1, image.height).int(2, image.width).int(3, image.channels).bytes(4, image.png);
    const v = new ProtoWriter().string(1, tag).message(4, img);
    this.write(eventBytes(step, wallTime, (e) => e.message(5, new ProtoWriter().message(1, v))));
  }

  /** add_images(tag, NHWC batch): the images tiled into one grid image as torch's SummaryWriter does (its
   *  tensorboard make_grid: 8 per row, no padding). */
  async addImages(tag: string, images: Uint8Array[], width: number, height: number, channels: 1 | 3 | 4, step: number): Promise<void> {
    const grid = makeGrid(images, width, height, channels, 8, 0);
    this.addImage(tag, await encodePng(grid.pixels, grid.width, grid.height, channels), step);
  }

  /**
   * SummaryWriter.add_hparams(values, metric_dict={}) as accelerate's TensorBoardTracker.store_init_configuration
   * calls it: the hparams plugin's experiment, session-start (the values) and session-end summaries go into an event
   * file of their own in `<logdir>/<time.time()>/`, and accelerate writes the values beside it as hparams.yml.
   * None values are skipped; numbers and booleans are float64 hparams (Python's bool is an int), strings strings.
   */
  addHparams(values: Record<string, string | number | boolean | null>, opts: { floats?: ReadonlySet<string>; wallTime?: number } = {}): string {
    const wallTime = opts.wallTime ?? Date.now() / 1000;
    const dir = path.join(path.dirname(this.path), String(wallTime));
    const w = new TensorBoardWriter(dir);
    try {
      const kept = Object.entries(values).filter(([, v]) => v !== null && v !== undefined) as [string, string | number | boolean][];
      const infos = new ProtoWriter();
      const start = new ProtoWriter();
      for (const [k, v] of kept) {
        const isString = typeof v === "string";
        const value = isString ? new ProtoWriter().string(3, v) : new ProtoWriter().double(2, Number(v));
        start.message(1, new ProtoWriter().string(1, k).message(2, value)); // map<string, google.protobuf.Value> entry
        infos.message(4, new ProtoWriter().string(1, k).int(4, isString ? HPARAMS_STRING : HPARAMS_FLOAT64));
      }
      const plugin = (tag: string, data: ProtoWriter) => {
        const meta = new ProtoWriter().message(1, new ProtoWriter().string(1, "hparams").bytes(2, data.finish()));
        w.write(eventBytes(0, wallTime, (e) => e.message(5, new ProtoWriter().message(1, new ProtoWriter().string(1, tag).message(9, meta)))));
      };
      plugin("_hparams_/experiment", new ProtoWriter().message(2, infos));
      plugin("_hparams_/session_start_info", new ProtoWriter().message(3, start));
      plugin("_hparams_/session_end_info", new ProtoWriter().message(4, new ProtoWriter().int(1, 1))); // STATUS_SUCCESS
    } finally {
      w.close();
    }
    fs.writeFileSync(path.join(dir, "hparams.yml"), toYaml(values, opts.floats));
    return dir;
  }

  flush(): void {
    if (this.fd !== null) fs.fsyncSync(this.fd);
  }

  close(): void {
    if (this.fd === null) return;
    fs.fsyncSync(this.fd);
    fs.closeSync(this.fd);
    this.fd = null;
  }
}

// ---- reading back ----

export interface EventValue {
  tag: string;
  simpleValue?: number;
  /** SummaryMetadata.plugin_data (e.g. the hparams plugin's). */
  plugin?: { name: string; content: Uint8Array };
  image?: { height: number; width: number; colorspace: number; encoded: Uint8Array };
}

export interface TbEvent {
  wallTime: number;
  step: number;
  fileVersion?: string;
  values: EventValue[];
}

class ProtoReader {
  pos = 0;
  constructor(private readonly b: Uint8Array) {}
  done(): boolean {
    return this.pos >= this.b.length;
  }
  varint(): bigint {
    let x = 0n;
    let shift = 0n;
    for (;;) {
      if (this.pos >= this.b.length) throw new Error("protobuf: truncated varint");
      const byte = this.b[this.pos++]!;
      x |= BigInt(byte & 0x7f) << shift;
      if (!(byte & 0x80)) return x;
      shift += 7n;
    }
  }
  /** Returns [field, wire, payload reader / value]. */
  next(): { field: number; wire: number; value: bigint | number | Uint8Array } {
    const key = Number(this.varint());
    const field = key >>> 3;
    const wire = key & 7;
    const dv = new DataView(this.b.buffer, this.b.byteOffset);
    switch (wire) {
      case 0:
        return { field, wire, value: this.varint() };
      case 1: {
        const v = dv.getFloat64(this.pos, true);
        this.pos += 8;
        return { field, wire, value: v };
      }
      case 5: {
        const v = dv.getFloat32(this.pos, true);
        this.pos += 4;
        return { field, wire, value: v };
      }
      case 2: {
        const n = Number(this.varint());
        if (this.pos + n > this.b.length) throw new Error("protobuf: truncated field");
        const v = this.b.subarray(this.pos, this.pos + n);
        this.pos += n;
        return { field, wire, value: v };
      }
      default:
        throw new Error(`protobuf: unsupported wire type ${wire}`);
    }
  }
}

function decodeValue(b: Uint8Array): EventValue {
  const r = new ProtoReader(b);
  const out: EventValue = { tag: "" };
  while (!r.done()) {
    const { field, value } = r.next();
    if (field === 1) out.tag = Buffer.from(value as Uint8Array).toString("utf8");
    else if (field === 2) out.simpleValue = value as number;
    else if (field === 4) {
      const ir = new ProtoReader(value as Uint8Array);
      const img: { height: number; width: number; colorspace: number; encoded: Uint8Array } = { height: 0, width: 0, colorspace: 0, encoded: new Uint8Array(0) };
      while (!ir.done()) {
        const f = ir.next();
        if (f.field === 1) img.height = Number(f.value);
        else if (f.field === 2) img.width = Number(f.value);
        else if (f.field === 3) img.colorspace = Number(f.value);
        else if (f.field === 4) img.encoded = f.value as Uint8Array;
      }
      out.image = img;
    } else if (field === 9) {
      const mr = new ProtoReader(value as Uint8Array);
      while (!mr.done()) {
        const f = mr.next();
        if (f.field !== 1) continue;
        const pr = new ProtoReader(f.value as Uint8Array);
        const plugin: { name: string; content: Uint8Array } = { name: "", content: new Uint8Array(0) };
        while (!pr.done()) {
          const g = pr.next();
          if (g.field === 1) plugin.name = Buffer.from(g.value as Uint8Array).toString("utf8");
          else if (g.field === 2) plugin.content = g.value as Uint8Array;
        }
        out.plugin = plugin;
      }
    }
  }
  return out;
}

/** The values of an hparams plugin session_start_info summary (HParamsPluginData field 3). */
export function decodeHparamsSessionStart(content: Uint8Array): Record<string, number | string | boolean> {
  const out: Record<string, number | string | boolean> = {};
  const r = new ProtoReader(content);
  while (!r.done()) {
    const f = r.next();
    if (f.field !== 3) continue;
    const sr = new ProtoReader(f.value as Uint8Array);
    while (!sr.done()) {
      const entry = sr.next();
      if (entry.field !== 1) continue;
      const er = new ProtoReader(entry.value as Uint8Array);
      let key = "";
      let val: number | string | boolean = "";
      while (!er.done()) {
        const e = er.next();
        if (e.field === 1) key = Buffer.from(e.value as Uint8Array).toString("utf8");
        else if (e.field === 2) {
          const vr = new ProtoReader(e.value as Uint8Array);
          while (!vr.done()) {
            const v = vr.next();
            if (v.field === 2) val = v.value as number;
            else if (v.field === 3) val = Buffer.from(v.value as Uint8Array).toString("utf8");
            else if (v.field === 4) val = v.value !== 0n;
          }
        }
      }
      out[key] = val;
    }
  }
  return out;
}

export function decodeEvent(b: Uint8Array): TbEvent {
  const r = new ProtoReader(b);
  const ev: TbEvent = { wallTime: 0, step: 0, values: [] };
  while (!r.done()) {
    const { field, value } = r.next();
    if (field === 1) ev.wallTime = value as number;
    else if (field === 2) ev.step = Number(BigInt.asIntN(64, value as bigint));
    else if (field === 3) ev.fileVersion = Buffer.from(value as Uint8Array).toString("utf8");
    else if (field === 5) {
      const sr = new ProtoReader(value as Uint8Array);
      while (!sr.done()) {
        const f = sr.next();
        if (f.field === 1) ev.values.push(decodeValue(f.value as Uint8Array));
      }
    }
  }
  return ev;
}

/** Parses an event file; every record's two CRCs are verified (a mismatch throws, naming the record). */
export function readEvents(file: string): TbEvent[] {
  const buf = new Uint8Array(fs.readFileSync(file));
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const out: TbEvent[] = [];
  let pos = 0;
  while (pos < buf.length) {
    if (pos + 12 > buf.length) throw new Error(`${file}: truncated record header at byte ${pos}`);
    const len = Number(dv.getBigUint64(pos, true));
    if (dv.getUint32(pos + 8, true) !== maskedCrc32c(buf.subarray(pos, pos + 8))) throw new Error(`${file}: length CRC mismatch in record ${out.length}`);
    const start = pos + 12;
    if (start + len + 4 > buf.length) throw new Error(`${file}: truncated record ${out.length}`);
    const data = buf.subarray(start, start + len);
    if (dv.getUint32(start + len, true) !== maskedCrc32c(data)) throw new Error(`${file}: data CRC mismatch in record ${out.length}`);
    out.push(decodeEvent(data));
    pos = start + len + 4;
  }
  return out;
}

/** The event files in a log directory (recursively), oldest name first. */
export function findEventFiles(logDir: string): string[] {
  if (!fs.existsSync(logDir)) return [];
  const out: string[] = [];
  for (const e of fs.readdirSync(logDir, { withFileTypes: true, recursive: true })) {
    if (e.isFile() && e.name.startsWith("events.out.tfevents.")) out.push(path.join(e.parentPath ?? logDir, e.name));
  }
  return out.sort();
}

// ---- JSON lines ----

/** Appends one JSON object per line; each line is written with a single append so a follower never sees half a line. */
export class JsonlLogger {
  readonly path: string;
  private dirMade = false;
  constructor(file: string) {
    this.path = file;
  }
  log(record: Record<string, unknown>): void {
    // made at the first record, not before: a run refused at start-up leaves no empty logs/ folder behind
    if (!this.dirMade) makeDirs(path.dirname(this.path));
    this.dirMade = true;
    fs.appendFileSync(this.path, JSON.stringify({ time: Date.now() / 1000, ...record }) + "\n");
  }
}

/** Warnings already given by readJsonl's default reporter, per file: a log read again and again (a follower, the
 *  cells' history) names the same bad lines once, not at every read. */
const jsonlWarned = new Map<string, string>();

export interface ReadJsonlOptions {
  /** Receives the one warning line about skipped lines (default: console.warn, once per file and set of lines). */
  warn?: (line: string) => void;
}

/**
 * Reads a JSON-lines log. A trailing line without its newline (a writer mid-append, or one killed mid-write) is
 * ignored without a word. Any other line that is not a JSON object (damaged, NUL bytes, `null`, edited by hand) is
 * skipped and named — file and line numbers, in one warning line — never thrown over: the other records are kept.
 */
export function readJsonl(file: string, opts: ReadJsonlOptions = {}): Record<string, unknown>[] {
  if (!fs.existsSync(file)) return [];
  const text = fs.readFileSync(file, "utf8");
  const lines = text.split("\n");
  if (!text.endsWith("\n")) lines.pop();
  const out: Record<string, unknown>[] = [];
  const bad: number[] = [];
  lines.forEach((l, i) => {
    if (!l.trim()) return;
    let v: unknown;
    try {
      v = JSON.parse(l);
    } catch {
      v = undefined;
    }
    if (v !== null && typeof v === "object" && !Array.isArray(v)) out.push(v as Record<string, unknown>);
    else bad.push(i + 1);
  });
  if (bad.length) {
    const shown = bad.length > 10 ? `${bad.slice(0, 10).join(", ")} and ${bad.length - 10} more` : bad.join(", ");
    const line = `warning: ${file}: skipped ${bad.length === 1 ? "line" : "lines"} ${shown} (not a JSON object: damaged or ` +
      `edited); kept the other ${out.length} record${out.length === 1 ? "" : "s"}`;
    if (opts.warn) opts.warn(line);
    else if (jsonlWarned.get(path.resolve(file)) !== line) {
      jsonlWarned.set(path.resolve(file), line);
      console.warn(line);
    }
  }
  return out;
}
