/**
 * Timestep embeddings (diffusers embeddings.py: get_timestep_embedding, Timesteps, TimestepEmbedding).
 *
 * The sinusoid is computed on the host with float32 rounding at the same points PyTorch rounds (the frequency
 * table, the product t·f), because sin of arguments near 1000 amplifies any difference in f; the result then
 * matches diffusers' float32 table to about one ulp of the argument.
 */
import { tf } from "../engine/index.js";
import { Module } from "./module.js";
import { Linear, activation } from "./layers.js";

const f32 = Math.fround;

/** Timesteps as plain numbers, one per batch element (a scalar broadcasts to the batch). */
export function timestepValues(timestep: number | number[] | tf.Tensor, batch: number): number[] {
  let values: number[];
  if (typeof timestep === "number") values = [timestep];
  else if (Array.isArray(timestep)) values = timestep;
  else values = Array.from(timestep.dataSync());
  if (values.length === 1 && batch > 1) values = new Array<number>(batch).fill(values[0]!);
  if (values.length !== batch) throw new Error(`timestep has ${values.length} values for a batch of ${batch}`);
  return values;
}

/** get_timestep_embedding: [B, dim] with [sin, cos] halves (or [cos, sin] when flipSinToCos). */
export function timestepEmbedding(
  timesteps: number[],
  dim: number,
  flipSinToCos: boolean,
  downscaleFreqShift: number,
  scale = 1,
  maxPeriod = 10000,
): tf.Tensor2D {
  const half = Math.floor(dim / 2);
  const logMax = f32(Math.log(maxPeriod));
  const freqs = new Float64Array(half);
  for (let i = 0; i < half; i++) {
    const exponent = f32(f32(-logMax * i) / f32(half - downscaleFreqShift));
    freqs[i] = f32(Math.exp(exponent));
  }
  const out = new Float32Array(timesteps.length * dim);
  timesteps.forEach((t, b) => {
    for (let i = 0; i < half; i++) {
      const arg = f32(f32(f32(t) * freqs[i]!) * scale);
      const s = Math.sin(arg);
      const c = Math.cos(arg);
      out[b * dim + i] = flipSinToCos ? c : s;
      out[b * dim + half + i] = flipSinToCos ? s : c;
    }
    // odd dims are zero-padded, as in diffusers
  });
  return tf.tensor2d(out, [timesteps.length, dim]);
}

/** Timesteps module (no parameters). */
export class Timesteps {
  constructor(
    readonly numChannels: number,
    readonly flipSinToCos: boolean,
    readonly downscaleFreqShift: number,
  ) {}

  forward(timesteps: number[]): tf.Tensor2D {
    return timestepEmbedding(timesteps, this.numChannels, this.flipSinToCos, this.downscaleFreqShift);
  }
}

/** TimestepEmbedding: linear_1 → act → linear_2. */
export class TimestepEmbedding extends Module {
  readonly linear_1: Linear;
  readonly linear_2: Linear;
  private readonly act: ReturnType<typeof activation>;

  constructor(inChannels: number, timeEmbedDim: number, actFn = "silu") {
    super();
    this.linear_1 = this.child("linear_1", new Linear(inChannels, timeEmbedDim));
    this.linear_2 = this.child("linear_2", new Linear(timeEmbedDim, timeEmbedDim));
    this.act = activation(actFn);
  }

  forward(x: tf.Tensor2D): tf.Tensor2D {
    return tf.tidy(() => this.linear_2.forward(this.act(this.linear_1.forward(x))));
  }
}
