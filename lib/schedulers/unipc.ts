/**
 * UniPCMultistepScheduler (Zhao et al. 2023): a predictor (UniP) plus corrector (UniC) multistep solver. This is the
 * scheduler the diffusers ControlNet validation swaps in (`UniPCMultistepScheduler.from_config(pipe.scheduler.config)`),
 * so its defaults are the ones that matter for SD1.5: bh2, order 2, predict_x0, lower_order_final, linspace spacing.
 *
 * Scalar coefficients are computed with float32 rounding at each operation, like diffusers' 0-d float32 tensors, so
 * trajectories agree with diffusers to float32 noise. The scheduler keeps the last `solver_order` converted model
 * outputs and the last sample (its own tensors, freed on `setTimesteps`/`dispose`).
 */
import { tf } from "../engine/index.js";
import type { JsonConfig } from "./config.js";
import { extractInitConfig } from "./config.js";
import { f32, npLinspace, roundHalfEven, solveSmall } from "./numeric.js";
import {
  SchedulerBase, checkNotSet, checkOneOf, checkStepCount, indexForTimestep, trailingGrid,
  type CommonSchedulerConfig, type SchedulerOutput, type StepOptions,
} from "./scheduler.js";
import type { TimestepsLike } from "./training.js";
import { timestepsToArray, perSample } from "./training.js";

export interface UniPCMultistepSchedulerConfig extends CommonSchedulerConfig {
  solver_order: number;
  thresholding: boolean;
  dynamic_thresholding_ratio: number;
  sample_max_value: number;
  predict_x0: boolean;
  solver_type: string;
  lower_order_final: boolean;
  disable_corrector: number[];
  solver_p: null;
  use_karras_sigmas: boolean;
  use_exponential_sigmas: boolean;
  use_beta_sigmas: boolean;
  use_flow_sigmas: boolean;
  flow_shift: number;
  final_sigmas_type: string;
  use_dynamic_shifting: boolean;
  time_shift_type: string;
  sigma_min: number | null;
  sigma_max: number | null;
  shift_terminal: number | null;
}

export const UNIPC_DEFAULTS: UniPCMultistepSchedulerConfig = {
  num_train_timesteps: 1000,
  beta_start: 0.0001,
  beta_end: 0.02,
  beta_schedule: "linear",
  trained_betas: null,
  solver_order: 2,
  prediction_type: "epsilon",
  thresholding: false,
  dynamic_thresholding_ratio: 0.995,
  sample_max_value: 1.0,
  predict_x0: true,
  solver_type: "bh2",
  lower_order_final: true,
  disable_corrector: [],
  solver_p: null,
  use_karras_sigmas: false,
  use_exponential_sigmas: false,
  use_beta_sigmas: false,
  use_flow_sigmas: false,
  flow_shift: 1.0,
  timestep_spacing: "linspace",
  steps_offset: 0,
  final_sigmas_type: "zero",
  rescale_betas_zero_snr: false,
  use_dynamic_shifting: false,
  time_shift_type: "exponential",
  sigma_min: null,
  sigma_max: null,
  shift_terminal: null,
};

/** α_t, σ_t and λ_t = log α_t − log σ_t of a VP "sigma" (σ/α), in float32. */
function alphaSigmaLambda(sigma: number): { alpha: number; sigmaT: number; lambda: number } {
  const alpha = f32(1 / f32(Math.sqrt(f32(f32(sigma * sigma) + 1))));
  const sigmaT = f32(sigma * alpha);
  const lambda = f32(f32(Math.log(alpha)) - f32(Math.log(sigmaT)));
  return { alpha, sigmaT, lambda };
}

export class UniPCMultistepScheduler extends SchedulerBase<UniPCMultistepSchedulerConfig> {
  static readonly className = "UniPCMultistepScheduler";
  readonly className = UniPCMultistepScheduler.className;
  /** σ_t/α_t at every training timestep (float32 values). */
  readonly trainSigmas: Float64Array;
  /** σ/α at each inference step, plus the final one (0 for final_sigmas_type "zero"). */
  sigmas: Float64Array;
  private modelOutputs: (tf.Tensor | null)[];
  private timestepList: (number | null)[];
  private lowerOrderNums = 0;
  private lastSample: tf.Tensor | null = null;
  private thisOrder = 1;
  private stepIndex: number | null = null;

