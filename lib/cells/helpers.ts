/**
 * The notebook's cell helpers — the seed README as re-runnable cells (notebook-walkthrough.md):
 *   dataset() → baseModel() → controlnet() → train({ until }) → validate() / infer() → save() / pushToHub().
 * Same arguments → the cached result (one line says so); changed arguments → recomputed. Training state lives on
 * disk: after a kernel restart, train() resumes from the latest checkpoint in its output folder.
 */
import fs from "node:fs";
import path from "node:path";
import sharp from "sharp";
import { engineInfo, initEngine, memoryInfo, tf, trackPeak } from "../engine/index.js";
import { estimateMemory as planEstimate, plannedDeviceBytes } from "../planner/index.js";
import { createDataset, encodePng, resizeCenterCrop, type ControlNetDataset, type RawImage } from "../data/index.js";
import type { ControlMode } from "../pipeline/index.js";
import { heldOutSet } from "../demo/run.js";
import type { ControlNetModel } from "../models/index.js";
import { loadBaseModel, loadOrCreateControlNet, type BaseModel } from "../training/base.js";
import { ArgsError, checkLrScheduler, validateTrainingNumbers, type TrainArgs } from "../training/args.js";
import { ControlNetTrainer, type TrainingOptions, type TrainResult } from "../training/trainer.js";
import { RUN_FOLDER_PUSH_IGNORE } from "../training/run.js";
import { enclosingCheckpoint, listCheckpoints } from "../training/checkpoints.js";
import type { EMAModel } from "../training/ema.js";
import { checkValidationImages, pairValidation, runValidation, type ValidationResult } from "../training/validation.js";
import { uploadFolder } from "../io/hub.js";
import { cardTrainedSteps, writeModelCardSync, type CardTraining } from "../training/model-card.js";
import { JsonlLogger, readJsonl } from "../training/tensorboard.js";
import { ImageGrid, TrainingDashboard } from "../../widgets/index.js";
import { abortSignal, JUPYTER_DISPLAY, onKernelShutdown } from "./display.js";
import { memo } from "./memo.js";
import { DATASET_CELL_OPTIONS, trainInProcesses } from "./processes.js";
import { chooseRunDir, identityOf, isDisposed, nameModel, RUN_FILE, runDirOf } from "./runs.js";
import { makeDirs } from "../io/dirs.js";

/**
 * Attaches a Jupyter rendering (`Symbol.for("Jupyter.display")`) to a helper's result. It stays out of the static type
 * so a notebook cell can export the value without naming the symbol (tslab emits declarations for cells).
 */
type WithDisplay<T> = T;
function withDisplay<T extends object>(value: T, bundle: () => Record<string, unknown>): WithDisplay<T> {
  Object.defineProperty(value, JUPYTER_DISPLAY, { value: bundle, enumerable: false, configurable: true });
  return value;
}

export interface DatasetCellOptions {
  /** A hub dataset id or local snapshot (e.g. "fusing/fill50k"). */
  name?: string;
  trainDataDir?: string;
  /** The embedded synthetic fill50k (offline). */
  synthetic?: { count?: number; seed?: number };
  resolution?: number;
  maxTrainSamples?: number;
  imageColumn?: string;
  conditioningImageColumn?: string;
  captionColumn?: string;
  proportionEmptyPrompts?: number;
  /** Seed of maxTrainSamples' shuffle (default 0); the data order, noise and timesteps are train()'s `seed`. The
   *  cells keep fixed default seeds, unlike the command line's random one for an unset --seed: a re-run cell (or a
   *  restarted kernel) must name the same model and resume the same run folder. */
  seed?: number;
}

/** The training data, shown as a grid of 8 rows (conditioning | target | prompt). */
export async function dataset(o: DatasetCellOptions): Promise<WithDisplay<ControlNetDataset>> {
  if (o.resolution !== undefined) checkResolution("dataset", o.resolution);
  const count = o.synthetic?.count;
  if (count !== undefined && !(Number.isSafeInteger(count) && count >= 1)) throw new ArgsError(`dataset: synthetic.count must be a positive integer, got ${count}`);
  return memo("dataset", o, async () => {
    const ds = await createDataset({
      ...(o.synthetic ? { synthetic: { count: o.synthetic.count ?? 50_000, seed: o.synthetic.seed ?? 0 } } : {}),
      dataset_name: o.name, train_data_dir: o.trainDataDir, resolution: o.resolution ?? 512,
      max_train_samples: o.maxTrainSamples, image_column: o.imageColumn, conditioning_image_column: o.conditioningImageColumn,
      caption_column: o.captionColumn, proportion_empty_prompts: o.proportionEmptyPrompts, seed: o.seed,
    });
    Object.defineProperty(ds, DATASET_CELL_OPTIONS, { value: { ...o }, enumerable: false }); // for train({ processes })
    // one row per sample, its prompt under its own pair of images
    const rows = [];
    for (let i = 0; i < Math.min(8, ds.length); i++) {
      const p = await ds.preview(i);
      const png = (img: RawImage) => sharp(img.data, { raw: { width: img.width, height: img.height, channels: 3 } }).png().toBuffer();
      rows.push({
        images: [new Uint8Array(await png(p.conditioning_image)), new Uint8Array(await png(p.image))],
        labels: ["conditioning", "target"],
        caption: Array.isArray(p.text) ? p.text.join(" | ") : p.text,
      });
    }
    const grid = new ImageGrid({ title: ds.description, rows, thumbWidth: 96 });
    return withDisplay(ds, () => grid.bundle());
  }, { dispose: (old) => void (old as ControlNetDataset).close() });
}

