import { test } from "node:test";
import assert from "node:assert/strict";
import { roundHalfEven, npLinspace, npArange, npInterpIndex, torchLinspaceF32, solveSmall, f32 } from "../../lib/schedulers/numeric.js";

test("roundHalfEven rounds halves to the even neighbour like numpy", () => {
  assert.deepEqual([0.5, 1.5, 2.5, 3.5, 2.4, 2.6, 7].map(roundHalfEven), [0, 2, 2, 4, 2, 3, 7]);
});

test("npLinspace: endpoints exact, evenly spaced, one-element case", () => {
  const y = npLinspace(0, 999, 21);
  assert.equal(y.length, 21);
  assert.equal(y[0], 0);
  assert.equal(y[20], 999);
  assert.ok(Math.abs(y[1]! - 49.95) < 1e-12);
  assert.deepEqual(Array.from(npLinspace(3, 9, 1)), [3]);
});

test("npArange: numpy float arange length and values", () => {
  assert.deepEqual(Array.from(npArange(1000, 0, -250)), [1000, 750, 500, 250]);
  const a = npArange(1000, 0, -1000 / 3);
  assert.equal(a.length, 3);
  assert.ok(Math.abs(a[2]! - 333.3333333333333) < 1e-9);
});

test("npInterpIndex interpolates on the integer grid and clamps", () => {
  const fp = [0, 10, 20];
  assert.equal(npInterpIndex(0.25, fp), 2.5);
  assert.equal(npInterpIndex(2, fp), 20);
  assert.equal(npInterpIndex(5, fp), 20);
  assert.equal(npInterpIndex(-1, fp), 0);
});

test("torchLinspaceF32 gives float32 values with exact ends", () => {
  const y = torchLinspaceF32(0.00085 ** 0.5, 0.012 ** 0.5, 1000);
  assert.equal(y[0], f32(0.00085 ** 0.5));
  assert.equal(y[999], f32(0.012 ** 0.5));
  for (const v of y) assert.equal(v, f32(v));
  for (let i = 1; i < y.length; i++) assert.ok(y[i]! > y[i - 1]!);
});

test("solveSmall solves a 3x3 system", () => {
  const x = solveSmall([[2, 1, 0], [1, 3, 1], [0, 1, 4]], [3, 5, 5]);
  x.forEach((v) => assert.ok(Math.abs(v - 1) < 1e-12));
});
