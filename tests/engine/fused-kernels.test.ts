/**
 * The fused kernels (native/fused: our TensorFlow ops, lib/engine/native/fused.ts). Attention: forward and all three
 * gradients equal attention composed from TensorFlow's own ops (the batched products and softmax the models use
 * elsewhere) on shapes that reach each code path — head widths below, at and above a vector, the run-time-width
 * path above 64, keys not a multiple of 8, cross-attention, one head split across threads. GroupNorm (+ SiLU):
 * output and the gradients of x, weight and bias equal the composed GroupNorm of lib/models. AdamW: the fused update
 * equals the composed one bit for bit. Runs when the native
 * engine is installed (npm install builds the addon; CI requires it), whatever engine the pass runs; wasm, which has
 * no fused kernel, is checked in a child process.
 */
import { before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { describeEngine, fusedAttention, fusedGeglu, fusedNorms, hasFusedAttention, initEngine, tf, useFusedKernels, type EngineInfo } from "../../lib/engine/index.js";
import { GroupNorm, LayerNorm, gelu, silu } from "../../lib/models/layers.js";
import { AdamW, clipGradNorm } from "../../lib/training/optim/adamw.js";
import { FUSED_ATTENTION, FUSED_GEGLU, FUSED_GROUP_NORM, FUSED_LAYER_NORM, FUSED_SILU } from "../../lib/engine/fused.js";
import { nativeMissingReason } from "../../lib/engine/native/load.js";
import { addsAsRows } from "../../lib/engine/native/fused.js";
import { GEGLU, mergeHeads, scaledDotProductAttention, splitHeads } from "../../lib/models/attention.js";
import { lastLineOfChild } from "./child-process.js";

const missing = nativeMissingReason();
let info: EngineInfo;

/** The copy of the kernels the addon picks on this CPU (native/fused/fused.cc), from /proc/cpuinfo's flags. */
function expectedIsa(): "AVX-512VL" | "AVX2 + FMA" | "SSE2" {
  let cpuinfo = "";
  try {
    cpuinfo = fs.readFileSync("/proc/cpuinfo", "utf8");
  } catch { /* not Linux: no native engine either */ }
  const flags = new Set((/^flags\s*:\s*(.*)$/m.exec(cpuinfo)?.[1] ?? "").split(/\s+/));
  const avx2 = flags.has("avx2") && flags.has("fma");
  const avx512 = ["avx512f", "avx512vl", "avx512dq", "avx512bw"].every((f) => flags.has(f));
  return avx2 && avx512 && process.env.CONTROLNET_TS_FUSED_AVX512 !== "0" ? "AVX-512VL" : avx2 ? "AVX2 + FMA" : "SSE2";
}

/** softmax(q·kᵀ·scale)·v from TensorFlow's ops, and the weighted sum the gradients are taken of. */
function composed(q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, scale: number): tf.Tensor {
  return tf.matMul(tf.softmax(tf.matMul(tf.mul(q, scale), k, false, true)), v);
}

/** Largest difference over the largest magnitude. Both sides round in float32 over sums of up to 600 terms, in
 * different orders: 1e-5 is far above their ~1e-6 disagreement and far below any wrong term (≥1e-2). */
const TOLERANCE = 1e-5;

/** How many times `fn` runs the tfjs kernel `kernelName` on the tensorflow backend. */
/**
 * A norm layer with random affine parameters: its fused kernel runs once per forward, and its output and the gradients
 * of x, weight and bias equal those of the composed ops (the fused kernels turned off) within TOLERANCE.
 */
function assertNormMatchesComposed(norm: GroupNorm | LayerNorm, forward: (m: GroupNorm | LayerNorm, x: tf.Tensor) => tf.Tensor, kernel: string, shape: number[]): void {
  tf.tidy(() => {
    const c = shape[shape.length - 1]!;
    norm.initialize(1);
    const [weight, bias] = [norm.weight.variable!, norm.bias.variable!];
    weight.assign(tf.randomNormal([c], 1, 0.3, "float32", 8));
    bias.assign(tf.randomNormal([c], 0, 0.3, "float32", 9));
    const x = tf.add(tf.mul(tf.randomNormal(shape, 0, 1, "float32", 10), 2), 0.5);
    const w = tf.randomNormal(shape, 0, 1, "float32", 11);
    const loss = (a: tf.Tensor) => tf.sum(tf.mul(forward(norm, a), w)) as tf.Scalar;
    const run = () => {
      const { grads } = tf.variableGrads(() => loss(x), [weight, bias]);
      return [forward(norm, x), tf.grad(loss)(x), grads[weight.name]!, grads[bias.name]!];
    };
    assert.equal(callsOf(kernel, () => forward(norm, x)), 1, "one fused kernel");
    const fused = run();
    useFusedKernels(false);
    let composed: tf.Tensor[];
    try {
      composed = run();
    } finally {
      useFusedKernels(true);
    }
    ["y", "dx", "dweight", "dbias"].forEach((name, i) => {
      const e = relErr(fused[i]!, composed[i]!);
      assert.ok(e < TOLERANCE, `${name}: relative error ${e.toExponential(2)}`);
    });
    norm.dispose();
  });
}

function callsOf(kernelName: string, fn: () => unknown): number {
  let calls = 0;
  const saved = tf.getKernel(kernelName, "tensorflow")!;
  tf.unregisterKernel(kernelName, "tensorflow");
  tf.registerKernel({ ...saved, kernelFunc: ((args: Parameters<typeof saved.kernelFunc>[0]) => (calls++, saved.kernelFunc(args))) as typeof saved.kernelFunc });
  try {
    fn();
  } finally {
    tf.unregisterKernel(kernelName, "tensorflow");
    tf.registerKernel(saved);
  }
  return calls;
}

function relErr(a: tf.Tensor, b: tf.Tensor): number {
  return tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0]! / tf.max(tf.abs(b)).dataSync()[0]!);
}

