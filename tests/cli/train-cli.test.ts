/** The train_controlnet command line end to end on the tiny reference pipeline (tests/fixtures/sd_tiny). */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { readSafetensorsHeader } from "../../lib/io/safetensors.js";
import { findEventFiles, makeGrid, readEvents } from "../../lib/training/tensorboard.js";
import sharp from "sharp";
import { HubServer } from "../io/hub-server.js";
import { tempDir } from "../helpers.js";

const root = path.resolve(import.meta.dirname, "../..");
const bin = path.join(root, "bin", "controlnet-ts.js");
const cli = (args: string[]) => spawnSync(process.execPath, [bin, "train_controlnet", ...args], {
  cwd: root, encoding: "utf8", timeout: 600_000, env: { ...process.env, CONTROLNET_TS_THREADS: "2" },
});

// Validation (20 UniPC steps per image, as the script does) dominates these runs: it generates at the conditioning
// image's own size, so the tests use a 32 px copy of the seed's image.
test("validation during training and once more after the last step: images saved and logged to TensorBoard (tag = prompt, conditioning image first), fill50k fidelity scored", async () => {
  const out = tempDir("cli-val-");
  const control = path.join(out, "conditioning_image_1.png");
  await sharp(path.join(root, "data/conditioning_image_1.png")).resize(32, 32).png().toFile(control);
  const r = cli([
    "--pretrained_model_name_or_path", path.join(root, "tests/fixtures/sd_tiny"),
    `--output_dir=${out}`, "--dataset_name=synthetic-fill50k:16", "--resolution=32", "--train_batch_size=2",
    "--max_train_steps=1", "--validation_steps=1", "--num_validation_images=2", "--seed=1",
    "--validation_image", control, "--validation_prompt", "red circle with blue background",
  ]);
  assert.equal(r.status, 0, r.stderr.slice(-3000));
  const events = findEventFiles(path.join(out, "logs")).flatMap((f) => readEvents(f));
  const images = events.flatMap((e) => e.values).filter((v) => v.image);
  // step 1 is a validation step and the last step: the script validates in the loop and again at the end
  assert.deepEqual(images.map((v) => v.tag), ["red circle with blue background", "red circle with blue background"]);
  // the conditioning image and the two samples side by side, no padding, as torch's add_images tiles them
  const grid = makeGrid([0, 1, 2].map(() => new Uint8Array(32 * 32 * 3)), 32, 32, 3, 8, 0);
  assert.deepEqual([images[0]!.image!.width, images[0]!.image!.height], [grid.width, grid.height]);
  // both rounds' samples are kept: the final one's files do not overwrite the last step's
  const pngs = fs.readdirSync(path.join(out, "validation"), { recursive: true, encoding: "utf8" }).filter((f) => String(f).endsWith(".png"));
  assert.deepEqual(pngs.sort(), ["step-1-final-pair-0-sample-0.png", "step-1-final-pair-0-sample-1.png", "step-1-pair-0-sample-0.png", "step-1-pair-0-sample-1.png"]);
  const tags = new Set(events.flatMap((e) => e.values.map((v) => v.tag)));
  assert.ok(tags.has("validation/fidelity_iou"), `tags: ${[...tags]}`);
});

test("seed flags verbatim: trains, checkpoints, logs to TensorBoard and saves a diffusers ControlNet with a model card", () => {
  const out = tempDir("cli-train-");
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

/** The CLI in a child process, asynchronously: the loopback hub answers from this process's event loop. */
function cliAsync(args: string[], env: Record<string, string>): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [bin, "train_controlnet", ...args], { cwd: root, env: { ...process.env, CONTROLNET_TS_THREADS: "2", ...env } });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    child.on("close", (status) => resolve({ status, stdout, stderr }));
  });
}

