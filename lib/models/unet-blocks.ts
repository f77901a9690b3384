/**
 * diffusers unet_2d_blocks.py: the down/mid/up blocks shared by UNet2DConditionModel, ControlNetModel (which
 * composes the very same encoder blocks) and AutoencoderKL (the *Encoder/*Decoder variants without time embedding).
 *
 * With gradient checkpointing on, each resnet and each transformer is recomputed in backward (diffusers checkpoints
 * at the same granularity).
 */
import { tf } from "../engine/index.js";
import { Module } from "./module.js";
import { ResnetBlock2D, Downsample2D, Upsample2D } from "./resnet.js";
import { Transformer2DModel, Attention } from "./attention.js";

/** What every down block returns: the hidden state and the skip states it contributes. */
export interface DownBlockOutput {
  hidden: tf.Tensor4D;
  states: tf.Tensor4D[];
}

export interface BlockCommon {
  inChannels: number;
  outChannels: number;
  tembChannels: number | null;
  numLayers: number;
  resnetEps: number;
  resnetGroups: number;
  resnetAct: string;
  outputScaleFactor?: number;
}

export interface CrossAttnCommon {
  transformerLayers: number;
  heads: number;
  crossAttentionDim: number;
  useLinearProjection: boolean;
  onlyCrossAttention: boolean;
  upcastAttention: boolean;
}

function resnet(c: BlockCommon, inC: number): ResnetBlock2D {
  return new ResnetBlock2D({
    inChannels: inC,
    outChannels: c.outChannels,
    tembChannels: c.tembChannels,
    groups: c.resnetGroups,
    eps: c.resnetEps,
    act: c.resnetAct,
    outputScaleFactor: c.outputScaleFactor ?? 1,
  });
}

function transformer(c: BlockCommon & CrossAttnCommon, channels: number): Transformer2DModel {
  return new Transformer2DModel({
    heads: c.heads,
    dimHead: Math.floor(channels / c.heads),
    inChannels: channels,
    numLayers: c.transformerLayers,
    crossAttentionDim: c.crossAttentionDim,
    normNumGroups: c.resnetGroups,
    useLinearProjection: c.useLinearProjection,
    onlyCrossAttention: c.onlyCrossAttention,
    upcastAttention: c.upcastAttention,
  });
}

/** Shared helpers for blocks: checkpointed resnet / transformer calls. */
abstract class Block extends Module {
  protected runResnet(r: ResnetBlock2D, h: tf.Tensor4D, temb: tf.Tensor2D | null): tf.Tensor4D {
    if (temb) return this.maybeCheckpoint(r, (x, t) => r.forward(x as tf.Tensor4D, t as tf.Tensor2D), [h, temb]) as tf.Tensor4D;
    return this.maybeCheckpoint(r, (x) => r.forward(x as tf.Tensor4D, null), [h]) as tf.Tensor4D;
  }
  protected runTransformer(a: Transformer2DModel, h: tf.Tensor4D, ctx: tf.Tensor3D | null): tf.Tensor4D {
    if (ctx) return this.maybeCheckpoint(a, (x, c) => a.forward(x as tf.Tensor4D, c as tf.Tensor3D), [h, ctx]) as tf.Tensor4D;
    return this.maybeCheckpoint(a, (x) => a.forward(x as tf.Tensor4D, null), [h]) as tf.Tensor4D;
  }
  /** Samplers are checkpointed too (one conv recomputed): then nothing on the tape holds their weights, so a frozen
   *  sampler can be streamed from the host (planner/offload.ts) and a per-call weight copy (keepPackedWeights off)
   *  is freed with its call instead of living until backward. */
  protected runSampler(s: Downsample2D | Upsample2D | undefined, h: tf.Tensor4D, size?: [number, number]): tf.Tensor4D {
    if (!s) return h;
    if (s instanceof Upsample2D) return this.maybeCheckpoint(s, (x) => s.forward(x as tf.Tensor4D, size), [h]) as tf.Tensor4D;
    return this.maybeCheckpoint(s, (x) => s.forward(x as tf.Tensor4D), [h]) as tf.Tensor4D;
  }
}

export abstract class DownBlock extends Block {
  abstract readonly resnets: ResnetBlock2D[];
  abstract forward(h: tf.Tensor4D, temb: tf.Tensor2D | null, ctx: tf.Tensor3D | null): DownBlockOutput;
}

export abstract class UpBlock extends Block {
  abstract readonly resnets: ResnetBlock2D[];
  /** skips: the last `resnets.length` skip states, oldest first (the block consumes them from the end). */
  abstract forward(
    h: tf.Tensor4D,
    skips: tf.Tensor4D[],
    temb: tf.Tensor2D | null,
    ctx: tf.Tensor3D | null,
    upsampleSize?: [number, number],
  ): tf.Tensor4D;
}

