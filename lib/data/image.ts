/**
 * Image decoding and encoding through sharp: every image becomes RGB, 8 bits per sample, like PIL's convert("RGB") —
 * but for one deliberate difference: a 16-bit image (a depth map) is scaled to 8 bits, where PIL clips it at 255 and
 * such a map trains as white.
 */
import sharp from "sharp";
import { isRawImage, type ImageValue, type RawImage } from "./types.js";

export interface DecodeOptions {
  /**
   * Apply the EXIF Orientation tag (a phone photo stored sideways), as datasets' Image feature (PIL's exif_transpose,
   * datasets ≥ 2.19) and diffusers' load_image do; default true. The script opens its --validation_image files with a
   * bare Image.open(…).convert("RGB"), which does not: validation passes false.
   */
  orient?: boolean;
}

/** An image opened as 8-bit RGB without alpha: a sharp pipeline to resize or encode, and its size as it is shown. */
export interface RgbSource {
  pipeline: ReturnType<typeof sharp>;
  width: number;
  height: number;
}

/** Opens `img` (encoded bytes or raw pixels) as 8-bit sRGB without alpha, reading the header once. */
export async function openRgb(img: ImageValue, o: DecodeOptions = {}): Promise<RgbSource> {
  if (isRawImage(img)) {
    const pipeline = sharp(img.data, { raw: { width: img.width, height: img.height, channels: img.channels } }).toColourspace("srgb").removeAlpha();
    return { pipeline, width: img.width, height: img.height };
  }
  const orient = o.orient ?? true;
  // failOn "error": a truncated or corrupt file rejects instead of decoding half an image
  const m = await sharp(img, { failOn: "error" }).metadata();
  if (!m.width || !m.height) throw new Error("image has no size");
  if (m.space === "cmyk") return cmykAsPil(img, orient);
  const size = orient ? m.autoOrient : m;
  // grayscale / palette / 16-bit → 8-bit sRGB; RGBA/LA → alpha dropped (PIL's convert("RGB") drops it too)
  const pipeline = sharp(img, { failOn: "error", autoOrient: orient }).toColourspace("srgb").removeAlpha();
  return { pipeline, width: size.width, height: size.height };
}

/**
 * A CMYK image (print JPEGs) converted as PIL's convert("RGB") does — R = (255 − K)(255 − C)/255, with libImaging's
 * rounding, no colour profile — where libvips' profile-based conversion shifted pure red to (232, 0, 0): the colours
 * of a segmentation map must stay the colours the script trains on.
 */
async function cmykAsPil(img: Uint8Array | Buffer, orient: boolean): Promise<RgbSource> {
  const { data, info } = await sharp(img, { failOn: "error", autoOrient: orient }).pipelineColourspace("cmyk").toColourspace("cmyk")
    .raw({ depth: "uchar" }).toBuffer({ resolveWithObject: true });
  const n = info.width * info.height;
  const rgb = new Uint8Array(n * 3);
  for (let i = 0; i < n; i++) {
    const s = i * info.channels;
    const nk = 255 - data[s + 3]!;
    for (let c = 0; c < 3; c++) {
      const t = data[s + c]! * nk + 128; // libImaging's MULDIV255
      rgb[i * 3 + c] = nk - (((t >> 8) + t) >> 8);
    }
  }
  return { pipeline: sharp(rgb, { raw: { width: info.width, height: info.height, channels: 3 } }), width: info.width, height: info.height };
}

/** Decodes any image to RGB 8-bit pixels. */
export async function decodeRgb(img: ImageValue, o: DecodeOptions = {}): Promise<RawImage> {
  if (isRawImage(img) && img.channels === 3) return img;
  const { pipeline } = await openRgb(img, o);
  const { data, info } = await pipeline.raw({ depth: "uchar" }).toBuffer({ resolveWithObject: true });
  if (info.channels !== 3) throw new Error(`expected 3 channels after conversion, got ${info.channels}`);
  return { data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength), width: info.width, height: info.height, channels: 3 };
}

/** Encodes raw pixels as PNG (deterministic: no metadata, fixed compression). */
export async function encodePng(img: RawImage, opts: { compressionLevel?: number } = {}): Promise<Buffer> {
  return sharp(img.data, { raw: { width: img.width, height: img.height, channels: img.channels } })
    .png({ compressionLevel: opts.compressionLevel ?? 6, adaptiveFiltering: false })
    .toBuffer();
}
