/**
 * Training-side helpers shared with lib/training: the forward process q(x_t | x_0), the v-prediction target and
 * the SNR used by Min-SNR weighting. They need only ᾱ (`alphasCumprod`), so they take the table rather than a
 * scheduler. Coefficients are computed like diffusers (float32 sqrt of the float32 table), then broadcast over
 * NHWC (or any rank) per batch element.
 */
import { tf } from "../engine/index.js";
import { f32 } from "./numeric.js";

/** Timesteps as a host array or a 1-D int/float tensor (read back: they are a handful of numbers). */
export type TimestepsLike = ArrayLike<number> | tf.Tensor;

export function timestepsToArray(timesteps: TimestepsLike): number[] {
  if (timesteps instanceof tf.Tensor) return Array.from(timesteps.dataSync());
  return Array.from(timesteps);
}

function checkedTimesteps(alphasCumprod: Float64Array, timesteps: TimestepsLike, batch: number, what: string): number[] {
  const ts = timestepsToArray(timesteps);
  if (ts.length !== batch && ts.length !== 1) {
    throw new Error(`${what}: got ${ts.length} timesteps for a batch of ${batch} (give one per sample, or one for all)`);
  }
  for (const t of ts) {
    if (!Number.isInteger(t) || t < 0 || t >= alphasCumprod.length) {
      throw new Error(`${what}: timestep ${t} is not an integer in [0, ${alphasCumprod.length - 1}]`);
    }
  }
  return ts;
}

/** A [B,1,1,…] float32 tensor (rank `rank`) holding one coefficient per batch element. */
export function perSample(values: ArrayLike<number>, rank: number): tf.Tensor {
  const shape = [values.length, ...new Array<number>(Math.max(rank - 1, 0)).fill(1)];
  return tf.tensor(Float32Array.from(values), shape, "float32");
}

/** √ᾱ_t and √(1−ᾱ_t) in float32, as diffusers computes them. */
export function noiseCoefficients(alphasCumprod: Float64Array, ts: number[]): { sqrtAlpha: number[]; sqrtOneMinusAlpha: number[] } {
  return {
    sqrtAlpha: ts.map((t) => f32(Math.sqrt(alphasCumprod[t]!))),
    sqrtOneMinusAlpha: ts.map((t) => f32(Math.sqrt(f32(1 - alphasCumprod[t]!)))),
  };
}

/** x_t = √ᾱ_t·x0 + √(1−ᾱ_t)·ε (diffusers `add_noise` of DDPM/DDIM). */
export function addNoise(alphasCumprod: Float64Array, x0: tf.Tensor, noise: tf.Tensor, timesteps: TimestepsLike): tf.Tensor {
  const ts = checkedTimesteps(alphasCumprod, timesteps, x0.shape[0] ?? 1, "addNoise");
  const { sqrtAlpha, sqrtOneMinusAlpha } = noiseCoefficients(alphasCumprod, ts);
  return tf.tidy(() => tf.add(tf.mul(perSample(sqrtAlpha, x0.rank), x0), tf.mul(perSample(sqrtOneMinusAlpha, x0.rank), noise)));
}

/** v = √ᾱ_t·ε − √(1−ᾱ_t)·x0, the v-prediction target (diffusers `get_velocity`). */
export function getVelocity(alphasCumprod: Float64Array, x0: tf.Tensor, noise: tf.Tensor, timesteps: TimestepsLike): tf.Tensor {
  const ts = checkedTimesteps(alphasCumprod, timesteps, x0.shape[0] ?? 1, "getVelocity");
  const { sqrtAlpha, sqrtOneMinusAlpha } = noiseCoefficients(alphasCumprod, ts);
  return tf.tidy(() => tf.sub(tf.mul(perSample(sqrtAlpha, x0.rank), noise), tf.mul(perSample(sqrtOneMinusAlpha, x0.rank), x0)));
}

/** SNR(t) = ᾱ_t / (1 − ᾱ_t), computed as (√ᾱ/√(1−ᾱ))² like diffusers' `compute_snr`. */
export function computeSnr(alphasCumprod: Float64Array, timesteps: TimestepsLike): Float64Array {
  const ts = timestepsToArray(timesteps);
  const { sqrtAlpha, sqrtOneMinusAlpha } = noiseCoefficients(alphasCumprod, ts);
  return Float64Array.from(ts, (_, i) => f32(f32(sqrtAlpha[i]! / sqrtOneMinusAlpha[i]!) ** 2));
}

/**
 * Min-SNR-γ loss weights (Hang et al. 2023) as the diffusers training scripts apply them: min(SNR, γ)/SNR for ε
 * targets, min(SNR, γ)/(SNR+1) for v targets, min(SNR, γ) for x0 targets. A zero SNR (zero-terminal-SNR schedules)
 * gets weight 1 for ε instead of 0/0.
 */
export function minSnrWeights(snr: ArrayLike<number>, gamma: number, predictionType: "epsilon" | "v_prediction" | "sample"): Float64Array {
  if (!(gamma > 0)) throw new Error(`minSnrWeights: snr_gamma must be > 0, got ${gamma}`);
  return Float64Array.from(snr, (s) => {
    const m = Math.min(s, gamma);
    if (predictionType === "epsilon") return s === 0 ? 1 : m / s;
    if (predictionType === "v_prediction") return m / (s + 1);
    return m;
  });
}
