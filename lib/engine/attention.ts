/**
 * Fused attention, where the engine has it: softmax(q·kᵀ·scale)·v for head-split q [BH,N,d], k/v [BH,M,d] in one
 * kernel that never materialises the [BH,N,M] scores (the native CPU engine: lib/engine/native/attention.ts).
 * `fusedAttention` returns null where the running backend has no such kernel (wasm, cpu, the GPU engine), and the
 * caller composes attention from tfjs ops (lib/models/attention.ts). Its gradient is registered with the kernel.
 */
import { tf } from "./tf.js";

export const FUSED_ATTENTION = "ControlnetTsFusedAttention";
export const FUSED_ATTENTION_GRAD = "ControlnetTsFusedAttentionGrad";

// CONTROLNET_TS_FUSED_ATTENTION=0 turns the kernel off (attention then composes tfjs ops, as on wasm): for comparing.
let enabled = process.env.CONTROLNET_TS_FUSED_ATTENTION !== "0";

/** Turns the fused kernel on or off for what follows (a comparison, a test); returns the previous setting. */
export function useFusedAttention(on: boolean): boolean {
  const was = enabled;
  enabled = on;
  return was;
}

/** Whether attention runs in one fused kernel now (the planner then counts no score maps). */
export function hasFusedAttention(): boolean {
  return enabled && tf.getKernel(FUSED_ATTENTION, tf.getBackend()) !== undefined;
}

export function fusedAttention(q: tf.Tensor3D, k: tf.Tensor3D, v: tf.Tensor3D, scale: number): tf.Tensor3D | null {
  if (!hasFusedAttention()) return null;
  const [out, lse] = tf.engine().runKernel(FUSED_ATTENTION, { q, k, v }, { scale }) as tf.Tensor[];
  lse!.dispose(); // the tape keeps its own reference for the gradient
  return out as tf.Tensor3D;
}
