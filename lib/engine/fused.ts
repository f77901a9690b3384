/**
 * Fused kernels, where the engine has them (the native CPU engine: lib/engine/native/fused.ts):
 *  - attention: softmax(q·kᵀ·scale)·v per head for q [B,N,heads·d], k/v [B,M,heads·d] (heads interleaved in the
 *    channels, as the projections produce them) in one kernel that never materialises the [B·heads,N,M] scores;
 *  - GroupNorm, optionally followed by SiLU (a resnet's norm → nonlinearity), in one kernel instead of ~17 ops;
 *  - AdamW's update of a group of parameter tensors in one kernel instead of 13 ops per tensor, bit for bit the same
 *    float32 operations (lib/training/optim/adamw.ts composes them where the kernel is missing), and the gradient
 *    clip's per-tensor 2-norms in one kernel (summed in double);
 *  - SiLU, x·sigmoid(x), one pass each way (composed: 2 full-size ops forward, ~6 backward);
 *  - LayerNorm over the last axis, row by row (composed: 9 ops forward, ~18 backward);
 *  - GEGLU, a·gelu(g) of a projection's two halves, one pass each way (composed: a split and 5 ops forward, a dozen
 *    and a concat backward);
 *  - the linear layer and the bias add as one kernel each (composed: reshapes, a broadcasting add, and a sum and
 *    reshapes backward), on the CPU and GPU builds: TensorFlow's MatMul / BiasAdd, or on the CPU build our own
 *    product and add where they are faster (lib/engine/native/linear.ts).
 * Each returns null where the running backend has no such kernel (wasm, cpu; the GPU engine has only the linear and
 * bias kernels), and the caller composes the same math from tfjs ops (lib/models). Gradients are registered with the
 * kernels.
 */
import { tf } from "./tf.js";

export const FUSED_ATTENTION = "ControlnetTsFusedAttention";
export const FUSED_ATTENTION_GRAD = "ControlnetTsFusedAttentionGrad";
export const FUSED_GROUP_NORM = "ControlnetTsFusedGroupNorm";
export const FUSED_GROUP_NORM_GRAD = "ControlnetTsFusedGroupNormGrad";
export const FUSED_ADAMW = "ControlnetTsFusedAdamW";
export const FUSED_NORMS = "ControlnetTsFusedNorms";
export const FUSED_SILU = "ControlnetTsFusedSilu";
export const FUSED_SILU_GRAD = "ControlnetTsFusedSiluGrad";
export const FUSED_LAYER_NORM = "ControlnetTsFusedLayerNorm";
export const FUSED_LAYER_NORM_GRAD = "ControlnetTsFusedLayerNormGrad";
export const FUSED_GEGLU = "ControlnetTsFusedGeglu";
export const FUSED_GEGLU_GRAD = "ControlnetTsFusedGegluGrad";
// TensorFlow's own MatMul / BiasAdd behind one tfjs kernel each (lib/engine/native/linear.ts), CPU and GPU builds
export const FUSED_LINEAR = "ControlnetTsLinear";
export const FUSED_LINEAR_GRAD_INPUT = "ControlnetTsLinearGradInput";
export const FUSED_LINEAR_GRAD_WEIGHT = "ControlnetTsLinearGradWeight";
export const FUSED_BIAS_ADD = "ControlnetTsBiasAdd";
export const FUSED_BIAS_GRAD = "ControlnetTsBiasGrad";

// CONTROLNET_TS_FUSED_KERNELS=0 turns them off (everything then composes tfjs ops, as on wasm): for comparing.
let enabled = process.env.CONTROLNET_TS_FUSED_KERNELS !== "0";

/** Turns the fused kernels on or off for what follows (a comparison, a test); returns the previous setting. */
export function useFusedKernels(on: boolean): boolean {
  const was = enabled;
  enabled = on;
  return was;
}

function has(kernel: string): boolean {
  return enabled && tf.getKernel(kernel, tf.getBackend()) !== undefined;
}

/** Whether attention runs in one fused kernel now (the planner then counts no score maps). */
export function hasFusedAttention(): boolean {
  return has(FUSED_ATTENTION);
}

/** q [B,N,heads·d], k/v [B,M,heads·d] → [B,N,heads·d]; null where the engine has no fused kernel. */
export function fusedAttention(q: tf.Tensor3D, k: tf.Tensor3D, v: tf.Tensor3D, scale: number, heads = 1): tf.Tensor3D | null {
  if (!hasFusedAttention()) return null;
  const [out, lse] = tf.engine().runKernel(FUSED_ATTENTION, { q, k, v }, { scale, heads }) as tf.Tensor[];
  lse!.dispose(); // the tape keeps its own reference for the gradient
  return out as tf.Tensor3D;
}

