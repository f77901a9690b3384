/**
 * The wasm backend's hidden per-weight operator cache (engine/weight-cache.ts), the per-call copies that avoid it
 * (Module.setKeepPackedWeights(false)), and turning XNNPACK's printed failures into errors (engine/wasm-failures.ts).
 */
import { before, test } from "node:test";
import assert from "node:assert/strict";
import { initEngine, memoryInfo, tf, throwIfWasmKernelFailed, transientWeight } from "../../lib/engine/index.js";
import { Conv2d, Linear } from "../../lib/models/index.js";
import { assertClose } from "../helpers.js";

before(async () => {
  const info = await initEngine({ backend: "wasm" }); // wasm's own mechanisms: always on wasm
  assert.equal(info.backend, "wasm");
});

test("conv filters keep hidden packed copies in the wasm heap unless passed as per-call copies", () => {
  const x = tf.randomNormal([1, 4, 4, 256], 0, 1, "float32", 1) as tf.Tensor4D;
  const filters = Array.from({ length: 24 }, (_, i) => tf.randomNormal([3, 3, 256, 256], 0, 0.05, "float32", 10 + i) as tf.Tensor4D);
  const filterBytes = filters.reduce((a, f) => a + f.size * 4, 0); // 24 × 2.36 MB
  const heap = () => memoryInfo().heapBytes!;
  const live0 = memoryInfo().liveBytes;
  const h0 = heap();
  for (const f of filters) tf.tidy(() => tf.conv2d(x, transientWeight(f), 1, "same").dataSync());
  const h1 = heap();
  for (const f of filters) tf.tidy(() => tf.conv2d(x, f, 1, "same").dataSync());
  const h2 = heap();
  console.log(`24 filters, ${(filterBytes / 1e6).toFixed(1)} MB: heap +${((h1 - h0) / 1e6).toFixed(1)} MB with per-call copies, +${((h2 - h1) / 1e6).toFixed(1)} MB cached`);
  assert.equal(memoryInfo().liveBytes, live0, "no tensor leaked");
  // per-call copies: at most a few filters' worth of transient buffers, reused
  assert.ok(h1 - h0 < 0.5 * filterBytes, `per-call copies grew the heap by ${h1 - h0} bytes`);
  // cached: a transposed and a packed copy of every filter stay behind (≈ 2× the filters)
  assert.ok(h2 - h1 > 1.5 * filterBytes, `cached operators grew the heap by only ${h2 - h1} bytes`);
  tf.dispose([x, ...filters]);
});

test("setKeepPackedWeights(false) changes no value: conv and linear forward and gradients are identical", () => {
  const conv = new Conv2d(6, 8, { kernel: 3, padding: 1 });
  const lin = new Linear(8, 5);
  conv.initialize(3);
  lin.initialize(4);
  const x = tf.randomNormal([2, 5, 5, 6], 0, 1, "float32", 5) as tf.Tensor4D;
  const run = () => {
    const vars = [...conv.trainableVariables(), ...lin.trainableVariables()];
    const { value, grads } = tf.variableGrads(() => tf.sum(tf.square(lin.forward(conv.forward(x)))) as tf.Scalar, vars);
    const out = { loss: value.dataSync()[0]!, grads: vars.map((v) => grads[v.name]!.dataSync() as Float32Array) };
    tf.dispose([value, ...Object.values(grads)]);
    return out;
  };
  const cached = run();
  conv.setKeepPackedWeights(false);
  lin.setKeepPackedWeights(false);
  const live0 = memoryInfo().liveBytes;
  const copied = run();
  assert.equal(memoryInfo().liveBytes, live0, "the per-call copies are freed");
  assert.equal(copied.loss, cached.loss);
  copied.grads.forEach((g, i) => assertClose(g, cached.grads[i]!, 0, `gradient ${i}`));
  tf.dispose(x);
  conv.dispose();
  lin.dispose();
});

test("an XNNPACK failure printed by the wasm backend becomes one clear error at the next check", () => {
  throwIfWasmKernelFailed("before"); // nothing pending
  // what the wasm module prints through console.warn (which initEngine's watch wraps) when XNNPACK runs out of heap
  console.warn("XNN status for xnn_create_convolution2d_nhwc_f32 is not successful. Got status 6. Use -c dbg to see XNN logs.");
  console.warn("XNN status for xnn_setup_convolution2d_nhwc_f32 is not successful. Got status 2. Use -c dbg to see XNN logs.");
  console.warn("an unrelated warning");
  assert.throws(() => throwIfWasmKernelFailed("training step 7"), (e: Error) =>
    /^training step 7: a wasm kernel failed \(xnn_create_convolution2d_nhwc_f32: out of memory: the wasm heap \(4 GiB\) is full; 2 failures in all\)/.test(e.message) &&
    /gradient checkpointing/.test(e.message));
  throwIfWasmKernelFailed("after"); // cleared
});
