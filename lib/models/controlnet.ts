/**
 * ControlNetModel (diffusers models/controlnets/controlnet.py), NHWC. It *is* the UNet encoder (same class, same
 * blocks, same names) plus the conditioning embedding and the zero convolutions.
 */
import { tf } from "../engine/index.js";
import { Module } from "./module.js";
import { Conv2d, silu } from "./layers.js";
import { UNetEncoderModel } from "./unet-encoder.js";
import type { UNetEncoderConfig } from "./unet-encoder.js";
import type { UNet2DConditionModel } from "./unet-2d-condition.js";
import { loadPretrained, savePretrained } from "./pretrained.js";
import type { FromPretrainedOptions, ModelBuildOptions } from "./pretrained.js";

export interface ControlNetConfig extends UNetEncoderConfig {
  conditioning_channels: number;
  controlnet_conditioning_channel_order: "rgb" | "bgr";
  conditioning_embedding_out_channels: number[];
  global_pool_conditions: boolean;
}

/**
 * Why a ControlNet of config `cn` cannot steer a UNet of config `unet` under a VAE of `vaeScaleFactor`, or null: its
 * residuals are added to that UNet's skip connections (same channels, blocks and layers), it reads the same latents
 * and text embeddings, and its conditioning embedding must bring the control image down to the latent grid. One line
 * per difference, "field X there, Y in the base" (a ControlNet of another base failed inside TensorFlow with
 * "Incompatible shapes").
 */
export function controlnetMismatch(cn: ControlNetConfig, unet: UNetEncoderConfig, vaeScaleFactor: number): string | null {
  const perBlock = (v: number | number[], n: number) => (Array.isArray(v) ? v : Array<number>(n).fill(v));
  const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);
  const diffs: string[] = [];
  const field = (name: string, mine: unknown, theirs: unknown) => {
    if (!same(mine, theirs)) diffs.push(`${name} ${JSON.stringify(mine)} in the ControlNet, ${JSON.stringify(theirs)} in the base's UNet`);
  };
  field("in_channels", cn.in_channels, unet.in_channels);
  field("block_out_channels", cn.block_out_channels, unet.block_out_channels);
  field("down blocks", cn.down_block_types.length, unet.down_block_types.length);
  field("layers_per_block", perBlock(cn.layers_per_block, cn.block_out_channels.length), perBlock(unet.layers_per_block, unet.block_out_channels.length));
  field("cross_attention_dim", perBlock(cn.cross_attention_dim, cn.block_out_channels.length), perBlock(unet.cross_attention_dim, unet.block_out_channels.length));
  const stages = cn.conditioning_embedding_out_channels.length - 1;
  if (2 ** stages !== vaeScaleFactor) {
    diffs.push(`conditioning_embedding_out_channels downsamples the control image ×${2 ** stages} (${stages + 1} entries), the base's VAE ×${vaeScaleFactor}`);
  }
  return diffs.length ? diffs.join("; ") : null;
}

export const CONTROLNET_DEFAULTS: ControlNetConfig = {
  in_channels: 4,
  conditioning_channels: 3,
  flip_sin_to_cos: true,
  freq_shift: 0,
  down_block_types: ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
  mid_block_type: "UNetMidBlock2DCrossAttn",
  only_cross_attention: false,
  block_out_channels: [320, 640, 1280, 1280],
  layers_per_block: 2,
  downsample_padding: 1,
  mid_block_scale_factor: 1,
  act_fn: "silu",
  norm_num_groups: 32,
  norm_eps: 1e-5,
  cross_attention_dim: 1280,
  transformer_layers_per_block: 1,
  encoder_hid_dim: null,
  encoder_hid_dim_type: null,
  attention_head_dim: 8,
  num_attention_heads: null,
  use_linear_projection: false,
  class_embed_type: null,
  addition_embed_type: null,
  addition_time_embed_dim: null,
  num_class_embeds: null,
  upcast_attention: false,
  resnet_time_scale_shift: "default",
  projection_class_embeddings_input_dim: null,
  controlnet_conditioning_channel_order: "rgb",
  conditioning_embedding_out_channels: [16, 32, 96, 256],
  global_pool_conditions: false,
  addition_embed_type_num_heads: 64,
};

/** The UNet config keys from_unet copies (diffusers ControlNetModel.from_unet). */
const FROM_UNET_KEYS = [
  "in_channels", "flip_sin_to_cos", "freq_shift", "down_block_types", "only_cross_attention", "block_out_channels",
  "layers_per_block", "downsample_padding", "mid_block_scale_factor", "act_fn", "norm_num_groups", "norm_eps",
  "cross_attention_dim", "attention_head_dim", "num_attention_heads", "use_linear_projection", "class_embed_type",
  "num_class_embeds", "upcast_attention", "resnet_time_scale_shift", "projection_class_embeddings_input_dim",
  "mid_block_type", "transformer_layers_per_block", "encoder_hid_dim", "encoder_hid_dim_type", "addition_embed_type",
  "addition_time_embed_dim",
] as const;

