/**
 * Issue 24, train_controlnet parity at the command line on the tiny base (tests/fixtures/sd_tiny): final validation,
 * TensorBoard as accelerate lays it out, save_model_card, push_to_hub's create-at-start with the login token file,
 * accelerate checkpoints, trackers, `accelerate launch`.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import sharp from "sharp";
import { decodeHparamsSessionStart, findEventFiles, readEvents } from "../../lib/training/tensorboard.js";
import { HubServer } from "../io/hub-server.js";
import { planLaunch } from "../../lib/cli/accelerate.js";
import { writeAccelerateCheckpoint } from "../training/fixtures/accelerate-checkpoint.js";
import { tempDir } from "../helpers.js";

const root = path.resolve(import.meta.dirname, "../..");
const bin = path.join(root, "bin", "controlnet-ts.js");
const tiny = path.join(root, "tests/fixtures/sd_tiny");

/** The CLI with a clean hub environment (no developer token, token file or accelerate config) plus `env`. */
function envWith(env: Record<string, string>): NodeJS.ProcessEnv {
  const e: NodeJS.ProcessEnv = { ...process.env, CONTROLNET_TS_THREADS: "2", HF_HOME: tempDir("hf-home-"), XDG_CACHE_HOME: tempDir("xdg-") };
  for (const k of ["HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH", "HF_ENDPOINT"]) delete e[k];
  return { ...e, ...env };
}
const run = (args: string[], env: Record<string, string> = {}) =>
  spawnSync(process.execPath, [bin, ...args], { cwd: root, encoding: "utf8", timeout: 600_000, env: envWith(env) });
function runAsync(args: string[], env: Record<string, string>): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [bin, ...args], { cwd: root, env: envWith(env) });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    child.on("close", (status) => resolve({ status, stdout, stderr }));
  });
}

/** The seed's two conditioning images at 32 px (validation generates at the conditioning image's own size). */
async function smallConditioningImages(dir: string): Promise<string[]> {
  return Promise.all([1, 2].map(async (i) => {
    const f = path.join(dir, `conditioning_image_${i}.png`);
    await sharp(path.join(root, `data/conditioning_image_${i}.png`)).resize(32, 32).png().toFile(f);
    return f;
  }));
}

const rgbOf = async (png: Uint8Array | string) => {
  const { data, info } = await sharp(typeof png === "string" ? png : Buffer.from(png)).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  return { data: new Uint8Array(data), width: info.width, height: info.height };
};

const PROMPTS = ["red circle with blue background", "cyan circle with brown floral background"];

