/**
 * The basic layers, NHWC activations, PyTorch semantics: explicit conv padding (tfjs' 'same' differs from PyTorch
 * for stride 2), linear layers as 2-D matmuls (the wasm fast path, and it avoids a tfjs broadcast-gradient bug),
 * GroupNorm/LayerNorm with biased variance and the eps diffusers uses.
 */
import { tf, fusedBiasAdd, fusedGroupNorm, fusedLayerNorm, fusedLinear, fusedSilu } from "../engine/index.js";
import { Module } from "./module.js";
import type { Param } from "./module.js";

export interface Conv2dOptions {
  kernel?: number;
  stride?: number;
  /** PyTorch `padding`: a number (all sides), or [top, bottom, left, right] for asymmetric pads (F.pad + conv). */
  padding?: number | [number, number, number, number];
  bias?: boolean;
  /** Zero-initialised (ControlNet's zero convolutions). */
  zeroInit?: boolean;
}

export class Conv2d extends Module {
  readonly weight: Param;
  readonly bias: Param | null;
  readonly stride: number;
  readonly pad: [[0, 0], [number, number], [number, number], [0, 0]];

  constructor(
    readonly inChannels: number,
    readonly outChannels: number,
    opts: Conv2dOptions = {},
  ) {
    super();
    const k = opts.kernel ?? 3;
    this.stride = opts.stride ?? 1;
    const p = opts.padding ?? 0;
    const [t, b, l, r] = typeof p === "number" ? [p, p, p, p] : p;
    this.pad = [[0, 0], [t, b], [l, r], [0, 0]];
    const bound = 1 / Math.sqrt(inChannels * k * k);
    const init = opts.zeroInit ? ({ kind: "zeros" } as const) : ({ kind: "uniform", bound } as const);
    this.weight = this.param("weight", [k, k, inChannels, outChannels], "conv2d", init);
    this.bias = opts.bias === false ? null : this.param("bias", [outChannels], "plain", init);
  }

  forward(x: tf.Tensor4D): tf.Tensor4D {
    return tf.tidy(() => {
      const y = this.convolve(x);
      const b = this.biasValue();
      return b ? fusedBiasAdd(y, b) ?? tf.add(y, b) : y;
    });
  }

  /** The convolution without the bias, for a caller that adds the bias with something else (ResnetBlock2D). */
  convolve(x: tf.Tensor4D): tf.Tensor4D {
    return tf.conv2d(x, this.kernelWeight(this.weight) as tf.Tensor4D, this.stride, this.pad);
  }

  /** The bias as a tensor (null without one). */
  biasValue(): tf.Tensor1D | null {
    return this.bias ? (this.v(this.bias) as tf.Tensor1D) : null;
  }
}

export class Linear extends Module {
  readonly weight: Param;
  readonly bias: Param | null;

  constructor(
    readonly inFeatures: number,
    readonly outFeatures: number,
    opts: { bias?: boolean } = {},
  ) {
    super();
    const init = { kind: "uniform", bound: 1 / Math.sqrt(inFeatures) } as const;
    this.weight = this.param("weight", [inFeatures, outFeatures], "linear", init);
    this.bias = opts.bias === false ? null : this.param("bias", [outFeatures], "plain", init);
  }

  /** x: [..., in] → [..., out], computed as one [N, in] × [in, out] matmul. */
  forward<T extends tf.Tensor>(x: T): T {
    return tf.tidy(() => project(x, this.kernelWeight(this.weight) as tf.Tensor2D, this.bias ? this.v(this.bias) : null));
  }
}

/**
 * x [.., in] · w [in, out] (+ bias): the engine's linear kernel where it has one, else one [N, in] × [in, out]
 * matmul between reshapes.
 */
function project<T extends tf.Tensor>(x: T, w: tf.Tensor2D, bias: tf.Tensor | null): T {
  const fused = fusedLinear(x, w, bias);
  if (fused) return fused;
  let y: tf.Tensor = tf.matMul(tf.reshape(x, [-1, w.shape[0]]) as tf.Tensor2D, w);
  if (bias) y = tf.add(y, bias);
  return tf.reshape(y, [...x.shape.slice(0, -1), w.shape[1]]) as T;
}

