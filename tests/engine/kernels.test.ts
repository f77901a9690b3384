/**
 * Our wasm kernel overrides against the cpu backend (the reference), on random shapes including stride 2,
 * explicit and asymmetric padding and odd sizes; plus finite differences and leak checks.
 */
import { before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { tf, SMALL_GEMM_FLOPS } from "../../lib/engine/index.js";
import { NARROW_GEMM_DIM } from "../../lib/engine/kernels/batch-matmul.js";
import { memoryInfo } from "../../lib/engine/memory.js";
import { initEngine } from "../../lib/engine/index.js";
import { assertClose, onCpu } from "../helpers.js";
import { assertConvCaseMatchesCpu, convCases as cases, type ConvCase } from "./conv-cases.js";

// wasm's own kernels: always on wasm, whichever engine the rest of the suite runs on
before(async () => {
  const info = await initEngine({ backend: "wasm" });
  assert.equal(info.backend, "wasm");
});

describe("conv2d gradients on wasm", () => {
  cases.forEach((c, i) => {
    test(`case ${i}: ${c.h}x${c.w} k${c.k} s${c.s} pad ${JSON.stringify(c.pad)}`, async () => {
      await assertConvCaseMatchesCpu(c, i);
    });
  });

  test("dW and dX agree with central finite differences", () => {
    const c: ConvCase = { n: 1, h: 5, w: 5, ci: 2, co: 2, k: [3, 3], s: [2, 2], pad: [[0, 0], [1, 1], [1, 1], [0, 0]] };
    const x = tf.randomNormal([1, 5, 5, 2], 0, 1, "float32", 3) as tf.Tensor4D;
    const w = tf.randomNormal([3, 3, 2, 2], 0, 1, "float32", 4) as tf.Tensor4D;
    const r = tf.randomNormal([1, 3, 3, 2], 0, 1, "float32", 5);
    const f = (a: tf.Tensor, b: tf.Tensor) => tf.sum(tf.mul(tf.conv2d(a as tf.Tensor4D, b as tf.Tensor4D, c.s, c.pad), r));
    const [dx, dw] = tf.grads(f)([x, w]);
    const eps = 1e-2;
    const check = (t: tf.Tensor4D, g: tf.Tensor, which: 0 | 1) => {
      const base = t.dataSync();
      const gv = g.dataSync();
      for (const idx of [0, 7, 13, base.length - 1]) {
        const plus = Float32Array.from(base); plus[idx]! += eps;
        const minus = Float32Array.from(base); minus[idx]! -= eps;
        const fp = tf.tidy(() => (which === 0 ? f(tf.tensor4d(plus, t.shape), w) : f(x, tf.tensor4d(plus, t.shape))).dataSync()[0]!);
        const fm = tf.tidy(() => (which === 0 ? f(tf.tensor4d(minus, t.shape), w) : f(x, tf.tensor4d(minus, t.shape))).dataSync()[0]!);
        const fd = (fp - fm) / (2 * eps);
        assert.ok(Math.abs(fd - gv[idx]!) <= 2e-3 * Math.max(1, Math.abs(fd)), `FD ${fd} vs grad ${gv[idx]} at ${idx}`);
      }
    };
    check(x, dx!, 0);
    check(w, dw!, 1);
    tf.dispose([x, w, r, dx!, dw!]);
  });
});

describe("BatchMatMul on wasm", () => {
  const shapes: [number, number][] = [[1, 1], [3, 3], [3, 1], [1, 3]];
  // small products take the one-call path of the override (the SIMD kernel: n = 6 runs its four-column block and
  // two single columns, n = 21 two eight-column blocks, a four and a single one), large ones the per-item GEMM loop,
  // large but narrow ones (n ≤ NARROW_GEMM_DIM, batch > 1) the SIMD kernel again, reading a transposed a in place
  const sizes: Array<[string, number, number, number]> = [["small", 7, 5, 6], ["small wide", 9, 13, 21], ["large", 48, 40, 70], ["large narrow", 96, 80, 20]];
  assert.ok(2 * 9 * 13 * 21 < SMALL_GEMM_FLOPS && 2 * 48 * 40 * 70 >= SMALL_GEMM_FLOPS && 2 * 96 * 80 * 20 >= SMALL_GEMM_FLOPS);
  assert.ok(Math.min(48, 40, 70) > NARROW_GEMM_DIM && 20 <= NARROW_GEMM_DIM);
  for (const [label, m, k, n] of sizes)
  for (const [ba, bb] of shapes)
    for (const ta of [false, true])
      for (const tb of [false, true]) {
        test(`${label}: batch ${ba}x${bb} transposeA=${ta} transposeB=${tb}`, async () => {
          const run = () => tf.tidy(() => {
            const a = tf.randomNormal(ta ? [ba, k, m] : [ba, m, k], 0, 1, "float32", 21);
            const b = tf.randomNormal(tb ? [bb, n, k] : [bb, k, n], 0, 1, "float32", 22);
            const y = tf.matMul(a as tf.Tensor3D, b as tf.Tensor3D, ta, tb);
            const r = tf.randomNormal(y.shape, 0, 1, "float32", 23);
            // tfjs-core's BatchMatMul gradient rejects broadcast batches (on every backend), so gradients are
            // compared where the batches match; models never differentiate a broadcast batch matmul.
            if (ba !== bb) return [y.dataSync()] as Float32Array[];
            const [da, db] = tf.grads((p: tf.Tensor, q: tf.Tensor) => tf.sum(tf.mul(tf.matMul(p as tf.Tensor3D, q as tf.Tensor3D, ta, tb), r)))([a, b]);
            return [y.dataSync(), da!.dataSync(), db!.dataSync()] as Float32Array[];
          });
          const before = tf.memory().numTensors;
          const got = run();
          assert.equal(tf.memory().numTensors, before, "tensor leak");
          const ref = await onCpu(run);
          assert.equal(got.length, ref.length);
          got.forEach((g, i) => assertClose(g, ref[i]!, 1e-5, ["y", "dA", "dB"][i]));
        });
      }
});

describe("Slice on wasm", () => {
  test("random slices of ranks 1-5 equal cpu bit for bit", async () => {
    let seed = 1;
    const rnd = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    for (let trial = 0; trial < 40; trial++) {
      const rank = 1 + (trial % 5);
      const shape = Array.from({ length: rank }, () => 1 + Math.floor(rnd() * 6));
      const begin = shape.map((s) => Math.floor(rnd() * s));
      const size = shape.map((s, i) => (rnd() < 0.3 ? -1 : 1 + Math.floor(rnd() * (s - begin[i]!))));
      const vals = Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, (_, i) => i * 1.5 - 7);
      const got = tf.tidy(() => tf.slice(tf.tensor(vals, shape), begin, size).dataSync());
      const ref = await onCpu(() => tf.tidy(() => tf.slice(tf.tensor(vals, shape), begin, size).dataSync()));
      assert.deepEqual(Array.from(got), Array.from(ref), `shape ${shape} begin ${begin} size ${size}`);
    }
    const ints = tf.tidy(() => tf.slice(tf.tensor2d([[1, 2, 3], [4, 5, 6]], [2, 3], "int32"), [1, 1], [1, 2]).arraySync());
    assert.deepEqual(ints, [[5, 6]]);
  });
});

