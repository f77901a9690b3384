/**
 * The AdamW update on host memory, for the optimizers whose state lives outside the device (offload, 8-bit).
 *
 * Every intermediate is rounded to float32 (Math.fround) in the same order as the device ops in adamw.ts, so on a
 * backend whose elementwise kernels are IEEE float32 (cpu, wasm) the host update is bit-identical to the device one.
 */
import type { AdamWHyper } from "./types.js";
import type { AdamWScalars } from "../../engine/index.js";

const f = Math.fround;

/** Scalars of one step (the fused kernel's, lib/engine/fused.ts), rounded to float32 as the device's `tf.scalar`s are. */
export type HostScalars = AdamWScalars;

export function hostScalars(h: AdamWHyper, s: { decay: number; stepSize: number; bc2Sqrt: number }): HostScalars {
  return {
    decay: f(s.decay),
    oneMinusBeta1: f(1 - h.beta1),
    beta2: f(h.beta2),
    oneMinusBeta2: f(1 - h.beta2),
    bc2Sqrt: f(s.bc2Sqrt),
    eps: f(h.eps),
    negStepSize: f(-s.stepSize),
  };
}

/** In place over [start, end): p, m, v updated from g. */
export function adamwUpdateRange(
  p: Float32Array,
  g: Float32Array,
  m: Float32Array,
  v: Float32Array,
  c: HostScalars,
  start = 0,
  end = p.length,
): void {
  for (let i = start; i < end; i++) {
    const gi = g[i]!;
    const mi = m[i]!;
    const p1 = f(p[i]! * c.decay);
    const m1 = f(mi + f(f(gi - mi) * c.oneMinusBeta1));
    const v1 = f(f(v[i]! * c.beta2) + f(f(gi * gi) * c.oneMinusBeta2));
    const denom = f(f(f(Math.sqrt(v1)) / c.bc2Sqrt) + c.eps);
    p[i] = f(p1 + f(f(m1 / denom) * c.negStepSize));
    m[i] = m1;
    v[i] = v1;
  }
}
