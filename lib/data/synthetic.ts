/**
 * A synthetic fill50k. lllyasviel's fill50k pairs a circle outline on black (the conditioning image) with the same
 * circle filled in one CSS colour on a background of another (the target), captioned "<A> circle with <B>
 * background". This generator draws rows of that shape from a seed, lazily by index (row i never depends on row
 * i-1), at any resolution, and keeps each row's ground truth so an evaluator can score generated images.
 */
import { CSS_COLORS, fillPrompt, type NamedColor } from "./colors.js";
import { hashInts, Prng } from "./prng.js";
import type { DataSource, DatasetRow, RawImage } from "./types.js";
import { encodePng } from "./image.js";

export interface CircleTruth {
  /** Image side in pixels. */
  size: number;
  /** Centre and radius in pixels (continuous coordinates: pixel (x, y) covers [x, x+1) × [y, y+1)). */
  cx: number;
  cy: number;
  r: number;
  /** Outline width in pixels (conditioning image). */
  lineWidth: number;
  fillColor: NamedColor;
  bgColor: NamedColor;
  prompt: string;
}

export interface SyntheticRow extends DatasetRow {
  text: string;
  truth: CircleTruth;
}

export interface SyntheticOptions {
  /** Number of rows (default 50,000 like fill50k). */
  count?: number;
  /** Seed (default 0). Rows depend on (seed, index) only. */
  seed?: number;
  /** Side of the square images in pixels (default 512 like fill50k). */
  resolution?: number;
  /** "raw" (default): RGB pixels; "png": encoded PNG bytes like a file-backed dataset. */
  format?: "raw" | "png";
}

/** Geometry in units of the image side, so the same seed gives the same scene at every resolution. */
const R_MIN = 0.06;
const R_MAX = 0.3;
const MARGIN = 0.04;

/** The outline width for an image side: ~2.5 px at 512, never thinner than 1.5 px. */
export function outlineWidth(size: number): number {
  return Math.max(1.5, size * 0.005);
}

/** The scene of row `index`: colours and geometry, with no pixels drawn. */
export function syntheticTruth(seed: number, index: number, size: number): CircleTruth {
  const rng = new Prng(hashInts(0x6f11, seed, index));
  const fillColor = CSS_COLORS[rng.int(CSS_COLORS.length)]!;
  let bgColor = CSS_COLORS[rng.int(CSS_COLORS.length)]!;
  // fill and background must differ in value, not just in name (aqua/cyan, gray/grey)
  while (sameRgb(bgColor, fillColor)) bgColor = CSS_COLORS[rng.int(CSS_COLORS.length)]!;
  const rn = rng.uniform(R_MIN, R_MAX);
  const cxn = rng.uniform(rn + MARGIN, 1 - rn - MARGIN);
  const cyn = rng.uniform(rn + MARGIN, 1 - rn - MARGIN);
  return {
    size, cx: cxn * size, cy: cyn * size, r: rn * size, lineWidth: outlineWidth(size),
    fillColor, bgColor, prompt: fillPrompt(fillColor, bgColor),
  };
}

function sameRgb(a: NamedColor, b: NamedColor): boolean {
  return a.rgb[0] === b.rgb[0] && a.rgb[1] === b.rgb[1] && a.rgb[2] === b.rgb[2];
}

/** The bounding box (clamped to the image) of pixels within `reach` of the centre. */
function box(t: { size: number; cx: number; cy: number }, reach: number): [number, number, number, number] {
  const x0 = Math.max(0, Math.floor(t.cx - reach));
  const x1 = Math.min(t.size - 1, Math.ceil(t.cx + reach));
  const y0 = Math.max(0, Math.floor(t.cy - reach));
  const y1 = Math.min(t.size - 1, Math.ceil(t.cy + reach));
  return [x0, x1, y0, y1];
}