/** A frozen Stable Diffusion base (a diffusers pipeline folder or hub id). */
export async function baseModel(nameOrPath: string): Promise<WithDisplay<BaseModel>> {
  if (typeof nameOrPath !== "string" || !nameOrPath.trim()) throw new ArgsError(`baseModel: give a diffusers pipeline folder or a hub id (org/name), got ${JSON.stringify(nameOrPath)}`);
  await initEngine();
  // one folder however it is spelled ("data/tiny-sd/", "./data/tiny-sd"): the same cached base
  const key = fs.existsSync(nameOrPath) ? path.resolve(nameOrPath) : nameOrPath;
  return memo(`baseModel`, key, async () => {
    const b = await loadBaseModel(nameOrPath);
    const rows: [string, number][] = [["unet", b.unet.numParameters()], ["vae", b.vae.numParameters()], ["text_encoder", b.textEncoder.numParameters()]];
    return withDisplay(b, () => ({
      "text/plain": `${b.dir}\n` + rows.map(([k, n]) => `  ${k.padEnd(13)} ${n.toLocaleString("en-US")} parameters`).join("\n"),
    }));
  }, {
    // the cell run again with another base frees the one it made (a whole SD1.5 is ~4 GB); a trainer on it closes first
    dispose: async (old) => {
      const b = old as BaseModel;
      if (session?.base === b) await closeSession();
      for (const m of [b.unet, b.vae, b.textEncoder]) m.dispose();
    },
  });
}

function assertBaseUsable(base: BaseModel, cell: string): void {
  if (base.unet.materialized) return;
  throw new ArgsError(`${cell}: this base model's weights were freed when the baseModel() cell ran again with other arguments; pass the base that cell returns now.`);
}

/** A ControlNet initialised from the base UNet, or loaded from a folder / hub id. Re-running the cell with other
 *  arguments frees the model that cell made before (after writing a checkpoint of its training, if it has unsaved
 *  steps); a ControlNet made in another cell stays (memo.ts: cells as the client names them). */
export async function controlnet(o: { from: BaseModel; pretrained?: string;
  /** from_unet's initialisation seed (default 1, fixed: the model's name in its run folder includes it). */
  seed?: number;
  /** conditioning_embedding_out_channels (one entry per VAE downsampling plus one; default SD's, cut to fit). */
  conditioningEmbeddingOutChannels?: number[] }): Promise<WithDisplay<ControlNetModel>> {
  assertBaseUsable(o.from, "controlnet");
  return memo("controlnet", o, async () => {
    const cn = await loadOrCreateControlNet(o.from, o.pretrained, { seed: o.seed ?? 1, conditioningEmbeddingOutChannels: o.conditioningEmbeddingOutChannels });
    nameModel(cn, o.pretrained ? { pretrained: o.pretrained } : { base: o.from.dir, seed: o.seed ?? 1, embedding: o.conditioningEmbeddingOutChannels });
    cards.set(cn, { base: o.from.name });
    return withDisplay(cn, () => ({ "text/plain": `ControlNetModel: ${cn.numParameters().toLocaleString("en-US")} parameters (${identityOf(cn).label})` }));
  }, {
    dispose: async (old) => {
      if (session?.controlnet === old) await closeSession();
      keepAverage(old as ControlNetModel, null);
      (old as ControlNetModel).dispose();
    },
  });
}

/** How validation and inference images are sampled (see ValidationOptions). */
export interface SamplingOptions {
  guidanceScale?: number;
  conditioningScale?: number;
  controlMode?: ControlMode;
}

export interface TrainCellOptions {
  base: BaseModel;
  controlnet: ControlNetModel;
  dataset: ControlNetDataset;
  /** Train until this global step; re-running with a larger value continues. */
  until: number;
  outputDir?: string;
  batchSize?: number;
  learningRate?: number;
  gradientAccumulationSteps?: number;
  gradientCheckpointing?: boolean;
  use8bitAdam?: boolean;
  offloadOptimizerState?: boolean;
  attentionChunkSize?: number;
  /** The run's length as the command line's --max_train_steps: the horizon a decaying lrScheduler (linear, cosine,
   *  polynomial) spreads over. Unset, the run has no planned end (UNPLANNED_STEPS; the result's maxSteps says so)
   *  and `until` alone says where each cell stops — right for the default constant schedule. */
  maxTrainSteps?: number;
  lrScheduler?: string;
  lrWarmupSteps?: number;
  /** The training seed (noise, timesteps, data order; default 0, fixed so a re-run cell resumes its run). */
  seed?: number;
  /** Keep a moving average of the ControlNet's weights (the trainer's use_ema): while this session trains it,
   *  validate() samples with the average and save() writes the average; training goes on from the live weights. */
  useEma?: boolean;
  emaDecay?: number;
  validation?: { images: string[]; prompts: string[]; every: number; steps?: number; numImages?: number } & SamplingOptions;
  checkpointing?: { every: number; totalLimit?: number };
  /** Train on this many worker processes (data parallel, `controlnet-ts launch`; lib/cells/processes.ts). */
  processes?: number;
  /** With `processes`: intra-op threads per process (default CPUs ÷ processes) and the first port. */
  threadsPerProcess?: number;
  mainProcessPort?: number;
}

