/**
 * Memory mechanisms: chunked attention equals full attention; per-block gradient checkpointing gives the same
 * gradients; both measurably lower the peak of live tensor memory at a mid-size config; so does sending the weight
 * gradients of checkpointed blocks to the host as backward produces them.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { tf, hasFusedAttention, measurePeak, useFusedKernels, withWeightGradientSink } from "../../lib/engine/index.js";
import { testEngine, maxAbsDiff, relErr } from "../helpers.js";
import { ControlNetModel, UNet2DConditionModel, scaledDotProductAttention } from "../../lib/models/index.js";
import { MID_UNET } from "./tiny.js";

test("chunked attention equals full attention (values and gradients) within 1e-5", async () => {
  await testEngine();
  const q = tf.randomNormal([6, 100, 8], 0, 1, "float32", 1) as tf.Tensor3D;
  const k = tf.randomNormal([6, 37, 8], 0, 1, "float32", 2) as tf.Tensor3D;
  const v = tf.randomNormal([6, 37, 8], 0, 1, "float32", 3) as tf.Tensor3D;
  const r = tf.randomNormal([6, 100, 8], 0, 1, "float32", 4);
  const f = (chunk: number) => (a: tf.Tensor, b: tf.Tensor, c: tf.Tensor) =>
    tf.sum(tf.mul(scaledDotProductAttention(a as tf.Tensor3D, b as tf.Tensor3D, c as tf.Tensor3D, 0.35, { chunkSize: chunk }), r));
  const full = scaledDotProductAttention(q, k, v, 0.35);
  for (const chunk of [7, 32, 99]) {
    const part = scaledDotProductAttention(q, k, v, 0.35, { chunkSize: chunk });
    assert.ok(maxAbsDiff(full.dataSync(), part.dataSync()) <= 1e-5, `chunk ${chunk}`);
    const gFull = tf.grads(f(0))([q, k, v]);
    const gPart = tf.grads(f(chunk))([q, k, v]);
    gFull.forEach((g, i) => assert.ok(maxAbsDiff(g.dataSync(), gPart[i]!.dataSync()) <= 1e-5, `grad ${i} chunk ${chunk}`));
  }
});

/** `wide`: weights dominate (8×8 latents, 128–256 channels), as in SD1.5 at low resolution. */
function setup(wide = false) {
  const config = wide ? { ...MID_UNET, block_out_channels: [128, 256, 256], cross_attention_dim: 32, attention_head_dim: 8 } : MID_UNET;
  const unet = new UNet2DConditionModel(config, { seed: 5, trainable: false });
  const cn = ControlNetModel.fromUnet(unet, { conditioningEmbeddingOutChannels: [16, 32, 64], seed: 6 });
  // non-zero zero-convs, so the UNet path matters for the ControlNet gradients
  for (const [name, p] of cn.namedParameters()) {
    if (name.startsWith("controlnet_") && name.endsWith("weight")) p.variable.assign(tf.randomNormal(p.variable.shape, 0, 0.2, "float32", 8));
  }
  const b = 1;
  const lat = wide ? 8 : 32;
  const sample = tf.randomNormal([b, lat, lat, 4], 0, 1, "float32", 11) as tf.Tensor4D;
  const ehs = tf.randomNormal([b, 9, config.cross_attention_dim], 0, 1, "float32", 12) as tf.Tensor3D;
  const cond = tf.randomUniform([b, lat * 4, lat * 4, 3], 0, 1, "float32", 13) as tf.Tensor4D;
  const target = tf.randomNormal([b, lat, lat, 4], 0, 1, "float32", 14);
  const step = () => {
    const vars = cn.trainableVariables();
    const { value, grads } = tf.variableGrads(() => {
      const r = cn.forward(sample, 900, ehs, cond);
      const pred = unet.forward(sample, 900, ehs, { downBlockAdditionalResiduals: r.downBlockResSamples, midBlockAdditionalResidual: r.midBlockResSample });
      return tf.mean(tf.square(tf.sub(pred, target))) as tf.Scalar;
    }, vars);
    return { value, grads };
  };
  const forwardOnly = () => tf.tidy(() => {
    const r = cn.forward(sample, 900, ehs, cond);
    return unet.forward(sample, 900, ehs, { downBlockAdditionalResiduals: r.downBlockResSamples, midBlockAdditionalResidual: r.midBlockResSample });
  });
  return { unet, cn, step, forwardOnly, dispose: () => { unet.dispose(); cn.dispose(); tf.dispose([sample, ehs, cond, target]); } };
}

