/**
 * `npm run demo [-- --steps 800 --out out/demo-controlnet --minutes M]`: trains a ControlNet on the embedded tiny
 * Stable Diffusion (data/tiny-sd) and prints control fidelity before and after. See lib/demo/run.ts.
 * Knobs for experiments: USAGE below (`npm run demo -- --help`).
 */
import { scriptArgs } from "./_cli.js";
import { initEngine, describeEngine } from "../lib/engine/index.js";
import { runDemo } from "../lib/demo/run.js";
import type { ControlMode } from "../lib/pipeline/index.js";

const USAGE = `usage: npm run demo -- [options]

  Trains a ControlNet on the embedded tiny Stable Diffusion (data/tiny-sd) and prints its control fidelity
  (IoU of the generated disc vs the conditioning circle) before and after.

options:
  --out DIR                              where the ControlNet, grids, loss curve and report go (default out/demo-controlnet)
  --steps N                              training steps (default 800)
  --minutes M                            stop training at the first step after M minutes (the ControlNet is still saved)
  --base DIR                             the base model (default data/tiny-sd)
  --batch-size N, --lr LR, --seed N      training batch, learning rate, seed (defaults 16, 1e-3, 42)
  --lr-scheduler NAME                    diffusers' scheduler names, with --lr-warmup-steps N (default 0)
  --proportion-empty-prompts P           share of empty prompts in training
  --conditioning-embedding-channels A,B,C  the ControlNet's conditioning_embedding_out_channels
  --no-ema                               train and evaluate without the weights' moving average
  --guidance-scale G                     evaluation's classifier-free guidance (default 1.5)
  --controlnet-conditioning-scale S      evaluation's conditioning scale (default 2)
  --control-mode balanced|controlnet     the ControlNet on both halves of the guidance batch, or the conditional one (default)
  --eval-count N                         held-out outlines scored before and after (default 32)
  --track-every N                        score a few outlines every N steps (0 = off; default steps / 8)
  --skip-before                          skip the "before" evaluation
  -h, --help                             print this and exit

environment: CONTROLNET_TS_BACKEND (node-gpu | node | wasm | cpu), CONTROLNET_TS_THREADS`;

const values = scriptArgs(USAGE, {
    out: { type: "string", default: "out/demo-controlnet" },
    base: { type: "string" },
    steps: { type: "string" },
    "batch-size": { type: "string" },
    lr: { type: "string" },
    seed: { type: "string" },
    "eval-count": { type: "string" },
    minutes: { type: "string" },
    "track-every": { type: "string" },
    "skip-before": { type: "boolean", default: false },
    "no-ema": { type: "boolean", default: false },
    "guidance-scale": { type: "string" },
    "controlnet-conditioning-scale": { type: "string" },
    "control-mode": { type: "string" },
    "proportion-empty-prompts": { type: "string" },
    "lr-scheduler": { type: "string" },
    "lr-warmup-steps": { type: "string" },
    "conditioning-embedding-channels": { type: "string" },
});
const num = (v: string | undefined) => (v === undefined ? undefined : Number(v));
// The tiny SD's ops are too small for TensorFlow's thread pool: on the native engine the demo runs them on one thread
// (faster than 2 here, and than wasm's 2; see EngineOptions.nativeThreads) unless CONTROLNET_TS_THREADS says otherwise.
console.log(describeEngine(await initEngine({ nativeThreads: process.env.CONTROLNET_TS_THREADS ? undefined : 1 })));
const ac = new AbortController();
process.once("SIGINT", () => ac.abort());
// --minutes: stop training at the first step boundary after that much training time (the ControlNet is still saved)
const minutes = num(values.minutes);
const r = await runDemo({
  outputDir: values.out, baseDir: values.base, steps: num(values.steps), batchSize: num(values["batch-size"]),
  learningRate: num(values.lr), seed: num(values.seed), evalCount: num(values["eval-count"]),
  skipBefore: values["skip-before"], useEma: !values["no-ema"], trackEvery: num(values["track-every"]), signal: ac.signal,
  guidanceScale: num(values["guidance-scale"]), conditioningScale: num(values["controlnet-conditioning-scale"]),
  controlMode: values["control-mode"] as ControlMode | undefined,
  proportionEmptyPrompts: num(values["proportion-empty-prompts"]),
  conditioningEmbeddingOutChannels: values["conditioning-embedding-channels"]?.split(",").map(Number),
  lrScheduler: values["lr-scheduler"], lrWarmupSteps: num(values["lr-warmup-steps"]), trainSeconds: minutes === undefined ? undefined : minutes * 60,
});
console.log(`\ncontrol fidelity on ${r.after.count} held-out outlines:`);
if (r.before) console.log(`  before: IoU ${r.before.iou.toFixed(3)}  colour ${r.before.colorScore.toFixed(3)}`);
console.log(`  after:  IoU ${r.after.iou.toFixed(3)}  colour ${r.after.colorScore.toFixed(3)}  (${r.steps} steps, ${r.seconds.total.toFixed(0)} s in all)`);
console.log(r.fidelityHistory.length === 0
  ? "  fidelity was not tracked during training (--track-every 0)"
  : r.suddenConvergenceStep === null
  ? "  fidelity did not jump during training (see fidelityHistory in demo_report.json)"
  : `  fidelity jumped at step ${r.suddenConvergenceStep} (the "sudden convergence"; history in demo_report.json)`);
