/**
 * Fused kernels, where the engine has them (the native CPU engine: lib/engine/native/fused.ts):
 *  - attention: softmax(q·kᵀ·scale)·v for head-split q [BH,N,d], k/v [BH,M,d] in one kernel that never materialises
 *    the [BH,N,M] scores;
 *  - GroupNorm, optionally followed by SiLU (a resnet's norm → nonlinearity), in one kernel instead of ~17 ops.
 * Each returns null where the running backend has no such kernel (wasm, cpu, the GPU engine), and the caller
 * composes the same math from tfjs ops (lib/models). Gradients are registered with the kernels.
 */
import { tf } from "./tf.js";

export const FUSED_ATTENTION = "ControlnetTsFusedAttention";
export const FUSED_ATTENTION_GRAD = "ControlnetTsFusedAttentionGrad";
export const FUSED_GROUP_NORM = "ControlnetTsFusedGroupNorm";
export const FUSED_GROUP_NORM_GRAD = "ControlnetTsFusedGroupNormGrad";

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

export function fusedAttention(q: tf.Tensor3D, k: tf.Tensor3D, v: tf.Tensor3D, scale: number): tf.Tensor3D | null {
  if (!hasFusedAttention()) return null;
  const [out, lse] = tf.engine().runKernel(FUSED_ATTENTION, { q, k, v }, { scale }) as tf.Tensor[];
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
