/** The cell helpers as a notebook calls them (here without a kernel: text display), on the tiny reference SD. */
import { before, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import * as cn from "../../lib/index.js";
import { maxFolderDiff, testEngine } from "../helpers.js";

const sd = path.resolve(import.meta.dirname, "../fixtures/sd_tiny");
const cond = path.resolve(import.meta.dirname, "../../data/conditioning_image_1.png");

before(async () => {
  await testEngine();
});

test("dataset → baseModel → controlnet → train({until}) is idempotent, continues, and validates", async () => {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), "cells-"));
  const ds = await cn.dataset({ synthetic: { count: 8 }, resolution: 32 });
  assert.equal(await cn.dataset({ synthetic: { count: 8 }, resolution: 32 }), ds, "same arguments → cached");
  const bundle = (ds as unknown as Record<symbol, () => Record<string, string>>)[Symbol.for("Jupyter.display")]!();
  assert.match(bundle["text/html"]!, /<img/);
  const base = await cn.baseModel(sd);
  const controlnet = await cn.controlnet({ from: base });
  const opts = { base, controlnet, dataset: ds, outputDir: out, batchSize: 2, learningRate: 1e-4, checkpointing: { every: 2, totalLimit: 1 } };
  const r1 = await cn.train({ ...opts, until: 2 });
  assert.equal(r1.globalStep, 2);
  const r2 = await cn.train({ ...opts, until: 2 });
  assert.equal(r2.globalStep, 2, "a finished cell does nothing");
  const r3 = await cn.train({ ...opts, until: 3 });
  assert.equal(r3.globalStep, 3, "raising until continues");
  assert.ok(fs.existsSync(path.join(out, "checkpoint-2", "checkpoint.json")));
  const v = await cn.validate({ base, controlnet, images: [cond], prompts: ["red circle with blue background"], steps: 2, outputDir: out });
  assert.equal(v.pairs.length, 1);
  assert.ok(fs.existsSync(v.pairs[0]!.files[0]!));
  // a fill50k-style pair (outline image + "<colour> circle with <colour> background") is scored for control fidelity
  assert.ok(v.fidelity && v.fidelity.count === v.pairs[0]!.samples.length, `fidelity ${JSON.stringify(v.fidelity)}`);
  assert.ok(v.fidelity.iou >= 0 && v.fidelity.iou <= 1 && v.fidelity.colorScore >= 0 && v.fidelity.colorScore <= 1);
  const saved = cn.save(controlnet, path.join(out, "final"));
  assert.ok(fs.existsSync(path.join(saved, "diffusion_pytorch_model.safetensors")));
  await cn.resetTraining();
});

test("train({useEma}): validate() and save() use the weights' average, training goes on from the live weights", async () => {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), "cells-ema-"));
  try {
    const ds = await cn.dataset({ synthetic: { count: 8 }, resolution: 32 });
    const base = await cn.baseModel(sd);
    const controlnet = await cn.controlnet({ from: base, seed: 5 });
    await cn.train({ base, controlnet, dataset: ds, outputDir: out, batchSize: 2, learningRate: 1e-3, useEma: true, checkpointing: { every: 3 }, until: 3 });
    await cn.validate({ base, controlnet, images: [cond], prompts: ["red circle with blue background"], steps: 2, outputDir: out });
    const avg = cn.save(controlnet, path.join(out, "average"));
    await cn.resetTraining();
    const live = cn.save(controlnet, path.join(out, "live"));
    // the trainer's checkpoint holds its average in controlnet_ema/: the cell saved exactly that
    assert.equal(maxFolderDiff(avg, path.join(out, "checkpoint-3", "controlnet_ema")), 0);
    assert.equal(maxFolderDiff(live, path.join(out, "checkpoint-3", "controlnet")), 0, "after save() the live weights are the trained ones again");
    assert.ok(maxFolderDiff(avg, live) > 0, "the average differs from the last weights");
  } finally {
    await cn.resetTraining();
    fs.rmSync(out, { recursive: true, force: true });
  }
});

test("issue 25 #4/#5: train() refuses learningRate -1 and an empty validation image before any step (the CLI's checks)", async () => {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), "cells-bad-"));
  try {
    const ds = await cn.dataset({ synthetic: { count: 8 }, resolution: 32 });
    const base = await cn.baseModel(sd);
    const controlnet = await cn.controlnet({ from: base });
    await assert.rejects(cn.train({ base, controlnet, dataset: ds, outputDir: out, batchSize: 2, learningRate: -1, until: 1 }), /learning_rate must be a positive finite number, got -1/);
    const empty = path.join(out, "empty.png");
    fs.writeFileSync(empty, "");
    await assert.rejects(
      cn.train({ base, controlnet, dataset: ds, outputDir: out, batchSize: 2, learningRate: 1e-4, until: 1, validation: { images: [empty], prompts: ["x"], every: 1 } }),
      /validation image .*empty\.png is empty/,
    );
    assert.deepEqual(fs.readdirSync(out).filter((f) => f.startsWith("checkpoint-") || f === "logs"), [], "no step was taken");
  } finally {
    await cn.resetTraining();
  }
});
