/**
 * EulerDiscreteScheduler (Karras et al. 2022, Algorithm 2): first-order steps in σ = √((1−ᾱ)/ᾱ) with the model input
 * scaled by 1/√(σ²+1). Its timesteps are floats (linspace spacing gives non-integer t), which the UNet accepts.
 */
import { tf } from "../engine/index.js";
import type { JsonConfig } from "./config.js";
import { extractInitConfig } from "./config.js";
import { f32, npInterpIndex, npLinspace, npArange, roundHalfEven } from "./numeric.js";
import {
  SchedulerBase, checkNotSet, checkOneOf, checkStepCount, indexForTimestep,
  type CommonSchedulerConfig, type SchedulerOutput, type StepOptions,
} from "./scheduler.js";
import { perSample, timestepsToArray, type TimestepsLike } from "./training.js";

export interface EulerDiscreteSchedulerConfig extends CommonSchedulerConfig {
  interpolation_type: string;
  use_karras_sigmas: boolean;
  use_exponential_sigmas: boolean;
  use_beta_sigmas: boolean;
  sigma_min: number | null;
  sigma_max: number | null;
  timestep_type: string;
  final_sigmas_type: string;
}

export const EULER_DEFAULTS: EulerDiscreteSchedulerConfig = {
  num_train_timesteps: 1000,
  beta_start: 0.0001,
  beta_end: 0.02,
  beta_schedule: "linear",
  trained_betas: null,
  prediction_type: "epsilon",
  interpolation_type: "linear",
  use_karras_sigmas: false,
  use_exponential_sigmas: false,
  use_beta_sigmas: false,
  sigma_min: null,
  sigma_max: null,
  timestep_spacing: "linspace",
  timestep_type: "discrete",
  steps_offset: 0,
  rescale_betas_zero_snr: false,
  final_sigmas_type: "zero",
};

export class EulerDiscreteScheduler extends SchedulerBase<EulerDiscreteSchedulerConfig> {
  static readonly className = "EulerDiscreteScheduler";
  readonly className = EulerDiscreteScheduler.className;
  /** σ at every training timestep (index = timestep), float32 values. */
  readonly trainSigmas: Float64Array;
  /** σ at each inference step plus the final one. */
  sigmas: Float64Array;
  private stepIndex: number | null = null;

  constructor(config: Partial<EulerDiscreteSchedulerConfig> = {}) {
    super(EulerDiscreteScheduler.className, EULER_DEFAULTS, config);
    checkOneOf(this.className, "interpolation_type", this.config.interpolation_type, ["linear"]);
    checkOneOf(this.className, "timestep_type", this.config.timestep_type, ["discrete"]);
    checkOneOf(this.className, "final_sigmas_type", this.config.final_sigmas_type, ["zero", "sigma_min"]);
    checkNotSet(this.className, this.config, ["use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas"]);
    if (this.config.rescale_betas_zero_snr) this.alphasCumprod[this.alphasCumprod.length - 1] = 2 ** -24;
    this.trainSigmas = this.alphasCumprod.map((a) => f32(Math.sqrt(f32(f32(1 - a) / a))));
    // Before setTimesteps diffusers holds the full training grid, descending, with a final 0.
    this.sigmas = Float64Array.from([...Array.from(this.trainSigmas).reverse(), 0]);
    this.timesteps = Array.from({ length: this.config.num_train_timesteps }, (_, i) => this.config.num_train_timesteps - 1 - i);
  }

  static fromConfig(source: JsonConfig, overrides: Partial<EulerDiscreteSchedulerConfig> = {}): EulerDiscreteScheduler {
    return new EulerDiscreteScheduler(extractInitConfig(EulerDiscreteScheduler.className, EULER_DEFAULTS, source, overrides).config);
  }

  override get initNoiseSigma(): number {
    let max = 0;
    for (const s of this.sigmas) max = Math.max(max, s);
    if (this.config.timestep_spacing === "linspace" || this.config.timestep_spacing === "trailing") return max;
    return f32(Math.sqrt(f32(f32(max * max) + 1)));
  }

