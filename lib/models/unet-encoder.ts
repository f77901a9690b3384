/**
 * The part UNet2DConditionModel and ControlNetModel share, written once: config resolution (int-or-list options,
 * the historic `attention_head_dim` = number of heads), conv_in, the time embedding, the down blocks and the mid
 * block, with their diffusers names. Both models extend this class; ControlNetModel.fromUnet copies exactly these
 * parameters.
 */
import { tf } from "../engine/index.js";
import { CONFIG_LIMITS, ConfigCheck } from "./config-checks.js";
import { Module } from "./module.js";
import { Conv2d } from "./layers.js";
import { Timesteps, TimestepEmbedding, timestepValues } from "./embeddings.js";
import { CrossAttnDownBlock2D, DownBlock, DownBlock2D, MidBlock, UNetMidBlock2DCrossAttn } from "./unet-blocks.js";
import { Attention } from "./attention.js";

/** The config keys the encoder reads (snake_case, as in config.json). */
export interface UNetEncoderConfig {
  in_channels: number;
  flip_sin_to_cos: boolean;
  freq_shift: number;
  down_block_types: string[];
  mid_block_type: string | null;
  only_cross_attention: boolean | boolean[];
  block_out_channels: number[];
  layers_per_block: number | number[];
  downsample_padding: number;
  mid_block_scale_factor: number;
  act_fn: string;
  norm_num_groups: number;
  norm_eps: number;
  cross_attention_dim: number | number[];
  transformer_layers_per_block: number | number[];
  attention_head_dim: number | number[];
  num_attention_heads: number | number[] | null;
  use_linear_projection: boolean;
  upcast_attention: boolean;
  resnet_time_scale_shift: string;
  class_embed_type: string | null;
  num_class_embeds: number | null;
  addition_embed_type: string | null;
  encoder_hid_dim: number | null;
  encoder_hid_dim_type: string | null;
  conv_in_kernel?: number;
  [key: string]: unknown;
}

export interface ResolvedEncoderConfig {
  numBlocks: number;
  heads: number[];
  crossAttentionDim: number[];
  transformerLayers: number[];
  layersPerBlock: number[];
  onlyCrossAttention: boolean[];
  timeEmbedDim: number;
}

function perBlock<T>(v: T | T[], n: number, name: string): T[] {
  if (Array.isArray(v)) {
    if (v.length !== n) throw new Error(`config '${name}' has ${v.length} entries for ${n} down blocks`);
    return v;
  }
  return new Array<T>(n).fill(v);
}

/** Rejects the diffusers features this port does not implement, naming each, instead of running them wrong. */
export function checkSupported(cfg: Record<string, unknown>, cls: string): void {
  const problems: string[] = [];
  const mustBeNull = ["class_embed_type", "addition_embed_type", "encoder_hid_dim", "encoder_hid_dim_type", "time_cond_proj_dim", "cross_attention_norm", "time_embedding_dim", "timestep_post_act", "time_embedding_act_fn"];
  for (const k of mustBeNull) if (cfg[k] !== undefined && cfg[k] !== null) problems.push(`${k}=${JSON.stringify(cfg[k])}`);
  const eq = (k: string, want: unknown) => {
    if (cfg[k] !== undefined && cfg[k] !== null && cfg[k] !== want) problems.push(`${k}=${JSON.stringify(cfg[k])}`);
  };
  eq("resnet_time_scale_shift", "default");
  eq("attention_type", "default");
  eq("time_embedding_type", "positional");
  eq("dual_cross_attention", false);
  eq("class_embeddings_concat", false);
  eq("resnet_skip_time_act", false);
  eq("center_input_sample", false);
  if (typeof cfg.dropout === "number" && cfg.dropout !== 0) problems.push(`dropout=${cfg.dropout}`);
  if (problems.length) throw new Error(`${cls}: unsupported config option(s): ${problems.join(", ")}`);
}

/**
 * Checks a UNet/ControlNet config's types and magnitudes before anything is built, naming the field (config-checks.ts).
 */
