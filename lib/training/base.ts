/**
 * A frozen Stable Diffusion base (UNet, VAE, CLIP text encoder + tokenizer, scheduler config) loaded from a diffusers
 * pipeline folder or a hub id — what `--pretrained_model_name_or_path` names.
 */
import fs from "node:fs";
import path from "node:path";
import { loadPipelineFolder } from "../io/diffusers.js";
import { resolveModel, type HubOptions } from "../io/hub.js";
import { UNet2DConditionModel, AutoencoderKL, CLIPTextModel, ControlNetModel, controlnetMismatch } from "../models/index.js";
import { InputError } from "../io/input-error.js";
import { CLIPTokenizer } from "../models/clip/tokenizer.js";
import { loadScheduler } from "../schedulers/index.js";
import type { NoiseSchedule } from "./step.js";

export interface BaseModel {
  /** The base as the user named it (pretrained_model_name_or_path: a hub id or a folder), for model cards. */
  name: string;
  dir: string;
  unet: UNet2DConditionModel;
  vae: AutoencoderKL;
  textEncoder: CLIPTextModel;
  tokenizer: CLIPTokenizer;
  /** The pipeline's scheduler/ folder (training builds a DDPMScheduler from it, validation a UniPC). */
  schedulerDir: string;
  /** DDPMScheduler from the base's scheduler config (train_controlnet.py's noise_scheduler). */
  noiseScheduler: NoiseSchedule;
}

export interface LoadBaseOptions extends HubOptions {
  variant?: string;
  /** --tokenizer_name: a tokenizer folder or hub id to use instead of <base>/tokenizer. */
  tokenizerName?: string | null;
}

export async function loadBaseModel(nameOrPath: string, opts: LoadBaseOptions = {}): Promise<BaseModel> {
  const dir = fs.existsSync(nameOrPath) ? path.resolve(nameOrPath) : await resolveModel(nameOrPath, opts);
  const pipe = loadPipelineFolder(dir);
  const component = (name: string): string => {
    const p = pipe.components.get(name)?.path ?? path.join(dir, name);
    if (!fs.existsSync(p)) throw new Error(`${dir}: the base model has no ${name}/ folder (a Stable Diffusion pipeline folder is expected)`);
    return p;
  };
  const frozen = { variant: opts.variant, trainable: false };
  const schedulerDir = component("scheduler");
  // --tokenizer_name: a folder or a hub id; only its tokenizer files are fetched, at its main revision (--revision
  // names a revision of the base model, which another repo need not have)
  const tokenizerDir = opts.tokenizerName
    ? fs.existsSync(opts.tokenizerName) ? opts.tokenizerName : await resolveModel(opts.tokenizerName, { ...opts, revision: undefined, allowPatterns: ["*.json", "*.txt", "*.model"] })
    : component("tokenizer");
  return {
    name: nameOrPath,
    dir,
    unet: UNet2DConditionModel.fromPretrained(component("unet"), frozen),
    vae: AutoencoderKL.fromPretrained(component("vae"), frozen),
    textEncoder: CLIPTextModel.fromPretrained(component("text_encoder"), frozen),
    tokenizer: CLIPTokenizer.fromFolder(tokenizerDir),
    schedulerDir,
    noiseScheduler: loadScheduler(schedulerDir, "ddpm") as unknown as NoiseSchedule,
  };
}

/** --controlnet_model_name_or_path, or a new ControlNet initialised from the base UNet (ControlNetModel.from_unet). */
export async function loadOrCreateControlNet(base: BaseModel, pretrained?: string | null,
  opts: HubOptions & { seed?: number; conditioningEmbeddingOutChannels?: number[] } = {}): Promise<ControlNetModel> {
  if (pretrained) {
    const dir = fs.existsSync(pretrained) ? pretrained : await resolveModel(pretrained, opts);
    const folder = fs.existsSync(path.join(dir, "config.json")) ? dir : path.join(dir, "controlnet");
    const cn = ControlNetModel.fromPretrained(folder, { trainable: true });
    const mismatch = controlnetMismatch(cn.config, base.unet.config, 2 ** (base.vae.config.block_out_channels.length - 1));
    if (mismatch) {
      cn.dispose();
      throw new InputError(`the ControlNet ${folder} was made for another base than ${base.dir}: ${mismatch}. Nothing was trained`);
    }
    return cn;
  }
  // The conditioning embedding must downsample the control image exactly as the VAE downsamples pixels to latents.
  // diffusers' default (16, 32, 96, 256) is right for SD's factor 8; smaller bases get its first log2(f)+1 entries.
  const factor = 2 ** (base.vae.config.block_out_channels.length - 1);
  const stages = Math.log2(factor) + 1;
  const defaults = [16, 32, 96, 256];
  if (!Number.isInteger(stages) || stages > defaults.length) throw new Error(`unsupported VAE scale factor ${factor}`);
  const channels = opts.conditioningEmbeddingOutChannels ?? defaults.slice(0, stages);
  if (channels.length !== stages) throw new Error(`conditioningEmbeddingOutChannels needs ${stages} entries for a ×${factor} VAE (got [${channels.join(", ")}])`);
  return ControlNetModel.fromUnet(base.unet, { seed: opts.seed ?? 1, conditioningEmbeddingOutChannels: channels });
}
