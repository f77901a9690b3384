/**
 * Follows an image file's structure while a zip entry inflates, so a bomb that starts like an image (a PNG signature
 * followed by zeros) is refused after its first chunk rather than inflated whole: the header bounds how many bytes
 * the file can hold (a W×H PNG at most its raw scanlines plus chunk overhead; WebP and BMP state their file size), a
 * PNG's chunks must keep their shape (a length and a four-letter type) as they arrive, and its image data must start
 * as a zlib stream.
 */

/** sharp's default limitInputPixels (0x3FFF²): no image it decodes has more pixels. */
export const IMAGE_PIXEL_LIMIT = 0x3fff * 0x3fff;

/** Ancillary data an image may carry beyond its pixels (ICC profiles, EXIF, text): generous, but far below a bomb. */
const METADATA_SLACK = 16 * 1024 * 1024;

const PNG_CHANNELS: Record<number, number> = { 0: 1, 2: 3, 3: 1, 4: 2, 6: 4 };

const u32be = (b: Uint8Array, o: number) => ((b[o]! << 24) >>> 0) + (b[o + 1]! << 16) + (b[o + 2]! << 8) + b[o + 3]!;
const u32le = (b: Uint8Array, o: number) => b[o]! + (b[o + 1]! << 8) + (b[o + 2]! << 16) + ((b[o + 3]! << 24) >>> 0);
const ascii = (b: Uint8Array, o: number, t: string) => [...t].every((c, i) => b[o + i] === c.charCodeAt(0));
const isPng = (b: Uint8Array) => b[0] === 0x89 && ascii(b, 1, "PNG\r\n\x1a\n");

/** A PNG's IHDR → the most bytes a well-formed file of that size holds, or why the header is not one. */
function pngBound(b: Uint8Array): number | string {
  if (b.length < 33) return "too short for a PNG header";
  if (u32be(b, 8) !== 13 || !ascii(b, 12, "IHDR")) return "a PNG signature without its IHDR header";
  const [w, h, depth, colour] = [u32be(b, 16), u32be(b, 20), b[24]!, b[25]!];
  const channels = PNG_CHANNELS[colour];
  if (!w || !h || !channels || ![1, 2, 4, 8, 16].includes(depth)) return `an invalid PNG header (${w}×${h}, depth ${depth}, colour type ${colour})`;
  if (w * h > IMAGE_PIXEL_LIMIT) return `a ${w}×${h} PNG, over the pixel limit (${IMAGE_PIXEL_LIMIT})`;
  const raw = h * (1 + Math.ceil((w * channels * depth) / 8));
  // Adam7 adds up to 7 filter bytes a row; stored deflate blocks 5 bytes per 64 KB; chunk headers per IDAT
  return raw + 7 * h + Math.ceil(raw / 100) + METADATA_SLACK;
}

/** A JPEG's frame header (SOFn) within `b` → a bound on the file, or null when not in these bytes. */
function jpegBound(b: Uint8Array): number | null {
  for (let o = 2; o + 9 < b.length; ) {
    if (b[o] !== 0xff) return null;
    const marker = b[o + 1]!;
    if (marker === 0xff) { o++; continue; }
    const len = (b[o + 2]! << 8) + b[o + 3]!;
    if (marker >= 0xc0 && marker <= 0xcf && ![0xc4, 0xc8, 0xcc].includes(marker)) {
      const [h, w, comps] = [(b[o + 5]! << 8) + b[o + 6]!, (b[o + 7]! << 8) + b[o + 8]!, b[o + 9]!];
      // entropy-coded data stays well under twice the raw samples even at quality 100
      return 2 * Math.max(1, w) * Math.max(1, h) * Math.max(1, comps) + METADATA_SLACK;
    }
    o += 2 + len;
  }
  return null;
}

export class ImageStructure {
  private png = false;
  private nextChunk = 8;
  private started = false;
  /** Where the first IDAT's data starts (its zlib stream header), until checked. */
  private idatData: number | null = null;
  private idatSeen = false; // the first IDAT found (its zlib header is checked once)

  /** @param declared the size the archive declares for the file */
  constructor(private readonly declared: number) {}

  /** Checks the first `length` bytes of the file (called as they grow); a reason to refuse it, or null. */
  check(b: Uint8Array, length: number): string | null {
    if (!this.started) {
      this.started = true;
      const why = this.checkHead(b.subarray(0, length));
      if (why) return why;
    }
    if (this.idatData !== null && this.idatData + 2 <= length) {
      const [cmf, flg] = [b[this.idatData]!, b[this.idatData + 1]!];
      if ((cmf & 0x0f) !== 8 || (cmf * 256 + flg) % 31 !== 0) return `its PNG image data at byte ${this.idatData} is not a zlib stream`;
      this.idatData = null;
    }
    if (!this.png) return null;
    // walk the chunks whose headers have arrived: length < 2^31 and a four-letter type, up to IEND
    while (this.nextChunk + 8 <= length) {
      const len = u32be(b, this.nextChunk);
      const type = b.subarray(this.nextChunk + 4, this.nextChunk + 8);
      const letters = [...type].every((c) => (c >= 65 && c <= 90) || (c >= 97 && c <= 122));
      if (len > 0x7fffffff || !letters) return `its PNG chunk at byte ${this.nextChunk} is malformed (not a PNG past its header)`;
      if (ascii(type, 0, "IDAT") && !this.idatSeen) {
        this.idatSeen = true;
        this.idatData = this.nextChunk + 8;
      }
      if (ascii(type, 0, "IEND")) {
        this.png = false;
        if (this.nextChunk + 12 < this.declared - 4096) return `its PNG ends at byte ${this.nextChunk + 12} but the entry declares ${this.declared}`;
        return null;
      }
      this.nextChunk += 12 + len;
    }
    return null;
  }

  private checkHead(b: Uint8Array): string | null {
    let bound: number | null = null;
    let what = "";
    if (isPng(b)) {
      const r = pngBound(b);
      if (typeof r === "string") return `it is ${r}`;
      this.png = true;
      bound = r;
      what = `a ${u32be(b, 16)}×${u32be(b, 20)} PNG`;
    } else if (b[0] === 0xff && b[1] === 0xd8) {
      bound = jpegBound(b);
      what = "that JPEG's frame size";
    } else if (ascii(b, 0, "RIFF") && ascii(b, 8, "WEBP")) {
      bound = u32le(b, 4) + 8 + 1;
      what = "a WebP whose header says so";
    } else if (ascii(b, 0, "BM") && b.length >= 6 && u32le(b, 2) > 0) {
      bound = u32le(b, 2);
      what = "a BMP whose header says so";
    }
    if (bound !== null && this.declared > bound) return `it declares ${this.declared} bytes, more than ${what} can hold (${bound})`;
    return null;
  }
}
