/**
 * `npm run bench -- planner-fit [--only a,b]`
 *
 * The planner's predicted step peak (estimateMemory, the running engine's profile) beside the peak of live tensor
 * bytes measured over one training step (measureTrainingStep), for the 8 configs NATIVE_KEPT_SHARE was fitted on
 * (lib/planner/estimate.ts). Run it on each engine (CONTROLNET_TS_BACKEND=node / wasm) to re-check or refit the
 * profiles; `act_ratio` is (measured − weights − gradients − optimizer states) / the predicted activations.
 */
import { initEngine } from "../lib/engine/index.js";
import { estimateMemory, measureTrainingStep, type EstimateConfig } from "../lib/planner/index.js";
import { BENCH_MID_UNET } from "./models.js";
import { parseOptions, type BenchUsage } from "./_cli.js";

const TINY_UNET = {
  block_out_channels: [32, 64], layers_per_block: 1, in_channels: 4, out_channels: 4,
  down_block_types: ["CrossAttnDownBlock2D", "DownBlock2D"], up_block_types: ["UpBlock2D", "CrossAttnUpBlock2D"],
  cross_attention_dim: 32, attention_head_dim: 8, norm_num_groups: 32,
};
const TINY_CE = [16, 32];
type Cfg = Omit<EstimateConfig, "controlnet"> & { ce?: number[] };
const CONFIGS: [string, Cfg][] = [
  ["tiny-32px-b2", { unet: TINY_UNET, resolution: 32, vaeScaleFactor: 2, batchSize: 2, seqLen: 8, ce: TINY_CE }],
  ["tiny-64px-b1", { unet: TINY_UNET, resolution: 64, vaeScaleFactor: 2, batchSize: 1, seqLen: 8, ce: TINY_CE }],
  ["mid-128px-b1", { unet: BENCH_MID_UNET, resolution: 128, batchSize: 1 }],
  ["mid-128px-b2", { unet: BENCH_MID_UNET, resolution: 128, batchSize: 2 }],
  ["mid-128px-ckpt-8bit", { unet: BENCH_MID_UNET, resolution: 128, batchSize: 1, options: { gradientCheckpointing: true, use8bitAdam: true } }],
  ["mid-256px-chunk256", { unet: BENCH_MID_UNET, resolution: 256, batchSize: 1, options: { attentionChunkSize: 256 } }],
  ["mid-256px-b1", { unet: BENCH_MID_UNET, resolution: 256, batchSize: 1 }],
  ["mid-256px-ckpt", { unet: BENCH_MID_UNET, resolution: 256, batchSize: 1, options: { gradientCheckpointing: true } }],
];

export const usage: BenchUsage = {
  summary: "the planner's predicted step peak beside the measured peak of live tensor bytes of one training step, for the configs NATIVE_KEPT_SHARE was fitted on",
  options: [{ flag: "--only", value: "a,b", default: "all", help: `configs to run (${CONFIGS.map(([n]) => n).join(", ")})` }],
  env: ["CONTROLNET_TS_BACKEND=node|wasm: the engine whose profile is checked"],
};

export async function run(args: string[]): Promise<object> {
  const o = parseOptions("planner-fit", args, usage);
  const only = o.has("--only") ? o.str("--only").split(",") : null;
  const unknown = only?.filter((n) => !CONFIGS.some(([c]) => c === n)) ?? [];
  if (unknown.length) throw new Error(`bench planner-fit: unknown config(s) ${unknown.join(", ")}; known: ${CONFIGS.map(([n]) => n).join(", ")}`);
  const info = await initEngine();
  const rows = [];
  for (const [name, { ce, ...c }] of CONFIGS.filter(([n]) => !only || only.includes(n))) {
    const m = await measureTrainingStep({ ...c, conditioningEmbeddingOutChannels: ce });
    const e = estimateMemory({ ...c, controlnet: ce ? { conditioning_embedding_out_channels: ce } : undefined });
    const fixed = e.device.parameters + e.device.gradients + e.device.optimizerStates;
    const row = {
      name, profile: e.profile, measured_mb: +(m.stepPeakBytes / 1e6).toFixed(1), predicted_mb: +(e.device.total / 1e6).toFixed(1),
      ratio: +(e.device.total / m.stepPeakBytes).toFixed(3),
      act_ratio: +((m.stepPeakBytes - fixed) / (e.device.activations + e.device.attention)).toFixed(3),
    };
    console.log(`[bench planner-fit] ${info.backend} ${name}: predicted ${row.predicted_mb} MB, measured ${row.measured_mb} MB (ratio ${row.ratio})`);
    rows.push(row);
  }
  return { bench: "planner-fit", engine: info.backend, rows };
}
