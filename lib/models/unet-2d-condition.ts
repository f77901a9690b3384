/**
 * UNet2DConditionModel (diffusers models/unets/unet_2d_condition.py), NHWC, configured by its config.json.
 * Supports the SD1.x/SD2.x features: attention_head_dim int or list, num_attention_heads, use_linear_projection,
 * upcast_attention, cross_attention_dim, transformer_layers_per_block, flip_sin_to_cos/freq_shift, and ControlNet
 * residuals (down_block_additional_residuals / mid_block_additional_residual).
 */
import { tf } from "../engine/index.js";
import { Conv2d, GroupNorm, activation } from "./layers.js";
import { CrossAttnUpBlock2D, UpBlock, UpBlock2D } from "./unet-blocks.js";
import { UNetEncoderModel } from "./unet-encoder.js";
import type { UNetEncoderConfig } from "./unet-encoder.js";
import { loadPretrained, savePretrained } from "./pretrained.js";
import type { FromPretrainedOptions, ModelBuildOptions } from "./pretrained.js";

export interface UNet2DConditionConfig extends UNetEncoderConfig {
  sample_size: number | null;
  out_channels: number;
  center_input_sample: boolean;
  up_block_types: string[];
  conv_out_kernel?: number;
}

/** diffusers' __init__ defaults (what save_pretrained writes for keys a config.json leaves out). */
export const UNET_2D_CONDITION_DEFAULTS: UNet2DConditionConfig = {
  sample_size: null,
  in_channels: 4,
  out_channels: 4,
  center_input_sample: false,
  flip_sin_to_cos: true,
  freq_shift: 0,
  down_block_types: ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
  mid_block_type: "UNetMidBlock2DCrossAttn",
  up_block_types: ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
  only_cross_attention: false,
  block_out_channels: [320, 640, 1280, 1280],
  layers_per_block: 2,
  downsample_padding: 1,
  mid_block_scale_factor: 1,
  dropout: 0.0,
  act_fn: "silu",
  norm_num_groups: 32,
  norm_eps: 1e-5,
  cross_attention_dim: 1280,
  transformer_layers_per_block: 1,
  reverse_transformer_layers_per_block: null,
  encoder_hid_dim: null,
  encoder_hid_dim_type: null,
  attention_head_dim: 8,
  num_attention_heads: null,
  dual_cross_attention: false,
  use_linear_projection: false,
  class_embed_type: null,
  addition_embed_type: null,
  addition_time_embed_dim: null,
  num_class_embeds: null,
  upcast_attention: false,
  resnet_time_scale_shift: "default",
  resnet_skip_time_act: false,
  resnet_out_scale_factor: 1.0,
  time_embedding_type: "positional",
  time_embedding_dim: null,
  time_embedding_act_fn: null,
  timestep_post_act: null,
  time_cond_proj_dim: null,
  conv_in_kernel: 3,
  conv_out_kernel: 3,
  projection_class_embeddings_input_dim: null,
  attention_type: "default",
  class_embeddings_concat: false,
  mid_block_only_cross_attention: null,
  cross_attention_norm: null,
  addition_embed_type_num_heads: 64,
};

/** forwardDown's result: the time embedding, the mid block's output and every skip state (conv_in's output first). */
export type UNetDownState = {
  emb: tf.Tensor2D;
  hidden: tf.Tensor4D;
  skips: tf.Tensor4D[];
};

export interface UNetForwardOptions {
  /** ControlNet residuals added to the skip states (one per skip: conv_in output, each resnet/attention, each downsampler). */
  downBlockAdditionalResiduals?: tf.Tensor4D[];
  /** ControlNet residual added after the mid block. */
  midBlockAdditionalResidual?: tf.Tensor4D;
}

/** Config keys the JSON may hold that are metadata, not options. */
function stripMeta(raw: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(raw)) if (!k.startsWith("_")) out[k] = v;
  return out;
}

export class UNet2DConditionModel extends UNetEncoderModel<UNet2DConditionConfig> {
  static readonly className = "UNet2DConditionModel";
  readonly up_blocks: UpBlock[];
  readonly conv_norm_out: GroupNorm;
  readonly conv_out: Conv2d;
  readonly numUpsamplers: number;

