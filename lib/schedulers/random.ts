/**
 * A seeded random generator for sampling (initial latents, DDPM/DDIM/Euler noise). It plays the role of
 * `torch.Generator().manual_seed(seed)` but is NOT torch's Mersenne-Twister/Philox stream: the same seed gives the
 * same images run to run here, never the same numbers as PyTorch. Parity tests therefore pass initial latents and
 * noise explicitly. Numbers are drawn on the host (xoshiro128** + Box–Muller), so they do not depend on the tfjs
 * backend.
 */
import { tf } from "../engine/index.js";

export class Generator {
  private s = new Uint32Array(4);
  private spare: number | null = null;
  /** The seed last given to `manualSeed` (or the constructor). */
  initialSeed = 0;

  constructor(seed = 0) {
    this.manualSeed(seed);
  }

  /** Re-seeds (any integer, including 0 and negatives); returns this, like torch. */
  manualSeed(seed: number): this {
    if (!Number.isFinite(seed)) throw new Error(`Generator seed must be a finite number, got ${seed}`);
    this.initialSeed = seed;
    // splitmix32 over the low and high 32-bit halves spreads any seed over the whole 128-bit state.
    let x = (Math.trunc(seed) >>> 0) ^ Math.imul(Math.floor(Math.trunc(seed) / 2 ** 32) | 0, 0x9e3779b9);
    for (let i = 0; i < 4; i++) {
      x = (x + 0x9e3779b9) | 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      this.s[i] = (z ^ (z >>> 16)) >>> 0;
    }
    if (this.s.every((v) => v === 0)) this.s[0] = 1;
    this.spare = null;
    return this;
  }

  /** Next uniform 32-bit integer (xoshiro128**). */
  nextUint32(): number {
    const s = this.s;
    const result = Math.imul(rotl(Math.imul(s[1]!, 5), 7), 9) >>> 0;
    const t = s[1]! << 9;
    s[2] ^= s[0]!;
    s[3] ^= s[1]!;
    s[1] ^= s[2]!;
    s[0] ^= s[3]!;
    s[2] ^= t;
    s[3] = rotl(s[3]!, 11);
    return result;
  }

  /** Uniform in [0, 1) with 53 random bits. */
  uniform(): number {
    const hi = this.nextUint32() >>> 5;
    const lo = this.nextUint32() >>> 6;
    return (hi * 67108864 + lo) / 9007199254740992;
  }

  /** One standard normal sample (Box–Muller, both values used). */
  normal(): number {
    if (this.spare !== null) {
      const v = this.spare;
      this.spare = null;
      return v;
    }
    let u = 0;
    while (u === 0) u = this.uniform();
    const v = this.uniform();
    const r = Math.sqrt(-2 * Math.log(u));
    this.spare = r * Math.sin(2 * Math.PI * v);
    return r * Math.cos(2 * Math.PI * v);
  }

  /** `n` standard normal samples as float32. */
  normalArray(n: number): Float32Array {
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = this.normal();
    return out;
  }

  /** A float32 tensor of standard normal samples (like `torch.randn(shape, generator=g)`). */
  randn(shape: number[]): tf.Tensor {
    const n = shape.reduce((a, b) => a * b, 1);
    return tf.tensor(this.normalArray(n), shape, "float32");
  }

  /** Copy of the internal state, to replay a stream. */
  getState(): { s: number[]; spare: number | null; initialSeed: number } {
    return { s: [...this.s], spare: this.spare, initialSeed: this.initialSeed };
  }

  setState(state: { s: number[]; spare: number | null; initialSeed: number }): this {
    this.s.set(state.s);
    this.spare = state.spare;
    this.initialSeed = state.initialSeed;
    return this;
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

/** Standard normal noise from `generator` if given, else from tfjs' unseeded RNG. */
export function randnLike(shape: number[], generator?: Generator): tf.Tensor {
  return generator ? generator.randn(shape) : tf.randomNormal(shape, 0, 1, "float32");
}
