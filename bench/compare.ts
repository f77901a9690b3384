/**
 * `npm run bench -- compare [--steps N] [--batch B] [--images I] [--val-steps V] [--no-torch]`
 *
 * Beside diffusers on PyTorch CPU (tests/reference/bench_diffusers.py in the reference venv), same machine, same
 * thread count, one invocation, alternating: both processes are alive, and each step (each image) runs while the
 * other side idles — ours, theirs, theirs, ours, … — never both at once (a live TF pool and a torch pool computing side
 * by side fight for the cores: diffusers' step went from ~1 s to 14–20 s beside our busy TF process). Alternating
 * pairs keep both sides in the same minute of a shared machine whose speed drifts by 20–30 % over minutes; the
 * median of the per-pair ratios is reported beside the ratio of medians. The CPU each process spends while the
 * other runs is reported too (both should idle). The 1-minute load average is printed with every step. Measured:
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
import { cpuDescription, noVenv, parseOptions, REFERENCE_VENV_HELP, referencePython, median, type BenchUsage } from "./_cli.js";

const RESOLUTION = 256;

const fmtShare = (x: number | null) => (x == null ? "unknown" : `${(100 * x).toFixed(1)} %`);

export const usage: BenchUsage = {
  summary: "bench-mid ControlNet train step (median s, peak memory, GFLOP/s) and validation images/s, ours beside diffusers on PyTorch CPU, alternating",
  options: [
    { flag: "--steps", value: "N", default: 5, help: "measured train steps after one warm-up, at least 5" },
    { flag: "--batch", value: "B", default: 4, help: "train batch size" },
    { flag: "--images", value: "I", default: 2, help: "measured validation images after one warm-up" },
    { flag: "--val-steps", value: "V", default: 5, help: "UniPC steps per validation image" },
    { flag: "--no-torch", help: "skip the diffusers reference (reported as missing)" },
  ],
  env: [REFERENCE_VENV_HELP, "CONTROLNET_TS_BACKEND, CONTROLNET_TS_THREADS: the engine and its threads (both sides get the same thread count)"],
};

interface Reference {
  info: { torch: string; diffusers: string; threads: number; step_flops: number | null };
  /** The process' CPU seconds so far (Linux /proc; null elsewhere). */
  cpuSeconds(): number | null;
  ask(cmd: "train" | "image" | "mem"): Promise<Record<string, number>>;
  close(): void;
}

async function startReference(cfg: object): Promise<Reference | { error: string }> {
  const root = path.resolve(import.meta.dirname, "..");
  const py = referencePython();
  if (!fs.existsSync(py)) return { error: noVenv(py) };
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
    cpuSeconds() {
      try {
        // utime and stime, fields 14 and 15 of /proc/<pid>/stat (after the parenthesised command name)
        const f = fs.readFileSync(`/proc/${child.pid}/stat`, "utf8").split(") ")[1]!.split(" ");
        return (Number(f[11]) + Number(f[12])) / 100;
      } catch {
        return null;
      }
    },
    close: () => child.stdin.end(),
  };
}

/** CPU seconds the other side spends while `fn` runs, as a share of one core over fn's wall time. */
async function otherSideShare(cpu: () => number | null, fn: () => Promise<void> | void): Promise<[number, number | null]> {
  const c0 = cpu(), t0 = performance.now();
  await fn();
  const wall = (performance.now() - t0) / 1000, c1 = cpu();
  return [wall, c0 == null || c1 == null ? null : (c1 - c0) / wall];
}

