/**
 * Control-image preparation and output encoding. diffusers' control image processor converts to RGB, resizes to
 * the requested (or the image's own, floored to a multiple of the VAE factor) size with Lanczos, and keeps values in
 * [0, 1] (no normalisation). Outputs go (x/2 + 0.5) → clamp [0, 1] → round(x·255) → PNG.
 */
import fs from "node:fs";
import { tf } from "../engine/index.js";
import { decodeRgb, encodePng } from "../data/image.js";
import { isRawImage, type RawImage } from "../data/types.js";
import { resizePil } from "../data/resample.js";
import type { ControlImageInput } from "./types.js";

/** A prepared control image: [1 or B, H, W, C] float32 in [0, 1]. */
export interface PreparedImage {
  tensor: tf.Tensor4D;
  width: number;
  height: number;
}

async function decodeInput(input: string | Uint8Array | RawImage): Promise<RawImage> {
  if (typeof input === "string") {
    if (!fs.existsSync(input)) throw new Error(`control image not found: ${input}`);
    try {
      return await decodeRgb(fs.readFileSync(input));
    } catch (e) {
      // sharp's own words ("Input buffer is empty", "vipspng: libpng read error") do not say which file
      throw new Error(`control image ${input} could not be read as an image (${(e as Error).message})`);
    }
  }
  return decodeRgb(input);
}

/** PIL's LANCZOS resize of an RGB image, as diffusers' control image processor does it (pixel for pixel). */
export function resizeRgb(img: RawImage, width: number, height: number): RawImage {
  return img.width === width && img.height === height ? img : resizePil(img, width, height, "lanczos");
}

function describe(i: number, n: number): string {
  return n === 1 ? "the control image" : `control image ${i + 1} of ${n}`;
}

/**
 * Loads a control image and sizes it as diffusers' control image processor does: to the requested height/width
 * (Lanczos for images, bilinear for tensors), or without them to the image's own size floored to a multiple of
 * `multiple`. (A 512-pixel control image for a 32-pixel base is resized, not sampled at 512.)
 */
export async function prepareControlImage(
  input: ControlImageInput,
  opts: { multiple: number; height?: number; width?: number; index?: number; count?: number },
): Promise<PreparedImage> {
  const what = describe(opts.index ?? 0, opts.count ?? 1);
  if (input instanceof tf.Tensor) {
    if (input.rank !== 3 && input.rank !== 4) {
      throw new Error(`${what}: a tensor control image must be [H,W,C] or [B,H,W,C] (NHWC), got shape [${input.shape}]`);
    }
    const [h0, w0] = (input.rank === 3 ? input.shape : input.shape.slice(1)) as [number, number];
    const [w, h] = targetSize(what, w0, h0, opts);
    const tensor = tf.tidy(() => {
      const x = (input.rank === 3 ? input.expandDims(0) : input).toFloat() as tf.Tensor4D;
      return w === w0 && h === h0 ? x.clone() : tf.image.resizeBilinear(x, [h, w], false, true);
    }) as tf.Tensor4D;
    return { tensor, width: w, height: h };
  }
  let img = await decodeInput(input);
  const [w, h] = targetSize(what, img.width, img.height, opts);
  img = resizeRgb(img, w, h);
  const tensor = tf.tidy(() => tf.div(tf.tensor4d(Float32Array.from(img.data), [1, h, w, 3]), 255)) as tf.Tensor4D;
  return { tensor, width: w, height: h };
}

/** The requested size, or the image's own floored to a multiple of the VAE factor. */
function targetSize(what: string, w: number, h: number, opts: { multiple: number; height?: number; width?: number }): [number, number] {
  const tw = opts.width ?? w - (w % opts.multiple);
  const th = opts.height ?? h - (h % opts.multiple);
  if (tw === 0 || th === 0) throw new Error(`${what}: ${w}×${h} is smaller than the minimum ${opts.multiple}×${opts.multiple}`);
  return [tw, th];
}

/** VAE output in about [-1, 1] → [B,H,W,3] float in [0, 1] (diffusers' postprocess: x/2 + 0.5, clamped). */
export function denormalize(x: tf.Tensor4D): tf.Tensor4D {
  return tf.tidy(() => tf.clipByValue(tf.add(tf.div(x, 2), 0.5), 0, 1)) as tf.Tensor4D;
}

/** [B,H,W,3] in [0, 1] → 8-bit RGB images (round half to even, like numpy's `(x * 255).round()`). */
export function toRgbImages(x: tf.Tensor4D): RawImage[] {
  const [b, h, w, c] = x.shape;
  const q = tf.tidy(() => tf.round(tf.mul(x, 255)).toInt());
  const data = q.dataSync();
  q.dispose();
  return Array.from({ length: b }, (_, i) => ({
    data: Uint8Array.from(data.subarray(i * h * w * c, (i + 1) * h * w * c)),
    width: w,
    height: h,
    channels: 3 as const,
  }));
}

export async function toPng(img: RawImage): Promise<Uint8Array> {
  const buf = await encodePng(img);
  return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
}
