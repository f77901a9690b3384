import { test } from "node:test";
import assert from "node:assert/strict";
import { tf, measurePeak, memoryInfo } from "../../lib/engine/index.js";
import { AdamW, AdamW8bit, OffloadedAdamW, clipGradNorm, createOptimizer, type Optimizer } from "../../lib/training/optim/index.js";
import { testEngine, maxAbsDiff, relErr } from "../helpers.js";
import { Rng } from "../../lib/training/rng.js";

await testEngine();

function randn(rng: Rng, n: number, scale = 1): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = rng.normal() * scale;
  return a;
}

function makeParams(rng: Rng, shapes: Record<string, number[]>): Map<string, tf.Variable> {
  const out = new Map<string, tf.Variable>();
  for (const [name, shape] of Object.entries(shapes)) {
    const n = shape.reduce((a, b) => a * b, 1);
    const init = tf.tensor(randn(rng, n), shape);
    out.set(name, tf.variable(init, true, `${name}_${Math.random()}`));
    init.dispose(); // the variable keeps its own reference to the buffer
  }
  return out;
}

function cloneParams(ps: Map<string, tf.Variable>): Map<string, tf.Variable> {
  const out = new Map<string, tf.Variable>();
  for (const [k, v] of ps) {
    const init = tf.tensor(v.dataSync(), v.shape); // a real copy: a clone would share the buffer
    out.set(k, tf.variable(init, true, `${k}_${Math.random()}`));
    init.dispose();
  }
  return out;
}

function gradsFrom(data: Map<string, Float32Array>, ps: Map<string, tf.Variable>): Map<string, tf.Tensor> {
  const out = new Map<string, tf.Tensor>();
  for (const [k, d] of data) out.set(k, tf.tensor(d, ps.get(k)!.shape));
  return out;
}

function disposeAll(ps: Map<string, tf.Variable>): void {
  for (const v of ps.values()) v.dispose();
}

/** The textbook AdamW (Loshchilov & Hutter, torch's documented algorithm) in float64, written independently. */
function referenceAdamW(p: number[], gs: number[][], lr: number, b1 = 0.9, b2 = 0.999, eps = 1e-8, wd = 1e-2): number[] {
  const m = p.map(() => 0);
  const v = p.map(() => 0);
  const x = [...p];
  gs.forEach((g, s) => {
    const t = s + 1;
    for (let i = 0; i < x.length; i++) {
      x[i] = x[i]! - lr * wd * x[i]!;
      m[i] = b1 * m[i]! + (1 - b1) * g[i]!;
      v[i] = b2 * v[i]! + (1 - b2) * g[i]! * g[i]!;
      const mh = m[i]! / (1 - b1 ** t);
      const vh = v[i]! / (1 - b2 ** t);
      x[i] = x[i]! - (lr * mh) / (Math.sqrt(vh) + eps);
    }
  });
  return x;
}

test("AdamW first step = p(1 - lr*wd) - lr*g/(|g|+eps) (bias-corrected moments equal g, g^2)", () => {
  const p = tf.variable(tf.tensor1d([1, -2, 0.5, 3]));
  const g = [0.3, -0.01, 2, 1e-9];
  const opt = new AdamW([["w", p]], { lr: 0.1 });
  opt.step(new Map([["w", tf.tensor1d(g)]]));
  const got = p.dataSync();
  const p0 = [1, -2, 0.5, 3];
  for (let i = 0; i < 4; i++) {
    // the tiny gradient shows eps at work: |g| = 1e-9 is comparable to eps = 1e-8
    const want = p0[i]! * (1 - 0.1 * 0.01) - (0.1 * g[i]!) / (Math.abs(g[i]!) + 1e-8);
    assert.ok(Math.abs(got[i]! - want) <= 1e-6 * Math.max(1, Math.abs(want)), `elem ${i}: ${got[i]} vs ${want}`);
  }
  assert.equal(opt.stepCount, 1);
  opt.dispose();
  p.dispose();
});