export abstract class MidBlock extends Block {
  abstract forward(h: tf.Tensor4D, temb: tf.Tensor2D | null, ctx: tf.Tensor3D | null): tf.Tensor4D;
}

export class DownBlock2D extends DownBlock {
  readonly resnets: ResnetBlock2D[];
  readonly downsamplers: Downsample2D[] | null;
  constructor(c: BlockCommon & { addDownsample: boolean; downsamplePadding: number }) {
    super();
    const rs: ResnetBlock2D[] = [];
    for (let i = 0; i < c.numLayers; i++) rs.push(resnet(c, i === 0 ? c.inChannels : c.outChannels));
    this.resnets = this.list("resnets", rs);
    this.downsamplers = c.addDownsample
      ? this.list("downsamplers", [new Downsample2D(c.outChannels, c.outChannels, c.downsamplePadding)])
      : null;
  }
  forward(h: tf.Tensor4D, temb: tf.Tensor2D | null): DownBlockOutput {
    const states: tf.Tensor4D[] = [];
    for (const r of this.resnets) {
      h = this.runResnet(r, h, temb);
      states.push(h);
    }
    if (this.downsamplers) {
      h = this.runSampler(this.downsamplers[0], h);
      states.push(h);
    }
    return { hidden: h, states };
  }
}

/** The VAE encoder's block: a DownBlock2D without time embedding whose skip states nobody reads. */
export class DownEncoderBlock2D extends DownBlock2D {}

export class CrossAttnDownBlock2D extends DownBlock {
  readonly resnets: ResnetBlock2D[];
  readonly attentions: Transformer2DModel[];
  readonly downsamplers: Downsample2D[] | null;
  constructor(c: BlockCommon & CrossAttnCommon & { addDownsample: boolean; downsamplePadding: number }) {
    super();
    const rs: ResnetBlock2D[] = [];
    const ats: Transformer2DModel[] = [];
    for (let i = 0; i < c.numLayers; i++) {
      rs.push(resnet(c, i === 0 ? c.inChannels : c.outChannels));
      ats.push(transformer(c, c.outChannels));
    }
    this.resnets = this.list("resnets", rs);
    this.attentions = this.list("attentions", ats);
    this.downsamplers = c.addDownsample
      ? this.list("downsamplers", [new Downsample2D(c.outChannels, c.outChannels, c.downsamplePadding)])
      : null;
  }
  forward(h: tf.Tensor4D, temb: tf.Tensor2D | null, ctx: tf.Tensor3D | null): DownBlockOutput {
    const states: tf.Tensor4D[] = [];
    this.resnets.forEach((r, i) => {
      h = this.runResnet(r, h, temb);
      h = this.runTransformer(this.attentions[i]!, h, ctx);
      states.push(h);
    });
    if (this.downsamplers) {
      h = this.runSampler(this.downsamplers[0], h);
      states.push(h);
    }
    return { hidden: h, states };
  }
}

export class UNetMidBlock2DCrossAttn extends MidBlock {
  readonly resnets: ResnetBlock2D[];
  readonly attentions: Transformer2DModel[];
  constructor(c: Omit<BlockCommon, "outChannels"> & CrossAttnCommon) {
    super();
    const cc = { ...c, outChannels: c.inChannels };
    const rs = [resnet(cc, c.inChannels)];
    const ats: Transformer2DModel[] = [];
    for (let i = 0; i < c.numLayers; i++) {
      ats.push(transformer(cc, c.inChannels));
      rs.push(resnet(cc, c.inChannels));
    }
    this.resnets = this.list("resnets", rs);
    this.attentions = this.list("attentions", ats);
  }
  forward(h: tf.Tensor4D, temb: tf.Tensor2D | null, ctx: tf.Tensor3D | null): tf.Tensor4D {
    h = this.runResnet(this.resnets[0]!, h, temb);
    this.attentions.forEach((a, i) => {
      h = this.runTransformer(a, h, ctx);
      h = this.runResnet(this.resnets[i + 1]!, h, temb);
    });
    return h;
  }
}