test("--push_to_hub uploads the final ControlNet (not checkpoints or logs) to the hub; the token never shows", async () => {
  const server = await new HubServer().start();
  const TOKEN = "hf_cliSECRETtoken123";
  server.tokens.add(TOKEN);
  try {
    const base = [
      "--pretrained_model_name_or_path", path.join(root, "tests/fixtures/sd_tiny"), "--dataset_name=synthetic-fill50k:8",
      "--resolution=32", "--train_batch_size=1", "--max_train_steps=1", "--checkpointing_steps=1", "--seed=3",
    ];
    const out = tempDir("cli-push-");
    const r = await cliAsync([...base, `--output_dir=${out}`, "--push_to_hub", "--hub_model_id=me/cli-controlnet", `--hub_token=${TOKEN}`], { HF_ENDPOINT: server.url });
    assert.equal(r.status, 0, r.stderr.slice(-3000));
    assert.ok(!(r.stdout + r.stderr).includes(TOKEN), "the token appears in the output");
    assert.match(r.stdout, /Pushed to/);
    const files = server.filesAt("me/cli-controlnet");
    assert.ok(files, "repo created");
    const names = [...files.keys()].sort();
    for (const f of ["README.md", "config.json", "diffusion_pytorch_model.safetensors"]) assert.ok(names.includes(f), `${f} uploaded: ${names}`);
    assert.ok(!names.some((n) => n.startsWith("checkpoint-") || n.startsWith("logs/")), `checkpoints/logs excluded: ${names}`);
    assert.deepEqual(files.get("diffusion_pytorch_model.safetensors"), fs.readFileSync(path.join(out, "diffusion_pytorch_model.safetensors")));
    assert.ok(!fs.readFileSync(path.join(out, "README.md"), "utf8").includes(TOKEN), "the model card holds no token");
    assert.ok(server.requests.some((q) => q.authorization === `Bearer ${TOKEN}`), "the token was sent to the hub");

    // a rejected token: the repo is created before training (as the script's create_repo), so it fails there —
    // one clear error, non-zero exit, nothing trained, no token echoed
    const out2 = tempDir("cli-push-bad-");
    const bad = "hf_wrongSECRETtoken999";
    const r2 = await cliAsync([...base, `--output_dir=${out2}`, "--push_to_hub", "--hub_model_id=me/other", `--hub_token=${bad}`], { HF_ENDPOINT: server.url });
    assert.equal(r2.status, 1, r2.stderr.slice(-3000));
    assert.match(r2.stderr, /--push_to_hub: .*401.*Training did not start/);
    assert.ok(!(r2.stdout + r2.stderr).includes(bad), "the rejected token appears in the output");
    assert.ok(!fs.existsSync(path.join(out2, "diffusion_pytorch_model.safetensors")));
  } finally {
    await server.close();
  }
});

test("a validation image too large for the engine's memory (validation runs at its own size) is refused before training, naming it", async () => {
  const out = tempDir("cli-valbig-");
  const big = path.join(out, "huge-control.png");
  await sharp({ create: { width: 5000, height: 5000, channels: 3, background: { r: 0, g: 0, b: 0 } } }).png().toFile(big);
  // on wasm: the budget is the 4 GiB heap on any machine (5000² decodes through the tiny VAE at ~6 GB)
  const r = spawnSync(process.execPath, [bin, "train_controlnet", `--pretrained_model_name_or_path=${path.join(root, "data/tiny-sd")}`,
    `--output_dir=${path.join(out, "run")}`, "--dataset_name=synthetic-fill50k:4", "--resolution=32", "--train_batch_size=1", "--max_train_steps=2",
    "--seed=1", `--validation_image=${big}`, "--validation_prompt=red circle"], {
    cwd: root, encoding: "utf8", timeout: 300_000, env: { ...process.env, CONTROLNET_TS_BACKEND: "wasm", CONTROLNET_TS_THREADS: "1" },
  });
  assert.equal(r.status, 1, r.stderr.slice(-2000));
  assert.match(r.stderr, new RegExp(`validation image .*huge-control\\.png is 5000×5000: validation generates at the image's own size .* Nothing was trained\\.`));
  assert.doesNotMatch(r.stderr, /Steps: 1/);
  assert.ok(!fs.existsSync(path.join(out, "run", "checkpoint-1")));
});

