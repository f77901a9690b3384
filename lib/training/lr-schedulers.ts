/**
 * Learning-rate schedules with the semantics of diffusers' `get_scheduler` (diffusers/optimization.py), which
 * train_controlnet.py uses: each schedule is a multiplier λ(step) of the base learning rate (torch's LambdaLR), and
 * the lr of the k-th optimizer step is base_lr·λ(k), k counted from 0.
 *
 * Faithful details worth knowing:
 * - `constant` ignores the warmup (get_scheduler returns before looking at it).
 * - `cosine` always uses half a cosine period: get_scheduler does not pass `num_cycles` to it (only
 *   `cosine_with_restarts` gets --lr_num_cycles).
 * - `polynomial` decays to lr_end = 1e-7 with --lr_power, and stays at lr_end after num_training_steps.
 * The scheduler's state is its step count (`last_epoch` in torch), serialisable as JSON.
 */

export const LR_SCHEDULERS = ["linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup"] as const;
export type LrSchedulerName = (typeof LR_SCHEDULERS)[number];

export interface LrSchedulerOptions {
  /** The optimizer's initial lr (after --scale_lr). */
  baseLr: number;
  /** Required by every schedule but `constant`. */
  numWarmupSteps?: number;
  /** Required by linear, cosine, cosine_with_restarts, polynomial. */
  numTrainingSteps?: number;
  /** Hard restarts of cosine_with_restarts (default 1). */
  numCycles?: number;
  /** Power of polynomial (default 1). */
  power?: number;
  /** End lr of polynomial (default 1e-7, as diffusers). */
  lrEnd?: number;
}

export interface LrSchedulerState {
  name: LrSchedulerName;
  /** Number of scheduler steps taken (torch's last_epoch). */
  last_epoch: number;
  base_lr: number;
}

export class LrScheduler {
  readonly name: LrSchedulerName;
  readonly baseLr: number;
  private readonly lambda: (step: number) => number;
  private steps = 0;

  constructor(name: LrSchedulerName, lambda: (step: number) => number, baseLr: number) {
    this.name = name;
    this.lambda = lambda;
    this.baseLr = baseLr;
  }

  /** The multiplier at scheduler step `step`. */
  factor(step: number): number {
    return this.lambda(step);
  }

  /** The lr the next optimizer step uses (torch's get_last_lr()[0]). */
  getLastLr(): number {
    return this.baseLr * this.lambda(this.steps);
  }

  get stepCount(): number {
    return this.steps;
  }

  /** `n` scheduler steps at once (one per micro-batch of an optimizer step, as the script's loop steps it). */
  step(n = 1): void {
    this.steps += n;
  }

  stateDict(): LrSchedulerState {
    return { name: this.name, last_epoch: this.steps, base_lr: this.baseLr };
  }

  /** Takes the saved step count. Another schedule's state continues under this one, as torch's LambdaLR does (its
   *  state holds the step, not the lambda): the trainer names the change (the run identity's lr_scheduler) and
   *  resumes only where the user asked for it. */
  loadStateDict(state: LrSchedulerState): void {
    if (!Number.isInteger(state.last_epoch) || state.last_epoch < 0) throw new Error(`bad lr scheduler step ${state.last_epoch}`);
    this.steps = state.last_epoch;
  }
}

function warmup(step: number, warmupSteps: number): number {
  return step / Math.max(1, warmupSteps);
}

function need(value: number | undefined, what: string, name: string): number {
  if (value === undefined || value === null) throw new Error(`${name} requires \`${what}\`, please provide that argument.`);
  return value;
}

/** `name` as a schedule name, or diffusers' error for an unknown one (callers can check before any work starts). */
export function checkLrSchedulerName(name: string): LrSchedulerName {
  if (!(LR_SCHEDULERS as readonly string[]).includes(name)) {
    throw new Error(`'${name}' is not a valid lr scheduler; choose one of ${LR_SCHEDULERS.join(", ")}`);
  }
  return name as LrSchedulerName;
}

