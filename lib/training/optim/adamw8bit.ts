/**
 * AdamW with block-wise 8-bit states: the `--use_8bit_adam` analogue of bitsandbytes' AdamW8bit.
 *
 * As in bitsandbytes: the first moment uses the signed dynamic map, the second the unsigned one; one float32 absmax
 * per block of `blockSize` elements (256 in current bitsandbytes, 2048 in older releases); parameters with fewer than
 * `minQuantizedSize` (4096) elements keep 32-bit states. Per parameter and block: dequantise m and v → the float32
 * AdamW update (same op sequence as adamw.ts) → requantise with the new block absmax.
 *
 * tfjs has no 8-bit dtype (a Uint8Array becomes an int32 tensor), so the states live in host Uint8Arrays and the update
 * runs on the host (host-optimizer.ts): about 2 bytes/param of state plus 8 bytes per block, against 8 bytes/param.
 */
import { adamwUpdateRange, type HostScalars } from "./host-update.js";
import { HostOptimizer, type HostOptimizerOptions } from "./host-optimizer.js";
import { dequantizeBlock, dynamicCode, numBlocks, quantizeBlock } from "./quantize.js";
import { expectFloat, readStep, stepTensor, type NamedVariables, type StateTensor } from "./types.js";

export interface AdamW8bitOptions extends HostOptimizerOptions {
  /** Elements per quantisation block (default 256). */
  blockSize?: number;
  /** Parameters smaller than this keep float32 states (bitsandbytes' min_8bit_size, default 4096). */
  minQuantizedSize?: number;
}

interface Quantized {
  kind: "q8";
  q1: Uint8Array;
  absmax1: Float32Array;
  q2: Uint8Array;
  absmax2: Float32Array;
}
interface Full {
  kind: "f32";
  m: Float32Array;
  v: Float32Array;
}

export class AdamW8bit extends HostOptimizer {
  readonly kind = "adamw8bit" as const;
  readonly blockSize: number;
  readonly minQuantizedSize: number;
  private readonly states = new Map<string, Quantized | Full>();
  private scratchM: Float32Array;
  private scratchV: Float32Array;

  constructor(params: NamedVariables, opts: AdamW8bitOptions) {
    // No host master copy: that would cost 4 bytes/param and defeat the point of 8-bit states.
    super(params, opts, false);
    this.blockSize = opts.blockSize ?? 256;
    this.minQuantizedSize = opts.minQuantizedSize ?? 4096;
    if (!Number.isInteger(this.blockSize) || this.blockSize < 1) throw new Error(`blockSize must be a positive integer`);
    this.scratchM = new Float32Array(this.blockSize);
    this.scratchV = new Float32Array(this.blockSize);
  }

  private stateOf(name: string, n: number): Quantized | Full {
    let st = this.states.get(name);
    if (!st) {
      if (n >= this.minQuantizedSize) {
        const nb = numBlocks(n, this.blockSize);
        // byte arrays padded to a multiple of 4 so stateDict can view them as int32 without copying twice
        st = { kind: "q8", q1: new Uint8Array(pad4(n)), absmax1: new Float32Array(nb), q2: new Uint8Array(pad4(n)), absmax2: new Float32Array(nb) };
        // zero state: the code index of 0 (absmax 0 dequantises everything to 0 anyway)
        st.q1.fill(dynamicCode(true).nearest(0));
        st.q2.fill(dynamicCode(false).nearest(0));
      } else {
        st = { kind: "f32", m: new Float32Array(n), v: new Float32Array(n) };
      }
      this.states.set(name, st);
    }
    return st;
  }

  protected updateHost(name: string, p: Float32Array, g: Float32Array, c: HostScalars): void {
    const n = p.length;
    const st = this.stateOf(name, n);
    if (st.kind === "f32") {
      adamwUpdateRange(p, g, st.m, st.v, c);
      return;
    }
    const code1 = dynamicCode(true);
    const code2 = dynamicCode(false);
    const bs = this.blockSize;
    for (let b = 0, s = 0; s < n; b++, s += bs) {
      const e = Math.min(s + bs, n);
      const len = e - s;
      const m = this.scratchM.subarray(0, len);
      const v = this.scratchV.subarray(0, len);
      dequantizeBlock(st.q1, st.absmax1[b]!, s, e, code1, m);
      dequantizeBlock(st.q2, st.absmax2[b]!, s, e, code2, v);
      adamwUpdateRange(p.subarray(s, e), g.subarray(s, e), m, v, c);
      st.absmax1[b] = quantizeBlock(m, st.q1, s, e, code1, 0);
      st.absmax2[b] = quantizeBlock(v, st.q2, s, e, code2, 0);
    }
  }