/** UNetMidBlock2D (the VAE's): resnet, [self-attention with group norm + residual, resnet]×numLayers. */
export class UNetMidBlock2D extends MidBlock {
  readonly resnets: ResnetBlock2D[];
  readonly attentions: Attention[] | null;
  constructor(c: Omit<BlockCommon, "outChannels"> & { attentionHeadDim: number; addAttention: boolean }) {
    super();
    const cc = { ...c, outChannels: c.inChannels };
    const rs = [resnet(cc, c.inChannels)];
    const ats: Attention[] = [];
    for (let i = 0; i < c.numLayers; i++) {
      if (c.addAttention) {
        ats.push(
          new Attention({
            queryDim: c.inChannels,
            heads: Math.floor(c.inChannels / c.attentionHeadDim),
            dimHead: c.attentionHeadDim,
            bias: true,
            groupNorm: { groups: c.resnetGroups, eps: c.resnetEps },
            residualConnection: true,
            rescaleOutputFactor: c.outputScaleFactor ?? 1,
          }),
        );
      }
      rs.push(resnet(cc, c.inChannels));
    }
    this.resnets = this.list("resnets", rs);
    this.attentions = c.addAttention ? this.list("attentions", ats) : null;
  }
  forward(h: tf.Tensor4D, temb: tf.Tensor2D | null): tf.Tensor4D {
    h = this.runResnet(this.resnets[0]!, h, temb);
    for (let i = 1; i < this.resnets.length; i++) {
      const a = this.attentions?.[i - 1];
      if (a) h = this.maybeCheckpoint(a, (x) => a.forward(x as tf.Tensor4D), [h]) as tf.Tensor4D;
      h = this.runResnet(this.resnets[i]!, h, temb);
    }
    return h;
  }
}

type UpCommon = BlockCommon & { prevOutputChannels: number; addUpsample: boolean };

function upResnets(c: UpCommon): ResnetBlock2D[] {
  const rs: ResnetBlock2D[] = [];
  for (let i = 0; i < c.numLayers; i++) {
    const skip = i === c.numLayers - 1 ? c.inChannels : c.outChannels;
    const inC = i === 0 ? c.prevOutputChannels : c.outChannels;
    rs.push(resnet(c, inC + skip));
  }
  return rs;
}

export class UpBlock2D extends UpBlock {
  readonly resnets: ResnetBlock2D[];
  readonly upsamplers: Upsample2D[] | null;
  constructor(c: UpCommon) {
    super();
    this.resnets = this.list("resnets", upResnets(c));
    this.upsamplers = c.addUpsample ? this.list("upsamplers", [new Upsample2D(c.outChannels, c.outChannels)]) : null;
  }
  forward(h: tf.Tensor4D, skips: tf.Tensor4D[], temb: tf.Tensor2D | null, _ctx: tf.Tensor3D | null, size?: [number, number]): tf.Tensor4D {
    const rest = [...skips];
    for (const r of this.resnets) {
      h = tf.concat([h, rest.pop()!], 3) as tf.Tensor4D;
      h = this.runResnet(r, h, temb);
    }
    return this.runSampler(this.upsamplers?.[0], h, size);
  }
}

export class CrossAttnUpBlock2D extends UpBlock {
  readonly resnets: ResnetBlock2D[];
  readonly attentions: Transformer2DModel[];
  readonly upsamplers: Upsample2D[] | null;
  constructor(c: UpCommon & CrossAttnCommon) {
    super();
    this.resnets = this.list("resnets", upResnets(c));
    this.attentions = this.list("attentions", this.resnets.map(() => transformer(c, c.outChannels)));
    this.upsamplers = c.addUpsample ? this.list("upsamplers", [new Upsample2D(c.outChannels, c.outChannels)]) : null;
  }
  forward(h: tf.Tensor4D, skips: tf.Tensor4D[], temb: tf.Tensor2D | null, ctx: tf.Tensor3D | null, size?: [number, number]): tf.Tensor4D {
    const rest = [...skips];
    this.resnets.forEach((r, i) => {
      h = tf.concat([h, rest.pop()!], 3) as tf.Tensor4D;
      h = this.runResnet(r, h, temb);
      h = this.runTransformer(this.attentions[i]!, h, ctx);
    });
    return this.runSampler(this.upsamplers?.[0], h, size);
  }
}

/** The VAE decoder's block: resnets without skips or time embedding, then an optional upsampler. */
export class UpDecoderBlock2D extends Block {
  readonly resnets: ResnetBlock2D[];
  readonly upsamplers: Upsample2D[] | null;
  constructor(c: BlockCommon & { addUpsample: boolean }) {
    super();
    const rs: ResnetBlock2D[] = [];
    for (let i = 0; i < c.numLayers; i++) rs.push(resnet(c, i === 0 ? c.inChannels : c.outChannels));
    this.resnets = this.list("resnets", rs);
    this.upsamplers = c.addUpsample ? this.list("upsamplers", [new Upsample2D(c.outChannels, c.outChannels)]) : null;
  }
  forward(h: tf.Tensor4D): tf.Tensor4D {
    for (const r of this.resnets) h = this.runResnet(r, h, null);
    return this.runSampler(this.upsamplers?.[0], h);
  }
}
