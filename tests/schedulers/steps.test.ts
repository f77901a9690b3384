import { test } from "node:test";
import assert from "node:assert/strict";
import { tf } from "../../lib/engine/index.js";
import { testEngine, maxAbsDiff, maxAbs } from "../helpers.js";
import {
  DDPMScheduler, DDIMScheduler, UniPCMultistepScheduler, EulerDiscreteScheduler, Generator, schedulerFromConfig,
  addNoise, getVelocity, computeSnr, minSnrWeights, type Scheduler,
} from "../../lib/schedulers/index.js";
import { SD15_PNDM } from "./sd15.js";

const SHAPE = [2, 4, 4, 3]; // NHWC latents

function fixedTensor(seed: number): tf.Tensor {
  return new Generator(seed).randn(SHAPE);
}

test("timestep grids: lengths, ordering, spacing rules", async () => {
  await testEngine();
  const ddim = DDIMScheduler.fromConfig(SD15_PNDM);
  ddim.setTimesteps(50);
  assert.equal(ddim.timesteps.length, 50);
  assert.equal(ddim.timesteps[0], 981); // leading: 49·20 + steps_offset 1
  assert.equal(ddim.timesteps[49], 1);
  const trailing = new DDIMScheduler({ timestep_spacing: "trailing" });
  trailing.setTimesteps(4);
  assert.deepEqual(trailing.timesteps, [999, 749, 499, 249]);
  const lin = new DDPMScheduler({ timestep_spacing: "linspace" });
  lin.setTimesteps(4);
  assert.deepEqual(lin.timesteps, [999, 666, 333, 0]);
  const uni = new UniPCMultistepScheduler({ timestep_spacing: "leading", steps_offset: 1 });
  uni.setTimesteps(4);
  assert.deepEqual(uni.timesteps, [801, 601, 401, 201]); // 1000 // 5 = 200
  const eul = new EulerDiscreteScheduler();
  eul.setTimesteps(4);
  assert.deepEqual(eul.timesteps, [999, 666, 333, 0]);
  eul.setTimesteps(7);
  assert.ok(!Number.isInteger(eul.timesteps[1]!), "Euler linspace timesteps are fractional");
  for (const s of [ddim, uni, eul] as Scheduler[]) {
    for (let i = 1; i < s.timesteps.length; i++) assert.ok(s.timesteps[i]! < s.timesteps[i - 1]!, `${s.className} descending`);
  }
  for (const s of [ddim, uni, eul, new DDPMScheduler()] as Scheduler[]) {
    assert.throws(() => s.setTimesteps(0), /num_inference_steps must be a positive integer/);
    assert.throws(() => s.setTimesteps(1001), /cannot be larger than num_train_timesteps/);
  }
});

test("addNoise / getVelocity: t=0 keeps x0, v recovers x0 and ε, SNR decreases", async () => {
  await testEngine();
  const s = DDPMScheduler.fromConfig(SD15_PNDM);
  const x0 = fixedTensor(1);
  const eps = fixedTensor(2);
  const x1 = s.addNoise(x0, eps, [0, 0]);
  assert.ok(maxAbsDiff(x1.dataSync(), x0.dataSync()) < 0.15); // √(1−ᾱ₀) ≈ 0.029
  const xt = addNoise(s.alphasCumprod, x0, eps, [10, 900]);
  const v = getVelocity(s.alphasCumprod, x0, eps, [10, 900]);
  // x0 = √ᾱ·x_t − √(1−ᾱ)·v and ε = √(1−ᾱ)·x_t + √ᾱ·v, per sample
  const a = [s.alphasCumprod[10]!, s.alphasCumprod[900]!];
  const ca = tf.tensor(a.map(Math.sqrt), [2, 1, 1, 1]);
  const cb = tf.tensor(a.map((x) => Math.sqrt(1 - x)), [2, 1, 1, 1]);
  const x0r = tf.sub(tf.mul(ca, xt), tf.mul(cb, v));
  const epsr = tf.add(tf.mul(cb, xt), tf.mul(ca, v));
  assert.ok(maxAbsDiff(x0r.dataSync(), x0.dataSync()) < 1e-5);
  assert.ok(maxAbsDiff(epsr.dataSync(), eps.dataSync()) < 1e-5);
  assert.throws(() => addNoise(s.alphasCumprod, x0, eps, [1000, 0]), /not an integer in \[0, 999\]/);
  assert.throws(() => addNoise(s.alphasCumprod, x0, eps, [1, 2, 3]), /3 timesteps for a batch of 2/);
  const snr = computeSnr(s.alphasCumprod, [0, 100, 500, 999]);
  for (let i = 1; i < 4; i++) assert.ok(snr[i]! < snr[i - 1]!);
  assert.ok(Math.abs(snr[2]! - s.alphasCumprod[500]! / (1 - s.alphasCumprod[500]!)) < 1e-3 * snr[2]!);
  const w = minSnrWeights([10, 5, 1], 5, "epsilon");
  assert.deepEqual(Array.from(w), [0.5, 1, 1]);
  assert.deepEqual(Array.from(minSnrWeights([9, 1], 5, "v_prediction")), [0.5, 0.5]);
  tf.dispose([x0, eps, x1, xt, v, ca, cb, x0r, epsr]);
});

