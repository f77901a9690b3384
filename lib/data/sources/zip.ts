/**
 * Lazy random access into a zip archive: the central directory is read once, then each entry is read and inflated
 * on demand (fflate), so a 200 MB images.zip never sits in memory. Entries whose names are absolute or climb out with
 * `..` are refused: they are left out of the index and listed in `refused`.
 */
import fs from "node:fs/promises";
import { crc32 } from "node:zlib";
import { Inflate } from "fflate";
import { IMAGE_PIXEL_LIMIT, ImageStructure } from "./image-structure.js";

interface Entry {
  method: number;
  compressedSize: number;
  size: number;
  crc: number;
  localHeaderOffset: number;
}

/** The largest entry inflated: an uncompressed 4-channel image at the pixel limit, plus headers. A larger declared
 *  size is refused before anything is read or allocated. */
export const MAX_ENTRY_BYTES = IMAGE_PIXEL_LIMIT * 4 + (1 << 20);
/** Compressed bytes read at a time, and fed to the inflater at a time: deflate expands at most ~1032×, so one push
 *  yields at most ~4 MB before the size and signature checks see it. */
const READ_CHUNK = 256 * 1024;
const INFLATE_CHUNK = 4 * 1024;

/** An image format's signature at the start (PNG, JPEG, GIF, WebP, TIFF, BMP, HEIF/AVIF, SVG): a zip bomb's zeros (or
 *  any non-image) read as an image are refused after the first inflated chunk instead of being inflated whole. */
export function looksLikeImage(b: Uint8Array): boolean {
  const at = (off: number, ...sig: number[]) => sig.every((v, i) => b[off + i] === v);
  const ascii = (off: number, t: string) => at(off, ...[...t].map((c) => c.charCodeAt(0)));
  return at(0, 0x89, 0x50, 0x4e, 0x47) || at(0, 0xff, 0xd8, 0xff) || ascii(0, "GIF8") || (ascii(0, "RIFF") && ascii(8, "WEBP")) ||
    at(0, 0x49, 0x49, 0x2a, 0x00) || at(0, 0x4d, 0x4d, 0x00, 0x2a) || ascii(0, "BM") || ascii(4, "ftyp") || ascii(0, "<svg") || ascii(0, "<?xml");
}

/** True when an archive/metadata path is relative and stays inside its root. */
export function isSafeRelativePath(name: string): boolean {
  const n = name.replace(/\\/g, "/");
  if (n.startsWith("/") || /^[a-zA-Z]:/.test(n)) return false;
  return !n.split("/").some((seg) => seg === "..");
}

/** Normalises separators and "./" prefixes. */
export function normalizeEntryName(name: string): string {
  return name.replace(/\\/g, "/").replace(/^(\.\/)+/, "").replace(/\/{2,}/g, "/");
}

export class ZipArchive {
  /** Entry name → location (files only, safe names only). */
  readonly entries = new Map<string, Entry>();
  /** Entry names that were refused (absolute, `..`, encrypted). */
  readonly refused: string[] = [];

  private constructor(readonly file: string, private readonly fh: fs.FileHandle) {}

  static async open(file: string): Promise<ZipArchive> {
    const fh = await fs.open(file, "r");
    const zip = new ZipArchive(file, fh);
    try {
      await zip.readDirectory();
    } catch (e) {
      await fh.close();
      throw new Error(`${file}: not a readable zip archive (${(e as Error).message})`);
    }
    return zip;
  }

  private async readAt(pos: number, len: number): Promise<Buffer> {
    const buf = Buffer.alloc(len);
    const { bytesRead } = await this.fh.read(buf, 0, len, pos);
    if (bytesRead !== len) throw new Error(`short read at ${pos}`);
    return buf;
  }

