/** Internal consistency of the UNet and ControlNet (parity with diffusers itself lives in fixtures.test.ts). */
import { test } from "node:test";
import assert from "node:assert/strict";
import { tf } from "../../lib/engine/index.js";
import { testEngine, maxAbs, maxAbsDiff } from "../helpers.js";
import { ControlNetModel, UNet2DConditionModel } from "../../lib/models/index.js";
import { TINY_UNET } from "./tiny.js";

function inputs(b: number, h: number, seed: number) {
  return {
    sample: tf.randomNormal([b, h, h, 4], 0, 1, "float32", seed) as tf.Tensor4D,
    ehs: tf.randomNormal([b, 7, 32], 0, 1, "float32", seed + 1) as tf.Tensor3D,
    cond: tf.randomUniform([b, h * 2, h * 2, 3], 0, 1, "float32", seed + 2) as tf.Tensor4D,
  };
}

test("tiny UNet forward: shape, finite, deterministic init, leaks nothing", async () => {
  await testEngine();
  const unet = new UNet2DConditionModel(TINY_UNET, { seed: 3 });
  const again = new UNet2DConditionModel(TINY_UNET, { seed: 3 });
  const { sample, ehs } = inputs(2, 16, 11);
  const before = tf.memory().numTensors;
  const out = unet.forward(sample, 10, ehs);
  assert.equal(tf.memory().numTensors, before + 1, "forward leaked tensors");
  assert.deepEqual(out.shape, [2, 16, 16, 4]);
  const v = out.dataSync();
  assert.ok(v.every(Number.isFinite));
  assert.ok(maxAbs(v) > 0);
  const out2 = again.forward(sample, [10, 10], ehs);
  assert.equal(maxAbsDiff(v, out2.dataSync()), 0);
  // odd latent size: the up path follows the skip sizes (diffusers' forward_upsample_size)
  const odd = unet.forward(tf.randomNormal([1, 9, 9, 4], 0, 1, "float32", 5) as tf.Tensor4D, 3, tf.slice(ehs, [0, 0, 0], [1, -1, -1]));
  assert.deepEqual(odd.shape, [1, 9, 9, 4]);
  tf.dispose([out, out2, odd, sample, ehs]);
  unet.dispose();
  again.dispose();
});

test("ControlNet.fromUnet: copies the encoder, zero convs make the residuals zero, residuals shift the UNet", async () => {
  await testEngine();
  const unet = new UNet2DConditionModel(TINY_UNET, { seed: 4 });
  const cn = ControlNetModel.fromUnet(unet, { conditioningEmbeddingOutChannels: [16, 32], seed: 9 });
  assert.equal(cn.config.cross_attention_dim, 32);
  const up = unet.namedParameters();
  for (const [name, p] of cn.namedParameters()) {
    if (/^(conv_in|time_embedding|down_blocks|mid_block)\./.test(name)) {
      assert.equal(maxAbsDiff(p.variable.dataSync(), up.get(name)!.variable.dataSync()), 0, name);
      assert.notEqual(p.variable, up.get(name)!.variable, "fromUnet must copy, not share");
    }
  }
  assert.equal(cn.controlnet_down_blocks.length, 6); // conv_in + 2 + downsampler + 2
  const { sample, ehs, cond } = inputs(2, 16, 21);
  const res = cn.forward(sample, [5, 700], ehs, cond);
  assert.equal(res.downBlockResSamples.length, 6);
  for (const r of [...res.downBlockResSamples, res.midBlockResSample]) assert.equal(maxAbs(r.dataSync()), 0);
  const plain = unet.forward(sample, [5, 700], ehs);
  const withRes = unet.forward(sample, [5, 700], ehs, {
    downBlockAdditionalResiduals: res.downBlockResSamples,
    midBlockAdditionalResidual: res.midBlockResSample,
  });
  assert.equal(maxAbsDiff(plain.dataSync(), withRes.dataSync()), 0);

  // give the zero convs weights: residuals become nonzero, scale linearly, and change the UNet output
  for (const [name, p] of cn.namedParameters()) {
    if (name.startsWith("controlnet_") && name.endsWith("weight")) p.variable.assign(tf.randomNormal(p.variable.shape, 0, 0.3, "float32", 7));
  }
  const r1 = cn.forward(sample, [5, 700], ehs, cond);
  const r2 = cn.forward(sample, [5, 700], ehs, cond, { conditioningScale: 0.5 });
  const g = cn.forward(sample, [5, 700], ehs, cond, { guessMode: true });
  assert.ok(maxAbs(r1.midBlockResSample.dataSync()) > 0);
  r1.downBlockResSamples.forEach((d, i) => {
    const a = d.dataSync();
    const b = r2.downBlockResSamples[i]!.dataSync();
    assert.ok(maxAbsDiff(a.map((x) => x * 0.5), b) < 1e-6);
    const scale = 10 ** (-1 + i / 6);
    assert.ok(maxAbsDiff(a.map((x) => x * scale), g.downBlockResSamples[i]!.dataSync()) < 1e-5, `guess-mode scale ${i}`);
  });
  const shifted = unet.forward(sample, [5, 700], ehs, {
    downBlockAdditionalResiduals: r1.downBlockResSamples,
    midBlockAdditionalResidual: r1.midBlockResSample,
  });
  assert.ok(maxAbsDiff(plain.dataSync(), shifted.dataSync()) > 1e-4);
  unet.dispose();
  cn.dispose();
});

