/**
 * safetensors reading and writing (the format every diffusers/transformers model folder uses).
 *
 * Layout: an 8-byte little-endian header length N, N bytes of UTF-8 JSON
 * `{ name: { dtype, shape, data_offsets: [begin, end] }, "__metadata__"?: { key: string } }`, then the data buffer;
 * offsets are relative to the start of the data buffer.
 *
 * Files come from the internet, so reading is strict: every inconsistency becomes ONE Error that names the file and
 * the problem, checked before anything large is allocated (the header length is bounded and must lie inside the file;
 * every tensor's byte range must lie inside the data buffer, so no allocation can exceed the file's size). Reading never
 * loads the file whole: only the header and then the byte ranges of the requested tensors are read.
 *
 * tfjs only has float32 and int32 here, so F16/BF16/F64 widen or narrow to float32 and the integer types to int32
 * (64-bit values outside the int32 range are an error rather than a silent wrap).
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

/** A tensor in host memory, in the file's (PyTorch) layout. */
export interface HostTensor {
  dtype: "float32" | "int32";
  shape: number[];
  data: Float32Array | Int32Array;
}

export interface SafetensorsEntry {
  dtype: string;
  shape: number[];
  /** [begin, end) byte offsets relative to the start of the data buffer. */
  offsets: [number, number];
}

export interface SafetensorsHeader {
  entries: Map<string, SafetensorsEntry>;
  metadata: Record<string, string>;
}

/** Bytes per element of every dtype safetensors defines with a whole-byte size. */
const DTYPE_BYTES: Record<string, number> = {
  BOOL: 1, U8: 1, I8: 1, F8_E5M2: 1, F8_E4M3: 1,
  I16: 2, U16: 2, F16: 2, BF16: 2,
  I32: 4, U32: 4, F32: 4,
  I64: 8, U64: 8, F64: 8,
};

/** dtypes we can convert to a HostTensor (the fp8 ones are parsed in headers but not decoded). */
const READABLE = new Set(["BOOL", "U8", "I8", "I16", "U16", "F16", "BF16", "I32", "U32", "F32", "I64", "U64", "F64"]);

/** The same bound the reference Rust implementation uses; real headers are a few hundred KB at most. */
export const MAX_HEADER_BYTES = 100_000_000;

const LITTLE_ENDIAN = os.endianness() === "LE";
/** Bytes read per readSync call when converting (keeps peak memory at output + a small scratch buffer). */
const CHUNK_BYTES = 8 << 20;

function invalid(file: string, problem: string): Error {
  return new Error(`Invalid safetensors file ${file}: ${problem}`);
}

/** Reads exactly `length` bytes at `position` into `dst` (readSync may return short counts). */
function readExactly(fd: number, file: string, dst: Uint8Array, position: number): void {
  let done = 0;
  while (done < dst.length) {
    // Node caps a single read at 2 GiB - 1.
    const want = Math.min(dst.length - done, 1 << 30);
    const n = fs.readSync(fd, dst, done, want, position + done);
    if (n === 0) throw invalid(file, `truncated: expected ${dst.length} bytes at offset ${position}, file ends after ${done}`);
    done += n;
  }
}

