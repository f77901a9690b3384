/**
 * Gradient checkpointing for tfjs (it has none): run a block forward without keeping its intermediates, and
 * recompute them during backprop.
 *
 * `tf.customGrad` runs the forward inside a single taped node whose only saved tensors are the block's inputs.
 * Its gradient function re-runs the block under a nested `engine.gradients` call and returns gradients for the
 * inputs and for the block's trainable weights (which must be passed in explicitly: weights captured in a closure
 * get no gradient through customGrad).
 *
 * With a weight-gradient sink active (`withWeightGradientSink`), the weights are not inputs of the taped node: their
 * gradients go to the sink as soon as the block's backward has computed them (e.g. straight to host memory), so the
 * outer gradient call never holds all of them at once — the ZeRO-Offload way of training weights that, with their
 * gradients, would not fit in device memory.
 *
 * A nested gradient computation inside an outer backprop replaces and then clears `engine.state.activeTape`, which
 * crashes the outer backprop; we restore it. This touches tfjs internals, hence tfjs is pinned to 4.22.0.
 */
import { tf } from "./tf.js";

interface EngineInternals {
  state: { activeTape: unknown };
  gradients<T extends tf.Tensor>(f: () => T, xs: tf.Tensor[], dy?: T, allowNoGradients?: boolean): { value: T; grads: tf.Tensor[] };
}

/** Takes ownership of the gradient `grad` of `weight` (a tensor it must dispose). */
export type WeightGradientSink = (weight: tf.Tensor, grad: tf.Tensor) => void;

let activeSink: WeightGradientSink | null = null;

/**
 * Runs `fn` (a forward and its backward, e.g. a `tf.variableGrads` call) with the weight gradients of every
 * checkpointed block handed to `sink` during backward instead of being returned; weights used outside checkpointed
 * blocks still get their gradients the usual way.
 */
export function withWeightGradientSink<T>(sink: WeightGradientSink, fn: () => T): T {
  const outer = activeSink;
  activeSink = sink;
  try {
    return fn();
  } finally {
    activeSink = outer;
  }
}

/**
 * Returns fn(...inputs), computed so that backprop recomputes fn instead of storing its activations.
 * `weights` are the trainable tensors fn reads (gradients flow to them); frozen weights need not be listed.
 * fn must be deterministic (no random ops), since it runs twice.
 */
export function checkpoint(fn: (...inputs: tf.Tensor[]) => tf.Tensor, inputs: tf.Tensor[], weights: tf.Tensor[] = []): tf.Tensor {
  const n = inputs.length;
  const sink = activeSink; // decided at forward time: the backward runs later, maybe outside withWeightGradientSink
  const op = tf.customGrad(((...args: unknown[]) => {
    const save = args.pop() as (ts: tf.Tensor[]) => void;
    const xs = args.slice(0, n) as tf.Tensor[];
    save(xs);
    const value = fn(...xs);
    const gradFunc = (dy: tf.Tensor, saved: tf.Tensor[]): tf.Tensor[] => {
      const eng = tf.engine() as unknown as EngineInternals;
      const tape = eng.state.activeTape;
      try {
        const targets = [...saved, ...weights];
        const { value: v, grads } = eng.gradients(() => fn(...saved), targets, dy, true);
        v.dispose();
        if (sink) {
          weights.forEach((w, i) => {
            const g = grads[n + i];
            if (g) sink(w, g);
          });
          return saved.map((t, i) => grads[i] ?? tf.zerosLike(t));
        }
        return targets.map((t, i) => grads[i] ?? tf.zerosLike(t));
      } finally {
        eng.state.activeTape = tape;
      }
    };
    return { value, gradFunc };
  }) as unknown as Parameters<typeof tf.customGrad>[0]);
  return op(...inputs, ...(sink ? [] : weights));
}