test("what is kept is said: a model card that cannot be written names the saved ControlNet; a file in validation/'s place is refused up front", () => {
  const out = tempDir("cli-kept-");
  const flags = (dir: string, extra: string[] = []) => [`--pretrained_model_name_or_path=${path.join(root, "data/tiny-sd")}`, `--output_dir=${dir}`,
    "--dataset_name=synthetic-fill50k:4", "--resolution=32", "--train_batch_size=1", "--max_train_steps=1", "--seed=1", ...extra];
  const card = path.join(out, "card");
  fs.mkdirSync(path.join(card, "README.md"), { recursive: true });
  const r = cli(flags(card));
  assert.equal(r.status, 1, r.stderr.slice(-2000));
  assert.match(r.stderr, /the ControlNet is saved in .*card, but its model card could not be written \(.*README\.md is not a file \(a folder\?\)/);
  assert.ok(fs.existsSync(path.join(card, "diffusion_pytorch_model.safetensors")));

  const val = path.join(out, "val");
  fs.mkdirSync(val);
  fs.writeFileSync(path.join(val, "validation"), "x");
  const control = path.join(root, "tests/fixtures/sd_tiny/../../../data/conditioning_image_1.png");
  const v = cli(flags(val, [`--validation_image=${control}`, "--validation_prompt=red circle"]));
  assert.equal(v.status, 1, v.stderr.slice(-2000));
  assert.match(v.stderr, /validation is a file: validation writes its images in a folder of that name; move it away\. Nothing was trained/);
  assert.doesNotMatch(v.stderr, /Steps: 1/);
});

test("resuming a checkpoint beyond --max_train_steps says there is no step to train", () => {
  const out = tempDir("cli-beyond-");
  const flags = (extra: string[]) => [`--pretrained_model_name_or_path=${path.join(root, "data/tiny-sd")}`, `--output_dir=${out}`,
    "--dataset_name=synthetic-fill50k:4", "--resolution=32", "--train_batch_size=1", "--seed=1", "--checkpointing_steps=2", ...extra];
  assert.equal(cli(flags(["--max_train_steps=2"])).status, 0);
  const r = cli(flags(["--max_train_steps=1", "--resume_from_checkpoint=latest"]));
  assert.equal(r.status, 0, r.stderr.slice(-2000));
  assert.match(r.stdout, /The resumed checkpoint is at step 2, beyond --max_train_steps 1: no step to train; its ControlNet is saved as the final one\./);
});

test("a new run in a folder where an earlier run saved its ControlNet says it replaces it, and moves that run's validation images aside", () => {
  const out = tempDir("cli-again-");
  const flags = [`--pretrained_model_name_or_path=${path.join(root, "tests/fixtures/sd_tiny")}`, `--output_dir=${out}`, "--dataset_name=synthetic-fill50k:8",
    "--resolution=32", "--train_batch_size=1", "--max_train_steps=2", "--seed=3", "--num_validation_images=1", "--validation_steps=2",
    "--validation_prompt", "red circle", "--validation_image", path.join(root, "tests/fixtures/pipeline_tiny/control.png")];
  const first = cli(flags);
  assert.equal(first.status, 0, first.stderr.slice(-2000));
  const earlier = fs.readdirSync(path.join(out, "validation")).sort();
  assert.ok(earlier.length > 0);
  const again = cli([...flags, "--max_train_steps=1", "--validation_steps=100"]);
  assert.equal(again.status, 0, again.stderr.slice(-2000));
  assert.match(again.stdout, new RegExp(`${out.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")} holds a ControlNet an earlier run saved: this run replaces it when it ends`));
  // (they sat beside a model that never took those steps)
  assert.deepEqual(fs.readdirSync(path.join(out, "validation.earlier-1")).sort(), earlier);
  assert.deepEqual(fs.readdirSync(path.join(out, "validation")).sort(), ["step-1-final-pair-0-sample-0.png"]);
});