function openForRead(file: string): { fd: number; size: number } {
  let fd: number;
  try {
    fd = fs.openSync(file, "r");
  } catch (e) {
    throw new Error(`Cannot open safetensors file ${file}: ${(e as Error).message}`);
  }
  const st = fs.fstatSync(fd);
  if (!st.isFile()) {
    fs.closeSync(fd);
    throw new Error(`Cannot open safetensors file ${file}: not a regular file`);
  }
  return { fd, size: st.size };
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Parses and validates the header; `dataStart` is where the data buffer begins in the file. */
function parseHeader(fd: number, size: number, file: string): SafetensorsHeader & { dataStart: number } {
  if (size < 8) throw invalid(file, `truncated: ${size} bytes is shorter than the 8-byte header length`);
  const lenBuf = Buffer.alloc(8);
  readExactly(fd, file, lenBuf, 0);
  const n = lenBuf.readBigUInt64LE(0);
  if (n > BigInt(MAX_HEADER_BYTES)) throw invalid(file, `header length ${n} exceeds the ${MAX_HEADER_BYTES}-byte limit`);
  const headerLen = Number(n);
  if (headerLen < 2) throw invalid(file, `header length ${headerLen} is too small to hold a JSON object`);
  if (8 + headerLen > size) throw invalid(file, `truncated: header length ${headerLen} runs past the end of the ${size}-byte file`);
  const raw = Buffer.alloc(headerLen);
  readExactly(fd, file, raw, 8);
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(raw);
  } catch {
    throw invalid(file, "header is not valid UTF-8");
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw invalid(file, `header is not valid JSON (${(e as Error).message})`);
  }
  if (!isPlainObject(json)) throw invalid(file, "header JSON is not an object");

  const dataStart = 8 + headerLen;
  const dataLen = size - dataStart;
  const metadata: Record<string, string> = {};
  const entries = new Map<string, SafetensorsEntry>();
  for (const [name, value] of Object.entries(json)) {
    if (name === "__metadata__") {
      if (value === null) continue; // the reference reader treats null as "no metadata"
      if (!isPlainObject(value)) throw invalid(file, "__metadata__ is not an object");
      for (const [k, v] of Object.entries(value)) {
        if (typeof v !== "string") throw invalid(file, `__metadata__ value for "${k}" is not a string`);
        metadata[k] = v;
      }
      continue;
    }
    if (!isPlainObject(value)) throw invalid(file, `entry "${name}" is not an object`);
    const { dtype, shape, data_offsets: offs } = value;
    if (typeof dtype !== "string") throw invalid(file, `tensor "${name}": dtype is missing or not a string`);
    const itemBytes = DTYPE_BYTES[dtype];
    if (itemBytes === undefined) throw invalid(file, `tensor "${name}": unknown dtype "${dtype}"`);
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && (d as number) >= 0)) {
      throw invalid(file, `tensor "${name}": shape ${JSON.stringify(shape)} is not a list of non-negative integers`);
    }
    if (!Array.isArray(offs) || offs.length !== 2 || !offs.every((o) => Number.isSafeInteger(o) && (o as number) >= 0)) {
      throw invalid(file, `tensor "${name}": data_offsets ${JSON.stringify(offs)} is not a pair of non-negative integers`);
    }
    const [begin, end] = offs as [number, number];
    if (begin > end) throw invalid(file, `tensor "${name}": data_offsets [${begin}, ${end}] end before they begin`);
    if (end > dataLen) {
      throw invalid(file, `tensor "${name}": data_offsets [${begin}, ${end}] run past the end of the ${dataLen}-byte data buffer (truncated file?)`);
    }
    // The element count is bounded by the byte range (≤ file size), so it never overflows before the comparison.
    let bytes = itemBytes;
    for (const d of shape as number[]) {
      bytes *= d;
      if (bytes > end - begin) break;
    }
    if (bytes !== end - begin) {
      throw invalid(file, `tensor "${name}": ${dtype}${JSON.stringify(shape)} needs ${shapeBytes(shape as number[], itemBytes)} bytes but data_offsets span ${end - begin}`);
    }
    entries.set(name, { dtype, shape: [...(shape as number[])], offsets: [begin, end] });
  }

  // The tensors must tile the data buffer exactly: no overlaps (two names aliasing bytes), no holes, no trailing bytes.
  const sorted = [...entries].sort((a, b) => a[1].offsets[0] - b[1].offsets[0] || a[1].offsets[1] - b[1].offsets[1]);
  let cursor = 0;
  let prev = "";
  for (const [name, e] of sorted) {
    const [begin, end] = e.offsets;
    if (begin < cursor) throw invalid(file, `tensor "${name}" [${begin}, ${end}] overlaps tensor "${prev}" (which ends at ${cursor})`);
    if (begin > cursor) throw invalid(file, `hole in the data buffer: bytes [${cursor}, ${begin}) belong to no tensor`);
    cursor = end;
    prev = name;
  }
  if (cursor !== dataLen) {
    throw invalid(file, `data buffer holds ${dataLen} bytes but the tensors describe ${cursor} (${dataLen - cursor} trailing bytes)`);
  }
  return { entries, metadata, dataStart };
}