/**
 * With an oracle model (it returns the true ε of x_t = √ᾱ·x0 + √(1−ᾱ)·ε), DDIM (eta 0), UniPC and Euler are exact:
 * every step lands on the forward process at the next timestep, and the last step on x0.
 */
for (const name of ["ddim", "unipc", "euler"] as const) {
  test(`${name}: an oracle ε-model walks the forward process exactly to x0`, async () => {
    await testEngine();
    const s = schedulerFromConfig(name, { ...SD15_PNDM, set_alpha_to_one: true });
    s.setTimesteps(10);
    const x0 = fixedTensor(3);
    const eps = fixedTensor(4);
    const sigmaOf = (t: number) => {
      // Euler's grid is fractional: interpolate σ like the scheduler does, then map to the VP forward process.
      const ac = s.alphasCumprod;
      const lo = Math.floor(t);
      const w = t - lo;
      const sig = (i: number) => Math.sqrt((1 - ac[i]!) / ac[i]!);
      return lo >= ac.length - 1 ? sig(ac.length - 1) : (1 - w) * sig(lo) + w * sig(lo + 1);
    };
    const forward = (t: number) =>
      tf.tidy(() => {
        if (name === "euler") return tf.add(x0, tf.mul(sigmaOf(t), eps)); // Euler's sample is x0 + σ·ε
        const sg = sigmaOf(t);
        const alpha = 1 / Math.sqrt(sg * sg + 1);
        return tf.add(tf.mul(alpha, x0), tf.mul(sg * alpha, eps));
      });
    let x = forward(s.timesteps[0]!);
    const before = tf.memory().numTensors;
    for (let i = 0; i < s.timesteps.length; i++) {
      const t = s.timesteps[i]!;
      const inp = s.scaleModelInput(x, t);
      const { prevSample, predOriginalSample } = s.step(eps, t, x);
      inp.dispose();
      predOriginalSample?.dispose();
      x.dispose();
      x = prevSample;
      if (i < s.timesteps.length - 1) {
        const want = forward(s.timesteps[i + 1]!);
        const err = maxAbsDiff(x.dataSync(), want.dataSync());
        assert.ok(err < 2e-4, `${name} step ${i}: off the forward process by ${err}`);
        want.dispose();
      }
    }
    const err = maxAbsDiff(x.dataSync(), x0.dataSync());
    // DDIM's last step goes to ᾱ_prev = 1 (set_alpha_to_one), so it lands on x0 too.
    assert.ok(err < 2e-4, `${name}: final sample differs from x0 by ${err}`);
    // Only the output tensor (and UniPC's own history) may remain.
    assert.ok(tf.memory().numTensors - before <= 3, `${name}: leaked ${tf.memory().numTensors - before} tensors`);
    s.dispose();
    tf.dispose([x, x0, eps]);
  });
}

test("DDIM eta 0 is deterministic; eta > 0 uses the generator's noise reproducibly", async () => {
  await testEngine();
  const s = DDIMScheduler.fromConfig(SD15_PNDM);
  s.setTimesteps(5);
  const x = fixedTensor(5);
  const e = fixedTensor(6);
  const a = s.step(e, s.timesteps[1]!, x).prevSample;
  const b = s.step(e, s.timesteps[1]!, x).prevSample;
  assert.equal(maxAbsDiff(a.dataSync(), b.dataSync()), 0);
  const c = s.step(e, s.timesteps[1]!, x, { eta: 1, generator: new Generator(7) }).prevSample;
  const d = s.step(e, s.timesteps[1]!, x, { eta: 1, generator: new Generator(7) }).prevSample;
  assert.equal(maxAbsDiff(c.dataSync(), d.dataSync()), 0);
  assert.ok(maxAbsDiff(a.dataSync(), c.dataSync()) > 1e-3, "eta 1 must add noise");
  tf.dispose([x, e, a, b, c, d]);
});

