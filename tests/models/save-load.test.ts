/** fromUnet → savePretrained → the saved folder holds exactly our tensors (PyTorch layout), and loads back. */
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { tf } from "../../lib/engine/index.js";
import { loadModelFolder } from "../../lib/io/diffusers.js";
import { testEngine, maxAbsDiff, tempDir } from "../helpers.js";
import { CLIPTextModel, ControlNetModel, UNet2DConditionModel } from "../../lib/models/index.js";
import { TINY_CLIP, TINY_UNET } from "./tiny.js";

test("ControlNet.fromUnet → savePretrained: config + safetensors with identical tensors; fromPretrained gives the same outputs", async () => {
  await testEngine();
  const dir = tempDir("cn-models-");
  const unet = new UNet2DConditionModel(TINY_UNET, { seed: 12 });
  const cn = ControlNetModel.fromUnet(unet, { conditioningEmbeddingOutChannels: [16, 32], seed: 13 });
  for (const [name, p] of cn.namedParameters()) {
    if (name.startsWith("controlnet_")) p.variable.assign(tf.randomNormal(p.variable.shape, 0, 0.1, "float32", 3));
  }
  cn.savePretrained(path.join(dir, "controlnet"));
  const { config, tensors } = loadModelFolder(path.join(dir, "controlnet"));
  assert.equal(config._class_name, "ControlNetModel");
  assert.deepEqual(config.block_out_channels, [4, 8]);
  assert.deepEqual(config.conditioning_embedding_out_channels, [16, 32]);
  assert.equal(config.cross_attention_dim, 32);
  const mine = cn.stateDict();
  assert.deepEqual([...tensors.keys()].sort(), [...mine.keys()].sort());
  for (const [k, t] of mine) {
    assert.deepEqual(tensors.get(k)!.shape, t.shape, k);
    assert.equal(maxAbsDiff(tensors.get(k)!.data, t.data), 0, k);
  }
  // a conv weight is stored [out,in,kh,kw]
  assert.deepEqual(tensors.get("conv_in.weight")!.shape, [4, 4, 3, 3]);
  assert.deepEqual(tensors.get("controlnet_cond_embedding.conv_out.weight")!.shape, [4, 32, 3, 3]);
  const back = ControlNetModel.fromPretrained(path.join(dir, "controlnet"));
  const sample = tf.randomNormal([1, 8, 8, 4], 0, 1, "float32", 1) as tf.Tensor4D;
  const ehs = tf.randomNormal([1, 5, 32], 0, 1, "float32", 2) as tf.Tensor3D;
  const cond = tf.randomUniform([1, 16, 16, 3], 0, 1, "float32", 3) as tf.Tensor4D;
  const a = cn.forward(sample, 77, ehs, cond);
  const b = back.forward(sample, 77, ehs, cond);
  assert.equal(maxAbsDiff(a.midBlockResSample.dataSync(), b.midBlockResSample.dataSync()), 0);
  // loadState reports every problem at once
  const bad = new Map(tensors);
  bad.delete("conv_in.bias");
  bad.set("nonsense.weight", tensors.get("conv_in.bias")!);
  bad.set("controlnet_mid_block.bias", { dtype: "float32", shape: [3], data: new Float32Array(3) });
  assert.throws(() => back.loadState(bad), /shape mismatch.*controlnet_mid_block\.bias.*missing 1 key.*conv_in\.bias.*unexpected 1 key.*nonsense\.weight/s);
  const unetDir = path.join(dir, "unet");
  unet.savePretrained(unetDir);
  const u2 = UNet2DConditionModel.fromPretrained(unetDir);
  assert.equal(maxAbsDiff(unet.forward(sample, 5, ehs).dataSync(), u2.forward(sample, 5, ehs).dataSync()), 0);
  for (const m of [unet, cn, back, u2]) m.dispose();
});

test("CLIPTextModel saves a transformers folder (text_model.* keys, model.safetensors) and loads either key style", async () => {
  await testEngine();
  const dir = tempDir("cn-clip-");
  const clip = new CLIPTextModel(TINY_CLIP, { seed: 2 });
  clip.savePretrained(dir);
  assert.ok(fs.existsSync(path.join(dir, "model.safetensors")));
  const { config, tensors } = loadModelFolder(dir);
  assert.deepEqual(config.architectures, ["CLIPTextModel"]);
  assert.ok(tensors.has("text_model.final_layer_norm.weight"));
  const unprefixed = new Map([...tensors].map(([k, v]) => [k.replace(/^text_model\./, ""), v]));
  const back = new CLIPTextModel(config, { shapeOnly: true });
  back.loadState(unprefixed);
  const ids = [[0, 5, 6, 2]];
  assert.equal(maxAbsDiff(clip.forward(ids).lastHiddenState.dataSync(), back.forward(ids).lastHiddenState.dataSync()), 0);
  clip.dispose();
  back.dispose();
});
