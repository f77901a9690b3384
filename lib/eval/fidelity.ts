/**
 * Control fidelity for fill50k-style images: does a generated image put the prompt's fill colour inside the
 * conditioning circle and the background colour outside it?
 *
 *   - segmentation: every pixel goes to the nearer (RGB distance) of two colours. By default those are the two
 *     cluster centres of a 2-means fit of the image itself, labelled fill/background by whichever assignment is closer
 *     to the prompt's colours — so a circle drawn in slightly-off colours still segments, and the ground truth is never
 *     used to decide which region is the circle;
 *   - IoU: the predicted fill region against the ground-truth disc (pixel centres within r of the centre);
 *   - colour score: the mean colour inside the disc vs the fill colour and outside vs the background colour, each
 *     1 − distance/√3·255 (1 = exact, 0 = opposite corners of the RGB cube), averaged.
 *
 * Ground truth comes from the synthetic generator (`syntheticTruth`) or from a conditioning image itself
 * (`fitCircle`: a least-squares circle through the outline's bright pixels), so arbitrary validation images work.
 */
import type { RawImage } from "../data/types.js";
import { parseFillPrompt } from "../data/colors.js";

export type Rgb = readonly [number, number, number];

export interface Circle {
  cx: number;
  cy: number;
  r: number;
}

export interface FidelityTarget extends Circle {
  fill: Rgb;
  background: Rgb;
}

export interface FidelityScore {
  iou: number;
  /** Mean of fillScore and backgroundScore. */
  colorScore: number;
  fillScore: number;
  backgroundScore: number;
}

export interface SegmentOptions {
  /** "cluster" (default): 2-means centres labelled by the prompt colours; "prompt": the prompt colours themselves;
   *  "shape": 2-means centres, the one holding most of the image border is the background (colour-blind: it scores
   *  where the disc is, whatever its colours — fill50k discs never touch the border). */
  mode?: "cluster" | "prompt" | "shape";
}

const MAX_DIST = Math.sqrt(3) * 255;

function dist2(d: ArrayLike<number>, o: number, c: Rgb): number {
  const a = d[o]! - c[0];
  const b = d[o + 1]! - c[1];
  const e = d[o + 2]! - c[2];
  return a * a + b * b + e * e;
}

function distance(a: Rgb, b: Rgb): number {
  return Math.sqrt((a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2 + (a[2] - b[2]) ** 2);
}

function checkImage(img: RawImage): void {
  if (img.channels < 3) throw new Error(`fidelity needs an RGB image (got ${img.channels} channel(s))`);
  if (img.data.length < img.width * img.height * img.channels) throw new Error("fidelity: image data is shorter than width × height × channels");
}

/** Pixels (x + ½, y + ½) within r of the centre. */
export function discMask(width: number, height: number, c: Circle): Uint8Array {
  const m = new Uint8Array(width * height);
  const r2 = c.r * c.r;
  for (let y = 0; y < height; y++) {
    const dy = y + 0.5 - c.cy;
    for (let x = 0; x < width; x++) {
      const dx = x + 0.5 - c.cx;
      if (dx * dx + dy * dy <= r2) m[y * width + x] = 1;
    }
  }
  return m;
}

/** 2-means on RGB (deterministic start: the darkest and brightest pixels by luma). */
function twoMeans(img: RawImage, iterations = 10): [Rgb, Rgb] {
  const n = img.width * img.height;
  const ch = img.channels;
  const d = img.data;
  let lo = 0;
  let hi = 0;
  let loV = Infinity;
  let hiV = -Infinity;
  for (let i = 0; i < n; i++) {
    const o = i * ch;
    const v = 0.299 * d[o]! + 0.587 * d[o + 1]! + 0.114 * d[o + 2]!;
    if (v < loV) [loV, lo] = [v, i];
    if (v > hiV) [hiV, hi] = [v, i];
  }
  let a: Rgb = [d[lo * ch]!, d[lo * ch + 1]!, d[lo * ch + 2]!];
  let b: Rgb = [d[hi * ch]!, d[hi * ch + 1]!, d[hi * ch + 2]!];
  for (let it = 0; it < iterations; it++) {
    const sa = [0, 0, 0];
    const sb = [0, 0, 0];
    let na = 0;
    let nb = 0;
    for (let i = 0; i < n; i++) {
      const o = i * ch;
      const toA = dist2(d, o, a) <= dist2(d, o, b);
      const s = toA ? sa : sb;
      s[0] += d[o]!;
      s[1] += d[o + 1]!;
      s[2] += d[o + 2]!;
      if (toA) na++;
      else nb++;
    }
    const na2: Rgb = na ? [sa[0]! / na, sa[1]! / na, sa[2]! / na] : a;
    const nb2: Rgb = nb ? [sb[0]! / nb, sb[1]! / nb, sb[2]! / nb] : b;
    if (distance(na2, a) < 1e-3 && distance(nb2, b) < 1e-3) break;
    a = na2;
    b = nb2;
  }
  return [a, b];
}

/** Share of the image's border pixels nearer to colour `a` than to `b`. */
function borderShare(img: RawImage, a: Rgb, b: Rgb): number {
  const { width: w, height: h, channels: ch, data: d } = img;
  let near = 0;
  let all = 0;
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      if (y !== 0 && y !== h - 1 && x !== 0 && x !== w - 1) continue;
      const o = (y * w + x) * ch;
      if (dist2(d, o, a) <= dist2(d, o, b)) near++;
      all++;
    }
  }
  return near / all;
}