test("DDPM step is the posterior mean plus σ·noise (explicit noise)", async () => {
  await testEngine();
  const s = DDPMScheduler.fromConfig(SD15_PNDM);
  s.setTimesteps(10);
  const [t, prevT] = [s.timesteps[2]!, s.timesteps[3]!];
  const x = fixedTensor(8);
  const e = fixedTensor(9);
  const z = fixedTensor(10);
  const out = s.step(e, t, x, { noise: z });
  const aT = s.alphasCumprod[t]!;
  const aP = s.alphasCumprod[prevT]!;
  const beta = 1 - aT / aP;
  const xs = x.dataSync();
  const es = e.dataSync();
  const zs = z.dataSync();
  const std = Math.sqrt(((1 - aP) / (1 - aT)) * beta);
  const got = out.prevSample.dataSync();
  let worst = 0;
  for (let i = 0; i < xs.length; i++) {
    const x0 = (xs[i]! - Math.sqrt(1 - aT) * es[i]!) / Math.sqrt(aT);
    const mean = (Math.sqrt(aP) * beta / (1 - aT)) * x0 + (Math.sqrt(aT / aP) * (1 - aP) / (1 - aT)) * xs[i]!;
    worst = Math.max(worst, Math.abs(got[i]! - (mean + std * zs[i]!)));
  }
  assert.ok(worst < 1e-5 * Math.max(1, maxAbs(got)), `DDPM step error ${worst}`);
  const last = s.step(e, s.timesteps[9]!, x, { noise: z }); // t = last: no noise added
  const last2 = s.step(e, s.timesteps[9]!, x, { generator: new Generator(3) });
  assert.equal(maxAbsDiff(last.prevSample.dataSync(), last2.prevSample.dataSync()), 0);
  tf.dispose([x, e, z, out.prevSample, out.predOriginalSample!, last.prevSample, last.predOriginalSample!, last2.prevSample, last2.predOriginalSample!]);
});

test("UniPC: history is reset by setTimesteps, step count is checked, v/sample predictions agree with ε", async () => {
  await testEngine();
  const x0 = fixedTensor(11);
  const eps = fixedTensor(12);
  const runs: Float32Array[] = [];
  for (const pt of ["epsilon", "v_prediction", "sample"] as const) {
    const s = UniPCMultistepScheduler.fromConfig(SD15_PNDM, { prediction_type: pt });
    s.setTimesteps(6);
    let x = s.addNoise(x0, eps, [s.timesteps[0]!, s.timesteps[0]!]);
    for (const t of s.timesteps) {
      // the model output each parameterisation would give for the true (x0, ε)
      const ac = s.alphasCumprod[t]!;
      const out =
        pt === "epsilon" ? eps.clone()
        : pt === "sample" ? x0.clone()
        : tf.sub(tf.mul(Math.sqrt(ac), eps), tf.mul(Math.sqrt(1 - ac), x0));
      const next = s.step(out, t, x).prevSample;
      tf.dispose([out, x]);
      x = next;
    }
    assert.throws(() => s.step(eps, s.timesteps[0]!, x), /more times than there are timesteps/);
    runs.push(x.dataSync() as Float32Array);
    s.dispose();
    x.dispose();
  }
  assert.ok(maxAbsDiff(runs[0]!, x0.dataSync()) < 1e-4);
  assert.ok(maxAbsDiff(runs[1]!, x0.dataSync()) < 1e-4);
  assert.ok(maxAbsDiff(runs[2]!, x0.dataSync()) < 1e-4);
  tf.dispose([x0, eps]);
});

test("Generator: seeded, reproducible, standard normal", () => {
  const a = new Generator(42).normalArray(20000);
  const b = new Generator(42).normalArray(20000);
  const c = new Generator(43).normalArray(10);
  assert.deepEqual(a, b);
  assert.notDeepEqual(Array.from(a.slice(0, 10)), Array.from(c));
  const mean = a.reduce((s, v) => s + v, 0) / a.length;
  const variance = a.reduce((s, v) => s + (v - mean) ** 2, 0) / a.length;
  assert.ok(Math.abs(mean) < 0.03, `mean ${mean}`);
  assert.ok(Math.abs(variance - 1) < 0.05, `variance ${variance}`);
  assert.notDeepEqual(Array.from(new Generator(0).normalArray(4)), Array.from(new Generator(1).normalArray(4)));
  const g = new Generator(5);
  g.normalArray(3);
  const st = g.getState();
  const n1 = g.normalArray(5);
  assert.deepEqual(new Generator().setState(st).normalArray(5), n1);
});