test("AdamW matches the float64 reference over 8 steps; grads freed as applied", () => {
  const rng = new Rng(7);
  const ps = makeParams(rng, { a: [3, 5], b: [7] });
  const p0 = new Map([...ps].map(([k, v]) => [k, Array.from(v.dataSync())]));
  const steps: Map<string, Float32Array>[] = [];
  for (let s = 0; s < 8; s++) steps.push(new Map([["a", randn(rng, 15)], ["b", randn(rng, 7, 0.1)]]));
  const opt = new AdamW(ps, { lr: 3e-3, weightDecay: 0.05 });
  const before = tf.memory().numTensors;
  for (const gd of steps) {
    const grads = gradsFrom(gd, ps);
    opt.step(grads);
    assert.equal(grads.size, 0, "applied gradients are removed from the map");
  }
  // 2 moments per parameter are the only new tensors; every gradient was disposed
  assert.equal(tf.memory().numTensors - before, 4);
  for (const k of ["a", "b"]) {
    const want = referenceAdamW(p0.get(k)!, steps.map((s) => Array.from(s.get(k)!)), 3e-3, 0.9, 0.999, 1e-8, 0.05);
    const e = relErr(ps.get(k)!.dataSync(), want);
    assert.ok(e < 1e-6, `${k}: rel err ${e}`);
  }
  opt.dispose();
  disposeAll(ps);
});

test("clipGradNorm = torch clip_grad_norm_: total 2-norm, coef max/(norm+1e-6) only when < 1", () => {
  const grads = new Map<string, tf.Tensor>([["a", tf.tensor1d([3, 4])], ["b", tf.tensor2d([[12]], [1, 1])]]);
  const norm = clipGradNorm(grads, 1.0);
  assert.ok(Math.abs(norm - 13) < 1e-5);
  const coef = 1 / (13 + 1e-6);
  assert.ok(maxAbsDiff(grads.get("a")!.dataSync(), [3 * coef, 4 * coef]) < 1e-6);
  assert.ok(maxAbsDiff(grads.get("b")!.dataSync(), [12 * coef]) < 1e-6);
  // below the limit: untouched (same tensor objects)
  const a = grads.get("a")!;
  const norm2 = clipGradNorm(grads, 5);
  assert.ok(Math.abs(norm2 - 1) < 1e-5);
  assert.equal(grads.get("a"), a);
  for (const g of grads.values()) g.dispose();
});

test("set_grads_to_none analogue: gradients freed as applied lower the peak of the next iteration", async () => {
  // torch's zero_grad() without set_to_none keeps every .grad buffer allocated (zero-filled) through the next
  // forward/backward; set_to_none frees them. Here: a tiny MLP trained for 3 iterations (the last 2 measured), once keeping each
  // iteration's gradients until the next backward has produced new ones, once with the default (freed in step()).
  const rng = new Rng(3);
  const shapes: Record<string, number[]> = { w1: [128, 512], w2: [512, 512], w3: [512, 64] };
  const x = tf.tensor(randn(rng, 512 * 128), [512, 128]);
  const y = tf.tensor(randn(rng, 512 * 64), [512, 64]);
  const gradBytes = (128 * 512 + 512 * 512 + 512 * 64) * 4;
  async function run(keep: boolean): Promise<number> {
    const ps = makeParams(new Rng(3), shapes);
    const opt = new AdamW(ps, { lr: 1e-3 });
    const names = [...ps.keys()];
    const vars = names.map((n) => ps.get(n)!);
    let held: Map<string, tf.Tensor> | null = null;
    const iteration = () => {
        const { value, grads } = tf.variableGrads(() => {
          const h1 = tf.relu(tf.matMul(x, ps.get("w1")!));
          const h2 = tf.relu(tf.matMul(h1, ps.get("w2")!));
          return tf.mean(tf.square(tf.sub(tf.matMul(h2, ps.get("w3")!), y)));
        }, vars);
        value.dispose();
        if (held) for (const g of held.values()) g.dispose(); // the kept buffers are only replaced now
        const gm = new Map(names.map((n, i) => [n, grads[vars[i]!.name]!]));
        opt.step(gm, { disposeGrads: !keep });
        held = keep ? gm : null;
    };
    const base = memoryInfo().liveBytes;
    iteration(); // creates the moments; both runs are then measured from the same state
    const report = await measurePeak(() => {
      iteration();
      iteration();
    });
    if (held) for (const g of (held as Map<string, tf.Tensor>).values()) g.dispose();
    opt.dispose();
    disposeAll(ps);
    return report.peakBytes - base; // relative to before the first iteration: the held gradients count
  }
  const kept = await run(true);
  const freed = await run(false);
  console.log(`  3-iteration peak: grads kept ${(kept / 2 ** 20).toFixed(2)} MiB, freed as applied ${(freed / 2 ** 20).toFixed(2)} MiB (grads ${(gradBytes / 2 ** 20).toFixed(2)} MiB)`);
  assert.ok(kept - freed >= 0.9 * gradBytes, `peak kept ${kept} vs freed ${freed}`);
  x.dispose();
  y.dispose();
});

