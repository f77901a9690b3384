/**
 * `node --import tsx scripts/fidelity-ceiling.ts [--base data/tiny-sd] [--count 32]`
 *
 * The best control fidelity any ControlNet on a base can reach, as measured by the demo: the held-out fill50k
 * ground-truth images scored as they are (the evaluator's own ceiling) and after a round trip through the base's VAE
 * (what the decoder can draw at all). Prints both metrics (prompt-labelled IoU, colour-blind "shape" IoU) and the
 * per-image IoU by radius.
 */
import { scriptArgs } from "./_cli.js";
import { initEngine, tf } from "../lib/engine/index.js";
import { loadTinySd, reconstruct, DEFAULT_TINY_SD } from "../lib/demo/tiny-sd.js";
import { heldOutSet } from "../lib/demo/run.js";
import { renderFilled, toFloat } from "../lib/data/index.js";
import { averageFidelity, type FidelitySummary } from "../lib/eval/fidelity.js";
import type { RawImage } from "../lib/data/types.js";

const values = scriptArgs("usage: node --import tsx scripts/fidelity-ceiling.ts [--base data/tiny-sd] [--count 32]\n" +
  "The best control fidelity any ControlNet on a base can reach: held-out fill50k targets scored as they are and after the base's VAE.",
  { base: { type: "string" }, count: { type: "string" } });
await initEngine();
const sd = loadTinySd(values.base ?? DEFAULT_TINY_SD);
const set = heldOutSet(Number(values.count ?? 32), sd.resolution);
const r = sd.resolution;

const score = (images: RawImage[], mode: "cluster" | "shape"): FidelitySummary =>
  averageFidelity(images.map((image, i) => ({ image, target: set[i]!.target })), { mode });
const line = (label: string, images: RawImage[]) => {
  const a = score(images, "cluster");
  const b = score(images, "shape");
  console.log(`${label}: IoU ${a.iou.toFixed(3)} (shape ${b.iou.toFixed(3)}), colour ${a.colorScore.toFixed(3)}, circles hit ${(100 * a.hitRate).toFixed(0)}%`);
  return a;
};

const truths = set.map((s) => renderFilled(s.truth));
line(`ground truth (${set.length} held-out images, ${r} px)`, truths);
const pixels = new Float32Array(truths.length * r * r * 3);
truths.forEach((t, i) => toFloat(t, "signed", pixels, i * r * r * 3));
const px = tf.tensor4d(pixels, [truths.length, r, r, 3]);
const rec = reconstruct(sd, px);
px.dispose();
const a = line("through the VAE (encode → decode)", rec);
const rows = a.scores.map((s, i) => ({ r: set[i]!.truth.r, iou: s.iou, prompt: set[i]!.truth.prompt })).sort((x, y) => x.r - y.r);
console.log("per image, by radius (px): " + rows.map((x) => `${x.r.toFixed(1)}→${x.iou.toFixed(2)}`).join("  "));
const lost = rows.filter((x) => x.iou < 0.2);
if (lost.length) console.log(`lost by the VAE (IoU < 0.2): ${lost.map((x) => `"${x.prompt}" r ${x.r.toFixed(1)}`).join("; ")}`);
