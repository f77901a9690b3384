/**
 * What every scheduler shares: the config (diffusers' keys), the β/ᾱ tables, the timestep grid and the
 * tensor-ownership rules.
 *
 * Ownership: `step` and `scaleModelInput` never dispose their inputs and always return fresh tensors that the caller
 * owns. Multistep state (UniPC's history) is owned by the scheduler and freed by `setTimesteps`/`dispose`.
 * Tensors are float32; layout does not matter (the maths is elementwise) except that dimension 0 is the batch.
 */
import { tf } from "../engine/index.js";
import { makeBetas, cumprodAlphas, type BetaConfig } from "./betas.js";
import { extractInitConfig, type JsonConfig } from "./config.js";
import { npArange, npLinspace, roundHalfEven } from "./numeric.js";
import type { Generator } from "./random.js";
import { addNoise, getVelocity, computeSnr, type TimestepsLike } from "./training.js";

export type PredictionType = "epsilon" | "v_prediction" | "sample";
export type TimestepSpacing = "linspace" | "leading" | "trailing";

export interface CommonSchedulerConfig extends BetaConfig {
  prediction_type: string;
  timestep_spacing: string;
  steps_offset: number;
}

export interface StepOptions {
  /** Seeded source of the noise a stochastic step adds (DDPM, DDIM with eta > 0, Euler with s_churn > 0). */
  generator?: Generator;
  /** The noise itself (same shape as the sample); wins over `generator`. For parity tests. */
  noise?: tf.Tensor;
  /** DDIM: weight of the added noise (0 = deterministic DDIM, 1 = DDPM-like). Default 0. */
  eta?: number;
  /** DDIM: recompute ε from the clipped x0 prediction. */
  useClippedModelOutput?: boolean;
  /** Euler: stochastic "churn" parameters (Karras et al. 2022). Defaults 0, 0, ∞, 1. */
  sChurn?: number;
  sTmin?: number;
  sTmax?: number;
  sNoise?: number;
}

export interface SchedulerOutput {
  prevSample: tf.Tensor;
  /** The model's x0 estimate at this step, where the scheduler computes one. */
  predOriginalSample?: tf.Tensor;
}

/** The interface the pipeline and training code use. */
export interface Scheduler {
  readonly className: string;
  readonly config: Readonly<CommonSchedulerConfig>;
  /** Model evaluations per step (1 for every scheduler here). */
  readonly order: number;
  readonly betas: Float64Array;
  readonly alphas: Float64Array;
  readonly alphasCumprod: Float64Array;
  /** The inference grid after `setTimesteps` (integers, except Euler's float grid); else the training grid. */
  readonly timesteps: number[];
  readonly numInferenceSteps: number | null;
  /** Standard deviation of the initial latents. */
  readonly initNoiseSigma: number;
  setTimesteps(numInferenceSteps: number): void;
  /** Starts the step counter at this index of `timesteps` (img2img-style partial schedules). */
  setBeginIndex(index: number): void;
  scaleModelInput(sample: tf.Tensor, timestep: number): tf.Tensor;
  step(modelOutput: tf.Tensor, timestep: number, sample: tf.Tensor, options?: StepOptions): SchedulerOutput;
  addNoise(originalSamples: tf.Tensor, noise: tf.Tensor, timesteps: TimestepsLike): tf.Tensor;
  getVelocity(sample: tf.Tensor, noise: tf.Tensor, timesteps: TimestepsLike): tf.Tensor;
  /** SNR(t) = ᾱ/(1−ᾱ) per timestep, for Min-SNR weighting. */
  snr(timesteps: TimestepsLike): Float64Array;
  /** The config as `scheduler_config.json` content (with `_class_name`). */
  toJSON(): JsonConfig;
  dispose(): void;
}

export function checkOneOf(className: string, key: string, value: unknown, allowed: readonly string[]): void {
  if (!allowed.includes(value as string)) {
    throw new Error(`${className}: ${key} '${String(value)}' is not supported (expected one of ${allowed.join(", ")})`);
  }
}

export function checkNotSet(className: string, config: object, keys: string[]): void {
  const c = config as Record<string, unknown>;
  for (const k of keys) {
    if (c[k] !== false && c[k] !== null && c[k] !== undefined) {
      throw new Error(`${className}: config option ${k}=${JSON.stringify(c[k])} is not supported by controlnet-ts`);
    }
  }
}

