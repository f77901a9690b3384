/**
 * Shared shapes of the optimizers: what the training loop calls and what a checkpoint stores.
 *
 * `StateTensor` is structurally the io contract's `HostTensor` (lib/io/safetensors.ts), so an optimizer state dict can
 * be handed to `writeSafetensors` unchanged; it is declared here so the optimizers do not depend on the io layer.
 */
import type { tf } from "../../engine/index.js";

export interface StateTensor {
  dtype: "float32" | "int32";
  shape: number[];
  data: Float32Array | Int32Array;
}

/** torch.optim.AdamW's hyper-parameters (train_controlnet.py's --adam_* defaults). */
export interface AdamWHyper {
  /** Learning rate; the lr scheduler sets `optimizer.lr` before each step. */
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
}

export const ADAMW_DEFAULTS: Omit<AdamWHyper, "lr"> = { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 1e-2 };

/** Parameters the optimizer updates, by (diffusers) name. Only these variables are ever written. */
export type NamedVariables = Map<string, tf.Variable> | Iterable<[string, tf.Variable]>;

export interface StepOptions {
  /**
   * Dispose each gradient right after its parameter is updated (default true): the `set_grads_to_none` analogue —
   * gradients never outlive their use, so the peak during the step holds one gradient less per updated parameter.
   * With false the caller keeps (and must dispose) the gradients.
   */
  disposeGrads?: boolean;
  /** Gradients already in host memory (controlnetGradients' `hostGrads`), by parameter name; host optimizers only. */
  hostGrads?: Map<string, Float32Array>;
}

export interface StateBytes {
  /** Optimizer state held as tensors on the engine's device. */
  device: number;
  /** Optimizer state held in host (JS) memory. */
  host: number;
}

/** What the training loop needs from any of the AdamW variants. */
export interface Optimizer {
  readonly kind: "adamw" | "adamw-offload" | "adamw8bit";
  /** Current learning rate (set by the scheduler before `step`). */
  lr: number;
  /** Number of optimizer steps taken (torch's per-parameter `state["step"]`, shared here). */
  readonly stepCount: number;
  /** One AdamW update of every parameter that has a gradient in `grads` (others are left untouched, as torch does). */
  step(grads: Map<string, tf.Tensor>, opts?: StepOptions): void;
  /** Everything needed to continue the exact trajectory: step count and the moments, host copies. */
  stateDict(): Map<string, StateTensor>;
  loadStateDict(state: Map<string, StateTensor>): void;
  stateBytes(): StateBytes;
  dispose(): void;
}

export function toNamedMap(params: NamedVariables): Map<string, tf.Variable> {
  return params instanceof Map ? params : new Map(params);
}

/** torch's bias corrections and step size for AdamW at 1-based step `t` (computed in float64, as torch does on host). */
export function adamScalars(h: AdamWHyper, t: number): { decay: number; stepSize: number; bc2Sqrt: number } {
  const bc1 = 1 - Math.pow(h.beta1, t);
  const bc2 = 1 - Math.pow(h.beta2, t);
  return { decay: 1 - h.lr * h.weightDecay, stepSize: h.lr / bc1, bc2Sqrt: Math.sqrt(bc2) };
}

export function stepTensor(step: number): StateTensor {
  return { dtype: "int32", shape: [], data: Int32Array.of(step) };
}

export function readStep(state: Map<string, StateTensor>): number {
  const s = state.get("step");
  if (!s || s.data.length !== 1) throw new Error("optimizer state: missing 'step'");
  return Number(s.data[0]);
}

export function expectFloat(state: Map<string, StateTensor>, key: string, numel: number): Float32Array {
  const t = state.get(key);
  if (!t) throw new Error(`optimizer state: missing '${key}'`);
  if (t.dtype !== "float32" || t.data.length !== numel) {
    throw new Error(`optimizer state: '${key}' is ${t.dtype}[${t.data.length}], expected float32[${numel}]`);
  }
  return t.data as Float32Array;
}
