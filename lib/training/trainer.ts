/**
 * The ControlNet training loop: train_controlnet.py's semantics over our engine.
 *
 * Per optimizer step: `gradient_accumulation_steps` micro-batches each add (loss / accumulation) gradients, then the
 * accumulated gradients are clipped to `max_grad_norm`, AdamW steps (gradients freed as they are applied), the lr
 * scheduler steps, and `global_step` increases; checkpoints every `checkpointing_steps` (atomic, with
 * `checkpoints_total_limit`), logs to TensorBoard + JSON lines. Every random draw comes from one seeded,
 * serialisable RNG, and the data loader's position is saved, so a resumed run continues the exact trajectory.
 * An AbortSignal stops the loop at the next step boundary with the state intact.
 */
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { memoryInfo, tf, throwIfWasmKernelFailed } from "../engine/index.js";
import type { AutoencoderKL, ControlNetModel, UNet2DConditionModel, CLIPTextModel } from "../models/index.js";
import type { Batch, ControlNetDataset, DataLoader, LoaderPosition } from "../data/index.js";
import { createOptimizer, clipGradNorm, GradientAccumulator, type Optimizer } from "./optim/index.js";
import { getScheduler, type LrScheduler, type LrSchedulerState } from "./lr-schedulers.js";
import { Rng, type RngState } from "./rng.js";
import { saveCheckpoint, resolveResume, loadCheckpoint, listCheckpoints, readTrainingState } from "./checkpoints.js";
import { EMAModel } from "./ema.js";
import { lockRun } from "./run-lock.js";
import { JsonlLogger, readJsonl } from "./tensorboard.js";
import { controlnetGradients, encodeLatents, type NoiseSchedule } from "./step.js";
import { loadModelFolder, writeFileAtomic } from "../io/diffusers.js";
import { InputError } from "../io/input-error.js";
import { validateTrainingNumbers, type TrainArgs } from "./args.js";
import { allReduceGradients, takeShard, type DataParallel } from "./distributed.js";
import { makeDirs } from "../io/dirs.js";

/** A checkpoint's folder for the weights' moving average (diffusers' scripts: unet_ema/). */
const EMA_FOLDER = "controlnet_ema";

export interface Tokenize {
  (texts: string[]): number[][];
}

export interface TrainingComponents {
  unet: UNet2DConditionModel;
  controlnet: ControlNetModel;
  vae: AutoencoderKL;
  textEncoder: CLIPTextModel;
  /** Texts → padded/truncated input ids (max_length of the tokenizer). */
  tokenize: Tokenize;
  noiseScheduler: NoiseSchedule;
}

/** The seed's option names (snake_case, as on the command line). */
export interface TrainingOptions {
  output_dir: string;
  seed?: number | null;
  resolution: number;
  train_batch_size: number;
  num_train_epochs?: number;
  max_train_steps?: number | null;
  gradient_accumulation_steps?: number;
  gradient_checkpointing?: boolean;
  learning_rate: number;
  scale_lr?: boolean;
  lr_scheduler?: string;
  lr_warmup_steps?: number;
  lr_num_cycles?: number;
  lr_power?: number;
  use_8bit_adam?: boolean;
  /** The DeepSpeed ZeRO-2 analogue: optimizer state in host memory. */
  offload_optimizer_state?: boolean;
  adam_beta1?: number;
  adam_beta2?: number;
  adam_weight_decay?: number;
  adam_epsilon?: number;
  max_grad_norm?: number;
  /** Chunked attention (the xformers memory-efficient attention analogue): query chunk size, 0 = off. */
  attention_chunk_size?: number;
  set_grads_to_none?: boolean;
  checkpointing_steps?: number;
  checkpoints_total_limit?: number | null;
  resume_from_checkpoint?: string | null;
  snr_gamma?: number | null;
  proportion_empty_prompts?: number;
  logging_dir?: string;
  /** Keep an exponential moving average of the ControlNet's weights (train_text_to_image.py's --use_ema; an
   *  extension here): checkpoints hold it in controlnet_ema/, saveFinal saves it. */
  use_ema?: boolean;
  /** The EMA's ceiling decay (diffusers EMAModel's `decay`, default 0.9999). */
  ema_decay?: number;
  /** What the ControlNet started from, for the run's identity: "unet" (from_unet: the base and the seed say which) or
   *  "pretrained <weightsFingerprint>"; unset: not recorded (the cells' run folders name their model themselves). */
  init_weights?: string;
  /** Stop and keep everything if the loss becomes NaN/inf (always on). */
}

export interface StepReport {
  step: number;
  maxSteps: number;
  epoch: number;
  loss: number;
  lr: number;
  gradNorm: number;
  seconds: number;
  /** Data-parallel runs: seconds of the step spent in the gradient all-reduce (waiting for peers included). */
  allReduceSeconds?: number;
}

