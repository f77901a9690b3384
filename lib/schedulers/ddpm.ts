/** DDPMScheduler (Ho et al. 2020): ancestral sampling; the training scheduler of the diffusers ControlNet script. */
import { tf } from "../engine/index.js";
import type { JsonConfig } from "./config.js";
import { extractInitConfig } from "./config.js";
import { f32 } from "./numeric.js";
import {
  SchedulerBase, checkOneOf, checkNotSet, checkStepCount, leadingGrid, linspaceGrid, trailingGrid,
  type CommonSchedulerConfig, type SchedulerOutput, type StepOptions,
} from "./scheduler.js";

export interface DDPMSchedulerConfig extends CommonSchedulerConfig {
  variance_type: string;
  clip_sample: boolean;
  thresholding: boolean;
  dynamic_thresholding_ratio: number;
  clip_sample_range: number;
  sample_max_value: number;
}

export const DDPM_DEFAULTS: DDPMSchedulerConfig = {
  num_train_timesteps: 1000,
  beta_start: 0.0001,
  beta_end: 0.02,
  beta_schedule: "linear",
  trained_betas: null,
  variance_type: "fixed_small",
  clip_sample: true,
  prediction_type: "epsilon",
  thresholding: false,
  dynamic_thresholding_ratio: 0.995,
  clip_sample_range: 1.0,
  sample_max_value: 1.0,
  timestep_spacing: "leading",
  steps_offset: 0,
  rescale_betas_zero_snr: false,
};

export class DDPMScheduler extends SchedulerBase<DDPMSchedulerConfig> {
  static readonly className = "DDPMScheduler";
  readonly className = DDPMScheduler.className;

  constructor(config: Partial<DDPMSchedulerConfig> = {}) {
    super(DDPMScheduler.className, DDPM_DEFAULTS, config);
    checkOneOf(this.className, "variance_type", this.config.variance_type, ["fixed_small", "fixed_small_log", "fixed_large"]);
    checkNotSet(this.className, this.config, ["thresholding"]);
  }

  static fromConfig(source: JsonConfig, overrides: Partial<DDPMSchedulerConfig> = {}): DDPMScheduler {
    return new DDPMScheduler(extractInitConfig(DDPMScheduler.className, DDPM_DEFAULTS, source, overrides).config);
  }

  setTimesteps(n: number): void {
    const T = this.config.num_train_timesteps;
    checkStepCount(this.className, n, T);
    this.numInferenceSteps = n;
    const spacing = this.config.timestep_spacing;
    if (spacing === "linspace") this.timesteps = linspaceGrid(T, n);
    else if (spacing === "leading") this.timesteps = leadingGrid(n, Math.floor(T / n), this.config.steps_offset);
    else this.timesteps = trailingGrid(T, n);
  }

  /** The timestep after `t` on the current grid (−1 at the end; t−1 before `setTimesteps`). */
  previousTimestep(t: number): number {
    if (this.numInferenceSteps === null) return t - 1;
    const i = this.timesteps.indexOf(t);
    if (i < 0) throw new Error(`${this.className}: timestep ${t} is not in the current schedule`);
    return i === this.timesteps.length - 1 ? -1 : this.timesteps[i + 1]!;
  }

  /** Posterior standard deviation used for the added noise (float32 like diffusers). */
  stepStd(t: number): number {
    const prevT = this.previousTimestep(t);
    const aT = this.alphasCumprod[t]!;
    const aPrev = prevT >= 0 ? this.alphasCumprod[prevT]! : 1;
    const betaT = f32(1 - f32(aT / aPrev));
    let variance = f32(f32(f32(1 - aPrev) / f32(1 - aT)) * betaT);
    variance = Math.max(variance, 1e-20);
    switch (this.config.variance_type) {
      case "fixed_small_log":
        return f32(Math.exp(f32(0.5 * f32(Math.log(variance)))));
      case "fixed_large":
        return f32(Math.sqrt(betaT));
      default:
        return f32(Math.sqrt(variance));
    }
  }

  step(modelOutput: tf.Tensor, t: number, sample: tf.Tensor, options: StepOptions = {}): SchedulerOutput {
    if (!Number.isInteger(t) || t < 0 || t >= this.config.num_train_timesteps) {
      throw new Error(`${this.className}: timestep ${t} out of range`);
    }
    const prevT = this.previousTimestep(t);
    const aT = this.alphasCumprod[t]!;
    const aPrev = prevT >= 0 ? this.alphasCumprod[prevT]! : 1;
    const bT = f32(1 - aT);
    const bPrev = f32(1 - aPrev);
    const curAlpha = f32(aT / aPrev);
    const curBeta = f32(1 - curAlpha);
    const sqrtA = f32(Math.sqrt(aT));
    const sqrtB = f32(Math.sqrt(bT));
    const x0Coeff = f32(f32(f32(Math.sqrt(aPrev)) * curBeta) / bT);
    const xtCoeff = f32(f32(f32(Math.sqrt(curAlpha)) * bPrev) / bT);
    return tf.tidy(() => {
      let x0: tf.Tensor;
      const pt = this.config.prediction_type;
      if (pt === "epsilon") x0 = tf.div(tf.sub(sample, tf.mul(sqrtB, modelOutput)), sqrtA);
      else if (pt === "sample") x0 = modelOutput.clone();
      else x0 = tf.sub(tf.mul(sqrtA, sample), tf.mul(sqrtB, modelOutput));
      if (this.config.clip_sample) x0 = tf.clipByValue(x0, -this.config.clip_sample_range, this.config.clip_sample_range);
      let prev = tf.add(tf.mul(x0Coeff, x0), tf.mul(xtCoeff, sample));
      if (t > 0) {
        const noise = this.stepNoise(sample.shape, options);
        prev = tf.add(prev, tf.mul(this.stepStd(t), noise));
      }
      return { prevSample: prev, predOriginalSample: x0 };
    });
  }
}