/** The conditioning image: a white anti-aliased circle outline on black, RGB. */
export function renderOutline(t: Pick<CircleTruth, "size" | "cx" | "cy" | "r" | "lineWidth">): RawImage {
  const { size, cx, cy, r, lineWidth } = t;
  const data = new Uint8Array(size * size * 3);
  const half = lineWidth / 2;
  const [x0, x1, y0, y1] = box(t, r + half + 1);
  for (let y = y0; y <= y1; y++) {
    const dy = y + 0.5 - cy;
    for (let x = x0; x <= x1; x++) {
      const dx = x + 0.5 - cx;
      // coverage of a band of width lineWidth around the circle, with a one-pixel linear ramp at its edges
      const d = Math.abs(Math.sqrt(dx * dx + dy * dy) - r);
      const c = half + 0.5 - d;
      if (c <= 0) continue;
      const v = c >= 1 ? 255 : Math.round(255 * c);
      const o = (y * size + x) * 3;
      data[o] = v;
      data[o + 1] = v;
      data[o + 2] = v;
    }
  }
  return { data, width: size, height: size, channels: 3 };
}

/** The target image: the circle filled with the fill colour on the background colour, RGB, anti-aliased edge. */
export function renderFilled(t: CircleTruth): RawImage {
  const { size, cx, cy, r } = t;
  const [fr, fg, fb] = t.fillColor.rgb;
  const [br, bg, bb] = t.bgColor.rgb;
  const data = new Uint8Array(size * size * 3);
  // background: one pixel, then doubling copies (much faster than a per-pixel loop at 512²)
  data[0] = br;
  data[1] = bg;
  data[2] = bb;
  for (let filled = 3; filled < data.length; filled *= 2) data.copyWithin(filled, 0, Math.min(filled, data.length - filled));
  const [x0, x1, y0, y1] = box(t, r + 1);
  for (let y = y0; y <= y1; y++) {
    const dy = y + 0.5 - cy;
    for (let x = x0; x <= x1; x++) {
      const dx = x + 0.5 - cx;
      const c = r + 0.5 - Math.sqrt(dx * dx + dy * dy);
      if (c <= 0) continue;
      const o = (y * size + x) * 3;
      if (c >= 1) {
        data[o] = fr;
        data[o + 1] = fg;
        data[o + 2] = fb;
      } else {
        data[o] = Math.round(br + (fr - br) * c);
        data[o + 1] = Math.round(bg + (fg - bg) * c);
        data[o + 2] = Math.round(bb + (fb - bb) * c);
      }
    }
  }
  return { data, width: size, height: size, channels: 3 };
}

/** The synthetic fill50k as a random-access source. */
export class SyntheticFill50k implements DataSource {
  readonly length: number;
  readonly seed: number;
  readonly resolution: number;
  readonly format: "raw" | "png";
  readonly columns = ["image", "conditioning_image", "text"] as const;

  constructor(opts: SyntheticOptions = {}) {
    this.length = opts.count ?? 50_000;
    this.seed = opts.seed ?? 0;
    this.resolution = opts.resolution ?? 512;
    this.format = opts.format ?? "raw";
    if (!Number.isInteger(this.length) || this.length < 0) throw new Error(`synthetic count must be a non-negative integer, got ${this.length}`);
    if (!Number.isInteger(this.resolution) || this.resolution < 8) throw new Error(`synthetic resolution must be an integer ≥ 8, got ${this.resolution}`);
  }

  get description(): string {
    return `synthetic fill50k (${this.length} rows, seed ${this.seed}, ${this.resolution}×${this.resolution})`;
  }

  /** Ground truth of row `index` without drawing it. */
  truth(index: number): CircleTruth {
    this.check(index);
    return syntheticTruth(this.seed, index, this.resolution);
  }

  /** Row `index`, drawn now (synchronously, raw pixels). */
  row(index: number): SyntheticRow {
    const truth = this.truth(index);
    return { image: renderFilled(truth), conditioning_image: renderOutline(truth), text: truth.prompt, truth, origin: `synthetic#${index}` };
  }

  async get(index: number): Promise<SyntheticRow> {
    const row = this.row(index);
    if (this.format === "png") {
      // fast zlib level: these bytes are decoded again at once, size does not matter
      const [image, conditioning_image] = await Promise.all([
        encodePng(row.image as RawImage, { compressionLevel: 1 }),
        encodePng(row.conditioning_image as RawImage, { compressionLevel: 1 }),
      ]);
      return { ...row, image, conditioning_image };
    }
    return row;
  }

  private check(index: number): void {
    if (!Number.isInteger(index) || index < 0 || index >= this.length) throw new RangeError(`row ${index} out of range [0, ${this.length})`);
  }
}
