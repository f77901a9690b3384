/**
 * `npm run bench -- sd15-step [--resolution R] [--chunk C] [--steps N] [--no-torch] [--side ours|diffusers]`
 *
 * One training step of the SD1.5-config ControlNet (random weights, exact SD1.5 shapes: UNet 859,520,964 and
 * ControlNet 361,279,120 parameters), batch 1, on the running engine.
 *
 * Native engine ("node"): host memory is the budget, so no streaming, chunking or 8-bit states: gradient
 * checkpointing on both models and fp32 AdamW (diffusers' `--gradient_checkpointing`), through createTrainingStep.
 * N steps (default 2: the first creates the optimizer state); the last one is timed and its peak of live tensors
 * compared with the planner's device total, the process' peak RSS with the planner's tensors + the RSS the process
 * had before building anything. The same steps in diffusers on PyTorch CPU (tests/reference/bench_sd15_step.py,
 * same thread count) run first, in their own process, which has exited (returning its memory) before ours builds
 * anything: never both at once (~11 + ~16 GB). Each side first checks MemAvailable and says so instead of starting
 * when memory is short.
 *
 * wasm: inside the 4 GiB wasm heap: the frozen UNet's resnet/transformer weights live
 * in host memory and are streamed into the heap block by block (lib/planner/offload.ts), gradient checkpointing on
 * both models, chunked attention, 8-bit AdamW (states on the host, update on the host), the ControlNet's weight
 * gradients moved to the host as backward produces them, conv/linear weights without XNNPACK's cached packed copies. Latents and text
 * embeddings are inputs (the VAE and text encoder are not run here). Prints measured peak heap / live bytes and host
 * memory beside the planner's prediction.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { spawnSync } from "node:child_process";
import { initEngine, measurePeak, memoryBudget, memoryInfo, tf, throwIfWasmKernelFailed, WASM_HEAP_LIMIT, type EngineInfo } from "../lib/engine/index.js";
import { ControlNetModel, UNet2DConditionModel, type Module } from "../lib/models/index.js";
import { DDPMScheduler } from "../lib/schedulers/index.js";
import { controlnetGradients } from "../lib/training/step.js";
import { clipGradNorm, createOptimizer } from "../lib/training/optim/index.js";
import { createTrainingStep, estimateMemory, planMemory, plannedDeviceBytes, streamFrozenWeights, SD15_UNET } from "../lib/planner/index.js";
import { noVenv, parseOptions, REFERENCE_VENV_HELP, referencePython, type BenchUsage } from "./_cli.js";

export const usage: BenchUsage = {
  summary: "one SD1.5-shaped ControlNet training step, batch 1 (seconds, peak memory beside the planner's prediction), native beside diffusers on PyTorch CPU, or inside the 4 GiB wasm heap",
  options: [
    { flag: "--resolution", value: "R", default: "512 native, 64 wasm", help: "image resolution in px (latents R/8)" },
    { flag: "--steps", value: "N", default: 2, help: "native: steps, the last one timed (the first creates the optimizer state)" },
    { flag: "--chunk", value: "C", default: 256, help: "wasm: attention chunk (queries)" },
    { flag: "--side", value: "ours|diffusers|both", default: "both", help: "native: which side runs" },
    { flag: "--no-torch", help: "native: skip the diffusers reference" },
  ],
  env: [REFERENCE_VENV_HELP, "CONTROLNET_TS_BACKEND=wasm: the wasm variant; CONTROLNET_TS_THREADS: threads"],
};
const opts = (args: string[]) => parseOptions("sd15-step", args, usage);

const log = (s: string) => console.log(`[bench sd15-step] ${s}`);
const GB = (x: number) => `${(x / 1e9).toFixed(2)} GB`;

/** A /proc/self/status or /proc/meminfo field in bytes (Linux; the native engine is Linux-only). */
function procBytes(file: string, field: string): number {
  const line = fs.readFileSync(file, "utf8").split("\n").find((l) => l.startsWith(`${field}:`));
  return line ? Number(line.split(/\s+/)[1]) * 1024 : NaN;
}

/** True when MemAvailable covers `need`; else says what is missing (other processes hold the memory: retry later). */
function memoryFor(who: string, need: number): boolean {
  const available = procBytes("/proc/meminfo", "MemAvailable");
  log(`${who}: needs ~${GB(need)}, MemAvailable ${GB(available)}`);
  if (available >= need) return true;
  log(`${who}: not started — ${GB(need - available)} short (other processes hold it; run again when memory is free)`);
  return false;
}

