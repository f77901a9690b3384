/**
 * from_pretrained / save_pretrained for our models, through lib/io/diffusers.ts. A model is built shape-only from
 * config.json, then each variable is allocated straight from the file (no random init, no second copy).
 */
import { loadModelFolder, saveModelFolder, DIFFUSERS_WEIGHTS_NAME } from "../io/diffusers.js";
import type { Module } from "./module.js";

export interface ModelBuildOptions {
  /** Declare parameters without allocating them (names/shapes only); load or initialize before forward. */
  shapeOnly?: boolean;
  /** Seed of the PyTorch-style random init (ignored when shapeOnly). Default 1. */
  seed?: number;
  /** Whether the parameters take gradients (tf.Variable.trainable). Default true. */
  trainable?: boolean;
}

export interface FromPretrainedOptions {
  variant?: string;
  /** Default true: missing or unexpected tensors are an error. */
  strict?: boolean;
  trainable?: boolean;
}

/** Loads config + weights and builds the model with `build(config)` (called with shapeOnly). */
export function loadPretrained<M extends Module>(
  dir: string,
  build: (config: Record<string, unknown>, opts: ModelBuildOptions) => M,
  opts: FromPretrainedOptions = {},
): M {
  const { config, tensors } = loadModelFolder(dir, { variant: opts.variant });
  const model = build(config, { shapeOnly: true, trainable: opts.trainable });
  model.loadState(tensors, { strict: opts.strict ?? true });
  if (opts.trainable !== undefined) model.trainable = opts.trainable;
  return model;
}

/** Writes config.json (with _class_name) and the weights in PyTorch layout. */
export function savePretrained(
  dir: string,
  model: Module,
  className: string,
  config: Record<string, unknown>,
  weightsName: string = DIFFUSERS_WEIGHTS_NAME,
): void {
  saveModelFolder(dir, { className, config, tensors: model.stateDict(), weightsName });
}