export interface TrainHooks {
  signal?: AbortSignal | null;
  onStep?: (r: StepReport) => void | Promise<void>;
  /** Called after each checkpoint is written, with the checkpoints checkpoints_total_limit removed. */
  onCheckpoint?: (dir: string, step: number, removed: string[]) => void | Promise<void>;
  /** Called every `validation_steps` (the caller runs the pipeline). */
  validationSteps?: number;
  onValidation?: (step: number) => void | Promise<void>;
  /** Train only until this global step (default max_train_steps). Re-running with a higher value continues. */
  until?: number;
}

export interface TrainResult {
  globalStep: number;
  maxSteps: number;
  stopped: "finished" | "interrupted" | "until";
  lastLoss: number | null;
}

/** What became non-finite: the loss, the gradients (found before the update), or the weights (found after the
 *  update, before anything is saved). */
export type NonFiniteWhat = "loss" | "gradient norm" | "weights";

/** What the trainer noted of a checkpoint it wrote, for the advice after a non-finite stop. */
export interface CheckpointNote {
  path: string;
  step: number;
  /** The loss its weights gave: the next step's (null until that step ran in this process). */
  nextLoss: number | null;
  maxAbsWeight: number;
}

const short = (x: number) => (Math.abs(x) >= 1e4 || (x !== 0 && Math.abs(x) < 1e-3) ? x.toExponential(2) : String(Number(x.toPrecision(3))));
const described = (n: CheckpointNote) => `step ${n.step}, largest |weight| ${short(n.maxAbsWeight)}${n.nextLoss !== null ? `, loss ${short(n.nextLoss)} at the step after it` : ""}`;

/**
 * Which checkpoint to go back to. Finite is not enough: when the last checkpoint is the state the failing step
 * started from (a huge learning rate moved the weights to 1e37 and the next loss overflowed), resuming it with the
 * same settings fails again, so the lowest-loss checkpoint still on disk is named beside it.
 */
function checkpointAdvice(step: number, last: string | null, notes: CheckpointNote[]): string {
  if (!last) return "No checkpoint was written yet.";
  const note = notes.find((n) => n.path === last);
  if (!note || note.step < step - 1) {
    return `The last checkpoint, ${last}${note ? ` (${described(note)})` : ""}, holds finite weights, and the steps after it stayed finite until step ${step}.`;
  }
  const left = notes.filter((n) => n.path !== last && n.nextLoss !== null && Number.isFinite(n.nextLoss) && fs.existsSync(n.path))
    .sort((a, b) => a.nextLoss! - b.nextLoss!);
  return `The last checkpoint, ${last} (${described(note)}), holds finite weights, but they are the ones step ${step} started from: ` +
    `resumed with these settings it stops here again. ` +
    (left.length ? `The lowest-loss checkpoint left is ${left[0]!.path} (${described(left[0]!)}).` : "No earlier checkpoint is left.");
}

export class NonFiniteLossError extends Error {
  constructor(readonly step: number, readonly loss: number, readonly lastCheckpoint: string | null, readonly what: NonFiniteWhat = "loss",
    notes: CheckpointNote[] = []) {
    super(`Training stopped: the ${what === "weights" ? "weights became non-finite (NaN/inf)" : `${what} became ${loss}`} at step ${step}` +
      `${what === "weights" ? "; nothing was saved from that step on" : "; the update was not applied"}. ` +
      checkpointAdvice(step, lastCheckpoint, notes) + " Lower the learning rate or check the data.");
  }
}

/** True when every element of every tensor is finite: one scalar read (x·0 is 0 for finite x, NaN for NaN/±inf),
 *  one variable at a time so the check never holds a second copy of the model. */
export function allFinite(tensors: Iterable<tf.Tensor>): boolean {
  const parts: tf.Scalar[] = [];
  for (const t of tensors) parts.push(tf.tidy(() => tf.sum(tf.mul(t, 0)) as tf.Scalar));
  if (!parts.length) return true;
  const total = tf.tidy(() => tf.addN(parts));
  const ok = Number.isFinite(total.dataSync()[0]!);
  tf.dispose([...parts, total]);
  return ok;
}

/** The largest |element| over tensors, one variable at a time. */
function maxAbs(tensors: Iterable<tf.Tensor>): number {
  let m = 0;
  for (const t of tensors) {
    const v = tf.tidy(() => tf.max(tf.abs(t)));
    m = Math.max(m, v.dataSync()[0]!);
    v.dispose();
  }
  return m;
}

/** The arguments that define a run's trajectory (data order, noise, step size, the optimizer and its schedule, the
 *  base it trains against): recorded in each checkpoint's training_state.json as `run`, compared on resume and before
 *  a new run writes into a folder with checkpoints. Not max_train_steps (continuing a run further is a resume), not
 *  memory options (same mathematics), not paths (the same base or data may sit elsewhere on another machine): the base
 *  is its UNet's config fingerprint, the data its sampled rows' (sampleFingerprint). Fields a checkpoint does not
 *  record (written before they were) are not compared. */
