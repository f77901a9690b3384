/**
 * Fused attention, where the engine has it: softmax(q·kᵀ·scale)·v for head-split q [BH,N,d], k/v [BH,M,d] in one
 * kernel that never materialises the [BH,N,M] scores (the native CPU engine: lib/engine/native/attention.ts).
 * `fusedAttention` returns null where the running backend has no such kernel (wasm, cpu, the GPU engine), and the
 * caller composes attention from tfjs ops (lib/models/attention.ts). Its gradient is registered with the kernel.
 */
import { tf } from "./tf.js";

export const FUSED_ATTENTION = "ControlnetTsFusedAttention";
export const FUSED_ATTENTION_GRAD = "ControlnetTsFusedAttentionGrad";

/** Whether the running backend computes attention in one fused kernel (the planner counts no score maps then). */
export function hasFusedAttention(): boolean {
  return tf.getKernel(FUSED_ATTENTION, tf.getBackend()) !== undefined;
}

export function fusedAttention(q: tf.Tensor3D, k: tf.Tensor3D, v: tf.Tensor3D, scale: number): tf.Tensor3D | null {
  if (!hasFusedAttention()) return null;
  const [out, lse] = tf.engine().runKernel(FUSED_ATTENTION, { q, k, v }, { scale }) as tf.Tensor[];
  lse!.dispose(); // the tape keeps its own reference for the gradient
  return out as tf.Tensor3D;
}