  private async readDirectory(): Promise<void> {
    const { size } = await this.fh.stat();
    const tailLen = Math.min(size, 65557);
    const tail = await this.readAt(size - tailLen, tailLen);
    let eocd = -1;
    for (let i = tail.length - 22; i >= 0; i--) if (tail.readUInt32LE(i) === 0x06054b50) { eocd = i; break; }
    if (eocd < 0) throw new Error("end of central directory not found");
    let count = tail.readUInt16LE(eocd + 10);
    let cdSize = tail.readUInt32LE(eocd + 12);
    let cdOffset = tail.readUInt32LE(eocd + 16);
    if (count === 0xffff || cdSize === 0xffffffff || cdOffset === 0xffffffff) {
      // zip64: the locator sits just before the classic record
      const loc = eocd - 20;
      if (loc < 0 || tail.readUInt32LE(loc) !== 0x07064b50) throw new Error("zip64 locator missing");
      const rec = await this.readAt(Number(tail.readBigUInt64LE(loc + 8)), 56);
      if (rec.readUInt32LE(0) !== 0x06064b50) throw new Error("zip64 end record missing");
      count = Number(rec.readBigUInt64LE(32));
      cdSize = Number(rec.readBigUInt64LE(40));
      cdOffset = Number(rec.readBigUInt64LE(48));
    }
    const cd = await this.readAt(cdOffset, cdSize);
    let p = 0;
    for (let k = 0; k < count; k++) {
      if (cd.readUInt32LE(p) !== 0x02014b50) throw new Error(`bad central directory entry ${k}`);
      const flags = cd.readUInt16LE(p + 8);
      const method = cd.readUInt16LE(p + 10);
      const crc = cd.readUInt32LE(p + 16);
      let compressedSize = cd.readUInt32LE(p + 20);
      let size = cd.readUInt32LE(p + 24);
      const nameLen = cd.readUInt16LE(p + 28);
      const extraLen = cd.readUInt16LE(p + 30);
      const commentLen = cd.readUInt16LE(p + 32);
      let localHeaderOffset = cd.readUInt32LE(p + 42);
      const rawName = cd.subarray(p + 46, p + 46 + nameLen).toString(flags & 0x800 ? "utf8" : "latin1");
      // zip64 extended information: only the fields saturated in the fixed header are present, in this order
      let e = p + 46 + nameLen;
      const eEnd = e + extraLen;
      while (e + 4 <= eEnd) {
        const id = cd.readUInt16LE(e);
        const len = cd.readUInt16LE(e + 2);
        if (id === 0x0001) {
          let q = e + 4;
          if (size === 0xffffffff) { size = Number(cd.readBigUInt64LE(q)); q += 8; }
          if (compressedSize === 0xffffffff) { compressedSize = Number(cd.readBigUInt64LE(q)); q += 8; }
          if (localHeaderOffset === 0xffffffff) { localHeaderOffset = Number(cd.readBigUInt64LE(q)); }
        }
        e += 4 + len;
      }
      p += 46 + nameLen + extraLen + commentLen;
      if (rawName.endsWith("/")) continue; // directory
      if (!isSafeRelativePath(rawName) || flags & 0x1) {
        this.refused.push(rawName);
        continue;
      }
      this.entries.set(normalizeEntryName(rawName), { method, compressedSize, size, crc, localHeaderOffset });
    }
  }

  has(name: string): boolean {
    return this.entries.has(normalizeEntryName(name));
  }

  private bySuffix: Map<string, string | null> | undefined;

  /**
   * The entry a relative name refers to when the archive nests it differently: "images/0.png" may be stored as
   * "0.png" or "fill50k/images/0.png". Matches the longest unambiguous tail; undefined when none or ambiguous.
   */
  lookup(name: string): string | undefined {
    const n = normalizeEntryName(name);
    if (this.entries.has(n)) return n;
    if (!this.bySuffix) {
      // every path tail of every entry → the entry (null when two entries share the tail)
      this.bySuffix = new Map();
      for (const e of this.entries.keys()) {
        const parts = e.split("/");
        for (let k = 0; k < parts.length; k++) {
          const tail = parts.slice(k).join("/");
          this.bySuffix.set(tail, this.bySuffix.has(tail) ? null : e);
        }
      }
    }
    const parts = n.split("/");
    for (let k = 0; k < parts.length; k++) {
      const hit = this.bySuffix.get(parts.slice(k).join("/"));
      if (hit) return hit;
      if (hit === null) return undefined; // ambiguous: refuse to guess
    }
    return undefined;
  }