/** The run length of a train() cell that names no maxTrainSteps: "no planned end" (the trainer needs a number). */
const UNPLANNED_STEPS = 1_000_000;

/** What train() returns: the trainer's result and the run folder it trained in (see runs.ts). */
export type TrainCellResult = TrainResult & { outputDir: string };

/** The training session: one trainer for one ControlNet object. `savedStep` is the step of its last checkpoint (so a
 *  session closed with unsaved steps writes one first: the model's weights are never set back by a later resume). */
let session: { key: string; trainer: ControlNetTrainer; base: BaseModel; controlnet: ControlNetModel; savedStep: number; dashboard: TrainingDashboard | null } | null = null;

let shutdownHooked = false;

async function closeSession(): Promise<void> {
  if (!session) return;
  const s = session;
  session = null;
  try {
    if (s.trainer.globalStep > s.savedStep && !isDisposed(s.controlnet)) {
      const dir = await s.trainer.checkpoint();
      console.log(`train: wrote ${dir} (step ${s.trainer.globalStep}) before closing the trainer, so no trained step is lost.`);
    }
  } finally {
    // also when that checkpoint fails: the trainer's files and writers are released; the model's moving average
    // stays with the model, so validate() and save() keep using it
    const keep = s.trainer.ema !== null && !isDisposed(s.controlnet);
    if (keep) keepAverage(s.controlnet, s.trainer.ema);
    await s.trainer.close({ keepEma: keep });
  }
}

const datasetIds = new WeakMap<ControlNetDataset, number>();
let datasetCount = 0;
/** A number per dataset object (for the session key). */
function datasetId(ds: ControlNetDataset): number {
  let id = datasetIds.get(ds);
  if (id === undefined) datasetIds.set(ds, (id = ++datasetCount));
  return id;
}

/** What a saved ControlNet's model card says: its base (the controlnet() cell's), and how train() trained it. */
const cards = new WeakMap<ControlNetModel, { base: string; training?: Omit<CardTraining, "steps">; steps?: number }>();

function recordTraining(o: TrainCellOptions, steps: number): void {
  cards.set(o.controlnet, {
    base: o.base.name, steps,
    training: { data: o.dataset.description, batchSize: o.batchSize ?? 4, accumulation: o.gradientAccumulationSteps ?? 1,
      learningRate: o.learningRate ?? 1e-5, resolution: o.dataset.resolution },
  });
}

/** The moving averages of models whose trainer was closed (resetTraining(), another model's train()). */
const averages = new WeakMap<ControlNetModel, EMAModel>();

/** Keeps (or, with null, frees) the average of `cn`'s weights that its closed trainer kept. */
function keepAverage(cn: ControlNetModel, ema: EMAModel | null): void {
  const old = averages.get(cn);
  if (old && old !== ema) old.dispose();
  if (ema) averages.set(cn, ema);
  else averages.delete(cn);
}

/** The moving average of `cn`'s weights when its training kept one (useEma), else null. */
function averageOf(cn: ControlNetModel): EMAModel | null {
  return session?.controlnet === cn ? session.trainer.ema : averages.get(cn) ?? null;
}

/** The steps `cn` was trained for in this kernel (its trainer's, or what its last train() left). */
function stepsOf(cn: ControlNetModel): number {
  return session?.controlnet === cn ? session.trainer.globalStep : cards.get(cn)?.steps ?? 0;
}

/** A train() cell's options as the trainer takes them (the command line's names, the cell's defaults), for a run in
 *  `outputDir`. */
function trainingOptions(o: TrainCellOptions, until: number, outputDir: string): TrainingOptions {
  return {
    output_dir: outputDir, resolution: o.dataset.resolution, train_batch_size: o.batchSize ?? 4,
    learning_rate: o.learningRate ?? 1e-5, gradient_accumulation_steps: o.gradientAccumulationSteps ?? 1,
    gradient_checkpointing: o.gradientCheckpointing, use_8bit_adam: o.use8bitAdam, offload_optimizer_state: o.offloadOptimizerState,
    attention_chunk_size: o.attentionChunkSize, max_train_steps: o.maxTrainSteps ?? Math.max(until, UNPLANNED_STEPS),
    lr_scheduler: o.lrScheduler ?? "constant", lr_warmup_steps: o.lrWarmupSteps ?? 0, seed: o.seed ?? 0,
    // the dataset() cell's (the trainer's loader would otherwise draw with its own default, 0)
    proportion_empty_prompts: o.dataset.proportionEmptyPrompts,
    checkpointing_steps: o.checkpointing?.every ?? 500, checkpoints_total_limit: o.checkpointing?.totalLimit ?? null,
    use_ema: o.useEma, ema_decay: o.emaDecay,
  };
}

