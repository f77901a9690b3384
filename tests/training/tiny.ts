/** Tiny random-initialised components for trainer tests (fast on 2 cores). */
import { UNet2DConditionModel, ControlNetModel, AutoencoderKL, CLIPTextModel } from "../../lib/models/index.js";
import { DDPMScheduler } from "../../lib/schedulers/index.js";
import { createDataset } from "../../lib/data/index.js";
import type { TrainingComponents } from "../../lib/training/trainer.js";

export const TINY_RESOLUTION = 16;

/** Sizes of the components (defaults: the tiny ones). The VAE has 2 stages, so latents are resolution / 2. */
export interface ComponentSizes {
  blockOutChannels?: number[];
  layersPerBlock?: number;
  heads?: number;
  resolution?: number;
  /** Tokens per prompt. */
  seqLen?: number;
}

export function tinyComponents(seed = 1, sizes: ComponentSizes = {}): TrainingComponents {
  const { blockOutChannels = [32, 64], layersPerBlock = 1, heads = 8, resolution = TINY_RESOLUTION, seqLen = 8 } = sizes;
  const unet = new UNet2DConditionModel({
    block_out_channels: blockOutChannels, layers_per_block: layersPerBlock, sample_size: resolution / 2, in_channels: 4, out_channels: 4,
    down_block_types: ["CrossAttnDownBlock2D", "DownBlock2D"], up_block_types: ["UpBlock2D", "CrossAttnUpBlock2D"],
    cross_attention_dim: 32, attention_head_dim: heads, norm_num_groups: 32,
  }, { seed });
  const controlnet = ControlNetModel.fromUnet(unet, { conditioningEmbeddingOutChannels: [16, 32], seed: seed + 1 });
  const vae = new AutoencoderKL({
    block_out_channels: [32, 64], down_block_types: ["DownEncoderBlock2D", "DownEncoderBlock2D"],
    up_block_types: ["UpDecoderBlock2D", "UpDecoderBlock2D"], latent_channels: 4, norm_num_groups: 32, sample_size: resolution,
  }, { seed: seed + 2 });
  const textEncoder = new CLIPTextModel({
    vocab_size: 1000, hidden_size: 32, intermediate_size: 37, num_hidden_layers: 2, num_attention_heads: 4,
    max_position_embeddings: seqLen, hidden_act: "gelu",
  }, { seed: seed + 3 });
  // A deterministic stand-in tokenizer: the trainer only needs ids of a fixed length.
  const tokenize = (texts: string[]) => texts.map((t) => Array.from({ length: seqLen }, (_, i) => (t.charCodeAt(i % Math.max(1, t.length)) || 0) % 1000));
  const noiseScheduler = DDPMScheduler.fromConfig({ beta_schedule: "scaled_linear", beta_start: 0.00085, beta_end: 0.012, num_train_timesteps: 1000 });
  return { unet, controlnet, vae, textEncoder, tokenize, noiseScheduler };
}

export function tinyDataset(count = 8) {
  return createDataset({ synthetic: { count, seed: 3, resolution: TINY_RESOLUTION }, resolution: TINY_RESOLUTION });
}
