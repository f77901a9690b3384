/**
 * The trainer's seedable random number generator: xoshiro128** (Blackman & Vigna) with Box–Muller normals.
 *
 * Everything random in a training run (noise, timesteps, empty-prompt dropout, data order) draws from generators of
 * this kind, whose whole state is four 32-bit words plus the cached second Box–Muller value. That state goes into
 * every checkpoint, so a resumed run draws exactly the numbers the uninterrupted run would have drawn.
 * (tfjs' own random ops cannot be checkpointed: their generator state is not exposed.)
 */

export interface RngState {
  algorithm: "xoshiro128**";
  /** The four state words, as unsigned 32-bit integers. */
  s: [number, number, number, number];
  /** The cached second normal of the last Box–Muller pair, or null. */
  spare: number | null;
}

const TWO_PI = 2 * Math.PI;

/** A 32-bit finaliser (splitmix32 / murmur3 style) to spread a seed over the state. */
function mix32(x: number): number {
  x = Math.imul(x ^ (x >>> 16), 0x85ebca6b);
  x = Math.imul(x ^ (x >>> 13), 0xc2b2ae35);
  return (x ^ (x >>> 16)) >>> 0;
}

export class Rng {
  private s0 = 0;
  private s1 = 0;
  private s2 = 0;
  private s3 = 0;
  private spare: number | null = null;

  /** `seed`: any integer in [0, 2^53) (the script's --seed), or a string (hashed). */
  constructor(seed: number | string = 0) {
    this.seed(seed);
  }

  static fromState(state: RngState): Rng {
    const r = new Rng(0);
    r.setState(state);
    return r;
  }

  seed(seed: number | string): void {
    let lo: number;
    let hi: number;
    if (typeof seed === "string") {
      lo = 0x811c9dc5;
      hi = 0x01000193;
      for (let i = 0; i < seed.length; i++) {
        lo = Math.imul(lo ^ seed.charCodeAt(i), 0x01000193) >>> 0;
        hi = mix32(hi + seed.charCodeAt(i));
      }
    } else {
      if (!Number.isSafeInteger(seed) || seed < 0) throw new Error(`seed must be a non-negative safe integer, got ${seed}`);
      lo = seed >>> 0;
      hi = Math.floor(seed / 2 ** 32) >>> 0;
    }
    let x = mix32(lo ^ 0x9e3779b9) ^ mix32(hi + 0x7f4a7c15);
    const next = (): number => (x = mix32((x + 0x9e3779b9) >>> 0));
    this.s0 = next();
    this.s1 = next();
    this.s2 = next();
    this.s3 = next();
    if ((this.s0 | this.s1 | this.s2 | this.s3) === 0) this.s0 = 1; // the all-zero state is a fixed point
    this.spare = null;
  }

  /** The next 32-bit unsigned integer. */
  nextUint32(): number {
    const s1 = this.s1;
    const result = Math.imul(rotl(Math.imul(s1, 5), 7), 9) >>> 0;
    const t = s1 << 9;
    this.s2 ^= this.s0;
    this.s3 ^= this.s1;
    this.s1 ^= this.s2;
    this.s0 ^= this.s3;
    this.s2 ^= t;
    this.s3 = rotl(this.s3, 11);
    return result;
  }

  /** Uniform in [0, 1) with 53 random bits (like Python's random.random()). */
  random(): number {
    const a = this.nextUint32() >>> 5;
    const b = this.nextUint32() >>> 6;
    return (a * 67108864 + b) / 9007199254740992;
  }

  /** Uniform integer in [low, high) without modulo bias (torch.randint(low, high) semantics for the range). */
  randint(low: number, high: number): number {
    const range = high - low;
    if (!Number.isInteger(low) || !Number.isInteger(high) || range <= 0 || range > 2 ** 32) {
      throw new Error(`randint: bad range [${low}, ${high})`);
    }
    const limit = 2 ** 32 - (2 ** 32 % range); // accept values below the largest multiple of range
    let x: number;
    do x = this.nextUint32();
    while (x >= limit);
    return low + (x % range);
  }

  /** A standard normal (Box–Muller; the pair's second value is cached and is part of the state). */
  normal(): number {
    if (this.spare !== null) {
      const z = this.spare;
      this.spare = null;
      return z;
    }
    const u1 = 1 - this.random(); // (0, 1]: log stays finite
    const u2 = this.random();
    const r = Math.sqrt(-2 * Math.log(u1));
    this.spare = r * Math.sin(TWO_PI * u2);
    return r * Math.cos(TWO_PI * u2);
  }

  /** n standard normals as float32 (e.g. the noise of a batch of latents). */
  normals(n: number, out: Float32Array = new Float32Array(n)): Float32Array {
    for (let i = 0; i < n; i++) out[i] = this.normal();
    return out;
  }

  /** n integers uniform in [low, high) (e.g. the timesteps of a batch). */
  randints(n: number, low: number, high: number): Int32Array {
    const out = new Int32Array(n);
    for (let i = 0; i < n; i++) out[i] = this.randint(low, high);
    return out;
  }

  /** A uniformly random permutation of 0..n-1 (Fisher–Yates). */
  permutation(n: number): number[] {
    const a = Array.from({ length: n }, (_, i) => i);
    for (let i = n - 1; i > 0; i--) {
      const j = this.randint(0, i + 1);
      const t = a[i]!;
      a[i] = a[j]!;
      a[j] = t;
    }
    return a;
  }

  /** A new generator whose stream is independent of this one (seeded from it; advances this one by 4 draws). */
  fork(): Rng {
    const child = new Rng(0);
    child.s0 = this.nextUint32();
    child.s1 = this.nextUint32();
    child.s2 = this.nextUint32();
    child.s3 = this.nextUint32();
    if ((child.s0 | child.s1 | child.s2 | child.s3) === 0) child.s0 = 1;
    return child;
  }

  getState(): RngState {
    return { algorithm: "xoshiro128**", s: [this.s0 >>> 0, this.s1 >>> 0, this.s2 >>> 0, this.s3 >>> 0], spare: this.spare };
  }

  setState(state: RngState): void {
    if (state.algorithm !== "xoshiro128**" || !Array.isArray(state.s) || state.s.length !== 4) {
      throw new Error(`not an xoshiro128** state: ${JSON.stringify(state).slice(0, 200)}`);
    }
    for (const w of state.s) if (!Number.isInteger(w) || w < 0 || w >= 2 ** 32) throw new Error(`bad RNG state word ${w}`);
    if ((state.s[0] | state.s[1] | state.s[2] | state.s[3]) === 0) throw new Error("the all-zero RNG state is invalid");
    [this.s0, this.s1, this.s2, this.s3] = state.s;
    this.spare = state.spare;
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}