/** 1 where a pixel is taken to be the circle's fill, 0 where background. */
export function segmentFill(img: RawImage, colors: { fill: Rgb; background: Rgb }, opts: SegmentOptions = {}): Uint8Array {
  checkImage(img);
  let fill = colors.fill;
  let bg = colors.background;
  const mode = opts.mode ?? "cluster";
  if (mode === "shape") {
    const [a, b] = twoMeans(img);
    [fill, bg] = borderShare(img, a, b) > 0.5 ? [b, a] : [a, b];
  } else if (mode === "cluster") {
    const [a, b] = twoMeans(img);
    // label the clusters by the cheaper matching to the prompt's colours
    if (distance(a, fill) + distance(b, bg) <= distance(a, bg) + distance(b, fill)) [fill, bg] = [a, b];
    else [fill, bg] = [b, a];
  }
  const n = img.width * img.height;
  const m = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    const o = i * img.channels;
    if (dist2(img.data, o, fill) < dist2(img.data, o, bg)) m[i] = 1;
  }
  return m;
}

export function iou(a: Uint8Array, b: Uint8Array): number {
  let inter = 0;
  let union = 0;
  for (let i = 0; i < a.length; i++) {
    if (a[i] && b[i]) inter++;
    if (a[i] || b[i]) union++;
  }
  return union === 0 ? 1 : inter / union;
}

/** Mean colour of the pixels where `mask` is `want` (null if there are none). */
export function meanColor(img: RawImage, mask: Uint8Array, want: 0 | 1): Rgb | null {
  const s = [0, 0, 0];
  let k = 0;
  for (let i = 0; i < mask.length; i++) {
    if (mask[i] !== want) continue;
    const o = i * img.channels;
    s[0] += img.data[o]!;
    s[1] += img.data[o + 1]!;
    s[2] += img.data[o + 2]!;
    k++;
  }
  return k ? [s[0]! / k, s[1]! / k, s[2]! / k] : null;
}

/** How near colour `a` is to `b`: 1 − distance/(√3·255) (1 = exact, 0 = opposite corners of the RGB cube). */
export function colorMatch(a: Rgb, b: Rgb): number {
  return 1 - distance(a, b) / MAX_DIST;
}

/** Fidelity of one generated image to its target circle and colours. */
export function controlFidelity(img: RawImage, target: FidelityTarget, opts: SegmentOptions = {}): FidelityScore {
  checkImage(img);
  const gt = discMask(img.width, img.height, target);
  const pred = segmentFill(img, target, opts);
  const inside = meanColor(img, gt, 1);
  const outside = meanColor(img, gt, 0);
  const fillScore = inside ? colorMatch(inside, target.fill) : 0;
  const backgroundScore = outside ? colorMatch(outside, target.background) : 0;
  return { iou: iou(pred, gt), colorScore: (fillScore + backgroundScore) / 2, fillScore, backgroundScore };
}

export interface FidelitySummary extends FidelityScore {
  count: number;
  /** Per-image scores, in input order. */
  scores: FidelityScore[];
  /** Share of images with IoU ≥ 0.5 (the circle is clearly where the outline says). */
  hitRate: number;
}

/** Averages `controlFidelity` over a held-out set. */
export function averageFidelity(items: Array<{ image: RawImage; target: FidelityTarget }>, opts: SegmentOptions = {}): FidelitySummary {
  if (items.length === 0) throw new Error("averageFidelity: no images");
  return summarizeFidelity(items.map((it) => controlFidelity(it.image, it.target, opts)));
}

