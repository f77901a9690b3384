/**
 * PIL's Image.resize(size, BILINEAR) on 8-bit RGB, as torchvision's Resize does it to a PIL image (Pillow's
 * libImaging/Resample.c: a triangle filter scaled by the reduction, pixel centres at (x + 0.5) · scale, 22-bit fixed-
 * point coefficients, a horizontal pass into 8 bits, then a vertical one). Used where upscaling: libvips' bilinear
 * puts pixel centres elsewhere and shifted an enlarged image by about half an output pixel (a 16-px ramp at 32 px:
 * PIL [0, 4, 13, 21, …], libvips [0, 0, 9, 17, …]), so a dataset image smaller than --resolution trained shifted.
 */
import type { RawImage } from "./types.js";

const PRECISION_BITS = 32 - 8 - 2;

/** Per output pixel: the first input index, the count, and the fixed-point weights (ksize per pixel). */
function coefficients(inSize: number, outSize: number): { bounds: Int32Array; kk: Int32Array; ksize: number } {
  const scale = inSize / outSize;
  const filterscale = Math.max(scale, 1);
  const support = 1 * filterscale; // bilinear: support 1
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
      const t = Math.abs((x + xmin - center + 0.5) * ss);
      w[x] = t < 1 ? 1 - t : 0;
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

/** PIL's bilinear resize of an RGB image to width × height. */
export function resizeBilinearPil(img: RawImage, width: number, height: number): RawImage {
  if (img.channels !== 3) throw new Error(`resizeBilinearPil expects RGB, got ${img.channels} channels`);
  let src = img.data, sw = img.width, sh = img.height;
  const v = coefficients(sh, height);
  if (width !== sw) {
    // only the rows the vertical pass reads
    const first = v.bounds[0]!;
    const last = v.bounds[height * 2 - 2]! + v.bounds[height * 2 - 1]!;
    for (let i = 0; i < height; i++) v.bounds[i * 2] -= first;
    const h = coefficients(sw, width);
    const rows = last - first;
    const out = new Uint8Array(width * rows * 3);
    for (let y = 0; y < rows; y++) {
      const row = (y + first) * sw * 3;
      for (let xx = 0; xx < width; xx++) {
        const xmin = h.bounds[xx * 2]!, n = h.bounds[xx * 2 + 1]!, k = xx * h.ksize;
        let s0 = 1 << (PRECISION_BITS - 1), s1 = s0, s2 = s0;
        for (let x = 0; x < n; x++) {
          const w = h.kk[k + x]!, p = row + (x + xmin) * 3;
          s0 += src[p]! * w;
          s1 += src[p + 1]! * w;
          s2 += src[p + 2]! * w;
        }
        const o = (y * width + xx) * 3;
        out[o] = clip8(s0);
        out[o + 1] = clip8(s1);
        out[o + 2] = clip8(s2);
      }
    }
    src = out;
    sw = width;
    sh = rows;
  }
  if (height === img.height && width !== img.width) return { data: src, width, height, channels: 3 };
  const out = new Uint8Array(width * height * 3);
  for (let yy = 0; yy < height; yy++) {
    const ymin = v.bounds[yy * 2]!, n = v.bounds[yy * 2 + 1]!, k = yy * v.ksize;
    for (let xx = 0; xx < width; xx++) {
      let s0 = 1 << (PRECISION_BITS - 1), s1 = s0, s2 = s0;
      for (let y = 0; y < n; y++) {
        const w = v.kk[k + y]!, p = ((y + ymin) * sw + xx) * 3;
        s0 += src[p]! * w;
        s1 += src[p + 1]! * w;
        s2 += src[p + 2]! * w;
      }
      const o = (yy * width + xx) * 3;
      out[o] = clip8(s0);
      out[o + 1] = clip8(s1);
      out[o + 2] = clip8(s2);
    }
  }
  return { data: out, width, height, channels: 3 };
}
