/** Issue 25: faults and bad input must not lose work, lie or crash (one test per numbered case where it lives here). */
import { before, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import { spawnSync } from "node:child_process";
import path from "node:path";
import { ArgsError, makeTrainArgs, parseTrainArgs } from "../../lib/training/args.js";
import { trainControlNet } from "../../lib/training/run.js";
import { ControlNetTrainer } from "../../lib/training/trainer.js";
import { listCheckpoints } from "../../lib/training/checkpoints.js";
import { readJsonl } from "../../lib/training/tensorboard.js";
import { testEngine, tempDir } from "../helpers.js";
import { tinyComponents, tinyDataset, TINY_RESOLUTION } from "./tiny.js";

const root = path.resolve(import.meta.dirname, "../..");
const sd = path.join(root, "tests/fixtures/sd_tiny");
const tmp = (p = "rel-") => tempDir(p);

before(async () => {
  await testEngine();
});

test("#5: out-of-range numbers are refused by the CLI and by the trainer (cells, library) alike, naming the option", async () => {
  const cli = ["--pretrained_model_name_or_path=x", "--dataset_name=d"];
  const bad: [string, string][] = [
    ["learning_rate", "-1"], ["learning_rate", "inf"], ["adam_beta1", "2"], ["adam_beta2", "-0.1"], ["adam_epsilon", "-1"],
    ["adam_weight_decay", "nan"], ["max_grad_norm", "nan"], ["max_grad_norm", "-1"], ["num_train_epochs", "0"],
    ["train_batch_size", "99999999999"], ["lr_power", "nan"], ["lr_num_cycles", "0"], ["dataloader_num_workers", "-1"],
    // an accumulation of 1e11 micro-batches per step ran for ever; inf turned clipping off as NaN did
    ["gradient_accumulation_steps", "99999999999"], ["max_grad_norm", "inf"], ["checkpoints_total_limit", "-1"], ["validation_steps", "0"],
    ["resolution", "0"], ["num_validation_images", "-1"],
    // found after the model had loaded; 2^32 is beyond numpy's seed range, which the script's set_seed uses
    ["seed", "-1"], ["seed", "4294967296"], ["max_train_samples", "0"], ["max_train_samples", "-3"],
  ];
  for (const [flag, value] of bad) {
    assert.throws(() => parseTrainArgs([...cli, `--${flag}=${value}`]), (e: unknown) => e instanceof ArgsError && e.message.includes(`--${flag}`), `--${flag}=${value} accepted`);
  }
  assert.throws(() => parseTrainArgs([...cli, "--output_dir="]), /^ArgsError: --output_dir is empty/);
  // the script's defaults and ordinary values still pass
  assert.doesNotThrow(() => parseTrainArgs([...cli, "--max_grad_norm=0", "--adam_beta1=0", "--num_train_epochs=0", "--max_train_steps=5"]));
  // the trainer (what cn.train and library code construct) refuses the same, before touching output_dir
  for (const [key, value] of [["learning_rate", -1], ["adam_beta1", 2], ["max_grad_norm", NaN], ["lr_power", NaN],
    ["gradient_accumulation_steps", 99999999999], ["checkpoints_total_limit", -1], ["resolution", 36]] as const) {
    const out = path.join(tmp(), "never");
    assert.throws(
      () => new ControlNetTrainer(tinyComponents(), null as never, { output_dir: out, resolution: TINY_RESOLUTION, train_batch_size: 1, learning_rate: 1e-4, [key]: value }),
      (e: unknown) => e instanceof ArgsError && e.message.includes(key),
    );
    assert.ok(!fs.existsSync(out), "a refused run creates no folder");
  }
  assert.throws(() => makeTrainArgs({ pretrained_model_name_or_path: "x", dataset_name: "d", learning_rate: -1 }), /learning_rate/);
  // PyTorch's AdamW takes lr 0 (a run that changes nothing): so does the script, so do we
  assert.equal(makeTrainArgs({ pretrained_model_name_or_path: "x", dataset_name: "d", learning_rate: 0 }).args.learning_rate, 0);
});

test("#4: a missing or empty --validation_image is refused before the model loads or step 1 runs", async () => {
  const out = tmp();
  const empty = path.join(out, "empty.png");
  fs.writeFileSync(empty, "");
  const args = (image: string) => makeTrainArgs({
    pretrained_model_name_or_path: sd, dataset_name: "synthetic-fill50k:8", output_dir: path.join(out, "run"), resolution: 32,
    train_batch_size: 1, max_train_steps: 2, validation_image: [image], validation_prompt: ["red circle with blue background"],
  }).args;
  const started = Date.now();
  await assert.rejects(trainControlNet(args(empty), { log: () => {} }), /validation image .*empty\.png is empty/);
  await assert.rejects(trainControlNet(args(path.join(out, "missing.png")), { log: () => {} }), /validation image .*missing\.png cannot be read \(no such file\)/);
  const junk = path.join(out, "junk.png");
  fs.writeFileSync(junk, "not an image");
  await assert.rejects(trainControlNet(args(junk), { log: () => {} }), /validation image .*junk\.png is not a readable image/);
  assert.ok(!fs.existsSync(path.join(out, "run")), "nothing trained, nothing written");
  assert.ok(Date.now() - started < 5000, "refused up front");
});

test("#4: an error after step 1 writes a checkpoint before the run dies; it resumes", async () => {
  const out = tmp();
  const args = makeTrainArgs({
    pretrained_model_name_or_path: sd, dataset_name: "synthetic-fill50k:8", output_dir: out, resolution: 32,
    train_batch_size: 1, max_train_steps: 4, checkpointing_steps: 100, seed: 3,
  }).args;
  const lines: string[] = [];
  await assert.rejects(
    trainControlNet(args, { log: (l) => lines.push(l), onStep: (r) => { if (r.step === 2) throw new Error("disk gone (simulated)"); } }),
    /disk gone/,
  );
  assert.deepEqual(listCheckpoints(out).map((c) => c.step), [2]);
  assert.ok(lines.some((l) => /Stopped by an error at step 2; state saved to .*checkpoint-2/.test(l)), lines.join("\n"));
  const r = await trainControlNet({ ...args, resume_from_checkpoint: "latest" }, { log: () => {} });
  assert.equal(r.globalStep, 4);
});

test("#3: another run's checkpoints in output_dir are refused (fresh start, resume latest); an explicit one continues with a warning", async () => {
  const dir = tmp();
  const opts = { output_dir: dir, resolution: TINY_RESOLUTION, train_batch_size: 2, learning_rate: 1e-3, max_train_steps: 2, checkpointing_steps: 1, checkpoints_total_limit: 1 };
  const a = new ControlNetTrainer(tinyComponents(), await tinyDataset(), { ...opts, seed: 1 });
  await a.train();
  await a.close();
  const before = fs.readdirSync(dir).sort();
  const other = { ...opts, seed: 2, learning_rate: 5e-4 };
  const ds = await tinyDataset();
  assert.throws(() => new ControlNetTrainer(tinyComponents(), ds, other), /holds another run's checkpoints \(checkpoint-2: seed 1 there, 2 here, learning_rate 0.001 there, 0.0005 here\)/);
  assert.throws(() => new ControlNetTrainer(tinyComponents(), ds, { ...other, resume_from_checkpoint: "latest" }), /latest: .*checkpoint-2 is another run's \(seed 1 there, 2 here/);
  // the optimizer, its schedule and the clip define the trajectory too (the total limit would otherwise delete run a's
  // checkpoint, and a later "latest" resume run a's state with these settings)
  assert.throws(() => new ControlNetTrainer(tinyComponents(), ds, { ...opts, seed: 1, adam_beta1: 0.5, adam_weight_decay: 0.5, max_grad_norm: 0.5, lr_scheduler: "cosine" }),
    /another run's checkpoints \(checkpoint-2: lr_scheduler constant there, cosine here, adam_beta1 0.9 there, 0.5 here, adam_weight_decay 0.01 there, 0.5 here, max_grad_norm 1 there, 0.5 here\)/);
  assert.throws(() => new ControlNetTrainer(tinyComponents(), ds, { ...opts, seed: 1, proportion_empty_prompts: 0.5, resume_from_checkpoint: "latest" }),
    /latest: .*checkpoint-2 is another run's \(proportion_empty_prompts 0 there, 0.5 here\)/);
  assert.deepEqual(fs.readdirSync(dir).sort(), before, "the folder is untouched");
  // the base is recorded as its UNet config's fingerprint: independent of key order and of where the folder is
  const { configFingerprint } = await import("../../lib/training/trainer.js");
  assert.equal(configFingerprint({ a: 1, b: [2, { c: 3, d: 4 }] }), configFingerprint({ b: [2, { d: 4, c: 3 }], a: 1 }));
  assert.notEqual(configFingerprint({ block_out_channels: [32, 64] }), configFingerprint({ block_out_channels: [32, 96] }));
  const state = JSON.parse(fs.readFileSync(path.join(dir, "checkpoint-2", "training_state.json"), "utf8")) as { run: Record<string, unknown> };
  assert.equal(state.run.base_unet_config, configFingerprint(tinyComponents().unet.config));
  const explicit = new ControlNetTrainer(tinyComponents(), ds, { ...other, resume_from_checkpoint: path.join(dir, "checkpoint-2") });
  assert.equal(explicit.globalStep, 2, "a checkpoint named explicitly is continued");
  await explicit.close();
  const same = new ControlNetTrainer(tinyComponents(), ds, { ...opts, seed: 1, resume_from_checkpoint: "latest" });
  assert.equal(same.globalStep, 2);
  await same.close();
  // a run whose output_dir is a checkpoint or lies inside one would overwrite its checksummed weights: refused up front
  const ck = path.join(dir, "checkpoint-2");
  for (const out of [ck, path.join(ck, "controlnet"), path.join(ck, "controlnet", "deeper")]) {
    const args = makeTrainArgs({ pretrained_model_name_or_path: sd, dataset_name: "synthetic-fill50k:8", output_dir: out, resolution: 32, max_train_steps: 1 }).args;
    await assert.rejects(trainControlNet(args, { log: () => {} }),
      (e: Error) => e instanceof ArgsError && new RegExp(`^--output_dir .* (is|is inside) the training checkpoint ${ck}, whose files are checksummed.*nothing was trained$`).test(e.message));
  }
  assert.deepEqual(listCheckpoints(dir).map((c) => c.step), [2], "checkpoint-2 still verifies");
  assert.ok(!fs.existsSync(path.join(ck, "controlnet", "deeper")));
});

test("#11: after a resume the JSON-lines log holds each step once", async () => {
  const dir = tmp();
  const opts = { output_dir: dir, resolution: TINY_RESOLUTION, train_batch_size: 2, learning_rate: 1e-3, max_train_steps: 4, checkpointing_steps: 2, seed: 4 };
  const a = new ControlNetTrainer(tinyComponents(), await tinyDataset(), opts);
  await a.train();
  await a.close();
  // a crash after step 4's log line but before its checkpoint would leave this state; resume from checkpoint-2
  fs.rmSync(path.join(dir, "checkpoint-4"), { recursive: true });
  const b = new ControlNetTrainer(tinyComponents(), await tinyDataset(), { ...opts, resume_from_checkpoint: "latest" });
  assert.equal(b.globalStep, 2);
  await b.train();
  await b.close();
  const steps = readJsonl(path.join(dir, "logs", "train_log.jsonl")).map((r) => r.step);
  assert.deepEqual(steps, [1, 2, 3, 4]);

  // two runs sharing one --logging_dir: B's resume drops only B's redone lines, never A's
  const shared = tmp("rel-logs-");
  const [outA, outB] = [tmp(), tmp()];
  const run = async (output_dir: string, seed: number, max_train_steps: number, resume?: string) => {
    const t = new ControlNetTrainer(tinyComponents(), await tinyDataset(), { ...opts, output_dir, logging_dir: shared, seed, max_train_steps, checkpointing_steps: 2,
      ...(resume ? { resume_from_checkpoint: resume } : {}) });
    await t.train();
    await t.close();
    return t.runTag;
  };
  const tagB = await run(outB, 2, 3); // B: steps 1–3, its checkpoint at 2
  const tagA = await run(outA, 3, 4); // A starts fresh: B's lines moved aside, A logs 1–4
  await run(outB, 2, 5, "latest"); // B resumes at 2 in the same folder: A's 3 and 4 must stay
  const lines = readJsonl(path.join(shared, "train_log.jsonl")).map((r) => [r.run, r.step]);
  assert.deepEqual(lines, [[tagA, 1], [tagA, 2], [tagA, 3], [tagA, 4], [tagB, 3], [tagB, 4], [tagB, 5]]);
  assert.deepEqual(readJsonl(path.join(shared, "train_log.earlier-1.jsonl")).map((r) => [r.run, r.step]), [[tagB, 1], [tagB, 2], [tagB, 3]]);
});

test("#6: hostile model and scheduler configs are refused before anything is built, naming the field", async () => {
  const { ControlNetModel, UNet2DConditionModel } = await import("../../lib/models/index.js");
  const { DDPMScheduler } = await import("../../lib/schedulers/index.js");
  const unetCfg = JSON.parse(fs.readFileSync(path.join(sd, "unet", "config.json"), "utf8")) as Record<string, unknown>;
  const cnCfg = { ...unetCfg, _class_name: "ControlNetModel", conditioning_embedding_out_channels: [16, 32] };
  const started = performance.now();
  assert.throws(() => new ControlNetModel({ ...cnCfg, layers_per_block: 1e9 }), /ControlNetModel config: layers_per_block must be an integer from 1 to 100.*1000000000/);
  const elapsed = performance.now() - started;
  assert.ok(elapsed < 1000, `refused in ${elapsed.toFixed(0)} ms`);
  assert.throws(() => new ControlNetModel({ ...cnCfg, block_out_channels: "lots" as never }), /block_out_channels must be a list of integers.*"lots"/);
  assert.throws(() => new UNet2DConditionModel({ ...unetCfg, block_out_channels: [32, 1e6] }), /UNet2DConditionModel config: block_out_channels/);
  assert.throws(() => new ControlNetModel({ ...cnCfg, conditioning_embedding_out_channels: [16, -1] }), /conditioning_embedding_out_channels/);
  assert.throws(() => new ControlNetModel({ ...cnCfg, layers_per_block: 100, transformer_layers_per_block: 100, block_out_channels: [65536, 65536] }), /about .* parameters/);
  assert.throws(() => new ControlNetModel({ ...cnCfg, mid_block_type: null }), /mid_block_type null .*not supported/);
  assert.throws(() => new UNet2DConditionModel({ ...unetCfg, mid_block_type: null }), /mid_block_type null .*not supported/);
  assert.throws(() => DDPMScheduler.fromConfig({ num_train_timesteps: 1e12 }), /num_train_timesteps must be an integer from 1 to 1000000, got 1000000000000/);
  // a β outside [0, 1] made the loss NaN at step 1, and the message blamed the learning rate
  assert.throws(() => DDPMScheduler.fromConfig({ beta_start: 0.00085, beta_end: -1 }), /beta_start 0.00085 and beta_end -1 \(.*\) give β = .* at timestep \d+; every β must be in \[0, 1\]/);
  assert.throws(() => DDPMScheduler.fromConfig({ beta_schedule: "linear", beta_start: 2, beta_end: 3 }), /every β must be in \[0, 1\]/);
  assert.doesNotThrow(() => DDPMScheduler.fromConfig({ rescale_betas_zero_snr: true }), "zero-SNR's last β of 1 is allowed");
  // GroupNorm's groups, flags and sizes are named too, not "32 channels not divisible by 3 groups"
  assert.throws(() => new UNet2DConditionModel({ ...unetCfg, norm_num_groups: 3 }), /UNet2DConditionModel config: norm_num_groups must be a divisor of every block_out_channels entry .* for GroupNorm, got 3/);
  assert.throws(() => new ControlNetModel({ ...cnCfg, upcast_attention: "yes" as never }), /ControlNetModel config: upcast_attention must be true or false, got "yes"/);
  assert.throws(() => new ControlNetModel({ ...cnCfg, sample_size: -1 }), /ControlNetModel config: sample_size must be an integer from 1/);
  // the fixture's own configs still build
  assert.doesNotThrow(() => new ControlNetModel(cnCfg, { shapeOnly: true }));

  // the VAE and the text encoder are configs too
  const { AutoencoderKL, CLIPTextModel } = await import("../../lib/models/index.js");
  const vaeCfg = JSON.parse(fs.readFileSync(path.join(sd, "vae", "config.json"), "utf8")) as Record<string, unknown>;
  const textCfg = JSON.parse(fs.readFileSync(path.join(sd, "text_encoder", "config.json"), "utf8")) as Record<string, unknown>;
  const t0 = performance.now();
  assert.throws(() => new AutoencoderKL({ ...vaeCfg, layers_per_block: 1e9 }), /AutoencoderKL config: layers_per_block must be an integer from 1 to 100, got 1000000000/);
  assert.throws(() => new CLIPTextModel({ ...textCfg, num_hidden_layers: 1e9 }), /CLIPTextModel config: num_hidden_layers must be an integer from 1 to 100, got 1000000000/);
  assert.ok(performance.now() - t0 < 1000, "refused before anything is built");
  assert.throws(() => new AutoencoderKL({ ...vaeCfg, scaling_factor: "big" as never }), /AutoencoderKL config: scaling_factor must be a number above 0.*"big"/);
  assert.throws(() => new AutoencoderKL({ ...vaeCfg, block_out_channels: [32, 1e7] }), /AutoencoderKL config: block_out_channels/);
  assert.throws(() => new CLIPTextModel({ ...textCfg, hidden_size: "wide" as never }), /CLIPTextModel config: hidden_size must be an integer/);
  assert.throws(() => new CLIPTextModel({ ...textCfg, vocab_size: 5e6, hidden_size: 65_536 }), /CLIPTextModel config describes about .* parameters/);
  assert.doesNotThrow(() => new AutoencoderKL(vaeCfg, { shapeOnly: true }));
  assert.doesNotThrow(() => new CLIPTextModel(textCfg, { shapeOnly: true }));

  // a ControlNet made for another base is refused when it is loaded, naming what differs (it failed at step 1 inside
  // TensorFlow: "Incompatible shapes: [1,8,8,32] vs. [1,16,16,32]"); the fixture's ControlNet fits the fixture's base
  const { loadBaseModel, loadOrCreateControlNet } = await import("../../lib/training/base.js");
  const { loadControlNetPipeline } = await import("../../lib/pipeline/index.js");
  const tinySd = path.join(root, "data/tiny-sd");
  const foreign = path.join(sd, "controlnet");
  const other = await loadBaseModel(tinySd);
  await assert.rejects(loadOrCreateControlNet(other, foreign), (e: Error) => e.name === "InputError" &&
    new RegExp(`^the ControlNet ${foreign} was made for another base than .*tiny-sd: layers_per_block \\[2,2\\] in the ControlNet, \\[1,1\\] in the base's UNet; conditioning_embedding_out_channels downsamples the control image ×2 \\(2 entries\\), the base's VAE ×4\\. Nothing was trained$`).test(e.message));
  await assert.rejects(loadControlNetPipeline(tinySd, foreign, { loadTokenizer: async () => ({ tokenize: () => [] }) as never }), /was made for another base than .*: layers_per_block .*; conditioning_embedding_out_channels .*Nothing was generated$/);
  assert.ok(await loadOrCreateControlNet(await loadBaseModel(sd), foreign));
  const { controlnetMismatch, CONTROLNET_DEFAULTS } = await import("../../lib/models/index.js");
  const base = JSON.parse(fs.readFileSync(path.join(sd, "unet", "config.json"), "utf8"));
  const cn = { ...CONTROLNET_DEFAULTS, ...JSON.parse(fs.readFileSync(path.join(foreign, "config.json"), "utf8")) };
  assert.equal(controlnetMismatch(cn, base, 2), null);
  assert.equal(controlnetMismatch({ ...cn, cross_attention_dim: [32, 32] }, base, 2), null, "a per-block list equal to the base's number");
  assert.equal(controlnetMismatch({ ...cn, block_out_channels: [32, 96], layers_per_block: 1 }, base, 2),
    "block_out_channels [32,96] in the ControlNet, [32,64] in the base's UNet; layers_per_block [1,1] in the ControlNet, [2,2] in the base's UNet");
});

test("#12: a checkpoint with a flipped bit is refused on load, naming the file; ImageGrid refuses a non-base64 image string", async () => {
  const { ImageGrid } = await import("../../widgets/index.js");
  const dir = tmp();
  const opts = { output_dir: dir, resolution: TINY_RESOLUTION, train_batch_size: 2, learning_rate: 1e-3, max_train_steps: 1, checkpointing_steps: 1, seed: 2 };
  const t = new ControlNetTrainer(tinyComponents(), await tinyDataset(), opts);
  await t.train();
  await t.close();
  const weightsFile = path.join(dir, "checkpoint-1", "controlnet", "diffusion_pytorch_model.safetensors");
  const bytes = fs.readFileSync(weightsFile);
  bytes[bytes.length - 5]! ^= 0x01; // one bit of one weight: the size is unchanged
  fs.writeFileSync(weightsFile, bytes);
  const ds = await tinyDataset();
  assert.throws(
    () => new ControlNetTrainer(tinyComponents(), ds, { ...opts, resume_from_checkpoint: "latest" }),
    /checkpoint-1' is not a complete checkpoint: file controlnet\/diffusion_pytorch_model\.safetensors does not match its SHA-256/,
  );
  assert.throws(() => new ImageGrid({ rows: [{ images: ['"><script>alert(1)</script>'] }] }), /must be base64/);
  const grid = new ImageGrid({ rows: [{ images: [Buffer.from([1, 2, 3]).toString("base64")] }] });
  assert.match(grid.html(), /base64,AQID"/);
});

test("checkpoints_total_limit on a disk with room for one checkpoint: the full disk is explained (the old one goes only once the new one is complete)", async (t) => {
  // one checkpoint's size, measured
  const probe = tmp("rel-size-");
  const opts = { resolution: TINY_RESOLUTION, train_batch_size: 2, learning_rate: 1e-3, max_train_steps: 2, checkpointing_steps: 1, seed: 2, checkpoints_total_limit: 1 };
  const first = new ControlNetTrainer(tinyComponents(), await tinyDataset(), { ...opts, output_dir: probe, max_train_steps: 1 });
  await first.train();
  await first.close();
  const size = (dir: string): number => fs.readdirSync(dir, { withFileTypes: true })
    .reduce((n, e) => n + (e.isDirectory() ? size(path.join(dir, e.name)) : Math.ceil(fs.statSync(path.join(dir, e.name)).size / 4096) * 4096), 4096);
  const one = size(path.join(probe, "checkpoint-1"));
  const mnt = tmp("rel-limit-");
  const m = spawnSync("mount", ["-t", "tmpfs", "-o", `size=${Math.ceil((one * 1.5) / 4096) * 4}k`, "tmpfs", mnt], { encoding: "utf8" });
  if (m.status !== 0) {
    t.skip(`cannot mount a tmpfs here (${(m.stderr || "").trim()}): needs root`);
    return;
  }
  try {
    const tr = new ControlNetTrainer(tinyComponents(), await tinyDataset(), { ...opts, output_dir: mnt });
    await assert.rejects(tr.train(), /could not write checkpoint-2 in .*: ENOSPC: .*\(checkpoints_total_limit removes checkpoint-1 only once the new checkpoint is complete, so that a crash never leaves none: saving needs room for one checkpoint more than the limit\); the last complete checkpoint is .*checkpoint-1/);
    await tr.close();
    assert.deepEqual(fs.readdirSync(mnt).filter((f) => f.startsWith("checkpoint-")), ["checkpoint-1"], "the complete one stays");
  } finally {
    spawnSync("umount", [mnt]);
  }
});

test("#9: a full disk while checkpointing names the checkpoint and what is kept, and leaves no partial folder", async (t) => {
  const mnt = tmp("rel-full-");
  const m = spawnSync("mount", ["-t", "tmpfs", "-o", "size=128k", "tmpfs", mnt], { encoding: "utf8" });
  if (m.status !== 0) {
    t.skip(`cannot mount a tmpfs here (${(m.stderr || "").trim()}): needs root`);
    return;
  }
  try {
    const opts = { output_dir: mnt, resolution: TINY_RESOLUTION, train_batch_size: 2, learning_rate: 1e-3, max_train_steps: 2, checkpointing_steps: 1, seed: 2 };
    const tr = new ControlNetTrainer(tinyComponents(), await tinyDataset(), opts);
    let failure: unknown;
    await assert.rejects(tr.train().catch((e) => { failure = e; throw e; }), /could not write checkpoint-1 in .*: ENOSPC: no space left on device.*; no earlier checkpoint exists/);
    // after the error, the failed checkpoint is not tried again (it failed the same way and said so twice)
    const errors: string[] = [];
    const err = console.error;
    console.error = (...a: unknown[]) => void errors.push(a.join(" "));
    try {
      assert.equal(await tr.checkpointAfterError(failure), null);
    } finally {
      console.error = err;
    }
    assert.deepEqual(errors, []);
    await tr.close();
    assert.deepEqual(fs.readdirSync(mnt).filter((f) => f.startsWith("checkpoint-")), [], "no partial checkpoint folder");
  } finally {
    spawnSync("umount", [mnt]);
  }
});
