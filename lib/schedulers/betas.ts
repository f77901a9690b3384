/**
 * Noise schedules. diffusers builds betas as float32 torch tensors and cumprods them with a float64 accumulator
 * (torch's CPU cumprod accumulates in double and rounds each output), so every table here holds float32 values in a
 * Float64Array, computed with the same roundings.
 */
import { f32, torchLinspaceF32 } from "./numeric.js";

export type BetaSchedule = "linear" | "scaled_linear" | "squaredcos_cap_v2";

export interface BetaConfig {
  num_train_timesteps: number;
  beta_start: number;
  beta_end: number;
  beta_schedule: string;
  trained_betas: number[] | null;
  rescale_betas_zero_snr: boolean;
}

/** Improved-DDPM cosine schedule ("squaredcos_cap_v2"): betas from ᾱ(t) = cos²((t+0.008)/1.008·π/2), capped. */
export function betasForAlphaBar(T: number, maxBeta = 0.999): Float64Array {
  const alphaBar = (t: number) => Math.cos(((t + 0.008) / 1.008) * (Math.PI / 2)) ** 2;
  const out = new Float64Array(T);
  for (let i = 0; i < T; i++) out[i] = f32(Math.min(1 - alphaBar((i + 1) / T) / alphaBar(i / T), maxBeta));
  return out;
}

/** Rescales betas to zero terminal SNR (Lin et al. 2023, Algorithm 1), in float32 like diffusers. */
export function rescaleZeroTerminalSnr(betas: Float64Array): Float64Array {
  const n = betas.length;
  const sqrtBar = new Float64Array(n);
  let acc = 1;
  for (let i = 0; i < n; i++) {
    acc *= f32(1 - betas[i]!);
    sqrtBar[i] = f32(Math.sqrt(f32(acc)));
  }
  const s0 = sqrtBar[0]!;
  const sT = sqrtBar[n - 1]!;
  const scale = f32(s0 / f32(s0 - sT));
  const bar = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const v = f32(f32(sqrtBar[i]! - sT) * scale);
    bar[i] = f32(v * v);
  }
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const alpha = i === 0 ? bar[0]! : f32(bar[i]! / bar[i - 1]!);
    out[i] = f32(1 - alpha);
  }
  return out;
}

export function makeBetas(cfg: BetaConfig, className: string): Float64Array {
  const T = cfg.num_train_timesteps;
  // the schedule is held as arrays of T numbers: bound T so a bad config is a message, not a RangeError
  if (!Number.isInteger(T) || T < 1 || T > 1_000_000) throw new Error(`${className}: num_train_timesteps must be an integer from 1 to 1000000, got ${T}`);
  let betas: Float64Array;
  if (cfg.trained_betas !== null && cfg.trained_betas !== undefined) {
    if (!Array.isArray(cfg.trained_betas) || cfg.trained_betas.length !== T) {
      throw new Error(`${className}: trained_betas must be an array of num_train_timesteps (${T}) numbers`);
    }
    betas = Float64Array.from(cfg.trained_betas, (b) => f32(b));
  } else if (cfg.beta_schedule === "linear") {
    betas = torchLinspaceF32(cfg.beta_start, cfg.beta_end, T);
  } else if (cfg.beta_schedule === "scaled_linear") {
    betas = torchLinspaceF32(cfg.beta_start ** 0.5, cfg.beta_end ** 0.5, T).map((b) => f32(b * b));
  } else if (cfg.beta_schedule === "squaredcos_cap_v2") {
    betas = betasForAlphaBar(T);
  } else {
    throw new Error(`${className}: beta_schedule '${cfg.beta_schedule}' is not supported (linear, scaled_linear, squaredcos_cap_v2)`);
  }
  // a β outside [0, 1] makes ᾱ negative or NaN: the loss turns NaN at step 1 and looks like a learning-rate problem
  const bad = betas.findIndex((b) => !(b >= 0 && b <= 1));
  if (bad >= 0) {
    const from = cfg.trained_betas != null ? "trained_betas" : `beta_start ${cfg.beta_start} and beta_end ${cfg.beta_end} (${cfg.beta_schedule})`;
    throw new Error(`${className}: ${from} give β = ${betas[bad]} at timestep ${bad}; every β must be in [0, 1]`);
  }
  return cfg.rescale_betas_zero_snr ? rescaleZeroTerminalSnr(betas) : betas;
}

/** ᾱ_t = Π(1 − β) with torch's CPU cumprod roundings (float32 factors, double accumulator, float32 outputs). */
export function cumprodAlphas(betas: Float64Array): { alphas: Float64Array; alphasCumprod: Float64Array } {
  const alphas = betas.map((b) => f32(1 - b));
  const alphasCumprod = new Float64Array(alphas.length);
  let acc = 1;
  for (let i = 0; i < alphas.length; i++) {
    acc *= alphas[i]!;
    alphasCumprod[i] = f32(acc);
  }
  return { alphas, alphasCumprod };
}
