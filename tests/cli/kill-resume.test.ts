/**
 * Issue 25: the kill -9 property. train_controlnet killed with SIGKILL at random moments (while a step computes or a
 * checkpoint is being written) and resumed with --resume_from_checkpoint=latest each time ends byte-identical to the
 * uninterrupted run — EMA, 8-bit Adam and accumulation included — with every checkpoint left behind complete and
 * each step logged once.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { listCheckpointDirs, verifyCheckpoint } from "../../lib/training/checkpoints.js";
import { readJsonl } from "../../lib/training/tensorboard.js";
import { tempDir } from "../helpers.js";

const root = path.resolve(import.meta.dirname, "../..");
const bin = path.join(root, "bin", "controlnet-ts.js");
const STEPS = 4;
const flags = (out: string) => [
  `--pretrained_model_name_or_path=${path.join(root, "tests/fixtures/sd_tiny")}`, `--output_dir=${out}`, "--dataset_name=synthetic-fill50k:8",
  "--resolution=32", "--train_batch_size=1", "--gradient_accumulation_steps=2", `--max_train_steps=${STEPS}`, "--checkpointing_steps=1",
  "--seed=5", "--use_ema", "--use_8bit_adam", "--learning_rate=1e-4", "--resume_from_checkpoint=latest",
];

/**
 * Runs the CLI; with `killAfterMs`, SIGKILLs it that long after its first "Steps:" line. `trainingMs` is the time from
 * that line to the exit (the window a kill can land in).
 */
function run(out: string, killAfterMs?: number): Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string; trainingMs: number }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [bin, "train_controlnet", ...flags(out)], { cwd: root, env: { ...process.env, CONTROLNET_TS_THREADS: "1" } });
    let stderr = "";
    let armed = false;
    let stepsAt = 0;
    child.stdout.resume();
    child.stderr.on("data", (d) => {
      stderr += d;
      if (!armed && stderr.includes("Steps: ")) {
        armed = true;
        stepsAt = performance.now();
        if (killAfterMs !== undefined) setTimeout(() => child.kill("SIGKILL"), killAfterMs);
      }
    });
    child.on("close", (code, signal) => resolve({ code, signal, stderr, trainingMs: stepsAt ? performance.now() - stepsAt : 0 }));
  });
}

test("kill -9 at random moments, resume latest: the final ControlNet is byte-identical to an uninterrupted run", async () => {
  const ref = tempDir("kill-ref-");
  const r = await run(ref);
  assert.equal(r.code, 0, r.stderr.slice(-2000));
  let out = "";
  let delays: number[] = [];
  let kills = 0;
  // Kill moments are drawn inside the uninterrupted run's training window (scaled to the steps left), so a kill lands
  // mid-run whatever the machine's speed; a fixed range let a fast machine finish before the first kill. A run can
  // still outpace its delay on a faster minute of this (shared, noisy) machine and finish: then the sequence starts
  // again in a fresh folder with the delays halved, so the property is always shown with at least two kills.
  for (let sequence = 0; sequence < 3 && kills < 2; sequence++) {
    out = tempDir("kill-");
    delays = [];
    kills = 0;
    for (let attempt = 0; attempt < 6 && kills < 3; attempt++) {
      const left = STEPS - (listCheckpointDirs(out).at(-1)?.step ?? 0);
      // 10–50 % into what is left: late enough to be mid-step or mid-checkpoint, early enough to land before the end
      const delay = Math.round((0.1 + 0.4 * Math.random()) * r.trainingMs * (left / STEPS) * 0.5 ** sequence);
      delays.push(delay);
      const k = await run(out, delay);
      if (k.signal === "SIGKILL") kills++;
      else {
        assert.equal(k.code, 0, `delays ${delays}: ${k.stderr.slice(-2000)}`);
        break;
      }
      // whatever the moment, what is on disk is complete checkpoints (and maybe a dead writer's temporary, cleaned next)
      for (const c of listCheckpointDirs(out)) assert.equal(verifyCheckpoint(c.path, { checksums: true }), null, `delays ${delays}: ${c.path}`);
    }
  }
  assert.ok(kills >= 2, `only ${kills} run(s) were killed mid-training in three sequences (last delays ${delays})`);
  if (!fs.existsSync(path.join(out, "README.md"))) {
    const done = await run(out);
    assert.equal(done.code, 0, `delays ${delays}: ${done.stderr.slice(-2000)}`);
  }
  const weights = "diffusion_pytorch_model.safetensors";
  assert.ok(fs.readFileSync(path.join(out, weights)).equals(fs.readFileSync(path.join(ref, weights))), `final weights differ after kills at ${delays} ms`);
  assert.ok(fs.readFileSync(path.join(out, `checkpoint-${STEPS}`, "optimizer.safetensors")).equals(fs.readFileSync(path.join(ref, `checkpoint-${STEPS}`, "optimizer.safetensors"))), "optimizer state differs");
  assert.ok(fs.readFileSync(path.join(out, `checkpoint-${STEPS}`, "controlnet_ema", weights)).equals(fs.readFileSync(path.join(ref, `checkpoint-${STEPS}`, "controlnet_ema", weights))), "EMA differs");
  assert.deepEqual(readJsonl(path.join(out, "logs", "train_log.jsonl")).map((l) => l.step), Array.from({ length: STEPS }, (_, i) => i + 1), "each step logged once");
  assert.deepEqual(fs.readdirSync(out).filter((f) => f.includes(".tmp-") || f.includes(".old-")), [], "no temporaries left");
});