export type RunIdentity = Record<"seed" | "resolution" | "train_batch_size" | "gradient_accumulation_steps" | "learning_rate" | "dataset_rows" |
  "lr_warmup_steps" | "lr_num_cycles" | "lr_power" | "adam_beta1" | "adam_beta2" | "adam_weight_decay" | "adam_epsilon" | "max_grad_norm" |
  "proportion_empty_prompts", number> &
  Record<"lr_scheduler" | "base_unet_config", string> & { use_8bit_adam: boolean; snr_gamma: number | null; init_weights?: string;
    /** The rows' content (ControlNetDataset.fingerprint): another dataset of the same length is another run. */
    dataset_fingerprint?: string };

/** A short fingerprint of a config object, independent of its keys' order. */
export function configFingerprint(config: unknown): string {
  const canonical = (v: unknown): unknown => Array.isArray(v) ? v.map(canonical)
    : v && typeof v === "object" ? Object.fromEntries(Object.keys(v).sort().filter((k) => !k.startsWith("_")).map((k) => [k, canonical((v as Record<string, unknown>)[k])]))
    : v;
  return crypto.createHash("sha256").update(JSON.stringify(canonical(config))).digest("hex").slice(0, 12);
}

/** "seed 1 (checkpoint) vs 2 (this run)" for each field that differs; empty when the same (or nothing recorded). */
export function runDifferences(saved: unknown, mine: RunIdentity, fields = Object.keys(mine) as (keyof RunIdentity)[]): string[] {
  if (!saved || typeof saved !== "object") return [];
  const s = saved as Record<string, unknown>;
  return fields
    .filter((k) => k in s && s[k] !== mine[k])
    .map((k) => `${IDENTITY_LABELS[k] ?? k} ${String(s[k])} there, ${mine[k]} here`);
}

/** Fields whose recorded value is not the flag of the same name. */
const IDENTITY_LABELS: Partial<Record<keyof RunIdentity, string>> = {
  // the global batch, so that a checkpoint resumes with any process count giving the same one
  train_batch_size: "global batch (num_processes × train_batch_size)",
  init_weights: "starting ControlNet (--controlnet_model_name_or_path)",
  dataset_fingerprint: "dataset content (fingerprint of sampled rows)",
};

/** A fingerprint of a model's weights: its parameters' names, shapes and first values (enough to tell two trained
 *  ControlNets apart without reading every weight of a large one). */
export function weightsFingerprint(model: { namedParameters(): Iterable<[string, { variable: tf.Variable }]> }): string {
  const h = crypto.createHash("sha256");
  for (const [name, p] of model.namedParameters()) {
    h.update(`${name}:${p.variable.shape.join("x")};`);
    const head = tf.tidy(() => p.variable.flatten().slice(0, Math.min(256, p.variable.size)));
    h.update(new Uint8Array((head.dataSync() as Float32Array).slice().buffer));
    head.dispose();
  }
  return h.digest("hex").slice(0, 12);
}

export class RunMismatchError extends InputError {
  override name = "RunMismatchError";
}

export class ControlNetTrainer {
  readonly opts: Required<Omit<TrainingOptions, "max_train_steps" | "seed" | "checkpoints_total_limit" | "resume_from_checkpoint" | "snr_gamma" | "init_weights">> &
    Pick<TrainingOptions, "checkpoints_total_limit" | "resume_from_checkpoint" | "snr_gamma" | "init_weights"> & { seed: number };
  readonly optimizer: Optimizer;
  readonly lrScheduler: LrScheduler;
  readonly maxSteps: number;
  readonly rng: Rng;
  globalStep = 0;
  epoch = 0;
  private loader: DataLoader | null = null;
  private position: LoaderPosition = { epoch: 0, index: 0 };
  private lastCheckpoint: string | null = null;
  /** The checkpoints written by this trainer, with their loss and largest weight (checkpointAdvice). */
  private readonly checkpointNotes: CheckpointNote[] = [];
  /** The weights' moving average (use_ema), else null. */
  readonly ema: EMAModel | null;
  /** train_log.jsonl, one synchronous append per step: each line is complete on disk when the step ends (a
   *  stream would flush only when the event loop gets a turn, so a follower could lag or see nothing after a kill). */
  private readonly log: JsonlLogger | null;
  private readonly releaseLock: () => void;
  /** Data-parallel training (lib/training/distributed.ts): this process's rank and the all-reduce; null alone. */
  readonly parallel: DataParallel | null;
  /** Rows per micro-step over all processes (train_batch_size × processes). */
  readonly globalBatch: number;
  /** Another process asked to stop: all stop at this step boundary (set by the all-reduce). */
  private stopAgreed = false;