/** The train() cell's names of the command line's options (in its messages). */
const CELL_OPTION_NAMES = {
  learning_rate: "learningRate", train_batch_size: "batchSize", gradient_accumulation_steps: "gradientAccumulationSteps",
  max_train_steps: "maxTrainSteps", lr_warmup_steps: "lrWarmupSteps", seed: "seed", ema_decay: "emaDecay",
  checkpointing_steps: "checkpointing.every", checkpoints_total_limit: "checkpointing.totalLimit",
} as const;

/**
 * Trains with a live dashboard. Idempotent: a finished `until` does nothing; a larger `until` continues; other
 * changed options start a new trainer (which resumes from the latest checkpoint of this model's run, as after a
 * restart). The run belongs to the ControlNet object: the same object continues; another ControlNet is another run,
 * in its own folder when `outputDir` holds someone else's (runs.ts) — one line says where.
 * An interrupt stops at the next step boundary and writes a checkpoint.
 */
export async function train(o: TrainCellOptions): Promise<TrainCellResult> {
  const running = trainCell(o);
  inFlight = running;
  try {
    return await running;
  } finally {
    if (inFlight === running) inFlight = null;
  }
}

/** The train() call still running (a kernel shutdown first waits for it: an interrupted train() writes its checkpoint
 *  after the kernel stopped waiting for the cell, and closing the session meanwhile wrote the same one twice). */
let inFlight: Promise<unknown> | null = null;

