/**
 * A floor under a generation's peak memory, to refuse before any work a size that cannot fit the engine (a 16384²
 * image filled 15 GB and never finished; after training, a 12000² validation image would fill the machine after the
 * last step). Not a plan: the UNet's first block on its batch (the guidance batch: 2 × images with classifier-free
 * guidance) at latent size, or the VAE decoder's last block on one image (images are decoded one at a time) at full
 * size, each with a few live activations of that size.
 */
import { memoryBudget } from "../engine/index.js";
import { InputError } from "../io/input-error.js";

/** Live activations of the largest size assumed at once (inputs, outputs, a norm's and a conv's temporaries). */
const LIVE_ACTIVATIONS = 4;

export interface GenerationShape {
  vaeScaleFactor: number;
  /** The UNet's and the VAE's first block_out_channels. */
  unetChannels: number;
  vaeChannels: number;
  /** Latents the UNet runs on at once (prompts × images, doubled by classifier-free guidance). */
  unetBatch: number;
}

export function generationFloorBytes(width: number, height: number, m: GenerationShape): number {
  if (m.unetBatch <= 0) return 0;
  const latent = Math.ceil(width / m.vaeScaleFactor) * Math.ceil(height / m.vaeScaleFactor);
  return LIVE_ACTIVATIONS * 4 * Math.max(m.unetBatch * latent * m.unetChannels, width * height * m.vaeChannels);
}

/**
 * What a generation of width×height lacks in the engine's memory — "needs at least ~X GB, more than the engine's Y
 * GB" — or null when its floor fits (or CONTROLNET_TS_IGNORE_PLAN=1 skips the check). Callers put it in their own
 * words: the pipeline refuses the call, training refuses a validation image before step 1.
 */
export function generationShortfall(width: number, height: number, m: GenerationShape, budget = memoryBudget()): string | null {
  if (process.env.CONTROLNET_TS_IGNORE_PLAN) return null;
  const need = generationFloorBytes(width, height, m);
  if (need <= budget) return null;
  return `needs at least ~${(need / 1024 ** 3).toFixed(1)} GB, more than the engine's ${(budget / 1024 ** 3).toFixed(1)} GB`;
}

/** Refuses a generation of width×height that cannot fit the engine's memory; `advice` says what to make smaller,
 *  in the caller's names. */
export function refuseGenerationBeyondMemory(width: number, height: number, m: GenerationShape, advice: string): void {
  const shortfall = generationShortfall(width, height, m);
  if (shortfall) throw new InputError(`generating ${m.unetBatch} latent(s) at ${width}×${height} ${shortfall}; ${advice}. Nothing was generated.`);
}