  /**
   * `say` receives what resuming says (the checkpoint taken, warnings); the command line holds those lines until after
   * the script's "Running training" block, where the script prints them.
   */
  constructor(readonly c: TrainingComponents, readonly dataset: ControlNetDataset, options: TrainingOptions, parallel: DataParallel | null = null,
    private readonly say: (line: string) => void = console.log) {
    const o = options;
    // the same ranges as the command line's (notebook cells and library callers construct the trainer directly)
    validateTrainingNumbers(o as Partial<Record<keyof TrainArgs, unknown>>);
    const accumulation = o.gradient_accumulation_steps ?? 1;
    this.parallel = parallel;
    this.globalBatch = o.train_batch_size * (parallel?.worldSize ?? 1);
    this.opts = {
      output_dir: o.output_dir, seed: o.seed ?? 0, resolution: o.resolution, train_batch_size: o.train_batch_size,
      num_train_epochs: o.num_train_epochs ?? 1, gradient_accumulation_steps: accumulation,
      gradient_checkpointing: o.gradient_checkpointing ?? false,
      learning_rate: (o.scale_lr ? accumulation * this.globalBatch : 1) * o.learning_rate, scale_lr: o.scale_lr ?? false,
      lr_scheduler: o.lr_scheduler ?? "constant", lr_warmup_steps: o.lr_warmup_steps ?? 500, lr_num_cycles: o.lr_num_cycles ?? 1,
      lr_power: o.lr_power ?? 1, use_8bit_adam: o.use_8bit_adam ?? false, offload_optimizer_state: o.offload_optimizer_state ?? false,
      adam_beta1: o.adam_beta1 ?? 0.9, adam_beta2: o.adam_beta2 ?? 0.999, adam_weight_decay: o.adam_weight_decay ?? 1e-2,
      adam_epsilon: o.adam_epsilon ?? 1e-8, max_grad_norm: o.max_grad_norm ?? 1, attention_chunk_size: o.attention_chunk_size ?? 0,
      set_grads_to_none: o.set_grads_to_none ?? true, checkpointing_steps: o.checkpointing_steps ?? 500,
      checkpoints_total_limit: o.checkpoints_total_limit ?? null, resume_from_checkpoint: o.resume_from_checkpoint ?? null,
      snr_gamma: o.snr_gamma ?? null, proportion_empty_prompts: o.proportion_empty_prompts ?? 0,
      logging_dir: o.logging_dir ?? path.join(o.output_dir, "logs"),
      use_ema: o.use_ema ?? false, ema_decay: o.ema_decay ?? 0.9999, init_weights: o.init_weights,
    };
    if (o.resolution % 8 !== 0) throw new Error(`resolution must be divisible by 8 (got ${o.resolution})`);
    // Frozen parts take no gradients; the ControlNet is the only trainable model.
    c.unet.trainable = false;
    c.vae.trainable = false;
    c.textEncoder.trainable = false;
    c.controlnet.trainable = true;
    if (this.opts.gradient_checkpointing) {
      c.controlnet.enableGradientCheckpointing(true);
      c.unet.enableGradientCheckpointing(true);
    }
    if (this.opts.attention_chunk_size > 0) {
      c.controlnet.setAttentionChunkSize(this.opts.attention_chunk_size);
      c.unet.setAttentionChunkSize(this.opts.attention_chunk_size);
    }
    const updatesPerEpoch = Math.ceil(Math.ceil(dataset.length / this.globalBatch) / accumulation);
    this.maxSteps = o.max_train_steps ?? this.opts.num_train_epochs * updatesPerEpoch;
    const params = new Map([...c.controlnet.namedParameters()].map(([n, p]) => [n, p.variable] as [string, tf.Variable]));
    this.optimizer = createOptimizer(params, {
      lr: this.opts.learning_rate, beta1: this.opts.adam_beta1, beta2: this.opts.adam_beta2,
      weightDecay: this.opts.adam_weight_decay, eps: this.opts.adam_epsilon,
      use8bit: this.opts.use_8bit_adam, offload: this.opts.offload_optimizer_state,
    });
    this.lrScheduler = getScheduler(this.opts.lr_scheduler, {
      baseLr: this.opts.learning_rate,
      numWarmupSteps: this.opts.lr_warmup_steps * accumulation,
      numTrainingSteps: this.maxSteps * accumulation,
      numCycles: this.opts.lr_num_cycles,
      power: this.opts.lr_power,
    });
    this.rng = new Rng(this.opts.seed);
    this.ema = this.opts.use_ema ? new EMAModel(params, this.opts.ema_decay) : null;
    makeDirs(this.opts.output_dir);
    this.log = this.isMainProcess ? new JsonlLogger(path.join(this.opts.logging_dir, "train_log.jsonl")) : null;
    this.resume();
    // the first write to output_dir comes after this: one run at a time in a folder (run-lock.ts)
    this.releaseLock = this.isMainProcess ? lockRun(this.opts.output_dir) : () => {};
    if (this.isMainProcess) makeDirs(this.opts.logging_dir); // rank 0 alone logs
    // steps after the resumed one are redone: their old lines would count twice (TensorBoard readers keep the last
    // value per step; a JSON-lines reader sees every line). A new run's log is its own: an earlier run's lines in the
    // same logging_dir (a shared absolute --logging_dir, checkpoints removed to start over) are moved aside, not lost.
    // Each line names its run (output_dir's tag): another run's lines in a shared logging_dir are never dropped.
    // An earlier run's validation images go aside with its log (they sat beside a model that never took those steps).
    if (this.log && this.globalStep === 0) {
      keepEarlier(this.log.path);
      keepEarlier(path.join(this.opts.output_dir, "validation"));
    }
    else if (this.log) dropLoggedStepsAfter(this.log.path, this.globalStep, this.runTag);
  }