/** The parameter groups from_unet copies from the UNet. */
const FROM_UNET_PREFIXES = ["conv_in.", "time_embedding.", "down_blocks.", "mid_block."];

/**
 * Maps the control image (8× the latent size for 4 stages) to the first block's width: conv_in, then per stage a
 * 3×3 conv and a stride-2 3×3 conv, SiLU after each, and a zero-initialised conv_out with no activation.
 */
export class ControlNetConditioningEmbedding extends Module {
  readonly conv_in: Conv2d;
  readonly blocks: Conv2d[];
  readonly conv_out: Conv2d;

  constructor(embeddingChannels: number, conditioningChannels = 3, blockOutChannels: number[] = [16, 32, 96, 256]) {
    super();
    this.conv_in = this.child("conv_in", new Conv2d(conditioningChannels, blockOutChannels[0]!, { kernel: 3, padding: 1 }));
    const blocks: Conv2d[] = [];
    for (let i = 0; i < blockOutChannels.length - 1; i++) {
      const a = blockOutChannels[i]!;
      const b = blockOutChannels[i + 1]!;
      blocks.push(new Conv2d(a, a, { kernel: 3, padding: 1 }));
      blocks.push(new Conv2d(a, b, { kernel: 3, padding: 1, stride: 2 }));
    }
    this.blocks = this.list("blocks", blocks);
    this.conv_out = this.child("conv_out", new Conv2d(blockOutChannels[blockOutChannels.length - 1]!, embeddingChannels, { kernel: 3, padding: 1, zeroInit: true }));
  }

  forward(cond: tf.Tensor4D): tf.Tensor4D {
    return tf.tidy(() => {
      let h = silu(this.conv_in.forward(cond));
      for (const b of this.blocks) h = silu(b.forward(h));
      return this.conv_out.forward(h);
    });
  }
}

export interface ControlNetForwardOptions {
  /** Multiplies every residual (diffusers `conditioning_scale`). Default 1. */
  conditioningScale?: number;
  /** Guess mode: residuals scaled by logspace(-1, 0, n+1) (0.1 … 1.0) times conditioningScale. */
  guessMode?: boolean;
}

/**
 * A control image already through the conditioning embedding (`ControlNetModel.embedCondition`). It depends only on
 * the image, so a pipeline embeds each control image once per call instead of at every sampler step and for both
 * halves of the guidance batch (diffusers recomputes it inside every ControlNetModel.forward).
 */
export interface EmbeddedCondition {
  readonly embedding: tf.Tensor4D;
}

export interface ControlNetOutput {
  /** One residual per UNet skip state (12 for SD1.5), NHWC. */
  downBlockResSamples: tf.Tensor4D[];
  midBlockResSample: tf.Tensor4D;
}

export interface FromUnetOptions {
  controlnetConditioningChannelOrder?: "rgb" | "bgr";
  conditioningEmbeddingOutChannels?: number[];
  /** Copy conv_in, time_embedding, down_blocks and mid_block from the UNet (default true). */
  loadWeightsFromUnet?: boolean;
  conditioningChannels?: number;
  /** Seed for the parameters that are not copied. */
  seed?: number;
  shapeOnly?: boolean;
}

function stripMeta(raw: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(raw)) if (!k.startsWith("_")) out[k] = v;
  return out;
}

export class ControlNetModel extends UNetEncoderModel<ControlNetConfig> {
  static readonly className = "ControlNetModel";
  readonly controlnet_cond_embedding: ControlNetConditioningEmbedding;
  readonly controlnet_down_blocks: Conv2d[];
  readonly controlnet_mid_block: Conv2d;

  constructor(config: Partial<ControlNetConfig> & Record<string, unknown> = {}, opts: ModelBuildOptions = {}) {
    const full = { ...CONTROLNET_DEFAULTS, ...stripMeta(config) } as ControlNetConfig;
    super(full, "ControlNetModel");
    const boc = full.block_out_channels;
    this.controlnet_cond_embedding = this.child(
      "controlnet_cond_embedding",
      new ControlNetConditioningEmbedding(boc[0]!, full.conditioning_channels, full.conditioning_embedding_out_channels),
    );
    const zero = (c: number) => new Conv2d(c, c, { kernel: 1, zeroInit: true });
    const zs: Conv2d[] = [zero(boc[0]!)];
    this.resolved.layersPerBlock.forEach((layers, i) => {
      for (let j = 0; j < layers; j++) zs.push(zero(boc[i]!));
      if (i !== this.resolved.numBlocks - 1) zs.push(zero(boc[i]!));
    });
    this.controlnet_down_blocks = this.list("controlnet_down_blocks", zs);
    this.controlnet_mid_block = this.child("controlnet_mid_block", zero(boc[boc.length - 1]!));
    if (!opts.shapeOnly) this.initialize(opts.seed ?? 1);
    if (opts.trainable !== undefined) this.trainable = opts.trainable;
  }