  get currentStepIndex(): number | null {
    return this.stepIndex;
  }

  setTimesteps(n: number): void {
    const T = this.config.num_train_timesteps;
    checkStepCount(this.className, n, T);
    this.numInferenceSteps = n;
    const spacing = this.config.timestep_spacing;
    let ts: number[];
    if (spacing === "linspace") ts = Array.from(npLinspace(0, T - 1, n), f32).reverse();
    else if (spacing === "leading") {
      const ratio = Math.floor(T / n);
      ts = Array.from({ length: n }, (_, i) => f32(i * ratio + this.config.steps_offset)).reverse();
    } else ts = Array.from(npArange(T, 0, -T / n), (v) => f32(roundHalfEven(v) - 1));
    const last = this.config.final_sigmas_type === "zero" ? 0 : this.trainSigmas[0]!;
    this.sigmas = Float64Array.from([...ts.map((t) => f32(npInterpIndex(t, this.trainSigmas))), last]);
    this.timesteps = ts;
    this.stepIndex = null;
    this.beginIndex = null;
  }

  private ensureStepIndex(timestep: number): number {
    if (this.stepIndex === null) this.stepIndex = this.beginIndex ?? indexForTimestep(this.timesteps, timestep);
    return this.stepIndex;
  }

  override scaleModelInput(sample: tf.Tensor, timestep: number): tf.Tensor {
    const sigma = this.sigmas[this.ensureStepIndex(timestep)]!;
    return tf.tidy(() => tf.div(sample, f32(Math.sqrt(f32(f32(sigma * sigma) + 1)))));
  }

  step(modelOutput: tf.Tensor, timestep: number, sample: tf.Tensor, options: StepOptions = {}): SchedulerOutput {
    this.requireTimesteps();
    const i = this.ensureStepIndex(timestep);
    if (i >= this.timesteps.length) throw new Error(`${this.className}: step() called past the last timestep; call setTimesteps again`);
    const sigma = this.sigmas[i]!;
    const { sChurn = 0, sTmin = 0, sTmax = Infinity, sNoise = 1 } = options;
    const gamma = sTmin <= sigma && sigma <= sTmax ? Math.min(sChurn / (this.sigmas.length - 1), 2 ** 0.5 - 1) : 0;
    const sigmaHat = f32(sigma * (gamma + 1));
    const dt = f32(this.sigmas[i + 1]! - sigmaHat);
    const out = tf.tidy(() => {
      let x = sample;
      if (gamma > 0) {
        const eps = tf.mul(this.stepNoise(sample.shape, options), sNoise);
        x = tf.add(x, tf.mul(eps, f32(Math.sqrt(f32(f32(sigmaHat * sigmaHat) - f32(sigma * sigma))))));
      }
      let x0: tf.Tensor;
      const pt = this.config.prediction_type;
      if (pt === "sample") x0 = modelOutput.clone();
      else if (pt === "epsilon") x0 = tf.sub(x, tf.mul(sigmaHat, modelOutput));
      else {
        const s2 = f32(f32(sigma * sigma) + 1);
        x0 = tf.add(tf.mul(modelOutput, f32(-sigma / f32(Math.sqrt(s2)))), tf.div(x, s2));
      }
      const derivative = tf.div(tf.sub(x, x0), sigmaHat);
      return { prevSample: tf.add(x, tf.mul(derivative, dt)), predOriginalSample: x0 };
    });
    this.stepIndex = i + 1;
    return out;
  }

  /** Forward process on the σ grid (img2img): x0 + σ·ε at each timestep's step index. */
  override addNoise(originalSamples: tf.Tensor, noise: tf.Tensor, timesteps: TimestepsLike): tf.Tensor {
    const ts = timestepsToArray(timesteps);
    const sig = ts.map((t) =>
      this.sigmas[this.beginIndex === null ? indexForTimestep(this.timesteps, t) : (this.stepIndex ?? this.beginIndex)]!,
    );
    return tf.tidy(() => tf.add(originalSamples, tf.mul(noise, perSample(sig, originalSamples.rank))));
  }
}
