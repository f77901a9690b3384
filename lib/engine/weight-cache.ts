/**
 * The wasm backend keeps, for every conv2d filter and matmul right-hand side it has run with, an XNNPACK operator
 * holding a packed copy of that weight (for conv2d also a transposed copy) until the weight tensor is disposed. For
 * a resident weight that is up to two hidden copies for the life of the model — invisible to tf.memory(), yet in
 * the 4 GiB heap (measured: a 3×3×1280×1280 filter, 59 MB, grows the heap by 118 MB on its first conv). Keeping
 * them is the right trade when the model fits (packing that filter costs ~200 ms, a cached call at 4×4 pixels
 * ~17 ms) and the wrong one under a heap budget such as the SD1.5 ControlNet's 1.45 GB of trainable weights.
 *
 * `transientWeight(w)` returns a fresh copy of `w` for one call: its operator is packed for that call and freed
 * with the copy (at the end of the enclosing tidy). Gradients flow through it to `w` unchanged.
 */
import { tf } from "./tf.js";

/** Whether the active backend caches packed weights per tensor (wasm's XNNPACK kernels do). */
export function backendCachesPackedWeights(): boolean {
  return tf.getBackend() === "wasm";
}

/** A per-call copy of a conv/matmul weight, so the backend's packed copy lives only as long as the call. */
export function transientWeight<T extends tf.Tensor>(w: T): T {
  if (!backendCachesPackedWeights()) return w;
  return tf.mul(w, tf.scalar(1)) as T;
}