async function trainCell(o: TrainCellOptions): Promise<TrainCellResult> {
  const { until, ...rest } = o;
  // the cell's own numbers; the trainer checks the options it is given with the command line's ranges
  if (!Number.isSafeInteger(until) || until < 0) throw new ArgsError(`train: until must be an integer >= 0, got ${until}`);
  if (o.processes !== undefined && !(Number.isSafeInteger(o.processes) && o.processes >= 1)) {
    throw new ArgsError(`train: processes must be a positive integer, got ${o.processes}`);
  }
  const asked = path.resolve(o.outputDir ?? "outputs/controlnet");
  // the trainer's ranges, named as the cell names them, before anything changes: a refused option must not have
  // closed the running trainer first
  validateTrainingNumbers(trainingOptions(o, until, asked) as Partial<Record<keyof TrainArgs, unknown>>,
    (k) => `train: ${CELL_OPTION_NAMES[k as keyof typeof CELL_OPTION_NAMES] ?? k}`);
  if (o.lrScheduler !== undefined) checkLrScheduler(o.lrScheduler, "train: lrScheduler");
  if (o.maxTrainSteps === undefined && !/^constant/.test(o.lrScheduler ?? "constant")) {
    console.log(`train: lrScheduler "${o.lrScheduler}" decays over maxTrainSteps, which is not set: it spans ` +
      `${UNPLANNED_STEPS.toLocaleString("en")} steps, so the rate barely moves. Pass maxTrainSteps (the run's planned length).`);
  }
  if (o.validation) {
    validateTrainingNumbers({ validation_steps: o.validation.every }, () => "train: validation.every");
    validationPairs("train: validation", o.validation.images, o.validation.prompts); // before any step, not at the first round
  }
  assertUsable(o.controlnet, "train");
  assertBaseUsable(o.base, "train");
  // The model's weights carry the steps of the run it trained in: in another folder its step count would restart at
  // 0 (a mislabelled run), and going back would resume an older checkpoint over the newer weights.
  // (`<asked>-2` … is where runs.ts puts this model when `asked` holds another's: the same request)
  const current = runDirOf(o.controlnet);
  const askedHere = (dir: string) => dir === asked || (dir.startsWith(`${asked}-`) && /^\d+$/.test(dir.slice(asked.length + 1)));
  if (current && !askedHere(current)) {
    const step = listCheckpoints(current).at(-1)?.step;
    throw new ArgsError(`train: this ControlNet trains in ${current}${step ? ` (step ${step})` : ""}; its weights carry that run's steps. ` +
      `Continue it there (outputDir: ${JSON.stringify(current)}), or make another ControlNet with controlnet() for a run in ${asked}.`);
  }
  if (o.processes && o.processes > 1) {
    if (o.validation) console.log("train: with processes, validation runs in its own cell (validate()) after training");
    await closeSession(); // the next in-process train() resumes from the processes' checkpoint
    // the run belongs to the ControlNet as in process (runs.ts): another model's checkpoints are never resumed
    const run = chooseRunDir(o.controlnet, asked);
    if (run.note) console.log(run.note);
    const r = await trainInProcesses({
      ...o, processes: o.processes, outputDir: run.dir, batchSize: o.batchSize ?? 4, learningRate: o.learningRate ?? 1e-5,
      gradientAccumulationSteps: o.gradientAccumulationSteps ?? 1, maxTrainSteps: o.maxTrainSteps ?? Math.max(until, UNPLANNED_STEPS),
      lrScheduler: o.lrScheduler ?? "constant", lrWarmupSteps: o.lrWarmupSteps ?? 0, seed: o.seed ?? 0,
    });
    recordTraining(o, r.globalStep);
    return { ...r, outputDir: run.dir };
  }
  // the dataset object itself: a re-run dataset() cell with other options (a seed, empty prompts) is another dataset
  // even when its description reads the same
  const key = JSON.stringify({ ...rest, base: o.base.dir, controlnet: undefined, dataset: datasetId(o.dataset), outputDir: asked });
  if (o.validation) await checkValidationImages(o.validation.images);
  if (!session || session.controlnet !== o.controlnet || session.key !== key) {
    if (session) {
      console.log(session.controlnet === o.controlnet
        ? "train: options changed — starting a new trainer for this ControlNet (resuming from its latest checkpoint)."
        : `train: another ControlNet (${identityOf(o.controlnet).label}) — closing the trainer of ${identityOf(session.controlnet).label}.`);
      await closeSession();
    }
    const run = chooseRunDir(o.controlnet, asked);
    if (run.note) console.log(run.note);
    const trainer = new ControlNetTrainer({
      unet: o.base.unet, controlnet: o.controlnet, vae: o.base.vae, textEncoder: o.base.textEncoder,
      noiseScheduler: o.base.noiseScheduler, tokenize: (t) => o.base.tokenizer.tokenize(t),
    }, o.dataset, {
      ...trainingOptions(o, until, run.dir),
      // the folder is this model's run (chooseRunDir), so its latest checkpoint is this model's: named, so that
      // changed options (a learning rate, the batch after processes) continue it with a warning instead of refusing
      resume_from_checkpoint: listCheckpoints(run.dir).at(-1)?.path ?? "latest",
    });
    // the new trainer resumed the average from the checkpoint (or keeps none): the closed trainer's is done
    keepAverage(o.controlnet, null);
    session = { key, trainer, base: o.base, controlnet: o.controlnet, savedStep: trainer.globalStep, dashboard: null };
    // a kernel shutdown or restart (the kernel first stops a running train() at a step boundary) checkpoints the
    // steps trained since the last checkpoint, as closing the session does: a restart no longer throws them away
    shutdownHooked ||= onKernelShutdown(async () => {
      await inFlight?.catch(() => undefined);
      await closeSession();
    });
  }
  const outputDir = session.trainer.opts.output_dir;
  const { trainer } = session;
  recordTraining(o, trainer.globalStep);
  if (trainer.globalStep >= until) {
    console.log(`train: already at step ${trainer.globalStep} (until ${until}) — nothing to do. Raise \`until\` to continue.`);
    return { globalStep: trainer.globalStep, maxSteps: trainer.maxSteps, stopped: "until", lastLoss: null, outputDir };
  }
  const dashboard = new TrainingDashboard({
    total: until, initialStep: trainer.globalStep, history: loggedHistory(outputDir, trainer.globalStep), description: "train",
    predictedPeakBytes: predictedPeak(o),
  }).show();
  session.dashboard = dashboard;
  // steps per second of wall time between steps, validation rounds and checkpoints included (as tqdm counts): the
  // step's own compute time alone promised an end minutes too early when validation ran often
  let rate = 0;
  let last = performance.now();
  // the meter's measured peak is the peak of live tensors inside the steps (activations, gradients), beside the
  // planner's prediction of it; a snapshot between steps sees only what stays allocated
  const peak = trackPeak();
  let result: TrainResult;
  try {
    result = await trainer.train({
      until, signal: abortSignal(),
      onStep: (r) => {
        const now = performance.now();
        const seconds = Math.max(now - last, 1) / 1000;
        last = now;
        rate = rate ? 0.8 * rate + 0.2 / seconds : 1 / seconds;
        dashboard.onStep({ step: r.step, total: until, loss: r.loss, lr: r.lr, itPerSec: rate, memory: { ...memoryInfo(), measuredPeakBytes: peak.peakBytes } });
      },
      onCheckpoint: (_dir, step) => { if (session?.trainer === trainer) session.savedStep = step; },
      validationSteps: o.validation?.every,
      onValidation: async (step) => {
        const v = await validate({ base: o.base, controlnet: o.controlnet, ...o.validation!, step, outputDir, resolution: o.dataset.resolution, show: false });
        // each row: its conditioning image, its samples, its prompt under them
        dashboard.onValidation({
          step, images: v.pairs.map((p) => p.samples), prompts: v.pairs.map((p) => p.prompt),
          conditioning: await Promise.all(v.pairs.map((p) => conditioningPng(p.image, o.dataset.resolution, false))),
          ...(v.fidelity ? { fidelity: v.fidelity.iou } : {}),
        });
        // kept with the run, so the dashboard of a resumed run (a kernel restart, an interrupt) plots it again
        if (v.fidelity) new JsonlLogger(validationLog(outputDir)).log({ step, fidelity_iou: v.fidelity.iou });
      },
    });
  } catch (e) {
    // an interrupt inside a validation round ends here (its sampler throws); it is no error of the run's
    const interrupted = abortSignal()?.aborted === true;
    dashboard.finish(interrupted ? "stopped" : "error");
    const dir = await trainer.checkpointAfterError(e);
    if (dir && session?.trainer === trainer) session.savedStep = trainer.globalStep;
    const how = interrupted ? "interrupted" : "stopped by an error";
    if (dir) console.log(`train: ${how} at step ${trainer.globalStep}; checkpoint written to ${dir}. Run the cell again to continue.`);
    // (the step's own checkpoint was written before its validation round: where to continue from all the same)
    else if (trainer.checkpointIsCurrent) console.log(`train: ${how} at step ${trainer.globalStep}, which ${trainer.lastCheckpointPath} holds. Run the cell again to continue.`);
    throw e;
  } finally {
    peak.stop();
    recordTraining(o, trainer.globalStep);
  }
  if (result.stopped === "interrupted") {
    const dir = await trainer.checkpoint();
    if (session?.trainer === trainer) session.savedStep = trainer.globalStep;
    console.log(`train: interrupted at step ${result.globalStep}; checkpoint written to ${dir}. Run the cell again to continue.`);
    dashboard.finish("stopped");
  } else dashboard.finish("done");
  return { ...result, outputDir };
}

