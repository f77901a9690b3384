/** The SD1.5 component configs (diffusers-controlnet.md §4; shapes only, no weights) and the seed README's tiers. */
import type { PlannerOptions } from "./types.js";

export const SD15_UNET = {
  act_fn: "silu", attention_head_dim: 8, block_out_channels: [320, 640, 1280, 1280], center_input_sample: false,
  cross_attention_dim: 768, down_block_types: ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
  downsample_padding: 1, flip_sin_to_cos: true, freq_shift: 0, in_channels: 4, layers_per_block: 2, mid_block_scale_factor: 1,
  norm_eps: 1e-5, norm_num_groups: 32, out_channels: 4, sample_size: 64,
  up_block_types: ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
};

export const SD15_VAE = {
  act_fn: "silu", block_out_channels: [128, 256, 512, 512], down_block_types: ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
  in_channels: 3, latent_channels: 4, layers_per_block: 2, norm_num_groups: 32, out_channels: 3, sample_size: 512,
  up_block_types: ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"],
};

export const SD15_TEXT_ENCODER = {
  hidden_act: "quick_gelu", hidden_size: 768, intermediate_size: 3072, layer_norm_eps: 1e-5, max_position_embeddings: 77,
  num_attention_heads: 12, num_hidden_layers: 12, vocab_size: 49408, projection_dim: 768,
};

export interface SeedTier {
  name: string;
  /** What the seed README states (GB as nvidia-smi shows them, 1e9 bytes). */
  statedGB: number;
  batchSize: number;
  options: Partial<PlannerOptions>;
}

/**
 * The seed README's table mapped to options (resolution 512; tiers 2–5 use --train_batch_size=1 with accumulation 4,
 * which does not change memory). fp32 until the 8 GB tier adds --mixed_precision fp16; DeepSpeed ZeRO-2 with CPU
 * offload is optimizer-state offload. "xformers" = memory-efficient attention (modelled as chunked attention).
 */
export const SEED_TIERS: SeedTier[] = [
  { name: "default (batch 4)", statedGB: 38, batchSize: 4, options: {} },
  { name: "batch 1 + grad accumulation", statedGB: 20, batchSize: 1, options: {} },
  { name: "+ gradient checkpointing + 8-bit Adam", statedGB: 16, batchSize: 1, options: { gradientCheckpointing: true, use8bitAdam: true } },
  { name: "+ xformers + set_grads_to_none", statedGB: 12, batchSize: 1, options: { gradientCheckpointing: true, use8bitAdam: true, attentionChunkSize: 1024, setGradsToNone: true } },
  { name: "DeepSpeed ZeRO-2 offload + fp16 (no 8-bit)", statedGB: 8, batchSize: 1, options: { gradientCheckpointing: true, attentionChunkSize: 1024, setGradsToNone: true, offloadOptimizerState: true, mixedPrecision: "fp16" } },
];