test("gradient checkpointing: same ControlNet gradients, lower peak memory (mid-size UNet+ControlNet)", async () => {
  await testEngine();
  const s = setup();
  assert.equal(s.unet.trainableVariables().length, 0);
  const plain = await measurePeak(() => s.step());
  s.cn.enableGradientCheckpointing();
  s.unet.enableGradientCheckpointing();
  const ckpt = await measurePeak(() => s.step());
  assert.equal(plain.result.value.dataSync()[0], ckpt.result.value.dataSync()[0]);
  const names = Object.keys(plain.result.grads);
  assert.equal(names.length, s.cn.trainableVariables().length);
  let worst = 0;
  for (const n of names) worst = Math.max(worst, relErr(ckpt.result.grads[n]!.dataSync(), plain.result.grads[n]!.dataSync()));
  assert.ok(worst <= 1e-5, `checkpointed gradients differ: ${worst}`);
  console.log(`peak delta fwd+bwd: plain ${(plain.peakDeltaBytes / 2 ** 20).toFixed(1)} MiB, checkpointed ${(ckpt.peakDeltaBytes / 2 ** 20).toFixed(1)} MiB`);
  assert.ok(ckpt.peakDeltaBytes < 0.8 * plain.peakDeltaBytes, `checkpointing did not lower the peak: ${ckpt.peakDeltaBytes} vs ${plain.peakDeltaBytes}`);
  tf.dispose([plain.result.value, ckpt.result.value, ...Object.values(plain.result.grads), ...Object.values(ckpt.result.grads)]);
  s.dispose();
});

test("chunked attention: same output, lower peak memory in the forward and in the backward", async () => {
  await testEngine();
  // chunking is a mechanism of attention composed from tfjs ops; the native engine's fused kernel (below) replaces it
  const wasFused = useFusedKernels(false);
  try {
    await chunkedAttentionLowersPeaks();
  } finally {
    useFusedKernels(wasFused);
  }
});

async function chunkedAttentionLowersPeaks(): Promise<void> {
  const s = setup();
  const full = await measurePeak(() => s.forwardOnly());
  s.unet.setAttentionChunkSize(128);
  s.cn.setAttentionChunkSize(128);
  const chunked = await measurePeak(() => s.forwardOnly());
  assert.ok(maxAbsDiff(full.result.dataSync(), chunked.result.dataSync()) <= 1e-5);
  console.log(`peak delta forward: full ${(full.peakDeltaBytes / 2 ** 20).toFixed(1)} MiB, chunked ${(chunked.peakDeltaBytes / 2 ** 20).toFixed(1)} MiB`);
  assert.ok(chunked.peakDeltaBytes < 0.8 * full.peakDeltaBytes, `chunking did not lower the forward peak: ${chunked.peakDeltaBytes} vs ${full.peakDeltaBytes}`);

  const chunkedStep = await measurePeak(() => s.step());
  s.unet.setAttentionChunkSize(0);
  s.cn.setAttentionChunkSize(0);
  const fullStep = await measurePeak(() => s.step());
  console.log(`peak delta fwd+bwd: full ${(fullStep.peakDeltaBytes / 2 ** 20).toFixed(1)} MiB, chunked ${(chunkedStep.peakDeltaBytes / 2 ** 20).toFixed(1)} MiB`);
  assert.ok(chunkedStep.peakDeltaBytes < fullStep.peakDeltaBytes);
  let worst = 0;
  for (const n of Object.keys(fullStep.result.grads)) worst = Math.max(worst, relErr(chunkedStep.result.grads[n]!.dataSync(), fullStep.result.grads[n]!.dataSync()));
  assert.ok(worst <= 1e-4, `chunked-attention gradients differ: ${worst}`);
  // both at once: checkpointed blocks whose attention is chunked (nested recomputation) give the same gradients
  s.cn.enableGradientCheckpointing();
  s.unet.enableGradientCheckpointing();
  s.unet.setAttentionChunkSize(100);
  s.cn.setAttentionChunkSize(100);
  const both = await measurePeak(() => s.step());
  console.log(`peak delta fwd+bwd: checkpointing + chunked attention ${(both.peakDeltaBytes / 2 ** 20).toFixed(1)} MiB`);
  assert.ok(both.peakDeltaBytes < chunkedStep.peakDeltaBytes);
  worst = 0;
  for (const n of Object.keys(fullStep.result.grads)) worst = Math.max(worst, relErr(both.result.grads[n]!.dataSync(), fullStep.result.grads[n]!.dataSync()));
  assert.ok(worst <= 1e-4, `checkpointed + chunked gradients differ: ${worst}`);
  s.dispose();
}