export async function run(args: string[]): Promise<object> {
  const o = parseOptions("compare", args, usage);
  const steps = Math.max(5, o.num("--steps"));
  const batch = o.num("--batch");
  const images = Math.max(1, o.num("--images"));
  const valSteps = o.num("--val-steps");
  const info = await initEngine();
  const log = (s: string) => console.log(`[bench compare] ${s}`);
  const load = () => +os.loadavg()[0]!.toFixed(1);
  log(`bench-mid: batch ${batch}, latents 4x32x32, control ${RESOLUTION}px, text 77x64; ${steps} steps after 1 warm-up; ` +
    `validation ${images} image(s) x UniPC ${valSteps} steps; ${info.backend} ${info.threads} thread(s); load ${load()}`);
  log(`machine: ${cpuDescription()}`);
  log(`alternating: both processes alive, one computes while the other idles (ours, theirs, theirs, ours, ...); ` +
    `never both at once: two thread pools side by side fight for the cores (diffusers' step took 14-20 s instead of ~1 s beside a busy TF process)`);

  // theirs starts first: its "ready" line comes after its warm-up step (which also counts its FLOPs)
  let ref: Reference | { error: string } = { error: "skipped (--no-torch)" };
  if (!o.has("--no-torch")) {
    ref = await startReference({ unet: BENCH_MID_UNET, vae: BENCH_MID_VAE, batch, resolution: RESOLUTION, seq: 77, threads: info.threads, val_steps: valSteps });
    log(`diffusers: ${"error" in ref ? ref.error : JSON.stringify(ref.info)}`);
  }
  const theirs = "error" in ref ? null : ref;

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
  const loads = [load()];
  const runner = createTrainingStep({ unet: BENCH_MID_UNET, resolution: RESOLUTION, batchSize: batch, options });
  const t0 = performance.now();
  const first = await measurePeak(() => runner.step());
  log(`warm-up: ours ${((performance.now() - t0) / 1000).toFixed(2)} s (peak +${(first.peakDeltaBytes / 1e6).toFixed(0)} MB)`);

  // what each process spends while the other computes (both should idle: TF's pool parks once no op is in flight,
  // torch's OpenMP threads once its step returned)
  const oursCpu = () => { const u = process.cpuUsage(); return (u.user + u.system) / 1e6; };
  const idle = { ours: [] as number[], theirs: [] as number[] };
  const oursRun = async (fn: () => Promise<void> | void) => {
    const [wall, share] = await otherSideShare(() => theirs?.cpuSeconds() ?? null, fn);
    if (share != null) idle.theirs.push(share);
    return wall;
  };
  const theirsRun = async (cmd: "train" | "image") => {
    let seconds = 0;
    const [, share] = await otherSideShare(oursCpu, async () => void (seconds = (await theirs!.ask(cmd)).seconds!));
    if (share != null) idle.ours.push(share);
    return seconds;
  };
  /** n alternating rounds of (ours, theirs), the order flipped every round. */
  async function alternate(n: number, what: string, ours: () => Promise<number>, theirsCmd: "train" | "image", into: [number[], number[]]) {
    for (let i = 1; i <= n; i++) {
      for (const side of i % 2 ? ["ours", "theirs"] : ["theirs", "ours"]) {
        if (side === "theirs" && !theirs) continue;
        const s = side === "ours" ? await ours() : await theirsRun(theirsCmd);
        (side === "ours" ? into[0] : into[1]).push(s);
        log(`${what} ${i}/${n}: ${side === "ours" ? "ours" : "diffusers"} ${s.toFixed(2)} s (load ${load()})`);
      }
    }
  }
  const oursSteps: number[] = [], theirSteps: number[] = [];
  await alternate(steps, "step", () => oursRun(() => void runner.step()), "train", [oursSteps, theirSteps]);
  const theirMem = theirs ? (await theirs.ask("mem")).rss_peak_delta! : null;

  // validation images: the same UNet/ControlNet in our pipeline; one warm-up image each, then alternating
  const vae = new AutoencoderKL(BENCH_MID_VAE, { seed: 3, trainable: false });
  const pipe = new StableDiffusionControlNetPipeline({
    unet: runner.unet, controlnet: runner.controlnet, vae,
    scheduler: schedulerFromConfig("unipc", SD15_SCHEDULER),
  });
  const pos = tf.randomNormal([1, 77, 64], 0, 1, "float32", 1) as tf.Tensor3D;
  const neg = tf.randomNormal([1, 77, 64], 0, 1, "float32", 2) as tf.Tensor3D;
  const cond = tf.randomUniform([1, RESOLUTION, RESOLUTION, 3], 0, 1, "float32", 3) as tf.Tensor4D;
  let seed = 0;
  const ourImage = async () => {
    const out = await pipe.call({ promptEmbeds: pos, negativePromptEmbeds: neg, image: cond, numInferenceSteps: valSteps, guidanceScale: 7.5, seed: ++seed, outputType: "tensor" });
    out.pixels!.dispose();
    return out.seconds;
  };
  log(`warm-up image: ours ${(await ourImage()).toFixed(2)} s${theirs ? `, diffusers ${(await theirs.ask("image")).seconds!.toFixed(2)} s` : ""}`);
  const oursImg: number[] = [], theirImg: number[] = [];
  await alternate(images, "image", ourImage, "image", [oursImg, theirImg]);
  tf.dispose([pos, neg, cond]);
  vae.dispose();
  runner.dispose();
  theirs?.close();
  loads.push(load());
  const share = (xs: number[]) => (xs.length ? +median(xs).toFixed(3) : null);
  if (theirs) log(`while the other side computed: our process used ${fmtShare(share(idle.ours))} of a core, diffusers' ${fmtShare(share(idle.theirs))} (medians)`);

  const analytic = trainingStepFlops(BENCH_MID_UNET, batch, RESOLUTION).total;
  const flops = theirs?.info.step_flops ?? analytic;
  const ourStep = median(oursSteps);
  const theirStep = theirs ? median(theirSteps) : null;
  const ourIps = 1 / median(oursImg);
  const theirIps = theirs ? 1 / median(theirImg) : null;
  const ourMem = first.peakDeltaBytes;
  const r = (a: number, b: number | null) => (b ? +(a / b).toFixed(2) : null);
  // per alternating pair: ours / theirs (time), theirs / ours (images/s); their median; null without both sides
  const paired = (a: number[], b: number[]) => (a.length && b.length ? +median(a.slice(0, b.length).map((x, i) => x / b[i]!)).toFixed(2) : null);
  const result = {
    bench: "compare",
    config: "bench-mid",
    batch, resolution: RESOLUTION, steps, images, val_steps: valSteps,
    engine: { backend: info.backend, threads: info.threads },
    ours_options: options,
    ours_predicted_peak_bytes: plan.best.estimate.device.total,
    planner_profile: plan.best.estimate.profile,
    memory_budget_bytes: budget,
    phases: "alternating: ours, theirs, theirs, ours, ... (one computes while the other idles)",
    reference: theirs ? "diffusers" : "missing",
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
    paired_ratio_medians: { step_time: paired(oursSteps, theirSteps), images_per_s: paired(theirImg, oursImg) },
    load_average: { start_end: loads },
    cpu: cpuDescription(),
    cpu_share_while_other_ran: { ours: share(idle.ours), theirs: share(idle.theirs) },
  };
  const fmt = (x: number | null | undefined, d = 2) => (x == null ? "missing" : x.toFixed(d));
  const t = result.theirs;
  console.log(new Table({
    title: `bench-mid ControlNet, ours (${info.backend}, ${info.threads} threads) vs diffusers ${theirs ? `${theirs.info.diffusers} / torch ${theirs.info.torch}` : "(reference missing)"}`,
    columns: ["metric", "ours", "diffusers", "ours/theirs"],
    rows: [
      ["train step, median s", fmt(ourStep), fmt(t?.step_s), fmt(result.ratio_ours_over_theirs.step_time)],
      ["  per pair (median)", "", "", fmt(result.paired_ratio_medians.step_time)],
      ["validation images/s", fmt(ourIps, 4), fmt(t?.images_per_s, 4), fmt(result.ratio_ours_over_theirs.images_per_s)],
      ["  per pair (median)", "", "", fmt(result.paired_ratio_medians.images_per_s)],
      ["peak step memory, MB", fmt(ourMem / 1e6, 0), t ? fmt(t.peak_step_bytes! / 1e6, 0) : "missing", fmt(result.ratio_ours_over_theirs.peak_memory)],
      ["achieved GFLOP/s", fmt(result.ours.gflops), fmt(t?.gflops), fmt(result.ratio_ours_over_theirs.gflops)],
    ],
    note: `alternating, one side at a time; load ${loads.join("→")}; step FLOPs ${(flops / 1e9).toFixed(2)} G (${theirs?.info.step_flops ? "torch FlopCounterMode" : "analytic"}; analytic ${(analytic / 1e9).toFixed(2)} G)`,
  }).text());
  return result;
}