/**
 * A pointwise projection whose weight may be stored as a 1×1 conv ([out,in,1,1]) or a linear ([out,in]); in NHWC
 * both are the same matmul. Transformer2DModel's proj_in/proj_out use one or the other (use_linear_projection).
 */
export class Pointwise extends Module {
  readonly weight: Param;
  readonly bias: Param;

  constructor(
    readonly inFeatures: number,
    readonly outFeatures: number,
    readonly asConv: boolean,
  ) {
    super();
    const init = { kind: "uniform", bound: 1 / Math.sqrt(inFeatures) } as const;
    this.weight = asConv
      ? this.param("weight", [1, 1, inFeatures, outFeatures], "conv2d", init)
      : this.param("weight", [inFeatures, outFeatures], "linear", init);
    this.bias = this.param("bias", [outFeatures], "plain", init);
  }

  forward<T extends tf.Tensor>(x: T): T {
    return tf.tidy(() => project(x, tf.reshape(this.v(this.weight), [this.inFeatures, this.outFeatures]) as tf.Tensor2D, this.v(this.bias)));
  }
}

/**
 * (x − mean)·rsqrt(var + eps) over `axes` with the biased variance, as PyTorch's norms compute it. Written out rather
 * than with tf.moments, which casts its input (a full copy on wasm) and subtracts the mean a second time.
 */
function normalize(x: tf.Tensor, axes: number[], eps: number): tf.Tensor {
  const centered = tf.sub(x, tf.mean(x, axes, true));
  const variance = tf.mean(tf.square(centered), axes, true);
  return tf.mul(centered, tf.rsqrt(tf.add(variance, eps)));
}

/**
 * GroupNorm's two small matrices for (C, G), transposed — [G, C] averages each group's channels (1/(C/G) where
 * channel c is in group g), [C, G] hands a group's value back to its channels (ones) — as host arrays: GroupNorm
 * uploads them per call (a few KB), so no cached tensor outlives a tidy or a backend switch. They are used with
 * transposeB: on wasm that sends these tiny products to the SIMD batched kernel instead of XNNPACK, which would
 * create and pack an operator for every freshly uploaded right-hand side.
 */
const groupMaps = new Map<string, { average: Float32Array; expand: Float32Array }>();
function groupMatrices(c: number, g: number): { average: Float32Array; expand: Float32Array } {
  const key = `${c}/${g}`;
  let m = groupMaps.get(key);
  if (!m) {
    const per = c / g;
    m = { average: new Float32Array(g * c), expand: new Float32Array(c * g) };
    for (let ch = 0; ch < c; ch++) {
      const grp = Math.floor(ch / per);
      m.average[grp * c + ch] = 1 / per;
      m.expand[ch * g + grp] = 1;
    }
    groupMaps.set(key, m);
  }
  return m;
}

/** torch.nn.GroupNorm over the channel (last) axis of [B, ..., C]. */
export class GroupNorm extends Module {
  readonly weight: Param;
  readonly bias: Param;

  constructor(
    readonly numGroups: number,
    readonly numChannels: number,
    readonly eps: number,
  ) {
    super();
    if (numChannels % numGroups !== 0) throw new Error(`GroupNorm: ${numChannels} channels not divisible by ${numGroups} groups`);
    this.weight = this.param("weight", [numChannels], "plain", { kind: "ones" });
    this.bias = this.param("bias", [numChannels], "plain", { kind: "zeros" });
  }