  /** The run's tag in train_log.jsonl's lines: its output_dir, hashed (no local path in a log that may be shared). */
  get runTag(): string {
    return crypto.createHash("sha256").update(path.resolve(this.opts.output_dir)).digest("hex").slice(0, 12);
  }

  /** Rank 0 of a data-parallel group, or a single process: the one that writes logs and checkpoints. */
  get isMainProcess(): boolean {
    return this.parallel?.isMainProcess ?? true;
  }

  /** The newest checkpoint this trainer wrote or resumed from, or null. */
  get lastCheckpointPath(): string | null {
    return this.lastCheckpoint;
  }

  /** Whether the last checkpoint holds the current step (nothing trained since would be lost). */
  get checkpointIsCurrent(): boolean {
    return this.lastCheckpoint !== null && path.basename(this.lastCheckpoint) === `checkpoint-${this.globalStep}`;
  }

  /** What defines the trajectory; the batch is the global one, so a checkpoint resumes with any process count. */
  get runIdentity(): RunIdentity {
    const o = this.opts;
    return {
      seed: o.seed, resolution: o.resolution, train_batch_size: this.globalBatch,
      gradient_accumulation_steps: o.gradient_accumulation_steps, learning_rate: o.learning_rate, dataset_rows: this.dataset.length,
      lr_scheduler: o.lr_scheduler, lr_warmup_steps: o.lr_warmup_steps, lr_num_cycles: o.lr_num_cycles, lr_power: o.lr_power,
      use_8bit_adam: o.use_8bit_adam, adam_beta1: o.adam_beta1, adam_beta2: o.adam_beta2, adam_weight_decay: o.adam_weight_decay,
      adam_epsilon: o.adam_epsilon, max_grad_norm: o.max_grad_norm, proportion_empty_prompts: o.proportion_empty_prompts,
      snr_gamma: o.snr_gamma ?? null, base_unet_config: configFingerprint(this.c.unet.config),
      ...(o.init_weights ? { init_weights: o.init_weights } : {}),
      ...(this.dataset.fingerprint ? { dataset_fingerprint: this.dataset.fingerprint } : {}),
    };
  }

  /**
   * Picks up `resume_from_checkpoint` (a path or "latest") like the script: nothing found → start fresh. Another run's
   * checkpoints (a different run identity) are never taken silently: "latest" refuses them, a checkpoint named
   * explicitly is continued with a warning, and a fresh run refuses a folder holding them (the total limit would
   * delete its own checkpoints and keep theirs, and a later "latest" would resume theirs).
   */
  private resume(): void {
    // rank 0 speaks for the group (every process resumes the same checkpoint)
    const tell = (line: string) => { if (this.isMainProcess) this.say(line); };
    const r = resolveResume(this.opts.output_dir, this.opts.resume_from_checkpoint);
    const mine = this.runIdentity;
    if (!r.checkpoint) {
      if (this.opts.resume_from_checkpoint) tell(r.message);
      for (const c of listCheckpoints(this.opts.output_dir)) {
        const diff = runDifferences(readTrainingState(c.path).run, mine);
        if (diff.length) {
          const dir = this.opts.output_dir;
          throw new RunMismatchError(`${dir} holds another run's checkpoints (${path.basename(c.path)}: ${diff.join(", ")}); nothing was changed. ` +
            "To continue that run: --resume_from_checkpoint latest with its arguments (an unset --seed then takes the checkpoint's). " +
            `To start over here: remove ${path.join(dir, "checkpoint-*")} first. Or use another output_dir.`);
        }
      }
      return;
    }
    const ck = loadCheckpoint(r.checkpoint.path, { warn: tell });
    const diff = runDifferences(ck.training.run, mine);
    // the optimizer's state is the kind its optimizer writes: a run continues with the optimizer it had
    if (runDifferences(ck.training.run, mine, ["use_8bit_adam"]).length) {
      const saved = !this.opts.use_8bit_adam;
      const others = runDifferences(ck.training.run, mine, (Object.keys(mine) as (keyof RunIdentity)[]).filter((k) => k !== "use_8bit_adam"));
      throw new RunMismatchError(`resume_from_checkpoint: ${ck.path} holds ${saved ? "8-bit AdamW" : "AdamW"}'s optimizer state (use_8bit_adam ${saved} there, ` +
        `${!saved} here), which the other optimizer cannot continue; nothing was changed. To continue it: ${saved ? "add" : "leave out"} --use_8bit_adam` +
        (others.length ? ` (other differences: ${others.join(", ")}).` : "."));
    }
    if (diff.length) {
      if (this.opts.resume_from_checkpoint === "latest") {
        throw new RunMismatchError(`resume_from_checkpoint latest: ${ck.path} is another run's (${diff.join(", ")}); nothing was changed. ` +
          `Use another output_dir for a new run, the same arguments to continue it, or name the checkpoint (resume_from_checkpoint ${path.basename(ck.path)}) to continue it with these.`);
      }
      tell(`warning: ${ck.path} was written with other arguments (${diff.join(", ")}); continuing it with this run's as asked.`);
    }
    tell(r.message);
    const emaDir = path.join(ck.path, EMA_FOLDER);
    const savedEma = this.ema !== null && fs.existsSync(emaDir);
    if (savedEma) {
      // the average is a ControlNet folder: load it into the model, take it as the average, then the weights
      this.c.controlnet.loadState(readControlnetWeights(emaDir).tensors, { strict: true });
      this.ema!.capture();
      this.ema!.optimizationStep = ck.step;
    }
    if (ck.controlnetDir) {
      const { tensors } = readControlnetWeights(ck.controlnetDir);
      this.c.controlnet.loadState(tensors, { strict: true });
    }
    if (this.ema && !savedEma) {
      tell(`${ck.path} has no ${EMA_FOLDER}/ (saved without use_ema): the moving average starts from its weights`);
      this.ema.capture();
    }
    if (ck.optimizer) this.optimizer.loadStateDict(ck.optimizer);
    if (ck.lrScheduler) this.lrScheduler.loadStateDict(ck.lrScheduler as LrSchedulerState);
    const rng = ck.rng as { noise?: RngState } | null;
    if (rng?.noise) this.rng.setState(rng.noise);
    if (ck.data) this.position = ck.data as LoaderPosition;
    this.globalStep = ck.step;
    this.epoch = this.position.epoch;
    this.lastCheckpoint = ck.path;
  }

