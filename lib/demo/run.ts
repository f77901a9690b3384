/**
 * `npm run demo` as a library function: the whole ControlNet story on the embedded tiny Stable Diffusion, on CPU,
 * in minutes.
 *
 *   1. load data/tiny-sd; create a ControlNet with ControlNetModel.fromUnet (zero convs: it changes nothing yet);
 *   2. measure control fidelity on a held-out set of synthetic fill50k conditioning images (IoU of the generated
 *      filled circle against the outline's disc, colour score) — the "before", i.e. the base model alone;
 *   3. train the ControlNet with ControlNetTrainer (train_controlnet.py's loop) on synthetic fill50k, printing
 *      step, loss, it/s and ETA; the trainer writes its JSON-lines log;
 *   4. save the ControlNet (a diffusers folder), a validation grid PNG (outline | before | after per row), the loss
 *      curve (SVG) and demo_report.json; measure fidelity again — the "after".
 */
import fs from "node:fs";
import path from "node:path";
import { tf } from "../engine/index.js";
import { ControlNetModel } from "../models/index.js";
import { checkProportionEmptyPrompts, createDataset, renderOutline, syntheticTruth, encodePng, toFloat } from "../data/index.js";
import type { RawImage } from "../data/types.js";
import { ControlNetTrainer, type StepReport } from "../training/trainer.js";
import { makeGrid, readJsonl } from "../training/tensorboard.js";
import { checkLrSchedulerName } from "../training/lr-schedulers.js";
import { parseControlMode, type ControlMode } from "../pipeline/index.js";
import { averageFidelity, suddenConvergenceStep, type ConvergencePoint, type FidelitySummary } from "../eval/fidelity.js";
import { renderLineChart } from "../../widgets/svg-chart.js";
import { DEFAULT_TINY_SD, TINY_SD_CONDITIONING_EMBEDDING, TINY_SD_CONDITIONING_SCALE, TINY_SD_CONTROL_MODE, TINY_SD_GUIDANCE_SCALE, loadTinySd, sampleControlled, type TinySd } from "./tiny-sd.js";
import { makeDirs } from "../io/dirs.js";

export interface DemoOptions {
  /** The base pipeline folder (default data/tiny-sd). */
  baseDir?: string;
  /** Where the ControlNet folder, grid, loss curve and report go (default out/demo-controlnet). */
  outputDir?: string;
  /** Optimizer steps (default 800: 3–5 minutes of training at batch 16 on two idle cores with the native engine,
   *  up to ~10 on wasm). Chosen for wasm's 10-minute budget: on 64 validation outlines the ControlNet's moving average, sampled with control mode
   *  "controlnet", scored 0.778 / 0.794 / 0.813 after 500 / 750 / 1000 steps. */
  steps?: number;
  batchSize?: number;
  learningRate?: number;
  seed?: number;
  /** Held-out conditioning images for the fidelity measurement (default 32). */
  evalCount?: number;
  /** Sampler steps for evaluation images (default 20, UniPC). */
  inferenceSteps?: number;
  /** Classifier-free guidance of the evaluation images (default TINY_SD_GUIDANCE_SCALE, 1.5). */
  guidanceScale?: number;
  /** ControlNet conditioning scale of the evaluation images (default TINY_SD_CONDITIONING_SCALE, 2). */
  conditioningScale?: number;
  /** Which halves of the guidance batch the ControlNet acts on in the evaluation images (default
   *  TINY_SD_CONTROL_MODE, "controlnet": the conditional half only). */
  controlMode?: ControlMode;
  /** The ControlNet's conditioning_embedding_out_channels (default TINY_SD_CONDITIONING_EMBEDDING): one entry per
   *  VAE downsampling plus one, as the embedding downsamples the outline to the latents' size. */
  conditioningEmbeddingOutChannels?: readonly number[];
  /** Train with a moving average of the ControlNet's weights and evaluate/save the average (default true; the
   *  trainer's use_ema). */
  useEma?: boolean;
  /** Share of training prompts replaced by "" (train_controlnet.py's --proportion_empty_prompts; default 0). */
  proportionEmptyPrompts?: number;
  /** diffusers' lr schedule name (default "constant"). */
  lrScheduler?: string;
  /** Warm-up steps of that schedule (default 0: train_controlnet.py's 500 would be the whole demo). */
  lrWarmupSteps?: number;
  /** Stop training at the first step boundary after this many seconds of training (the ControlNet is still saved
   *  and measured). Checked at step boundaries. */
  trainSeconds?: number;
  /** Skip the "before" measurement (tests). */
  skipBefore?: boolean;
  /** Track fidelity every this many steps on the first 8 held-out outlines (10 sampler steps), to find the step
   *  where it jumps; 0 = off. Default: steps / 8. */
  trackEvery?: number;
  log?: (line: string) => void;
  signal?: AbortSignal;
}

