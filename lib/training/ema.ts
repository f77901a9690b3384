/**
 * An exponential moving average of trained weights — diffusers' `EMAModel` as train_text_to_image.py's `--use_ema`
 * uses it (train_controlnet.py has no EMA; here it is a marked extension). After every optimizer step:
 *
 *   shadow ← shadow − (1 − d)·(shadow − weights),   d = min(decay, (1 + k) / (10 + k)),  k = updates so far − 1
 *
 * so the first update copies the weights (d = 0) and the effective window grows with the run: d ≈ 0.98 after 500
 * steps (the last ~55 steps count), reaching `decay` (default 0.9999) only after ~90 000. Why it matters here: a
 * ControlNet trained briefly at a constant lr jitters from step to step; its average samples closer to the outline
 * (the demo's ControlNet: IoU 0.694 → 0.732 on 64 validation outlines, lib/demo/tiny-sd.ts).
 * Memory: one more copy of the trained weights.
 */
import { tf } from "../engine/index.js";

export class EMAModel {
  /** Updates applied so far (diffusers' `optimization_step`). */
  optimizationStep = 0;
  private shadow = new Map<string, tf.Tensor>();

  constructor(private readonly params: Map<string, tf.Variable>, readonly decay = 0.9999) {
    if (!(decay >= 0 && decay <= 1)) throw new Error(`ema_decay must be in [0, 1] (got ${decay})`);
    this.capture();
  }

  /** The decay of update number `optimizationStep` (1-based), as EMAModel.get_decay without warm-up options. */
  getDecay(optimizationStep: number): number {
    const k = Math.max(0, optimizationStep - 1);
    if (k <= 0) return 0;
    return Math.min((1 + k) / (10 + k), this.decay);
  }

  /** One update from the current weights. */
  step(): void {
    this.optimizationStep++;
    const oneMinus = 1 - this.getDecay(this.optimizationStep);
    for (const [name, p] of this.params) {
      const s = this.shadow.get(name)!;
      this.shadow.set(name, tf.tidy(() => tf.sub(s, tf.mul(tf.sub(s, p), oneMinus))));
      s.dispose();
    }
  }

  /** Makes the current weights the average (used on resume, after loading the averaged weights into the model). */
  capture(): void {
    for (const [name, p] of this.params) {
      this.shadow.get(name)?.dispose();
      this.shadow.set(name, p.clone());
    }
  }

  /** Writes the average into the weights (diffusers' `copy_to`). */
  copyTo(): void {
    if (this.shadow.size === 0 && this.params.size > 0) throw new Error("the moving average was disposed (its trainer was closed)");
    for (const [name, p] of this.params) p.assign(this.shadow.get(name)!);
  }

  /** Runs `fn` with the average in the weights, then puts the trained weights back. */
  async withAveraged<T>(fn: () => T | Promise<T>): Promise<T> {
    const saved = this.swapIn();
    try {
      return await fn();
    } finally {
      this.swapOut(saved);
    }
  }

  /** withAveraged for a synchronous `fn` (saving a folder). */
  withAveragedSync<T>(fn: () => T): T {
    const saved = this.swapIn();
    try {
      return fn();
    } finally {
      this.swapOut(saved);
    }
  }

  /** The trained weights (cloned), with the average written in their place. */
  private swapIn(): Map<string, tf.Tensor> {
    const saved = new Map([...this.params].map(([n, p]) => [n, p.clone()] as const));
    this.copyTo();
    return saved;
  }

  private swapOut(saved: Map<string, tf.Tensor>): void {
    for (const [n, p] of this.params) p.assign(saved.get(n)!);
    tf.dispose([...saved.values()]);
  }

  dispose(): void {
    tf.dispose([...this.shadow.values()]);
    this.shadow.clear();
  }
}