  constructor(config: Partial<UniPCMultistepSchedulerConfig> = {}) {
    const c = { ...config };
    // diffusers maps the DPM-Solver solver types onto bh2.
    if (c.solver_type !== undefined && ["midpoint", "heun", "logrho"].includes(c.solver_type)) c.solver_type = "bh2";
    super(UniPCMultistepScheduler.className, UNIPC_DEFAULTS, c);
    checkOneOf(this.className, "solver_type", this.config.solver_type, ["bh1", "bh2"]);
    checkOneOf(this.className, "final_sigmas_type", this.config.final_sigmas_type, ["zero", "sigma_min"]);
    checkNotSet(this.className, this.config, [
      "thresholding", "solver_p", "use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas", "use_flow_sigmas",
      "use_dynamic_shifting", "shift_terminal",
    ]);
    const order = this.config.solver_order;
    if (!Number.isInteger(order) || order < 1 || order > 3) throw new Error(`${this.className}: solver_order must be 1, 2 or 3, got ${order}`);
    if (this.config.rescale_betas_zero_snr) this.alphasCumprod[this.alphasCumprod.length - 1] = 2 ** -24;
    this.trainSigmas = this.alphasCumprod.map((a) => f32(Math.sqrt(f32(f32(1 - a) / a))));
    this.sigmas = this.trainSigmas;
    this.modelOutputs = new Array<tf.Tensor | null>(order).fill(null);
    this.timestepList = new Array<number | null>(order).fill(null);
  }

  static fromConfig(source: JsonConfig, overrides: Partial<UniPCMultistepSchedulerConfig> = {}): UniPCMultistepScheduler {
    return new UniPCMultistepScheduler(
      extractInitConfig(UniPCMultistepScheduler.className, UNIPC_DEFAULTS, source, overrides).config,
    );
  }

  get currentStepIndex(): number | null {
    return this.stepIndex;
  }

  setTimesteps(n: number): void {
    const T = this.config.num_train_timesteps;
    checkStepCount(this.className, n, T);
    const spacing = this.config.timestep_spacing;
    let ts: number[];
    if (spacing === "linspace") {
      ts = Array.from(npLinspace(0, T - 1, n + 1), roundHalfEven).reverse().slice(0, -1);
    } else if (spacing === "leading") {
      const ratio = Math.floor(T / (n + 1));
      ts = Array.from({ length: n + 1 }, (_, i) => i * ratio).reverse().slice(0, -1).map((t) => t + this.config.steps_offset);
    } else {
      ts = trailingGrid(T, n);
    }
    const last = this.config.final_sigmas_type === "zero" ? 0 : this.trainSigmas[0]!;
    this.sigmas = Float64Array.from([...ts.map((t) => this.trainSigmas[t]!), last]);
    this.timesteps = ts;
    this.numInferenceSteps = ts.length;
    this.resetState();
  }

  private resetState(): void {
    for (const m of this.modelOutputs) m?.dispose();
    this.lastSample?.dispose();
    this.modelOutputs = new Array<tf.Tensor | null>(this.config.solver_order).fill(null);
    this.timestepList = new Array<number | null>(this.config.solver_order).fill(null);
    this.lowerOrderNums = 0;
    this.lastSample = null;
    this.thisOrder = 1;
    this.stepIndex = null;
    this.beginIndex = null;
  }

  override dispose(): void {
    this.resetState();
  }

  /** The data prediction x0 (predict_x0) or noise prediction the solver works with. */
  private convertModelOutput(modelOutput: tf.Tensor, sample: tf.Tensor): tf.Tensor {
    const { alpha, sigmaT } = alphaSigmaLambda(this.sigmas[this.stepIndex!]!);
    const pt = this.config.prediction_type;
    if (this.config.predict_x0) {
      if (pt === "epsilon") return tf.div(tf.sub(sample, tf.mul(sigmaT, modelOutput)), alpha);
      if (pt === "sample") return modelOutput.clone();
      return tf.sub(tf.mul(alpha, sample), tf.mul(sigmaT, modelOutput));
    }
    if (pt === "epsilon") return modelOutput.clone();
    if (pt === "sample") return tf.div(tf.sub(sample, tf.mul(alpha, modelOutput)), sigmaT);
    return tf.add(tf.mul(alpha, modelOutput), tf.mul(sigmaT, sample));
  }