test("the seed's 8 GB command: final validation after the last step → images in output_dir, TensorBoard (logging_dir/<project>, hparams, tag = prompt, conditioning image first) and the model card", async () => {
  const out = tempDir("cli-8gb-");
  const logs = tempDir("cli-8gb-logs-"); // an absolute --logging_dir is used as it is
  const images = await smallConditioningImages(out);
  fs.writeFileSync(path.join(out, "README.md"), "# my notes\n"); // the user's own: kept beside the card
  const r = run([
    "accelerate", "launch", "train_controlnet.py",
    `--pretrained_model_name_or_path=${tiny}`, `--output_dir=${out}`, "--dataset_name=synthetic-fill50k:16", "--resolution=32",
    "--learning_rate=1e-5", "--validation_image", ...images, "--validation_prompt", ...PROMPTS,
    "--train_batch_size=1", "--gradient_accumulation_steps=4", "--gradient_checkpointing", "--enable_xformers_memory_efficient_attention",
    "--set_grads_to_none", "--mixed_precision", "fp16",
    // the tiny run: 2 steps (validation_steps stays 100, so every image comes from the final validation)
    "--max_train_steps=2", "--num_validation_images=1", "--seed=1", `--logging_dir=${logs}`, "--tracker_project_name=fill50k_run",
  ]);
  assert.equal(r.status, 0, r.stderr.slice(-3000));
  // upstream's log lines
  for (const line of ["***** Running training *****", "  Num examples = 16", "  Num batches each epoch = 16", "  Num Epochs = 1",
    "  Instantaneous batch size per device = 1", "  Total train batch size (w. parallel, distributed & accumulation) = 4",
    "  Gradient Accumulation steps = 4", "  Total optimization steps = 2", "Initializing controlnet weights from unet", "Running validation... "]) {
    assert.ok(r.stderr.includes(`${line}\n`), `missing log line ${JSON.stringify(line)}:\n${r.stderr}`);
  }
  // …with the script's logger format: "12/04/2026 23:31:20 - INFO - __main__ - ***** Running training *****"
  assert.match(r.stderr, /^\d\d\/\d\d\/\d{4} \d\d:\d\d:\d\d - INFO - __main__ - \*\*\*\*\* Running training \*\*\*\*\*$/m);
  assert.match(r.stderr, /^\d\d\/\d\d\/\d{4} \d\d:\d\d:\d\d - INFO - __main__ - Initializing controlnet weights from unet$/m);
  // the script's first line, logger.info(accelerator.state), before the models load; fp16 asked, float32 computed
  assert.match(r.stderr, /^\d\d\/\d\d\/\d{4} \d\d:\d\d:\d\d - INFO - __main__ - Distributed environment: NO\nNum processes: 1\nProcess index: 0\nLocal process index: 0\nDevice: cpu\n\nMixed precision type: no\n\n.* - Initializing controlnet/ms);
  // validation images in output_dir, at the last step
  for (const i of [0, 1]) assert.ok(fs.existsSync(path.join(out, "validation", `step-2-final-pair-${i}-sample-0.png`)));
  // TensorBoard: <logging_dir>/<tracker_project_name>, nothing under output_dir/logs
  const project = path.join(logs, "fill50k_run");
  const files = findEventFiles(project);
  assert.ok(files.length >= 2, `event files: ${files}`);
  assert.ok(!fs.existsSync(path.join(out, "logs")) || findEventFiles(path.join(out, "logs")).length === 0, "absolute --logging_dir nested under output_dir");
  const values = files.flatMap((f) => readEvents(f).flatMap((e) => e.values.map((v) => ({ ...v, step: e.step }))));
  const imgs = values.filter((v) => v.image);
  assert.deepEqual(imgs.map((v) => [v.tag, v.step]), PROMPTS.map((p) => [p, 2]), "one image per prompt, tag = the prompt, at the last step");
  for (const [i, v] of imgs.entries()) {
    // conditioning image then the sample, side by side, no padding
    assert.deepEqual([v.image!.width, v.image!.height], [64, 32]);
    const grid = await rgbOf(v.image!.encoded);
    const control = await rgbOf(images[i]!);
    const left = new Uint8Array(32 * 32 * 3);
    for (let y = 0; y < 32; y++) left.set(grid.data.subarray(y * 64 * 3, y * 64 * 3 + 32 * 3), y * 32 * 3);
    assert.deepEqual(left, control.data, "the grid starts with the conditioning image");
  }
  assert.ok(values.some((v) => v.tag === "loss") && values.some((v) => v.tag === "lr"));
  // hparams, as accelerate's store_init_configuration: the plugin's summaries in a sub-folder, with hparams.yml
  const start = values.find((v) => v.tag === "_hparams_/session_start_info");
  assert.equal(start?.plugin?.name, "hparams");
  const hp = decodeHparamsSessionStart(start!.plugin!.content);
  assert.equal(hp.learning_rate, 1e-5);
  assert.equal(hp.gradient_accumulation_steps, 4);
  assert.equal(hp.max_train_steps, 2);
  assert.equal(hp.tracker_project_name, "fill50k_run");
  assert.equal(hp.gradient_checkpointing, 1); // Python's bool is an int: a float64 hparam
  assert.ok(!("validation_prompt" in hp) && !("hub_token" in hp) && !("controlnet_model_name_or_path" in hp), Object.keys(hp).join(","));
  const ymlDir = path.dirname(files.find((f) => path.dirname(f) !== project)!);
  const yml = fs.readFileSync(path.join(ymlDir, "hparams.yml"), "utf8");
  assert.match(yml, /^learning_rate: 1\.0e-05$/m);
  assert.match(yml, /^tracker_project_name: fill50k_run$/m);
  assert.match(yml, /^controlnet_model_name_or_path: null$/m);
  // floats as floats (the script's max_grad_norm=1.0), and the one float default the script writes as an int as an int
  assert.match(yml, /^max_grad_norm: 1\.0$/m);
  assert.match(yml, /^proportion_empty_prompts: 0$/m);
  // the model card: save_model_card's metadata and images, no local path in the snippet
  const card = fs.readFileSync(path.join(out, "README.md"), "utf8");
  assert.equal(fs.readFileSync(path.join(out, "README.md.orig"), "utf8"), "# my notes\n");
  assert.match(r.stdout, /Model card: .*README\.md \(the README\.md that was there, not a model card of ours, is kept as README\.md\.orig\)/);
  assert.match(card, /^library_name: diffusers$/m);
  assert.match(card, /^tags:\n- stable-diffusion\n- stable-diffusion-diffusers\n- text-to-image\n- diffusers\n- controlnet\n- diffusers-training\n/m);
  assert.match(card, /^license: creativeml-openrail-m$/m);
  assert.match(card, new RegExp(`^# controlnet-${path.basename(out)}$`, "m"));
  assert.ok(card.includes(`prompt: ${PROMPTS[0]}\n![images_0)](./images_0.png)\nprompt: ${PROMPTS[1]}\n![images_1)](./images_1.png)\n`), card);
  assert.ok(card.includes(`ControlNetModel.from_pretrained("${path.basename(out)}")`));
  assert.ok(!card.includes(out) && !card.includes(tiny + '"'), "a local path in the model card's code");
  for (const i of [0, 1]) {
    const grid = await rgbOf(path.join(out, `images_${i}.png`));
    assert.deepEqual([grid.width, grid.height], [64, 32]);
  }
  assert.deepEqual((await rgbOf(path.join(out, "image_control.png"))).data, (await rgbOf(images[1]!)).data, "the last pair's conditioning image");
  // accelerate launch with no accelerate flags and no config file: the script's flags pass through, nothing to report
  assert.doesNotMatch(r.stderr, /^accelerate launch: /m);
});

