/**
 * Loading the embedded tiny Stable Diffusion (data/tiny-sd, a diffusers StableDiffusionPipeline folder) and
 * sampling it with a ControlNet through the project's pipeline.
 */
import path from "node:path";
import { fileURLToPath } from "node:url";
import { tf } from "../engine/index.js";
import { AutoencoderKL, CLIPTextModel, ControlNetModel, UNet2DConditionModel } from "../models/index.js";
import { DDPMScheduler, readSchedulerConfig, schedulerFromConfig, type JsonConfig } from "../schedulers/index.js";
import { StableDiffusionControlNetPipeline, toRgbImages, denormalize, type ControlMode } from "../pipeline/index.js";
import type { RawImage } from "../data/types.js";
import { CLIPTokenizer } from "../models/clip/tokenizer.js";

/** data/tiny-sd of this checkout (found from this file, so it works from any working directory). */
export const DEFAULT_TINY_SD = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "data", "tiny-sd");

export interface TinySd {
  dir: string;
  unet: UNet2DConditionModel;
  vae: AutoencoderKL;
  textEncoder: CLIPTextModel;
  tokenizer: CLIPTokenizer;
  schedulerConfig: JsonConfig;
  noiseScheduler: DDPMScheduler;
  /** Pixel side the models were trained at (vae sample_size). */
  resolution: number;
}

export function loadTinySd(dir: string = DEFAULT_TINY_SD): TinySd {
  const unet = UNet2DConditionModel.fromPretrained(path.join(dir, "unet"));
  const vae = AutoencoderKL.fromPretrained(path.join(dir, "vae"));
  const textEncoder = CLIPTextModel.fromPretrained(path.join(dir, "text_encoder"));
  const tokenizer = CLIPTokenizer.fromFolder(path.join(dir, "tokenizer"));
  const schedulerConfig = readSchedulerConfig(path.join(dir, "scheduler"));
  const noiseScheduler = DDPMScheduler.fromConfig(schedulerConfig);
  return { dir, unet, vae, textEncoder, tokenizer, schedulerConfig, noiseScheduler, resolution: vae.config.sample_size };
}

/**
 * Classifier-free guidance for sampling the tiny base with a ControlNet. 1.5, not SD's 7.5 or the 3 used before:
 * with the ControlNet in both halves of the batch, stronger guidance grows the discs (on a demo ControlNet, the best
 * IoU came with the ground-truth radius +0.5 px at guidance 3, +0.25 at 1) and costs IoU: 0.627 / 0.660 / 0.668 /
 * 0.654 at guidance 3 / 2 / 1.5 / 1 on 64 validation outlines (seed 77001, not the demo's held-out set).
 */
export const TINY_SD_GUIDANCE_SCALE = 1.5;

/**
 * ControlNet conditioning scale for sampling the tiny base (diffusers' `controlnet_conditioning_scale`; its default
 * is 1). 2: the demo's ControlNet, 500 steps old, pulls the disc towards the outline but not all the way (the UNet
 * alone blurs the disc at every noise level, scripts/fidelity-breakdown.ts), and doubling its residuals sharpens
 * that pull. Chosen like the guidance, on 64 validation outlines (seed 77001) with the demo's ControlNet at guidance
 * 1.5: IoU 0.661 / 0.680 / 0.691 / 0.694 / 0.692 / 0.690 / 0.676 at scale 1 / 1.3 / 1.7 / 2 / 2.2 / 2.5 / 3; scale
 * 2 only in the first or the second half of the steps: 0.685 / 0.673. With scale 2, guidance 1 and 2 gave 0.661 and
 * 0.681, so 1.5 stays. Re-checked with control mode "controlnet" (below), 64 validation outlines: the demo's
 * ControlNet after 750 / 1000 steps 0.785 / 0.803 at scale 1.5, 0.794 / 0.813 at 2, 0.791 / 0.808 at 2.5.
 */
export const TINY_SD_CONDITIONING_SCALE = 2;