/** Means (and hit rate) of scores already computed, e.g. several sets' scores pooled. */
export function summarizeFidelity(scores: FidelityScore[]): FidelitySummary {
  if (scores.length === 0) throw new Error("summarizeFidelity: no scores");
  const mean = (f: (s: FidelityScore) => number) => scores.reduce((a, s) => a + f(s), 0) / scores.length;
  return {
    count: scores.length,
    iou: mean((s) => s.iou),
    colorScore: mean((s) => s.colorScore),
    fillScore: mean((s) => s.fillScore),
    backgroundScore: mean((s) => s.backgroundScore),
    hitRate: mean((s) => (s.iou >= 0.5 ? 1 : 0)),
    scores,
  };
}

/**
 * The circle an outline conditioning image shows (white ring on black): an algebraic least-squares fit
 * (x² + y² + Dx + Ey + F = 0) through the pixels brighter than `threshold`, weighted by brightness.
 * Returns null when fewer than 3 pixels are lit or the fit is degenerate.
 */
export function fitCircle(cond: RawImage, threshold = 128): Circle | null {
  const { width: w, height: h, channels: ch, data } = cond;
  // normal equations of [x y 1]·[D E F]ᵀ = −(x² + y²)
  const A = [0, 0, 0, 0, 0, 0, 0, 0, 0];
  const bv = [0, 0, 0];
  let count = 0;
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const o = (y * w + x) * ch;
      const v = ch >= 3 ? (data[o]! + data[o + 1]! + data[o + 2]!) / 3 : data[o]!;
      if (v < threshold) continue;
      const wt = v / 255;
      const px = x + 0.5;
      const py = y + 0.5;
      const row = [px, py, 1];
      const rhs = -(px * px + py * py);
      for (let i = 0; i < 3; i++) {
        for (let j = 0; j < 3; j++) A[i * 3 + j] += wt * row[i]! * row[j]!;
        bv[i] += wt * row[i]! * rhs;
      }
      count++;
    }
  }
  if (count < 3) return null;
  const sol = solve3(A, bv);
  if (!sol) return null;
  const [D, E, F] = sol;
  const cx = -D / 2;
  const cy = -E / 2;
  const r2 = cx * cx + cy * cy - F;
  if (!(r2 > 0)) return null;
  return { cx, cy, r: Math.sqrt(r2) };
}

function solve3(A: number[], b: number[]): [number, number, number] | null {
  const m = [0, 1, 2].map((i) => [A[i * 3]!, A[i * 3 + 1]!, A[i * 3 + 2]!, b[i]!]);
  for (let c = 0; c < 3; c++) {
    let p = c;
    for (let r = c + 1; r < 3; r++) if (Math.abs(m[r]![c]!) > Math.abs(m[p]![c]!)) p = r;
    if (Math.abs(m[p]![c]!) < 1e-9) return null;
    [m[c], m[p]] = [m[p]!, m[c]!];
    for (let r = 0; r < 3; r++) {
      if (r === c) continue;
      const f = m[r]![c]! / m[c]![c]!;
      for (let k = c; k < 4; k++) m[r]![k]! -= f * m[c]![k]!;
    }
  }
  return [m[0]![3]! / m[0]![0]!, m[1]![3]! / m[1]![1]!, m[2]![3]! / m[2]![2]!];
}

/**
 * The target a validation pair implies when it is fill50k-style: the circle fitted to its outline image and the
 * colours its prompt names ("<fill> circle with <background> background"). Null when the prompt does not name two
 * known colours or no circle is found — then the pair is simply not scored.
 */
export function targetFromValidation(outline: RawImage, prompt: string): FidelityTarget | null {
  const p = parseFillPrompt(prompt);
  if (!p?.fill || !p.background) return null;
  // a 1–2 px ring downscaled to a tiny resolution is dim: threshold at half the brightest pixel, not at 128
  let max = 0;
  for (let i = 0; i < outline.data.length; i++) max = Math.max(max, outline.data[i]!);
  const c = max >= 32 ? fitCircle(outline, max / 2) : null;
  return c ? { ...c, fill: p.fill.rgb, background: p.background.rgb } : null;
}

export interface ConvergencePoint {
  step: number;
  iou: number;
}

/**
 * The step at which control fidelity jumps (the ControlNet paper's "sudden convergence"): the first evaluated step
 * whose IoU is at least halfway from the first evaluation to the best one. Null until the best is `minGain` above
 * the first (no jump yet).
 */
export function suddenConvergenceStep(points: ConvergencePoint[], minGain = 0.1): number | null {
  if (points.length < 2) return null;
  const first = points[0]!.iou;
  const best = Math.max(...points.map((p) => p.iou));
  if (best - first < minGain) return null;
  return points.find((p) => p.iou >= first + (best - first) / 2)!.step;
}
