import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { testEngine, tempDir } from "../helpers.js";
import {
  schedulerFromConfig, loadScheduler, extractInitConfig, UniPCMultistepScheduler, DDPMScheduler, DDIMScheduler,
  UNIPC_DEFAULTS, parseSchedulerName,
} from "../../lib/schedulers/index.js";
import { SD15_PNDM } from "./sd15.js";


test("an SD1.5 PNDM config loads into UniPC with UniPC's own defaults elsewhere", async () => {
  await testEngine();
  const s = UniPCMultistepScheduler.fromConfig(SD15_PNDM);
  assert.equal(s.config.beta_schedule, "scaled_linear");
  assert.equal(s.config.beta_start, 0.00085);
  assert.equal(s.config.steps_offset, 1);
  assert.equal(s.config.solver_order, 2);
  assert.equal(s.config.solver_type, "bh2");
  assert.equal(s.config.predict_x0, true);
  assert.equal(s.config.lower_order_final, true);
  assert.equal(s.config.timestep_spacing, "linspace");
  assert.equal(s.config.prediction_type, "epsilon");
  const { ignored } = extractInitConfig("UniPCMultistepScheduler", UNIPC_DEFAULTS, SD15_PNDM);
  assert.deepEqual(ignored.sort(), ["clip_sample", "set_alpha_to_one", "skip_prk_steps"]);
  s.setTimesteps(20);
  assert.deepEqual(s.timesteps.slice(0, 3), [999, 949, 899]);
  assert.equal(s.timesteps.length, 20);
});

test("DDPM from the SD1.5 config is the training scheduler of the diffusers script", async () => {
  await testEngine();
  const s = DDPMScheduler.fromConfig(SD15_PNDM);
  assert.equal(s.config.clip_sample, false);
  assert.equal(s.config.variance_type, "fixed_small");
  assert.equal(s.config.timestep_spacing, "leading");
  assert.equal(s.config.prediction_type, "epsilon");
  // betas = linspace(√β0, √β1)², ᾱ = cumprod(1-β)
  assert.ok(Math.abs(s.betas[0]! - 0.00085) < 1e-9);
  assert.ok(Math.abs(s.betas[999]! - 0.012) < 1e-9);
  assert.ok(Math.abs(s.alphasCumprod[0]! - 0.99915) < 1e-7);
  assert.ok(Math.abs(s.alphasCumprod[999]! - 0.0046) < 1e-4, `ᾱ_999 = ${s.alphasCumprod[999]}`);
});

test("_use_default_values keys and _-prefixed keys are dropped; overrides win", async () => {
  await testEngine();
  const cfg = { ...SD15_PNDM, timestep_spacing: "leading", _use_default_values: ["timestep_spacing"] };
  const s = schedulerFromConfig("unipc", cfg, { solver_order: 3 });
  assert.equal(s.config.timestep_spacing, "linspace");
  assert.equal((s.config as unknown as { solver_order: number }).solver_order, 3);
  const d = schedulerFromConfig("DDIMScheduler", SD15_PNDM, { timestep_spacing: "trailing" });
  assert.ok(d instanceof DDIMScheduler);
  assert.equal(d.config.timestep_spacing, "trailing");
});

test("bad configs give clear errors", async () => {
  await testEngine();
  assert.throws(() => new UniPCMultistepScheduler({ solver_type: "bh3" }), /solver_type 'bh3' is not supported/);
  assert.throws(() => schedulerFromConfig("ddim", { beta_schedule: "cubic" }), /beta_schedule 'cubic'/);
  assert.throws(() => schedulerFromConfig("ddim", { num_train_timesteps: "1000" }), /should be number, got string/);
  assert.throws(() => schedulerFromConfig("ddim", {}, { no_such_option: 1 }), /unknown config option 'no_such_option'/);
  assert.throws(() => schedulerFromConfig("unipc", { use_karras_sigmas: true }), /use_karras_sigmas=true is not supported/);
  assert.throws(() => parseSchedulerName("pndm"), /Unknown scheduler 'pndm'/);
  assert.throws(() => new DDIMScheduler({ prediction_type: "flow" }), /prediction_type 'flow'/);
});

test("loadScheduler reads a pipeline folder's scheduler/scheduler_config.json", async () => {
  await testEngine();
  const dir = tempDir("sched-");
  fs.mkdirSync(path.join(dir, "scheduler"));
  fs.writeFileSync(path.join(dir, "scheduler", "scheduler_config.json"), JSON.stringify(SD15_PNDM));
  const s = loadScheduler(dir, "euler");
  assert.equal(s.className, "EulerDiscreteScheduler");
  assert.equal(s.config.beta_schedule, "scaled_linear");
  assert.throws(() => loadScheduler(dir), /PNDMScheduler' is not implemented/);
  fs.writeFileSync(path.join(dir, "scheduler", "scheduler_config.json"), JSON.stringify(s.toJSON()));
  assert.equal(loadScheduler(dir).className, "EulerDiscreteScheduler");
});
