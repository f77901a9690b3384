/**
 * The blocks one ControlNet training step runs, with their tensor sizes, read from the diffusers config alone (no
 * model, no allocation): what the activation model sums over. Mirrors diffusers' UNet2DConditionModel wiring
 * (down blocks at L/2^i, a cross-attention mid block, up blocks with skip concatenation), which lib/models follows.
 */
export interface BlockShape {
  kind: "resnet" | "transformer" | "downsample" | "upsample";
  model: "unet" | "controlnet";
  batch: number;
  h: number;
  w: number;
  cin: number;
  cout: number;
  /** Attention heads, context length and width (transformers). */
  heads?: number;
  ctxLen?: number;
  ctxDim?: number;
  layers?: number;
  /** Parameters of the block (for the per-op weight copies the wasm engine makes). */
  params: number;
  /** A block of the UNet's down or mid blocks, which the ControlNet's residuals do not reach (UNet2DConditionModel.forwardDown). */
  frozenPrefix?: true;
}

export interface UNetLikeConfig {
  block_out_channels: number[];
  layers_per_block?: number | number[];
  down_block_types: string[];
  up_block_types?: string[];
  cross_attention_dim?: number | number[];
  attention_head_dim?: number | number[];
  num_attention_heads?: number | number[] | null;
  transformer_layers_per_block?: number | number[];
  in_channels?: number;
  out_channels?: number;
  [k: string]: unknown;
}

const per = <T>(v: T | T[] | undefined | null, n: number, d: T): T[] => (Array.isArray(v) ? v : new Array<T>(n).fill((v ?? d) as T));

function resnetParams(cin: number, cout: number, temb: number): number {
  return 2 * cin + 9 * cin * cout + cout + temb * cout + cout + 2 * cout + 9 * cout * cout + cout + (cin !== cout ? cin * cout + cout : 0);
}

/** Parameters of one Transformer2DModel with `layers` BasicTransformerBlocks (GEGLU ff, 1×1 proj in/out). */
function transformerParams(c: number, ctx: number, layers: number): number {
  const block = 3 * 2 * c + (4 * c * c + c) + (2 * c * c + 2 * ctx * c + c) + (c * 8 * c + 8 * c) + (4 * c * c + c);
  return 2 * c + 2 * (c * c + c) + layers * block;
}

export interface StepGeometry {
  blocks: BlockShape[];
  /** Skip states the ControlNet emits (and the UNet receives), in elements. */
  skipElements: number;
  /** Multiply-adds of the ControlNet's 1×1 zero convolutions (one per skip state, C→C). */
  zeroConvMacs: number;
  /** Up-block concatenations (new tensors), in elements. */
  concatElements: number;
  latent: number;
}

