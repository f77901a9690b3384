/** AutoencoderKL and CLIPTextModel: structure and behaviour (numeric parity with diffusers in fixtures.test.ts). */
import { test } from "node:test";
import assert from "node:assert/strict";
import { tf } from "../../lib/engine/index.js";
import { testEngine, maxAbs, maxAbsDiff } from "../helpers.js";
import { AutoencoderKL, CLIPTextModel } from "../../lib/models/index.js";
import { TINY_CLIP, TINY_VAE } from "./tiny.js";

test("AutoencoderKL: encode → posterior (mean/logvar/sample/mode), decode, names", async () => {
  await testEngine();
  const vae = new AutoencoderKL(TINY_VAE, { seed: 2 });
  const names = [...vae.parameterSpecs().keys()];
  for (const n of ["encoder.down_blocks.0.downsamplers.0.conv.weight", "encoder.mid_block.attentions.0.group_norm.weight",
    "encoder.mid_block.attentions.0.to_q.bias", "decoder.up_blocks.0.upsamplers.0.conv.weight", "quant_conv.weight", "post_quant_conv.bias",
    "decoder.up_blocks.1.resnets.1.conv2.weight", "encoder.conv_out.weight"]) assert.ok(names.includes(n), n);
  assert.deepEqual(vae.parameterSpecs().get("encoder.conv_out.weight")!.shape, [8, 8, 3, 3]);
  assert.ok(!names.includes("decoder.up_blocks.1.resnets.2.conv2.weight")); // layers_per_block 1 → 2 per up block
  const x = tf.randomUniform([2, 32, 32, 3], -1, 1, "float32", 3) as tf.Tensor4D;
  const post = vae.encode(x);
  assert.deepEqual(post.mean.shape, [2, 16, 16, 4]);
  const a = post.sample({ seed: 5 });
  const b = post.sample({ seed: 5 });
  assert.equal(maxAbsDiff(a.dataSync(), b.dataSync()), 0);
  const noise = tf.randomNormal(post.mean.shape, 0, 1, "float32", 9);
  const s = post.sample({ noise });
  const expect = tf.add(post.mean, tf.mul(tf.exp(tf.mul(post.logvar, 0.5)), noise));
  assert.ok(maxAbsDiff(s.dataSync(), expect.dataSync()) < 1e-6);
  assert.ok(post.logvar.max().dataSync()[0]! <= 20 && post.logvar.min().dataSync()[0]! >= -30);
  const y = vae.decode(post.mode());
  assert.deepEqual(y.shape, [2, 32, 32, 3]);
  assert.ok(y.dataSync().every(Number.isFinite));
  assert.equal(vae.scalingFactor, 0.18215);
  assert.equal(vae.scaleFactor, 2);
  post.dispose();
  vae.dispose();
});

test("CLIPTextModel: causal, per-layer hidden states, pooled EOS, transformers names", async () => {
  await testEngine();
  const clip = new CLIPTextModel(TINY_CLIP, { seed: 4 });
  const specs = clip.parameterSpecs();
  assert.deepEqual(specs.get("text_model.embeddings.token_embedding.weight")!.shape, [1000, 32]);
  assert.deepEqual(specs.get("text_model.encoder.layers.4.mlp.fc1.weight")!.shape, [37, 32]);
  assert.ok(specs.has("text_model.final_layer_norm.bias"));
  const ids = [[0, 15, 99, 7, 2, 1, 1], [0, 15, 99, 8, 500, 2, 1]];
  const out = clip.forward(ids, { outputHiddenStates: true });
  assert.deepEqual(out.lastHiddenState.shape, [2, 7, 32]);
  assert.equal(out.hiddenStates!.length, 6);
  const h = out.lastHiddenState.arraySync();
  // causal: positions before the first difference (index 3) are identical across the two rows
  for (let t = 0; t < 3; t++) assert.ok(maxAbsDiff(h[0]![t]!, h[1]![t]!) < 1e-6, `position ${t}`);
  assert.ok(maxAbsDiff(h[0]![3]!, h[1]![3]!) > 1e-4);
  // pooled: eos_token_id 2 → argmax of the ids (legacy): row 0 → index 2 (99), row 1 → index 4 (500)
  const pooled = out.pooledOutput.arraySync();
  assert.ok(maxAbsDiff(pooled[0]!, h[0]![2]!) === 0 && maxAbsDiff(pooled[1]!, h[1]![4]!) === 0);
  // last hidden state is the final norm of the last layer's output
  const normed = clip.finalLayerNorm.forward(out.hiddenStates![5]!);
  assert.ok(maxAbsDiff(normed.dataSync(), out.lastHiddenState.dataSync()) < 1e-6);
  // gelu variant builds and differs
  const gelu = new CLIPTextModel({ ...TINY_CLIP, hidden_act: "gelu" }, { shapeOnly: true });
  gelu.loadState(clip.stateDict());
  assert.ok(maxAbs(tf.sub(gelu.forward(ids).lastHiddenState, out.lastHiddenState).dataSync()) > 1e-5);
  // old checkpoints carry position_ids: ignored, not "unexpected"
  const sd = clip.stateDict();
  sd.set("text_model.embeddings.position_ids", { dtype: "int32", shape: [1, 77], data: new Int32Array(77) });
  clip.loadState(sd);
  assert.throws(() => clip.loadState(new Map([...sd].filter(([k]) => !k.includes("fc2")))), /missing 10 key/);
  clip.dispose();
  gelu.dispose();
});
