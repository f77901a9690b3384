/** Issue 25 #9/#10: train_controlnet's failures are one line naming the problem and what is kept, never a stack. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { tempDir } from "../helpers.js";

const root = path.resolve(import.meta.dirname, "../..");
const bin = path.join(root, "bin", "controlnet-ts.js");
const sd = path.join(root, "tests/fixtures/sd_tiny");
const cli = (args: string[], env: Record<string, string> = {}) => spawnSync(process.execPath, [bin, "train_controlnet", ...args], {
  cwd: root, encoding: "utf8", timeout: 600_000, env: { ...process.env, CONTROLNET_TS_THREADS: "1", CONTROLNET_TS_DEBUG: "", ...env },
});
const tiny = ["--dataset_name=synthetic-fill50k:8", "--resolution=32", "--train_batch_size=1", "--max_train_steps=1", "--seed=1"];
const noStack = (s: string) => assert.ok(!/^\s+at /m.test(s), `a stack trace was printed:\n${s}`);

test("#9: output_dir is a file, a missing resume checkpoint: one line each, no stack (unless CONTROLNET_TS_DEBUG)", () => {
  const dir = tempDir("cli-err-");
  const file = path.join(dir, "a-file");
  fs.writeFileSync(file, "x");
  const r1 = cli([`--pretrained_model_name_or_path=${sd}`, `--output_dir=${file}`, ...tiny]);
  assert.equal(r1.status, 1);
  assert.match(r1.stderr, /train_controlnet: --output_dir .*a-file exists and is not a folder; nothing was trained/);
  noStack(r1.stderr);
  const r2 = cli([`--pretrained_model_name_or_path=${sd}`, `--output_dir=${path.join(dir, "out")}`, ...tiny, "--resume_from_checkpoint=checkpoint-7"]);
  assert.equal(r2.status, 1);
  assert.match(r2.stderr, /train_controlnet: resume_from_checkpoint 'checkpoint-7' does not exist/);
  noStack(r2.stderr);
  assert.match(r2.stderr, /CONTROLNET_TS_DEBUG=1/);
  // with the debug variable, the stack is there
  const r3 = cli([`--pretrained_model_name_or_path=${sd}`, `--output_dir=${path.join(dir, "out")}`, ...tiny, "--resume_from_checkpoint=checkpoint-7"], { CONTROLNET_TS_DEBUG: "1" });
  assert.match(r3.stderr, /^\s+at /m);
  // an error in what was asked (an InputError: here a ControlNet of another base) is the whole story: no debug hint
  const r4 = cli([`--pretrained_model_name_or_path=${path.join(root, "data/tiny-sd")}`, `--controlnet_model_name_or_path=${path.join(sd, "controlnet")}`,
    `--output_dir=${path.join(dir, "out4")}`, ...tiny]);
  assert.equal(r4.status, 1);
  assert.match(r4.stderr, /\ntrain_controlnet: the ControlNet .* was made for another base than .*tiny-sd: .*Nothing was trained\n$/);
  assert.ok(!fs.existsSync(path.join(dir, "out4")), "nothing written");
  // so is a model folder that lacks what diffusers' from_pretrained reads (here the UNet's weights)
  const broken = path.join(dir, "sd-no-unet-weights");
  fs.cpSync(sd, broken, { recursive: true });
  fs.rmSync(path.join(broken, "unet", "diffusion_pytorch_model.safetensors"));
  const r5 = cli([`--pretrained_model_name_or_path=${broken}`, `--output_dir=${path.join(dir, "out5")}`, ...tiny]);
  assert.equal(r5.status, 1);
  assert.match(r5.stderr, /\ntrain_controlnet: No weights found in model folder .*sd-no-unet-weights\/unet: looked for diffusion_pytorch_model\.safetensors .*\n$/);
  noStack(r5.stderr);
});

test("#10: a base model the hub cannot give is not reported as a failed push", () => {
  const dir = tempDir("cli-hub-");
  // without --push_to_hub: with it, the hub repo is now created (or refused) before anything is fetched (issue 24 #2)
  const r = cli(["--pretrained_model_name_or_path=nobody/no-such-model", `--output_dir=${path.join(dir, "out")}`, ...tiny],
    { HF_HUB_OFFLINE: "1", HF_HOME: path.join(dir, "hf") });
  assert.equal(r.status, 1);
  assert.doesNotMatch(r.stderr, /push_to_hub failed|trained ControlNet is saved/);
  assert.match(r.stderr, /train_controlnet: could not fetch from the hub \(nobody\/no-such-model\)/);
  noStack(r.stderr);
  assert.ok(!fs.existsSync(path.join(dir, "out", "diffusion_pytorch_model.safetensors")));
});

test("#9: output_dir on a read-only file system: one line saying so, no stack", (t) => {
  const dir = tempDir("cli-ro-");
  const m = spawnSync("mount", ["-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", dir], { encoding: "utf8" });
  if (m.status !== 0) {
    t.skip(`cannot mount a read-only tmpfs here (${(m.stderr || "").trim()}): needs root`);
    return;
  }
  try {
    const r = cli([`--pretrained_model_name_or_path=${sd}`, `--output_dir=${path.join(dir, "out")}`, ...tiny]);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /train_controlnet: cannot write .*out: .*(is on a read-only file system|the file system is read-only)/);
    noStack(r.stderr);
  } finally {
    spawnSync("umount", [dir]);
  }
});
