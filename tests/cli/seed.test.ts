/**
 * Issue 24: an unset --seed is random, as upstream (which then never calls set_seed), and printed so the run can be
 * repeated; a run stopped after a checkpoint and resumed, --seed unset both times, continues with its checkpoint's
 * seed and ends byte-identical to an uninterrupted run given that seed.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { tempDir } from "../helpers.js";

const root = path.resolve(import.meta.dirname, "../..");
const bin = path.join(root, "bin", "controlnet-ts.js");
const flags = (out: string, extra: string[] = []) => [
  `--pretrained_model_name_or_path=${path.join(root, "tests/fixtures/sd_tiny")}`, `--output_dir=${out}`, "--dataset_name=synthetic-fill50k:8",
  "--resolution=32", "--train_batch_size=1", "--max_train_steps=4", "--checkpointing_steps=2", "--learning_rate=1e-4",
  // the subset's rows come from the seed too (datasets' shuffle(seed)), so the drawn seed must reach it
  "--max_train_samples=6", ...extra,
];

/** Runs train_controlnet; `stopAt` kills it as soon as its output matches (the seed line: no need to train). */
function cli(args: string[], env: Record<string, string> = {}, stopAt?: RegExp): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [bin, "train_controlnet", ...args], { cwd: root, env: { ...process.env, CONTROLNET_TS_THREADS: "1", ...env } });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => {
      stdout += d;
      if (stopAt?.test(stdout)) child.kill("SIGKILL");
    });
    child.stderr.on("data", (d) => (stderr += d));
    child.on("close", (code) => resolve({ code, stdout, stderr }));
  });
}

const SEED_LINE = /^--seed not set: using seed (\d+) \(pass --seed \1 to repeat this run\)$/m;

test("--seed unset: a random seed, printed; stopped after a checkpoint and resumed (still unset) it continues that seed and ends byte-identical to an uninterrupted run with --seed <it>", async () => {
  const out = tempDir("seed-unset-");
  // stopped at step 2 (the cells' `until`), right after checkpoint-2
  const first = await cli(flags(out, ["--resume_from_checkpoint=latest"]), { CONTROLNET_TS_UNTIL: "2" });
  assert.equal(first.code, 0, first.stderr.slice(-2000));
  const seed = SEED_LINE.exec(first.stdout)?.[1];
  assert.ok(seed, `no seed line in:\n${first.stdout}`);
  assert.match(first.stdout, new RegExp(`dataset: synthetic fill50k \\(8 rows, seed ${seed}, 32×32\\), 6 of 8 rows`));
  assert.ok(fs.existsSync(path.join(out, "checkpoint-2")) && !fs.existsSync(path.join(out, "diffusion_pytorch_model.safetensors")));

  // another run with no --seed draws another seed
  const other = await cli(flags(tempDir("seed-other-")), {}, SEED_LINE);
  const otherSeed = SEED_LINE.exec(other.stdout)?.[1];
  assert.ok(otherSeed, `no seed line in:\n${other.stdout}${other.stderr}`);
  assert.notEqual(otherSeed, seed, "two runs without --seed drew the same seed");

  // the same command again, without --resume_from_checkpoint: it drew a new seed, so it is another run — refused with
  // the ways on (continue it, start over here, another folder), nothing touched
  const again = await cli(flags(out));
  assert.equal(again.code, 1);
  // (said plainly, before anything loads: not as a seed difference, since the user chose no seed)
  assert.match(again.stderr, /holds a run's checkpoints \(the latest is checkpoint-2\); nothing was changed\. --seed is not set, so this would start another run \(with a random seed\) beside them\. To continue that run: --resume_from_checkpoint latest .* To start over here: remove .*checkpoint-\* first\. Or use another output_dir\./);
  assert.doesNotMatch(again.stdout + again.stderr, /--seed not set: using seed|there, \d+ here/);
  assert.ok(fs.existsSync(path.join(out, "checkpoint-2")));

  const resumed = await cli(flags(out, ["--resume_from_checkpoint=latest"]));
  assert.equal(resumed.code, 0, resumed.stderr.slice(-2000));
  assert.match(resumed.stdout, new RegExp(`^--seed not set: resuming with checkpoint-2's seed ${seed} \\(the run's own\\)$`, "m"));
  // the script's lines: its "Running training" block by its logger (stderr), then its accelerator.print (stdout)
  assert.match(resumed.stderr, /\*\*\*\*\* Running training \*\*\*\*\*[\s\S]*\n.* - INFO - __main__ - {3}Total optimization steps = \d+\n/);
  assert.match(resumed.stdout, /^Resuming from checkpoint checkpoint-2$/m);
  assert.doesNotMatch(resumed.stdout + resumed.stderr, /other arguments|another run|using seed/);

  const ref = tempDir("seed-ref-");
  const r = await cli(flags(ref, [`--seed=${seed}`]));
  assert.equal(r.code, 0, r.stderr.slice(-2000));
  assert.doesNotMatch(r.stdout, /--seed not set/);
  for (const f of ["diffusion_pytorch_model.safetensors", "checkpoint-4/optimizer.safetensors"]) {
    assert.ok(fs.readFileSync(path.join(out, f)).equals(fs.readFileSync(path.join(ref, f))), `${f} differs from the run with --seed ${seed}`);
  }
});