  private ensureLoader(): DataLoader {
    if (!this.loader) {
      this.loader = this.dataset.loader({
        batchSize: this.globalBatch,
        seed: this.opts.seed,
        proportionEmptyPrompts: this.opts.proportion_empty_prompts,
        start: this.position,
      });
    }
    return this.loader;
  }

  /** Draws the step's randomness: posterior noise, diffusion noise, timesteps (in that order, from one RNG). */
  private draw(b: number, latentShape: [number, number, number]): { posterior: tf.Tensor4D; noise: tf.Tensor4D; timesteps: number[] } {
    const n = b * latentShape[0] * latentShape[1] * latentShape[2];
    const posterior = tf.tensor4d(this.rng.normals(n), [b, ...latentShape]);
    const noise = tf.tensor4d(this.rng.normals(n), [b, ...latentShape]);
    const T = this.c.noiseScheduler.config.num_train_timesteps;
    const timesteps = Array.from({ length: b }, () => this.rng.randint(0, T));
    return { posterior, noise, timesteps };
  }

  /**
   * Gradients of checkpointed ControlNet blocks go straight to host memory when the optimizer updates on the host
   * anyway (8-bit Adam, optimizer offload): the device never holds them all at once (ZeRO-Offload).
   */
  private get streamsGradientsToHost(): boolean {
    return this.opts.gradient_checkpointing && this.optimizer.kind !== "adamw";
  }

  /** One micro-batch: loss and gradients (already divided by the accumulation count); with `hostGrads`, those of
   *  checkpointed blocks are added into it instead. */
  private microStep(global: Batch, hostGrads?: Map<string, Float32Array>): { loss: number; grads: Map<string, tf.Tensor>; share: number } {
    const r = global.resolution;
    const f = 2 ** (this.c.vae.config.block_out_channels.length - 1);
    const latentShape: [number, number, number] = [r / f, r / f, this.c.vae.config.latent_channels];
    // Every process draws the global batch's randomness and keeps its rows' part (lib/training/distributed.ts).
    const { batch, posterior, noise, timesteps, share } = takeShard(global, this.draw(global.size, latentShape), this.parallel);
    const b = batch.size;
    if (b === 0) {
      tf.dispose([posterior, noise]);
      return { loss: 0, grads: new Map(), share };
    }
    const pixels = tf.tensor4d(batch.pixelValues, [b, r, r, 3]);
    const conditioning = tf.tensor4d(batch.conditioningPixelValues, [b, r, r, 3]);
    const ids = this.c.tokenize(batch.texts);
    const latents = encodeLatents(this.c.vae, pixels, posterior);
    const ehs = tf.tidy(() => this.c.textEncoder.forward(tf.tensor2d(ids, undefined, "int32")).lastHiddenState);
    try {
      return {
        ...controlnetGradients(this.c.unet, this.c.controlnet, this.c.noiseScheduler, {
          latents, encoderHiddenStates: ehs, conditioning, noise, timesteps, snrGamma: this.opts.snr_gamma,
        }, share / this.opts.gradient_accumulation_steps, hostGrads),
        share,
      };
    } finally {
      tf.dispose([posterior, noise, pixels, conditioning, latents, ehs]);
    }
  }

