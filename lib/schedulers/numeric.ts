/**
 * Host-side numerics that reproduce what diffusers computes with numpy (float64) and torch (float32) when it builds
 * its scalar tables. Parity with diffusers at 1e-5 needs the same rounding at the same places: numpy's linspace and
 * arange formulas, numpy's round-half-to-even, numpy's interp, and torch's float32 linspace. Tables are returned as
 * Float64Array holding exactly the values diffusers holds (float32 values where diffusers has float32 tensors).
 */

/** Rounds a double to float32 — emulates one torch float32 operation (IEEE ops round once, as JS does here). */
export const f32 = Math.fround;

/** numpy's `round` (half to even), which diffusers applies to timestep grids. */
export function roundHalfEven(x: number): number {
  const fl = Math.floor(x);
  const d = x - fl;
  if (d > 0.5) return fl + 1;
  if (d < 0.5) return fl;
  return fl % 2 === 0 ? fl : fl + 1;
}

/** `np.linspace(start, stop, num)` (endpoint included): y[i] = i·step + start, last element set to stop. */
export function npLinspace(start: number, stop: number, num: number): Float64Array {
  const y = new Float64Array(num);
  if (num === 0) return y;
  const div = num - 1;
  const delta = stop - start;
  if (div === 0) {
    y[0] = start;
    return y;
  }
  const step = delta / div;
  for (let i = 0; i < num; i++) y[i] = step === 0 ? (i / div) * delta + start : i * step + start;
  y[num - 1] = stop;
  return y;
}

/**
 * `np.arange(start, stop, step)` for floats: the length is ceil((stop-start)/step); numpy fills element i as
 * start + i·(buffer[1] − buffer[0]), so the effective step is re-derived from the first two elements.
 */
export function npArange(start: number, stop: number, step: number): Float64Array {
  const len = Math.max(0, Math.ceil((stop - start) / step));
  const y = new Float64Array(len);
  if (len === 0) return y;
  y[0] = start;
  if (len === 1) return y;
  y[1] = start + step;
  const delta = y[1] - start;
  for (let i = 2; i < len; i++) y[i] = start + i * delta;
  return y;
}

/** `np.interp(x, arange(len(fp)), fp)` for one x (clamped to the ends like numpy). */
export function npInterpIndex(x: number, fp: ArrayLike<number>): number {
  const n = fp.length;
  if (x <= 0) return fp[0]!;
  if (x >= n - 1) return fp[n - 1]!;
  const j = Math.floor(x);
  if (x === j) return fp[j]!;
  const slope = (fp[j + 1]! - fp[j]!) / 1;
  return slope * (x - j) + fp[j]!;
}

/**
 * `torch.linspace(start, end, steps, dtype=float32)` on the CPU: start/end/step are float32, the first half counts
 * up from start and the second half counts down from end (torch's kernel does this to keep the end exact).
 */
export function torchLinspaceF32(start: number, end: number, steps: number): Float64Array {
  const out = new Float64Array(steps);
  if (steps === 0) return out;
  const s = f32(start);
  const e = f32(end);
  if (steps === 1) {
    out[0] = s;
    return out;
  }
  const step = f32(f32(e - s) / (steps - 1));
  const halfway = Math.floor(steps / 2);
  for (let i = 0; i < steps; i++) {
    out[i] = i < halfway ? f32(s + f32(step * i)) : f32(e - f32(step * (steps - i - 1)));
  }
  return out;
}

/** Solves the small dense system A·x = b (Gaussian elimination with partial pivoting, float64). */
export function solveSmall(A: number[][], b: number[]): number[] {
  const n = b.length;
  const M = A.map((row, i) => [...row, b[i]!]);
  for (let c = 0; c < n; c++) {
    let p = c;
    for (let r = c + 1; r < n; r++) if (Math.abs(M[r]![c]!) > Math.abs(M[p]![c]!)) p = r;
    if (M[p]![c] === 0) throw new Error("solveSmall: singular matrix");
    [M[c], M[p]] = [M[p]!, M[c]!];
    const pivot = M[c]!;
    for (let r = c + 1; r < n; r++) {
      const row = M[r]!;
      const k = row[c]! / pivot[c]!;
      for (let j = c; j <= n; j++) row[j] = row[j]! - k * pivot[j]!;
    }
  }
  const x = new Array<number>(n).fill(0);
  for (let r = n - 1; r >= 0; r--) {
    let s = M[r]![n]!;
    for (let j = r + 1; j < n; j++) s -= M[r]![j]! * x[j]!;
    x[r] = s / M[r]![r]!;
  }
  return x;
}