interface TheirStep { torch: string; diffusers: string; threads: number; seconds: number[]; loss: number; rss_built_bytes: number; rss_peak_bytes: number }

function runReference(resolution: number, threads: number, steps: number): TheirStep | { error: string } {
  const root = path.resolve(import.meta.dirname, "..");
  const py = referencePython();
  if (!fs.existsSync(py)) return { error: noVenv(py) };
  const t = String(threads);
  const r = spawnSync(py, [path.join(root, "tests/reference/bench_sd15_step.py"), JSON.stringify({ unet: SD15_UNET, resolution, threads, steps })], {
    env: { ...process.env, OMP_NUM_THREADS: t, MKL_NUM_THREADS: t, HF_HUB_OFFLINE: "1" },
    stdio: ["ignore", "pipe", "inherit"], encoding: "utf8", maxBuffer: 1 << 20,
  });
  const line = r.stdout?.trim().split("\n").at(-1) ?? "";
  if (r.status !== 0 || !line.startsWith("{")) return { error: `diffusers reference failed (exit ${r.status ?? r.signal})` };
  return JSON.parse(line) as TheirStep;
}

async function runNative(args: string[], info: EngineInfo): Promise<object> {
  const o = opts(args);
  const resolution = o.has("--resolution") ? o.num("--resolution") : 512;
  const steps = Math.max(1, o.num("--steps"));
  const options = { gradientCheckpointing: true };
  const cfg = { unet: SD15_UNET, resolution, batchSize: 1, options };
  const predicted = estimateMemory(cfg);
  const budget = memoryBudget();
  const cheapest = planMemory({ ...cfg, options: {} }, 0.9 * budget).best;
  const rssBase = process.memoryUsage().rss;
  const predictedRss = rssBase + predicted.device.total + predicted.heapSlack + predicted.host.total;
  log(`SD1.5 ControlNet step, ${resolution} px (latents ${resolution / 8}), batch 1, ${info.backend} ${info.threads} thread(s), load ${os.loadavg()[0]!.toFixed(1)}; ` +
    `options: gradient checkpointing (both models), fp32 AdamW; planner (${predicted.profile}): tensors ${GB(predicted.device.total)} ` +
    `(${predicted.breakdown.slice(0, -2).join(", ")}), + process before building ${GB(rssBase)} = ${GB(predictedRss)} host; ` +
    `budget ${GB(budget)} (memoryBudget), cheapest tier that fits 90 %: ${cheapest?.name ?? "none"}`);
  let theirs: TheirStep | { error: string } = { error: "skipped (--no-torch)" };
  const side = o.str("--side");
  if (!["ours", "diffusers", "both"].includes(side)) throw new Error(`bench sd15-step: --side is ours, diffusers or both, not '${side}'`);
  if (!o.has("--no-torch") && side !== "ours") {
    // theirs first, in its own process, which returns all its memory when it exits (ours, once built, keeps what it
    // freed in the allocator until it exits); our engine has run no op yet, so its thread pool is idle
    theirs = memoryFor("diffusers", 12e9) ? runReference(resolution, info.threads, steps) : { error: "not started: memory short" };
    if ("error" in theirs) log(`diffusers: ${theirs.error}`);
    else log(`diffusers ${theirs.diffusers} / torch ${theirs.torch}, ${theirs.threads} thread(s): steps ${theirs.seconds.map((x) => x.toFixed(1)).join(", ")} s, peak RSS ${GB(theirs.rss_peak_bytes)} (load ${os.loadavg()[0]!.toFixed(1)})`);
  }
  let ours: Record<string, unknown> | null = null;
  if (side !== "diffusers" && memoryFor("ours", 1.15 * predictedRss - rssBase)) {
    const live0 = memoryInfo().liveBytes;
    const t0 = performance.now();
    const runner = createTrainingStep(cfg);
    log(`built in ${((performance.now() - t0) / 1000).toFixed(1)} s: UNet ${runner.unet.numParameters().toLocaleString()}, ControlNet ${runner.controlnet.numParameters().toLocaleString()} parameters; RSS ${GB(process.memoryUsage().rss)}, JS array buffers ${GB(process.memoryUsage().arrayBuffers)}`);
    const seconds: number[] = [];
    let last = null as Awaited<ReturnType<typeof measurePeak<number>>> | null;
    for (let i = 0; i < steps; i++) {
      const s0 = performance.now();
      last = await measurePeak(() => runner.step());
      seconds.push((performance.now() - s0) / 1000);
      const mu = process.memoryUsage();
      log(`step ${i + 1}/${steps}: ${seconds.at(-1)!.toFixed(1)} s, loss ${last.result.toFixed(4)}, peak live ${GB(last.peakBytes - live0)}, RSS peak ${GB(procBytes("/proc/self/status", "VmHWM"))} ` +
        `(now: RSS ${GB(mu.rss)}, live ${GB(memoryInfo().liveBytes - live0)}, JS heap ${GB(mu.heapUsed)}, JS array buffers ${GB(mu.arrayBuffers)}; load ${os.loadavg()[0]!.toFixed(1)})`);
    }
    const livePeak = last!.peakBytes - live0;
    const rssPeak = procBytes("/proc/self/status", "VmHWM");
    runner.dispose();
    ours = {
      seconds: seconds.map((x) => +x.toFixed(2)), step_s: +seconds.at(-1)!.toFixed(2),
      peak_live_bytes: livePeak, rss_before_build_bytes: rssBase, rss_peak_bytes: rssPeak,
      live_over_planner: +(livePeak / predicted.device.total).toFixed(3), rss_over_planner: +(rssPeak / predictedRss).toFixed(3),
    };
  }
  const theirStep = "error" in theirs ? null : theirs.seconds.at(-1)!;
  const out = {
    bench: "sd15-step", resolution, latent: resolution / 8, batch: 1, steps, options,
    engine: { backend: info.backend, threads: info.threads },
    planner: { profile: predicted.profile, device_total: predicted.device.total, host_total: predicted.host.total, predicted_rss: predictedRss, breakdown: predicted.breakdown, budget, cheapest_fitting_tier: cheapest?.name ?? null },
    ours, theirs,
    ratio_step_time: ours && theirStep ? +((ours.step_s as number) / theirStep).toFixed(2) : null,
    phases: "diffusers alone (its process exits), then ours alone",
    load_average: os.loadavg().map((x) => +x.toFixed(1)),
  };
  if (ours) log(`ours ${ours.step_s} s/step${theirStep ? ` vs diffusers ${theirStep.toFixed(1)} s (ours/theirs ${out.ratio_step_time})` : ""}; peak live ${GB(ours.peak_live_bytes as number)} vs planner ${GB(predicted.device.total)} (${ours.live_over_planner}); peak RSS ${GB(ours.rss_peak_bytes as number)} vs planner ${GB(predictedRss)} (${ours.rss_over_planner})`);
  return out;
}