/** The cells' validation fidelity by step (the command line logs it to TensorBoard). */
function validationLog(outputDir: string): string {
  return path.join(outputDir, "logs", "validation_log.jsonl");
}

/**
 * The logged steps up to `step`, one point per step, with the validation fidelity where it was measured. After a
 * resume from an earlier checkpoint the logs hold the steps past it twice (trained, thrown away, trained again); the
 * later record is the one that counts.
 */
function loggedHistory(outputDir: string, step: number): { step: number; loss?: number; lr?: number; fidelity?: number }[] {
  const byStep = new Map<number, { step: number; loss?: number; lr?: number; fidelity?: number }>();
  const at = (s: number) => byStep.get(s) ?? byStep.set(s, { step: s }).get(s)!;
  for (const r of readJsonl(path.join(outputDir, "logs", "train_log.jsonl"))) {
    if (typeof r.step === "number" && r.step <= step) Object.assign(at(r.step), { loss: r.loss as number, lr: r.lr as number });
  }
  for (const r of readJsonl(validationLog(outputDir))) {
    if (typeof r.step === "number" && r.step <= step && typeof r.fidelity_iou === "number") at(r.step).fidelity = r.fidelity_iou;
  }
  return [...byStep.values()].sort((a, b) => a.step - b.step);
}

/** The planner's predicted peak for this run's options (what the memory meter shows beside the measured peak). */
function predictedPeak(o: TrainCellOptions): number | null {
  try {
    const wasmHeap = engineInfo()?.backend === "wasm";
    const estimate = planEstimate({
      unet: o.base.unet.config as unknown as Record<string, unknown>,
      controlnet: { conditioning_embedding_out_channels: o.controlnet.config.conditioning_embedding_out_channels },
      vae: o.base.vae.config as unknown as Record<string, unknown>,
      textEncoder: o.base.textEncoder.config as unknown as Record<string, unknown>,
      resolution: o.dataset.resolution, batchSize: o.batchSize ?? 4,
      options: {
        gradientCheckpointing: o.gradientCheckpointing ?? false, use8bitAdam: o.use8bitAdam ?? false,
        attentionChunkSize: o.attentionChunkSize ?? 0, offloadOptimizerState: o.offloadOptimizerState ?? false, setGradsToNone: true,
      },
    });
    // the meter measures live tensors: on native that is device.total (the heap's slack is RSS, not tensors)
    return wasmHeap ? plannedDeviceBytes(estimate, true) : estimate.device.total;
  } catch (e) {
    console.log(`train: no predicted memory peak (${(e as Error).message})`);
    return null;
  }
}

/** One line instead of "parameter 'weight' of Conv2d has no value" for a model a newer controlnet() cell freed. */
/** The images × prompts pairs as the script pairs them, refused in one line when they do not pair or are none. */
function validationPairs(cell: string, images: string[], prompts: string[]): void {
  if (!images.length || !prompts.length) throw new ArgsError(`${cell}: give at least one image and one prompt (got ${images.length} and ${prompts.length})`);
  try {
    pairValidation(images, prompts);
  } catch (e) {
    throw new ArgsError(`${cell}: ${(e as Error).message}`);
  }
}

function assertUsable(model: ControlNetModel, cell: string): void {
  if (!isDisposed(model)) return;
  throw new ArgsError(`${cell}: this ControlNet's weights were freed when the controlnet() cell ran again with other arguments; ` +
    `pass the model that cell returns now (this one's training is in its run folder's checkpoints${runDirOf(model) ? `, ${runDirOf(model)}` : ""}).`);
}

