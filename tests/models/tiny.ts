/** Tiny configs shared by the model tests (diffusers' own test configs, see shared/reference §4.7). */
export const TINY_UNET = {
  block_out_channels: [4, 8],
  layers_per_block: 2,
  sample_size: 32,
  in_channels: 4,
  out_channels: 4,
  down_block_types: ["DownBlock2D", "CrossAttnDownBlock2D"],
  up_block_types: ["CrossAttnUpBlock2D", "UpBlock2D"],
  cross_attention_dim: 32,
  norm_num_groups: 1,
};

/** A slightly larger UNet for the memory tests: 3 stages, two attention stages, 8 channel groups. */
export const MID_UNET = {
  block_out_channels: [16, 32, 32],
  layers_per_block: 1,
  in_channels: 4,
  out_channels: 4,
  down_block_types: ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
  up_block_types: ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
  cross_attention_dim: 16,
  attention_head_dim: 2,
  norm_num_groups: 8,
};

/** diffusers' ControlNet pipeline test VAE. */
export const TINY_VAE = {
  block_out_channels: [4, 8],
  in_channels: 3,
  out_channels: 3,
  down_block_types: ["DownEncoderBlock2D", "DownEncoderBlock2D"],
  up_block_types: ["UpDecoderBlock2D", "UpDecoderBlock2D"],
  latent_channels: 4,
  norm_num_groups: 2,
};

/** diffusers' tiny CLIP text config. */
export const TINY_CLIP = {
  bos_token_id: 0, eos_token_id: 2, hidden_size: 32, intermediate_size: 37, layer_norm_eps: 1e-5,
  num_attention_heads: 4, num_hidden_layers: 5, pad_token_id: 1, vocab_size: 1000,
};
