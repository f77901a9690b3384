/**
 * Stopping train_controlnet with signals (issue 25): SIGTERM, as a scheduler, a container or `timeout` sends it, stops
 * at a step boundary with a checkpoint, as Ctrl-C does — also when it arrives twice at once (`timeout` signals the
 * process and then its group), which quit at once and threw the steps away.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { listCheckpoints } from "../../lib/training/checkpoints.js";
import { tempDir } from "../helpers.js";

const root = path.resolve(import.meta.dirname, "../..");
const bin = path.join(root, "bin", "controlnet-ts.js");

/** train_controlnet on the tiny fixture, one thread; `extra` adds or overrides flags (the last one given wins). */
function trainTiny(out: string, extra: string[]) {
  const child = spawn(process.execPath, [bin, "train_controlnet", `--pretrained_model_name_or_path=${path.join(root, "tests/fixtures/sd_tiny")}`,
    `--output_dir=${out}`, "--dataset_name=synthetic-fill50k:8", "--resolution=32", "--train_batch_size=1", "--seed=3", ...extra],
  { cwd: root, env: { ...process.env, CONTROLNET_TS_THREADS: "1" } });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (d) => (stdout += d));
  const seen: { re: RegExp; resolve: () => void }[] = [];
  child.stderr.on("data", (d) => {
    stderr += d;
    for (const w of seen) if (w.re.test(stderr)) w.resolve();
  });
  const exited = new Promise<number | null>((resolve) => child.on("close", (code) => resolve(code)));
  return {
    child, exited, stdout: () => stdout, stderr: () => stderr,
    /** Settles when stderr matches `re`, or when the process ends first. */
    when: (re: RegExp) => Promise.race([new Promise<void>((resolve) => seen.push({ re, resolve })), exited]),
  };
}

test("SIGTERM twice at once: one stop at a step boundary, a checkpoint of that step, exit 143", async () => {
  const out = tempDir("sigterm-");
  const run = trainTiny(out, ["--max_train_steps=200", "--checkpointing_steps=1000"]);
  await run.when(/Steps: 2\//);
  run.child.kill("SIGTERM");
  run.child.kill("SIGTERM");
  const code = await run.exited;
  const stderr = run.stderr(), stdout = run.stdout();
  assert.equal(code, 143, stderr.slice(-2000));
  assert.doesNotMatch(stderr, /quitting now/);
  // named (Node passes a listener the signal's number too, which was printed instead: "15: stopping …")
  assert.match(stderr, /\nSIGTERM: stopping at the next step boundary \(SIGTERM again, a second later, to quit now\)\n/);
  const m = /Interrupted at step (\d+); state saved to (.*checkpoint-(\d+))\./.exec(stdout);
  assert.ok(m, stdout.slice(-2000));
  assert.deepEqual(listCheckpoints(out).map((c) => c.step), [Number(m[1])]);
  assert.ok(!fs.existsSync(path.join(out, ".controlnet-ts.lock")), "the lock is released");
});

test("output that goes away (a pipe's reader exits, the terminal closes) stops at a step boundary with a checkpoint, exit 129", async () => {
  const out = tempDir("epipe-");
  const run = trainTiny(out, ["--max_train_steps=200", "--checkpointing_steps=1000"]);
  await run.when(/Steps: 2\//);
  // as `… | grep -m1 Steps` does: the reading end closes; the next write fails with EPIPE (it crashed the run)
  run.child.stdout.destroy();
  run.child.stderr.destroy();
  assert.equal(await run.exited, 129, run.stderr().slice(-2000));
  const cks = listCheckpoints(out).map((c) => c.step);
  assert.equal(cks.length, 1, "the steps trained are in a checkpoint");
  assert.ok(cks[0]! >= 2);
  assert.ok(!fs.existsSync(path.join(out, ".controlnet-ts.lock")), "the lock is released");
});

test("stdout closed before the first step (`… | head -3`): stopped saying why, on stderr; no useless checkpoint-0; the logger's lines on stderr", async () => {
  const out = tempDir("epipe0-");
  const run = trainTiny(out, ["--max_train_steps=200", "--checkpointing_steps=1000"]);
  run.child.stdout.destroy();
  assert.equal(await run.exited, 129, run.stderr().slice(-2000));
  const stderr = run.stderr();
  assert.match(stderr, /the output was closed \(EPIPE: a pipe's reader exited, or the terminal closed\): stopping at the next step boundary/);
  assert.doesNotMatch(stderr, /SIGHUP/);
  // what would have gone to stdout is said where it can still be read
  assert.match(stderr, /^Interrupted before the first step: nothing was trained, nothing saved\.$/m);
  assert.deepEqual(listCheckpoints(out), []);
  // Python's logging writes the script's logger.info lines to stderr
  assert.match(stderr, /^\d\d\/\d\d\/\d{4} \d\d:\d\d:\d\d - INFO - __main__ - Initializing controlnet weights from unet$/m);
});

test("a final validation that fails (its image gone meanwhile) says the ControlNet is saved, and the card is written", async () => {
  const out = tempDir("final-val-");
  const image = path.join(out, "..", `${path.basename(out)}-cond.png`);
  fs.copyFileSync(path.join(root, "tests/fixtures/pipeline_tiny/control.png"), image);
  try {
    const run = trainTiny(out, ["--max_train_steps=6", "--validation_prompt", "red circle", "--validation_image", image, "--num_validation_images=1"]);
    // read up front, gone by the end
    void run.when(/Steps: 1\//).then(() => fs.rmSync(image, { force: true }));
    const code = await run.exited;
    const stderr = run.stderr();
    assert.equal(code, 1, stderr.slice(-2000));
    assert.match(stderr, new RegExp(`train_controlnet: the final validation failed \\(.*\\); the ControlNet is saved in ${out}, with its model card \\(without validation images\\)`));
    assert.ok(fs.existsSync(path.join(out, "diffusion_pytorch_model.safetensors")));
    assert.match(fs.readFileSync(path.join(out, "README.md"), "utf8"), /^library_name: diffusers$/m);
  } finally {
    fs.rmSync(image, { force: true });
  }
});