test("--push_to_hub with output_dir's name: <user>/<name> is created before training (token from the login file), the folder uploaded after; a bad token stops before training", async () => {
  const server = await new HubServer().start();
  const TOKEN = "hf_fileSECRETtoken4242";
  server.addUser(TOKEN, "alice");
  try {
    const tokenFile = path.join(tempDir("tok-"), "token");
    fs.writeFileSync(tokenFile, `${TOKEN}\n`);
    const parent = tempDir("cli-hub-");
    const out = path.join(parent, "fill50k-controlnet");
    const base = [`--pretrained_model_name_or_path=${tiny}`, "--dataset_name=synthetic-fill50k:8", "--resolution=32", "--train_batch_size=1", "--max_train_steps=1", "--seed=3"];
    const [control] = await smallConditioningImages(parent);
    const validation = ["--validation_image", control!, "--validation_prompt", PROMPTS[0]!, "--num_validation_images=1"];
    const r = await runAsync(["train_controlnet", ...base, ...validation, `--output_dir=${out}`, "--push_to_hub"], { HF_ENDPOINT: server.url, HF_TOKEN_PATH: tokenFile });
    assert.equal(r.status, 0, r.stderr.slice(-3000));
    assert.ok(!(r.stdout + r.stderr).includes(TOKEN), "the token appears in the output");
    // (created before training: the bad-token case below stops before any step)
    assert.match(r.stdout, /Created hub repo alice\/fill50k-controlnet/);
    assert.match(r.stderr, /\*\*\*\*\* Running training \*\*\*\*\*/, "the script's logger lines go to stderr, as Python's logging");
    assert.match(r.stdout, /Pushed to/);
    const files = server.filesAt("alice/fill50k-controlnet")!;
    const names = [...files.keys()].sort();
    // the card's images go with it (as save_model_card's); our validation/ folder, checkpoints and logs do not
    for (const f of ["README.md", "config.json", "diffusion_pytorch_model.safetensors", "images_0.png", "image_control.png"]) assert.ok(names.includes(f), `${f}: ${names}`);
    assert.ok(fs.readdirSync(path.join(out, "validation")).length > 0, "validation images were written locally");
    assert.ok(!names.some((n) => n.startsWith("checkpoint-") || n.startsWith("logs/") || n.startsWith("validation/")), `${names}`);
    assert.match(files.get("README.md")!.toString(), /# controlnet-alice\/fill50k-controlnet[\s\S]*ControlNetModel\.from_pretrained\("alice\/fill50k-controlnet"\)/);
    const creates = server.requests.filter((q) => q.url === "/api/repos/create");
    assert.equal(creates.length, 1);
    assert.ok(server.requests.every((q) => !q.authorization || q.authorization === `Bearer ${TOKEN}`));

    // the repo exists now: exist_ok, and a bare --hub_model_id; an upload failing at the end keeps the model
    const out2 = path.join(parent, "second");
    server.failCommitsWith = 500;
    const r2 = await runAsync(["train_controlnet", ...base, `--output_dir=${out2}`, "--push_to_hub", "--hub_model_id=fill50k-controlnet"], { HF_ENDPOINT: server.url, HF_TOKEN_PATH: tokenFile });
    server.failCommitsWith = undefined;
    assert.match(r2.stdout, /Using the existing hub repo alice\/fill50k-controlnet/);
    assert.equal(r2.status, 1, r2.stderr.slice(-3000));
    assert.match(r2.stderr, /--push_to_hub failed: .*HTTP 500[\s\S]*The trained ControlNet is saved in/);
    // the retry is a ready command that leaves out what the push left out (not "upload that folder", which pushed all)
    // (the hf CLI takes one pattern per --exclude: several after one were "unexpected extra arguments")
    const excluded = ["step_*", "epoch_*", "checkpoint-*", "checkpoint-*/**", "validation/**", ".controlnet-ts.lock", "logs/**"].map((p) => `--exclude '${p}'`).join(" ");
    assert.ok(r2.stderr.includes(`  hf upload 'alice/fill50k-controlnet' '${out2}' . ${excluded}\n`), r2.stderr);
    assert.ok(fs.existsSync(path.join(out2, "diffusion_pytorch_model.safetensors")));

    // a rejected token: one clear error within seconds, nothing trained or written
    fs.writeFileSync(tokenFile, "hf_revokedSECRETtoken000\n");
    const out3 = path.join(parent, "third");
    const r3 = await runAsync(["train_controlnet", ...base, `--output_dir=${out3}`, "--push_to_hub"], { HF_ENDPOINT: server.url, HF_TOKEN_PATH: tokenFile });
    assert.equal(r3.status, 1);
    assert.match(r3.stderr, /^train_controlnet: error: --push_to_hub: The hub rejected the token \(HTTP 401\).* Training did not start\.$/m);
    assert.ok(!(r3.stdout + r3.stderr).includes("hf_revokedSECRETtoken000"));
    assert.ok(!/\n\s+at /.test(r3.stderr), "no stack trace");
    assert.ok(!fs.existsSync(path.join(out3, "diffusion_pytorch_model.safetensors")) && !fs.existsSync(path.join(out3, "logs")), "nothing trained");
    // not logged in at all
    const r4 = await runAsync(["train_controlnet", ...base, `--output_dir=${out3}`, "--push_to_hub"], { HF_ENDPOINT: server.url });
    assert.equal(r4.status, 1);
    assert.match(r4.stderr, /needs a token: log in with `hf auth login` \(or `huggingface-cli login`\), set HF_TOKEN, or pass a token \(--hub_token on the command line/);
    // a name the hub cannot have: the same one line, before anything loads
    fs.writeFileSync(tokenFile, `${TOKEN}\n`);
    const r5 = await runAsync(["train_controlnet", ...base, `--output_dir=${out3}`, "--push_to_hub", "--hub_model_id=bad name!"], { HF_ENDPOINT: server.url, HF_TOKEN_PATH: tokenFile });
    assert.equal(r5.status, 1);
    assert.match(r5.stderr, /^train_controlnet: error: --push_to_hub: --hub_model_id: "bad name!" is not a hub repo id \(expected org\/name\)\. Training did not start\.$/m);
    assert.ok(!/\n\s+at /.test(r5.stderr), "no stack trace");
    // a dataset repo's id is refused as create_repo's validate_repo_id refuses it (it made a dataset repo, trained, and
    // the upload then found no model repo)
    const r6 = await runAsync(["train_controlnet", ...base, `--output_dir=${out3}`, "--push_to_hub", "--hub_model_id=datasets/alice/cn"], { HF_ENDPOINT: server.url, HF_TOKEN_PATH: tokenFile });
    assert.equal(r6.status, 1);
    assert.match(r6.stderr, /^train_controlnet: error: --push_to_hub: --hub_model_id: "datasets\/alice\/cn" is not a model repo id: it must be name or namespace\/name\. Training did not start\.$/m);
    assert.equal(server.filesAt("alice/cn", "main", "dataset"), undefined, "no dataset repo was created");
  } finally {
    await server.close();
  }
});

test("hub ids as upstream passes them: --revision is the base model's only, --controlnet_model_name_or_path at its main, --tokenizer_name a hub id", async () => {
  const server = await new HubServer().start();
  try {
    // main of the base lacks its UNet: only revision v2 can train
    const files: Record<string, Buffer> = {};
    for (const f of fs.readdirSync(tiny, { recursive: true }).map(String)) {
      if (fs.statSync(path.join(tiny, f)).isFile()) files[f] = fs.readFileSync(path.join(tiny, f));
    }
    server.addRepo("org/tiny-sd", Object.fromEntries(Object.entries(files).filter(([f]) => !f.startsWith("unet/"))));
    server.addRepo("org/tiny-sd", files, { branch: "v2" });
    server.addRepoFromDir("org/tiny-cn", path.join(tiny, "controlnet"));
    server.addRepoFromDir("org/clip-tokenizer", path.join(tiny, "tokenizer"));
    const out = tempDir("cli-rev-");
    const r = await runAsync(["train_controlnet", "--pretrained_model_name_or_path=org/tiny-sd", "--revision=v2", "--controlnet_model_name_or_path=org/tiny-cn",
      "--tokenizer_name=org/clip-tokenizer", `--output_dir=${out}`, "--dataset_name=synthetic-fill50k:4", "--resolution=32", "--train_batch_size=1",
      "--max_train_steps=1", "--seed=5"], { HF_ENDPOINT: server.url, HF_HUB_CACHE: tempDir("hub-cache-") });
    assert.equal(r.status, 0, r.stderr.slice(-3000));
    assert.match(r.stderr, / - INFO - __main__ - Loading existing controlnet weights$/m);
    const urls = server.requests.map((q) => q.url);
    assert.ok(urls.some((u) => u.startsWith("/api/models/org/tiny-sd/revision/v2?")), urls.join("\n"));
    assert.ok(urls.some((u) => u.startsWith("/api/models/org/tiny-cn/revision/main?")), urls.join("\n"));
    assert.ok(urls.some((u) => u.startsWith("/org/clip-tokenizer/resolve/")), "tokenizer fetched from the hub");
    assert.ok(fs.existsSync(path.join(out, "diffusion_pytorch_model.safetensors")));
  } finally {
    await server.close();
  }
});

test("--train_data_dir with --dataset_name is load_dataset's data_dir: the folder of the dataset that is trained on", async () => {
  const ds = tempDir("cli-datadir-");
  const png = (v: number) => sharp({ create: { width: 32, height: 32, channels: 3, background: { r: v, g: 0, b: 0 } } }).png().toBuffer();
  for (const [sub, n] of [["a", 2], ["b", 3]] as const) {
    fs.mkdirSync(path.join(ds, sub, "conditioning"), { recursive: true });
    const lines: string[] = [];
    for (let i = 0; i < n; i++) {
      fs.writeFileSync(path.join(ds, sub, `${i}.png`), await png(40 * i));
      fs.writeFileSync(path.join(ds, sub, "conditioning", `${i}.png`), await png(255 - 40 * i));
      lines.push(JSON.stringify({ file_name: `${i}.png`, conditioning_image: `conditioning/${i}.png`, text: `red circle ${i}` }));
    }
    fs.writeFileSync(path.join(ds, sub, "metadata.jsonl"), lines.join("\n"));
  }
  const args = ["train_controlnet", `--pretrained_model_name_or_path=${tiny}`, `--dataset_name=${ds}`, "--resolution=32", "--train_batch_size=1", "--max_train_steps=1", "--seed=6"];
  const r = run([...args, `--output_dir=${tempDir("cli-datadir-out-")}`, "--train_data_dir=b"]);
  assert.equal(r.status, 0, r.stderr.slice(-3000));
  assert.ok(r.stderr.includes("  Num examples = 3\n"), r.stderr);
  const missing = run([...args, `--output_dir=${tempDir("cli-datadir-out-")}`, "--train_data_dir=c"]);
  assert.notEqual(missing.status, 0);
  assert.match(missing.stderr, /train_data_dir 'c' is given with dataset_name, so it is load_dataset's data_dir/);
});

test("an output_dir of diffusers' (accelerate) checkpoints: one clear message offering their ControlNet, nothing overwritten", () => {
  const out = tempDir("cli-acc-");
  writeAccelerateCheckpoint(out, 500);
  writeAccelerateCheckpoint(out, 1000);
  const snapshot = () => fs.readdirSync(out, { recursive: true }).sort().map((f) => [f, fs.statSync(path.join(out, String(f))).mtimeMs]);
  const before = snapshot();
  for (const resume of [["--resume_from_checkpoint=latest"], ["--resume_from_checkpoint", path.join(out, "checkpoint-500")], []]) {
    const r = run(["train_controlnet", `--pretrained_model_name_or_path=${tiny}`, `--output_dir=${out}`, "--dataset_name=synthetic-fill50k:8",
      "--resolution=32", "--max_train_steps=1", "--checkpointing_steps=1", ...resume]);
    assert.equal(r.status, 2, r.stderr);
    const lines = r.stderr.trim().split("\n");
    assert.equal(lines.length, 1, r.stderr);
    assert.match(lines[0]!, /^train_controlnet: error: .* holds checkpoints written by diffusers' train_controlnet\.py \/ accelerate \(checkpoint-500, checkpoint-1000\)/);
    assert.ok(lines[0]!.includes(`--controlnet_model_name_or_path=${path.join(out, "checkpoint-1000", "controlnet")}`));
  }
  assert.deepEqual(snapshot(), before, "the folder was changed");
});

test("trackers and upstream's smaller habits: --report_to wandb logs to TensorBoard and says so (unknown trackers refused); logged lr is the next step's; accumulation stops at the epoch's end; 'removing checkpoints'; --num_validation_images 0", async () => {
  const out = tempDir("cli-wandb-");
  const [control] = await smallConditioningImages(out);
  const args = ["train_controlnet", `--pretrained_model_name_or_path=${tiny}`, `--output_dir=${out}`, "--dataset_name=synthetic-fill50k:3", "--resolution=32",
    "--train_batch_size=1", "--gradient_accumulation_steps=2", "--max_train_steps=2", "--seed=2", "--learning_rate=1e-4",
    "--lr_scheduler=constant_with_warmup", "--lr_warmup_steps=2", "--checkpointing_steps=1", "--checkpoints_total_limit=1",
    "--validation_image", control!, "--validation_prompt", PROMPTS[0]!, "--num_validation_images=0"];
  const r = run([...args, "--report_to", "wandb"]);
  assert.equal(r.status, 0, r.stderr.slice(-3000));
  assert.match(r.stderr, /warning: --report_to wandb: controlnet-ts has no wandb integration, so nothing is sent to wandb; the run is logged to TensorBoard instead/);
  const events = findEventFiles(path.join(out, "logs", "train_controlnet")).flatMap((f) => readEvents(f));
  const scalars = (tag: string) => events.flatMap((e) => e.values.filter((v) => v.tag === tag).map((v) => [e.step, v.simpleValue]));
  assert.equal(scalars("loss").length, 2, "what the warning promises is there");
  // lr_scheduler.get_last_lr() after the step: warmup 2 → 1/2 · lr after step 1, lr after step 2
  assert.deepEqual(scalars("lr"), [[1, Math.fround(5e-5)], [2, Math.fround(1e-4)]]);
  // 3 batches per epoch, accumulation 2: step 1 takes two, step 2 the epoch's last one alone (never one of epoch 1)
  assert.match(r.stderr, / - INFO - __main__ - {3}Num batches each epoch = 3\n.* - INFO - __main__ - {3}Num Epochs = 1\n/);
  const steps = fs.readFileSync(path.join(out, "logs", "train_log.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l) as { step: number; epoch: number });
  assert.deepEqual(steps.map((x) => [x.step, x.epoch]), [[1, 0], [2, 0]]);
  assert.match(r.stderr, /^.* - INFO - __main__ - 1 checkpoints already exist, removing 1 checkpoints\n.* - INFO - __main__ - removing checkpoints: checkpoint-1$/m);
  assert.deepEqual(fs.readdirSync(out).filter((f) => f.startsWith("checkpoint-")), ["checkpoint-2"]);
  // --num_validation_images 0: the final validation logs the conditioning image alone
  const imgs = events.flatMap((e) => e.values.filter((v) => v.image).map((v) => ({ step: e.step, tag: v.tag, w: v.image!.width })));
  assert.deepEqual(imgs, [{ step: 2, tag: PROMPTS[0], w: 32 }]);
  const bad = run([...args, "--report_to", "neptune"]);
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /^train_controlnet: error: Unsupported logging capability: neptune\. Choose between all, aim, tensorboard, wandb, trackio, comet_ml/m);
});

test("accelerate launch maps what applies (config file's DeepSpeed offload, threads) and says what does not; more than one process goes to controlnet-ts launch; accelerate config writes once", () => {
  const home = tempDir("acc-home-");
  const cfg = path.join(home, "ds.yaml");
  // the seed README's DeepSpeed stage 2 config, as `accelerate config` writes it
  fs.writeFileSync(cfg, "compute_environment: LOCAL_MACHINE\ndeepspeed_config:\n  gradient_accumulation_steps: 2\n  offload_optimizer_device: cpu\n  offload_param_device: cpu\n  zero3_init_flag: false\n  zero_stage: 2\ndistributed_type: DEEPSPEED\nmixed_precision: fp16\nnum_processes: 1\n");
  const out = tempDir("cli-launch-");
  const r = run(["accelerate", "launch", "--config_file", cfg, "--num_cpu_threads_per_process", "1", "--main_process_port", "29501", "train_controlnet.py",
    `--pretrained_model_name_or_path=${tiny}`, `--output_dir=${out}`, "--dataset_name=synthetic-fill50k:8", "--resolution=32", "--train_batch_size=1",
    "--max_train_steps=1", "--seed=4"], { XDG_CACHE_HOME: home });
  assert.equal(r.status, 0, r.stderr.slice(-3000));
  assert.match(r.stderr, /accelerate launch: DeepSpeed offload_optimizer_device cpu → --offload_optimizer_state/);
  assert.match(r.stderr, /accelerate launch: gradient_accumulation_steps 2 → --gradient_accumulation_steps=2/);
  assert.match(r.stderr, /accelerate launch: mixed_precision fp16 → --mixed_precision=fp16/);
  assert.match(r.stderr, /no effect in controlnet-ts: /);
  assert.ok(r.stderr.includes("  Gradient Accumulation steps = 2\n"), r.stderr);
  assert.match(r.stdout, /engine: .*, 1 thread\(s\)\)/, "num_cpu_threads_per_process → engine threads");

  // more than one process goes through controlnet-ts launch (its flags reach it: a bad value is the launcher's error)
  const multi = run(["accelerate", "launch", "--num_processes", "2", "--main_process_port", "0", "train_controlnet.py", "--pretrained_model_name_or_path=x", "--dataset_name=y"], { XDG_CACHE_HOME: home });
  assert.notEqual(multi.status, 0);
  assert.match(multi.stderr, /accelerate launch: num_processes 2 on 1 machine\(s\) → controlnet-ts launch/);
  assert.match(multi.stderr, /^launch: /m);
  const other = run(["accelerate", "launch", "train_text_to_image.py"], { XDG_CACHE_HOME: home });
  assert.equal(other.status, 2);
  assert.match(other.stderr, /train_controlnet\.py only/);

  const c1 = run(["accelerate", "config", "default", "--mixed_precision", "bf16"], { XDG_CACHE_HOME: home });
  assert.equal(c1.status, 0, c1.stderr);
  const file = path.join(home, "controlnet-ts", "accelerate", "default_config.yaml");
  assert.match(c1.stdout, new RegExp(`configuration saved at ${file.replace(/[/.]/g, "\\$&")}`));
  assert.equal(JSON.parse(fs.readFileSync(file, "utf8")).mixed_precision, "bf16");
  const c2 = run(["accelerate", "config"], { XDG_CACHE_HOME: home });
  assert.match(c2.stdout, /already exists .* will not override/);
  assert.equal(JSON.parse(fs.readFileSync(file, "utf8")).mixed_precision, "bf16");
});

test("accelerate launch / config refuse what accelerate refuses, in one line, and print their usage on --help", () => {
  const home = tempDir("acc-flags-");
  const hfHome = tempDir("acc-hf-");
  const env = { XDG_CACHE_HOME: home, HF_HOME: hfHome };
  const file = path.join(home, "controlnet-ts", "accelerate", "default_config.yaml");
  const oneError = (r: ReturnType<typeof run>, re: RegExp) => {
    assert.equal(r.status, 2, r.stderr);
    assert.deepEqual(r.stderr.trim().split("\n").length, 1, r.stderr);
    assert.match(r.stderr, re);
  };

  // fp8 is accelerate's choice, not train_controlnet.py's: `config default` refuses it, naming what is allowed
  oneError(run(["accelerate", "config", "default", "--mixed_precision", "fp8"], env), /^controlnet-ts: error: `mixed_precision` should be one of 'no', 'fp16', 'bf16' .*Received 'fp8'$/m);
  assert.ok(!fs.existsSync(file));
  // … and launch with Python accelerate's own config holding fp8 says it has no effect instead of forwarding it
  fs.mkdirSync(path.join(hfHome, "accelerate"), { recursive: true });
  fs.writeFileSync(path.join(hfHome, "accelerate", "default_config.yaml"), "compute_environment: LOCAL_MACHINE\ndistributed_type: 'NO'\nmixed_precision: fp8\nnum_processes: 1\n");
  const fp8 = run(["accelerate", "launch", "train_controlnet.py", "--help"], env);
  assert.equal(fp8.status, 0, fp8.stderr);
  assert.match(fp8.stderr, /^accelerate launch: mixed_precision fp8 has no effect in controlnet-ts \(TensorFlow\.js has no fp8 or fp16 dtype; training runs in float32\)/m);
  assert.doesNotMatch(fp8.stderr, /--mixed_precision=fp8|invalid choice/);

  // --help / -h: usage, nothing written
  for (const h of ["--help", "-h"]) {
    const c = run(["accelerate", "config", h], env);
    assert.equal(c.status, 0, c.stderr);
    assert.match(c.stdout, /^usage: controlnet-ts accelerate config /);
    assert.ok(!fs.existsSync(file), `accelerate config ${h} wrote ${file}`);
  }
  const lh = run(["accelerate", "launch", "--help"], env);
  assert.equal(lh.status, 0, lh.stderr);
  assert.match(lh.stdout, /^usage: controlnet-ts accelerate launch /);
  assert.match(lh.stdout, /--num_cpu_threads_per_process N +→ engine threads/);
  assert.match(lh.stdout, /Every other flag of accelerate launch .*\n?.*accepted and named as having no effect/);

  // integer flags: argparse's invalid int value, one line, exit 2
  for (const flag of ["--num_processes", "--num_machines", "--machine_rank", "--main_process_port", "--num_cpu_threads_per_process", "--gradient_accumulation_steps"]) {
    oneError(run(["accelerate", "launch", `${flag}=abc`, "train_controlnet.py", "--help"], env),
      new RegExp(`^controlnet-ts: error: accelerate launch: argument ${flag}: invalid int value: 'abc'$`, "m"));
  }

  // flags are named as written: -m, not --m; a single dash takes one letter only
  const short = run(["accelerate", "launch", "-m", "-q", "train_controlnet", "--help"], env);
  assert.equal(short.status, 0, short.stderr);
  assert.match(short.stderr, /^accelerate launch: no effect in controlnet-ts: -m$/m);
  oneError(run(["accelerate", "launch", "-num_processes", "2", "train_controlnet.py"], env), /unrecognized argument -num_processes/);

  // a flag that needs a value and has none is an error, nothing written
  oneError(run(["accelerate", "config", "default", "--config_file"], env), /^controlnet-ts: error: accelerate config: argument --config_file: expected one argument$/m);
  oneError(run(["accelerate", "config", "default", "--config_file", "--mixed_precision", "bf16"], env), /argument --config_file: expected one argument/);
  assert.ok(!fs.existsSync(file));
  oneError(run(["accelerate", "launch", "--num_processes", "--multi_gpu", "train_controlnet.py"], env), /argument --num_processes: expected one argument/);

  // every flag of accelerate launch is known: real ones (FSDP 2, torchrun's tee, fp8, …) have no effect, said so
  const real = run(["accelerate", "launch", "--enable_cpu_affinity", "--tee", "3", "--fsdp_version", "2", "--gradient_clipping", "1.0",
    "--fp8_margin", "0", "--dynamo_use_regional_compilation", "train_controlnet.py", "--help"], env);
  assert.equal(real.status, 0, real.stderr);
  assert.match(real.stderr, /^accelerate launch: no effect in controlnet-ts: --enable_cpu_affinity, --tee, --fsdp_version, --gradient_clipping, --fp8_margin, --dynamo_use_regional_compilation/m);
  oneError(run(["accelerate", "launch", "--gradient_clipping", "lots", "train_controlnet.py"], env), /argument --gradient_clipping: invalid float value: 'lots'$/m);
  oneError(run(["accelerate", "launch", "--bogus", "train_controlnet.py"], env), /unrecognized argument --bogus/);
  // accelerate's own checks of the process layout
  oneError(run(["accelerate", "launch", "--cpu", "--multi_gpu", "train_controlnet.py"], env), /You can only use one of `--cpu`, `--multi_gpu`, `--tpu`, `--use_deepspeed`, `--use_fsdp` at a time\.$/m);
  oneError(run(["accelerate", "launch", "--multi_gpu", "--num_processes", "1", "train_controlnet.py"], env), /You need to use at least 2 processes to use `--multi_gpu`\.$/m);
  oneError(run(["accelerate", "launch", "--num_processes", "0", "train_controlnet.py"], env), /num_processes must be at least 1, not 0$/m);

  // a config file's settings that ask for something launch does not do are named too (FSDP, use_cpu, dynamo)
  const fsdp = path.join(home, "fsdp.yaml");
  fs.writeFileSync(fsdp, "compute_environment: LOCAL_MACHINE\ndistributed_type: FSDP\nfsdp_config:\n  fsdp_offload_params: true\n  fsdp_sharding_strategy: FULL_SHARD\n" +
    "dynamo_config:\n  dynamo_backend: INDUCTOR\ngpu_ids: all\nuse_cpu: true\nmain_training_function: main\nnum_processes: 1\n");
  const fromConfig = run(["accelerate", "launch", "--config_file", fsdp, "train_controlnet.py", "--help"], env);
  assert.equal(fromConfig.status, 0, fromConfig.stderr);
  assert.match(fromConfig.stderr, /^accelerate launch: no effect in controlnet-ts: distributed_type FSDP in fsdp\.yaml, fsdp_config \(fsdp_offload_params, fsdp_sharding_strategy\) in fsdp\.yaml, dynamo_config \(dynamo_backend\) in fsdp\.yaml$/m);
  // use_cpu / --cpu and --gpu_ids choose the GPUs as accelerate does: CUDA_VISIBLE_DEVICES (each process its own)
  assert.match(fromConfig.stderr, /^accelerate launch: cpu → CUDA_VISIBLE_DEVICES=-1$/m);
  const picked = planLaunch(["--multi_gpu", "--gpu_ids", "4,5,6", "train_controlnet.py"]);
  assert.equal(picked.visibleDevices, "4,5,6");
  assert.equal(picked.processes.numProcesses, 3, "--multi_gpu alone: one process per GPU given");
  assert.equal(planLaunch(["--gpu_ids", "all", "train_controlnet.py"]).visibleDevices, null);
  // DeepSpeed's optimizer offload applies with DeepSpeed only; without it the flag is named, not dropped silently
  const offload = (flags: string[]) => planLaunch([...flags, "train_controlnet.py"]);
  assert.ok(offload(["--use_deepspeed", "--offload_optimizer_device", "cpu"]).argv.includes("--offload_optimizer_state"));
  const alone = offload(["--offload_optimizer_device", "cpu"]);
  assert.ok(!alone.argv.includes("--offload_optimizer_state"));
  assert.ok(alone.notes.some((n) => /no effect in controlnet-ts: .*--offload_optimizer_device without --use_deepspeed/.test(n)), alone.notes.join("\n"));
});

test("validation generates at the conditioning image's own size (as the pipeline does without height/width), not at --resolution; the final round does not overwrite the last step's", async () => {
  const out = tempDir("cli-valsize-");
  const control = path.join(out, "control-64x48.png");
  await sharp(path.join(root, "data/conditioning_image_1.png")).resize(64, 48, { fit: "fill" }).png().toFile(control);
  const r = run(["train_controlnet", `--pretrained_model_name_or_path=${tiny}`, `--output_dir=${out}`, "--dataset_name=synthetic-fill50k:2",
    "--resolution=32", "--train_batch_size=1", "--max_train_steps=1", "--seed=3", "--validation_image", control,
    "--validation_prompt", PROMPTS[0]!, "--num_validation_images=1", "--validation_steps=1"]);
  assert.equal(r.status, 0, r.stderr.slice(-3000));
  // the last step is a validation step: its round and the final one (after saving) are both kept
  assert.deepEqual(fs.readdirSync(path.join(out, "validation")).sort(), ["step-1-final-pair-0-sample-0.png", "step-1-pair-0-sample-0.png"]);
  const sample = await rgbOf(path.join(out, "validation", "step-1-final-pair-0-sample-0.png"));
  assert.deepEqual([sample.width, sample.height], [64, 48]);
  // the card's row: the conditioning image beside the sample, both at that size
  const row = await rgbOf(path.join(out, "images_0.png"));
  assert.deepEqual([row.width, row.height], [128, 48]);
});

test("train_controlnet --help and -h: argparse's `-h, --help` entry first under options, the text ending in a newline, exit 0", () => {
  for (const h of ["--help", "-h"]) {
    const r = run(["train_controlnet", h]);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /^usage: train_controlnet /);
    assert.match(r.stdout, /\noptions:\n {2}-h, --help\n {6}show this help message and exit\n {2}--pretrained_model_name_or_path /);
    assert.match(r.stdout, /[^\n]\n$/);
    assert.equal(r.stderr, "");
  }
});

test("accelerate with no command: accelerate_cli's print_help() and exit(1); -h/--help exit 0; an unknown command is an error on stderr, exit 2", () => {
  const none = run(["accelerate"]);
  assert.equal(none.status, 1, none.stderr);
  assert.match(none.stdout, /^usage: controlnet-ts accelerate launch /);
  for (const h of ["--help", "-h"]) {
    const r = run(["accelerate", h]);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /^usage: controlnet-ts accelerate launch /);
  }
  const bad = run(["accelerate", "env"]);
  assert.equal(bad.status, 2);
  assert.equal(bad.stdout, "");
  assert.match(bad.stderr, /^controlnet-ts: error: accelerate: unknown command "env" \(controlnet-ts has accelerate launch and accelerate config\)$/m);
});

test("the model card's metadata is in huggingface_hub's order (inference before tags): its start is save_model_card's byte for byte", async () => {
  const { writeModelCardSync } = await import("../../lib/training/model-card.js");
  const dir = tempDir("card-order-");
  writeModelCardSync(dir, { repoId: "me/cn", baseModel: "base/model", training: null });
  // diffusers 0.42.1 save_model_card (load_or_create_model_card + populate_model_card, huggingface_hub 2.4's yaml dump),
  // no validation images, up to its template's first TODO
  const upstream = "---\nbase_model: base/model\nlibrary_name: diffusers\nlicense: creativeml-openrail-m\ninference: true\ntags:\n" +
    "- stable-diffusion\n- stable-diffusion-diffusers\n- text-to-image\n- diffusers\n- controlnet\n- diffusers-training\n---\n\n" +
    "<!-- This model card has been generated automatically according to the information the training script had access to. You\n" +
    "should probably proofread and complete it, then remove this comment. -->\n\n\n# controlnet-me/cn\n\n" +
    "These are controlnet weights trained on base/model with new type of conditioning.\n\n\n\n## Intended uses & limitations\n\n#### How to use\n\n```python\n";
  const card = fs.readFileSync(path.join(dir, "README.md"), "utf8");
  assert.equal(card.slice(0, upstream.length), upstream);
});