export function validateEncoderConfig(cfg: Record<string, unknown>, cls: string): void {
  const check = new ConfigCheck(cfg, cls);
  check.names("down_block_types");
  const boc = cfg.block_out_channels;
  if (!Array.isArray(boc) || boc.length < 1 || !boc.every((c) => ConfigCheck.isInt(c, 1, CONFIG_LIMITS.channels))) {
    check.fail("block_out_channels", `a list of integers from 1 to ${CONFIG_LIMITS.channels}`);
  }
  check.intOrList("layers_per_block", 1, CONFIG_LIMITS.layers);
  check.intOrList("transformer_layers_per_block", 1, CONFIG_LIMITS.layers, false);
  check.intOrList("attention_head_dim", 1, CONFIG_LIMITS.heads, false);
  check.intOrList("num_attention_heads", 1, CONFIG_LIMITS.heads, false);
  check.intOrList("cross_attention_dim", 1, CONFIG_LIMITS.channels, false);
  check.int("in_channels", 1, 1024);
  check.int("norm_num_groups", 1, CONFIG_LIMITS.channels, false);
  check.groupsDivide("norm_num_groups", "block_out_channels", 32);
  check.int("sample_size", 1, 65_536, false);
  check.bool("upcast_attention", false);
  // ControlNet only
  if (cfg.conditioning_embedding_out_channels !== undefined) check.intList("conditioning_embedding_out_channels", 1, CONFIG_LIMITS.channels);
  check.int("conditioning_channels", 1, 1024, false);
  if ("mid_block_type" in cfg && cfg.mid_block_type === null) {
    throw new Error(`${cls} config: mid_block_type null (diffusers: no mid block) is not supported; ` +
      `this port builds "UNetMidBlock2DCrossAttn" only (a ControlNet always has a mid block residual)`);
  }
  const n = (boc as number[]).length;
  const per = (v: unknown) => (Array.isArray(v) ? (v as number[]) : new Array<number>(n).fill((v as number | undefined) ?? 1));
  const layers = per(cfg.layers_per_block);
  const tLayers = per(cfg.transformer_layers_per_block);
  let params = 0;
  (boc as number[]).forEach((c, i) => (params += (layers[i] ?? 1) * (2 * 9 * c * c + 12 * (tLayers[i] ?? 1) * c * c)));
  check.parameters(params, "block_out_channels × layers_per_block × transformer_layers_per_block");
}

export function resolveEncoderConfig(cfg: UNetEncoderConfig): ResolvedEncoderConfig {
  const n = cfg.down_block_types.length;
  if (cfg.block_out_channels.length !== n) throw new Error(`block_out_channels has ${cfg.block_out_channels.length} entries for ${n} down blocks`);
  // diffusers: num_attention_heads = num_attention_heads or attention_head_dim (the historic misnaming)
  const heads = perBlock(cfg.num_attention_heads ?? cfg.attention_head_dim, n, "num_attention_heads");
  return {
    numBlocks: n,
    heads,
    crossAttentionDim: perBlock(cfg.cross_attention_dim, n, "cross_attention_dim"),
    transformerLayers: perBlock(cfg.transformer_layers_per_block, n, "transformer_layers_per_block"),
    layersPerBlock: perBlock(cfg.layers_per_block, n, "layers_per_block"),
    onlyCrossAttention: perBlock(cfg.only_cross_attention, n, "only_cross_attention"),
    timeEmbedDim: cfg.block_out_channels[0]! * 4,
  };
}

export abstract class UNetEncoderModel<C extends UNetEncoderConfig> extends Module {
  readonly config: C;
  readonly resolved: ResolvedEncoderConfig;
  readonly conv_in: Conv2d;
  readonly time_proj: Timesteps;
  readonly time_embedding: TimestepEmbedding;
  readonly down_blocks: DownBlock[];
  readonly mid_block: MidBlock | null;

