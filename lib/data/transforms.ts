/**
 * train_controlnet.py's transforms: Resize(resolution, BILINEAR) on the short side, CenterCrop(resolution), then
 * the target to [-1, 1] (ToTensor + Normalize([0.5], [0.5])) and the conditioning image to [0, 1] (ToTensor only).
 * Output is NHWC float32 (tfjs' layout) instead of torch's CHW.
 */
import { openRgb, type DecodeOptions } from "./image.js";
import { resizePil } from "./resample.js";
import { isRawImage, type ImageValue, type RawImage } from "./types.js";
import { InputError } from "../io/input-error.js";

/** resolution must be a positive multiple of 8 (the VAE downsamples by 8); diffusers raises the same error. */
export function checkResolution(resolution: number): void {
  if (!Number.isInteger(resolution) || resolution <= 0 || resolution % 8 !== 0) {
    throw new InputError(`\`resolution\` must be a positive integer divisible by 8 (the VAE downsamples by 8), got ${resolution}`);
  }
}

/** Python's round(): halves go to the even neighbour (CenterCrop uses int(round((h - th) / 2.0))). */
function roundHalfEven(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/** torchvision Resize(int) output size: the short side becomes `size`, the long side int(size * long / short). */
export function resizedSize(width: number, height: number, size: number): { width: number; height: number } {
  if (width <= height) return { width: size, height: Math.floor((size * height) / width) };
  return { width: Math.floor((size * width) / height), height: size };
}

/** torchvision CenterCrop offsets. */
export function centerCropOffsets(width: number, height: number, size: number): { left: number; top: number } {
  return { left: roundHalfEven((width - size) / 2), top: roundHalfEven((height - size) / 2) };
}

/** Resize the short side to `resolution` (bilinear) and centre-crop to resolution × resolution, as RGB 8-bit. */
export async function resizeCenterCrop(img: ImageValue, resolution: number, o: DecodeOptions = {}): Promise<RawImage> {
  // fast path: already the right size and RGB (synthetic rows at the training resolution)
  if (isRawImage(img) && img.channels === 3 && img.width === resolution && img.height === resolution) return img;
  const { pipeline, width, height } = await openRgb(img, o);
  const rs = resizedSize(width, height, resolution);
  const { left, top } = centerCropOffsets(rs.width, rs.height, resolution);
  if (rs.width > width || rs.height > height) {
    // enlarged: PIL's bilinear exactly (resample.ts; libvips' shifted it by about half a pixel)
    const { data, info } = await pipeline.raw({ depth: "uchar" }).toBuffer({ resolveWithObject: true });
    const big = resizePil({ data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength), width: info.width, height: info.height, channels: 3 }, rs.width, rs.height, "bilinear");
    const out = new Uint8Array(resolution * resolution * 3);
    for (let y = 0; y < resolution; y++) out.set(big.data.subarray(((y + top) * rs.width + left) * 3, ((y + top) * rs.width + left + resolution) * 3), y * resolution * 3);
    return { data: out, width: resolution, height: resolution, channels: 3 };
  }
  let s = pipeline;
  if (rs.width !== width || rs.height !== height) s = s.resize(rs.width, rs.height, { kernel: "linear", fit: "fill" });
  if (rs.width !== resolution || rs.height !== resolution) s = s.extract({ left, top, width: resolution, height: resolution });
  const { data, info } = await s.raw({ depth: "uchar" }).toBuffer({ resolveWithObject: true });
  if (info.width !== resolution || info.height !== resolution || info.channels !== 3) {
    throw new Error(`transform produced ${info.width}×${info.height}×${info.channels}, expected ${resolution}×${resolution}×3`);
  }
  return { data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength), width: resolution, height: resolution, channels: 3 };
}

const TO_SIGNED = new Float32Array(256).map((_, v) => v / 127.5 - 1);
const TO_UNIT = new Float32Array(256).map((_, v) => v / 255);

/** RGB 8-bit → floats written into `out` at `offset`: "signed" → [-1, 1], "unit" → [0, 1]. */
export function toFloat(img: RawImage, range: "signed" | "unit", out: Float32Array, offset = 0): void {
  if (img.channels !== 3) throw new Error(`toFloat expects RGB, got ${img.channels} channels`);
  const lut = range === "signed" ? TO_SIGNED : TO_UNIT;
  const src = img.data;
  const n = src.length;
  const dst = out.subarray(offset, offset + n);
  for (let i = 0; i < n; i++) dst[i] = lut[src[i]!]!;
}

/** The target transform for one image: [H, W, 3] float32 in [-1, 1]. */
export async function imageTransform(img: ImageValue, resolution: number): Promise<Float32Array> {
  const px = await resizeCenterCrop(img, resolution);
  const out = new Float32Array(resolution * resolution * 3);
  toFloat(px, "signed", out);
  return out;
}

/** The conditioning transform for one image: [H, W, 3] float32 in [0, 1]. */
export async function conditioningImageTransform(img: ImageValue, resolution: number): Promise<Float32Array> {
  const px = await resizeCenterCrop(img, resolution);
  const out = new Float32Array(resolution * resolution * 3);
  toFloat(px, "unit", out);
  return out;
}
