/**
 * numpy's `np.random.default_rng(seed).permutation(n)`, bit for bit: what HF datasets' `Dataset.shuffle(seed=...)`
 * draws (`generator = np.random.default_rng(seed); permutation = generator.permutation(len(self))`), so
 * train_controlnet.py's `dataset["train"].shuffle(seed=args.seed).select(range(args.max_train_samples))` keeps the
 * same rows here as there.
 *
 * Followed from numpy's sources (numpy/random/bit_generator.pyx: SeedSequence; _pcg64.pyx + src/pcg64/pcg64.h: PCG64
 * seeding, XSL-RR output and the buffered 32-bit draw; src/distributions/distributions.c: random_interval;
 * _generator.pyx: _shuffle_raw). Checked against numpy 2.4.6 by tests/data/numpy-rng.test.ts with the golden
 * permutations of tests/fixtures/numpy_rng/ (tests/reference/make_fixtures.py --only numpy_rng).
 */

const MASK32 = 0xffffffff;
const MASK64 = (1n << 64n) - 1n;
const MASK128 = (1n << 128n) - 1n;

// SeedSequence's hash constants (bit_generator.pyx)
const INIT_A = 0x43b0d7e5;
const MULT_A = 0x931e8875;
const INIT_B = 0x8b51f9dd;
const MULT_B = 0x58f38ded;
const MIX_MULT_L = 0xca01f9dd;
const MIX_MULT_R = 0x4973f715;
const XSHIFT = 16;
const POOL_SIZE = 4;

/** PCG64's default 128-bit LCG multiplier (PCG_DEFAULT_MULTIPLIER_HIGH/LOW). */
const PCG_MULTIPLIER = 0x2360ed051fc65da44385df649fccf645n;

/** _int_to_uint32_array: a non-negative integer as uint32 words, lowest first ([0] for 0). */
function intToUint32Words(seed: number): number[] {
  if (!Number.isSafeInteger(seed) || seed < 0) throw new Error(`seed must be a non-negative integer, got ${seed}`);
  const words = [seed % 2 ** 32];
  for (let n = Math.floor(seed / 2 ** 32); n > 0; n = Math.floor(n / 2 ** 32)) words.push(n % 2 ** 32);
  return words;
}

/** numpy's SeedSequence(entropy) with no spawn key and the default pool of 4 words: `generateState` feeds PCG64. */
export class SeedSequence {
  readonly pool = new Uint32Array(POOL_SIZE);

  constructor(entropy: number) {
    this.mixEntropy(intToUint32Words(entropy));
  }

  private mixEntropy(entropy: number[]): void {
    let hashConst = INIT_A;
    const hashmix = (value: number): number => {
      value = (value ^ hashConst) >>> 0;
      hashConst = Math.imul(hashConst, MULT_A) >>> 0;
      value = Math.imul(value, hashConst) >>> 0;
      return (value ^ (value >>> XSHIFT)) >>> 0;
    };
    const mix = (x: number, y: number): number => {
      const r = (Math.imul(MIX_MULT_L, x) - Math.imul(MIX_MULT_R, y)) >>> 0;
      return (r ^ (r >>> XSHIFT)) >>> 0;
    };
    const pool = this.pool;
    for (let i = 0; i < pool.length; i++) pool[i] = hashmix(i < entropy.length ? entropy[i]! : 0);
    // mix all bits together so late bits can affect earlier bits
    for (let src = 0; src < pool.length; src++) {
      for (let dst = 0; dst < pool.length; dst++) if (src !== dst) pool[dst] = mix(pool[dst]!, hashmix(pool[src]!));
    }
    // entropy beyond the pool size, mixed into every pool word
    for (let src = pool.length; src < entropy.length; src++) {
      for (let dst = 0; dst < pool.length; dst++) pool[dst] = mix(pool[dst]!, hashmix(entropy[src]!));
    }
  }

