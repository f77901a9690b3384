/**
 * diffusers attention_processor.py / attention.py / transformer_2d.py: Attention (self/cross, optional group norm
 * and residual for the VAE), GEGLU FeedForward, BasicTransformerBlock, Transformer2DModel (NHWC).
 *
 * Chunked attention (the memory-efficient-attention analogue): queries are processed `chunkSize` at a time, and
 * each chunk runs under gradient checkpointing, so neither the forward nor the taped backward ever holds the full
 * [B·heads, N, M] score matrix — only one chunk's scores, recomputed during backprop. Results equal full attention
 * up to float rounding.
 */
import { tf } from "../engine/index.js";
import { checkpoint } from "../engine/checkpoint.js";
import { fusedAttention, fusedGeglu } from "../engine/fused.js";
import { Module } from "./module.js";
import { GroupNorm, LayerNorm, Linear, Pointwise, gelu } from "./layers.js";

/**
 * Multi-head softmax(q·kᵀ·scale + mask)·v for q [B,N,heads·d], k/v [B,M,heads·d] (heads interleaved in the channels,
 * as the projections produce them) → [B,N,heads·d]; mask broadcasts to [B·heads,N,M].
 * Where the engine has a fused attention kernel (native CPU), an unmasked attention runs there on the interleaved
 * layout: it never holds the score matrix (chunking has nothing left to save) and the heads need no split/merge.
 * Otherwise heads are split to [B·heads, N, d] and all go through one batched product each way (QKᵀ and AV), so the
 * op count — and the tape — does not grow with the number of heads: per-op overhead, not arithmetic, is what small
 * and mid-size models spend their time on (on wasm the batched kernel, lib/engine/kernels/batch-matmul.ts, picks SIMD
 * or a GEMM loop per shape). With chunkSize > 0 and N > chunkSize, queries go in checkpointed chunks, each chunk
 * still one product per direction.
 */
export function scaledDotProductAttention(
  q: tf.Tensor3D,
  k: tf.Tensor3D,
  v: tf.Tensor3D,
  scale: number,
  opts: { chunkSize?: number; mask?: tf.Tensor; heads?: number } = {},
): tf.Tensor3D {
  const heads = opts.heads ?? 1;
  if (!opts.mask) {
    const fused = fusedAttention(q, k, v, scale, heads);
    if (fused) return fused;
  }
  if (heads === 1) return composedAttention(q, k, v, scale, opts);
  return tf.tidy(() =>
    mergeHeads(composedAttention(splitHeads(q, heads), splitHeads(k, heads), splitHeads(v, heads), scale, opts), heads),
  );
}

/** scaledDotProductAttention from tfjs ops, on head-split q [BH,N,d], k/v [BH,M,d]. */
function composedAttention(q: tf.Tensor3D, k: tf.Tensor3D, v: tf.Tensor3D, scale: number, opts: { chunkSize?: number; mask?: tf.Tensor }): tf.Tensor3D {
  const attend = (qc: tf.Tensor, kc: tf.Tensor, vc: tf.Tensor, mask?: tf.Tensor): tf.Tensor3D =>
    tf.tidy(() => {
      // scale q (small) rather than the scores: one fewer score-sized tensor kept for backprop
      let s: tf.Tensor = tf.matMul(tf.mul(qc, scale) as tf.Tensor3D, kc as tf.Tensor3D, false, true);
      if (mask) s = tf.add(s, mask);
      return tf.matMul(tf.softmax(s) as tf.Tensor3D, vc as tf.Tensor3D);
    });
  const n = q.shape[1];
  const chunk = opts.chunkSize ?? 0;
  if (!(chunk > 0 && n > chunk)) return attend(q, k, v, opts.mask);
  return tf.tidy(() => {
    const parts: tf.Tensor[] = [];
    for (let start = 0; start < n; start += chunk) {
      const len = Math.min(chunk, n - start);
      const inputs: tf.Tensor[] = [tf.slice(q, [0, start, 0], [-1, len, -1]), k, v];
      if (opts.mask) {
        const mk = opts.mask;
        inputs.push(mk.shape[mk.rank - 2] === 1 ? mk : tf.slice(mk, [...new Array<number>(mk.rank - 2).fill(0), start, 0], [...new Array<number>(mk.rank - 2).fill(-1), len, -1]));
      }
      parts.push(checkpoint((qc, kc, vc, mc) => attend(qc!, kc!, vc!, mc), inputs));
    }
    return tf.concat(parts, 1) as tf.Tensor3D;
  });
}

/** [B, N, heads·d] → [B·heads, N, d] */
export function splitHeads(x: tf.Tensor, heads: number): tf.Tensor3D {
  const [b, n, c] = x.shape as [number, number, number];
  return tf.reshape(tf.transpose(tf.reshape(x, [b, n, heads, c / heads]), [0, 2, 1, 3]), [b * heads, n, c / heads]);
}