function runSteps(opt: Optimizer, ps: Map<string, tf.Variable>, steps: Map<string, Float32Array>[]): void {
  for (const gd of steps) opt.step(gradsFrom(gd, ps));
}

test("offloaded AdamW: same results as on-device AdamW, no optimizer state on the device", async () => {
  const rng = new Rng(11);
  const shapes = { a: [64, 96], b: [96], c: [3, 3, 8, 16] };
  const ps1 = makeParams(rng, shapes);
  const ps2 = cloneParams(ps1);
  const steps: Map<string, Float32Array>[] = [];
  for (let s = 0; s < 6; s++) steps.push(new Map(Object.entries(shapes).map(([k, sh]) => [k, randn(rng, sh.reduce((a, b) => a * b, 1), 0.1)])));
  const dev = new AdamW(ps1, { lr: 1e-3 });
  const off = new OffloadedAdamW(ps2, { lr: 1e-3 });
  const live0 = memoryInfo().liveBytes;
  const pd = await measurePeak(() => runSteps(dev, ps1, steps));
  const liveDev = memoryInfo().liveBytes - live0;
  const live1 = memoryInfo().liveBytes;
  const po = await measurePeak(() => runSteps(off, ps2, steps));
  const liveOff = memoryInfo().liveBytes - live1;
  let worst = 0;
  for (const k of Object.keys(shapes)) worst = Math.max(worst, maxAbsDiff(ps1.get(k)!.dataSync(), ps2.get(k)!.dataSync()));
  console.log(`  offload vs device max |diff| ${worst}; device state ${liveDev} B vs offload ${liveOff} B; peak delta ${pd.peakDeltaBytes} vs ${po.peakDeltaBytes}`);
  assert.ok(worst <= 1e-7, `offloaded result differs by ${worst}`);
  const numel = 64 * 96 + 96 + 3 * 3 * 8 * 16;
  assert.equal(liveDev, numel * 8, "device AdamW keeps m and v on the device");
  assert.equal(liveOff, 0, "offloaded AdamW keeps nothing on the device");
  assert.ok(po.peakDeltaBytes < pd.peakDeltaBytes);
  assert.deepEqual(dev.stateBytes(), { device: numel * 8, host: 0 });
  assert.equal(off.stateBytes().device, 0);
  // same checkpoint format: the offloaded state loads into the device optimizer and vice versa
  const sd = off.stateDict();
  assert.equal(relErr(sd.get("a.exp_avg")!.data, dev.stateDict().get("a.exp_avg")!.data) <= 1e-6, true);
  dev.dispose();
  off.dispose();
  disposeAll(ps1);
  disposeAll(ps2);
});

