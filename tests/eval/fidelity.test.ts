import { test } from "node:test";
import assert from "node:assert/strict";
import { controlFidelity, averageFidelity, fitCircle, discMask, iou, segmentFill, suddenConvergenceStep, targetFromValidation, type FidelityTarget } from "../../lib/eval/fidelity.js";
import { renderFilled, renderOutline, syntheticTruth, type CircleTruth } from "../../lib/data/index.js";
import type { RawImage } from "../../lib/data/types.js";

const SIZE = 64;

function target(t: CircleTruth): FidelityTarget {
  return { cx: t.cx, cy: t.cy, r: t.r, fill: t.fillColor.rgb, background: t.bgColor.rgb };
}

/** Exact overlap area of two equal-radius discs at distance d, over their union (the analytic IoU). */
function analyticIou(r: number, d: number): number {
  if (d >= 2 * r) return 0;
  const inter = 2 * r * r * Math.acos(d / (2 * r)) - (d / 2) * Math.sqrt(4 * r * r - d * d);
  return inter / (2 * Math.PI * r * r - inter);
}

test("a perfectly drawn circle scores IoU ≈ 1 and colour ≈ 1", () => {
  for (let i = 0; i < 8; i++) {
    const t = syntheticTruth(3, i, SIZE);
    const s = controlFidelity(renderFilled(t), target(t));
    assert.ok(s.iou > 0.93, `row ${i}: IoU ${s.iou}`); // anti-aliased edge pixels only
    assert.ok(s.colorScore > 0.97, `row ${i}: colour ${s.colorScore}`);
  }
});

test("a shifted circle scores the analytic IoU of two offset discs", () => {
  const t = { ...syntheticTruth(3, 1, SIZE), cx: 32, cy: 32, r: 12 };
  for (const shift of [4, 8, 12]) {
    const s = controlFidelity(renderFilled({ ...t, cx: t.cx + shift }), target(t));
    const want = analyticIou(12, shift);
    assert.ok(Math.abs(s.iou - want) < 0.05, `shift ${shift}: IoU ${s.iou.toFixed(3)}, analytic ${want.toFixed(3)}`);
    assert.ok(s.iou < 1 - shift / 30, `shift ${shift} must lower IoU (${s.iou})`);
  }
});

test("wrong colours give a low colour score but the shape still segments", () => {
  const t = { ...syntheticTruth(5, 0, SIZE), cx: 30, cy: 34, r: 14 };
  const red = { name: "red", css: "red", rgb: [255, 0, 0] as [number, number, number] };
  const blue = { name: "blue", css: "blue", rgb: [0, 0, 255] as [number, number, number] };
  const want = { ...target({ ...t, fillColor: red, bgColor: blue }) };
  const right = controlFidelity(renderFilled({ ...t, fillColor: red, bgColor: blue }), want);
  const swapped = controlFidelity(renderFilled({ ...t, fillColor: blue, bgColor: red }), want);
  const green = { name: "lime", css: "lime", rgb: [0, 255, 0] as [number, number, number] };
  const yellow = { name: "yellow", css: "yellow", rgb: [255, 255, 0] as [number, number, number] };
  const other = controlFidelity(renderFilled({ ...t, fillColor: green, bgColor: yellow }), want);
  assert.ok(right.colorScore > 0.97);
  assert.ok(swapped.colorScore < 0.5, `swapped colours: ${swapped.colorScore}`);
  assert.ok(other.colorScore < 0.7, `unrelated colours: ${other.colorScore}`);
  // swapped fill/background: the region that looks like the fill colour is the outside
  assert.ok(swapped.iou < 0.2, `swapped IoU ${swapped.iou}`);
});

test("random noise scores about chance", () => {
  let seed = 12345;
  const rand = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32);
  const items = [];
  for (let i = 0; i < 16; i++) {
    const t = syntheticTruth(9, i, SIZE);
    const data = new Uint8Array(SIZE * SIZE * 3);
    for (let k = 0; k < data.length; k++) data[k] = Math.floor(rand() * 256);
    const image: RawImage = { data, width: SIZE, height: SIZE, channels: 3 };
    items.push({ image, target: target(t) });
  }
  const s = averageFidelity(items);
  // chance: a random half of the pixels as "fill" → IoU ≈ |disc|/2 / (|disc| + (N−|disc|)/2) — well under 0.3 here
  const chance = items.reduce((a, it) => {
    const d = discMask(SIZE, SIZE, it.target).reduce((x, v) => x + v, 0) / (SIZE * SIZE);
    return a + d / 2 / (d + (1 - d) / 2);
  }, 0) / items.length;
  assert.ok(Math.abs(s.iou - chance) < 0.08, `noise IoU ${s.iou.toFixed(3)} vs chance ${chance.toFixed(3)}`);
  assert.ok(s.hitRate <= 0.1);
  assert.ok(s.colorScore < 0.85);
});