  constructor(config: C, cls: string) {
    super();
    validateEncoderConfig(config, cls);
    checkSupported(config, cls);
    this.config = config;
    const r = (this.resolved = resolveEncoderConfig(config));
    const boc = config.block_out_channels;
    const k = config.conv_in_kernel ?? 3;
    this.conv_in = this.child("conv_in", new Conv2d(config.in_channels, boc[0]!, { kernel: k, padding: (k - 1) >> 1 }));
    this.time_proj = new Timesteps(boc[0]!, config.flip_sin_to_cos, config.freq_shift);
    this.time_embedding = this.child("time_embedding", new TimestepEmbedding(boc[0]!, r.timeEmbedDim, config.act_fn));

    const blocks: DownBlock[] = [];
    let out = boc[0]!;
    config.down_block_types.forEach((type, i) => {
      const inC = out;
      out = boc[i]!;
      const common = {
        inChannels: inC,
        outChannels: out,
        tembChannels: r.timeEmbedDim,
        numLayers: r.layersPerBlock[i]!,
        resnetEps: config.norm_eps,
        resnetGroups: config.norm_num_groups,
        resnetAct: config.act_fn,
        outputScaleFactor: typeof config.resnet_out_scale_factor === "number" ? config.resnet_out_scale_factor : 1,
        addDownsample: i !== r.numBlocks - 1,
        downsamplePadding: config.downsample_padding,
      };
      if (type === "DownBlock2D") blocks.push(new DownBlock2D(common));
      else if (type === "CrossAttnDownBlock2D") {
        blocks.push(
          new CrossAttnDownBlock2D({
            ...common,
            transformerLayers: r.transformerLayers[i]!,
            heads: r.heads[i]!,
            crossAttentionDim: r.crossAttentionDim[i]!,
            useLinearProjection: config.use_linear_projection,
            onlyCrossAttention: r.onlyCrossAttention[i]!,
            upcastAttention: config.upcast_attention,
          }),
        );
      } else throw new Error(`${cls}: unsupported down block type '${type}' (supported: DownBlock2D, CrossAttnDownBlock2D)`);
    });
    this.down_blocks = this.list("down_blocks", blocks);

    const midType = config.mid_block_type ?? "UNetMidBlock2DCrossAttn";
    if (midType !== "UNetMidBlock2DCrossAttn") throw new Error(`${cls}: unsupported mid_block_type '${midType}'`);
    const last = boc[boc.length - 1]!;
    this.mid_block = this.child(
      "mid_block",
      new UNetMidBlock2DCrossAttn({
        inChannels: last,
        tembChannels: r.timeEmbedDim,
        numLayers: 1,
        resnetEps: config.norm_eps,
        resnetGroups: config.norm_num_groups,
        resnetAct: config.act_fn,
        outputScaleFactor: config.mid_block_scale_factor,
        transformerLayers: r.transformerLayers[r.numBlocks - 1]!,
        heads: r.heads[r.numBlocks - 1]!,
        crossAttentionDim: r.crossAttentionDim[r.numBlocks - 1]!,
        useLinearProjection: config.use_linear_projection,
        onlyCrossAttention: false,
        upcastAttention: config.upcast_attention,
      }),
    );
  }

  /** The time embedding [B, 4·C0] for one timestep (broadcast) or one per batch element. */
  protected embedTime(timestep: number | number[] | tf.Tensor, batch: number): tf.Tensor2D {
    return tf.tidy(() => this.time_embedding.forward(this.time_proj.forward(timestepValues(timestep, batch))));
  }

  /** Down blocks from the conv_in output; returns the hidden state and all skip states (conv_in output first). */
  protected runDown(h: tf.Tensor4D, emb: tf.Tensor2D, ctx: tf.Tensor3D): { hidden: tf.Tensor4D; states: tf.Tensor4D[] } {
    const states: tf.Tensor4D[] = [h];
    for (const block of this.down_blocks) {
      const o = block.forward(h, emb, ctx);
      h = o.hidden;
      states.push(...o.states);
    }
    return { hidden: h, states };
  }

  /** Query chunk size for every attention layer (0 = full attention). */
  setAttentionChunkSize(chunkSize: number): this {
    for (const m of this.modules()) if (m instanceof Attention) m.chunkSize = chunkSize;
    return this;
  }
}
