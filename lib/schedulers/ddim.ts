/** DDIMScheduler (Song et al. 2020): deterministic at eta = 0; the scheduler of diffusers' tiny ControlNet tests. */
import { tf } from "../engine/index.js";
import type { JsonConfig } from "./config.js";
import { extractInitConfig } from "./config.js";
import { f32 } from "./numeric.js";
import {
  SchedulerBase, checkNotSet, checkStepCount, leadingGrid, linspaceGrid, trailingGrid,
  type CommonSchedulerConfig, type SchedulerOutput, type StepOptions,
} from "./scheduler.js";

export interface DDIMSchedulerConfig extends CommonSchedulerConfig {
  clip_sample: boolean;
  set_alpha_to_one: boolean;
  thresholding: boolean;
  dynamic_thresholding_ratio: number;
  clip_sample_range: number;
  sample_max_value: number;
}

export const DDIM_DEFAULTS: DDIMSchedulerConfig = {
  num_train_timesteps: 1000,
  beta_start: 0.0001,
  beta_end: 0.02,
  beta_schedule: "linear",
  trained_betas: null,
  clip_sample: true,
  set_alpha_to_one: true,
  steps_offset: 0,
  prediction_type: "epsilon",
  thresholding: false,
  dynamic_thresholding_ratio: 0.995,
  clip_sample_range: 1.0,
  sample_max_value: 1.0,
  timestep_spacing: "leading",
  rescale_betas_zero_snr: false,
};

export class DDIMScheduler extends SchedulerBase<DDIMSchedulerConfig> {
  static readonly className = "DDIMScheduler";
  readonly className = DDIMScheduler.className;
  /** ᾱ used past the last step: 1, or ᾱ_0 when set_alpha_to_one is false (SD). */
  readonly finalAlphaCumprod: number;

  constructor(config: Partial<DDIMSchedulerConfig> = {}) {
    super(DDIMScheduler.className, DDIM_DEFAULTS, config);
    checkNotSet(this.className, this.config, ["thresholding"]);
    this.finalAlphaCumprod = this.config.set_alpha_to_one ? 1 : this.alphasCumprod[0]!;
  }

  static fromConfig(source: JsonConfig, overrides: Partial<DDIMSchedulerConfig> = {}): DDIMScheduler {
    return new DDIMScheduler(extractInitConfig(DDIMScheduler.className, DDIM_DEFAULTS, source, overrides).config);
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

  /** diffusers steps back by T // n whatever the spacing; we do the same for parity. */
  previousTimestep(t: number): number {
    this.requireTimesteps();
    return t - Math.floor(this.config.num_train_timesteps / this.numInferenceSteps!);
  }

  private alphaPrev(prevT: number): number {
    return prevT >= 0 ? this.alphasCumprod[prevT]! : this.finalAlphaCumprod;
  }

  /** σ_t² of the DDIM posterior (float32 like diffusers). */
  variance(t: number, prevT: number): number {
    const aT = this.alphasCumprod[t]!;
    const aPrev = this.alphaPrev(prevT);
    return f32(f32(f32(1 - aPrev) / f32(1 - aT)) * f32(1 - f32(aT / aPrev)));
  }

  step(modelOutput: tf.Tensor, t: number, sample: tf.Tensor, options: StepOptions = {}): SchedulerOutput {
    this.requireTimesteps();
    if (!Number.isInteger(t) || t < 0 || t >= this.config.num_train_timesteps) {
      throw new Error(`${this.className}: timestep ${t} out of range`);
    }
    const eta = options.eta ?? 0;
    const prevT = this.previousTimestep(t);
    const aT = this.alphasCumprod[t]!;
    const aPrev = this.alphaPrev(prevT);
    const bT = f32(1 - aT);
    const sqrtA = f32(Math.sqrt(aT));
    const sqrtB = f32(Math.sqrt(bT));
    const std = f32(eta * f32(Math.sqrt(this.variance(t, prevT))));
    const dirCoeff = f32(Math.sqrt(f32(f32(1 - aPrev) - f32(std * std))));
    const sqrtAPrev = f32(Math.sqrt(aPrev));
    return tf.tidy(() => {
      let x0: tf.Tensor;
      let eps: tf.Tensor;
      const pt = this.config.prediction_type;
      if (pt === "epsilon") {
        x0 = tf.div(tf.sub(sample, tf.mul(sqrtB, modelOutput)), sqrtA);
        eps = modelOutput;
      } else if (pt === "sample") {
        x0 = modelOutput.clone();
        eps = tf.div(tf.sub(sample, tf.mul(sqrtA, x0)), sqrtB);
      } else {
        x0 = tf.sub(tf.mul(sqrtA, sample), tf.mul(sqrtB, modelOutput));
        eps = tf.add(tf.mul(sqrtA, modelOutput), tf.mul(sqrtB, sample));
      }
      if (this.config.clip_sample) x0 = tf.clipByValue(x0, -this.config.clip_sample_range, this.config.clip_sample_range);
      if (options.useClippedModelOutput) eps = tf.div(tf.sub(sample, tf.mul(sqrtA, x0)), sqrtB);
      let prev = tf.add(tf.mul(sqrtAPrev, x0), tf.mul(dirCoeff, eps));
      if (eta > 0) prev = tf.add(prev, tf.mul(std, this.stepNoise(sample.shape, options)));
      return { prevSample: prev, predOriginalSample: x0 };
    });
  }
}
