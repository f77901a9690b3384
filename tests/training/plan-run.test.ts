/** Issue 25 #7: the run's memory plan before step 1 — applied when math-preserving options suffice, else refused. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { makeTrainArgs } from "../../lib/training/args.js";
import { planRun, PlanRefusedError } from "../../lib/training/plan-run.js";
import { tempDir } from "../helpers.js";

const root = path.resolve(import.meta.dirname, "../..");
const tinySd = path.join(root, "data/tiny-sd");
const cfg = (s: string) => JSON.parse(fs.readFileSync(path.join(tinySd, s, "config.json"), "utf8")) as Record<string, unknown>;
const models = { unet: cfg("unet"), vae: cfg("vae"), textEncoder: cfg("text_encoder"), seqLen: 77 };
const HEAP = 4 * 1024 ** 3;
const args = (resolution: number, train_batch_size: number, extra = {}) =>
  makeTrainArgs({ pretrained_model_name_or_path: tinySd, dataset_name: "synthetic-fill50k", resolution, train_batch_size, ...extra }).args;

test("#7: tiny-sd on the 4 GiB wasm heap: fits, applied, refused with the flags, refused outright", () => {
  assert.deepEqual(planRun(args(32, 4), models, HEAP, true).applied, {}, "the demo's shape fits as given");
  const applied = planRun(args(256, 2), models, HEAP, true);
  assert.deepEqual(applied.applied, { set_grads_to_none: true, enable_xformers_memory_efficient_attention: true });
  assert.ok(applied.neededBytes <= HEAP);
  assert.match(applied.message, /applied --set_grads_to_none --enable_xformers_memory_efficient_attention \(same mathematics\)/);
  // the runs: 512 px batch 1 (~26 GiB as given with the softmax backward's maps — WASM_SOFTMAX_GRAD_MAPS; ~21 before it, 43 GB before wasm's tape shared saved buffers) needs 8-bit Adam, which changes the numerics: refused, with the flags
  assert.throws(() => planRun(args(512, 1), models, HEAP, true), (e: unknown) =>
    e instanceof PlanRefusedError && /needs ~25\.\d GiB as given/.test(e.message) && /--use_8bit_adam/.test(e.message) && /--gradient_checkpointing/.test(e.message));
  // ... and with those flags given, it fits as given
  const withFlags = planRun(args(512, 1, { use_8bit_adam: true, gradient_checkpointing: true, set_grads_to_none: true, enable_xformers_memory_efficient_attention: true }), models, HEAP, true);
  assert.deepEqual(withFlags.applied, {});
  for (const [r, b] of [[512, 4], [128, 64]]) {
    assert.throws(() => planRun(args(r!, b!), models, HEAP, true), /no option set fits\. Lower --resolution or --train_batch_size/);
  }
});

test("#7: the CLI refuses tiny-sd at 512 px batch 4 before step 1, with the planner's advice, in seconds", () => {
  const out = tempDir("cli-plan-");
  const started = Date.now();
  const r = spawnSync(process.execPath, [path.join(root, "bin", "controlnet-ts.js"), "train_controlnet", `--pretrained_model_name_or_path=${tinySd}`,
    `--output_dir=${out}`, "--dataset_name=synthetic-fill50k:8", "--resolution=512", "--train_batch_size=4", "--max_train_steps=1"],
  { cwd: root, encoding: "utf8", timeout: 300_000, env: { ...process.env, CONTROLNET_TS_THREADS: "1", CONTROLNET_TS_BACKEND: "wasm" } });
  const seconds = (Date.now() - started) / 1000;
  assert.equal(r.status, 1, r.stderr);
  assert.match(r.stderr, /train_controlnet: 512 px, batch 4 needs ~\d+\.\d GiB as given .*no option set fits/);
  assert.doesNotMatch(r.stderr, /Steps: /);
  assert.deepEqual(fs.readdirSync(out).filter((f) => f.startsWith("checkpoint-")), []);
  assert.ok(seconds < 120, `took ${seconds} s`);
});