/** Every resnet/transformer/resampler of the ControlNet (encoder + mid) and the UNet (full) for one step. */
export function stepGeometry(unet: UNetLikeConfig, batch: number, latent: number, seqLen: number): StepGeometry {
  const boc = unet.block_out_channels;
  const n = boc.length;
  const layers = per(unet.layers_per_block, n, 2);
  const heads = per(unet.num_attention_heads ?? unet.attention_head_dim, n, 8);
  const ctx = per(unet.cross_attention_dim, n, 1280);
  const tl = per(unet.transformer_layers_per_block, n, 1);
  const temb = boc[0]! * 4;
  const blocks: BlockShape[] = [];
  let skipElements = 0;
  let concatElements = 0;
  const res = (model: BlockShape["model"], s: number, cin: number, cout: number) =>
    blocks.push({ kind: "resnet", model, batch, h: s, w: s, cin, cout, params: resnetParams(cin, cout, temb) });
  const attn = (model: BlockShape["model"], s: number, c: number, i: number) =>
    blocks.push({ kind: "transformer", model, batch, h: s, w: s, cin: c, cout: c, heads: heads[i]!, ctxLen: seqLen, ctxDim: ctx[i]!, layers: tl[i]!, params: transformerParams(c, ctx[i]!, tl[i]!) });
  const encoder = (model: BlockShape["model"]) => {
    let s = latent;
    let out = boc[0]!;
    let skips = batch * s * s * out;
    let macs = skips * out;
    unet.down_block_types.forEach((type, i) => {
      const cin = out;
      out = boc[i]!;
      for (let j = 0; j < layers[i]!; j++) {
        res(model, s, j === 0 ? cin : out, out);
        if (type.startsWith("CrossAttn")) attn(model, s, out, i);
        skips += batch * s * s * out;
        macs += batch * s * s * out * out;
      }
      if (i !== n - 1) {
        blocks.push({ kind: "downsample", model, batch, h: s, w: s, cin: out, cout: out, params: 9 * out * out + out });
        s = Math.ceil(s / 2);
        skips += batch * s * s * out;
        macs += batch * s * s * out * out;
      }
    });
    res(model, s, boc[n - 1]!, boc[n - 1]!);
    attn(model, s, boc[n - 1]!, n - 1);
    res(model, s, boc[n - 1]!, boc[n - 1]!);
    skips += batch * s * s * boc[n - 1]!;
    macs += batch * s * s * boc[n - 1]! * boc[n - 1]!;
    return { s, skips, macs };
  };
  const enc = encoder("controlnet");
  skipElements = enc.skips;
  const zeroConvMacs = enc.macs;
  const unetStart = blocks.length;
  let s = encoder("unet").s;
  for (const b of blocks.slice(unetStart)) b.frozenPrefix = true;
  const rev = [...boc].reverse();
  const revHeads = [...heads].reverse();
  const revLayers = [...layers].reverse();
  const upTypes = unet.up_block_types ?? [...unet.down_block_types].reverse().map((t) => t.replace("Down", "Up"));
  let prev = rev[0]!;
  upTypes.forEach((type, i) => {
    const out = rev[i]!;
    const inC = rev[Math.min(i + 1, n - 1)]!;
    const nl = revLayers[i]! + 1;
    for (let j = 0; j < nl; j++) {
      const skip = j === nl - 1 ? inC : out;
      const rin = (j === 0 ? prev : out) + skip;
      concatElements += batch * s * s * rin;
      res("unet", s, rin, out);
      if (type.startsWith("CrossAttn")) {
        const bi = n - 1 - i;
        blocks.push({ kind: "transformer", model: "unet", batch, h: s, w: s, cin: out, cout: out, heads: revHeads[i]!, ctxLen: seqLen, ctxDim: ctx[bi]!, layers: tl[bi]!, params: transformerParams(out, ctx[bi]!, tl[bi]!) });
      }
    }
    if (i !== n - 1) {
      blocks.push({ kind: "upsample", model: "unet", batch, h: s, w: s, cin: out, cout: out, params: 9 * out * out + out });
      s *= 2;
    }
    prev = out;
  });
  return { blocks, skipElements, zeroConvMacs, concatElements, latent };
}

/** The ControlNet conditioning embedding's convolutions: output elements of the SiLU convs, conv_out, params. */
export function condEmbeddingGeometry(embOut: number[], firstChannels: number, batch: number, resolution: number, condChannels = 3) {
  let r = resolution;
  let siluOut = batch * r * r * embOut[0]!;
  let params = 9 * condChannels * embOut[0]! + embOut[0]!;
  for (let i = 0; i < embOut.length - 1; i++) {
    siluOut += batch * r * r * embOut[i]!;
    params += 9 * embOut[i]! * embOut[i]! + embOut[i]!;
    r = Math.ceil(r / 2);
    siluOut += batch * r * r * embOut[i + 1]!;
    params += 9 * embOut[i]! * embOut[i + 1]! + embOut[i + 1]!;
  }
  params += 9 * embOut[embOut.length - 1]! * firstChannels + firstChannels;
  return { siluOut, convOut: batch * r * r * firstChannels, input: batch * resolution * resolution * condChannels, params, latent: r };
}
