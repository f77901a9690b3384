/** The train_controlnet command line end to end on the tiny reference pipeline (tests/fixtures/sd_tiny). */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { readSafetensorsHeader } from "../../lib/io/safetensors.js";
import { findEventFiles, readEvents } from "../../lib/training/tensorboard.js";

const root = path.resolve(import.meta.dirname, "../..");
const bin = path.join(root, "bin", "controlnet-ts.js");
const cli = (args: string[]) => spawnSync(process.execPath, [bin, "train_controlnet", ...args], {
  cwd: root, encoding: "utf8", timeout: 600_000, env: { ...process.env, CONTROLNET_TS_THREADS: "2" },
});

// Validation (20 UniPC steps per image, as the script does) is covered by tests/cells with fewer steps; here it would
// dominate the run time.
test("seed flags verbatim: trains, checkpoints, logs to TensorBoard and saves a diffusers ControlNet with a model card", () => {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), "cli-train-"));
  const r = cli([
    "--pretrained_model_name_or_path", path.join(root, "tests/fixtures/sd_tiny"),
    `--output_dir=${out}`, "--dataset_name=synthetic-fill50k:16", "--resolution=32", "--learning_rate=1e-4",
    "--train_batch_size=2", "--max_train_steps=2", "--checkpointing_steps=1", "--checkpoints_total_limit=1",
    "--seed=1", "--mixed_precision=fp16",
  ]);
  assert.equal(r.status, 0, r.stderr.slice(-3000));
  assert.match(r.stderr, /mixed_precision|fp16/i, "an honest mixed-precision message");
  assert.match(r.stderr, /Steps: 2\/2/);
  const header = readSafetensorsHeader(path.join(out, "diffusion_pytorch_model.safetensors"));
  assert.ok(header.entries.has("controlnet_mid_block.weight"));
  assert.equal(JSON.parse(fs.readFileSync(path.join(out, "config.json"), "utf8"))._class_name, "ControlNetModel");
  assert.deepEqual(fs.readdirSync(out).filter((f) => f.startsWith("checkpoint-")), ["checkpoint-2"]);
  const events = findEventFiles(path.join(out, "logs")).flatMap((f) => readEvents(f));
  const tags = new Set(events.flatMap((e) => e.values.map((v) => v.tag)));
  assert.ok(tags.has("loss") && tags.has("lr"), `TensorBoard tags: ${[...tags]}`);
  assert.match(fs.readFileSync(path.join(out, "README.md"), "utf8"), /ControlNetModel.from_pretrained/);
});

test("unknown flags and bad values are one clear error", () => {
  const r = cli(["--pretrained_model_name_or_path=x", "--dataset_name=d", "--learnin_rate=1e-5"]);
  assert.equal(r.status, 2);
  assert.match(r.stderr, /unrecognized arguments: --learnin_rate.*learning_rate/s);
  const r2 = cli(["--pretrained_model_name_or_path=x", "--dataset_name=d", "--resolution=100"]);
  assert.notEqual(r2.status, 0);
  assert.match(r2.stderr, /resolution/);
});
