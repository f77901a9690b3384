/**
 * Block-wise dynamic 8-bit quantisation of optimizer states, as bitsandbytes does it (Dettmers et al., "8-bit
 * Optimizers via Block-wise Quantization"), written from the description of its dynamic data type.
 *
 * The dynamic map: 256 code values in [−1, 1] (signed, for Adam's first moment) or [0, 1] (unsigned, for the second
 * moment). Each value is a decimal exponent 10^(−6+i), i = 0..6, times the midpoint of one of 2^i (signed; 2^(i+1)
 * unsigned) equal sub-intervals of [0.1, 1] — a float-like type with more values where the exponent is larger —
 * plus the values 0 and 1. A tensor is cut into blocks; each block stores its absolute maximum (float32) and, per
 * element, the index of the code value nearest to element / absmax.
 */

/** bitsandbytes' create_dynamic_map(signed, max_exponent_bits=7, total_bits=8): 256 sorted float32 code values. */
export function createDynamicMap(signed = true): Float32Array {
  const maxExponentBits = 7;
  const nonSignBits = 7; // 8 total bits, one reserved for the sign (the unsigned map spends it on more fractions)
  const values: number[] = [];
  for (let i = 0; i < maxExponentBits; i++) {
    const items = signed ? 2 ** (i + nonSignBits - maxExponentBits) + 1 : 2 ** (i + nonSignBits - maxExponentBits + 1) + 1;
    const scale = 10 ** (-(maxExponentBits - 1) + i);
    for (let k = 0; k + 1 < items; k++) {
      // midpoints of linspace(0.1, 1, items), in float32 like the torch original (last-ulp differences possible)
      const a = Math.fround(0.1 + (0.9 * k) / (items - 1));
      const b = Math.fround(0.1 + (0.9 * (k + 1)) / (items - 1));
      const mean = Math.fround(Math.fround(a + b) / 2);
      values.push(scale * mean);
      if (signed) values.push(-scale * mean);
    }
  }
  values.push(0, 1);
  if (values.length !== 256) throw new Error(`dynamic map has ${values.length} values, expected 256`);
  values.sort((x, y) => x - y);
  return Float32Array.from(values);
}

/**
 * A code with its decision boundaries (midpoints between neighbours), for nearest-value lookup.
 *
 * Lookup is the hot loop of the 8-bit optimizer (two per parameter element per step), so besides the binary search
 * there is a 65536-entry table indexed by the top 16 bits of the float32 (sign, exponent, 7 mantissa bits): it gives
 * the answer for one value of that bit bucket, and a step or two along the midpoints fixes it for the exact value.
 */
export class QuantCode {
  readonly values: Float32Array;
  private readonly mids: Float64Array;
  private readonly lut = new Uint8Array(65536);

  constructor(values: Float32Array) {
    this.values = values;
    this.mids = new Float64Array(values.length - 1);
    for (let i = 0; i + 1 < values.length; i++) this.mids[i] = (values[i]! + values[i + 1]!) / 2;
    const f = new Float32Array(1);
    const u = new Uint32Array(f.buffer);
    for (let h = 0; h < 65536; h++) {
      u[0] = h << 16;
      const v = f[0]!;
      this.lut[h] = Number.isNaN(v) ? 0 : this.nearest(v);
    }
  }

  /** Index of the code value nearest to x (ties go up), by binary search. */
  nearest(x: number): number {
    const mids = this.mids;
    let lo = 0;
    let hi = mids.length; // answer in [0, 255]: the number of midpoints <= x
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (mids[mid]! <= x) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** q[qOffset + i] = nearest(x[i]) for all i, through the bit-bucket table. */
  nearestAll(x: Float32Array, q: Uint8Array, qOffset: number): void {
    const bits = new Uint32Array(x.buffer, x.byteOffset, x.length);
    const mids = this.mids;
    const lut = this.lut;
    const last = mids.length;
    for (let i = 0; i < x.length; i++) {
      const xi = x[i]!;
      let k = lut[bits[i]! >>> 16]!;
      while (k < last && xi >= mids[k]!) k++;
      while (k > 0 && xi < mids[k - 1]!) k--;
      q[qOffset + i] = k;
    }
  }
}

let signedCode: QuantCode | null = null;
let unsignedCode: QuantCode | null = null;
export function dynamicCode(signed: boolean): QuantCode {
  if (signed) return (signedCode ??= new QuantCode(createDynamicMap(true)));
  return (unsignedCode ??= new QuantCode(createDynamicMap(false)));
}

export function numBlocks(n: number, blockSize: number): number {
  return Math.ceil(n / blockSize);
}

let scratch = new Float32Array(0);

/** Quantises x[xOffset ...] (end − start values) into q[start, end) with one absmax; returns the absmax. */
export function quantizeBlock(x: Float32Array, q: Uint8Array, start: number, end: number, code: QuantCode, xOffset = start): number {
  const len = end - start;
  let absmax = 0;
  for (let i = 0; i < len; i++) {
    const a = Math.abs(x[xOffset + i]!);
    if (a > absmax) absmax = a;
  }
  if (scratch.length < len) scratch = new Float32Array(len);
  const xn = scratch.subarray(0, len);
  const inv = absmax > 0 ? 1 / absmax : 0;
  for (let i = 0; i < len; i++) xn[i] = x[xOffset + i]! * inv;
  code.nearestAll(xn, q, start);
  return Math.fround(absmax);
}

/** Writes code[q[i]]·absmax for i in [start, end) to out[outOffset ...]. */
export function dequantizeBlock(q: Uint8Array, absmax: number, start: number, end: number, code: QuantCode, out: Float32Array, outOffset = 0): void {
  const values = code.values;
  for (let i = start; i < end; i++) out[i - start + outOffset] = values[q[i]!]! * absmax;
}

/** Whole-tensor helpers (tests, inspection). */
export function quantizeBlockwise(x: Float32Array, blockSize: number, signed: boolean): { q: Uint8Array; absmax: Float32Array } {
  const code = dynamicCode(signed);
  const q = new Uint8Array(x.length);
  const absmax = new Float32Array(numBlocks(x.length, blockSize));
  for (let b = 0; b < absmax.length; b++) {
    const s = b * blockSize;
    absmax[b] = quantizeBlock(x, q, s, Math.min(s + blockSize, x.length), code);
  }
  return { q, absmax };
}

export function dequantizeBlockwise(q: Uint8Array, absmax: Float32Array, blockSize: number, signed: boolean): Float32Array {
  const code = dynamicCode(signed);
  const out = new Float32Array(q.length);
  for (let b = 0; b < absmax.length; b++) {
    const s = b * blockSize;
    dequantizeBlock(q, absmax[b]!, s, Math.min(s + blockSize, q.length), code, out, s);
  }
  return out;
}
