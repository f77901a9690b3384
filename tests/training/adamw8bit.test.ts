import { test } from "node:test";
import assert from "node:assert/strict";
import { tf } from "../../lib/engine/index.js";
import { AdamW, AdamW8bit, createDynamicMap, dequantizeBlockwise, quantizeBlockwise, type Optimizer } from "../../lib/training/optim/index.js";
import { Rng } from "../../lib/training/rng.js";
import { testEngine } from "../helpers.js";

await testEngine();

test("dynamic map: 256 sorted values, the bitsandbytes layout (hand-computed ends and decade counts)", () => {
  for (const signed of [true, false]) {
    const code = createDynamicMap(signed);
    assert.equal(code.length, 256);
    for (let i = 1; i < 256; i++) assert.ok(code[i]! > code[i - 1]!, `not strictly sorted at ${i}`);
    assert.equal(code[255], 1);
    assert.ok(code.includes(0));
    // values in [0.1, 1): 2^6 fraction steps (signed) or 2^7 (unsigned) in the top decade, plus the 1.0
    const top = Array.from(code).filter((v) => v >= 0.1 && v < 1).length;
    assert.equal(top, signed ? 64 : 128);
    const smallestPositive = Math.min(...Array.from(code).filter((v) => v > 0));
    // decade 1e-6: midpoint of [0.1, 1] (signed: one interval) or of [0.1, 0.55] (unsigned: two intervals)
    assert.ok(Math.abs(smallestPositive - (signed ? 0.55e-6 : 0.325e-6)) < 1e-12, `smallest ${smallestPositive}`);
  }
  const s = createDynamicMap(true);
  // the most negative code: −(midpoint of the last of 64 intervals of [0.1, 1]) = −(1 − 0.45/64)
  assert.ok(Math.abs(s[0]! - -(1 - 0.45 / 64)) < 1e-6);
  assert.ok(createDynamicMap(false)[0]! === 0, "the unsigned map starts at 0");
});

test("block-wise quantisation: nearest code value, error bounded by half the local code gap", () => {
  const rng = new Rng(1);
  const n = 3000; // not a multiple of the block size: the last block is partial
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) x[i] = rng.normal() * (i < 1000 ? 1e-3 : 1);
  const { q, absmax } = quantizeBlockwise(x, 256, true);
  assert.equal(absmax.length, Math.ceil(n / 256));
  const code = createDynamicMap(true);
  const back = dequantizeBlockwise(q, absmax, 256, true);
  for (let i = 0; i < n; i++) {
    const am = absmax[Math.floor(i / 256)]!;
    const xn = x[i]! / am;
    // brute force nearest
    let best = 0;
    for (let k = 1; k < 256; k++) if (Math.abs(code[k]! - xn) < Math.abs(code[best]! - xn)) best = k;
    assert.ok(Math.abs(code[q[i]!]! - xn) <= Math.abs(code[best]! - xn) + 1e-7, `element ${i}: not the nearest code`);
    assert.ok(Math.abs(back[i]! - x[i]!) <= (0.9 / 64 / 2) * am + 1e-7 * am, `element ${i}: error too large`);
  }
  // per-block absmax: small-magnitude blocks keep their own scale
  assert.ok(absmax[0]! < 0.01 && absmax[5]! > 1);
  // the unsigned map for non-negative data
  const v = x.map((a) => a * a);
  const uq = quantizeBlockwise(v, 256, false);
  const uback = dequantizeBlockwise(uq.q, uq.absmax, 256, false);
  for (let i = 0; i < n; i++) assert.ok(uback[i]! >= 0 && Math.abs(uback[i]! - v[i]!) <= (0.9 / 128 / 2) * uq.absmax[Math.floor(i / 256)]! * 1.0001);
});

