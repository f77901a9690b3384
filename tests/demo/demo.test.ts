import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { testEngine, tempDir } from "../helpers.js";
import { runDemo } from "../../lib/demo/run.js";
import { TINY_SD_CONDITIONING_SCALE, TINY_SD_CONDITIONING_EMBEDDING, TINY_SD_CONTROL_MODE, TINY_SD_GUIDANCE_SCALE } from "../../lib/demo/tiny-sd.js";

test("a very short demo run writes the ControlNet folder, grid, loss curve and report", async () => {
  await testEngine();
  const out = tempDir("demo-test-");
  const lines: string[] = [];
  const r = await runDemo({
    outputDir: out, steps: 2, batchSize: 2, evalCount: 2, inferenceSteps: 2, skipBefore: true, trackEvery: 1, log: (l) => lines.push(l),
    lrScheduler: "linear", proportionEmptyPrompts: 0.5,
  });
  assert.equal(r.steps, 2);
  assert.equal(r.before, null);
  assert.equal(r.after.count, 2);
  assert.ok(r.after.iou >= 0 && r.after.iou <= 1);
  const cfg = JSON.parse(fs.readFileSync(path.join(out, "config.json"), "utf8"));
  assert.equal(cfg._class_name, "ControlNetModel");
  assert.ok(fs.statSync(path.join(out, "diffusion_pytorch_model.safetensors")).size > 100_000);
  const png = fs.readFileSync(r.files.grid);
  assert.deepEqual([...png.subarray(1, 4)], [0x50, 0x4e, 0x47]); // "PNG"
  const svg = fs.readFileSync(r.files.lossCurve, "utf8");
  assert.match(svg, /^<svg/);
  const log = fs.readFileSync(r.files.log, "utf8").trim().split("\n");
  assert.equal(log.length, 2);
  // the schedule reached the trainer with no warm-up (train_controlnet.py's default 500 would hold lr at ~0 here);
  // the log holds lr_scheduler.get_last_lr() after each step, as the script logs it: steps ran at 1e-3 and 5e-4
  const lrs = log.map((l) => JSON.parse(l).lr as number);
  assert.ok(Math.abs(lrs[0]! - 5e-4) < 1e-9 && Math.abs(lrs[1]! - 0) < 1e-9, `linear lr after each step: ${lrs}`);
  const report = JSON.parse(fs.readFileSync(r.files.report, "utf8"));
  assert.equal(report.steps, 2);
  assert.equal(report.guidanceScale, TINY_SD_GUIDANCE_SCALE);
  assert.equal(report.conditioningScale, TINY_SD_CONDITIONING_SCALE);
  assert.deepEqual(report.conditioningEmbeddingOutChannels, [...TINY_SD_CONDITIONING_EMBEDDING]);
  assert.equal(report.controlMode, TINY_SD_CONTROL_MODE);
  assert.deepEqual(cfg.conditioning_embedding_out_channels, [...TINY_SD_CONDITIONING_EMBEDDING]);
  assert.equal(report.useEma, true); // the demo trains with the weights' moving average and saves it
  assert.equal(report.lrScheduler, "linear");
  assert.equal(report.proportionEmptyPrompts, 0.5);
  // fidelity tracked before training and after each step; the jump step is reported (null: none in 2 steps)
  assert.deepEqual(report.fidelityHistory.map((p: { step: number }) => p.step), [0, 1, 2]);
  assert.ok(report.fidelityHistory.every((p: { iou: number }) => p.iou >= 0 && p.iou <= 1));
  assert.ok("suddenConvergenceStep" in report);
  assert.ok(lines.some((l) => /control fidelity (did not jump|jumped at step)/.test(l)), lines.join("\n"));
  assert.ok(lines.some((l) => /step 2\/2 .*it\/s .*ETA/.test(l)), lines.join("\n"));
});

test("the demo refuses a bad lr schedule, empty-prompt share, sampling scale or conditioning embedding before writing anything", async () => {
  const out = path.join(os.tmpdir(), "demo-test-never-created");
  await assert.rejects(runDemo({ outputDir: out, lrScheduler: "cosine_annealing" }), /'cosine_annealing' is not a valid lr scheduler; choose one of .*cosine/);
  await assert.rejects(runDemo({ outputDir: out, proportionEmptyPrompts: 1.5 }), /`--proportion_empty_prompts` must be in the range \[0, 1\] \(got 1.5\)/);
  await assert.rejects(runDemo({ outputDir: out, conditioningScale: -1 }), /conditioningScale must be a finite number ≥ 0 \(got -1\)/);
  await assert.rejects(runDemo({ outputDir: out, guidanceScale: Number("1,5") }), /guidanceScale must be a finite number ≥ 0 \(got NaN\)/);
  await assert.rejects(runDemo({ outputDir: out, controlMode: "prompt" as "balanced" }), /unknown control mode "prompt" \(use balanced or controlnet\)/);
  // the tiny base's VAE is ×4: the conditioning embedding needs three stages (this one is checked once the base is read)
  await assert.rejects(runDemo({ outputDir: out, conditioningEmbeddingOutChannels: [16, 32, 96, 256] }), /must be 3 positive integers for a ×4 VAE \(got \[16, 32, 96, 256\]\)/);
  assert.equal(fs.existsSync(out), false);
});
