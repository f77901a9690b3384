/**
 * Seeded pseudo-random numbers for the data pipeline. Everything random in lib/data (synthetic rows, per-epoch
 * shuffles, prompt dropping) is derived from a seed plus integer coordinates (row index, epoch, position), never
 * from hidden generator state, so any row or any point of an epoch can be reproduced on its own, which is what
 * lazy generation and resume need.
 */

/** splitmix32 finaliser: a strong 32-bit integer hash. */
export function mix32(x: number): number {
  x = (x + 0x9e3779b9) | 0;
  x ^= x >>> 16;
  x = Math.imul(x, 0x21f0aaad);
  x ^= x >>> 15;
  x = Math.imul(x, 0x735a2d97);
  x ^= x >>> 15;
  return x >>> 0;
}

/** Hashes a seed and any number of integer coordinates into one 32-bit value. */
export function hashInts(...parts: number[]): number {
  let h = 0x1b873593;
  for (const p of parts) {
    // split large (up to 2^53) integers into two 32-bit halves so seeds above 2^32 still matter
    const lo = p >>> 0;
    const hi = Math.floor(p / 4294967296) >>> 0;
    h = mix32(h ^ lo);
    h = mix32(h ^ hi);
  }
  return h;
}

/** sfc32-style generator: small, fast, good statistical quality, fully determined by its 32-bit seed. */
export class Prng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(seed: number) {
    this.a = mix32(seed);
    this.b = mix32(this.a ^ 0x85ebca6b);
    this.c = mix32(this.b ^ 0xc2b2ae35);
    this.d = 1;
    for (let i = 0; i < 12; i++) this.nextU32(); // warm up
  }

  /** A uniform 32-bit unsigned integer. */
  nextU32(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0;
    this.d = (this.d + 1) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.c = (this.c + t) | 0;
    return t >>> 0;
  }

  /** A uniform float in [0, 1). */
  next(): number {
    return this.nextU32() / 4294967296;
  }

  /** A uniform float in [lo, hi). */
  uniform(lo: number, hi: number): number {
    return lo + (hi - lo) * this.next();
  }

  /** A uniform integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
}

/** A uniform float in [0, 1) determined by the seed and the coordinates alone (no generator state). */
export function hashUniform(...parts: number[]): number {
  return hashInts(...parts) / 4294967296;
}

/** A Fisher–Yates permutation of [0, n) drawn from `rng`. */
export function permutation(n: number, rng: Prng): Uint32Array {
  const p = new Uint32Array(n);
  for (let i = 0; i < n; i++) p[i] = i;
  for (let i = n - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    const t = p[i]!;
    p[i] = p[j]!;
    p[j] = t;
  }
  return p;
}