/**
 * The demo ControlNet's conditioning_embedding_out_channels (SD's is [16, 32, 96, 256] for its ×8 VAE; the tiny base's
 * VAE is ×4, so three stages). Wider embeddings follow the outline better per step but cost more per step (they run
 * at 32×32, where the tiny UNet runs at 8×8), and within the demo's time they do not win. Measured (previous base) on 64 validation
 * outlines (seed 77001, scale 2, guidance 1.5), time per training step relative to [16, 32, 64] in one run:
 * [16, 32, 64] × 500 steps 0.731; [32, 64, 128] (1.28×) × 500 0.740; [64, 128, 256] (2.1×) × 500 0.749, × 240
 * 0.724; [16, 64, 256] (1.26×) × 395 0.733.
 */
export const TINY_SD_CONDITIONING_EMBEDDING: readonly number[] = [16, 32, 64];

/**
 * Which halves of the guidance batch the demo's ControlNet acts on (lib/pipeline ControlMode): "controlnet", the
 * conditional half only (sd-webui-controlnet's "ControlNet is more important"), not diffusers' "balanced" (both).
 * With the ControlNet in both halves, guidance cannot push the sample towards the outline (both predictions carry
 * it) and stronger guidance only grows the discs; with the unconditional prediction left to the base, guidance
 * multiplies the control. Chosen on 64 validation outlines (seed 77001), the demo's ControlNet, 20 UniPC steps:
 * balanced 0.753 / 0.757 at scale 2 / 2.5 (guidance 1.5); conditional half only 0.769 / 0.778 / 0.776 at scale
 * 1.5 / 2 / 2.5 (guidance 1.5), 0.757 / 0.775 / 0.777 at scale 1 / 1.5 / 2 (guidance 2), 0.752 / 0.762 / 0.765
 * (guidance 3).
 */
export const TINY_SD_CONTROL_MODE: ControlMode = "controlnet";

export interface SampleOptions {
  prompts: string[];
  /** Conditioning images [B,H,W,3] in [0,1] (one per prompt). */
  conditioning: tf.Tensor4D;
  steps?: number;
  guidanceScale?: number;
  /** Multiplies the ControlNet's residuals (default TINY_SD_CONDITIONING_SCALE). */
  conditioningScale?: number;
  /** Default TINY_SD_CONTROL_MODE. */
  controlMode?: ControlMode;
  seed?: number;
  /** Images per pipeline call (memory/speed). */
  batchSize?: number;
}

/** Generates one image per prompt with UniPC (the seed's validation scheduler), through the ControlNet pipeline. */
export async function sampleControlled(sd: TinySd, controlnet: ControlNetModel, o: SampleOptions): Promise<RawImage[]> {
  const out: RawImage[] = [];
  const bs = o.batchSize ?? 16;
  for (let s = 0; s < o.prompts.length; s += bs) {
    const prompts = o.prompts.slice(s, s + bs);
    const cond = tf.slice(o.conditioning, [s, 0, 0, 0], [prompts.length, -1, -1, -1]) as tf.Tensor4D;
    const pipe = new StableDiffusionControlNetPipeline({
      unet: sd.unet, controlnet, vae: sd.vae, textEncoder: sd.textEncoder, tokenizer: sd.tokenizer,
      scheduler: schedulerFromConfig("unipc", sd.schedulerConfig),
    });
    try {
      const r = await pipe.call({
        prompt: prompts, image: cond, numInferenceSteps: o.steps ?? 20, guidanceScale: o.guidanceScale ?? TINY_SD_GUIDANCE_SCALE,
        controlnetConditioningScale: o.conditioningScale ?? TINY_SD_CONDITIONING_SCALE,
        controlMode: o.controlMode ?? TINY_SD_CONTROL_MODE,
        seed: (o.seed ?? 1) + s, outputType: "tensor",
      });
      if (r.pixels) {
        out.push(...toRgbImages(r.pixels));
        r.pixels.dispose();
      } else out.push(...r.rgb);
    } finally {
      cond.dispose();
    }
  }
  return out;
}

/** VAE round trip (for checking the autoencoder): pixels [-1,1] → images. */
export function reconstruct(sd: TinySd, pixels: tf.Tensor4D): RawImage[] {
  const x = tf.tidy(() => denormalize(sd.vae.forward(pixels)));
  const imgs = toRgbImages(x);
  x.dispose();
  return imgs;
}
