/** Frozen-weight streaming gives the same gradients as resident weights, with the blocks' weights off the device. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { testEngine, maxAbsDiff } from "../helpers.js";
import { tf, memoryInfo } from "../../lib/engine/index.js";
import { ControlNetModel, UNet2DConditionModel } from "../../lib/models/index.js";
import { DDPMScheduler } from "../../lib/schedulers/index.js";
import { controlnetGradients } from "../../lib/training/step.js";
import { streamFrozenWeights } from "../../lib/planner/index.js";

const TINY_UNET = {
  block_out_channels: [32, 64], layers_per_block: 1, in_channels: 4, out_channels: 4,
  down_block_types: ["CrossAttnDownBlock2D", "DownBlock2D"], up_block_types: ["UpBlock2D", "CrossAttnUpBlock2D"],
  cross_attention_dim: 32, attention_head_dim: 8, norm_num_groups: 32,
};

test("streamFrozenWeights: same loss and ControlNet gradients, UNet block weights live on the host", async () => {
  await testEngine();
  // Loaded rather than initialised: Module.initialize leaves each variable's initial tensor alive (sharing its
  // buffer), so disposing an initialised variable frees nothing; loadState does not have that leak.
  const src = new UNet2DConditionModel(TINY_UNET, { seed: 1 });
  const unet = new UNet2DConditionModel(TINY_UNET, { shapeOnly: true });
  unet.loadState(src.stateDict());
  unet.trainable = false;
  // not copied from the UNet: copies share buffers with the UNet until written, which would keep them on the device
  const cn = ControlNetModel.fromUnet(unet, { conditioningEmbeddingOutChannels: [16, 32], seed: 2, loadWeightsFromUnet: false });
  unet.enableGradientCheckpointing(true);
  cn.enableGradientCheckpointing(true);
  const sched = DDPMScheduler.fromConfig({ beta_schedule: "scaled_linear", beta_start: 0.00085, beta_end: 0.012, num_train_timesteps: 1000 });
  const x = {
    latents: tf.randomNormal([1, 8, 8, 4], 0, 1, "float32", 3) as tf.Tensor4D,
    noise: tf.randomNormal([1, 8, 8, 4], 0, 1, "float32", 4) as tf.Tensor4D,
    encoderHiddenStates: tf.randomNormal([1, 8, 32], 0, 1, "float32", 5) as tf.Tensor3D,
    conditioning: tf.randomUniform([1, 16, 16, 3], 0, 1, "float32", 6) as tf.Tensor4D,
    timesteps: [321],
  };
  const a = controlnetGradients(unet, cn, sched, x);
  const before = memoryInfo().liveBytes;
  const stream = streamFrozenWeights(unet);
  const after = memoryInfo().liveBytes;
  assert.ok(stream.blocks.length >= 5);
  assert.equal(before - after, stream.hostBytes, `the streamed weights left the device (${before - after} vs ${stream.hostBytes})`);
  const b = controlnetGradients(unet, cn, sched, x);
  // every block in the forward, and again in backward for the up-path blocks the ControlNet's residuals feed
  // (the UNet's down and mid blocks do not depend on the ControlNet, so they are not recomputed)
  assert.ok(stream.loads > stream.blocks.length, `blocks loaded in forward and recompute (${stream.loads})`);
  assert.equal(memoryInfo().liveBytes - after, [...b.grads.values()].reduce((s, g) => s + g.size * 4, 0), "nothing but the gradients stays");
  assert.ok(Math.abs(a.loss - b.loss) < 1e-6);
  for (const [name, g] of a.grads) assert.ok(maxAbsDiff(g.dataSync(), b.grads.get(name)!.dataSync()) < 1e-6, name);
  assert.throws(() => streamFrozenWeights(new UNet2DConditionModel(TINY_UNET, { shapeOnly: true })), /gradient checkpointing/);
});