  /** h·φ-coefficients shared by UniP and UniC: returns hh, hφ₁, B(h), the R matrix and b vector. */
  private coefficients(h: number, rks: number[], order: number) {
    const hh = this.config.predict_x0 ? -h : h;
    const hPhi1 = f32(Math.expm1(hh));
    let hPhiK = f32(f32(hPhi1 / hh) - 1);
    let factorial = 1;
    const Bh = this.config.solver_type === "bh1" ? hh : f32(Math.expm1(hh));
    const R: number[][] = [];
    const b: number[] = [];
    for (let i = 1; i <= order; i++) {
      R.push(rks.map((r) => f32(r ** (i - 1))));
      b.push(f32(f32(hPhiK * factorial) / Bh));
      factorial *= i + 1;
      hPhiK = f32(f32(hPhiK / hh) - f32(1 / factorial));
    }
    return { hh, hPhi1, Bh, R, b };
  }

  /** Σ_k w_k·D_k over tensors. */
  private static combine(weights: number[], tensors: tf.Tensor[]): tf.Tensor {
    let acc = tf.mul(f32(weights[0]!), tensors[0]!);
    for (let k = 1; k < tensors.length; k++) acc = tf.add(acc, tf.mul(f32(weights[k]!), tensors[k]!));
    return acc;
  }

  /** The base update x_t = (σ_t/σ_s0)·x − α_t·hφ₁·m0 (x0 form) or (α_t/α_s0)·x − σ_t·hφ₁·m0 (ε form). */
  private baseUpdate(x: tf.Tensor, m0: tf.Tensor, t: ReturnType<typeof alphaSigmaLambda>, s0: ReturnType<typeof alphaSigmaLambda>, hPhi1: number): tf.Tensor {
    if (this.config.predict_x0) return tf.sub(tf.mul(f32(t.sigmaT / s0.sigmaT), x), tf.mul(f32(t.alpha * hPhi1), m0));
    return tf.sub(tf.mul(f32(t.alpha / s0.alpha), x), tf.mul(f32(t.sigmaT * hPhi1), m0));
  }

  /** UniP: predicts the sample at step_index+1 from the history. */
  private predictor(x: tf.Tensor, order: number): tf.Tensor {
    const i0 = this.stepIndex!;
    const m0 = this.modelOutputs[this.modelOutputs.length - 1]!;
    const at = alphaSigmaLambda(this.sigmas[i0 + 1]!);
    const as0 = alphaSigmaLambda(this.sigmas[i0]!);
    const h = f32(at.lambda - as0.lambda);
    const rks: number[] = [];
    const D1s: tf.Tensor[] = [];
    for (let i = 1; i < order; i++) {
      const mi = this.modelOutputs[this.modelOutputs.length - (i + 1)]!;
      const rk = f32(f32(alphaSigmaLambda(this.sigmas[i0 - i]!).lambda - as0.lambda) / h);
      rks.push(rk);
      D1s.push(tf.div(tf.sub(mi, m0), rk));
    }
    rks.push(1);
    const { hPhi1, Bh, R, b } = this.coefficients(h, rks, order);
    const base = this.baseUpdate(x, m0, at, as0, hPhi1);
    if (D1s.length === 0) return base;
    const rhosP = order === 2 ? [0.5] : solveSmall(R.slice(0, -1).map((r) => r.slice(0, -1)), b.slice(0, -1)).map(f32);
    const predRes = UniPCMultistepScheduler.combine(rhosP, D1s);
    const scale = f32((this.config.predict_x0 ? at.alpha : at.sigmaT) * Bh);
    return tf.sub(base, tf.mul(scale, predRes));
  }

