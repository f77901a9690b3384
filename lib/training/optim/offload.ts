/**
 * AdamW with its state offloaded to host memory: the DeepSpeed ZeRO-2 CPU-offload analogue (the README's 8 GB recipe).
 * m and v (and an fp32 master copy of the parameters) live in host Float32Arrays; the update runs on the host and only
 * the new parameter values go back to the device. Results equal the on-device AdamW (same float32 op sequence).
 */
import { adamwUpdateRange, type HostScalars } from "./host-update.js";
import { HostOptimizer, type HostOptimizerOptions } from "./host-optimizer.js";
import { expectFloat, readStep, stepTensor, type NamedVariables, type StateTensor } from "./types.js";

export class OffloadedAdamW extends HostOptimizer {
  readonly kind = "adamw-offload" as const;
  private readonly moments = new Map<string, { m: Float32Array; v: Float32Array }>();

  constructor(params: NamedVariables, opts: HostOptimizerOptions) {
    super(params, opts, true);
  }

  protected updateHost(name: string, p: Float32Array, g: Float32Array, c: HostScalars): void {
    let st = this.moments.get(name);
    if (!st) {
      st = { m: new Float32Array(p.length), v: new Float32Array(p.length) };
      this.moments.set(name, st);
    }
    adamwUpdateRange(p, g, st.m, st.v, c);
  }

  stateDict(): Map<string, StateTensor> {
    const out = new Map<string, StateTensor>([["step", stepTensor(this.steps)]]);
    for (const [name, st] of this.moments) {
      const shape = [...this.params.get(name)!.shape];
      out.set(`${name}.exp_avg`, { dtype: "float32", shape, data: Float32Array.from(st.m) });
      out.set(`${name}.exp_avg_sq`, { dtype: "float32", shape, data: Float32Array.from(st.v) });
    }
    return out;
  }

  loadStateDict(state: Map<string, StateTensor>): void {
    if (state.has("int8_blocksize")) throw new Error("optimizer state was written by AdamW8bit; cannot load it into AdamW");
    const step = readStep(state);
    this.moments.clear();
    for (const [name, p] of this.params) {
      if (!state.has(`${name}.exp_avg`)) continue;
      this.moments.set(name, {
        m: Float32Array.from(expectFloat(state, `${name}.exp_avg`, p.size)),
        v: Float32Array.from(expectFloat(state, `${name}.exp_avg_sq`, p.size)),
      });
    }
    this.steps = step;
  }

  protected hostStateBytes(): number {
    let n = 0;
    for (const st of this.moments.values()) n += st.m.byteLength + st.v.byteLength;
    return n;
  }

  override dispose(): void {
    super.dispose();
    this.moments.clear();
  }
}