describe("Identity on wasm", () => {
  test("a clone (what the tape saves for backprop) shares the buffer, outlives its source, and keeps its gradient", () => {
    const x = tf.tensor2d([[1, -2, 3], [4, 5, -6]]);
    // per-buffer bytes (lib/engine/memory.ts): tfjs' own numBytes counts every tensor object, shared or not
    const bytes = memoryInfo().liveBytes;
    const c = x.clone();
    assert.equal(memoryInfo().liveBytes, bytes, "the clone copied the buffer");
    x.dispose();
    assert.deepEqual(Array.from(c.dataSync()), [1, -2, 3, 4, 5, -6]);
    c.dispose();
    assert.equal(memoryInfo().liveBytes, bytes - 24, "the shared buffer was not freed with its last tensor");
    const strs = tf.tensor1d(["a", "bc"], "string");
    assert.deepEqual(strs.clone().arraySync(), ["a", "bc"]);
    // tfjs saves both x and its product for this gradient, each through Identity
    const g = tf.tidy(() => tf.grad((v: tf.Tensor) => tf.sum(tf.mul(tf.square(v), tf.exp(v))))(tf.tensor1d([0.5, -1])).dataSync());
    const want = [0.5, -1].map((v) => (2 * v + v * v) * Math.exp(v));
    g.forEach((v, i) => assert.ok(Math.abs(v - want[i]!) < 1e-6, `${v} vs ${want[i]}`));
  });
});