export interface DemoResult {
  outputDir: string;
  /** IoU on the tracking subset during training (step 0 = before), and the step where it jumped (null: no jump). */
  fidelityHistory: ConvergencePoint[];
  suddenConvergenceStep: number | null;
  before: FidelitySummary | null;
  after: FidelitySummary;
  steps: number;
  finalLoss: number | null;
  seconds: { before: number; train: number; after: number; total: number };
  files: { controlnet: string; grid: string; lossCurve: string; report: string; log: string };
}

/** The held-out set: rows of a synthetic fill50k with its own seed (never seen in training). */
export function heldOutSet(count: number, resolution: number, seed = 90_001) {
  return Array.from({ length: count }, (_, i) => {
    const t = syntheticTruth(seed, i, resolution);
    return { truth: t, outline: renderOutline(t), target: { cx: t.cx, cy: t.cy, r: t.r, fill: t.fillColor.rgb, background: t.bgColor.rgb } };
  });
}

function conditioningTensor(images: RawImage[]): tf.Tensor4D {
  const { width: w, height: h } = images[0]!;
  const data = new Float32Array(images.length * w * h * 3);
  images.forEach((img, k) => toFloat(img, "unit", data, k * w * h * 3));
  return tf.tensor4d(data, [images.length, h, w, 3]);
}

function fmt(s: FidelitySummary | null): string {
  if (!s) return "(skipped)";
  return `IoU ${s.iou.toFixed(3)}, colour ${s.colorScore.toFixed(3)} (fill ${s.fillScore.toFixed(3)}, background ${s.backgroundScore.toFixed(3)}), circles hit (IoU≥0.5) ${(100 * s.hitRate).toFixed(0)}%`;
}

/** A sampling scale: any finite number ≥ 0 (checked before the base loads, so a typo costs no minutes). */
function checkScale(name: string, v: number): number {
  if (!(Number.isFinite(v) && v >= 0)) throw new Error(`${name} must be a finite number ≥ 0 (got ${v})`);
  return v;
}

type EvalOptions = Required<Pick<DemoOptions, "inferenceSteps" | "guidanceScale" | "conditioningScale" | "controlMode" | "seed">>;

async function evaluate(sd: TinySd, controlnet: ControlNetModel, set: ReturnType<typeof heldOutSet>, o: EvalOptions) {
  const cond = conditioningTensor(set.map((s) => s.outline));
  try {
    const images = await sampleControlled(sd, controlnet, {
      prompts: set.map((s) => s.truth.prompt), conditioning: cond, steps: o.inferenceSteps, guidanceScale: o.guidanceScale,
      conditioningScale: o.conditioningScale, controlMode: o.controlMode, seed: o.seed,
    });
    return { images, summary: averageFidelity(images.map((image, i) => ({ image, target: set[i]!.target }))) };
  } finally {
    cond.dispose();
  }
}

/** Loss (raw and smoothed) against step, as an SVG line chart. */
export function lossCurveSvg(points: Array<{ step: number; loss: number }>): string {
  const x = points.map((p) => p.step);
  const y = points.map((p) => p.loss);
  const smooth: number[] = [];
  let m = y[0] ?? 0;
  for (const v of y) smooth.push((m = 0.9 * m + 0.1 * v));
  return renderLineChart(
    [{ title: "training loss", lines: [
      { name: "loss", x, y, color: "#1f77b4", opacity: 0.3, hideLegend: true },
      { name: "loss (smoothed)", x, y: smooth, color: "#1f77b4" },
    ] }],
    { title: "ControlNet demo", xLabel: "step" },
  );
}

/** The conditioning embedding must bring the outline down to the latents' size: one stride-2 stage per ×2 of the VAE. */
function checkEmbedding(channels: readonly number[], vaeFactor: number): number[] {
  const want = Math.log2(vaeFactor) + 1;
  if (channels.length !== want || !channels.every((c) => Number.isInteger(c) && c > 0)) {
    throw new Error(`conditioningEmbeddingOutChannels must be ${want} positive integers for a ×${vaeFactor} VAE (got [${channels.join(", ")}])`);
  }
  return [...channels];
}