  /**
   * Same math as normalize() over each group (two-pass, biased variance), in as few ops as the layout allows: a
   * mean over the positions gives [B, C], one small matmul turns that into group statistics [B, G] and one more
   * hands them back to the channels, so every full-size op is a per-channel broadcast ([B,1,1,C] against
   * [B,H,W,C]) — wasm's binary ops take a fast path for that and a ~10× slower index loop for a grouped layout
   * ([B,HW,G,C/G] against [B,1,G,1]) — and no reshape of the activation is needed. The weight is folded into the
   * per-channel scale, so the output is one multiply and one add. `silu`: SiLU applied to the result (a resnet's
   * norm → nonlinearity), which the native engine's fused kernel does in the same pass.
   */
  forward<T extends tf.Tensor>(x: T, opts: { silu?: boolean } = {}): T {
    const withSilu = opts.silu ?? false;
    const fused = fusedGroupNorm(x, this.v(this.weight), this.v(this.bias), this.numGroups, this.eps, withSilu);
    if (fused) return fused;
    if (withSilu) return tf.tidy(() => silu(this.forward(x)));
    return tf.tidy(() => {
      const b = x.shape[0]!;
      const c = this.numChannels;
      const g = this.numGroups;
      const positions = Array.from({ length: x.rank - 2 }, (_, i) => i + 1);
      const perChannel = [b, ...positions.map(() => 1), c];
      const maps = groupMatrices(c, g);
      const averageT = tf.tensor2d(maps.average, [g, c]);
      const expandT = tf.tensor2d(maps.expand, [c, g]);
      const toChannels = (s: tf.Tensor2D): tf.Tensor2D => tf.matMul(s, expandT, false, true);
      // mean over positions, then over each group's channels (a mean of equal-size means is the group mean)
      const groupMean = (t: tf.Tensor): tf.Tensor2D => tf.matMul(tf.mean(t, positions) as tf.Tensor2D, averageT, false, true);
      const centered = tf.sub(x, tf.reshape(toChannels(groupMean(x)), perChannel));
      const invStd = tf.rsqrt(tf.add(groupMean(tf.square(centered)), this.eps)) as tf.Tensor2D;
      const scale = tf.reshape(tf.mul(toChannels(invStd), this.v(this.weight)), perChannel);
      return tf.add(tf.mul(centered, scale), this.v(this.bias)) as T;
    });
  }
}

/** torch.nn.LayerNorm over the last axis. */
export class LayerNorm extends Module {
  readonly weight: Param;
  readonly bias: Param;

  constructor(
    readonly dim: number,
    readonly eps = 1e-5,
  ) {
    super();
    this.weight = this.param("weight", [dim], "plain", { kind: "ones" });
    this.bias = this.param("bias", [dim], "plain", { kind: "zeros" });
  }

  forward<T extends tf.Tensor>(x: T): T {
    const fused = fusedLayerNorm(x, this.v(this.weight), this.v(this.bias), this.eps);
    if (fused) return fused;
    return tf.tidy(() => {
      const normed = normalize(x, [x.rank - 1], this.eps);
      return tf.add(tf.mul(normed, this.v(this.weight)), this.v(this.bias)) as T;
    });
  }
}

/** torch.nn.Embedding: a [num, dim] table (PyTorch and tfjs layouts agree). */
export class Embedding extends Module {
  readonly weight: Param;

  constructor(
    readonly num: number,
    readonly dim: number,
  ) {
    super();
    this.weight = this.param("weight", [num, dim], "plain", { kind: "normal", std: 0.02 });
  }

  forward(ids: tf.Tensor): tf.Tensor {
    return tf.gather(this.v(this.weight), tf.cast(ids, "int32"));
  }
}

export function silu<T extends tf.Tensor>(x: T): T {
  return fusedSilu(x) ?? tf.tidy(() => tf.mul(x, tf.sigmoid(x)) as T);
}

/** Exact GELU, x·Φ(x) = x·½(1+erf(x/√2)) (PyTorch's default approximate="none"). */
export function gelu<T extends tf.Tensor>(x: T): T {
  return tf.tidy(() => tf.mul(tf.mul(x, 0.5), tf.add(tf.erf(tf.mul(x, Math.SQRT1_2)), 1)) as T);
}

/** CLIP's quick_gelu: x·σ(1.702x). */
export function quickGelu<T extends tf.Tensor>(x: T): T {
  return tf.tidy(() => tf.mul(x, tf.sigmoid(tf.mul(x, 1.702))) as T);
}

export type Activation = "silu" | "swish" | "gelu" | "quick_gelu" | "relu";

export function activation(name: string): <T extends tf.Tensor>(x: T) => T {
  switch (name) {
    case "silu":
    case "swish":
      return silu;
    case "gelu":
      return gelu;
    case "quick_gelu":
      return quickGelu;
    case "relu":
      return (x) => tf.relu(x);
    default:
      throw new Error(`unsupported activation '${name}' (supported: silu, gelu, quick_gelu, relu)`);
  }
}