  /** Trains until max_train_steps, `until`, or an abort. Safe to call again: it continues from the current step. */
  async train(hooks: TrainHooks = {}): Promise<TrainResult> {
    const until = Math.min(hooks.until ?? this.maxSteps, this.maxSteps);
    let lastLoss: number | null = null;
    const loader = this.ensureLoader();
    const accumulation = this.opts.gradient_accumulation_steps;
    while (this.globalStep < until) {
      // Each step is synchronous tensor work: yield one event-loop turn at the boundary so a kernel can take
      // interrupt/comm/complete messages, SIGINT handlers run, timers fire and log streams flush.
      await new Promise<void>((r) => setImmediate(r));
      if (this.parallel ? this.stopAgreed : hooks.signal?.aborted) return { globalStep: this.globalStep, maxSteps: this.maxSteps, stopped: "interrupted", lastLoss };
      const t0 = performance.now();
      const acc = new GradientAccumulator();
      // summed over the micro-steps of this optimizer step, like acc
      const hostGrads = this.streamsGradientsToHost ? new Map<string, Float32Array>() : undefined;
      let lossSum = 0;
      let micros = 0;
      for (let micro = 0; micro < accumulation; micro++) {
        const batch = await loader.next();
        this.epoch = batch.epoch;
        this.position = batch.next;
        const { loss, grads, share } = this.microStep(batch, hostGrads);
        lossSum += loss * share;
        micros++;
        acc.add(grads);
        // accelerate syncs at the end of the dataloader: an optimizer step never spans two epochs (the last one of an
        // epoch may have fewer micro-batches; each still counts 1/accumulation, as accelerate scales the loss)
        if (batch.next.index >= this.dataset.length) break;
      }
      const grads = acc.take();
      let allReduceSeconds: number | undefined;
      if (this.parallel) {
        const tr = performance.now();
        // gradients (and the loss) summed over the processes before clipping, as DDP does before the optimizer
        const reduced = await allReduceGradients(this.parallel, this.c.controlnet, grads, hostGrads, lossSum, hooks.signal?.aborted ?? false);
        lossSum = reduced.loss;
        this.stopAgreed = reduced.stop;
        allReduceSeconds = (performance.now() - tr) / 1000;
      }
      // Reported loss: the mean over micro-batches (controlnetGradients returns each unscaled loss).
      const loss = lossSum / micros;
      // what the last checkpoint's weights gave, if it holds the state this step started from (checkpointAdvice)
      const from = this.checkpointNotes.at(-1);
      if (from && from.step === this.globalStep) from.nextLoss = loss;
      if (!Number.isFinite(loss)) {
        tf.dispose([...grads.values()]);
        throw new NonFiniteLossError(this.globalStep + 1, loss, this.lastCheckpoint, "loss", this.checkpointNotes);
      }
      try {
        throwIfWasmKernelFailed(`training step ${this.globalStep + 1} (not applied)`);
      } catch (err) {
        tf.dispose([...grads.values()]);
        throw err;
      }
      // The norm also guards the update: a finite loss can still have inf/NaN gradients (clipping off: an infinite
      // max norm measures without scaling).
      const gradNorm = clipGradNorm(grads, this.opts.max_grad_norm > 0 ? this.opts.max_grad_norm : Infinity, hostGrads);
      if (!Number.isFinite(gradNorm)) {
        tf.dispose([...grads.values()]);
        throw new NonFiniteLossError(this.globalStep + 1, gradNorm, this.lastCheckpoint, "gradient norm", this.checkpointNotes);
      }
      this.optimizer.lr = this.lrScheduler.getLastLr();
      this.optimizer.step(grads, { disposeGrads: this.opts.set_grads_to_none, hostGrads });
      // A finite gradient times a huge lr can still overflow the weights: stop before anything logs or saves them.
      this.throwIfWeightsNonFinite(this.globalStep + 1);
      this.ema?.step();
      if (!this.opts.set_grads_to_none) tf.dispose([...grads.values()]);
      this.lrScheduler.step(accumulation);
      this.globalStep++;
      lastLoss = loss;
      const report: StepReport = {
        // lr: lr_scheduler.get_last_lr() after the scheduler stepped (the next step's), what the script logs
        step: this.globalStep, maxSteps: this.maxSteps, epoch: this.epoch, loss, lr: this.lrScheduler.getLastLr(), gradNorm,
        seconds: (performance.now() - t0) / 1000, ...(allReduceSeconds !== undefined ? { allReduceSeconds } : {}),
      };
      // (with the process's memory: a notebook following worker processes' log shows theirs, not its own; host and
      // tensor memory only, which cost nothing to read)
      this.log?.log({ ...report, run: this.runTag, memory: memoryInfo({ device: false }) });
      await hooks.onStep?.(report);
      if (this.globalStep % this.opts.checkpointing_steps === 0) await this.checkpoint(hooks);
      if (hooks.validationSteps && this.globalStep % hooks.validationSteps === 0) await hooks.onValidation?.(this.globalStep);
    }
    return { globalStep: this.globalStep, maxSteps: this.maxSteps, stopped: this.globalStep >= this.maxSteps ? "finished" : "until", lastLoss };
  }

  /** Stops (NonFiniteLossError) when a ControlNet weight is NaN/inf: such weights are never checkpointed or saved. */
  throwIfWeightsNonFinite(step = this.globalStep): void {
    if (!allFinite(this.c.controlnet.trainableVariables())) throw new NonFiniteLossError(step, NaN, this.lastCheckpoint, "weights", this.checkpointNotes);
  }