describe("fused kernels on the native engine", { skip: missing ?? false }, () => {
  before(async () => {
    info = await initEngine({ backend: "node" });
  });

  test("the engine reports the fused kernel", () => {
    assert.equal(hasFusedAttention(), true, describeEngine(info));
    const isa = expectedIsa().replace("+", "\\+");
    assert.match(describeEngine(info), new RegExp(`fused kernels: attention, GroupNorm\\+SiLU, SiLU, LayerNorm, GEGLU, linear layers, AdamW, gradient norms \\(TensorFlow ops of ours; ${isa}, \\d+ thread`));
  });

  // this CPU runs the AVX-512VL copy: the AVX2 one, which CPUs without AVX-512 run, passes this file's checks too
  test("the AVX2 copy of the kernels passes the same checks (CONTROLNET_TS_FUSED_AVX512=0)", { skip: expectedIsa() !== "AVX-512VL" && "this CPU runs the AVX2 (or SSE2) copy: the tests above checked it" }, () => {
    // (a test run of its own: without NODE_TEST_CONTEXT, which makes a child report to this runner instead)
    const { NODE_TEST_CONTEXT: _, ...env } = process.env;
    const r = spawnSync(process.execPath, ["--import", "tsx", "--test", "--test-reporter=tap", import.meta.filename], {
      cwd: path.resolve(import.meta.dirname, "../.."), encoding: "utf8", env: { ...env, CONTROLNET_TS_FUSED_AVX512: "0" },
    });
    assert.equal(r.status, 0, `${r.stdout.slice(-4000)}\n${r.stderr.slice(-2000)}`);
    assert.match(r.stdout, /^# pass [1-9]\d*$/m);
    assert.match(r.stdout, /^# fail 0$/m);
  });

  const shapes: [number, number, number, number][] = [
    [2, 5, 7, 3], // fewer keys and channels than a vector
    [3, 17, 77, 8], // cross-attention to 77 text tokens
    [16, 256, 256, 16], // bench-mid's second level (threads)
    [2, 33, 40, 40], // SD1.5's head width
    [1, 9, 11, 72], // above 64 channels: the run-time-width path
    [2, 64, 64, 160], // SD1.5's widest heads
    [1, 37, 300, 80], // SD1.5's second level: 5 row-tiles of 16 floats (10 of 8), 8-row blocks and a last one of 5
    [2, 21, 19, 64], // 4 (8) vectors a row, fewer keys than a vector pair
    [1, 600, 300, 8], // one head on several threads: query rows split, dk/dv summed
    [2, 41, 150, 5], // a narrow head over ≥ 128 keys (the AVX-512 copy's along-keys products), a last block of 1 row
  ];
  for (const [bh, n, m, d] of shapes) {
    test(`[${bh}, ${n}, ${d}] attending to ${m} keys: output and dq, dk, dv match TensorFlow's ops`, () => {
      tf.tidy(() => {
        const q = tf.randomNormal([bh, n, d], 0, 1.5, "float32", 1), k = tf.randomNormal([bh, m, d], 0, 1.5, "float32", 2);
        const v = tf.randomNormal([bh, m, d], 0, 1, "float32", 3), w = tf.randomNormal([bh, n, d], 0, 1, "float32", 4);
        const scale = 1 / Math.sqrt(d);
        const fused = fusedAttention(q as tf.Tensor3D, k as tf.Tensor3D, v as tf.Tensor3D, scale)!;
        assert.ok(fused, "the kernel is registered");
        assert.deepEqual(fused.shape, [bh, n, d]);
        assert.ok(relErr(fused, composed(q, k, v, scale)) < TOLERANCE);
        const loss = (att: (a: tf.Tensor, b: tf.Tensor, c: tf.Tensor) => tf.Tensor) => (a: tf.Tensor, b: tf.Tensor, c: tf.Tensor) => tf.sum(tf.mul(att(a, b, c), w));
        const got = tf.grads(loss((a, b, c) => fusedAttention(a as tf.Tensor3D, b as tf.Tensor3D, c as tf.Tensor3D, scale)!))([q, k, v]);
        const want = tf.grads(loss((a, b, c) => composed(a, b, c, scale)))([q, k, v]);
        ["dq", "dk", "dv"].forEach((name, i) => {
          const e = relErr(got[i]!, want[i]!);
          assert.ok(e < TOLERANCE, `${name}: relative error ${e.toExponential(2)}`);
        });
      });
    });
  }

  // Heads interleaved in the channels ([B, N, heads·d], as the projections produce them) equal splitting them first.
  const multi: [number, number, number, number, number][] = [
    [2, 17, 77, 4, 8], // cross-attention to 77 text tokens
    [1, 600, 300, 2, 8], // fewer heads than threads: query rows split, dk/dv summed per head
    [2, 33, 40, 8, 40], // SD1.5's head width
  ];
  for (const [b, n, m, heads, d] of multi) {
    test(`[${b}, ${n}, ${heads}·${d}] in ${heads} interleaved heads attending to ${m} keys: output and gradients equal the split heads'`, () => {
      tf.tidy(() => {
        const c = heads * d;
        const q = tf.randomNormal([b, n, c], 0, 1.5, "float32", 1), k = tf.randomNormal([b, m, c], 0, 1.5, "float32", 2);
        const v = tf.randomNormal([b, m, c], 0, 1, "float32", 3), w = tf.randomNormal([b, n, c], 0, 1, "float32", 4);
        const scale = 1 / Math.sqrt(d);
        const split = (a: tf.Tensor, bb: tf.Tensor, cc: tf.Tensor) =>
          mergeHeads(composed(splitHeads(a, heads), splitHeads(bb, heads), splitHeads(cc, heads), scale), heads);
        const fused = (a: tf.Tensor, bb: tf.Tensor, cc: tf.Tensor) => fusedAttention(a as tf.Tensor3D, bb as tf.Tensor3D, cc as tf.Tensor3D, scale, heads)!;
        assert.deepEqual(fused(q, k, v).shape, [b, n, c]);
        assert.ok(relErr(fused(q, k, v), split(q, k, v)) < TOLERANCE);
        const loss = (att: (a: tf.Tensor, bb: tf.Tensor, cc: tf.Tensor) => tf.Tensor) => (a: tf.Tensor, bb: tf.Tensor, cc: tf.Tensor) => tf.sum(tf.mul(att(a, bb, cc), w));
        const got = tf.grads(loss(fused))([q, k, v]);
        const want = tf.grads(loss(split))([q, k, v]);
        ["dq", "dk", "dv"].forEach((name, i) => {
          const e = relErr(got[i]!, want[i]!);
          assert.ok(e < TOLERANCE, `${name}: relative error ${e.toExponential(2)}`);
        });
      });
    });
  }

  // LayerNorm: channels a whole number of vectors or not, unthreaded and threaded (from 256K elements), SD1.5's text width
  for (const shape of [[3, 10, 20], [4, 1024, 32], [2, 4096, 64], [1, 77, 768]]) {
    test(`LayerNorm of [${shape}]: output and dx, dweight, dbias match the composed ops`, () => {
      const c = shape[shape.length - 1]!;
      assertNormMatchesComposed(new LayerNorm(c, 1e-5), (m, a) => (m as LayerNorm).forward(a), FUSED_LAYER_NORM, shape);
    });
  }

  // sizes below a vector, and of 16 + 8 + 1 (the widest vector, an 8-lane one, a single element with 16 lanes)
  for (const shape of [[7], [25], [3, 5, 11], [4, 64, 64, 16], [2, 128, 128, 32]]) {
    test(`SiLU of [${shape}]: output and dx match x·sigmoid(x) from TensorFlow's ops${shape.length === 4 ? " (threaded)" : ""}`, () => {
      tf.tidy(() => {
        const x = tf.mul(tf.randomNormal(shape, 0, 1, "float32", 12), 4), w = tf.randomNormal(shape, 0, 1, "float32", 13);
        const composedSilu = (a: tf.Tensor) => tf.mul(a, tf.sigmoid(a));
        assert.ok(relErr(silu(x), composedSilu(x)) < TOLERANCE);
        assert.equal(callsOf(FUSED_SILU, () => silu(x)), 1, "the models' silu takes the kernel");
        const got = tf.grad((a: tf.Tensor) => tf.sum(tf.mul(silu(a), w)))(x);
        const want = tf.grad((a: tf.Tensor) => tf.sum(tf.mul(composedSilu(a), w)))(x);
        const e = relErr(got, want);
        assert.ok(e < TOLERANCE, `dx: relative error ${e.toExponential(2)}`);
      });
    });
  }

  // GEGLU: features a whole number of vectors or not (25 = 16 + 8 + 1: every loop), threaded (bench-mid's 4×1024
  // tokens × 2·128)
  for (const shape of [[3, 5, 22], [2, 3, 50], [2, 7, 64], [4, 1024, 256]]) {
    test(`GEGLU of [${shape}]: output and dh match a·gelu(g) from TensorFlow's ops (split, erf)`, () => {
      tf.tidy(() => {
        const f = shape[shape.length - 1]! / 2;
        const h = tf.mul(tf.randomNormal(shape, 0, 1, "float32", 14), 3); // gates out to ±12: both tails of erf
        const w = tf.randomNormal([...shape.slice(0, -1), f], 0, 1, "float32", 15);
        const composedGeglu = (a: tf.Tensor) => {
          const [hidden, gate] = tf.split(a, 2, -1);
          return tf.mul(hidden!, gelu(gate!));
        };
        assert.ok(relErr(fusedGeglu(h)!, composedGeglu(h)) < TOLERANCE);
        const module = new GEGLU(8, f);
        module.initialize(3);
        assert.equal(callsOf(FUSED_GEGLU, () => module.forward(tf.ones([2, 3, 8]))), 1, "the models' GEGLU takes the kernel");
        const got = tf.grad((a: tf.Tensor) => tf.sum(tf.mul(fusedGeglu(a)!, w)))(h);
        const want = tf.grad((a: tf.Tensor) => tf.sum(tf.mul(composedGeglu(a), w)))(h);
        const e = relErr(got, want);
        assert.ok(e < TOLERANCE, `dh: relative error ${e.toExponential(2)}`);
      });
    });
  }

  test("Add: same-shape and per-batch / shared row adds below 256K elements (our op) equal TensorFlow's a − (−b) bit for bit", () => {
    assert.ok(addsAsRows([4, 32, 32, 8], [4, 32, 32, 8]) && addsAsRows([4, 32, 32, 8], [4, 1, 1, 8]) && addsAsRows([4, 9, 8], [1, 1, 8]) && addsAsRows([4, 9, 8], [8]));
    assert.ok(!addsAsRows([4, 9, 8], [4, 9, 1]) && !addsAsRows([4, 9, 8], [2, 1, 8]) && !addsAsRows([8], [1, 8]));
    tf.tidy(() => {
      const cases: [number[], number[]][] = [[[4, 1024, 32], [4, 1024, 32]], [[4, 32, 32, 32], [4, 1, 1, 32]], [[3, 5, 7, 11], [1, 1, 1, 11]], [[3, 5, 11], [11]], [[2, 3], [2, 3]]];
      for (const [sa, sb] of cases) {
        const a = tf.randomNormal(sa, 0, 10, "float32", 16), b = tf.randomNormal(sb, 0, 10, "float32", 17);
        const want = tf.sub(a, tf.neg(b)).dataSync();
        for (const got of [tf.add(a, b), tf.add(b, a)]) {
          assert.deepEqual(got.shape, sa);
          assert.ok(got.dataSync().every((v, i) => v === want[i]), `[${sa}] + [${sb}]`);
        }
      }
      const [ga, gb] = tf.grads((p: tf.Tensor, q: tf.Tensor) => tf.sum(tf.mul(tf.add(p, q), p)))([tf.ones([2, 3, 3, 4]), tf.ones([2, 1, 1, 4])]);
      assert.deepEqual(Array.from(ga!.dataSync()), new Array(72).fill(3)); // 2p + q
      assert.deepEqual(Array.from(gb!.dataSync()), new Array(8).fill(9)); // Σ p over the 3×3 positions
    });
  });

  const norms: [number[], number, boolean][] = [
    [[4, 32, 32, 32], 32, true], // bench-mid's first level: one channel per group
    [[2, 16, 16, 64], 32, false],
    [[1, 8, 8, 96], 32, true], // three channels per group: no whole vector
    [[3, 10, 48], 8, false], // tokens [B, N, C]
    [[1, 64, 64, 320], 32, true], // SD1.5's first level, one batch item: groups split across threads
  ];
  for (const [shape, groups, silu] of norms) {
    test(`GroupNorm${silu ? " + SiLU" : ""} of [${shape}] in ${groups} groups: output and dx, dweight, dbias match the composed ops`, () => {
      const c = shape[shape.length - 1]!;
      assertNormMatchesComposed(new GroupNorm(groups, c, 1e-5), (m, a) => (m as GroupNorm).forward(a, { silu }), FUSED_GROUP_NORM, shape);
    });
  }

  test("AdamW: the fused update equals the composed float32 operations bit for bit, over steps, groups and chunks", () => {
    // sizes: scalars and vectors, a 3×3 conv, one tensor above a kernel group (2^22 elements) and its 64K chunks
    const shapes = [[1], [7], [32], [3, 3, 16, 16], [5, 1 << 20], [300, 257]];
    const run = (fused: boolean) => {
      const was = useFusedKernels(fused);
      try {
        const params = shapes.map((s, i) => tf.variable(tf.randomNormal(s, 0, 1, "float32", 20 + i), true, `p${i}`));
        const opt = new AdamW(params.map((p) => [p.name, p] as [string, tf.Variable]), { lr: 3e-3, weightDecay: 1e-2 });
        for (let step = 0; step < 3; step++) {
          const grads = new Map(params.map((p, i) => [p.name, tf.randomNormal(p.shape, 0, 0.1 * (step + 1), "float32", 40 + 7 * step + i)]));
          assert.equal(callsOf("ControlnetTsFusedAdamW", () => opt.step(grads)) > 0, fused);
        }
        const state = opt.stateDict();
        const out = { params: params.map((p) => p.dataSync().slice()), state: [...state.values()].map((t) => Array.from(t.data as ArrayLike<number>).slice(0, 50_000)) };
        opt.dispose();
        tf.dispose(params);
        return out;
      } finally {
        useFusedKernels(was);
      }
    };
    const fused = run(true);
    const composed = run(false);
    fused.params.forEach((p, i) => assert.ok(p.every((x, j) => Object.is(x, composed.params[i]![j])), `parameter ${i} differs`));
    fused.state.forEach((s, i) => assert.deepEqual(s, composed.state[i], `state entry ${i} differs`));
  });

  test("gradient norms: one kernel gives each tensor's 2-norm, and clipGradNorm's total equals the composed one", () => {
    const grads = [[3], [1000], [64, 33, 9], [1 << 19]].map((s, i) => tf.randomNormal(s, 0, 1, "float32", 60 + i));
    const norms = fusedNorms(grads)!;
    const composed = grads.map((g) => tf.tidy(() => tf.norm(g).dataSync()[0]!));
    Array.from(norms.dataSync()).forEach((n, i) => assert.ok(Math.abs(n - composed[i]!) <= 2e-6 * composed[i]!, `tensor ${i}: ${n} vs ${composed[i]}`));
    const clip = (fused: boolean) => {
      const was = useFusedKernels(fused);
      try {
        const m = new Map(grads.map((g, i) => [`g${i}`, g.clone()]));
        const total = clipGradNorm(m, 1);
        const scaled = [...m.values()].map((g) => g.dataSync().slice(0, 100));
        tf.dispose([...m.values()]);
        return { total, scaled };
      } finally {
        useFusedKernels(was);
      }
    };
    const a = clip(true), b = clip(false);
    assert.ok(Math.abs(a.total - b.total) <= 2e-6 * b.total, `total norm ${a.total} vs ${b.total}`);
    a.scaled.forEach((g, i) => g.forEach((x, j) => assert.ok(Math.abs(x - b.scaled[i]![j]!) <= 1e-6 * Math.abs(b.scaled[i]![j]!) + 1e-12)));
    tf.dispose([norms, ...grads]);
  });

  test("the models' attention takes the fused kernel unless there is a mask (then TensorFlow's ops)", () => {
    tf.tidy(() => {
      const q = tf.randomNormal([2, 12, 8], 0, 1, "float32", 5) as tf.Tensor3D, k = tf.randomNormal([2, 12, 8], 0, 1, "float32", 6) as tf.Tensor3D;
      const v = tf.randomNormal([2, 12, 8], 0, 1, "float32", 7) as tf.Tensor3D;
      assert.equal(callsOf(FUSED_ATTENTION, () => scaledDotProductAttention(q, k, v, 0.3, { chunkSize: 4 })), 1, "no mask: fused, chunking unneeded");
      assert.equal(callsOf("Transpose", () => scaledDotProductAttention(q, k, v, 0.3, { heads: 2 })), 0, "heads stay interleaved: no split/merge transposes");
      const causal = tf.linalg.bandPart(tf.ones([12, 12]), -1, 0).sub(1).mul(1e9);
      assert.equal(callsOf(FUSED_ATTENTION, () => scaledDotProductAttention(q, k, v, 0.3, { mask: causal })), 0, "a mask: composed ops");
    });
  });

  test("mis-shaped inputs fail with TensorFlow's error naming the op and the defect", () => {
    const q = tf.zeros([2, 4, 8]), k = tf.zeros([2, 5, 8]), v = tf.zeros([2, 6, 8]);
    assert.throws(() => fusedAttention(q as tf.Tensor3D, k as tf.Tensor3D, v as tf.Tensor3D, 1), /ControlnetTsAttention: q \[B,N,C\], k and v \[B,M,C\] disagree/);
    tf.dispose([q, k, v]);
  });

  test("no tensor is left behind by a forward and backward pass", () => {
    const q = tf.randomNormal([2, 16, 8]) as tf.Tensor3D, k = tf.randomNormal([2, 16, 8]) as tf.Tensor3D, v = tf.randomNormal([2, 16, 8]) as tf.Tensor3D;
    const before = tf.memory().numTensors;
    const g = tf.grads((a: tf.Tensor, b: tf.Tensor, c: tf.Tensor) => tf.sum(fusedAttention(a as tf.Tensor3D, b as tf.Tensor3D, c as tf.Tensor3D, 0.35)!))([q, k, v]);
    assert.equal(tf.memory().numTensors, before + 3, "only the three gradients remain");
    tf.dispose([...g, q, k, v]);
  });
});

test("wasm has no fused kernel: fusedAttention returns null and the models compose attention from tfjs ops", () => {
  const line = lastLineOfChild(
    `import { initEngine, fusedAttention, hasFusedAttention, tf } from ENGINE;
     await initEngine({ backend: "wasm", threads: 1 });
     const q = tf.ones([1, 4, 8]);
     console.log(JSON.stringify({ has: hasFusedAttention(), fused: fusedAttention(q, q, q, 1) }));`,
    process.env);
  assert.deepEqual(JSON.parse(line), { has: false, fused: null });
});