  /** UniC: corrects the sample at step_index using the model output just computed there. */
  private corrector(modelT: tf.Tensor, lastSample: tf.Tensor, order: number): tf.Tensor {
    const i0 = this.stepIndex!;
    const m0 = this.modelOutputs[this.modelOutputs.length - 1]!;
    const at = alphaSigmaLambda(this.sigmas[i0]!);
    const as0 = alphaSigmaLambda(this.sigmas[i0 - 1]!);
    const h = f32(at.lambda - as0.lambda);
    const rks: number[] = [];
    const D1s: tf.Tensor[] = [];
    for (let i = 1; i < order; i++) {
      const mi = this.modelOutputs[this.modelOutputs.length - (i + 1)]!;
      const rk = f32(f32(alphaSigmaLambda(this.sigmas[i0 - (i + 1)]!).lambda - as0.lambda) / h);
      rks.push(rk);
      D1s.push(tf.div(tf.sub(mi, m0), rk));
    }
    rks.push(1);
    const { hPhi1, Bh, R, b } = this.coefficients(h, rks, order);
    const rhosC = order === 1 ? [0.5] : solveSmall(R, b).map(f32);
    const base = this.baseUpdate(lastSample, m0, at, as0, hPhi1);
    const D1t = tf.sub(modelT, m0);
    let corr = tf.mul(rhosC[rhosC.length - 1]!, D1t);
    if (D1s.length > 0) corr = tf.add(UniPCMultistepScheduler.combine(rhosC.slice(0, -1), D1s), corr);
    const scale = f32((this.config.predict_x0 ? at.alpha : at.sigmaT) * Bh);
    return tf.sub(base, tf.mul(scale, corr));
  }

  step(modelOutput: tf.Tensor, timestep: number, sample: tf.Tensor, _options: StepOptions = {}): SchedulerOutput {
    this.requireTimesteps();
    if (this.stepIndex === null) this.stepIndex = this.beginIndex ?? indexForTimestep(this.timesteps, timestep, true);
    if (this.stepIndex >= this.timesteps.length) {
      throw new Error(`${this.className}: step() called more times than there are timesteps (${this.timesteps.length}); call setTimesteps again`);
    }
    const useCorrector = this.stepIndex > 0 && !this.config.disable_corrector.includes(this.stepIndex - 1) && this.lastSample !== null;
    const prevSample = tf.tidy(() => {
      const converted = this.convertModelOutput(modelOutput, sample);
      const x = useCorrector ? this.corrector(converted, this.lastSample!, this.thisOrder) : sample.clone();
      const evicted = this.modelOutputs.shift();
      this.modelOutputs.push(tf.keep(converted));
      this.timestepList.shift();
      this.timestepList.push(timestep);
      if (evicted) evicted.dispose();
      const order = this.config.solver_order;
      const thisOrder = this.config.lower_order_final ? Math.min(order, this.timesteps.length - this.stepIndex!) : order;
      this.thisOrder = Math.min(thisOrder, this.lowerOrderNums + 1);
      this.lastSample?.dispose();
      this.lastSample = tf.keep(x);
      return this.predictor(x, this.thisOrder);
    });
    if (this.lowerOrderNums < this.config.solver_order) this.lowerOrderNums++;
    this.stepIndex++;
    return { prevSample };
  }

  /** Forward process at inference timesteps (img2img): α_t·x0 + σ_t·ε with the σ of each timestep's step index. */
  override addNoise(originalSamples: tf.Tensor, noise: tf.Tensor, timesteps: TimestepsLike): tf.Tensor {
    const ts = timestepsToArray(timesteps);
    const idx = ts.map((t) =>
      this.beginIndex === null ? indexForTimestep(this.timesteps, t, true) : (this.stepIndex ?? this.beginIndex),
    );
    const coeffs = idx.map((i) => alphaSigmaLambda(this.sigmas[i]!));
    return tf.tidy(() =>
      tf.add(
        tf.mul(perSample(coeffs.map((c) => c.alpha), originalSamples.rank), originalSamples),
        tf.mul(perSample(coeffs.map((c) => c.sigmaT), originalSamples.rank), noise),
      ),
    );
  }
}