export async function runDemo(opts: DemoOptions = {}): Promise<DemoResult> {
  const log = opts.log ?? ((l: string) => console.log(l));
  const t0 = performance.now();
  const outputDir = path.resolve(opts.outputDir ?? "out/demo-controlnet");
  // the training settings, defaults filled once (the trainer and the report both take them); the two knobs the
  // trainer would only check after the base is loaded and the "before" images are sampled are checked here
  const train = {
    batchSize: opts.batchSize ?? 16, learningRate: opts.learningRate ?? 1e-3,
    lrScheduler: checkLrSchedulerName(opts.lrScheduler ?? "constant"), lrWarmupSteps: opts.lrWarmupSteps ?? 0,
    proportionEmptyPrompts: checkProportionEmptyPrompts(opts.proportionEmptyPrompts ?? 0), useEma: opts.useEma ?? true,
  };
  const steps = opts.steps ?? 800;
  const seed = opts.seed ?? 42;
  const evalOpts = {
    inferenceSteps: opts.inferenceSteps ?? 20, seed,
    guidanceScale: checkScale("guidanceScale", opts.guidanceScale ?? TINY_SD_GUIDANCE_SCALE),
    conditioningScale: checkScale("conditioningScale", opts.conditioningScale ?? TINY_SD_CONDITIONING_SCALE),
    controlMode: parseControlMode(opts.controlMode ?? TINY_SD_CONTROL_MODE),
  };
  const sd = loadTinySd(opts.baseDir ?? DEFAULT_TINY_SD);
  const r = sd.resolution;
  const embedding = checkEmbedding(opts.conditioningEmbeddingOutChannels ?? TINY_SD_CONDITIONING_EMBEDDING, sd.vae.scaleFactor);
  makeDirs(outputDir);
  // a previous run's log would be appended to: start clean
  fs.rmSync(path.join(outputDir, "logs"), { recursive: true, force: true });
  log(`base: ${sd.dir} (${r}×${r} pixels, latents ${r / sd.vae.scaleFactor}×${r / sd.vae.scaleFactor})`);
  const controlnet = ControlNetModel.fromUnet(sd.unet, { conditioningEmbeddingOutChannels: embedding, seed });
  const set = heldOutSet(opts.evalCount ?? 32, r);

  let before: FidelitySummary | null = null;
  let beforeImages: RawImage[] = [];
  let tb = performance.now();
  if (!opts.skipBefore) {
    const e = await evaluate(sd, controlnet, set, evalOpts);
    before = e.summary;
    beforeImages = e.images;
    log(`fidelity BEFORE training (${set.length} held-out outlines): ${fmt(before)}`);
  }
  const beforeSeconds = (performance.now() - tb) / 1000;

  const dataset = await createDataset({ synthetic: { count: 50_000, seed }, resolution: r, seed });
  const trainer = new ControlNetTrainer(
    { unet: sd.unet, controlnet, vae: sd.vae, textEncoder: sd.textEncoder, tokenize: (t) => sd.tokenizer.tokenize(t, sd.tokenizer.modelMaxLength), noiseScheduler: sd.noiseScheduler },
    dataset,
    {
      output_dir: outputDir, seed, resolution: r, train_batch_size: train.batchSize, max_train_steps: steps,
      learning_rate: train.learningRate, lr_scheduler: train.lrScheduler, lr_warmup_steps: train.lrWarmupSteps, checkpointing_steps: 1_000_000,
      adam_weight_decay: 0, proportion_empty_prompts: train.proportionEmptyPrompts, use_ema: train.useEma,
    },
  );
  const trackEvery = opts.trackEvery ?? Math.max(1, Math.round(steps / 8));
  const trackSet = set.slice(0, 8);
  const history: ConvergencePoint[] = [];
  let trackSeconds = 0;
  const track = async (step: number) => {
    const t = performance.now();
    const e = await evaluate(sd, controlnet, trackSet, { ...evalOpts, inferenceSteps: 10 });
    history.push({ step, iou: e.summary.iou });
    trackSeconds += (performance.now() - t) / 1000;
    log(`  fidelity at step ${step} (${trackSet.length} outlines, 10 sampler steps): IoU ${e.summary.iou.toFixed(3)}, colour ${e.summary.colorScore.toFixed(3)}`);
  };
  // the clock starts before the step-0 measurement, whose time goes to trackSeconds like the others (started after
  // it, the first progress lines showed a negative rate)
  const tt = performance.now();
  if (trackEvery > 0) await track(0);
  let shown = 0;
  const budget = new AbortController();
  const onStep = async (s: StepReport) => {
    if (trackEvery > 0 && s.step % trackEvery === 0) await track(s.step);
    const el = (performance.now() - tt) / 1000 - trackSeconds;
    if (opts.trainSeconds !== undefined && el >= opts.trainSeconds && !budget.signal.aborted) {
      budget.abort();
      log(`training budget of ${opts.trainSeconds}s reached at step ${s.step}`);
    }
    const rate = s.step / el;
    if (s.step === s.maxSteps || performance.now() - shown > 2000) {
      shown = performance.now();
      log(`step ${s.step}/${s.maxSteps}  loss ${s.loss.toFixed(4)}  ${rate.toFixed(2)} it/s  ETA ${((s.maxSteps - s.step) / rate).toFixed(0)}s`);
    }
  };
  let result;
  try {
    const signal = opts.signal ? AbortSignal.any([opts.signal, budget.signal]) : budget.signal;
    result = await trainer.train({ onStep, signal });
    trainer.saveFinal();
  } finally {
    await trainer.close();
  }
  const trainSeconds = (performance.now() - tt) / 1000 - trackSeconds;
  log(`trained ${result.globalStep} steps in ${trainSeconds.toFixed(0)}s (+${trackSeconds.toFixed(0)}s of fidelity tracking) → ${outputDir}`);
  const jump = suddenConvergenceStep(history);
  log(history.length === 0 ? "control fidelity was not tracked during training"
    : jump === null ? "control fidelity did not jump during training (no sudden convergence in this budget)" : `control fidelity jumped at step ${jump} ("sudden convergence")`);

  tb = performance.now();
  const after = await evaluate(sd, controlnet, set, evalOpts);
  const afterSeconds = (performance.now() - tb) / 1000;
  log(`fidelity AFTER training: ${fmt(after.summary)}`);

  // grid: each row = outline, before (if measured), after, for the first 8 held-out rows
  const n = Math.min(8, set.length);
  const cells: Uint8Array[] = [];
  for (let i = 0; i < n; i++) {
    cells.push(set[i]!.outline.data);
    if (beforeImages[i]) cells.push(beforeImages[i]!.data);
    cells.push(after.images[i]!.data);
  }
  const perRow = beforeImages.length ? 3 : 2;
  const grid = makeGrid(cells, r, r, 3, perRow * 2);
  const gridFile = path.join(outputDir, "validation_grid.png");
  fs.writeFileSync(gridFile, await encodePng({ data: grid.pixels, width: grid.width, height: grid.height, channels: 3 }));

  const logFile = path.join(outputDir, "logs", "train_log.jsonl");
  const points = readJsonl(logFile).map((e) => ({ step: Number(e.step), loss: Number(e.loss) }));
  const curveFile = path.join(outputDir, "loss_curve.svg");
  fs.writeFileSync(curveFile, lossCurveSvg(points));

  const seconds = { before: beforeSeconds, train: trainSeconds, after: afterSeconds, total: (performance.now() - t0) / 1000 };
  const strip = (s: FidelitySummary | null) => s && { ...s, scores: s.scores.map((x) => ({ ...x })) };
  const reportFile = path.join(outputDir, "demo_report.json");
  fs.writeFileSync(reportFile, JSON.stringify({
    base: sd.dir, steps: result.globalStep, ...train, seed,
    evalCount: set.length, inferenceSteps: evalOpts.inferenceSteps, guidanceScale: evalOpts.guidanceScale,
    conditioningScale: evalOpts.conditioningScale, controlMode: evalOpts.controlMode, conditioningEmbeddingOutChannels: embedding,
    before: strip(before), after: strip(after.summary), finalLoss: result.lastLoss, seconds,
    fidelityHistory: history, suddenConvergenceStep: jump,
  }, null, 2) + "\n");
  log(`wrote ${gridFile}, ${curveFile}, ${reportFile} (total ${seconds.total.toFixed(0)}s)`);
  await dataset.close();
  return {
    outputDir, before, after: after.summary, steps: result.globalStep, finalLoss: result.lastLoss, seconds,
    fidelityHistory: history, suddenConvergenceStep: jump,
    files: { controlnet: outputDir, grid: gridFile, lossCurve: curveFile, report: reportFile, log: logFile },
  };
}
