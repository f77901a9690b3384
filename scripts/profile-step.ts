/**
 * Per-kernel wall time of one training step on the current engine:
 *   `node --import tsx scripts/profile-step.ts unet|vae [batch]` — the tiny-SD UNet or VAE (batch default 16);
 *   `node --import tsx scripts/profile-step.ts mid [batch]` — the bench-mid ControlNet step of `npm run bench -- compare`
 *   (256 px, chunked attention 256 unless CHUNK is set, CHUNK=0: full scores as `compare` on native; batch default 4;
 *   where the engine has fused attention, chunking does not apply);
 *   `node --import tsx scripts/profile-step.ts image` — one validation image of `compare` (bench-mid UNet/ControlNet, UniPC
 *   5 steps unless VAL_STEPS is set, guidance 7.5, 256 px, bench-pipeline's VAE);
 *   `node --import tsx scripts/profile-step.ts sd15 [batch]` — the SD1.5-config step of `npm run bench -- sd15-step`
 *   (512 px unless RESOLUTION is set, gradient checkpointing; batch default 1; one warm-up and STEPS=1 timed step).
 */
import { tf, initEngine } from "../lib/engine/index.js";
import { exitOnHelp } from "./_cli.js";
import { UNet2DConditionModel, AutoencoderKL } from "../lib/models/index.js";
import { TINY_UNET_CONFIG, TINY_VAE_CONFIG } from "../data/recipes/tiny-sd.js";
import { createTrainingStep } from "../lib/planner/index.js";
import { BENCH_MID_UNET } from "../bench/models.js";
import { SD15_UNET } from "../lib/planner/index.js";
import { BENCH_MID_VAE, SD15_SCHEDULER } from "../bench/pipeline.js";
import { StableDiffusionControlNetPipeline } from "../lib/pipeline/index.js";
import { schedulerFromConfig } from "../lib/schedulers/index.js";

exitOnHelp("usage: node --import tsx scripts/profile-step.ts unet|vae|mid|image|sd15 [batch]\n" +
  "Per-kernel wall time of one training step (or one validation image) on the current engine; see the file's comment for each.");