describe("other gradients the models need", () => {
  const cases: [string, (x: tf.Tensor) => tf.Tensor, number[]][] = [
    ["group norm pieces (moments, rsqrt)", (x) => {
      const g = tf.reshape(x, [2, 4, 4, 2, 3]);
      const { mean, variance } = tf.moments(g, [1, 2, 4], true);
      return tf.reshape(tf.mul(tf.sub(g, mean), tf.rsqrt(tf.add(variance, 1e-5))), x.shape);
    }, [2, 4, 4, 6]],
    ["softmax", (x) => tf.softmax(x), [3, 5, 7]],
    ["gelu (erf)", (x) => tf.mul(tf.mul(x, 0.5), tf.add(1, tf.erf(tf.div(x, Math.SQRT2)))), [4, 9]],
    ["silu", (x) => tf.mul(x, tf.sigmoid(x)), [4, 9]],
    ["nearest 2x upsampling (batch 1)", (x) => tf.image.resizeNearestNeighbor(x as tf.Tensor4D, [8, 6]), [1, 4, 3, 2]],
    ["pad", (x) => tf.pad(x, [[0, 0], [1, 2], [0, 1]]), [2, 3, 4]],
    ["concat", (x) => tf.concat([x, tf.mul(x, 2), tf.square(x)], 1), [2, 3, 2]],
    ["gather (embedding lookup)", (x) => tf.gather(x, tf.tensor1d([0, 2, 2, 1], "int32")), [3, 4]],
    ["layer norm pieces (mean, variance)", (x) => {
      const { mean, variance } = tf.moments(x, -1, true);
      return tf.div(tf.sub(x, mean), tf.sqrt(tf.add(variance, 1e-5)));
    }, [3, 8]],
    ["tanh/exp/log", (x) => tf.add(tf.tanh(x), tf.log(tf.add(tf.exp(x), 1))), [5, 3]],
    ["transpose+reshape (attention heads)", (x) => tf.reshape(tf.transpose(tf.reshape(x, [2, 3, 2, 2]), [0, 2, 1, 3]), [4, 6]), [2, 3, 4]],
  ];
  for (const [name, f, shape] of cases) {
    test(name, async () => {
      const run = () => tf.tidy(() => {
        const x = tf.randomNormal(shape, 0, 1, "float32", 31);
        const y = f(x);
        const r = tf.randomNormal(y.shape, 0, 1, "float32", 32);
        const g = tf.grad((a: tf.Tensor) => tf.sum(tf.mul(f(a), r)))(x);
        return [y.dataSync(), g.dataSync()] as Float32Array[];
      });
      const got = run();
      const ref = await onCpu(run);
      assertClose(got[0]!, ref[0]!, 1e-5, "value");
      assertClose(got[1]!, ref[1]!, 1e-4, "gradient");
    });
  }

  test("nearest upsampling gradient with batch > 1 equals the exact block sum (cpu's is wrong here)", () => {
    const dy = tf.randomNormal([2, 4, 4, 3], 0, 1, "float32", 7);
    const x = tf.zeros([2, 2, 2, 3]);
    const g = tf.grad((a: tf.Tensor) => tf.sum(tf.mul(tf.image.resizeNearestNeighbor(a as tf.Tensor4D, [4, 4]), dy)))(x);
    // Each input pixel receives the sum of its 2x2 output block.
    const exact = tf.tidy(() => tf.sum(tf.reshape(dy, [2, 2, 2, 2, 2, 3]), [2, 4]));
    assertClose(g.dataSync(), exact.dataSync(), 1e-6, "block sum");
    tf.dispose([dy, x, g, exact]);
  });
});
