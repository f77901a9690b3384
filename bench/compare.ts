/**
 * `npm run bench -- compare [--steps N] [--batch B] [--images I] [--val-steps V] [--no-torch]`
 *
 * Beside diffusers on PyTorch CPU (tests/reference/bench_diffusers.py in the reference venv), same machine, same
 * thread count, one invocation, in two phases: ours runs everything alone first, and only then is the reference
 * process started and run alone (a live TF pool and a torch pool side by side fight for the cores: diffusers' step
 * went from ~1 s to 14–20 s beside our busy TF process). The 1-minute load average is printed with every step and
 * kept in the result (the machine may be shared: compare runs at similar load). Measured:
 *  - train step: the bench-mid ControlNet step (shared/reference/bench-configs.md: batch 4, latents 4×32×32, control
 *    256×256, text 77×64, ε/MSE, backward into the ControlNet only, clip 1.0, AdamW 1e-5/wd 1e-2) — median over N ≥ 5
 *    steps after one warm-up;
 *  - validation image: the ControlNet pipeline (UniPC, V steps, guidance 7.5, 256 px, bench-pipeline's VAE) —
 *    median over I images after one warm-up;
 *  - peak memory of the first step above the weights (ours: peak live tensor bytes by measurePeak; theirs: growth
 *    of the process' peak RSS, which also counts allocator slack — not the same instrument, read the ratio as rough);
 *  - achieved GFLOP/s: FLOPs of one step (torch's FlopCounterMode when available, else our analytic count, which
 *    agrees within 0.1 %) / median step time.
 * Without the venv, ours is reported and the reference is marked missing.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import readline from "node:readline";
import { spawn } from "node:child_process";
import { initEngine, measurePeak, memoryBudget, tf } from "../lib/engine/index.js";
import { AutoencoderKL } from "../lib/models/index.js";
import { schedulerFromConfig } from "../lib/schedulers/index.js";
import { StableDiffusionControlNetPipeline } from "../lib/pipeline/index.js";
import { createTrainingStep, planMemory, plannedDeviceBytes, trainingStepFlops } from "../lib/planner/index.js";
import { Table } from "../widgets/table.js";
import { BENCH_MID_UNET } from "./models.js";
import { BENCH_MID_VAE, SD15_SCHEDULER } from "./pipeline.js";

const RESOLUTION = 256;

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
function flag(args: string[], name: string, dflt: number): number {
  const i = args.indexOf(name);
  return i >= 0 ? Number(args[i + 1]) : dflt;
}

interface Reference {
  info: { torch: string; diffusers: string; threads: number; step_flops: number | null };
  ask(cmd: "train" | "image" | "mem"): Promise<Record<string, number>>;
  close(): void;
}

async function startReference(cfg: object): Promise<Reference | { error: string }> {
  const root = path.resolve(import.meta.dirname, "..");
  const py = path.join(root, "tests/reference/.venv/bin/python");
  if (!fs.existsSync(py)) return { error: `reference missing: no venv at ${py} (bash tests/reference/setup.sh)` };
  const threads = String((cfg as { threads: number }).threads);
  const child = spawn(py, [path.join(root, "tests/reference/bench_diffusers.py"), JSON.stringify(cfg)], {
    env: { ...process.env, OMP_NUM_THREADS: threads, MKL_NUM_THREADS: threads, HF_HUB_OFFLINE: "1" },
    stdio: ["pipe", "pipe", "pipe"],
  });
  let stderr = "";
  child.stderr.on("data", (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  const waiting: ((l: string | null) => void)[] = [];
  readline.createInterface({ input: child.stdout }).on("line", (l) => waiting.shift()?.(l));
  child.on("exit", () => { while (waiting.length) waiting.shift()!(null); });
  const next = () => new Promise<string | null>((r) => waiting.push(r));
  const fail = () => stderr.trim().split("\n").slice(-3).join(" | ");
  const first = await next();
  if (!first?.startsWith("{")) {
    child.kill();
    return { error: `diffusers reference failed to start: ${fail()}` };
  }
  return {
    info: JSON.parse(first) as Reference["info"],
    async ask(cmd) {
      child.stdin.write(cmd + "\n");
      const l = await next();
      if (!l?.startsWith("{")) throw new Error(`diffusers reference failed on '${cmd}': ${fail()}`);
      return JSON.parse(l) as Record<string, number>;
    },
    close: () => child.stdin.end(),
  };
}

export async function run(args: string[]): Promise<object> {
  const steps = Math.max(5, flag(args, "--steps", 5));
  const batch = flag(args, "--batch", 4);
  const images = flag(args, "--images", 2);
  const valSteps = flag(args, "--val-steps", 5);
  const info = await initEngine();
  const log = (s: string) => console.log(`[bench compare] ${s}`);
  const load = () => +os.loadavg()[0]!.toFixed(1);
  log(`bench-mid: batch ${batch}, latents 4x32x32, control ${RESOLUTION}px, text 77x64; ${steps} steps after 1 warm-up; ` +
    `validation ${images} image(s) x UniPC ${valSteps} steps; ${info.backend} ${info.threads} thread(s); load ${load()}`);
  log(`phases: ours runs alone first (diffusers not started yet), then diffusers alone while our process idles (no TF op ` +
    `in flight): two thread pools side by side fight for the cores (diffusers' step took 14-20 s instead of ~1 s beside a busy TF process)`);

  // ours: the planner picks the cheapest options that fit the running engine's memory (memoryBudget: the 4 GiB wasm
  // heap, where bench-mid at batch 4 needs ~4.8 GB without any; host or GPU memory on native, where it needs none);
  // diffusers runs with none. The warm-up step is also the memory measurement (it creates the optimizer state, as
  // theirs does).
  const wasmHeap = info.backend === "wasm";
  const budget = memoryBudget();
  const plan = planMemory({ unet: BENCH_MID_UNET, resolution: RESOLUTION, batchSize: batch }, 0.9 * budget, { wasmHeap });
  if (!plan.best) throw new Error(`bench-mid at batch ${batch} does not fit ${(budget / 1e9).toFixed(2)} GB with any option set`);
  const options = plan.best.options;
  const planned = plannedDeviceBytes(plan.best.estimate, wasmHeap);
  log(`ours: options ${plan.best.name === "none" ? "none" : JSON.stringify(options)} (planner, ${plan.best.estimate.profile}: ${(planned / 1e9).toFixed(2)} GB of ${(budget / 1e9).toFixed(2)} GB${wasmHeap ? " wasm heap" : ""})`);
  const loadOurs = [load()];
  const runner = createTrainingStep({ unet: BENCH_MID_UNET, resolution: RESOLUTION, batchSize: batch, options });
  const t0 = performance.now();
  const first = await measurePeak(() => runner.step());
  log(`warm-up: ours ${((performance.now() - t0) / 1000).toFixed(2)} s (peak +${(first.peakDeltaBytes / 1e6).toFixed(0)} MB)`);
  const oursSteps: number[] = [];
  for (let i = 1; i <= steps; i++) {
    const a0 = performance.now();
    runner.step();
    oursSteps.push((performance.now() - a0) / 1000);
    log(`step ${i}/${steps}: ours ${oursSteps.at(-1)!.toFixed(2)} s (load ${load()})`);
  }

  // validation images: the same UNet/ControlNet in our pipeline
  const vae = new AutoencoderKL(BENCH_MID_VAE, { seed: 3, trainable: false });
  const pipe = new StableDiffusionControlNetPipeline({
    unet: runner.unet, controlnet: runner.controlnet, vae,
    scheduler: schedulerFromConfig("unipc", SD15_SCHEDULER),
  });
  const pos = tf.randomNormal([1, 77, 64], 0, 1, "float32", 1) as tf.Tensor3D;
  const neg = tf.randomNormal([1, 77, 64], 0, 1, "float32", 2) as tf.Tensor3D;
  const cond = tf.randomUniform([1, RESOLUTION, RESOLUTION, 3], 0, 1, "float32", 3) as tf.Tensor4D;
  const oursImg: number[] = [];
  for (let i = 0; i <= images; i++) {
    const out = await pipe.call({ promptEmbeds: pos, negativePromptEmbeds: neg, image: cond, numInferenceSteps: valSteps, guidanceScale: 7.5, seed: i + 1, outputType: "tensor" });
    out.pixels!.dispose();
    log(`${i === 0 ? "warm-up image" : `image ${i}/${images}`}: ours ${out.seconds.toFixed(2)} s`);
    if (i > 0) oursImg.push(out.seconds);
  }
  tf.dispose([pos, neg, cond]);
  vae.dispose();
  runner.dispose();
  loadOurs.push(load());

  // theirs, only now: the reference process starts after ours finished
  let ref: Reference | { error: string } = { error: "skipped (--no-torch)" };
  const loadTheirs = [load()];
  // what our process spends while theirs runs (it should idle: TF's pool parks once no op is in flight)
  const cpu0 = process.cpuUsage();
  const wall0 = performance.now();
  if (!args.includes("--no-torch")) {
    ref = await startReference({ unet: BENCH_MID_UNET, vae: BENCH_MID_VAE, batch, resolution: RESOLUTION, seq: 77, threads: info.threads, val_steps: valSteps });
    log(`diffusers: ${"error" in ref ? ref.error : JSON.stringify(ref.info)}`);
  }
  const theirs = "error" in ref ? null : ref;
  const theirSteps: number[] = [];
  const theirImg: number[] = [];
  let theirMem: number | null = null;
  if (theirs) {
    for (let i = 1; i <= steps; i++) {
      theirSteps.push((await theirs.ask("train")).seconds!);
      log(`step ${i}/${steps}: diffusers ${theirSteps.at(-1)!.toFixed(2)} s (load ${load()})`);
    }
    theirMem = (await theirs.ask("mem")).rss_peak_delta!;
    for (let i = 0; i <= images; i++) {
      const b = (await theirs.ask("image")).seconds!;
      log(`${i === 0 ? "warm-up image" : `image ${i}/${images}`}: diffusers ${b.toFixed(2)} s`);
      if (i > 0) theirImg.push(b);
    }
    theirs.close();
  }
  loadTheirs.push(load());
  const cpu = process.cpuUsage(cpu0);
  const oursIdleCpu = (cpu.user + cpu.system) / 1e6 / ((performance.now() - wall0) / 1000);
  log(`our process used ${(100 * oursIdleCpu).toFixed(1)} % of a core while diffusers ran`);

  const analytic = trainingStepFlops(BENCH_MID_UNET, batch, RESOLUTION).total;
  const flops = theirs?.info.step_flops ?? analytic;
  const ourStep = median(oursSteps);
  const theirStep = theirs ? median(theirSteps) : null;
  const ourIps = 1 / median(oursImg);
  const theirIps = theirs ? 1 / median(theirImg) : null;
  const ourMem = first.peakDeltaBytes;
  const r = (a: number, b: number | null) => (b ? +(a / b).toFixed(2) : null);
  const result = {
    bench: "compare",
    config: "bench-mid",
    batch, resolution: RESOLUTION, steps, images, val_steps: valSteps,
    engine: { backend: info.backend, threads: info.threads },
    ours_options: options,
    ours_predicted_peak_bytes: plan.best.estimate.device.total,
    planner_profile: plan.best.estimate.profile,
    memory_budget_bytes: budget,
    phases: "ours alone, then diffusers alone (its process started after ours finished; ours idle meanwhile)",
    diffusers: theirs ? theirs.info : ref,
    step_flops: flops,
    step_flops_analytic: analytic,
    ours: { step_s: +ourStep.toFixed(3), images_per_s: +ourIps.toFixed(4), peak_step_bytes: ourMem, gflops: +(flops / ourStep / 1e9).toFixed(2) },
    theirs: theirs
      ? { step_s: +theirStep!.toFixed(3), images_per_s: +theirIps!.toFixed(4), peak_step_bytes: theirMem, gflops: +(flops / theirStep! / 1e9).toFixed(2) }
      : null,
    ratio_ours_over_theirs: {
      step_time: r(ourStep, theirStep),
      images_per_s: r(ourIps, theirIps),
      peak_memory: r(ourMem, theirMem),
      gflops: theirStep ? +(theirStep / ourStep).toFixed(2) : null,
    },
    load_average: { ours_start_end: loadOurs, theirs_start_end: loadTheirs },
    ours_cpu_share_while_theirs_ran: +oursIdleCpu.toFixed(3),
  };
  const fmt = (x: number | null | undefined, d = 2) => (x == null ? "missing" : x.toFixed(d));
  const t = result.theirs;
  console.log(new Table({
    title: `bench-mid ControlNet, ours (${info.backend}, ${info.threads} threads) vs diffusers ${theirs ? `${theirs.info.diffusers} / torch ${theirs.info.torch}` : "(reference missing)"}`,
    columns: ["metric", "ours", "diffusers", "ours/theirs"],
    rows: [
      ["train step, median s", fmt(ourStep), fmt(t?.step_s), fmt(result.ratio_ours_over_theirs.step_time)],
      ["validation images/s", fmt(ourIps, 4), fmt(t?.images_per_s, 4), fmt(result.ratio_ours_over_theirs.images_per_s)],
      ["peak step memory, MB", fmt(ourMem / 1e6, 0), t ? fmt(t.peak_step_bytes! / 1e6, 0) : "missing", fmt(result.ratio_ours_over_theirs.peak_memory)],
      ["achieved GFLOP/s", fmt(result.ours.gflops), fmt(t?.gflops), fmt(result.ratio_ours_over_theirs.gflops)],
    ],
    note: `phases: ours alone, then diffusers alone; load ${loadOurs.join("→")} (ours), ${loadTheirs.join("→")} (diffusers); step FLOPs ${(flops / 1e9).toFixed(2)} G (${theirs?.info.step_flops ? "torch FlopCounterMode" : "analytic"}; analytic ${(analytic / 1e9).toFixed(2)} G)`,
  }).text());
  return result;
}