/** Validation images from the ControlNet (UniPC; steps default 20 as the script). Fill50k-style pairs
 *  (outline + "<colour> circle with <colour> background") are scored for control fidelity, shown in the title. */
export async function validate(o: { base: BaseModel; controlnet: ControlNetModel; images: string[]; prompts: string[];
  steps?: number; numImages?: number; seed?: number; step?: number; outputDir?: string; resolution?: number;
  /** The grid's title (default "validation at step N"). */
  title?: string; show?: boolean } & SamplingOptions): Promise<WithDisplay<ValidationResult>> {
  return sample("validate", o);
}

/** validate() and infer(): `cell` names the caller in messages and picks how the image is read, sized and named. */
async function sample(cell: "validate" | "infer", o: Parameters<typeof validate>[0]): Promise<WithDisplay<ValidationResult>> {
  assertUsable(o.controlnet, cell);
  assertBaseUsable(o.base, cell);
  if (o.resolution !== undefined) checkResolution(cell, o.resolution);
  validationPairs(cell, o.images, o.prompts);
  // the sampling numbers, named as the cell names them (a NaN guidance scale sampled noise without a word)
  for (const [k, v] of [["guidanceScale", o.guidanceScale], ["conditioningScale", o.conditioningScale]] as const) {
    if (v !== undefined && !Number.isFinite(v)) throw new ArgsError(`${cell}: ${k} must be a finite number, got ${v}`);
  }
  for (const [k, v] of [["steps", o.steps], ["numImages", o.numImages], ["seed", o.seed]] as const) {
    if (v !== undefined && !(Number.isSafeInteger(v) && v >= (k === "seed" ? 0 : 1))) throw new ArgsError(`${cell}: ${k} must be an integer >= ${k === "seed" ? 0 : 1}, got ${v}`);
  }
  // a missing or unreadable image: one line naming it
  // infer() loads its image as the seed's snippet does (load_image: EXIF orientation applied), validate() as the
  // script's validation (Image.open: not)
  const orient = cell === "infer";
  await checkValidationImages(o.images, { label: cell === "infer" ? "infer: conditioning image" : "validate: image", outcome: "nothing was generated", orient });
  // the step of this ControlNet's training, when this session trains it (not 0 for a model trained 800 steps)
  const step = o.step ?? stepsOf(o.controlnet);
  // infer() generates at the image's own size, as the seed's snippet (validate() at the base's, as training samples)
  const resolution = cell === "infer" ? o.resolution : o.resolution ?? baseResolution(o.base);
  const dir = path.join(path.resolve(o.outputDir ?? runDirOf(o.controlnet) ?? "outputs/controlnet"), cell === "infer" ? "" : "validation");
  // each infer() call its own files (a second call overwrote the first's step-0-pair-0-sample-0.png)
  const call = cell === "infer" ? nextFreeIndex(dir, /^image-(\d+)(-\d+)?\.png$/) : 0;
  const run = () => runValidation(o.base, o.controlnet, {
    resolution,
    fileName: cell === "infer" ? (_pair, k) => `image-${call}${(o.numImages ?? 1) > 1 ? `-${k}` : ""}.png` : undefined,
    images: o.images, prompts: o.prompts, steps: o.steps ?? 20, numImages: o.numImages ?? 1, seed: o.seed ?? 0,
    step, dir, signal: abortSignal() ?? undefined,
    guidanceScale: o.guidanceScale, conditioningScale: o.conditioningScale, controlMode: o.controlMode, orient,
  });
  // with useEma, sample with the average (as train_text_to_image.py validates with its EMA weights)
  const ema = averageOf(o.controlnet);
  const v = ema ? await ema.withAveraged(run) : await run();
  if (o.show === false) return v;
  const f = v.fidelity;
  const score = f ? ` — control fidelity: IoU ${f.iou.toFixed(3)}, colour ${f.colorScore.toFixed(3)}, circles hit ${(100 * f.hitRate).toFixed(0)}% (${f.count} images)` : "";
  const rows = await Promise.all(v.pairs.map(async (p) => ({
    images: [await conditioningPng(p.image, resolution, orient), ...p.samples],
    labels: ["conditioning", ...p.samples.map((_, k) => (p.samples.length > 1 ? `sample ${k + 1}` : "sample"))],
    caption: p.prompt,
  })));
  const grid = new ImageGrid({ title: `${o.title ?? `validation at step ${v.step}`}${score}`, rows, thumbWidth: 96 });
  return withDisplay(v, () => grid.bundle());
}

/** A conditioning image as the pipeline saw it (resized and centre-cropped to the resolution), as PNG bytes. */
async function conditioningPng(file: string, resolution: number | undefined, orient: boolean): Promise<Uint8Array> {
  const bytes = new Uint8Array(fs.readFileSync(file));
  if (!resolution) return bytes;
  const img = await resizeCenterCrop(bytes, resolution, { orient });
  return new Uint8Array(await encodePng(img));
}

