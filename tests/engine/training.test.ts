/** A small conv + attention network trains on wasm; its gradients equal the cpu backend's; checkpointing and memory. */
import { before, test } from "node:test";
import assert from "node:assert/strict";
import { initEngine, tf, checkpoint, measurePeak, memoryInfo } from "../../lib/engine/index.js";
import { assertClose, onCpu } from "../helpers.js";

before(async () => {
  await initEngine({ backend: "wasm" }); // wasm's own mechanisms: always on wasm
});

interface Net { conv1: tf.Variable; conv2: tf.Variable; wq: tf.Variable; wk: tf.Variable; wv: tf.Variable; down: tf.Variable; up: tf.Variable }

function makeNet(seed: number): Net {
  const v = (shape: number[], s: number, scale: number) => tf.variable(tf.mul(tf.randomNormal(shape, 0, 1, "float32", seed + s), scale));
  return {
    conv1: v([3, 3, 3, 16], 1, 0.2), down: v([3, 3, 16, 16], 2, 0.1), conv2: v([3, 3, 32, 3], 3, 0.1),
    wq: v([16, 16], 4, 0.2), wk: v([16, 16], 5, 0.2), wv: v([16, 16], 6, 0.2), up: v([1, 1, 16, 16], 7, 0.2),
  };
}

const silu = (x: tf.Tensor) => tf.mul(x, tf.sigmoid(x));
function groupNorm(x: tf.Tensor4D, groups: number): tf.Tensor4D {
  const [n, h, w, c] = x.shape;
  const g = tf.reshape(x, [n, h, w, groups, c / groups]);
  const { mean, variance } = tf.moments(g, [1, 2, 4], true);
  return tf.reshape(tf.mul(tf.sub(g, mean), tf.rsqrt(tf.add(variance, 1e-5))), x.shape);
}

/** conv → GroupNorm → SiLU → stride-2 conv (PyTorch padding) → 4-head self-attention → nearest 2x up → skip concat → conv. */
function forward(net: Net, x: tf.Tensor4D): tf.Tensor4D {
  const h1 = silu(groupNorm(tf.conv2d(x, net.conv1 as tf.Tensor4D, 1, "same"), 4)) as tf.Tensor4D;
  const d = tf.conv2d(h1, net.down as tf.Tensor4D, 2, [[0, 0], [1, 1], [1, 1], [0, 0]]);
  const [n, hh, ww, c] = d.shape;
  const tokens = tf.reshape(d, [n * hh * ww, c]);
  const heads = (t: tf.Tensor) => tf.transpose(tf.reshape(t, [n, hh * ww, 4, c / 4]), [0, 2, 1, 3]);
  const q = heads(tf.matMul(tokens, net.wq as tf.Tensor2D));
  const k = heads(tf.matMul(tokens, net.wk as tf.Tensor2D));
  const v = heads(tf.matMul(tokens, net.wv as tf.Tensor2D));
  const attn = tf.softmax(tf.mul(tf.matMul(q as tf.Tensor4D, k as tf.Tensor4D, false, true), 1 / Math.sqrt(c / 4)));
  const o = tf.reshape(tf.transpose(tf.matMul(attn, v as tf.Tensor4D), [0, 2, 1, 3]), [n, hh, ww, c]);
  const up = tf.image.resizeNearestNeighbor(tf.add(d, o) as tf.Tensor4D, [hh * 2, ww * 2]);
  const u = tf.conv2d(up, net.up as tf.Tensor4D, 1, "valid");
  return tf.conv2d(tf.concat([u, h1], 3) as tf.Tensor4D, net.conv2 as tf.Tensor4D, 1, "same");
}

function lossOf(net: Net, x: tf.Tensor4D, target: tf.Tensor4D): tf.Scalar {
  return tf.mean(tf.squaredDifference(forward(net, x), target));
}