test("fitCircle recovers the circle from the outline image alone", () => {
  for (let i = 0; i < 10; i++) {
    const t = syntheticTruth(11, i, SIZE);
    const c = fitCircle(renderOutline(t));
    assert.ok(c, `row ${i}: no fit`);
    assert.ok(Math.hypot(c.cx - t.cx, c.cy - t.cy) < 0.5, `row ${i}: centre off by ${Math.hypot(c.cx - t.cx, c.cy - t.cy)}`);
    assert.ok(Math.abs(c.r - t.r) < 0.5, `row ${i}: r ${c.r} vs ${t.r}`);
  }
  assert.equal(fitCircle({ data: new Uint8Array(SIZE * SIZE * 3), width: SIZE, height: SIZE, channels: 3 }), null);
});

test("iou and segmentation basics", () => {
  assert.equal(iou(new Uint8Array([1, 1, 0, 0]), new Uint8Array([1, 0, 1, 0])), 1 / 3);
  assert.equal(iou(new Uint8Array(4), new Uint8Array(4)), 1);
  const t = { ...syntheticTruth(2, 0, 32), cx: 16, cy: 16, r: 8 };
  const m = segmentFill(renderFilled(t), { fill: t.fillColor.rgb, background: t.bgColor.rgb }, { mode: "prompt" });
  assert.ok(iou(m, discMask(32, 32, t)) > 0.9);
});

test("targetFromValidation: outline + fill50k prompt → circle and colours; anything else → null", () => {
  const t = syntheticTruth(11, 2, 64);
  const target = targetFromValidation(renderOutline(t), t.prompt)!;
  assert.ok(target, "a fill50k pair is scored");
  assert.deepEqual(target.fill, t.fillColor.rgb);
  assert.deepEqual(target.background, t.bgColor.rgb);
  assert.ok(Math.hypot(target.cx - t.cx, target.cy - t.cy) < 1 && Math.abs(target.r - t.r) < 1, `circle ${JSON.stringify(target)} vs ${t.cx},${t.cy},${t.r}`);
  assert.equal(targetFromValidation(renderOutline(t), "a photo of a cat"), null);
  assert.equal(targetFromValidation(renderOutline(t), "plaid circle with blue background"), null, "unknown colour");
  const black = { data: new Uint8Array(64 * 64 * 3), width: 64, height: 64, channels: 3 as const };
  assert.equal(targetFromValidation(black, t.prompt), null, "no outline");
});

test("suddenConvergenceStep: the first step halfway from the first score to the best; null without a jump", () => {
  const pts = [0.11, 0.12, 0.1, 0.13, 0.5, 0.78, 0.8, 0.79].map((iou, i) => ({ step: (i + 1) * 25, iou }));
  assert.equal(suddenConvergenceStep(pts), 125); // first ≥ 0.11 + (0.8 − 0.11)/2 = 0.455
  assert.equal(suddenConvergenceStep(pts.slice(0, 4)), null, "gains under 0.1 are not a jump");
  assert.equal(suddenConvergenceStep(pts.slice(0, 1)), null);
});

test('"shape" segmentation is colour-blind: swapped or unrelated colours still score the disc where it is', () => {
  const t = { ...syntheticTruth(5, 0, SIZE), cx: 30, cy: 34, r: 14 };
  const red = { name: "red", css: "red", rgb: [255, 0, 0] as [number, number, number] };
  const blue = { name: "blue", css: "blue", rgb: [0, 0, 255] as [number, number, number] };
  const want = target({ ...t, fillColor: red, bgColor: blue });
  const swapped = renderFilled({ ...t, fillColor: blue, bgColor: red });
  assert.ok(controlFidelity(swapped, want, { mode: "shape" }).iou > 0.93);
  assert.ok(controlFidelity(swapped, want).iou < 0.2, "the default labels regions by the prompt's colours");
  // a disc in the wrong place is still wrong
  const moved = renderFilled({ ...t, cx: t.cx + 20, fillColor: blue, bgColor: red });
  assert.ok(controlFidelity(moved, want, { mode: "shape" }).iou < 0.25);
});