/** [B·heads, N, d] → [B, N, heads·d] */
export function mergeHeads(x: tf.Tensor, heads: number): tf.Tensor3D {
  const [bh, n, d] = x.shape as [number, number, number];
  return tf.reshape(tf.transpose(tf.reshape(x, [bh / heads, heads, n, d]), [0, 2, 1, 3]), [bh / heads, n, heads * d]);
}

export interface AttentionOptions {
  queryDim: number;
  /** Width of the context for cross-attention; null/undefined: self-attention. */
  crossAttentionDim?: number | null;
  heads: number;
  dimHead: number;
  /** Bias on to_q/to_k/to_v (diffusers `bias`; false in transformer blocks, true in the VAE). */
  bias?: boolean;
  outBias?: boolean;
  /** Computes scores in float32; all math here is float32 already, kept for config fidelity. */
  upcastAttention?: boolean;
  /** VAE-style: GroupNorm on the input, residual added, output divided by rescaleOutputFactor. */
  groupNorm?: { groups: number; eps: number } | null;
  residualConnection?: boolean;
  rescaleOutputFactor?: number;
}

export class Attention extends Module {
  readonly group_norm: GroupNorm | null;
  readonly to_q: Linear;
  readonly to_k: Linear;
  readonly to_v: Linear;
  readonly to_out: Linear[];
  readonly heads: number;
  readonly scale: number;
  readonly residualConnection: boolean;
  readonly rescaleOutputFactor: number;
  readonly upcastAttention: boolean;
  /** Query chunk size for chunked attention; 0 = full attention. */
  chunkSize = 0;

  constructor(o: AttentionOptions) {
    super();
    const inner = o.heads * o.dimHead;
    const ctx = o.crossAttentionDim ?? o.queryDim;
    const bias = o.bias ?? false;
    this.heads = o.heads;
    this.scale = 1 / Math.sqrt(o.dimHead);
    this.residualConnection = o.residualConnection ?? false;
    this.rescaleOutputFactor = o.rescaleOutputFactor ?? 1;
    this.upcastAttention = o.upcastAttention ?? false;
    this.group_norm = o.groupNorm ? this.child("group_norm", new GroupNorm(o.groupNorm.groups, o.queryDim, o.groupNorm.eps)) : null;
    this.to_q = this.child("to_q", new Linear(o.queryDim, inner, { bias }));
    this.to_k = this.child("to_k", new Linear(ctx, inner, { bias }));
    this.to_v = this.child("to_v", new Linear(ctx, inner, { bias }));
    this.to_out = this.list("to_out", [new Linear(inner, o.queryDim, { bias: o.outBias ?? true })]);
  }

  /** x: [B,N,C] or [B,H,W,C] (flattened to tokens, as diffusers does for 4-D input); context: [B,M,Cctx]. */
  forward<T extends tf.Tensor>(x: T, context?: tf.Tensor | null): T {
    return tf.tidy(() => {
      const shape = x.shape;
      let h: tf.Tensor = x;
      if (this.group_norm) h = this.group_norm.forward(h);
      if (h.rank === 4) h = tf.reshape(h, [shape[0]!, shape[1]! * shape[2]!, shape[3]!]);
      const ctx = (context ?? h) as tf.Tensor3D;
      const o = scaledDotProductAttention(this.to_q.forward(h as tf.Tensor3D), this.to_k.forward(ctx), this.to_v.forward(ctx), this.scale, {
        chunkSize: this.chunkSize,
        heads: this.heads,
      });
      let y: tf.Tensor = this.to_out[0]!.forward(o);
      if (x.rank === 4) y = tf.reshape(y, shape);
      if (this.residualConnection) y = tf.add(y, x);
      if (this.rescaleOutputFactor !== 1) y = tf.div(y, this.rescaleOutputFactor);
      return y as T;
    });
  }
}

/** GEGLU: proj to 2·inner, then hidden · gelu(gate) (one kernel where the engine has it). */
export class GEGLU extends Module {
  readonly proj: Linear;
  constructor(dimIn: number, readonly dimOut: number) {
    super();
    this.proj = this.child("proj", new Linear(dimIn, dimOut * 2));
  }
  forward<T extends tf.Tensor>(x: T): T {
    return tf.tidy(() => {
      const h = this.proj.forward(x);
      const fused = fusedGeglu(h);
      if (fused) return fused as T;
      const [hidden, gate] = tf.split(h, 2, -1);
      return tf.mul(hidden!, gelu(gate!)) as T;
    });
  }
}

/** FeedForward with GEGLU: net.0 = GEGLU, net.1 = dropout (no params), net.2 = Linear. */
export class FeedForward extends Module {
  readonly net: Module[];
  private readonly geglu: GEGLU;
  private readonly out: Linear;
  constructor(dim: number, mult = 4) {
    super();
    const inner = dim * mult;
    this.geglu = new GEGLU(dim, inner);
    this.out = new Linear(inner, dim);
    this.net = this.list("net", [this.geglu, new Module(), this.out]);
  }
  forward<T extends tf.Tensor>(x: T): T {
    return tf.tidy(() => this.out.forward(this.geglu.forward(x)));
  }
}