  /**
   * diffusers ControlNetModel.from_unet: the UNet's config (the keys diffusers copies), a fresh conditioning
   * embedding and zero convs, and (by default) copies of the UNet's conv_in, time_embedding, down_blocks and
   * mid_block weights. A shape-only UNet gives a shape-only ControlNet.
   */
  static fromUnet(unet: UNet2DConditionModel, opts: FromUnetOptions = {}): ControlNetModel {
    const cfg: Record<string, unknown> = {};
    for (const k of FROM_UNET_KEYS) if (unet.config[k] !== undefined) cfg[k] = unet.config[k];
    cfg.controlnet_conditioning_channel_order = opts.controlnetConditioningChannelOrder ?? "rgb";
    cfg.conditioning_embedding_out_channels = opts.conditioningEmbeddingOutChannels ?? [16, 32, 96, 256];
    cfg.conditioning_channels = opts.conditioningChannels ?? 3;
    const cn = new ControlNetModel(cfg, { shapeOnly: true });
    const load = opts.loadWeightsFromUnet ?? true;
    if (load && unet.materialized && !opts.shapeOnly) {
      const src = new Map(unet.namedParams());
      for (const [name, p] of cn.namedParams()) {
        if (!FROM_UNET_PREFIXES.some((pre) => name.startsWith(pre))) continue;
        const s = src.get(name);
        if (!s?.variable) throw new Error(`fromUnet: the UNet has no parameter '${name}'`);
        // shares the UNet's buffer until the first update assigns a new one; drop the clone's own reference
        const copy = s.variable.clone();
        p.variable = tf.variable(copy, true);
        copy.dispose();
      }
    }
    if (!opts.shapeOnly && (unet.materialized || !load)) cn.initialize(opts.seed ?? 1);
    return cn;
  }

  static fromPretrained(dir: string, opts: FromPretrainedOptions = {}): ControlNetModel {
    return loadPretrained(dir, (c, o) => new ControlNetModel(c, o), opts);
  }

  savePretrained(dir: string): void {
    savePretrained(dir, this, ControlNetModel.className, this.config);
  }

  /** controlnetCond [B, H, W, conditioning_channels] in [0,1] → its conditioning embedding [B, h, w, C0]. */
  embedCondition(controlnetCond: tf.Tensor4D): EmbeddedCondition {
    return {
      embedding: tf.tidy(() => {
        const bgr = this.config.controlnet_conditioning_channel_order === "bgr";
        return this.controlnet_cond_embedding.forward(bgr ? tf.reverse(controlnetCond, 3) : controlnetCond);
      }),
    };
  }

  /**
   * sample: [B,h,w,4] noisy latents; timestep: number, number[] or [B] tensor; encoderHiddenStates: [B,M,D];
   * controlnetCond: [B, H, W, conditioning_channels] in [0,1], H/h = 2^(stages-1) (8 for SD), or that image's
   * `embedCondition` (batch B). NHWC throughout.
   */
  forward(
    sample: tf.Tensor4D,
    timestep: number | number[] | tf.Tensor,
    encoderHiddenStates: tf.Tensor3D,
    controlnetCond: tf.Tensor4D | EmbeddedCondition,
    opts: ControlNetForwardOptions = {},
  ): ControlNetOutput {
    const scale = opts.conditioningScale ?? 1;
    const result = tf.tidy(() => {
      const b = sample.shape[0];
      const cond = "embedding" in controlnetCond ? controlnetCond.embedding : this.embedCondition(controlnetCond).embedding;
      const emb = this.embedTime(timestep, b);
      let h = tf.add(this.conv_in.forward(sample), cond) as tf.Tensor4D;
      const down = this.runDown(h, emb, encoderHiddenStates);
      h = down.hidden;
      if (this.mid_block) h = this.mid_block.forward(h, emb, encoderHiddenStates);
      if (down.states.length !== this.controlnet_down_blocks.length) {
        throw new Error(`ControlNet produced ${down.states.length} skip states for ${this.controlnet_down_blocks.length} zero convs`);
      }
      let downs = down.states.map((s, i) => this.controlnet_down_blocks[i]!.forward(s));
      let mid = this.controlnet_mid_block.forward(h);
      if (opts.guessMode && !this.config.global_pool_conditions) {
        const n = downs.length + 1;
        // torch.logspace(-1, 0, n) in float32
        const scales = Array.from({ length: n }, (_, i) => Math.fround(Math.fround(10 ** (-1 + i / (n - 1))) * scale));
        downs = downs.map((d, i) => tf.mul(d, scales[i]!) as tf.Tensor4D);
        mid = tf.mul(mid, scales[n - 1]!) as tf.Tensor4D;
      } else if (scale !== 1) {
        downs = downs.map((d) => tf.mul(d, scale) as tf.Tensor4D);
        mid = tf.mul(mid, scale) as tf.Tensor4D;
      }
      if (this.config.global_pool_conditions) {
        downs = downs.map((d) => tf.mean(d, [1, 2], true) as tf.Tensor4D);
        mid = tf.mean(mid, [1, 2], true) as tf.Tensor4D;
      }
      return [...downs, mid];
    });
    const midBlockResSample = result.pop()!;
    return { downBlockResSamples: result, midBlockResSample };
  }
}