/** diffusers.optimization.get_scheduler. */
export function getScheduler(name: string, opts: LrSchedulerOptions): LrScheduler {
  const n = checkLrSchedulerName(name);
  const base = opts.baseLr;
  if (n === "constant") return new LrScheduler(n, () => 1, base);
  const w = need(opts.numWarmupSteps, "num_warmup_steps", n);
  if (n === "constant_with_warmup") return new LrScheduler(n, (s) => (s < w ? warmup(s, w) : 1), base);
  const T = need(opts.numTrainingSteps, "num_training_steps", n);
  const progress = (s: number) => (s - w) / Math.max(1, T - w);
  switch (n) {
    case "linear":
      return new LrScheduler(n, (s) => (s < w ? warmup(s, w) : Math.max(0, (T - s) / Math.max(1, T - w))), base);
    case "cosine": {
      const cycles = 0.5;
      return new LrScheduler(n, (s) => (s < w ? warmup(s, w) : Math.max(0, 0.5 * (1 + Math.cos(Math.PI * cycles * 2 * progress(s))))), base);
    }
    case "cosine_with_restarts": {
      const cycles = opts.numCycles ?? 1;
      return new LrScheduler(
        n,
        (s) => {
          if (s < w) return warmup(s, w);
          const p = progress(s);
          if (p >= 1) return 0;
          return Math.max(0, 0.5 * (1 + Math.cos(Math.PI * ((cycles * p) % 1))));
        },
        base,
      );
    }
    case "polynomial": {
      const lrEnd = opts.lrEnd ?? 1e-7;
      const power = opts.power ?? 1;
      if (!(base > lrEnd)) throw new Error(`lr_end (${lrEnd}) must be smaller than initial lr (${base})`);
      return new LrScheduler(
        n,
        (s) => {
          if (s < w) return warmup(s, w);
          if (s > T) return lrEnd / base;
          const remaining = 1 - (s - w) / (T - w);
          return ((base - lrEnd) * remaining ** power + lrEnd) / base;
        },
        base,
      );
    }
  }
}

export interface TrainingStepsInput {
  /** Number of training examples (after --max_train_samples). */
  numExamples: number;
  trainBatchSize: number;
  gradientAccumulationSteps: number;
  maxTrainSteps: number | null;
  numTrainEpochs: number;
  lrWarmupSteps: number;
  learningRate: number;
  scaleLr: boolean;
  /** accelerate's num_processes (1 here). */
  numProcesses?: number;
}

export interface TrainingSteps {
  /** len(train_dataloader): batches per epoch (the last one may be short; no drop_last). */
  batchesPerEpoch: number;
  /** ceil(batches / gradient_accumulation_steps). */
  numUpdateStepsPerEpoch: number;
  /** The effective --max_train_steps (derived from the epochs when not given). */
  maxTrainSteps: number;
  /** The effective --num_train_epochs (recomputed from max_train_steps, as the script does). */
  numTrainEpochs: number;
  /** What the lr scheduler is built with. */
  schedulerTrainingSteps: number;
  schedulerWarmupSteps: number;
  /** The optimizer's lr after --scale_lr. */
  learningRate: number;
}

/** train_controlnet.py's step/epoch/lr arithmetic (PR #8312 form), for one process unless told otherwise. */
export function trainingSteps(x: TrainingStepsInput): TrainingSteps {
  const procs = x.numProcesses ?? 1;
  const batchesPerEpoch = Math.ceil(x.numExamples / x.trainBatchSize);
  const learningRate = x.scaleLr ? x.learningRate * x.gradientAccumulationSteps * x.trainBatchSize * procs : x.learningRate;
  const schedulerWarmupSteps = x.lrWarmupSteps * procs;
  let schedulerTrainingSteps: number;
  if (x.maxTrainSteps === null) {
    const afterSharding = Math.ceil(batchesPerEpoch / procs);
    schedulerTrainingSteps = x.numTrainEpochs * Math.ceil(afterSharding / x.gradientAccumulationSteps) * procs;
  } else {
    schedulerTrainingSteps = x.maxTrainSteps * procs;
  }
  const numUpdateStepsPerEpoch = Math.ceil(batchesPerEpoch / x.gradientAccumulationSteps);
  const maxTrainSteps = x.maxTrainSteps ?? x.numTrainEpochs * numUpdateStepsPerEpoch;
  const numTrainEpochs = Math.ceil(maxTrainSteps / numUpdateStepsPerEpoch);
  return { batchesPerEpoch, numUpdateStepsPerEpoch, maxTrainSteps, numTrainEpochs, schedulerTrainingSteps, schedulerWarmupSteps, learningRate };
}
