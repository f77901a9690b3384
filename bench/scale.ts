/**
 * `npm run bench -- scale [--processes 1,2] [--batch 2] [--steps 48] [--warmup 8] [--rounds 2] [--resolution 32]
 * [--model <dir>] [--timeout 300]`: data-parallel throughput. Runs `controlnet-ts launch --num_processes N
 * --num_cpu_threads_per_process 1 train_controlnet …` for each N (one after the other) on the tiny fixture pipeline,
 * each process with batch b, and reads rank 0's train_log.jsonl: samples/s = N·b / median step time (after the
 * warm-up steps), and the share of the step spent in the TensorFlow collective all-reduce (its `allReduceSeconds`,
 * which includes waiting for the slower process). Needs the collective addon (node scripts/native/build-collective.mjs)
 * for N > 1.
 *
 * Stability: a step of the tiny pipeline takes ~0.1–0.4 s, so a handful of steps is noise on a shared machine (8
 * steps gave 0.48× and 2.02× in two back-to-back runs). The defaults time 40 steps per run after 8 warm-up steps, and
 * run every N twice, in alternating order (1, 2, then 2, 1), pooling the timed steps of both rounds, so each N sees
 * the machine's load early and late (about 1–2 minutes on 2 cores). Each run has a time limit (--timeout): a run
 * that hangs is killed (its launcher and the processes it started) and the bench fails with one line saying so.
 */
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { collectiveMissingReason } from "../lib/training/collective.js";
import { parseOptions, median, type BenchUsage } from "./_cli.js";

const root = path.resolve(import.meta.dirname, "..");

export const usage: BenchUsage = {
  summary: "data-parallel throughput: samples/s of `launch --num_processes N train_controlnet` on the tiny fixture pipeline for each N (1 thread per process), speed-up over 1 process, all-reduce share of the step",
  options: [
    { flag: "--processes", value: "N,N,…", default: "1,2", help: "process counts to run" },
    { flag: "--batch", value: "B", default: 2, help: "batch per process" },
    { flag: "--steps", value: "S", default: 48, help: "training steps per run, the first --warmup of them not timed" },
    { flag: "--warmup", value: "W", default: 8, help: "untimed steps at the start of each run" },
    { flag: "--rounds", value: "R", default: 2, help: "runs per process count, in alternating order; their timed steps are pooled" },
    { flag: "--resolution", value: "R", default: 32, help: "training resolution in px" },
    { flag: "--model", value: "DIR", default: "tests/fixtures/sd_tiny", help: "base model folder" },
    { flag: "--timeout", value: "SECONDS", default: 300, help: "limit for one run; a run past it is killed and the bench fails" },
  ],
};


/** Kills what a killed launcher left behind: the processes its "launch: … rank R pid P" line names. */
function killWorkers(stderr: string): number[] {
  const pids = [...(stderr.match(/^launch: .*$/m)?.[0] ?? "").matchAll(/rank \d+ pid (\d+)/g)].map((m) => Number(m[1]));
  for (const pid of pids) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // already gone
    }
  }
  return pids;
}

interface LogLine { seconds: number; allReduceSeconds?: number }