test("offload notices parameters assigned from outside (no stale master copy)", () => {
  const p = tf.variable(tf.tensor1d([1, 2, 3]));
  const q = tf.variable(tf.tensor1d([1, 2, 3]));
  const off = new OffloadedAdamW([["w", p]], { lr: 0.1 });
  const dev = new AdamW([["w", q]], { lr: 0.1 });
  const g = Float32Array.of(1, -1, 0.5);
  off.step(new Map([["w", tf.tensor1d(g)]]));
  dev.step(new Map([["w", tf.tensor1d(g)]]));
  p.assign(tf.tensor1d([10, 20, 30]));
  q.assign(tf.tensor1d([10, 20, 30]));
  off.step(new Map([["w", tf.tensor1d(g)]]));
  dev.step(new Map([["w", tf.tensor1d(g)]]));
  assert.ok(maxAbsDiff(p.dataSync(), q.dataSync()) <= 1e-6);
  assert.ok(p.dataSync()[0]! > 9);
  off.dispose();
  dev.dispose();
  p.dispose();
  q.dispose();
});

for (const kind of ["adamw", "offload", "8bit"] as const) {
  test(`${kind}: state dict round trip continues the exact trajectory`, () => {
    const rng = new Rng(5);
    const shapes = { a: [80, 64], b: [33] };
    const ps = makeParams(rng, shapes);
    const psB = cloneParams(ps);
    const steps: Map<string, Float32Array>[] = [];
    for (let s = 0; s < 6; s++) steps.push(new Map(Object.entries(shapes).map(([k, sh]) => [k, randn(rng, sh.reduce((a, b) => a * b, 1))])));
    const opts = { lr: 1e-2, use8bit: kind === "8bit", offload: kind === "offload" };
    const straight = createOptimizer(ps, opts);
    runSteps(straight, ps, steps);
    // interrupted: 3 steps, save, a fresh optimizer loads the state, 3 more
    const first = createOptimizer(psB, opts);
    runSteps(first, psB, steps.slice(0, 3));
    const saved = first.stateDict();
    first.dispose();
    const psC = cloneParams(psB);
    const second = createOptimizer(psC, opts);
    second.loadStateDict(saved);
    assert.equal(second.stepCount, 3);
    runSteps(second, psC, steps.slice(3));
    for (const k of Object.keys(shapes)) assert.equal(maxAbsDiff(ps.get(k)!.dataSync(), psC.get(k)!.dataSync()), 0, k);
    straight.dispose();
    second.dispose();
    disposeAll(ps);
    disposeAll(psB);
    disposeAll(psC);
  });
}

test("optimizer states refuse a state dict of the other kind", () => {
  const p = tf.variable(tf.zeros([8]));
  const a = new AdamW([["w", p]], { lr: 1 });
  const b = new AdamW8bit([["w", p]], { lr: 1 });
  assert.throws(() => a.loadStateDict(b.stateDict()), /AdamW8bit/);
  assert.throws(() => b.loadStateDict(a.stateDict()), /int8_blocksize/);
  p.dispose();
});

test("GradientAccumulator sums micro-batch gradients (torch's .grad +=) and frees its inputs", async () => {
  const { GradientAccumulator } = await import("../../lib/training/optim/index.js");
  const acc = new GradientAccumulator();
  const before = tf.memory().numTensors;
  acc.add(new Map<string, tf.Tensor>([["a", tf.tensor1d([1, 2])], ["b", tf.scalar(3)]]));
  acc.add(new Map<string, tf.Tensor>([["a", tf.tensor1d([0.5, -1])], ["b", tf.scalar(1)]]));
  acc.add({ a: tf.tensor1d([0.25, 0]) });
  assert.equal(acc.count, 3);
  assert.equal(tf.memory().numTensors - before, 2, "only the two running sums are alive");
  const g = acc.take();
  assert.deepEqual(Array.from(g.get("a")!.dataSync()), [1.75, 1]);
  assert.deepEqual(Array.from(g.get("b")!.dataSync()), [4]);
  assert.equal(acc.count, 0);
  assert.equal(acc.take().size, 0);
  for (const t of g.values()) t.dispose();
  assert.equal(tf.memory().numTensors, before);
});