export interface BasicTransformerBlockOptions {
  dim: number;
  heads: number;
  dimHead: number;
  crossAttentionDim: number | null;
  onlyCrossAttention?: boolean;
  upcastAttention?: boolean;
}

export class BasicTransformerBlock extends Module {
  readonly norm1: LayerNorm;
  readonly attn1: Attention;
  readonly norm2: LayerNorm | null;
  readonly attn2: Attention | null;
  readonly norm3: LayerNorm;
  readonly ff: FeedForward;
  readonly onlyCrossAttention: boolean;

  constructor(o: BasicTransformerBlockOptions) {
    super();
    this.onlyCrossAttention = o.onlyCrossAttention ?? false;
    const common = { queryDim: o.dim, heads: o.heads, dimHead: o.dimHead, upcastAttention: o.upcastAttention ?? false };
    this.norm1 = this.child("norm1", new LayerNorm(o.dim, 1e-5));
    this.attn1 = this.child("attn1", new Attention({ ...common, crossAttentionDim: this.onlyCrossAttention ? o.crossAttentionDim : null }));
    if (o.crossAttentionDim !== null) {
      this.norm2 = this.child("norm2", new LayerNorm(o.dim, 1e-5));
      this.attn2 = this.child("attn2", new Attention({ ...common, crossAttentionDim: o.crossAttentionDim }));
    } else {
      this.norm2 = null;
      this.attn2 = null;
    }
    this.norm3 = this.child("norm3", new LayerNorm(o.dim, 1e-5));
    this.ff = this.child("ff", new FeedForward(o.dim));
  }

  /** x: [B,N,dim], context: [B,M,crossAttentionDim]. */
  forward(x: tf.Tensor3D, context: tf.Tensor3D | null): tf.Tensor3D {
    return tf.tidy(() => {
      let h = tf.add(this.attn1.forward(this.norm1.forward(x), this.onlyCrossAttention ? context : null), x) as tf.Tensor3D;
      if (this.attn2 && this.norm2) h = tf.add(this.attn2.forward(this.norm2.forward(h), context), h) as tf.Tensor3D;
      return tf.add(this.ff.forward(this.norm3.forward(h)), h) as tf.Tensor3D;
    });
  }
}

export interface Transformer2DModelOptions {
  heads: number;
  dimHead: number;
  inChannels: number;
  numLayers?: number;
  crossAttentionDim: number | null;
  normNumGroups?: number;
  useLinearProjection?: boolean;
  onlyCrossAttention?: boolean;
  upcastAttention?: boolean;
}

/** The continuous-input Transformer2DModel: GroupNorm(eps 1e-6) → proj_in → blocks → proj_out → + residual. */
export class Transformer2DModel extends Module {
  readonly norm: GroupNorm;
  readonly proj_in: Pointwise;
  readonly transformer_blocks: BasicTransformerBlock[];
  readonly proj_out: Pointwise;

  constructor(o: Transformer2DModelOptions) {
    super();
    const inner = o.heads * o.dimHead;
    const asConv = !(o.useLinearProjection ?? false);
    this.norm = this.child("norm", new GroupNorm(o.normNumGroups ?? 32, o.inChannels, 1e-6));
    this.proj_in = this.child("proj_in", new Pointwise(o.inChannels, inner, asConv));
    const blocks: BasicTransformerBlock[] = [];
    for (let i = 0; i < (o.numLayers ?? 1); i++) {
      blocks.push(
        new BasicTransformerBlock({
          dim: inner,
          heads: o.heads,
          dimHead: o.dimHead,
          crossAttentionDim: o.crossAttentionDim,
          onlyCrossAttention: o.onlyCrossAttention,
          upcastAttention: o.upcastAttention,
        }),
      );
    }
    this.transformer_blocks = this.list("transformer_blocks", blocks);
    this.proj_out = this.child("proj_out", new Pointwise(inner, o.inChannels, asConv));
  }

  /** x: [B,H,W,C]; context: [B,M,Cctx]. */
  forward(x: tf.Tensor4D, context: tf.Tensor3D | null): tf.Tensor4D {
    return tf.tidy(() => {
      const [b, hh, ww] = x.shape;
      let h = this.proj_in.forward(this.norm.forward(x));
      let tokens = tf.reshape(h, [b, hh * ww, h.shape[3]]) as tf.Tensor3D;
      for (const block of this.transformer_blocks) tokens = block.forward(tokens, context);
      h = tf.reshape(tokens, [b, hh, ww, tokens.shape[2]]);
      return tf.add(this.proj_out.forward(h), x) as tf.Tensor4D;
    });
  }
}
