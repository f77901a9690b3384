/** The training loop: resume equals an uninterrupted run, checkpoint limits, interrupt, non-finite loss. */
import { before, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { allFinite, ControlNetTrainer, NonFiniteLossError, type TrainingOptions } from "../../lib/training/trainer.js";
import { loadModelFolder } from "../../lib/io/diffusers.js";
import { testEngine, maxAbsDiff, tempDir } from "../helpers.js";
import { tinyComponents, tinyDataset, TINY_RESOLUTION } from "./tiny.js";

before(async () => {
  await testEngine();
});

const tmp = () => tempDir("trainer-");
const base = (output_dir: string): TrainingOptions => ({
  output_dir, resolution: TINY_RESOLUTION, train_batch_size: 2, learning_rate: 1e-3, max_train_steps: 6, seed: 7,
  lr_scheduler: "constant", checkpointing_steps: 2, checkpoints_total_limit: 2,
});

function weights(t: ControlNetTrainer): Map<string, Float32Array> {
  return new Map([...t.c.controlnet.stateDict()].map(([k, v]) => [k, v.data as Float32Array]));
}

test("6 steps straight == 3 steps + resume latest + 3 steps; total limit keeps checkpoint-4 and checkpoint-6", async () => {
  const dirA = tmp();
  const a = new ControlNetTrainer(tinyComponents(), await tinyDataset(), base(dirA));
  const ra = await a.train();
  assert.equal(ra.globalStep, 6);
  assert.equal(ra.stopped, "finished");
  assert.ok(Number.isFinite(ra.lastLoss!));
  const wa = weights(a);
  await a.close();
  assert.deepEqual(fs.readdirSync(dirA).filter((f) => f.startsWith("checkpoint-")).sort(), ["checkpoint-4", "checkpoint-6"]);

  const dirB = tmp();
  const b1 = new ControlNetTrainer(tinyComponents(), await tinyDataset(), { ...base(dirB), checkpointing_steps: 3 });
  assert.equal((await b1.train({ until: 3 })).stopped, "until");
  await b1.close();
  // A fresh process-like start: new models (random init), resume from the latest checkpoint on disk.
  const b2 = new ControlNetTrainer(tinyComponents(99), await tinyDataset(), { ...base(dirB), checkpointing_steps: 3, resume_from_checkpoint: "latest" });
  assert.equal(b2.globalStep, 3);
  // The frozen models must be the same as run A's: rebuild them with A's seed, keep only the resumed ControlNet.
  const frozen = tinyComponents();
  Object.assign(b2.c, { unet: frozen.unet, vae: frozen.vae, textEncoder: frozen.textEncoder });
  frozen.unet.trainable = false;
  frozen.vae.trainable = false;
  frozen.textEncoder.trainable = false;
  await b2.train();
  const wb = weights(b2);
  await b2.close();
  for (const [k, v] of wa) assert.ok(maxAbsDiff(v, wb.get(k)!) <= 1e-6, `${k} differs after resume`);
});

test("an abort stops at the next step boundary and training continues afterwards", async () => {
  const dir = tmp();
  const t = new ControlNetTrainer(tinyComponents(), await tinyDataset(), { ...base(dir), checkpointing_steps: 100 });
  const ac = new AbortController();
  const r = await t.train({ signal: ac.signal, onStep: (s) => { if (s.step === 2) ac.abort(); } });
  assert.equal(r.stopped, "interrupted");
  assert.equal(t.globalStep, 2);
  const r2 = await t.train({ until: 4 });
  assert.equal(r2.globalStep, 4);
  await t.close();
});

test("a non-finite loss stops with an error naming the step; the last checkpoint stays intact", async () => {
  const dir = tmp();
  const t = new ControlNetTrainer(tinyComponents(), await tinyDataset(), { ...base(dir), checkpointing_steps: 2 });
  await assert.rejects(
    t.train({
      onStep: (s) => {
        if (s.step === 3) {
          const p = t.c.controlnet.namedParameters().get("controlnet_mid_block.weight")!;
          p.variable.assign(p.variable.mul(Number.NaN));
        }
      },
    }),
    (e: unknown) => e instanceof NonFiniteLossError && e.step === 4 && /checkpoint-2/.test(e.message),
  );
  // the poisoned weights are refused by any later save, too
  await assert.rejects(t.checkpoint(), (e: unknown) => e instanceof NonFiniteLossError && e.what === "weights");
  assert.throws(() => t.saveFinal(), NonFiniteLossError);
  await t.close();
  assert.ok(fs.existsSync(path.join(dir, "checkpoint-2", "checkpoint.json")));
  assert.deepEqual(fs.readdirSync(dir).filter((f) => f.startsWith("checkpoint-")), ["checkpoint-2"]);
  // the named checkpoint resumes, with finite weights, and trains on
  const r = new ControlNetTrainer(tinyComponents(), await tinyDataset(), { ...base(dir), checkpointing_steps: 2, resume_from_checkpoint: "checkpoint-2" });
  assert.equal(r.globalStep, 2);
  assert.ok(allFinite(r.c.controlnet.trainableVariables()));
  assert.ok(Number.isFinite((await r.train({ until: 3 })).lastLoss!));
  await r.close();
});

test("issue 25 #2: an lr that overflows the weights stops before saving them; the named checkpoint is finite and resumes", async () => {
  const dir = tmp();
  // 1e38 (the run): the loss and gradients of step 1 are finite, the update is not
  const opts = { ...base(dir), learning_rate: 1e38, checkpointing_steps: 1, checkpoints_total_limit: null };
  const t = new ControlNetTrainer(tinyComponents(), await tinyDataset(), opts);
  let err: NonFiniteLossError | null = null;
  await t.train().catch((e: unknown) => { err = e as NonFiniteLossError; });
  await t.close();
  assert.ok(err !== null && (err as unknown) instanceof NonFiniteLossError, `expected a non-finite stop, got ${err}`);
  const e = err as NonFiniteLossError;
  const saved = fs.readdirSync(dir).filter((f) => f.startsWith("checkpoint-")).sort();
  // nothing of the failing step or later is on disk
  assert.ok(saved.every((f) => Number(f.split("-")[1]) < e.step), `saved ${saved} after a stop at step ${e.step}`);
  for (const f of saved) {
    const { tensors } = loadModelFolder(path.join(dir, f, "controlnet"));
    for (const [k, v] of tensors) assert.ok((v.data as Float32Array).every(Number.isFinite), `${f}: ${k} holds non-finite weights`);
  }
  if (e.lastCheckpoint) {
    assert.equal(path.basename(e.lastCheckpoint), saved.at(-1));
    const r = new ControlNetTrainer(tinyComponents(), await tinyDataset(), { ...opts, resume_from_checkpoint: e.lastCheckpoint });
    assert.equal(r.globalStep, Number(saved.at(-1)!.split("-")[1]));
    assert.ok(allFinite(r.c.controlnet.trainableVariables()));
    await r.close();
  } else assert.deepEqual(saved, [], "a checkpoint exists but the error names none");
  assert.match(e.message, /non-finite|became/);
});

test("issue 25 #2: a finite checkpoint that is the failing step's start is named as such, beside the lowest-loss one, which resumes", async () => {
  const dir = tmp();
  // warmup: step 1 moves the weights at lr/2 ·(1/2) … to ~1, step 2 at the full 1e38 to ~5e37, and step 3's loss is NaN
  const opts = { ...base(dir), learning_rate: 1e38, lr_scheduler: "linear", lr_warmup_steps: 2, max_train_steps: 5, checkpointing_steps: 1, checkpoints_total_limit: null };
  const t = new ControlNetTrainer(tinyComponents(), await tinyDataset(), opts);
  const err = await t.train().then(() => null, (e: unknown) => e);
  await t.close();
  assert.ok(err instanceof NonFiniteLossError, `expected a non-finite stop, got ${err}`);
  assert.equal(err.step, 3);
  const [c1, c2] = [path.join(dir, "checkpoint-1"), path.join(dir, "checkpoint-2")];
  assert.equal(err.lastCheckpoint, c2);
  assert.match(err.message, new RegExp(`The last checkpoint, ${c2} \\(step 2, largest \\|weight\\| [0-9.]+e\\+3\\d, loss NaN at the step after it\\), holds finite weights, but they are the ones step 3 started from`), err.message);
  assert.match(err.message, new RegExp(`The lowest-loss checkpoint left is ${c1} \\(step 1, largest \\|weight\\| [0-9.]+, loss [0-9.]+ at the step after it\\)`), err.message);
  // the one it recommends resumes, and with a sane learning rate trains on with finite losses
  const r = new ControlNetTrainer(tinyComponents(), await tinyDataset(), { ...opts, learning_rate: 1e-4, resume_from_checkpoint: c1 });
  assert.equal(r.globalStep, 1);
  const done = await r.train();
  assert.equal(done.globalStep, 5);
  assert.ok(Number.isFinite(done.lastLoss!) && allFinite(r.c.controlnet.trainableVariables()));
  await r.close();
});

test("with a host optimizer and gradient checkpointing, gradients stream to the host: same weights as on the device", async () => {
  const run = async (stream: boolean, gradient_accumulation_steps: number) => {
    const t = new ControlNetTrainer(tinyComponents(), await tinyDataset(), {
      ...base(tmp()), max_train_steps: 3, checkpointing_steps: 100, offload_optimizer_state: true, gradient_checkpointing: true,
      gradient_accumulation_steps, max_grad_norm: 0.05, // small enough that clipping acts on the streamed gradients
    });
    // the device-gradient baseline: the same run with streaming switched off
    if (!stream) Object.defineProperty(t, "streamsGradientsToHost", { get: () => false });
    let streamed = 0;
    const step = t.optimizer.step.bind(t.optimizer);
    t.optimizer.step = (g, o) => { streamed += o?.hostGrads?.size ?? 0; step(g, o); };
    const r = await t.train();
    await t.close();
    return { w: weights(t), streamed, r, params: t.c.controlnet.trainableVariables().length };
  };
  for (const accumulation of [1, 2]) {
    const device = await run(false, accumulation);
    const host = await run(true, accumulation);
    assert.equal(device.streamed, 0);
    // all but the few weights outside checkpointed blocks (conv_in, conditioning embedding, zero convs, time embedding)
    assert.ok(host.streamed > device.params / 2, `only ${host.streamed} of ${device.params} gradients streamed per run`);
    let worst = 0;
    for (const [k, v] of device.w) worst = Math.max(worst, maxAbsDiff(host.w.get(k)!, v));
    // Not bit-equal by design: the host sums the squared gradient norms in float64, the device in float32, so the
    // clip coefficient can differ in its last bit, and Adam's g/√v amplifies that for near-zero gradients (seen:
    // 6.7e-7 with accumulation 2). A gradient lost or counted twice moves a weight by ~lr = 1e-3 per step.
    assert.ok(worst <= 1e-5, `accumulation ${accumulation}: weights differ by ${worst}`);
    assert.ok(Math.abs(host.r.lastLoss! - device.r.lastLoss!) <= 1e-6 * Math.max(1, Math.abs(device.r.lastLoss!)), `losses ${host.r.lastLoss} vs ${device.r.lastLoss}`);
  }
});
