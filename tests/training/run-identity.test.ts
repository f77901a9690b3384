/** Issue 25 #3: the starting ControlNet and the data's content are part of a run's identity (a run from other pretrained
 *  weights, or on another dataset of the same length, is another run). */
import { before, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import { ControlNetTrainer, weightsFingerprint } from "../../lib/training/trainer.js";
import { testEngine, tempDir } from "../helpers.js";
import { createDataset } from "../../lib/data/index.js";
import { tinyComponents, tinyDataset, TINY_RESOLUTION } from "./tiny.js";

before(async () => {
  await testEngine();
});

test("a run from other starting weights is another run: refused beside the first one's checkpoints, fresh or by latest", async () => {
  const dir = tempDir("identity-");
  const opts = { output_dir: dir, resolution: TINY_RESOLUTION, train_batch_size: 2, learning_rate: 1e-3, max_train_steps: 2, checkpointing_steps: 1, seed: 1 };
  const first = tinyComponents();
  const a = new ControlNetTrainer(first, await tinyDataset(), { ...opts, init_weights: "unet" });
  await a.train();
  await a.close();
  // the trained weights as a "pretrained" start differ from the untrained ones, and so do their fingerprints
  const trained = weightsFingerprint(first.controlnet);
  const fresh = tinyComponents();
  assert.notEqual(weightsFingerprint(fresh.controlnet), trained);
  assert.equal(weightsFingerprint(tinyComponents().controlnet), weightsFingerprint(fresh.controlnet), "the same weights, the same fingerprint");
  const before = fs.readdirSync(dir).sort();
  const ds = await tinyDataset();
  const other = { ...opts, init_weights: `pretrained ${trained}` };
  assert.throws(() => new ControlNetTrainer(fresh, ds, other), /holds another run's checkpoints \(checkpoint-\d: starting ControlNet \(--controlnet_model_name_or_path\) unet there, pretrained [0-9a-f]{12} here\)/);
  assert.throws(() => new ControlNetTrainer(fresh, ds, { ...other, resume_from_checkpoint: "latest" }), /latest: .*checkpoint-2 is another run's \(starting ControlNet/);
  assert.deepEqual(fs.readdirSync(dir).sort(), before, "the folder is untouched");
  // the same start continues
  const again = new ControlNetTrainer(tinyComponents(), ds, { ...opts, init_weights: "unet", max_train_steps: 3, resume_from_checkpoint: "latest" });
  assert.equal(again.globalStep, 2);
  await again.close();
});

test("another dataset of the same length is another run; the same data rebuilt (or moved) continues", async () => {
  const dir = tempDir("identity-data-");
  const opts = { output_dir: dir, resolution: TINY_RESOLUTION, train_batch_size: 2, learning_rate: 1e-3, max_train_steps: 1, checkpointing_steps: 1, seed: 1 };
  const data = await tinyDataset();
  const a = new ControlNetTrainer(tinyComponents(), data, opts);
  await a.train();
  await a.close();
  // synthetic rows drawn from another seed: 8 rows as before, other pictures and captions
  const other = await createDataset({ synthetic: { count: 8, seed: 4, resolution: TINY_RESOLUTION }, resolution: TINY_RESOLUTION });
  assert.equal(other.length, data.length);
  assert.match(other.fingerprint ?? "", /^[0-9a-f]{12}$/);
  assert.notEqual(other.fingerprint, data.fingerprint);
  const before = fs.readdirSync(dir).sort();
  assert.throws(() => new ControlNetTrainer(tinyComponents(), other, opts), /holds another run's checkpoints \(checkpoint-1: dataset content \(fingerprint of sampled rows\) [0-9a-f]{12} there, [0-9a-f]{12} here\)/);
  assert.throws(() => new ControlNetTrainer(tinyComponents(), other, { ...opts, resume_from_checkpoint: "latest" }), /latest: .*checkpoint-1 is another run's \(dataset content/);
  assert.deepEqual(fs.readdirSync(dir).sort(), before, "the folder is untouched");
  // the same rows built again have the same fingerprint, and the run continues
  const same = await tinyDataset();
  assert.equal(same.fingerprint, data.fingerprint);
  const again = new ControlNetTrainer(tinyComponents(), same, { ...opts, max_train_steps: 2, resume_from_checkpoint: "latest" });
  assert.equal(again.globalStep, 1);
  await again.close();
});

test("a checkpoint of the other optimizer (use_8bit_adam) is refused up front with the flag that continues it, never advised to be named", async () => {
  const dir = tempDir("identity-optim-");
  const opts = { output_dir: dir, resolution: TINY_RESOLUTION, train_batch_size: 2, learning_rate: 1e-3, max_train_steps: 1, checkpointing_steps: 1, seed: 1 };
  const a = new ControlNetTrainer(tinyComponents(), await tinyDataset(), { ...opts, use_8bit_adam: true });
  await a.train();
  await a.close();
  const before = fs.readdirSync(dir).sort();
  const ds = await tinyDataset();
  // named (which continues a checkpoint of other arguments with a warning) and latest: both name the flag, nothing else
  for (const resume of ["checkpoint-1", "latest"]) {
    assert.throws(() => new ControlNetTrainer(tinyComponents(), ds, { ...opts, learning_rate: 2e-3, max_train_steps: 2, resume_from_checkpoint: resume }),
      /checkpoint-1 holds 8-bit AdamW's optimizer state \(use_8bit_adam true there, false here\).*To continue it: add --use_8bit_adam \(other differences: learning_rate 0\.001 there, 0\.002 here\)\.$/);
  }
  assert.deepEqual(fs.readdirSync(dir).sort(), before, "the folder is untouched");
  const again = new ControlNetTrainer(tinyComponents(), ds, { ...opts, use_8bit_adam: true, max_train_steps: 2, resume_from_checkpoint: "checkpoint-1" });
  assert.equal(again.globalStep, 1);
  await again.close();
});

test("a named checkpoint continues under another lr schedule with a warning, at its saved step (torch's LambdaLR keeps the step)", async () => {
  const dir = tempDir("identity-lr-");
  const opts = { output_dir: dir, resolution: TINY_RESOLUTION, train_batch_size: 2, learning_rate: 1e-3, max_train_steps: 2, checkpointing_steps: 1, seed: 1 };
  const a = new ControlNetTrainer(tinyComponents(), await tinyDataset(), opts);
  await a.train();
  await a.close();
  const lines: string[] = [];
  const again = new ControlNetTrainer(tinyComponents(), await tinyDataset(),
    { ...opts, max_train_steps: 4, lr_scheduler: "linear", lr_warmup_steps: 0, resume_from_checkpoint: "checkpoint-2" }, null, (l) => lines.push(l));
  assert.equal(again.globalStep, 2);
  // linear decay over 4 steps from step 2: half the rate
  assert.equal(again.lrScheduler.getLastLr(), 0.5e-3);
  assert.ok(lines.some((l) => /^warning: .*checkpoint-2 was written with other arguments \(.*lr_scheduler constant there, linear here.*\); continuing it with this run's as asked\.$/.test(l)), lines.join("\n"));
  await again.close();
});