/** The seed's inference snippet. */
export async function infer(o: { base: BaseModel; controlnet: ControlNetModel; image: string; prompt: string; steps?: number;
  seed?: number; numImages?: number; outputDir?: string; resolution?: number } & SamplingOptions): Promise<WithDisplay<ValidationResult>> {
  return sample("infer", { ...o, images: [o.image], prompts: [o.prompt], outputDir: o.outputDir ?? "outputs/inference", title: "inference" });
}

/** The last index handed out per folder: calls running at once (Promise.all of two infer()s) each get their own. */
const lastHandedOut = new Map<string, number>();

/** One more than the largest index `pattern`'s first group finds among `dir`'s files or was handed out here before. */
function nextFreeIndex(dir: string, pattern: RegExp): number {
  const onDisk = fs.existsSync(dir) ? fs.readdirSync(dir).map((f) => pattern.exec(f)?.[1]).filter((m) => m !== undefined).map(Number) : [];
  const next = onDisk.reduce((a, b) => Math.max(a, b), lastHandedOut.get(dir) ?? -1) + 1;
  lastHandedOut.set(dir, next);
  return next;
}

/**
 * A held-out evaluation set: `count` fill50k-style outlines from their own seed (never in the training data), written
 * as PNGs into `dir`, with their prompts — what validate() scores for control fidelity (the demo's held-out set).
 */
export async function heldOut(o: { count?: number; resolution: number; dir?: string; seed?: number }): Promise<{ images: string[]; prompts: string[] }> {
  if (o.count !== undefined && !(Number.isSafeInteger(o.count) && o.count >= 1)) throw new ArgsError(`heldOut: count must be a positive integer, got ${o.count}`);
  checkResolution("heldOut", o.resolution);
  const dir = path.resolve(o.dir ?? "outputs/held-out");
  makeDirs(dir);
  const set = heldOutSet(o.count ?? 32, o.resolution, o.seed);
  const images: string[] = [];
  for (const [i, s] of set.entries()) {
    const file = path.join(dir, `outline-${i}.png`);
    fs.writeFileSync(file, await encodePng(s.outline));
    images.push(file);
  }
  return { images, prompts: set.map((s) => s.truth.prompt) };
}

/** A cell's `resolution`: a positive multiple of 8 (the VAE downsamples by 8), as train_controlnet's --resolution. */
function checkResolution(cell: string, resolution: number): void {
  if (!(Number.isSafeInteger(resolution) && resolution >= 8 && resolution % 8 === 0)) {
    throw new ArgsError(`${cell}: resolution must be a positive multiple of 8, got ${resolution}`);
  }
}

/** The base's native image size: UNet sample_size × VAE factor (512 for SD1.5). */
function baseResolution(base: BaseModel): number | undefined {
  const sample = base.unet.config.sample_size;
  const factor = 2 ** (base.vae.config.block_out_channels.length - 1);
  return typeof sample === "number" ? sample * factor : undefined;
}

/** A diffusers folder Python's ControlNetModel.from_pretrained loads (with useEma: the weights' average). */
export function save(cn: ControlNetModel, dir: string): string {
  assertUsable(cn, "save");
  if (!dir.trim()) throw new ArgsError("save: the folder is empty: name one (it gets config.json, the weights and README.md)");
  // a checkpoint's files are checksummed: writing into one (or its controlnet/) would make it unusable
  const checkpoint = enclosingCheckpoint(dir);
  if (checkpoint) throw new ArgsError(`save: ${checkpoint} is a training checkpoint; save to a folder of its own (nothing was written)`);
  const ema = averageOf(cn);
  if (ema) ema.withAveragedSync(() => cn.savePretrained(dir));
  else cn.savePretrained(dir);
  // with save_model_card's README.md, as the command line's run: what pushToHub() uploads is a documented model
  const card = cards.get(cn);
  const steps = stepsOf(cn);
  writeModelCardSync(dir, {
    repoId: path.basename(path.resolve(dir)), baseModel: card?.base ?? "a Stable Diffusion base",
    training: card?.training && steps > 0 ? { ...card.training, steps } : null,
  });
  return path.resolve(dir);
}

/** The steps a saved ControlNet folder was trained for, as its model card says (save() and the command line write
 *  one); null when the folder has no card of ours. */
export function trainedSteps(dir: string): number | null {
  return cardTrainedSteps(dir);
}

/** Upload a saved folder; the token comes from HF_TOKEN (never printed). */
export async function pushToHub(dir: string, o: { repo: string; hubUrl?: string }): Promise<string> {
  // as the command line's push, and the cells' own logs and run record (which names the base by its local path)
  return (await uploadFolder(o.repo, dir, { hubUrl: o.hubUrl, ignorePatterns: [...RUN_FOLDER_PUSH_IGNORE, "logs/**", RUN_FILE] })).url;
}

/** Frees the training session (tensors of the optimizer; models stay), after a checkpoint of any unsaved steps: the
 *  next train() of the same model resumes where it was. */
export async function resetTraining(): Promise<void> {
  await closeSession();
}
