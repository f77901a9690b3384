/**
 * log_validation: the ControlNet being trained drives the inference pipeline (UniPC, as the script does) on the
 * validation images/prompts; images are saved under output_dir and returned for logging.
 */
import fs from "node:fs";
import path from "node:path";
import type { ControlNetModel } from "../models/index.js";
import { StableDiffusionControlNetPipeline } from "../pipeline/pipeline.js";
import type { ControlMode } from "../pipeline/guidance.js";
import { loadScheduler, Generator } from "../schedulers/index.js";
import { decodeRgb, resizeCenterCrop } from "../data/index.js";
import { InputError } from "../io/input-error.js";
import { resizeRgb } from "../pipeline/image.js";
import type { RawImage } from "../data/types.js";
import { averageFidelity, summarizeFidelity, targetFromValidation, type FidelitySummary } from "../eval/fidelity.js";
import type { BaseModel } from "./base.js";
import { makeDirs } from "../io/dirs.js";
import { writeFileAtomic } from "../io/diffusers.js";

export interface ValidationOptions {
  /** validation_image: one per prompt, or one for all prompts, or prompts one for all images (the script's rules). */
  images: string[];
  prompts: string[];
  /** num_validation_images per pair (default 4). */
  numImages?: number;
  /** Inference steps (the script uses 20). */
  steps?: number;
  seed?: number;
  /** Where PNGs go (default <output_dir>/validation). */
  dir?: string;
  step: number;
  /** The round after training (the script's is_final_validation): its files are named `step-N-final-…`, beside the
   *  round of step N when the last step was a validation step too (both are kept, as the script logs both). */
  final?: boolean;
  /** Generate at this size (the control image is resized to it); default: the control image's own size. */
  resolution?: number;
  /** Sampling: classifier-free guidance (pipeline default 7.5), the ControlNet's conditioning scale (default 1) and
   *  control mode (default "balanced", diffusers'). The tiny base's demo samples at 1.5 / 2 / "controlnet". */
  guidanceScale?: number;
  conditioningScale?: number;
  controlMode?: ControlMode;
  signal?: AbortSignal;
  /** Apply the images' EXIF orientation (default false, as the script's validation; true: load_image's, for inference). */
  orient?: boolean;
  /** The PNG's name for pair `pair`, sample `sample` (default `step-N[-final]-pair-P-sample-K.png`). */
  fileName?: (pair: number, sample: number) => string;
}

export interface ValidationResult {
  step: number;
  /** `samples` are the PNG bytes written to `files`; `rgb` the same images decoded (for loggers); `control` the
   *  conditioning image as RGB at the samples' size (loggers put it first, as log_validation does); `fidelity`: control
   *  fidelity of the samples when the pair is fill50k-style (outline + "<c> circle with <c> background"), else null. */
  pairs: { image: string; prompt: string; control: RawImage; samples: Uint8Array[]; rgb: RawImage[]; files: string[]; fidelity: FidelitySummary | null }[];
  /** Fidelity over all scored pairs' samples pooled; null when no pair could be scored. */
  fidelity: FidelitySummary | null;
  seconds: number;
}

/** Pairs validation images with prompts exactly as train_controlnet.py's log_validation does. */
export function pairValidation(images: string[], prompts: string[]): [string, string][] {
  if (images.length === prompts.length) return images.map((im, i) => [im, prompts[i]!]);
  if (images.length === 1) return prompts.map((p) => [images[0]!, p]);
  if (prompts.length === 1) return images.map((im) => [im, prompts[0]!]);
  throw new InputError(`number of validation images (${images.length}) and prompts (${prompts.length}) must match, or one of them must be 1`);
}

/**
 * Reads and decodes every validation image before training starts, so a missing, empty or undecodable file is refused
 * up front (one line naming the file) instead of at the first validation, after the steps it would cost.
 */