  /** The step whose checkpoint was being written when that failed (null once one is written). */
  private failedCheckpointStep: number | null = null;

  /** Writes checkpoint-<step> atomically (ControlNet folder, optimizer, lr scheduler, RNG, data position); refuses
   *  non-finite weights (a checkpoint named "last good" must be). */
  async checkpoint(hooks: Pick<TrainHooks, "onCheckpoint"> = {}): Promise<string> {
    this.throwIfWeightsNonFinite();
    if (!this.isMainProcess) return this.lastCheckpoint ?? ""; // rank 0 writes the group's checkpoints
    this.failedCheckpointStep = this.globalStep; // until it is written
    const res = await saveCheckpoint(this.opts.output_dir, this.globalStep, {
      controlnet: (dir) => this.c.controlnet.savePretrained(dir),
      optimizer: () => this.optimizer.stateDict(),
      lrScheduler: () => this.lrScheduler.stateDict(),
      rng: () => ({ noise: this.rng.getState() }),
      data: () => this.position,
      training: () => ({ epoch: this.epoch, max_train_steps: this.maxSteps, run: this.runIdentity }),
      ...(this.ema ? { extra: (dir: string) => this.ema!.withAveraged(() => this.c.controlnet.savePretrained(path.join(dir, EMA_FOLDER))) } : {}),
    }, { totalLimit: this.opts.checkpoints_total_limit });
    this.lastCheckpoint = res.path;
    this.failedCheckpointStep = null;
    this.checkpointNotes.push({
      path: res.path, step: this.globalStep, nextLoss: null,
      maxAbsWeight: maxAbs(this.c.controlnet.trainableVariables()),
    });
    await hooks.onCheckpoint?.(res.path, this.globalStep, res.removed);
    return res.path;
  }

  /**
   * After `train` failed with `error`: writes a checkpoint of the current step if steps were taken since the last one,
   * so nothing trained is lost (as an interrupt does). Not after a non-finite stop (those weights are not kept), and
   * never throwing over the original error. Returns the checkpoint's path, or null.
   */
  async checkpointAfterError(error: unknown): Promise<string | null> {
    if (error instanceof NonFiniteLossError || this.globalStep === 0) return null;
    if (this.checkpointIsCurrent) return null;
    // the error was this step's checkpoint failing (a full disk): writing it again fails the same way, said twice
    if (this.failedCheckpointStep === this.globalStep) return null;
    try {
      return await this.checkpoint();
    } catch (e) {
      console.error(`could not save a checkpoint after the error: ${(e as Error).message}`);
      return null;
    }
  }

  /** Saves the final ControlNet as a diffusers folder in output_dir (what Python's from_pretrained loads). With
   *  use_ema the average is copied into the ControlNet first, as train_text_to_image.py does at the end of training:
   *  what is saved is what is sampled afterwards (and what training would continue from). */
  saveFinal(): void {
    this.throwIfWeightsNonFinite();
    this.ema?.copyTo();
    this.c.controlnet.savePretrained(this.opts.output_dir);
  }

  /** Releases the loader, the lock, the optimizer's state (AdamW's moments: twice the ControlNet's size, which a
   *  notebook's re-run train() cell otherwise piled up) and the moving average (unless `keepEma`: the cells keep a
   *  model's average). */
  async close(opts: { keepEma?: boolean } = {}): Promise<void> {
    this.optimizer.dispose();
    if (!opts.keepEma) this.ema?.dispose();
    await this.loader?.close();
    this.loader = null;
    this.releaseLock();
  }
}

/** An earlier run's `train_log.jsonl` or `validation/` → `train_log.earlier-<n>.jsonl` / `validation.earlier-<n>` (the
 *  first free n); nothing when absent or empty. */
function keepEarlier(p: string): void {
  if (!fs.existsSync(p)) return;
  const st = fs.statSync(p);
  if (st.isDirectory() ? fs.readdirSync(p).length === 0 : st.size === 0) return;
  const ext = st.isDirectory() ? "" : path.extname(p);
  const stem = p.slice(0, p.length - ext.length);
  let n = 1;
  while (fs.existsSync(`${stem}.earlier-${n}${ext}`)) n++;
  fs.renameSync(p, `${stem}.earlier-${n}${ext}`);
}

/** Rewrites a JSON-lines log without run `run`'s lines of steps after `step` (and without a torn last line),
 *  atomically. Lines of another run stay; untagged lines (logs of earlier versions) are taken as this run's. */
function dropLoggedStepsAfter(file: string, step: number, run: string): void {
  if (!fs.existsSync(file)) return;
  const kept = readJsonl(file).filter((r) => !(typeof r.step === "number" && r.step > step && (r.run === run || r.run === undefined)));
  const text = kept.map((r) => JSON.stringify(r) + "\n").join("");
  if (text === fs.readFileSync(file, "utf8")) return;
  writeFileAtomic(file, text);
}

function readControlnetWeights(dir: string) {
  return loadModelFolder(dir);
}