test("fused attention (native): the same forward and gradients as composed full attention, and a lower step peak than chunking", async (t) => {
  await testEngine();
  if (!hasFusedAttention()) return t.skip("this engine has no fused attention kernel (wasm, cpu): attention is composed, tested above");
  const s = setup();
  // composed attention, chunked and full, then the fused kernel on the same step
  useFusedKernels(false);
  const [chunked, full] = await (async () => {
    try {
      s.unet.setAttentionChunkSize(128);
      s.cn.setAttentionChunkSize(128);
      const c = await measurePeak(() => s.step());
      s.unet.setAttentionChunkSize(0);
      s.cn.setAttentionChunkSize(0);
      return [c, await measurePeak(() => s.step())] as const;
    } finally {
      useFusedKernels(true);
    }
  })();
  const fused = await measurePeak(() => s.step());
  console.log(`peak delta fwd+bwd: composed ${(full.peakDeltaBytes / 2 ** 20).toFixed(1)} MiB, chunked ${(chunked.peakDeltaBytes / 2 ** 20).toFixed(1)} MiB, fused ${(fused.peakDeltaBytes / 2 ** 20).toFixed(1)} MiB`);
  assert.ok(fused.peakDeltaBytes < chunked.peakDeltaBytes, `fused ${fused.peakDeltaBytes} vs chunked ${chunked.peakDeltaBytes}`);
  assert.ok(Math.abs(fused.result.value.dataSync()[0]! - full.result.value.dataSync()[0]!) <= 1e-5 * Math.abs(full.result.value.dataSync()[0]!));
  let worst = 0;
  for (const n of Object.keys(full.result.grads)) worst = Math.max(worst, relErr(fused.result.grads[n]!.dataSync(), full.result.grads[n]!.dataSync()));
  assert.ok(worst <= 1e-4, `fused-attention gradients differ: ${worst}`);
  s.dispose();
});

test("weight gradients sent to the host during backward: the same gradients, a lower device peak", async () => {
  await testEngine();
  const s = setup(true);
  s.cn.enableGradientCheckpointing();
  s.unet.enableGradientCheckpointing();
  const dev = await measurePeak(() => s.step());
  const host = new Map<tf.Tensor, Float32Array>();
  const sunk = await measurePeak(() => withWeightGradientSink((w, g) => {
    assert.ok(!host.has(w), "one gradient per weight");
    host.set(w, Float32Array.from(g.dataSync() as Float32Array));
    g.dispose();
  }, () => s.step()));
  assert.equal(sunk.result.value.dataSync()[0], dev.result.value.dataSync()[0]);
  let hostBytes = 0;
  let worst = 0;
  const vars = s.cn.trainableVariables();
  for (const v of vars) {
    const onDevice = sunk.result.grads[v.name];
    const onHost = host.get(v);
    assert.ok(Boolean(onDevice) !== Boolean(onHost), `${v.name}: its gradient must be in exactly one place`);
    const got = onHost ?? (onDevice!.dataSync() as Float32Array);
    if (onHost) hostBytes += onHost.byteLength;
    worst = Math.max(worst, relErr(got, dev.result.grads[v.name]!.dataSync()));
  }
  assert.ok(worst <= 1e-5, `host gradients differ: ${worst}`);
  assert.ok(hostBytes > 0.5 * vars.reduce((a, v) => a + v.size * 4, 0), "most gradients (the checkpointed blocks') went to the host");
  console.log(`peak delta fwd+bwd (checkpointed): gradients on the device ${(dev.peakDeltaBytes / 2 ** 20).toFixed(1)} MiB, ` +
    `sent to the host ${(sunk.peakDeltaBytes / 2 ** 20).toFixed(1)} MiB (${(hostBytes / 2 ** 20).toFixed(1)} MiB of gradients on the host)`);
  assert.ok(sunk.peakDeltaBytes < dev.peakDeltaBytes - 0.5 * hostBytes, `the device peak did not drop by half the host gradients: ${sunk.peakDeltaBytes} vs ${dev.peakDeltaBytes}`);
  tf.dispose([dev.result.value, sunk.result.value, ...Object.values(dev.result.grads), ...Object.values(sunk.result.grads)]);
  s.dispose();
});