  /** The entry's bytes, checked against its declared size and CRC-32; rejects for names not in the index (missing or
   *  refused). With `image`, an entry that does not start like an image is refused after its first inflated chunk. */
  async read(name: string, opts: { image?: boolean } = {}): Promise<Uint8Array> {
    const image = opts.image ?? false;
    const n = normalizeEntryName(name);
    const ent = this.entries.get(n);
    if (!ent) {
      const why = this.refused.includes(name) || !isSafeRelativePath(name) ? "refused (unsafe path)" : "not in archive";
      throw new Error(`${this.file}: entry ${name} ${why}`);
    }
    if (ent.size > MAX_ENTRY_BYTES) {
      throw new Error(`${this.file}: entry ${n} declares ${ent.size} bytes, more than an image within the pixel limit can hold (${MAX_ENTRY_BYTES}); refused unread`);
    }
    const lh = await this.readAt(ent.localHeaderOffset, 30);
    if (lh.readUInt32LE(0) !== 0x04034b50) throw new Error(`${this.file}: bad local header for ${n}`);
    const start = ent.localHeaderOffset + 30 + lh.readUInt16LE(26) + lh.readUInt16LE(28);
    let out: Uint8Array;
    if (ent.method === 0) {
      if (ent.compressedSize !== ent.size) throw new Error(`${this.file}: stored entry ${n} has ${ent.compressedSize} bytes but declares ${ent.size}`);
      const b = await this.readAt(start, ent.size);
      out = new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
      if (image && !looksLikeImage(out)) throw new Error(`${this.file}: entry ${n} is not an image; refused`);
      const why = image ? new ImageStructure(ent.size).check(out, out.length) : null;
      if (why) throw new Error(`${this.file}: entry ${n} is not a well-formed image (${why}); refused`);
    } else if (ent.method === 8) out = await this.inflate(n, ent, start, image);
    else throw new Error(`${this.file}: entry ${n} uses unsupported compression method ${ent.method}`);
    const crc = crc32(out) >>> 0;
    if (crc !== ent.crc) throw new Error(`${this.file}: entry ${n} fails its CRC-32 check (${crc.toString(16)} vs ${ent.crc.toString(16)}): the archive is corrupted`);
    return out;
  }

  /** Streams a deflated entry through the inflater in small pieces, holding it to its declared size (no more: a bomb
   *  or a lie; no less: truncated) and to being an image from its first bytes on. */
  private async inflate(n: string, ent: Entry, start: number, image: boolean): Promise<Uint8Array> {
    // (untouched pages of the buffer are not resident: memory grows only as far as the checks let the data come)
    const out = new Uint8Array(ent.size);
    const structure = image ? new ImageStructure(ent.size) : null;
    let total = 0;
    let ended = false;
    const inf = new Inflate((chunk, final) => {
      if (image && total === 0 && chunk.length && !looksLikeImage(chunk)) throw new Error(`${this.file}: entry ${n} is not an image; refused after its first ${chunk.length} bytes`);
      if (total + chunk.length > ent.size) throw new Error(`${this.file}: entry ${n} inflates past its declared ${ent.size} bytes; refused`);
      out.set(chunk, total);
      total += chunk.length;
      const why = structure?.check(out, total);
      if (why) throw new Error(`${this.file}: entry ${n} is not a well-formed image (${why}); refused after ${total} bytes`);
      if (final) ended = true;
    });
    for (let pos = 0; pos < ent.compressedSize; pos += READ_CHUNK) {
      const buf = await this.readAt(start + pos, Math.min(READ_CHUNK, ent.compressedSize - pos));
      // until the first bytes came out (and passed the signature check), feed 256 bytes at a time (≤ ~260 KB out)
      for (let k = 0; k < buf.length; ) {
        const piece = buf.subarray(k, k + (total === 0 ? 256 : INFLATE_CHUNK));
        k += piece.length;
        inf.push(piece, pos + k >= ent.compressedSize);
      }
    }
    if (ent.compressedSize === 0) inf.push(new Uint8Array(0), true);
    if (!ended || total !== ent.size) throw new Error(`${this.file}: entry ${n} inflates to ${total} bytes but declares ${ent.size}: truncated or corrupted`);
    return out;
  }

  async close(): Promise<void> {
    await this.fh.close();
  }
}