export async function run(args: string[]): Promise<object> {
  const info = await initEngine();
  return info.backend === "wasm" ? runWasm(args, info) : runNative(args, info);
}

async function runWasm(args: string[], info: EngineInfo): Promise<object> {
  const o = opts(args);
  const resolution = o.has("--resolution") ? o.num("--resolution") : 64;
  const chunk = o.num("--chunk");
  const t0 = performance.now();
  const unet = new UNet2DConditionModel(SD15_UNET, { shapeOnly: true });
  unet.trainable = false;
  unet.enableGradientCheckpointing(true);
  unet.setAttentionChunkSize(chunk);
  const stream = streamFrozenWeights(unet, 7);
  const resident: Module[] = [unet.conv_in, unet.time_embedding, unet.conv_norm_out, unet.conv_out];
  resident.forEach((m, i) => m.initialize(11 + i));
  unet.trainable = false;
  const controlnet = ControlNetModel.fromUnet(unet, { loadWeightsFromUnet: false, seed: 2 });
  controlnet.trainable = true;
  controlnet.enableGradientCheckpointing(true);
  // its 1.45 GB of weights would otherwise hold up to 2.9 GB of packed copies in the heap (engine/weight-cache.ts)
  controlnet.setKeepPackedWeights(false);
  controlnet.setAttentionChunkSize(chunk);
  const params = new Map([...controlnet.namedParameters()].map(([n, p]) => [n, p.variable] as [string, tf.Variable]));
  const optimizer = createOptimizer(params, { lr: 1e-5, use8bit: true });
  const scheduler = DDPMScheduler.fromConfig({ beta_schedule: "scaled_linear", beta_start: 0.00085, beta_end: 0.012, num_train_timesteps: 1000 });
  const built = memoryInfo();
  log(`built in ${((performance.now() - t0) / 1000).toFixed(1)} s: UNet ${unet.numParameters().toLocaleString()} params (${stream.blocks.length} blocks, ${(stream.hostBytes / 1e9).toFixed(2)} GB on the host), ControlNet ${controlnet.numParameters().toLocaleString()}; live ${(built.liveBytes / 1e9).toFixed(2)} GB, heap ${((built.heapBytes ?? 0) / 1e9).toFixed(2)} GB`);

  const lat = resolution / 8;
  const latents = tf.randomNormal([1, lat, lat, 4], 0, 1, "float32", 3) as tf.Tensor4D;
  const noise = tf.randomNormal([1, lat, lat, 4], 0, 1, "float32", 4) as tf.Tensor4D;
  const ehs = tf.randomNormal([1, 77, 768], 0, 1, "float32", 5) as tf.Tensor3D;
  const cond = tf.randomUniform([1, resolution, resolution, 3], 0, 1, "float32", 6) as tf.Tensor4D;
  const rss0 = process.memoryUsage().rss;
  const s0 = performance.now();
  // Gradients of the checkpointed ControlNet blocks go to the host as backward produces them (ZeRO-Offload): the
  // heap never holds all 1.45 GB of them next to the 1.45 GB of weights.
  const hostGrads = new Map<string, Float32Array>();
  const r = await measurePeak(() => {
    const { loss, grads } = controlnetGradients(unet, controlnet, scheduler, { latents, encoderHiddenStates: ehs, conditioning: cond, noise, timesteps: [500] }, 1, hostGrads);
    const norm = clipGradNorm(grads, 1, hostGrads);
    optimizer.step(grads, { disposeGrads: true, hostGrads });
    for (const g of grads.values()) if (!g.isDisposed) g.dispose();
    return { loss, norm };
  });
  const seconds = (performance.now() - s0) / 1000;
  throwIfWasmKernelFailed("sd15-step");
  const hostOpt = optimizer.stateBytes().host;
  const predicted = estimateMemory({
    unet: SD15_UNET, resolution, batchSize: 1,
    options: { gradientCheckpointing: true, attentionChunkSize: chunk, use8bitAdam: true, setGradsToNone: true, offloadFrozenWeights: true, keepPackedWeights: false },
  });
  const mem = memoryInfo();
  const out = {
    bench: "sd15-step",
    resolution, latent: lat, batch: 1, attention_chunk: chunk,
    engine: { backend: info.backend, threads: info.threads },
    seconds: +seconds.toFixed(1),
    loss: r.result.loss, grad_norm: r.result.norm,
    streamed_block_loads: stream.loads,
    measured: {
      peak_live_bytes: r.peakBytes,
      heap_bytes: mem.heapBytes,
      heap_limit: WASM_HEAP_LIMIT,
      host_frozen_weights_bytes: stream.hostBytes,
      host_optimizer_bytes: hostOpt,
      host_gradient_bytes: [...hostGrads.values()].reduce((a, g) => a + g.byteLength, 0),
      rss_bytes: mem.rssBytes,
      rss_growth_during_step: mem.rssBytes - rss0,
    },
    predicted: { device_total: predicted.device.total, wasm_heap: plannedDeviceBytes(predicted, true), host_total: predicted.host.total, breakdown: predicted.breakdown },
  };
  log(`step: ${seconds.toFixed(1)} s, loss ${r.result.loss.toFixed(4)}, ${stream.loads} block loads; peak live ${(r.peakBytes / 1e9).toFixed(2)} GB ` +
    `(planner ${(predicted.device.total / 1e9).toFixed(2)} GB), heap ${((mem.heapBytes ?? 0) / 1e9).toFixed(2)} / ${(WASM_HEAP_LIMIT / 1e9).toFixed(2)} GB ` +
    `(planner ${(plannedDeviceBytes(predicted, true) / 1e9).toFixed(2)} GB with packed weight copies and the streamed weights' holes); ` +
    `host: frozen ${(stream.hostBytes / 1e9).toFixed(2)} GB + optimizer ${(hostOpt / 1e9).toFixed(2)} GB (planner ${(predicted.host.total / 1e9).toFixed(2)} GB)`);
  tf.dispose([latents, noise, ehs, cond]);
  optimizer.dispose();
  controlnet.dispose();
  unet.dispose();
  return out;
}