/** GroupNorm of channels-last x [B, …, C] (biased variance, as torch), then SiLU when `silu`. */
export function fusedGroupNorm<T extends tf.Tensor>(x: T, gamma: tf.Tensor, beta: tf.Tensor, groups: number, eps: number, silu: boolean): T | null {
  if (!has(FUSED_GROUP_NORM)) return null;
  const [y, mean, rstd] = tf.engine().runKernel(FUSED_GROUP_NORM, { x, gamma, beta }, { groups, eps, silu }) as tf.Tensor[];
  tf.dispose([mean!, rstd!]); // kept by the tape for the gradient
  return y as T;
}

/** The output of a one-input float32 kernel (SiLU, GEGLU); null where the engine has none. */
function elementwise<T extends tf.Tensor>(kernel: string, input: string, x: T): T | null {
  if (!has(kernel) || x.dtype !== "float32") return null;
  return (tf.engine().runKernel(kernel, { [input]: x }) as tf.Tensor[])[0] as T;
}

/** x·sigmoid(x) in one kernel (its gradient too); null where the engine has none. */
export function fusedSilu<T extends tf.Tensor>(x: T): T | null {
  return elementwise(FUSED_SILU, "x", x);
}

/** LayerNorm of x [.., C] over its last axis (biased variance, as torch); null where the engine has no kernel. */
export function fusedLayerNorm<T extends tf.Tensor>(x: T, gamma: tf.Tensor, beta: tf.Tensor, eps: number): T | null {
  if (!has(FUSED_LAYER_NORM) || x.dtype !== "float32") return null;
  const [y, mean, rstd] = tf.engine().runKernel(FUSED_LAYER_NORM, { x, gamma, beta }, { eps }) as tf.Tensor[];
  tf.dispose([mean!, rstd!]); // kept by the tape for the gradient
  return y as T;
}

/** h [.., 2F] → a·gelu(g) [.., F], a and g h's first and second halves (diffusers' GEGLU); null where no kernel. */
export function fusedGeglu<T extends tf.Tensor>(h: T): T | null {
  return elementwise(FUSED_GEGLU, "h", h);
}

/** x [.., K] · weight [K, N] + bias [N] → [.., N] as one kernel; null where the engine has none. */
export function fusedLinear<T extends tf.Tensor>(x: T, weight: tf.Tensor, bias: tf.Tensor | null): T | null {
  if (!has(FUSED_LINEAR) || x.dtype !== "float32" || x.rank < 2) return null;
  return tf.engine().runKernel(FUSED_LINEAR, bias ? { x, weight, bias } : { x, weight }) as T;
}

/** x [.., C] + bias [C] as TensorFlow's BiasAdd (and BiasAddGrad backward); null where the engine has none. */
export function fusedBiasAdd<T extends tf.Tensor>(x: T, bias: tf.Tensor): T | null {
  if (!has(FUSED_BIAS_ADD) || x.dtype !== "float32" || x.rank < 2) return null;
  return tf.engine().runKernel(FUSED_BIAS_ADD, { x, bias }) as T;
}

/** AdamW's float32 scalars for one step (lib/training/optim/adamw.ts computes them as torch does). */
export interface AdamWScalars {
  decay: number;
  oneMinusBeta1: number;
  beta2: number;
  oneMinusBeta2: number;
  bc2Sqrt: number;
  eps: number;
  negStepSize: number;
}

export function hasFusedAdamW(): boolean {
  return has(FUSED_ADAMW);
}

/**
 * One AdamW step for parameter tensors `p` with gradients `g` and moments `m`, `v` (equal-length lists, each tensor
 * shaped as its parameter): the new parameters and moments, as new tensors; null where the engine has no kernel.
 */
export function fusedAdamW(p: tf.Tensor[], g: tf.Tensor[], m: tf.Tensor[], v: tf.Tensor[], c: AdamWScalars): { p: tf.Tensor[]; m: tf.Tensor[]; v: tf.Tensor[] } | null {
  if (!hasFusedAdamW()) return null;
  const n = p.length;
  const inputs: Record<string, tf.Tensor> = {};
  for (let i = 0; i < n; i++) Object.assign(inputs, { [`p${i}`]: p[i]!, [`g${i}`]: g[i]!, [`m${i}`]: m[i]!, [`v${i}`]: v[i]! });
  const out = tf.engine().runKernel(FUSED_ADAMW, inputs, { n, ...c } as unknown as tf.NamedAttrMap) as tf.Tensor[];
  return { p: out.slice(0, n), m: out.slice(n, 2 * n), v: out.slice(2 * n) };
}

/** Each tensor's 2-norm, as a [N] tensor, in one kernel; null where the engine has none. */
export function fusedNorms(tensors: tf.Tensor[]): tf.Tensor1D | null {
  if (!has(FUSED_NORMS) || tensors.length === 0) return null;
  const inputs = Object.fromEntries(tensors.map((t, i) => [`t${i}`, t]));
  const [norms] = tf.engine().runKernel(FUSED_NORMS, inputs, { n: tensors.length }) as tf.Tensor[];
  return norms as tf.Tensor1D;
}
