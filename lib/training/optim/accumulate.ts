/**
 * Gradient accumulation as accelerate does it: each micro-batch's loss is divided by gradient_accumulation_steps
 * before backprop (the caller does that), and the gradients are summed — torch's `.grad +=` — until the optimizer
 * step. Inputs are disposed as they are added, so at most one extra set of gradients is alive.
 */
import { tf } from "../../engine/index.js";

export class GradientAccumulator {
  private sums = new Map<string, tf.Tensor>();
  private n = 0;

  /** Number of micro-batches added since the last take(). */
  get count(): number {
    return this.n;
  }

  /** Adds (and disposes) one micro-batch's gradients. */
  add(grads: Map<string, tf.Tensor> | Record<string, tf.Tensor>): void {
    const entries = grads instanceof Map ? [...grads] : Object.entries(grads);
    for (const [name, g] of entries) {
      const prev = this.sums.get(name);
      if (!prev) {
        this.sums.set(name, g);
        continue;
      }
      this.sums.set(name, tf.add(prev, g));
      prev.dispose();
      g.dispose();
    }
    this.n++;
  }

  /** The summed gradients (ownership passes to the caller); the accumulator is empty afterwards. */
  take(): Map<string, tf.Tensor> {
    const out = this.sums;
    this.sums = new Map();
    this.n = 0;
    return out;
  }

  dispose(): void {
    for (const g of this.sums.values()) g.dispose();
    this.sums.clear();
    this.n = 0;
  }
}
