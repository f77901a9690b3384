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