/** One `launch` run of n processes: rank 0's timed steps (after the warm-up). Its output folder is removed however it ends. */
function runOnce(n: number, o: { batch: number; steps: number; warmup: number; resolution: number; model: string; timeoutS: number }): LogLine[] {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), `bench-scale-${n}-`));
  try {
    const port = 29700 + Math.floor(Math.random() * 2000);
    const r = spawnSync(process.execPath, [path.join(root, "bin", "controlnet-ts.js"), "launch", "--num_processes", String(n),
      "--num_cpu_threads_per_process", "1", "--main_process_port", String(port), "train_controlnet",
      "--pretrained_model_name_or_path", o.model, `--output_dir=${out}`, `--dataset_name=synthetic-fill50k:${Math.max(64, 4 * n * o.batch * o.steps)}`,
      `--resolution=${o.resolution}`, `--train_batch_size=${o.batch}`, `--max_train_steps=${o.steps}`, "--checkpointing_steps=100000",
      "--learning_rate=1e-5", "--seed=1"], {
      cwd: root, encoding: "utf8", env: { ...process.env, CONTROLNET_TS_THREADS: "1" },
      // the launcher forwards SIGTERM to its processes and waits for them: a hung one would hang it too, so SIGKILL
      // (its processes then see their stdin close and stop; killWorkers makes sure)
      timeout: o.timeoutS * 1000, killSignal: "SIGKILL", maxBuffer: 64 << 20,
    });
    if ((r.error as NodeJS.ErrnoException | undefined)?.code === "ETIMEDOUT" || (r.status === null && r.signal === "SIGKILL")) {
      const pids = killWorkers(r.stderr ?? "");
      throw new Error(`bench scale: the ${n}-process run did not finish within ${o.timeoutS} s (--timeout): killed it${pids.length ? ` and its processes (pids ${pids.join(", ")})` : ""}; last output: ${(r.stderr ?? "").trim().split("\n").slice(-3).join(" | ")}`);
    }
    if (r.error) throw new Error(`bench scale: the ${n}-process run could not run: ${r.error.message}`);
    if (r.status !== 0) throw new Error(`bench scale: the ${n}-process run failed (exit ${r.status ?? r.signal}):\n${(r.stderr ?? "").slice(-2000)}`);
    const logFile = path.join(out, "logs", "train_log.jsonl");
    if (!fs.existsSync(logFile)) throw new Error(`bench scale: the ${n}-process run wrote no ${path.relative(out, logFile)}`);
    const lines = fs.readFileSync(logFile, "utf8").trim().split("\n").map((l) => JSON.parse(l) as LogLine).filter((l) => typeof l.seconds === "number");
    const timed = lines.slice(o.warmup);
    if (!timed.length) throw new Error(`bench scale: the ${n}-process run logged ${lines.length} step(s), none after the ${o.warmup} warm-up step(s)`);
    return timed;
  } finally {
    fs.rmSync(out, { recursive: true, force: true });
  }
}

export async function run(args: string[]): Promise<object> {
  const p = parseOptions("scale", args, usage);
  const counts = p.str("--processes").split(",").map(Number);
  if (!counts.length || counts.some((n) => !Number.isInteger(n) || n < 1)) throw new Error(`bench scale: --processes takes counts like 1,2, not '${p.str("--processes")}'`);
  const batch = p.num("--batch");
  const steps = p.num("--steps");
  const warmup = p.num("--warmup");
  const rounds = Math.max(1, Math.floor(p.num("--rounds")));
  const resolution = p.num("--resolution");
  const timeoutS = p.num("--timeout");
  if (!(warmup >= 0) || !(steps > warmup)) throw new Error(`bench scale: --steps (${steps}) must exceed --warmup (${warmup}): only the steps after the warm-up are timed`);
  const model = path.resolve(root, p.str("--model"));
  const missing = collectiveMissingReason();
  if (missing && counts.some((n) => n > 1)) throw new Error(`bench scale: ${missing}`);

  const timed = new Map<number, LogLine[]>(counts.map((n) => [n, []]));
  const perRound = new Map<number, number[]>(counts.map((n) => [n, []]));
  for (let round = 0; round < rounds; round++) {
    for (const n of round % 2 ? [...counts].reverse() : counts) {
      console.error(`scale: round ${round + 1}/${rounds}: ${n} process(es) × batch ${batch}, ${steps} steps (${warmup} warm-up), 1 thread each, load ${os.loadavg()[0]!.toFixed(1)} …`);
      const t = runOnce(n, { batch, steps, warmup, resolution, model, timeoutS });
      timed.get(n)!.push(...t);
      const sps = (n * batch) / median(t.map((l) => l.seconds));
      perRound.get(n)!.push(+sps.toFixed(2));
      console.error(`  ${n} process(es): ${sps.toFixed(2)} samples/s (median of ${t.length} steps)`);
    }
  }
  const results = counts.map((n) => {
    const t = timed.get(n)!;
    const step = median(t.map((l) => l.seconds));
    const reduce = n > 1 ? median(t.map((l) => l.allReduceSeconds ?? 0)) : 0;
    const row = {
      processes: n, batchPerProcess: batch, globalBatch: n * batch, timedSteps: t.length, stepSeconds: +step.toFixed(3),
      samplesPerSecond: +((n * batch) / step).toFixed(2), samplesPerSecondPerRound: perRound.get(n)!,
      allReduceSeconds: +reduce.toFixed(3), allReduceShare: +(reduce / step).toFixed(3),
    };
    console.error(`  ${JSON.stringify(row)}`);
    return row;
  });
  const one = results.find((r) => r.processes === 1);
  const speedups = one ? Object.fromEntries(results.map((r) => [r.processes, +(r.samplesPerSecond / one.samplesPerSecond).toFixed(2)])) : {};
  return {
    bench: "scale", model: path.relative(root, model), resolution, steps, warmup, rounds, cpus: os.availableParallelism(),
    loadavg: os.loadavg().map((x) => +x.toFixed(1)), results, speedupOverOneProcess: speedups,
  };
}