function shapeBytes(shape: number[], itemBytes: number): string {
  // BigInt so that a hostile shape prints its true size instead of Infinity.
  return shape.reduce((acc, d) => acc * BigInt(d), BigInt(itemBytes)).toString();
}

/** Reads and validates only the header: tensor names, dtypes, shapes and byte ranges, plus `__metadata__`. */
export function readSafetensorsHeader(file: string): SafetensorsHeader {
  const { fd, size } = openForRead(file);
  try {
    const { entries, metadata } = parseHeader(fd, size, file);
    return { entries, metadata };
  } finally {
    fs.closeSync(fd);
  }
}

/** Reads the tensors (all, or the names in `only`) as float32/int32 host tensors. */
export function readSafetensors(
  file: string,
  opts: { only?: string[] } = {},
): { tensors: Map<string, HostTensor>; metadata: Record<string, string>; entries: Map<string, SafetensorsEntry> } {
  const { fd, size } = openForRead(file);
  try {
    const { entries, metadata, dataStart } = parseHeader(fd, size, file);
    const names = opts.only ?? [...entries.keys()];
    const missing = names.filter((n) => !entries.has(n));
    if (missing.length) {
      throw new Error(`safetensors file ${file} has no tensor named ${missing.map((m) => `"${m}"`).join(", ")}`);
    }
    const tensors = new Map<string, HostTensor>();
    for (const name of names) {
      const e = entries.get(name)!;
      tensors.set(name, readTensor(fd, file, name, e, dataStart));
    }
    return { tensors, metadata, entries };
  } finally {
    fs.closeSync(fd);
  }
}

function readTensor(fd: number, file: string, name: string, e: SafetensorsEntry, dataStart: number): HostTensor {
  if (!READABLE.has(e.dtype)) throw invalid(file, `tensor "${name}": dtype ${e.dtype} is not supported for reading`);
  const itemBytes = DTYPE_BYTES[e.dtype]!;
  const [begin, end] = e.offsets;
  const count = (end - begin) / itemBytes;
  const isFloat = e.dtype === "F32" || e.dtype === "F16" || e.dtype === "BF16" || e.dtype === "F64";
  const out = isFloat ? new Float32Array(count) : new Int32Array(count);
  const shape = [...e.shape];
  if (count === 0) return { dtype: isFloat ? "float32" : "int32", shape, data: out };

  // Same width and byte order as the output: read straight into it, no copy.
  if (LITTLE_ENDIAN && (e.dtype === "F32" || e.dtype === "I32")) {
    readExactly(fd, file, new Uint8Array(out.buffer, out.byteOffset, out.byteLength), dataStart + begin);
    return { dtype: isFloat ? "float32" : "int32", shape, data: out };
  }

  // Otherwise convert chunk by chunk; chunk sizes are multiples of 8 so every element lies inside one chunk.
  const scratch = new Uint8Array(Math.min(CHUNK_BYTES, end - begin));
  const view = new DataView(scratch.buffer);
  let written = 0;
  for (let pos = begin; pos < end; pos += scratch.length) {
    const chunk = scratch.subarray(0, Math.min(scratch.length, end - pos));
    readExactly(fd, file, chunk, dataStart + pos);
    const n = chunk.length / itemBytes;
    convertChunk(e.dtype, view, n, out, written, (i) => {
      throw invalid(file, `tensor "${name}": ${e.dtype} value at index ${written + i} is outside the int32 range`);
    });
    written += n;
  }
  return { dtype: isFloat ? "float32" : "int32", shape, data: out };
}

let halfTable: Float32Array | undefined;
/** All 65536 float16 values as float32, built once (256 KiB) — the fastest exact F16 decode. */
function f16Table(): Float32Array {
  if (halfTable) return halfTable;
  const t = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const exp = (h >> 10) & 0x1f;
    const frac = h & 0x3ff;
    if (exp === 0) t[h] = sign * frac * 2 ** -24;
    else if (exp === 31) t[h] = frac ? NaN : sign * Infinity;
    else t[h] = sign * (1 + frac / 1024) * 2 ** (exp - 15);
  }
  return (halfTable = t);
}

