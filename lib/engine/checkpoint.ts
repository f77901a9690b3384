/**
 * Gradient checkpointing for tfjs (it has none): run a block forward without keeping its intermediates, and
 * recompute them during backprop.
 *
 * `tf.customGrad` runs the forward inside a single taped node whose only saved tensors are the block's inputs.
 * Its gradient function re-runs the block under a nested `engine.gradients` call and returns gradients for the
 * inputs and for the block's trainable weights (which must be passed in explicitly: weights captured in a closure
 * get no gradient through customGrad).
 *
 * A nested gradient computation inside an outer backprop replaces and then clears `engine.state.activeTape`, which
 * crashes the outer backprop; we restore it. This touches tfjs internals, hence tfjs is pinned to 4.22.0.
 */
import { tf } from "./tf.js";

interface EngineInternals {
  state: { activeTape: unknown };
  gradients<T extends tf.Tensor>(f: () => T, xs: tf.Tensor[], dy?: T, allowNoGradients?: boolean): { value: T; grads: tf.Tensor[] };
}

/**
 * Returns fn(...inputs), computed so that backprop recomputes fn instead of storing its activations.
 * `weights` are the trainable tensors fn reads (gradients flow to them); frozen weights need not be listed.
 * fn must be deterministic (no random ops), since it runs twice.
 */
export function checkpoint(fn: (...inputs: tf.Tensor[]) => tf.Tensor, inputs: tf.Tensor[], weights: tf.Tensor[] = []): tf.Tensor {
  const n = inputs.length;
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
        return targets.map((t, i) => grads[i] ?? tf.zerosLike(t));
      } finally {
        eng.state.activeTape = tape;
      }
    };
    return { value, gradFunc };
  }) as unknown as Parameters<typeof tf.customGrad>[0]);
  return op(...inputs, ...weights);
}