  stateDict(): Map<string, StateTensor> {
    const out = new Map<string, StateTensor>([
      ["step", stepTensor(this.steps)],
      ["int8_blocksize", { dtype: "int32", shape: [], data: Int32Array.of(this.blockSize) }],
    ]);
    for (const [name, st] of this.states) {
      if (st.kind === "f32") {
        const shape = [...this.params.get(name)!.shape];
        out.set(`${name}.exp_avg`, { dtype: "float32", shape, data: Float32Array.from(st.m) });
        out.set(`${name}.exp_avg_sq`, { dtype: "float32", shape, data: Float32Array.from(st.v) });
      } else {
        // 8-bit codes packed four to an int32 (the checkpoint tensor format has no uint8; little-endian byte order)
        out.set(`${name}.state1`, packBytes(st.q1));
        out.set(`${name}.state2`, packBytes(st.q2));
        out.set(`${name}.absmax1`, { dtype: "float32", shape: [st.absmax1.length], data: Float32Array.from(st.absmax1) });
        out.set(`${name}.absmax2`, { dtype: "float32", shape: [st.absmax2.length], data: Float32Array.from(st.absmax2) });
      }
    }
    return out;
  }

  loadStateDict(state: Map<string, StateTensor>): void {
    const bs = state.get("int8_blocksize");
    if (!bs) throw new Error("optimizer state has no 'int8_blocksize': it was not written by AdamW8bit");
    if (Number(bs.data[0]) !== this.blockSize) {
      throw new Error(`optimizer state uses 8-bit blocks of ${bs.data[0]}, this optimizer ${this.blockSize}`);
    }
    const step = readStep(state);
    this.states.clear();
    for (const [name, p] of this.params) {
      const n = p.size;
      if (state.has(`${name}.exp_avg`)) {
        this.states.set(name, {
          kind: "f32",
          m: Float32Array.from(expectFloat(state, `${name}.exp_avg`, n)),
          v: Float32Array.from(expectFloat(state, `${name}.exp_avg_sq`, n)),
        });
      } else if (state.has(`${name}.state1`)) {
        const nb = numBlocks(n, this.blockSize);
        this.states.set(name, {
          kind: "q8",
          q1: unpackBytes(state.get(`${name}.state1`)!, n, `${name}.state1`),
          q2: unpackBytes(state.get(`${name}.state2`)!, n, `${name}.state2`),
          absmax1: Float32Array.from(expectFloat(state, `${name}.absmax1`, nb)),
          absmax2: Float32Array.from(expectFloat(state, `${name}.absmax2`, nb)),
        });
      }
    }
    this.steps = step;
  }

  protected hostStateBytes(): number {
    let bytes = 0;
    for (const st of this.states.values()) {
      bytes += st.kind === "f32" ? st.m.byteLength + st.v.byteLength : st.q1.byteLength + st.q2.byteLength + st.absmax1.byteLength + st.absmax2.byteLength;
    }
    return bytes;
  }

  override dispose(): void {
    super.dispose();
    this.states.clear();
  }
}

function pad4(n: number): number {
  return Math.ceil(n / 4) * 4;
}

function packBytes(q: Uint8Array): StateTensor {
  const copy = new Uint8Array(pad4(q.length));
  copy.set(q);
  return { dtype: "int32", shape: [copy.length / 4], data: new Int32Array(copy.buffer) };
}

function unpackBytes(t: StateTensor | undefined, n: number, key: string): Uint8Array {
  if (!t || t.dtype !== "int32" || t.data.length !== pad4(n) / 4) throw new Error(`optimizer state: '${key}' missing or of the wrong size`);
  const out = new Uint8Array(pad4(n));
  out.set(new Uint8Array(t.data.buffer, t.data.byteOffset, pad4(n)));
  return out;
}