function convertChunk(
  dtype: string,
  v: DataView,
  n: number,
  out: Float32Array | Int32Array,
  at: number,
  outOfRange: (i: number) => never,
): void {
  // Fast paths: typed-array views of the scratch buffer (its chunks start 8-byte aligned) on little-endian hosts.
  if (LITTLE_ENDIAN && (dtype === "F16" || dtype === "BF16")) {
    const src = new Uint16Array(v.buffer, v.byteOffset, n);
    if (dtype === "F16") {
      const t = f16Table();
      for (let i = 0; i < n; i++) out[at + i] = t[src[i]!]!;
    } else {
      // bfloat16 is the top half of a float32: write the bits straight into the output.
      const bits = new Uint32Array(out.buffer, out.byteOffset + at * 4, n);
      for (let i = 0; i < n; i++) bits[i] = src[i]! << 16;
    }
    return;
  }
  switch (dtype) {
    case "F32": for (let i = 0; i < n; i++) out[at + i] = v.getFloat32(i * 4, true); break;
    case "I32": for (let i = 0; i < n; i++) out[at + i] = v.getInt32(i * 4, true); break;
    case "F64": for (let i = 0; i < n; i++) out[at + i] = v.getFloat64(i * 8, true); break;
    case "F16": {
      const t = f16Table();
      for (let i = 0; i < n; i++) out[at + i] = t[v.getUint16(i * 2, true)]!;
      break;
    }
    case "BF16": {
      // bfloat16 is the top half of a float32.
      const u = new Uint32Array(1);
      const f = new Float32Array(u.buffer);
      for (let i = 0; i < n; i++) { u[0] = v.getUint16(i * 2, true) << 16; out[at + i] = f[0]!; }
      break;
    }
    case "U8": for (let i = 0; i < n; i++) out[at + i] = v.getUint8(i); break;
    case "BOOL": for (let i = 0; i < n; i++) out[at + i] = v.getUint8(i) ? 1 : 0; break;
    case "I8": for (let i = 0; i < n; i++) out[at + i] = v.getInt8(i); break;
    case "I16": for (let i = 0; i < n; i++) out[at + i] = v.getInt16(i * 2, true); break;
    case "U16": for (let i = 0; i < n; i++) out[at + i] = v.getUint16(i * 2, true); break;
    case "U32": for (let i = 0; i < n; i++) {
      const x = v.getUint32(i * 4, true);
      if (x > 0x7fffffff) outOfRange(i);
      out[at + i] = x;
    } break;
    case "I64": for (let i = 0; i < n; i++) {
      const lo = v.getInt32(i * 8, true);
      // In range exactly when the high word is the sign extension of the low word.
      if (v.getInt32(i * 8 + 4, true) !== lo >> 31) outOfRange(i);
      out[at + i] = lo;
    } break;
    case "U64": for (let i = 0; i < n; i++) {
      const lo = v.getInt32(i * 8, true);
      if (v.getInt32(i * 8 + 4, true) !== 0 || lo < 0) outOfRange(i);
      out[at + i] = lo;
    } break;
    default: throw new Error(`unreachable dtype ${dtype}`);
  }
}

function checkTensor(name: string, t: HostTensor): void {
  if (name === "" || name === "__metadata__") throw new Error(`writeSafetensors: invalid tensor name "${name}"`);
  if (!t || (t.dtype !== "float32" && t.dtype !== "int32")) {
    throw new Error(`writeSafetensors: tensor "${name}" has dtype ${t?.dtype}; only float32 and int32 can be written`);
  }
  const want = t.dtype === "float32" ? Float32Array : Int32Array;
  if (!(t.data instanceof want)) throw new Error(`writeSafetensors: tensor "${name}" is ${t.dtype} but its data is a ${t.data?.constructor?.name}`);
  if (!Array.isArray(t.shape) || !t.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    throw new Error(`writeSafetensors: tensor "${name}" has invalid shape ${JSON.stringify(t.shape)}`);
  }
  const count = t.shape.reduce((a, d) => a * d, 1);
  if (count !== t.data.length) {
    throw new Error(`writeSafetensors: tensor "${name}" has shape ${JSON.stringify(t.shape)} (${count} elements) but ${t.data.length} values`);
  }
}

