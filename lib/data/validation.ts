/**
 * The two conditioning images the seed README validates with (`conditioning_image_1.png` for "red circle with blue
 * background", `conditioning_image_2.png` for "cyan circle with brown floral background"): circle outlines drawn by
 * the synthetic generator at fixed positions, 512×512, written to data/. `validationImagesUpToDate` compares the
 * pixels on disk with a fresh rendering, so a change to the generator that forgets to rewrite them is caught.
 */
import fs from "node:fs";
import path from "node:path";
import { outlineWidth, renderOutline } from "./synthetic.js";
import { decodeRgb, encodePng } from "./image.js";
import type { RawImage } from "./types.js";

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

/** The two validation conditioning images at `size` (default 512). */
export function renderValidationImages(size = 512): ValidationImage[] {
  return SCENES.map((s) => ({
    file: s.file,
    prompt: s.prompt,
    image: renderOutline({ size, cx: s.cx * size, cy: s.cy * size, r: s.r * size, lineWidth: outlineWidth(size) }),
  }));
}

/** Writes data/conditioning_image_{1,2}.png (or into `dir`); returns the paths. */
export async function writeValidationImages(dir = "data"): Promise<string[]> {
  fs.mkdirSync(dir, { recursive: true });
  const out: string[] = [];
  for (const v of renderValidationImages()) {
    const p = path.join(dir, v.file);
    fs.writeFileSync(p, await encodePng(v.image, { compressionLevel: 9 }));
    out.push(p);
  }
  return out;
}

/** Which validation images in `dir` are missing or differ (by pixel) from a fresh rendering. */
export async function staleValidationImages(dir = "data"): Promise<string[]> {
  const stale: string[] = [];
  for (const v of renderValidationImages()) {
    const p = path.join(dir, v.file);
    if (!fs.existsSync(p)) { stale.push(p); continue; }
    const got = await decodeRgb(fs.readFileSync(p));
    if (got.width !== v.image.width || got.height !== v.image.height || Buffer.compare(Buffer.from(got.data), Buffer.from(v.image.data)) !== 0) stale.push(p);
  }
  return stale;
}
