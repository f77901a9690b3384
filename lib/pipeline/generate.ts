/**
 * The seed README's inference snippet as one call: base model + trained ControlNet + control image + prompt →
 * PNG(s), with UniPC and 20 steps by default, like
 *
 *   pipe = StableDiffusionControlNetPipeline.from_pretrained(base, controlnet=ControlNetModel.from_pretrained(cn))
 *   pipe.scheduler = UniPCMultistepScheduler.from_config(pipe.scheduler.config)
 *   image = pipe(prompt, num_inference_steps=20, generator=torch.manual_seed(0), image=control_image).images[0]
 *
 * The seed selects our own generator (not torch's), so images are reproducible here but differ from diffusers'.
 */
import fs from "node:fs";
import path from "node:path";
import { schedulerFromConfig, type SchedulerName } from "../schedulers/index.js";
import { loadControlNetPipeline, type LoadPipelineOptions } from "./load.js";
import type { StableDiffusionControlNetPipeline, StepInfo } from "./pipeline.js";
import type { ControlImageInput } from "./types.js";
import type { ControlMode } from "./guidance.js";
import { makeDirs } from "../io/dirs.js";
import { writeFileAtomic } from "../io/diffusers.js";

export interface GenerateOptions {
  /** Base SD pipeline folder or hub id. */
  base: string;
  /** ControlNet folder(s); default: the base pipeline's own controlnet/. */
  controlnet?: string | string[];
  /** Control image(s): path, encoded bytes, raw RGB, or [0,1] tensor; one per ControlNet. */
  image: ControlImageInput | ControlImageInput[];
  prompt: string | string[];
  negativePrompt?: string | string[];
  /** Default 20. */
  steps?: number;
  /** Default "unipc". */
  scheduler?: SchedulerName;
  /** Default 7.5. */
  guidanceScale?: number;
  /** Default 0 (like `torch.manual_seed(0)` in the README; our generator, not torch's). */
  seed?: number;
  numImagesPerPrompt?: number;
  height?: number;
  width?: number;
  controlnetConditioningScale?: number | number[];
  guessMode?: boolean;
  /** "balanced" (default) or "controlnet" (ControlNet on the conditional half only; see ControlMode). */
  controlMode?: ControlMode;
  controlGuidanceStart?: number | number[];
  controlGuidanceEnd?: number | number[];
  eta?: number;
  clipSkip?: number;
  /** Write the PNG(s) here: one image → this file; several → name-0.png, name-1.png, … */
  output?: string;
  variant?: string;
  controlnetVariant?: string;
  revision?: string;
  cacheDir?: string;
  tokenizer?: LoadPipelineOptions["tokenizer"];
  loadTokenizer?: LoadPipelineOptions["loadTokenizer"];
  /** Reuse an already loaded pipeline (base/controlnet/variant are then ignored; its scheduler is swapped if `scheduler` differs). */
  pipeline?: StableDiffusionControlNetPipeline;
  onStep?: (info: StepInfo) => void;
  signal?: AbortSignal;
}

export interface GenerateResult {
  /** PNG bytes, one per image. */
  images: Uint8Array[];
  /** Files written (when `output` was given). */
  files: string[];
  width: number;
  height: number;
  seed: number;
  timesteps: number[];
  /** Seconds for loading the models (0 when a pipeline was passed). */
  loadSeconds: number;
  /** Seconds for the denoising loop and decoding. */
  seconds: number;
  pipeline: StableDiffusionControlNetPipeline;
}

/** Output file names: `out.png` for one image, `out-0.png`, `out-1.png`, … for several. */
export function outputFiles(output: string, count: number): string[] {
  if (count === 1) return [output];
  const ext = path.extname(output) || ".png";
  const stem = output.slice(0, output.length - path.extname(output).length);
  return Array.from({ length: count }, (_, i) => `${stem}-${i}${ext}`);
}

/**
 * Refuses, before any work, output paths the images could not be written to (a folder, a folder that cannot be
 * made or written, a file where a folder must be) or that would be silently wrong (not .png: the bytes are PNG).
 */
export function checkOutputFiles(names: string[]): void {
  for (const f of names) {
    if (fs.existsSync(f) && fs.statSync(f).isDirectory()) throw new Error(`--output ${f} is a folder; give a file name (e.g. ${path.join(f, "image.png")})`);
    if (path.extname(f).toLowerCase() !== ".png") throw new Error(`--output ${f}: the images are PNG; give a .png name`);
    let dir = path.dirname(path.resolve(f));
    while (!fs.existsSync(dir)) dir = path.dirname(dir); // the nearest folder that exists must let us make the rest
    if (!fs.statSync(dir).isDirectory()) throw new Error(`--output ${f}: ${dir} is a file, not a folder`);
    try {
      fs.accessSync(dir, fs.constants.W_OK);
    } catch {
      throw new Error(`--output ${f}: ${dir} is not writable`);
    }
  }
}

export async function generate(o: GenerateOptions): Promise<GenerateResult> {
  const t0 = performance.now();
  const prompts = Array.isArray(o.prompt) ? o.prompt.length : 1;
  if (o.output) checkOutputFiles(outputFiles(o.output, prompts * (o.numImagesPerPrompt ?? 1)));
  const schedulerName = o.scheduler ?? "unipc";
  let pipe = o.pipeline;
  if (!pipe) {
    pipe = await loadControlNetPipeline(o.base, o.controlnet, {
      scheduler: schedulerName, variant: o.variant, controlnetVariant: o.controlnetVariant, revision: o.revision, cacheDir: o.cacheDir,
      tokenizer: o.tokenizer, loadTokenizer: o.loadTokenizer,
    });
  } else if (o.scheduler !== undefined) {
    pipe.scheduler = schedulerFromConfig(schedulerName, pipe.scheduler.toJSON());
  }
  const loadSeconds = o.pipeline ? 0 : (performance.now() - t0) / 1000;
  const seed = o.seed ?? 0;
  const out = await pipe.call({
    prompt: o.prompt,
    negativePrompt: o.negativePrompt,
    image: o.image,
    numInferenceSteps: o.steps ?? 20,
    guidanceScale: o.guidanceScale ?? 7.5,
    seed,
    numImagesPerPrompt: o.numImagesPerPrompt,
    height: o.height,
    width: o.width,
    controlnetConditioningScale: o.controlnetConditioningScale,
    guessMode: o.guessMode,
    controlMode: o.controlMode,
    controlGuidanceStart: o.controlGuidanceStart,
    controlGuidanceEnd: o.controlGuidanceEnd,
    eta: o.eta,
    clipSkip: o.clipSkip,
    onStep: o.onStep,
    signal: o.signal,
  });
  const files: string[] = [];
  if (o.output) {
    const names = outputFiles(o.output, out.images.length);
    names.forEach((f, i) => {
      makeDirs(path.dirname(path.resolve(f)));
      writeFileAtomic(f, out.images[i]!); // an image already there stays whole if this one cannot be written
      files.push(f);
    });
  }
  return {
    images: out.images, files, width: out.width, height: out.height, seed, timesteps: out.timesteps,
    loadSeconds, seconds: out.seconds, pipeline: pipe,
  };
}