await initEngine();
const which = process.argv[2] ?? "unet";
const B = Number(process.argv[3] ?? (which === "mid" ? 4 : which === "sd15" ? 1 : 16));
const times = new Map<string, { n: number; ms: number }>();
let depth = 0;
for (const k of tf.getKernelsForBackend(tf.getBackend())) {
  const f = k.kernelFunc;
  (k as { kernelFunc: typeof f }).kernelFunc = ((args: Parameters<typeof f>[0]) => {
    depth++;
    const t0 = performance.now();
    try { return f(args); } finally {
      depth--;
      const dt = performance.now() - t0;
      if (depth === 0 && process.env.PROFILE_SHAPES === k.kernelName) { const ins = Object.values(args.inputs).map((t) => (t as { shape: number[] }).shape.join("x")).join(" , ") + " " + JSON.stringify(args.attrs ?? {}); const e = times.get(ins) ?? { n: 0, ms: 0 }; e.n++; e.ms += dt; times.set(ins, e); }
      if (depth === 0) { const e = times.get(k.kernelName) ?? { n: 0, ms: 0 }; e.n++; e.ms += dt; times.set(k.kernelName, e); }
    }
  }) as typeof f;
}
let step: () => void | Promise<void>;
if (which === "image") {
  const runner = createTrainingStep({ unet: BENCH_MID_UNET, resolution: 256, batchSize: 1, options: {} });
  const vae = new AutoencoderKL(BENCH_MID_VAE, { seed: 3, trainable: false });
  const scheduler = schedulerFromConfig("unipc", SD15_SCHEDULER);
  const pipe = new StableDiffusionControlNetPipeline({ unet: runner.unet, controlnet: runner.controlnet, vae, scheduler });
  const pos = tf.randomNormal([1, 77, 64], 0, 1, "float32", 1) as tf.Tensor3D;
  const neg = tf.randomNormal([1, 77, 64], 0, 1, "float32", 2) as tf.Tensor3D;
  const cond = tf.randomUniform([1, 256, 256, 3], 0, 1, "float32", 3) as tf.Tensor4D;
  step = async () => {
    const out = await pipe.call({ promptEmbeds: pos, negativePromptEmbeds: neg, image: cond, numInferenceSteps: Number(process.env.VAL_STEPS ?? 5), guidanceScale: 7.5, seed: 1, outputType: "tensor" });
    out.pixels!.dispose();
  };
} else if (which === "sd15") {
  const runner = createTrainingStep({ unet: SD15_UNET, resolution: Number(process.env.RESOLUTION ?? 512), batchSize: B, options: { setGradsToNone: true, gradientCheckpointing: true } });
  step = () => void runner.step();
} else if (which === "mid") {
  const runner = createTrainingStep({ unet: BENCH_MID_UNET, resolution: 256, batchSize: B, options: { setGradsToNone: true, attentionChunkSize: Number(process.env.CHUNK ?? 256) } });
  step = () => void runner.step();
} else if (which === "unet") {
  const unet = new UNet2DConditionModel({ ...TINY_UNET_CONFIG, ...(process.env.HEADS ? { attention_head_dim: Number(process.env.HEADS) } : {}) }, { seed: 1 });
  const vars = [...unet.namedParameters().values()].map((p) => p.variable);
  step = () => {
    const x = tf.randomNormal([B, 8, 8, 4]); const e = tf.randomNormal([B, 77, 32]); const t = tf.fill([B], 500);
    const { value, grads } = tf.variableGrads(() => tf.mean(tf.square(tf.sub(unet.forward(x as tf.Tensor4D, t as tf.Tensor1D, e as tf.Tensor3D), x))) as tf.Scalar, vars);
    value.dataSync(); tf.dispose([value, x, e, t, ...Object.values(grads)]);
  };
} else {
  const vae = new AutoencoderKL(TINY_VAE_CONFIG, { seed: 1 });
  const vars = [...vae.namedParameters().values()].map((p) => p.variable);
  step = () => {
    const x = tf.randomNormal([B, 32, 32, 3]);
    const { value, grads } = tf.variableGrads(() => { const p = vae.encode(x as tf.Tensor4D); const r = vae.decode(p.mean as tf.Tensor4D); return tf.mean(tf.square(tf.sub(r, x))) as tf.Scalar; }, vars);
    value.dataSync(); tf.dispose([value, x, ...Object.values(grads)]);
  };
}
const big = which === "sd15";
await step();
if (!big) await step();
times.clear();
const N = Number(process.env.STEPS ?? (big ? 1 : 3)); const t0 = performance.now(); const c0 = process.cpuUsage(); const f0 = process.resourceUsage().minorPageFault;
for (let i = 0; i < N; i++) await step();
const total = (performance.now() - t0) / N;
const cpu = process.cpuUsage(c0);
// process CPU time (user + system) beside the wall time: on a shared machine it is the steadier figure (1 thread)
// system time and page faults: fresh pages the allocator maps for each step's tensors are zeroed by the kernel
const faults = (process.resourceUsage().minorPageFault - f0) / N;
console.log(`${which} B=${B} step ${total.toFixed(0)} ms on ${tf.getBackend()} (process CPU ${((cpu.user + cpu.system) / 1000 / N).toFixed(0)} ms/step, of it system ${(cpu.system / 1000 / N).toFixed(0)} ms; ${faults.toFixed(0)} page faults/step)`);
const rows = [...times].sort((a, b) => b[1].ms - a[1].ms);
let acc = 0; let calls = 0; for (const [, v] of rows) { acc += v.ms; calls += v.n; }
console.log(`kernel total ${(acc / N).toFixed(0)} ms/step in ${calls / N} calls (rest is JS/tape overhead)`);
for (const [name, v] of rows.slice(0, Number(process.env.PROFILE_ROWS ?? 25))) console.log(`${name.padEnd(28)} ${(v.ms / N).toFixed(1).padStart(8)} ms ${String(v.n / N).padStart(6)} calls`);
