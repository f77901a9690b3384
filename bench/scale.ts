/**
 * `npm run bench -- scale [--processes 1,2] [--batch 2] [--steps 8] [--warmup 2] [--resolution 32] [--model <dir>]`:
 * data-parallel throughput. Runs `controlnet-ts launch --num_processes N --num_cpu_threads_per_process 1
 * train_controlnet …` for each N (one after the other) on the tiny fixture pipeline, each process with batch b, and
 * reads rank 0's train_log.jsonl: samples/s = N·b / median step time (after the warm-up steps), and the share of
 * the step spent in the TensorFlow collective all-reduce (its `allReduceSeconds`, which includes waiting for the
 * slower process). Needs the collective addon (node scripts/native/build-collective.mjs) for N > 1.
 */
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { collectiveMissingReason } from "../lib/training/collective.js";

const root = path.resolve(import.meta.dirname, "..");

function arg(args: string[], name: string, dflt: string): string {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1]! : dflt;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

export async function run(args: string[]): Promise<object> {
  const counts = arg(args, "processes", "1,2").split(",").map(Number);
  const batch = Number(arg(args, "batch", "2"));
  const steps = Number(arg(args, "steps", "8"));
  const warmup = Number(arg(args, "warmup", "2"));
  const resolution = Number(arg(args, "resolution", "32"));
  const model = path.resolve(arg(args, "model", path.join(root, "tests/fixtures/sd_tiny")));
  const missing = collectiveMissingReason();
  if (missing && counts.some((n) => n > 1)) throw new Error(`bench scale: ${missing}`);
  const results = [];
  for (const n of counts) {
    const out = fs.mkdtempSync(path.join(os.tmpdir(), `bench-scale-${n}-`));
    const port = 29700 + Math.floor(Math.random() * 2000);
    console.error(`scale: ${n} process(es) × batch ${batch}, ${steps} steps, 1 thread each …`);
    const r = spawnSync(process.execPath, [path.join(root, "bin", "controlnet-ts.js"), "launch", "--num_processes", String(n),
      "--num_cpu_threads_per_process", "1", "--main_process_port", String(port), "train_controlnet",
      "--pretrained_model_name_or_path", model, `--output_dir=${out}`, `--dataset_name=synthetic-fill50k:${Math.max(64, 4 * n * batch * steps)}`,
      `--resolution=${resolution}`, `--train_batch_size=${batch}`, `--max_train_steps=${steps}`, "--checkpointing_steps=100000",
      "--learning_rate=1e-5", "--seed=1"], { cwd: root, encoding: "utf8", env: { ...process.env, CONTROLNET_TS_THREADS: "1" } });
    if (r.status !== 0) throw new Error(`bench scale: the ${n}-process run failed:\n${r.stderr.slice(-2000)}`);
    const log = fs.readFileSync(path.join(out, "logs", "train_log.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l) as { seconds: number; allReduceSeconds?: number });
    const timed = log.slice(warmup);
    const step = median(timed.map((l) => l.seconds));
    const reduce = n > 1 ? median(timed.map((l) => l.allReduceSeconds ?? 0)) : 0;
    const row = {
      processes: n, batchPerProcess: batch, globalBatch: n * batch, stepSeconds: +step.toFixed(3),
      samplesPerSecond: +((n * batch) / step).toFixed(2), allReduceSeconds: +reduce.toFixed(3), allReduceShare: +(reduce / step).toFixed(3),
    };
    console.error(`  ${JSON.stringify(row)}`);
    results.push(row);
    fs.rmSync(out, { recursive: true, force: true });
  }
  const one = results.find((r) => r.processes === 1);
  const speedups = one ? Object.fromEntries(results.map((r) => [r.processes, +(r.samplesPerSecond / one.samplesPerSecond).toFixed(2)])) : {};
  return { bench: "scale", model: path.relative(root, model), resolution, cpus: os.availableParallelism(), loadavg: os.loadavg().map((x) => +x.toFixed(1)), results, speedupOverOneProcess: speedups };
}