test("conv+attention net: gradients equal the cpu backend's, and the loss falls when training on wasm", async () => {
  const net = makeNet(100);
  const x = tf.randomNormal([1, 8, 8, 3], 0, 1, "float32", 9) as tf.Tensor4D;
  const target = tf.tanh(tf.reverse(x, 2)) as tf.Tensor4D;
  const vars = Object.values(net);
  const gradsOn = (): [number, ...Float32Array[]] => {
    const { value, grads } = tf.variableGrads(() => lossOf(net, x, target), vars);
    const out: [number, ...Float32Array[]] = [value.dataSync()[0]!, ...vars.map((v) => grads[v.name]!.dataSync() as Float32Array)];
    tf.dispose([value, ...Object.values(grads)]);
    return out;
  };
  const [lw, ...gw] = gradsOn();
  const [lc, ...gc] = await onCpu(gradsOn);
  assert.ok(Math.abs(lw - lc) <= 1e-5 * Math.abs(lc), `loss ${lw} vs cpu ${lc}`);
  gw.forEach((g, i) => assertClose(g, gc[i]!, 1e-4, `grad ${i}`));

  const opt = tf.train.adam(0.01);
  const first = lossOf(net, x, target).dataSync()[0]!;
  const leakBase = tf.memory().numTensors;
  for (let i = 0; i < 60; i++) tf.tidy(() => { opt.minimize(() => lossOf(net, x, target), false, vars); });
  const grown = tf.memory().numTensors - leakBase;
  assert.ok(grown <= 2 * vars.length + 2, `tensors grew by ${grown} beyond the optimizer's state`);
  const last = lossOf(net, x, target).dataSync()[0]!;
  assert.ok(last < first * 0.5, `loss should fall: ${first} → ${last}`);
});

test("checkpoint(): identical gradients, lower peak memory", async () => {
  const c = 32;
  const ws = Array.from({ length: 6 }, (_, i) => tf.variable(tf.mul(tf.randomNormal([3, 3, c, c], 0, 1, "float32", 40 + i), 0.05)));
  const block = (x: tf.Tensor, w: tf.Tensor) => tf.add(x, tf.conv2d(silu(tf.conv2d(x as tf.Tensor4D, w as tf.Tensor4D, 1, "same")) as tf.Tensor4D, w as tf.Tensor4D, 1, "same"));
  const x0 = tf.randomNormal([2, 24, 24, c], 0, 1, "float32", 50);
  const run = (useCheckpoint: boolean) => tf.tidy(() => {
    const { grads } = tf.variableGrads(() => {
      let h: tf.Tensor = x0;
      for (const w of ws) h = useCheckpoint ? checkpoint((a) => block(a, w), [h], [w]) : block(h, w);
      return tf.mean(tf.square(h)) as tf.Scalar;
    }, ws);
    return ws.map((w) => grads[w.name]!.dataSync() as Float32Array);
  });
  const plain = await measurePeak(() => run(false));
  const ckpt = await measurePeak(() => run(true));
  plain.result.forEach((g, i) => assertClose(ckpt.result[i]!, g, 1e-6, `grad ${i}`));
  assert.ok(ckpt.peakDeltaBytes < plain.peakDeltaBytes * 0.75,
    `checkpointed peak ${ckpt.peakDeltaBytes} should be well below plain ${plain.peakDeltaBytes}`);
});

test("memory accounting: live bytes, peaks over a region, the wasm heap", async () => {
  const before = memoryInfo();
  const r = await measurePeak(() => {
    const a = tf.zeros([1024, 256]); // 1 MiB
    const b = tf.reshape(a, [256, 1024]); // shares a's buffer: not counted twice
    const s = tf.sum(b);
    const sum = s.dataSync()[0];
    tf.dispose([a, b, s]);
    return sum;
  });
  assert.equal(r.result, 0);
  assert.ok(r.peakDeltaBytes >= 1024 * 1024 && r.peakDeltaBytes < 1.5 * 1024 * 1024, `peak delta ${r.peakDeltaBytes}`);
  assert.equal(r.endBytes, r.startBytes, "everything allocated was freed");
  const after = memoryInfo();
  assert.equal(after.backend, "wasm");
  assert.ok(after.heapBytes! >= before.heapBytes!, "the heap never shrinks");
  assert.equal(after.heapLimitBytes, 4 * 1024 ** 3);
  assert.ok(after.rssBytes > after.heapBytes!, "the wasm heap is part of RSS");
});