  /** generate_state(nWords, np.uint32). */
  generateState32(nWords: number): Uint32Array {
    const out = new Uint32Array(nWords);
    let hashConst = INIT_B;
    for (let i = 0; i < nWords; i++) {
      let v = (this.pool[i % this.pool.length]! ^ hashConst) >>> 0;
      hashConst = Math.imul(hashConst, MULT_B) >>> 0;
      v = Math.imul(v, hashConst) >>> 0;
      out[i] = (v ^ (v >>> XSHIFT)) >>> 0;
    }
    return out;
  }

  /** generate_state(nWords, np.uint64): twice the 32-bit words, paired little-endian. */
  generateState64(nWords: number): bigint[] {
    const w = this.generateState32(2 * nWords);
    return Array.from({ length: nWords }, (_, i) => (BigInt(w[2 * i + 1]!) << 32n) | BigInt(w[2 * i]!));
  }
}

/** numpy's PCG64 bit generator (XSL-RR 128/64), seeded as `PCG64(seed)` is. */
export class PCG64 {
  private state = 0n;
  private inc = 0n;
  /** next_uint32 hands out the high half of a 64-bit draw on the following call. */
  private hasUint32 = false;
  private uinteger = 0;

  constructor(seed: number | SeedSequence) {
    const ss = typeof seed === "number" ? new SeedSequence(seed) : seed;
    const [s0, s1, i0, i1] = ss.generateState64(4) as [bigint, bigint, bigint, bigint];
    // pcg64_set_seed: word 0 is the high half; pcg_setseq_128_srandom_r
    const initState = (s0 << 64n) | s1;
    const initSeq = (i0 << 64n) | i1;
    this.inc = ((initSeq << 1n) | 1n) & MASK128;
    this.step();
    this.state = (this.state + initState) & MASK128;
    this.step();
  }

  private step(): void {
    this.state = (this.state * PCG_MULTIPLIER + this.inc) & MASK128;
  }

  nextUint64(): bigint {
    this.step();
    const hi = this.state >> 64n;
    const x = (hi ^ this.state) & MASK64;
    const rot = hi >> 58n;
    return ((x >> rot) | (x << ((64n - rot) & 63n))) & MASK64;
  }

  nextUint32(): number {
    if (this.hasUint32) {
      this.hasUint32 = false;
      return this.uinteger;
    }
    const next = this.nextUint64();
    this.hasUint32 = true;
    this.uinteger = Number(next >> 32n);
    return Number(next & 0xffffffffn);
  }
}

/**
 * random_interval(max): uniform in [0, max] by masked rejection. numpy draws 64-bit words when max exceeds 32 bits;
 * a permutation here has fewer than 2^32 entries, so max always fits and only the 32-bit branch exists.
 */
function randomInterval(rng: PCG64, max: number): number {
  if (max === 0) return 0;
  let mask = max;
  mask |= mask >>> 1;
  mask |= mask >>> 2;
  mask |= mask >>> 4;
  mask |= mask >>> 8;
  mask |= mask >>> 16;
  mask >>>= 0;
  let v: number;
  while ((v = (rng.nextUint32() & mask) >>> 0) > max);
  return v;
}

/** `np.random.default_rng(seed).permutation(n)`: arange(n) shuffled by Fisher–Yates from the top (_shuffle_raw). */
export function numpyPermutation(n: number, seed: number): Uint32Array {
  if (!Number.isInteger(n) || n < 0 || n > MASK32) throw new Error(`permutation length must be an integer in [0, 2^32), got ${n}`);
  const rng = new PCG64(seed);
  const a = new Uint32Array(n);
  for (let i = 0; i < n; i++) a[i] = i;
  for (let i = n - 1; i >= 1; i--) {
    const j = randomInterval(rng, i);
    const t = a[j]!;
    a[j] = a[i]!;
    a[i] = t;
  }
  return a;
}
