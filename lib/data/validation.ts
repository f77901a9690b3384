/**
 * The two conditioning images the seed README validates with (`conditioning_image_1.png` for "red circle with blue
 * background", `conditioning_image_2.png` for "cyan circle with brown floral background"): circle outlines drawn by
 * the synthetic generator at fixed positions, 512×512, written to data/ — and the same two at the tiny base's 32 px
 * (`conditioning_image_1_32px.png`, …): validation generates at the conditioning image's own size, so a quick run on the
 * tiny base validates in a second with those instead of minutes at 512 px. `staleValidationImages` compares the pixels
 * on disk with a fresh rendering, so a change to the generator that forgets to rewrite them is caught.
 */
import fs from "node:fs";
import path from "node:path";
import { outlineWidth, renderOutline } from "./synthetic.js";
import { decodeRgb, encodePng } from "./image.js";
import type { RawImage } from "./types.js";
import { makeDirs } from "../io/dirs.js";

export const VALIDATION_PROMPTS = ["red circle with blue background", "cyan circle with brown floral background"] as const;

/** Geometry in units of the image side. */
const SCENES = [
  { file: "conditioning_image_1.png", prompt: VALIDATION_PROMPTS[0], cx: 0.47, cy: 0.53, r: 0.27 },
  { file: "conditioning_image_2.png", prompt: VALIDATION_PROMPTS[1], cx: 0.56, cy: 0.45, r: 0.19 },
] as const;

export interface ValidationImage {
  file: string;
  prompt: string;
  image: RawImage;
}

/** The sizes written to data/: the seed's 512 px and the tiny base's training size. */
const SIZES = [512, 32] as const;

/** The two validation conditioning images at `size` (default 512); files of another size are named `…_<size>px.png`. */
export function renderValidationImages(size = 512): ValidationImage[] {
  return SCENES.map((s) => ({
    file: size === 512 ? s.file : s.file.replace(/\.png$/, `_${size}px.png`),
    prompt: s.prompt,
    image: renderOutline({ size, cx: s.cx * size, cy: s.cy * size, r: s.r * size, lineWidth: outlineWidth(size) }),
  }));
}

/** Writes data/conditioning_image_{1,2}.png and their 32-px versions (or into `dir`); returns the paths. */
export async function writeValidationImages(dir = "data"): Promise<string[]> {
  makeDirs(dir);
  const out: string[] = [];
  for (const v of SIZES.flatMap((size) => renderValidationImages(size))) {
    const p = path.join(dir, v.file);
    fs.writeFileSync(p, await encodePng(v.image, { compressionLevel: 9 }));
    out.push(p);
  }
  return out;
}

/** Which validation images in `dir` are missing or differ (by pixel) from a fresh rendering. */
export async function staleValidationImages(dir = "data"): Promise<string[]> {
  const stale: string[] = [];
  for (const v of SIZES.flatMap((size) => renderValidationImages(size))) {
    const p = path.join(dir, v.file);
    if (!fs.existsSync(p)) { stale.push(p); continue; }
    const got = await decodeRgb(fs.readFileSync(p));
    if (got.width !== v.image.width || got.height !== v.image.height || Buffer.compare(Buffer.from(got.data), Buffer.from(v.image.data)) !== 0) stale.push(p);
  }
  return stale;
}
