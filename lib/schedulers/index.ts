/**
 * lib/schedulers: diffusers' DDPM, DDIM, UniPC-multistep and Euler-discrete schedulers on tfjs tensors, created
 * from any `scheduler_config.json` with `from_config` semantics, plus the training-side noise helpers.
 */
import { extractInitConfig, readSchedulerConfig, type JsonConfig } from "./config.js";
import { DDPMScheduler, DDPM_DEFAULTS } from "./ddpm.js";
import { DDIMScheduler, DDIM_DEFAULTS } from "./ddim.js";
import { UniPCMultistepScheduler, UNIPC_DEFAULTS } from "./unipc.js";
import { EulerDiscreteScheduler, EULER_DEFAULTS } from "./euler.js";
import type { Scheduler } from "./scheduler.js";

export { DDPMScheduler, DDPM_DEFAULTS, type DDPMSchedulerConfig } from "./ddpm.js";
export { DDIMScheduler, DDIM_DEFAULTS, type DDIMSchedulerConfig } from "./ddim.js";
export { UniPCMultistepScheduler, UNIPC_DEFAULTS, type UniPCMultistepSchedulerConfig } from "./unipc.js";
export { EulerDiscreteScheduler, EULER_DEFAULTS, type EulerDiscreteSchedulerConfig } from "./euler.js";
export type { Scheduler, SchedulerOutput, StepOptions, CommonSchedulerConfig, PredictionType, TimestepSpacing } from "./scheduler.js";
export { Generator, randnLike } from "./random.js";
export { addNoise, getVelocity, computeSnr, minSnrWeights, timestepsToArray, type TimestepsLike } from "./training.js";
export { extractInitConfig, readSchedulerConfig, type JsonConfig, type ExtractedConfig } from "./config.js";
export { makeBetas, cumprodAlphas, betasForAlphaBar, rescaleZeroTerminalSnr, type BetaSchedule } from "./betas.js";

/** Short names used by the CLI and the one-call API. */
export type SchedulerName = "ddpm" | "ddim" | "unipc" | "euler";
export const SCHEDULER_NAMES: readonly SchedulerName[] = ["unipc", "ddim", "ddpm", "euler"];

const REGISTRY = {
  ddpm: { cls: DDPMScheduler, defaults: DDPM_DEFAULTS },
  ddim: { cls: DDIMScheduler, defaults: DDIM_DEFAULTS },
  unipc: { cls: UniPCMultistepScheduler, defaults: UNIPC_DEFAULTS },
  euler: { cls: EulerDiscreteScheduler, defaults: EULER_DEFAULTS },
} as const;

const BY_CLASS_NAME: Record<string, SchedulerName> = {
  DDPMScheduler: "ddpm",
  DDIMScheduler: "ddim",
  UniPCMultistepScheduler: "unipc",
  EulerDiscreteScheduler: "euler",
};

/** Accepts a short name ("unipc") or a diffusers class name ("UniPCMultistepScheduler"). */
export function parseSchedulerName(name: string): SchedulerName {
  const lower = name.trim().toLowerCase();
  if ((SCHEDULER_NAMES as readonly string[]).includes(lower)) return lower as SchedulerName;
  const byClass = BY_CLASS_NAME[name.trim()];
  if (byClass) return byClass;
  throw new Error(`Unknown scheduler '${name}': expected one of ${SCHEDULER_NAMES.join(", ")} (or ${Object.keys(BY_CLASS_NAME).join(", ")})`);
}

/**
 * `<Class>.from_config(config, **overrides)`: builds scheduler `name` from any scheduler config (another class's
 * included — an SD1.5 PNDMScheduler config gives UniPC with SD's betas and UniPC's own defaults elsewhere).
 */
export function schedulerFromConfig(name: SchedulerName | string, config: JsonConfig = {}, overrides: JsonConfig = {}): Scheduler {
  const key = parseSchedulerName(name);
  const { cls, defaults } = REGISTRY[key];
  const { config: merged } = extractInitConfig(cls.className, defaults as object, config, overrides as object);
  return new (cls as new (c: object) => Scheduler)(merged);
}

/**
 * Loads the scheduler a pipeline/scheduler folder describes. With `name`, that class is built from the folder's
 * config (diffusers' `X.from_pretrained(dir, subfolder="scheduler")`); without, the folder's `_class_name` must be
 * one we implement.
 */
export function loadScheduler(location: string, name?: SchedulerName | string, overrides: JsonConfig = {}): Scheduler {
  const config = readSchedulerConfig(location);
  if (name !== undefined) return schedulerFromConfig(name, config, overrides);
  const cls = String(config._class_name ?? "");
  if (!BY_CLASS_NAME[cls]) {
    throw new Error(`${location}: scheduler class '${cls}' is not implemented; pass a scheduler name (${SCHEDULER_NAMES.join(", ")}) to convert it`);
  }
  return schedulerFromConfig(cls, config, overrides);
}
