/**
 * Loading a StableDiffusionControlNetPipeline from folders (or hub ids, through lib/io's cache): a base SD pipeline
 * folder (model_index.json with unet/, vae/, text_encoder/, tokenizer/, scheduler/) plus one or more ControlNet
 * folders (what `ControlNetModel.save_pretrained` or our training writes; a `checkpoint-N/` with a `controlnet/`
 * subfolder works too). The scheduler is built from the base's scheduler config with from_config semantics.
 */
import { initEngine } from "../engine/index.js";
import fs from "node:fs";
import path from "node:path";
import { loadPipelineFolder } from "../io/diffusers.js";
import { resolveModel } from "../io/hub.js";
import { UNet2DConditionModel, ControlNetModel, AutoencoderKL, CLIPTextModel, controlnetMismatch } from "../models/index.js";
import { InputError } from "../io/input-error.js";
import { CLIPTokenizer } from "../models/clip/tokenizer.js";
import { loadScheduler, type JsonConfig, type SchedulerName } from "../schedulers/index.js";
import { StableDiffusionControlNetPipeline } from "./pipeline.js";
import type { TokenizerLike } from "./types.js";

export interface LoadPipelineOptions {
  /** Scheduler to build from the base's scheduler config. Default "unipc" (what the training validation uses). */
  scheduler?: SchedulerName | string;
  /** Scheduler options overriding the config (e.g. { timestep_spacing: "trailing" }). */
  schedulerOverrides?: JsonConfig;
  /** Weight variant of the base's models ("fp16" → diffusion_pytorch_model.fp16.safetensors). */
  variant?: string;
  /** Weight variant of the ControlNet(s): their own, as ControlNetModel.from_pretrained(…, variant=) is apart from
   *  the pipeline's (a ControlNet saved with a variant beside a base without one, or the reverse). */
  controlnetVariant?: string;
  /** A hub base's branch, tag or commit (from_pretrained's revision; a hub ControlNet is taken at its main, as
   *  train_controlnet's --revision is the base's only). */
  revision?: string;
  /** The hub cache (from_pretrained's cache_dir; default huggingface_hub's). */
  cacheDir?: string;
  /** A tokenizer; default: `loadTokenizer(<base>/tokenizer)`. */
  tokenizer?: TokenizerLike;
  /** Loads the tokenizer folder when `tokenizer` is not given. Default: our CLIPTokenizer (transformers 5 behaviour). */
  loadTokenizer?: (dir: string) => TokenizerLike | Promise<TokenizerLike>;
  /** Skip the text encoder and tokenizer (every call then passes promptEmbeds). */
  withoutTextEncoder?: boolean;
}

/** A ControlNet location: a model folder (config.json) or a folder holding `controlnet/`. */
export function controlnetFolder(dir: string): string {
  if (fs.existsSync(path.join(dir, "config.json"))) return dir;
  if (fs.existsSync(path.join(dir, "controlnet", "config.json"))) return path.join(dir, "controlnet");
  throw new Error(`${dir} is not a ControlNet folder (no config.json, no controlnet/config.json)`);
}

/** A local folder, or the hub repo's snapshot with the weights of `variant` (those the loader then reads). */
async function resolve(nameOrPath: string, hubOpts: { variant?: string; revision?: string; cacheDir?: string }): Promise<string> {
  return fs.existsSync(nameOrPath) ? nameOrPath : resolveModel(nameOrPath, hubOpts);
}

export async function loadControlNetPipeline(
  base: string,
  controlnet?: string | string[],
  opts: LoadPipelineOptions = {},
): Promise<StableDiffusionControlNetPipeline> {
  // the fast engine (wasm or tfjs-node), not tfjs's default cpu backend, when no cell/script chose one yet
  await initEngine();
  const baseDir = await resolve(base, { variant: opts.variant, revision: opts.revision, cacheDir: opts.cacheDir });
  const pipe = loadPipelineFolder(baseDir);
  const component = (name: string): string => {
    const c = pipe.components.get(name);
    const p = c?.path ?? path.join(baseDir, name);
    if (!fs.existsSync(p)) throw new Error(`${baseDir}: the pipeline has no ${name}/ folder`);
    return p;
  };
  const cnDirs = controlnet === undefined ? [component("controlnet")] : Array.isArray(controlnet) ? controlnet : [controlnet];
  if (cnDirs.length === 0) throw new Error("Give at least one ControlNet folder");
  const controlnets: ControlNetModel[] = [];
  // (the base's own controlnet/ takes the base's variant unless one is given for it, as from_pretrained per folder)
  const cnVariant = controlnet === undefined ? opts.controlnetVariant ?? opts.variant : opts.controlnetVariant;
  for (const d of cnDirs) controlnets.push(ControlNetModel.fromPretrained(controlnetFolder(await resolve(d, { variant: cnVariant, cacheDir: opts.cacheDir })), { variant: cnVariant, trainable: false }));
  const unet = UNet2DConditionModel.fromPretrained(component("unet"), { variant: opts.variant, trainable: false });
  const vae = AutoencoderKL.fromPretrained(component("vae"), { variant: opts.variant, trainable: false });
  controlnets.forEach((cn, i) => {
    const mismatch = controlnetMismatch(cn.config, unet.config, vae.scaleFactor);
    if (mismatch) {
      for (const m of [...controlnets, unet, vae]) m.dispose();
      throw new InputError(`the ControlNet ${cnDirs[i]} was made for another base than ${baseDir}: ${mismatch}. Nothing was generated`);
    }
  });
  const scheduler = loadScheduler(component("scheduler"), opts.scheduler ?? "unipc", opts.schedulerOverrides ?? {});
  let textEncoder: CLIPTextModel | undefined;
  let tokenizer: TokenizerLike | undefined;
  if (!opts.withoutTextEncoder) {
    textEncoder = CLIPTextModel.fromPretrained(component("text_encoder"), { variant: opts.variant, trainable: false });
    tokenizer = opts.tokenizer;
    tokenizer ??= await (opts.loadTokenizer ?? ((d: string) => CLIPTokenizer.fromFolder(d)))(component("tokenizer"));
  }
  return new StableDiffusionControlNetPipeline({
    unet, vae, scheduler, textEncoder, tokenizer,
    controlnet: controlnets.length === 1 ? controlnets[0]! : controlnets,
  });
}
