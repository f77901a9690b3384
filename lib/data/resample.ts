/**
 * PIL's Image.resize(size, BILINEAR | LANCZOS) on 8-bit RGB (Pillow's libImaging/Resample.c: the filter scaled by the
 * reduction, pixel centres at (x + 0.5) · scale, 22-bit fixed-point coefficients, a horizontal pass into 8 bits, then
 * a vertical one). torchvision's Resize does BILINEAR to the script's PIL images; diffusers' control image processor
 * does LANCZOS. libvips puts pixel centres elsewhere when enlarging and shifted the image by about half an output
 * pixel (a 16-px ramp at 32 px: PIL [0, 4, 13, 21, …], libvips [0, 0, 9, 17, …]): a dataset image smaller than
 * --resolution trained shifted, and an enlarged control image steered generation off by up to 121 levels at edges.
 */
import type { RawImage } from "./types.js";

const PRECISION_BITS = 32 - 8 - 2;

export type PilFilter = "bilinear" | "lanczos";

function sinc(x: number): number {
  if (x === 0) return 1;
  const px = x * Math.PI;
  return Math.sin(px) / px;
}

/** Pillow's filters: the kernel and its support (in input pixels, before scaling by the reduction). */
const FILTERS: Record<PilFilter, { support: number; at: (x: number) => number }> = {
  bilinear: { support: 1, at: (x) => (Math.abs(x) < 1 ? 1 - Math.abs(x) : 0) },
  // a truncated sinc, a = 3
  lanczos: { support: 3, at: (x) => (x >= -3 && x < 3 ? sinc(x) * sinc(x / 3) : 0) },
};

/** Per output pixel: the first input index, the count, and the fixed-point weights (ksize per pixel). */
function coefficients(inSize: number, outSize: number, filter: PilFilter): { bounds: Int32Array; kk: Int32Array; ksize: number } {
  const scale = inSize / outSize;
  const filterscale = Math.max(scale, 1);
  const { support: unit, at } = FILTERS[filter];
  const support = unit * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const bounds = new Int32Array(outSize * 2);
  const kk = new Int32Array(outSize * ksize);
  const w = new Float64Array(ksize);
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    const ss = 1 / filterscale;
    const xmin = Math.max(Math.trunc(center - support + 0.5), 0);
    const xmax = Math.min(Math.trunc(center + support + 0.5), inSize) - xmin;
    let ww = 0;
    for (let x = 0; x < xmax; x++) {
      w[x] = at((x + xmin - center + 0.5) * ss);
      ww += w[x]!;
    }
    for (let x = 0; x < xmax; x++) {
      const k = ww !== 0 ? w[x]! / ww : w[x]!;
      kk[xx * ksize + x] = Math.trunc(k < 0 ? -0.5 + k * (1 << PRECISION_BITS) : 0.5 + k * (1 << PRECISION_BITS));
    }
    bounds[xx * 2] = xmin;
    bounds[xx * 2 + 1] = xmax;
  }
  return { bounds, kk, ksize };
}

function clip8(v: number): number {
  if (v >= 1 << PRECISION_BITS << 8) return 255;
  if (v <= 0) return 0;
  return v >> PRECISION_BITS;
}

/** One output pixel of a pass: the n samples from `first`, `step` apart, weighted by kk[k…] (PIL's rounding). */
function weighPixel(out: Uint8Array, o: number, src: Uint8Array, first: number, step: number, kk: Int32Array, k: number, n: number): void {
  let s0 = 1 << (PRECISION_BITS - 1), s1 = s0, s2 = s0;
  for (let i = 0, p = first; i < n; i++, p += step) {
    const w = kk[k + i]!;
    s0 += src[p]! * w;
    s1 += src[p + 1]! * w;
    s2 += src[p + 2]! * w;
  }
  out[o] = clip8(s0);
  out[o + 1] = clip8(s1);
  out[o + 2] = clip8(s2);
}

/** PIL's resize of an RGB image to width × height with `filter`. */
export function resizePil(img: RawImage, width: number, height: number, filter: PilFilter): RawImage {
  if (img.channels !== 3) throw new Error(`resizePil expects RGB, got ${img.channels} channels`);
  let src = img.data, sw = img.width, sh = img.height;
  const v = coefficients(sh, height, filter);
  if (width !== sw) {
    // only the rows the vertical pass reads
    const first = v.bounds[0]!;
    const last = v.bounds[height * 2 - 2]! + v.bounds[height * 2 - 1]!;
    for (let i = 0; i < height; i++) v.bounds[i * 2] -= first;
    const h = coefficients(sw, width, filter);
    const rows = last - first;
    const out = new Uint8Array(width * rows * 3);
    for (let y = 0; y < rows; y++) {
      const row = (y + first) * sw * 3;
      for (let xx = 0; xx < width; xx++) {
        weighPixel(out, (y * width + xx) * 3, src, row + h.bounds[xx * 2]! * 3, 3, h.kk, xx * h.ksize, h.bounds[xx * 2 + 1]!);
      }
    }
    src = out;
    sw = width;
    sh = rows;
  }
  if (height === img.height && width !== img.width) return { data: src, width, height, channels: 3 };
  const out = new Uint8Array(width * height * 3);
  for (let yy = 0; yy < height; yy++) {
    const ymin = v.bounds[yy * 2]!;
    for (let xx = 0; xx < width; xx++) {
      weighPixel(out, (yy * width + xx) * 3, src, (ymin * sw + xx) * 3, sw * 3, v.kk, yy * v.ksize, v.bounds[yy * 2 + 1]!);
    }
  }
  return { data: out, width, height, channels: 3 };
}