  /**
   * Builds the model from a (partial) config.json object. Parameters are allocated with a seeded PyTorch-style
   * init unless `shapeOnly` (then call loadState or initialize before forward).
   */
  constructor(config: Partial<UNet2DConditionConfig> & Record<string, unknown> = {}, opts: ModelBuildOptions = {}) {
    const full = { ...UNET_2D_CONDITION_DEFAULTS, ...stripMeta(config) } as UNet2DConditionConfig;
    super(full, "UNet2DConditionModel");
    const r = this.resolved;
    const boc = full.block_out_channels;
    const n = r.numBlocks;
    if (full.up_block_types.length !== n) throw new Error(`up_block_types has ${full.up_block_types.length} entries for ${n} down blocks`);
    const rev = <T>(a: T[]) => [...a].reverse();
    const revBoc = rev(boc);
    const revHeads = rev(r.heads);
    const revLayers = rev(r.layersPerBlock);
    const revCross = rev(r.crossAttentionDim);
    const revTl = (full.reverse_transformer_layers_per_block as number[] | null) ?? rev(r.transformerLayers);
    const revOnlyCross = rev(r.onlyCrossAttention);

    const ups: UpBlock[] = [];
    let out = revBoc[0]!;
    let numUp = 0;
    full.up_block_types.forEach((type, i) => {
      const isFinal = i === n - 1;
      const prev = out;
      out = revBoc[i]!;
      const inC = revBoc[Math.min(i + 1, n - 1)]!;
      if (!isFinal) numUp++;
      const common = {
        inChannels: inC,
        outChannels: out,
        prevOutputChannels: prev,
        tembChannels: r.timeEmbedDim,
        numLayers: revLayers[i]! + 1,
        resnetEps: full.norm_eps,
        resnetGroups: full.norm_num_groups,
        resnetAct: full.act_fn,
        outputScaleFactor: typeof full.resnet_out_scale_factor === "number" ? full.resnet_out_scale_factor : 1,
        addUpsample: !isFinal,
      };
      if (type === "UpBlock2D") ups.push(new UpBlock2D(common));
      else if (type === "CrossAttnUpBlock2D") {
        ups.push(
          new CrossAttnUpBlock2D({
            ...common,
            transformerLayers: revTl[i]!,
            heads: revHeads[i]!,
            crossAttentionDim: revCross[i]!,
            useLinearProjection: full.use_linear_projection,
            onlyCrossAttention: revOnlyCross[i]!,
            upcastAttention: full.upcast_attention,
          }),
        );
      } else throw new Error(`UNet2DConditionModel: unsupported up block type '${type}' (supported: UpBlock2D, CrossAttnUpBlock2D)`);
    });
    this.up_blocks = this.list("up_blocks", ups);
    this.numUpsamplers = numUp;
    this.conv_norm_out = this.child("conv_norm_out", new GroupNorm(full.norm_num_groups, boc[0]!, full.norm_eps));
    const k = full.conv_out_kernel ?? 3;
    this.conv_out = this.child("conv_out", new Conv2d(boc[0]!, full.out_channels, { kernel: k, padding: (k - 1) >> 1 }));
    if (!opts.shapeOnly) this.initialize(opts.seed ?? 1);
    if (opts.trainable !== undefined) this.trainable = opts.trainable;
  }

  /** Loads a diffusers `unet/` folder (config.json + safetensors). */
  static fromPretrained(dir: string, opts: FromPretrainedOptions = {}): UNet2DConditionModel {
    return loadPretrained(dir, (c, o) => new UNet2DConditionModel(c, o), opts);
  }

  /** Writes a folder diffusers' UNet2DConditionModel.from_pretrained loads. */
  savePretrained(dir: string): void {
    savePretrained(dir, this, UNet2DConditionModel.className, this.config);
  }

  /**
   * sample: [B,H,W,C] latents (NHWC); timestep: a number, one per batch element, or a [B] tensor;
   * encoderHiddenStates: [B,M,cross_attention_dim]. Returns the [B,H,W,out_channels] prediction.
   */
  forward(
    sample: tf.Tensor4D,
    timestep: number | number[] | tf.Tensor,
    encoderHiddenStates: tf.Tensor3D,
    opts: UNetForwardOptions = {},
  ): tf.Tensor4D {
    return tf.tidy(() => this.forwardUp(this.forwardDown(sample, timestep, encoderHiddenStates), encoderHiddenStates, opts));
  }

  /**
   * The first part of forward: time embedding, conv_in, the down blocks and the mid block — everything a ControlNet's
   * residuals do not reach (they join the skips and the mid block's output). Training runs it outside the gradient
   * scope (training/step.ts): tfjs' tape records every kernel run inside one and keeps what each saves for backward,
   * whether or not a trainable weight lies upstream, where torch's autograd records nothing for a frozen prefix.
   */
  forwardDown(sample: tf.Tensor4D, timestep: number | number[] | tf.Tensor, encoderHiddenStates: tf.Tensor3D): UNetDownState {
    return tf.tidy(() => {
      const emb = this.embedTime(timestep, sample.shape[0]);
      const down = this.runDown(this.conv_in.forward(sample), emb, encoderHiddenStates);
      const hidden = this.mid_block ? this.mid_block.forward(down.hidden, emb, encoderHiddenStates) : down.hidden;
      return { emb, hidden, skips: down.states };
    });
  }

  /** The rest of forward from forwardDown's state: the ControlNet's residuals join, then the up blocks and conv_out. */
  forwardUp(state: UNetDownState, encoderHiddenStates: tf.Tensor3D, opts: UNetForwardOptions = {}): tf.Tensor4D {
    return tf.tidy(() => {
      const { emb } = state;
      const [, hh, ww] = state.skips[0]!.shape;
      const factor = 2 ** this.numUpsamplers;
      const forwardUpsampleSize = hh % factor !== 0 || ww % factor !== 0;
      let h = state.hidden;
      let skips = state.skips;
      const extra = opts.downBlockAdditionalResiduals;
      if (extra) {
        if (extra.length !== skips.length) throw new Error(`expected ${skips.length} down_block_additional_residuals, got ${extra.length}`);
        skips = skips.map((s, i) => tf.add(s, extra[i]!) as tf.Tensor4D);
      }
      if (opts.midBlockAdditionalResidual) h = tf.add(h, opts.midBlockAdditionalResidual) as tf.Tensor4D;

      this.up_blocks.forEach((block, i) => {
        const take = block.resnets.length;
        const res = skips.slice(skips.length - take);
        skips = skips.slice(0, skips.length - take);
        let size: [number, number] | undefined;
        if (i !== this.up_blocks.length - 1 && forwardUpsampleSize) {
          const s = skips[skips.length - 1]!.shape;
          size = [s[1], s[2]];
        }
        h = block.forward(h, res, emb, encoderHiddenStates, size);
      });
      h = this.conv_norm_out.forward(h);
      h = activation(this.config.act_fn)(h);
      return this.conv_out.forward(h);
    });
  }
}
