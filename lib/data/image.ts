/** Image decoding and encoding through sharp: every image becomes RGB, 8 bits per sample, like PIL's convert("RGB"). */
import sharp from "sharp";
import { isRawImage, type ImageValue, type RawImage } from "./types.js";

/** A sharp pipeline reading `img` (encoded bytes or raw pixels), already converted to 8-bit sRGB without alpha. */
export function sharpRgb(img: ImageValue): ReturnType<typeof sharp> {
  const s = isRawImage(img)
    ? sharp(img.data, { raw: { width: img.width, height: img.height, channels: img.channels } })
    // failOn "error": a truncated or corrupt file rejects instead of decoding half an image
    : sharp(img, { failOn: "error" });
  // grayscale / palette / CMYK / 16-bit → 8-bit sRGB; RGBA/LA → alpha dropped (PIL's convert("RGB") drops it too)
  return s.toColourspace("srgb").removeAlpha();
}

/** Decodes any image to RGB 8-bit pixels. */
export async function decodeRgb(img: ImageValue): Promise<RawImage> {
  if (isRawImage(img) && img.channels === 3) return img;
  const { data, info } = await sharpRgb(img).raw({ depth: "uchar" }).toBuffer({ resolveWithObject: true });
  if (info.channels !== 3) throw new Error(`expected 3 channels after conversion, got ${info.channels}`);
  return { data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength), width: info.width, height: info.height, channels: 3 };
}

/** Image size without decoding the pixels (header only for encoded images). */
export async function imageSize(img: ImageValue): Promise<{ width: number; height: number }> {
  if (isRawImage(img)) return { width: img.width, height: img.height };
  const m = await sharp(img, { failOn: "error" }).metadata();
  if (!m.width || !m.height) throw new Error("image has no size");
  return { width: m.width, height: m.height };
}

/** Encodes raw pixels as PNG (deterministic: no metadata, fixed compression). */
export async function encodePng(img: RawImage, opts: { compressionLevel?: number } = {}): Promise<Buffer> {
  return sharp(img.data, { raw: { width: img.width, height: img.height, channels: img.channels } })
    .png({ compressionLevel: opts.compressionLevel ?? 6, adaptiveFiltering: false })
    .toBuffer();
}
