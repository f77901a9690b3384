/**
 * The notebook cell train({ processes: 2 }): worker processes train, the cell's ControlNet receives their weights,
 * and an in-process train() afterwards continues from their checkpoint.
 */
import { before, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import * as cn from "../../lib/index.js";
import { testEngine } from "../helpers.js";
import { freePorts, maxWeightDiff, root, skipReason } from "./helpers.js";

const skip = skipReason();

before(async () => {
  if (!skip) await testEngine();
});

function weights(model: cn.ControlNetModel): Map<string, Float32Array> {
  return new Map([...model.namedParameters()].map(([n, p]) => [n, p.variable.dataSync() as Float32Array]));
}

test("train({ processes: 2 }) trains in worker processes; the cell's ControlNet holds their weights and trains on in-process", { skip }, async () => {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), "cells-dp-"));
  const ds = await cn.dataset({ synthetic: { count: 16, seed: 1 }, resolution: 32 });
  const base = await cn.baseModel(path.join(root, "tests/fixtures/sd_tiny"));
  const controlnet = await cn.controlnet({ from: base, seed: 3 });
  const before = weights(controlnet);
  const opts = { base, controlnet, dataset: ds, outputDir: out, batchSize: 1, learningRate: 1e-4, seed: 1, checkpointing: { every: 100 } };
  const r = await cn.train({ ...opts, until: 2, processes: 2, threadsPerProcess: 1, mainProcessPort: await freePorts(2) });
  assert.equal(r.globalStep, 2);
  assert.equal(r.stopped, "until");
  assert.ok(typeof r.lastLoss === "number" && Number.isFinite(r.lastLoss));
  // the cell's ControlNet holds the processes' weights (compared as saved folders: the same layout on both sides)
  controlnet.savePretrained(path.join(out, "cell"));
  assert.equal(maxWeightDiff(path.join(out, "cell"), path.join(out, "checkpoint-2", "controlnet")).max, 0);
  let moved = 0;
  for (const [n, w] of weights(controlnet)) for (let i = 0; i < w.length; i++) moved = Math.max(moved, Math.abs(w[i]! - before.get(n)![i]!));
  assert.ok(moved > 5e-5, `weights moved by ${moved}`);
  const steps = fs.readFileSync(path.join(out, "logs", "train_log.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l).step);
  assert.deepEqual(steps, [1, 2]);
  // the same cell without processes continues from their checkpoint
  const r2 = await cn.train({ ...opts, until: 3 });
  assert.equal(r2.globalStep, 3);
  fs.rmSync(out, { recursive: true, force: true });
});