/**
 * Gaussian data x0 ~ N(0, s²) has a closed-form optimal denoiser and a closed-form probability-flow ODE solution:
 * x_0 = s / √(α_T²s² + σ_T²) · x_T. Solving it numerically tests the multistep terms that the oracle test above
 * cannot see: second-order UniPC must beat first order, and converge faster as steps grow.
 */
function gaussianOdeError(make: () => Scheduler, steps: number): number {
  const s2 = 0.25;
  const sched = make();
  sched.setTimesteps(steps);
  const xT = tf.tensor([0.7, -1.3, 2.1], [3, 1, 1, 1]);
  const ac = sched.alphasCumprod;
  const vp = (t: number) => ({ a: Math.sqrt(ac[Math.round(t)]!), sg: Math.sqrt(1 - ac[Math.round(t)]!) });
  const euler = sched.className === "EulerDiscreteScheduler";
  const first = vp(sched.timesteps[0]!);
  let x: tf.Tensor = euler ? tf.div(xT, first.a) : xT.clone();
  const ts = sched.timesteps;
  // Compare the exact ODE state at t = 500, which every grid used here contains (the last jump to σ = 0 returns
  // the denoiser's x0 estimate, whose error for Gaussian data is posterior shrinkage, not the solver's).
  const stop = ts.indexOf(500);
  assert.ok(stop > 0, `grid ${ts} lacks t = 500`);
  for (const t of ts.slice(0, stop)) {
    const { a, sg } = vp(t);
    const eps = tf.tidy(() => {
      const inp = sched.scaleModelInput(x, t); // VP sample
      const x0hat = tf.mul(inp, (a * s2) / (a * a * s2 + sg * sg));
      return tf.div(tf.sub(inp, tf.mul(x0hat, a)), sg);
    });
    const { prevSample, predOriginalSample } = sched.step(eps, t, x);
    tf.dispose([eps, x, predOriginalSample]);
    x = prevSample;
  }
  const last = vp(500);
  const scale = Math.sqrt(last.a * last.a * s2 + last.sg * last.sg) / Math.sqrt(first.a * first.a * s2 + first.sg * first.sg);
  const exact = tf.mul(xT, euler ? scale / last.a : scale);
  const err = maxAbsDiff(x.dataSync(), exact.dataSync());
  tf.dispose([x, xT, exact]);
  sched.dispose();
  return err;
}

test("Gaussian-data ODE: UniPC order 2 beats order 1 and converges; DDIM and Euler converge", async () => {
  await testEngine();
  const uni = (order: number) => () => schedulerFromConfig("unipc", SD15_PNDM, { solver_order: order });
  const e1 = gaussianOdeError(uni(1), 10);
  const e2 = gaussianOdeError(uni(2), 10);
  const e2b = gaussianOdeError(uni(2), 20);
  const e3 = gaussianOdeError(uni(3), 10);
  assert.ok(e2 < e1, `order 2 (${e2}) should beat order 1 (${e1})`);
  assert.ok(e2b < e2 / 2.5, `order 2 should converge faster than linearly: 10 steps ${e2}, 20 steps ${e2b}`);
  assert.ok(e3 < 2 * e2, `order 3 (${e3}) should not be worse than order 2 (${e2})`);
  const bh1 = gaussianOdeError(() => schedulerFromConfig("unipc", SD15_PNDM, { solver_type: "bh1" }), 10);
  assert.ok(bh1 < e1, `bh1 order 2 (${bh1}) should beat order 1 (${e1})`);
  const noX0 = gaussianOdeError(() => schedulerFromConfig("unipc", SD15_PNDM, { predict_x0: false }), 10);
  assert.ok(noX0 < e1, `ε-form UniPC (${noX0}) should beat order 1 (${e1})`);
  for (const name of ["ddim", "euler"] as const) {
    const mk = () => schedulerFromConfig(name, { ...SD15_PNDM, set_alpha_to_one: true, timestep_spacing: "leading", steps_offset: 0 });
    const a = gaussianOdeError(mk, 10);
    const b = gaussianOdeError(mk, 40);
    assert.ok(b < a / 2, `${name} should converge: 10 steps ${a}, 40 steps ${b}`);
  }
  console.log(`  ODE errors: unipc o1 ${e1.toExponential(2)}, o2 ${e2.toExponential(2)}, o2@20 ${e2b.toExponential(2)}, o3 ${e3.toExponential(2)}, bh1 ${bh1.toExponential(2)}, eps-form ${noX0.toExponential(2)}`);
});