/** The exact header bytes (length prefix + JSON padded with spaces to a multiple of 8) for the given tensors. */
function encodeHeader(names: string[], tensors: Map<string, HostTensor>, metadata?: Record<string, string>): Buffer {
  const header: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length) {
    const meta: Record<string, string> = {};
    for (const k of Object.keys(metadata).sort()) {
      if (typeof metadata[k] !== "string") throw new Error(`writeSafetensors: metadata value for "${k}" is not a string`);
      meta[k] = metadata[k]!;
    }
    header.__metadata__ = meta;
  }
  let offset = 0;
  for (const name of names) {
    const t = tensors.get(name)!;
    const end = offset + t.data.byteLength;
    header[name] = { dtype: t.dtype === "float32" ? "F32" : "I32", shape: t.shape, data_offsets: [offset, end] };
    offset = end;
  }
  const json = Buffer.from(JSON.stringify(header), "utf8");
  const padded = Math.ceil(json.length / 8) * 8;
  const out = Buffer.alloc(8 + padded, 0x20);
  out.writeBigUInt64LE(BigInt(padded), 0);
  json.copy(out, 8);
  return out;
}

/**
 * Writes tensors as F32/I32 with a deterministic header (`__metadata__` first, then the tensors — float32 before
 * int32, each sorted by name — with data in that order, JSON padded with spaces to 8 bytes), exactly as Python
 * safetensors writes it. Atomic: the bytes go to a temporary file in the same folder, are fsynced, then renamed over `file`,
 * so a crash leaves either the old file or the complete new one.
 */
export function writeSafetensors(
  file: string,
  tensors: Map<string, HostTensor> | Record<string, HostTensor>,
  metadata?: Record<string, string>,
): void {
  const map = tensors instanceof Map ? tensors : new Map(Object.entries(tensors));
  // The reference writer's order: wider-aligned dtypes first (F32 before I32), then names byte-wise. Following it
  // makes our files byte-identical to Python `safetensors.save_file` for the same tensors and metadata.
  const rank = (n: string) => (map.get(n)?.dtype === "float32" ? 0 : 1);
  const names = [...map.keys()].sort((a, b) => rank(a) - rank(b) || Buffer.compare(Buffer.from(a), Buffer.from(b)));
  for (const name of names) checkTensor(name, map.get(name)!);
  const header = encodeHeader(names, map, metadata);

  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.tmp-${process.pid}-${Math.random().toString(36).slice(2)}`);
  const fd = fs.openSync(tmp, "wx");
  try {
    writeAll(fd, header);
    for (const name of names) {
      const d = map.get(name)!.data;
      let bytes = new Uint8Array(d.buffer, d.byteOffset, d.byteLength);
      if (!LITTLE_ENDIAN) {
        bytes = new Uint8Array(d.byteLength);
        const v = new DataView(bytes.buffer);
        for (let i = 0; i < d.length; i++) {
          if (d instanceof Float32Array) v.setFloat32(i * 4, d[i]!, true);
          else v.setInt32(i * 4, d[i]!, true);
        }
      }
      writeAll(fd, bytes);
    }
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fs.renameSync(tmp, file);
  } catch (e) {
    try { fs.closeSync(fd); } catch { /* already closed */ }
    fs.rmSync(tmp, { force: true });
    throw e;
  }
  fsyncDir(path.dirname(file));
}

function writeAll(fd: number, bytes: Uint8Array): void {
  for (let done = 0; done < bytes.length;) {
    done += fs.writeSync(fd, bytes, done, Math.min(bytes.length - done, 1 << 30));
  }
}

/** Makes a rename durable; some filesystems refuse to open directories, which is harmless here. */
export function fsyncDir(dir: string): void {
  let fd: number | undefined;
  try {
    fd = fs.openSync(dir, "r");
    fs.fsyncSync(fd);
  } catch {
    /* best effort */
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}
