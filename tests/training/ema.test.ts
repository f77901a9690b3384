import { before, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { tf } from "../../lib/engine/index.js";
import { EMAModel } from "../../lib/training/ema.js";
import { ControlNetTrainer, type TrainingOptions } from "../../lib/training/trainer.js";
import { loadModelFolder } from "../../lib/io/diffusers.js";
import { testEngine, maxAbsDiff, maxFolderDiff, tempDir } from "../helpers.js";
import { tinyComponents, tinyDataset, TINY_RESOLUTION } from "./tiny.js";

before(async () => {
  await testEngine();
});

test("EMAModel: diffusers' decay schedule; the first update copies, later ones move by 1 − d; withAveraged restores", async () => {
  const v = tf.variable(tf.tensor1d([1, 2]));
  const ema = new EMAModel(new Map([["w", v]]), 0.9);
  assert.equal(ema.getDecay(1), 0);
  assert.equal(ema.getDecay(2), 2 / 11);
  assert.equal(ema.getDecay(1000), 0.9); // (1+999)/(10+999) > 0.9: capped
  v.assign(tf.tensor1d([5, 6]));
  ema.step(); // d = 0: the average becomes the weights
  v.assign(tf.tensor1d([16, 28]));
  ema.step(); // d = 2/11: 5 + (9/11)(16 − 5) = 14, 6 + (9/11)(28 − 6) = 24
  const seen = await ema.withAveraged(() => Array.from(v.dataSync()));
  assert.ok(maxAbsDiff(Float32Array.from(seen), Float32Array.from([14, 24])) < 1e-5, `average ${seen}`);
  assert.deepEqual(Array.from(v.dataSync()), [16, 28]); // the trained weights are back
  ema.copyTo();
  assert.ok(maxAbsDiff(v.dataSync() as Float32Array, Float32Array.from([14, 24])) < 1e-5);
  ema.dispose();
  assert.throws(() => ema.copyTo(), /moving average was disposed/);
  assert.throws(() => new EMAModel(new Map(), 1.5), /ema_decay must be in \[0, 1\] \(got 1.5\)/);
});

const tmp = () => tempDir("ema-");
const opts = (output_dir: string): TrainingOptions => ({
  output_dir, resolution: TINY_RESOLUTION, train_batch_size: 2, learning_rate: 1e-3, max_train_steps: 4, seed: 7,
  lr_scheduler: "constant", checkpointing_steps: 2, use_ema: true,
});

test("use_ema: checkpoints hold controlnet_ema/, a resumed run's average equals an uninterrupted one's, saveFinal saves the average", async () => {
  const dirA = tmp();
  const a = new ControlNetTrainer(tinyComponents(), await tinyDataset(), opts(dirA));
  await a.train();
  const raw = new Map([...a.c.controlnet.stateDict()].map(([k, t]) => [k, t.data as Float32Array]));
  a.saveFinal();
  await a.close();
  assert.ok(fs.existsSync(path.join(dirA, "checkpoint-2", "controlnet_ema", "diffusion_pytorch_model.safetensors")));
  const saved = new Map([...loadModelFolder(dirA).tensors].map(([k, t]) => [k, t.data as Float32Array]));
  // what saveFinal wrote is the average (checkpoint-4 holds the same), not the last weights
  assert.equal(maxFolderDiff(dirA, path.join(dirA, "checkpoint-4", "controlnet_ema")), 0);
  const fromRaw = Math.max(...[...saved].map(([k, w]) => maxAbsDiff(w, raw.get(k)!)));
  assert.ok(fromRaw > 1e-6, "the saved ControlNet equals the last trained weights: no averaging happened");

  const dirB = tmp();
  const b1 = new ControlNetTrainer(tinyComponents(), await tinyDataset(), opts(dirB));
  await b1.train({ until: 2 });
  await b1.close();
  const b2 = new ControlNetTrainer(tinyComponents(), await tinyDataset(), { ...opts(dirB), resume_from_checkpoint: "latest" });
  assert.equal(b2.ema?.optimizationStep, 2);
  await b2.train();
  b2.saveFinal();
  await b2.close();
  const d = maxFolderDiff(dirA, dirB);
  assert.ok(d <= 1e-6, `the resumed run's saved average differs from the uninterrupted one's by ${d}`);
});