test("bgr channel order flips the control image; global pooling averages residuals", async () => {
  await testEngine();
  const unet = new UNet2DConditionModel(TINY_UNET, { seed: 4 });
  const rgb = ControlNetModel.fromUnet(unet, { conditioningEmbeddingOutChannels: [16, 32], seed: 9 });
  const bgr = ControlNetModel.fromUnet(unet, { conditioningEmbeddingOutChannels: [16, 32], seed: 9, controlnetConditioningChannelOrder: "bgr" });
  for (const m of [rgb, bgr]) {
    for (const [name, p] of m.namedParameters()) {
      if (name.startsWith("controlnet_") && name.endsWith("weight")) p.variable.assign(tf.randomNormal(p.variable.shape, 0, 0.3, "float32", 7));
    }
  }
  const { sample, ehs, cond } = inputs(1, 8, 31);
  const a = rgb.forward(sample, 50, ehs, tf.reverse(cond, 3) as tf.Tensor4D);
  const b = bgr.forward(sample, 50, ehs, cond);
  assert.ok(maxAbsDiff(a.midBlockResSample.dataSync(), b.midBlockResSample.dataSync()) < 1e-6);
  // an image embedded beforehand (embedCondition, channel order included) gives the same residuals
  const embedded = bgr.embedCondition(cond);
  const e = bgr.forward(sample, 50, ehs, embedded);
  assert.equal(maxAbsDiff(e.midBlockResSample.dataSync(), b.midBlockResSample.dataSync()), 0);
  assert.equal(maxAbsDiff(e.downBlockResSamples[1]!.dataSync(), b.downBlockResSamples[1]!.dataSync()), 0);
  const pooled = new ControlNetModel({ ...rgb.config, global_pool_conditions: true }, { shapeOnly: true });
  pooled.loadState(rgb.stateDict());
  const p = pooled.forward(sample, 50, ehs, tf.reverse(cond, 3) as tf.Tensor4D);
  assert.deepEqual(p.downBlockResSamples[0]!.shape, [1, 1, 1, 4]);
  const mean = tf.mean(a.downBlockResSamples[0]!, [1, 2], true);
  assert.ok(maxAbsDiff(mean.dataSync(), p.downBlockResSamples[0]!.dataSync()) < 1e-6);
  for (const m of [unet, rgb, bgr, pooled]) m.dispose();
});