function regression(seed: number) {
  const rng = new Rng(seed);
  const [N, D, K] = [128, 64, 128];
  const x = tf.tensor(rng.normals(N * D), [N, D]);
  const wTrue = tf.tensor(rng.normals(D * K), [D, K]);
  const y = tf.tidy(() => tf.add(tf.matMul(x, wTrue), tf.mul(tf.tensor(rng.normals(N * K), [N, K]), 0.01)));
  const bias0 = tf.zeros([K]);
  const w0 = tf.zeros([D, K]);
  const params = new Map([["w", tf.variable(w0)], ["b", tf.variable(bias0)]]);
  w0.dispose();
  bias0.dispose();
  const loss = () => tf.mean(tf.square(tf.sub(tf.add(tf.matMul(x, params.get("w")!), params.get("b")!), y))) as tf.Scalar;
  const train = (opt: Optimizer, steps: number): number[] => {
    const losses: number[] = [];
    const vars = [params.get("w")!, params.get("b")!];
    for (let s = 0; s < steps; s++) {
      const { value, grads } = tf.variableGrads(loss, vars);
      losses.push(value.dataSync()[0]!);
      value.dispose();
      opt.step(new Map([["w", grads[vars[0]!.name]!], ["b", grads[vars[1]!.name]!]]));
    }
    return losses;
  };
  const dispose = () => {
    tf.dispose([x, wTrue, y]);
    for (const v of params.values()) v.dispose();
  };
  return { params, train, dispose };
}

test("AdamW8bit converges like fp32 AdamW on a linear regression; state ≈ 2 bytes/param vs 8", () => {
  const a = regression(21);
  const fp32 = new AdamW(a.params, { lr: 1e-1 });
  const la = a.train(fp32, 100);
  const b = regression(21);
  const q8 = new AdamW8bit(b.params, { lr: 1e-1, minQuantizedSize: 4096 });
  const lb = b.train(q8, 100);
  const [first, lastA, lastB] = [la[0]!, la.at(-1)!, lb.at(-1)!];
  console.log(`  loss: start ${first.toFixed(3)}, fp32 AdamW ${lastA.toExponential(3)}, 8-bit ${lastB.toExponential(3)}`);
  assert.equal(lb[0], first, "same problem, same start");
  assert.ok(lastA < first * 1e-3, "fp32 AdamW converges");
  assert.ok(lastB < first * 1e-3, "8-bit AdamW converges");
  assert.ok(lastB < 3 * lastA + 1e-4, `8-bit final loss ${lastB} vs fp32 ${lastA}`);
  // the weight (8192 ≥ 4096 elements) is quantised; the bias (128) keeps fp32 states, as bitsandbytes does
  const numelW = 64 * 128;
  const sd = q8.stateDict();
  assert.ok(sd.has("w.state1") && sd.has("w.absmax2") && !sd.has("w.exp_avg"));
  assert.ok(sd.has("b.exp_avg") && !sd.has("b.state1"));
  const bytes8 = q8.stateBytes().host - 128 * 8;
  const bytes32 = fp32.stateBytes().device - 128 * 8;
  console.log(`  state bytes/param (weight): 8-bit ${(bytes8 / numelW).toFixed(3)}, fp32 ${(bytes32 / numelW).toFixed(3)}`);
  assert.ok(bytes8 / numelW < 2.1 && bytes8 / numelW >= 2);
  assert.equal(bytes32 / numelW, 8);
  assert.equal(q8.stateBytes().device, 0);
  fp32.dispose();
  q8.dispose();
  a.dispose();
  b.dispose();
});

test("AdamW8bit with 2048-element blocks (older bitsandbytes) also converges", () => {
  const a = regression(4);
  const q8 = new AdamW8bit(a.params, { lr: 1e-1, blockSize: 2048 });
  const l = a.train(q8, 100);
  assert.ok(l.at(-1)! < l[0]! * 1e-3, `final ${l.at(-1)} start ${l[0]}`);
  assert.equal(q8.stateDict().get("w.absmax1")!.shape[0], 4);
  q8.dispose();
  a.dispose();
});