export async function checkValidationImages(images: readonly string[], o: { label?: string; outcome?: string; orient?: boolean } = {}): Promise<{ image: string; width: number; height: number }[]> {
  // the image as the caller calls it and what its refusal means (a cell's infer() trains nothing: it generates nothing)
  const label = o.label ?? "validation image";
  const outcome = o.outcome ?? "nothing was trained";
  const sizes: { image: string; width: number; height: number }[] = [];
  for (const image of new Set(images)) {
    let bytes: Buffer;
    try {
      bytes = fs.readFileSync(image);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      throw new InputError(`${label} ${image} cannot be read (${code === "ENOENT" ? "no such file" : code === "EISDIR" ? "a folder" : (e as Error).message}); ${outcome}`);
    }
    if (bytes.length === 0) throw new InputError(`${label} ${image} is empty (0 bytes); ${outcome}`);
    try {
      const { width, height } = await decodeRgb(new Uint8Array(bytes), { orient: o.orient ?? false });
      sizes.push({ image, width, height });
    } catch (e) {
      throw new InputError(`${label} ${image} is not a readable image (${(e as Error).message.split("\n")[0]}); ${outcome}`);
    }
  }
  return sizes;
}

export async function runValidation(base: BaseModel, controlnet: ControlNetModel, o: ValidationOptions): Promise<ValidationResult> {
  const t0 = performance.now();
  const pipe = new StableDiffusionControlNetPipeline({
    unet: base.unet, vae: base.vae, textEncoder: base.textEncoder, tokenizer: base.tokenizer,
    scheduler: loadScheduler(base.schedulerDir, "unipc"), controlnet,
  });
  const dir = o.dir ?? "validation";
  makeDirs(dir);
  const pairs: ValidationResult["pairs"] = [];
  // One generator for the whole validation, as log_validation does, so pairs do not all start from the same noise.
  const generator = new Generator(o.seed ?? 0);
  for (const [i, [image, prompt]] of pairValidation(o.images, o.prompts).entries()) {
    // Like the training transforms: shorter side to `resolution`, centre crop (the pipeline refuses other sizes).
    // Opened as the script does, without the EXIF orientation (unless asked: the inference snippet's load_image).
    const bytes = new Uint8Array(fs.readFileSync(image));
    const decode = { orient: o.orient ?? false };
    const controlRgb = o.resolution ? await resizeCenterCrop(bytes, o.resolution, decode) : await decodeRgb(bytes, decode);
    // --num_validation_images 0 is accepted by the script: only the conditioning image is logged
    const out = (o.numImages ?? 4) > 0
      ? await pipe.call({
        image: controlRgb, prompt, numInferenceSteps: o.steps ?? 20, height: o.resolution, width: o.resolution, numImagesPerPrompt: o.numImages ?? 4, generator, signal: o.signal,
        guidanceScale: o.guidanceScale, controlnetConditioningScale: o.conditioningScale, controlMode: o.controlMode,
      })
      : { images: [] as Uint8Array[], rgb: [] as RawImage[] };
    const files = out.images.map((png, k) => {
      const f = path.join(dir, o.fileName?.(i, k) ?? `step-${o.step}${o.final ? "-final" : ""}-pair-${i}-sample-${k}.png`);
      writeFileAtomic(f, png);
      return f;
    });
    const target = targetFromValidation(controlRgb, prompt);
    const fidelity = target && out.rgb.length ? averageFidelity(out.rgb.map((image) => ({ image, target }))) : null;
    // the pipeline floors the control image to a multiple of the VAE factor; loggers stack it with the samples
    const first = out.rgb[0];
    const shown = first ? resizeRgb(controlRgb, first.width, first.height) : controlRgb;
    pairs.push({ image, prompt, control: shown, samples: out.images, rgb: out.rgb, files, fidelity });
  }
  const scored = pairs.flatMap((p) => p.fidelity?.scores ?? []);
  const fidelity = scored.length ? summarizeFidelity(scored) : null;
  return { step: o.step, pairs, fidelity, seconds: (performance.now() - t0) / 1000 };
}