export function checkStepCount(className: string, n: number, T: number): void {
  if (!Number.isInteger(n) || n < 1) throw new Error(`${className}: num_inference_steps must be a positive integer, got ${n}`);
  if (n > T) {
    throw new Error(`${className}: num_inference_steps (${n}) cannot be larger than num_train_timesteps (${T})`);
  }
}

/** `np.linspace(0, T-1, n).round()[::-1]` as integers. */
export function linspaceGrid(T: number, n: number): number[] {
  return Array.from(npLinspace(0, T - 1, n), roundHalfEven).reverse();
}

/** `(np.arange(0, n) * ratio).round()[::-1] + offset` with ratio an integer. */
export function leadingGrid(n: number, ratio: number, offset: number): number[] {
  return Array.from({ length: n }, (_, i) => i * ratio + offset).reverse();
}

/** `np.round(np.arange(T, 0, -T/n)) - 1`. */
export function trailingGrid(T: number, n: number): number[] {
  return Array.from(npArange(T, 0, -T / n), (v) => roundHalfEven(v) - 1);
}

/** Index of `t` in `grid` with diffusers' rule: the second match if there are several, else the first. */
export function indexForTimestep(grid: number[], t: number, fallbackToLast = false): number {
  const hits: number[] = [];
  grid.forEach((v, i) => v === t && hits.push(i));
  if (hits.length === 0) {
    if (fallbackToLast) return grid.length - 1;
    throw new Error(`timestep ${t} is not in the scheduler's timesteps [${grid.slice(0, 4).join(", ")}, …]`);
  }
  return hits.length > 1 ? hits[1]! : hits[0]!;
}

export abstract class SchedulerBase<C extends CommonSchedulerConfig> implements Scheduler {
  abstract readonly className: string;
  readonly order: number = 1;
  readonly config: Readonly<C>;
  readonly betas: Float64Array;
  readonly alphas: Float64Array;
  readonly alphasCumprod: Float64Array;
  timesteps: number[];
  numInferenceSteps: number | null = null;
  protected beginIndex: number | null = null;

  protected constructor(className: string, defaults: C, config: Partial<C>) {
    this.config = Object.freeze(extractInitConfig(className, defaults, {}, config).config);
    checkOneOf(className, "prediction_type", this.config.prediction_type, ["epsilon", "v_prediction", "sample"]);
    checkOneOf(className, "timestep_spacing", this.config.timestep_spacing, ["linspace", "leading", "trailing"]);
    this.betas = makeBetas(this.config, className);
    const { alphas, alphasCumprod } = cumprodAlphas(this.betas);
    this.alphas = alphas;
    this.alphasCumprod = alphasCumprod;
    this.timesteps = Array.from({ length: this.config.num_train_timesteps }, (_, i) => this.config.num_train_timesteps - 1 - i);
  }

  get initNoiseSigma(): number {
    return 1;
  }

  abstract setTimesteps(numInferenceSteps: number): void;
  abstract step(modelOutput: tf.Tensor, timestep: number, sample: tf.Tensor, options?: StepOptions): SchedulerOutput;

  setBeginIndex(index: number): void {
    this.beginIndex = index;
  }

  scaleModelInput(sample: tf.Tensor, _timestep: number): tf.Tensor {
    return sample.clone();
  }

  addNoise(originalSamples: tf.Tensor, noise: tf.Tensor, timesteps: TimestepsLike): tf.Tensor {
    return addNoise(this.alphasCumprod, originalSamples, noise, timesteps);
  }

  getVelocity(sample: tf.Tensor, noise: tf.Tensor, timesteps: TimestepsLike): tf.Tensor {
    return getVelocity(this.alphasCumprod, sample, noise, timesteps);
  }

  snr(timesteps: TimestepsLike): Float64Array {
    return computeSnr(this.alphasCumprod, timesteps);
  }

  protected requireTimesteps(): void {
    if (this.numInferenceSteps === null) {
      throw new Error(`${this.className}: call setTimesteps(numInferenceSteps) before step()`);
    }
  }

  /** Noise for a stochastic step: explicit, seeded, or tfjs' unseeded RNG, in that order. */
  protected stepNoise(shape: number[], options: StepOptions): tf.Tensor {
    if (options.noise) {
      if (options.noise.shape.join() !== shape.join()) {
        throw new Error(`${this.className}: step noise has shape [${options.noise.shape}], expected [${shape}]`);
      }
      return options.noise;
    }
    return options.generator ? options.generator.randn(shape) : tf.randomNormal(shape, 0, 1, "float32");
  }

  toJSON(): JsonConfig {
    return { _class_name: this.className, ...(this.config as object) };
  }

  dispose(): void {}
}
