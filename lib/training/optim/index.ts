/** The optimizers of the training loop, chosen from train_controlnet's flags. */
import { AdamW } from "./adamw.js";
import { AdamW8bit } from "./adamw8bit.js";
import { OffloadedAdamW } from "./offload.js";
import type { AdamWHyper, NamedVariables, Optimizer } from "./types.js";

export { AdamW, clipGradNorm } from "./adamw.js";
export { GradientAccumulator } from "./accumulate.js";
export { AdamW8bit } from "./adamw8bit.js";
export type { AdamW8bitOptions } from "./adamw8bit.js";
export { OffloadedAdamW } from "./offload.js";
export { createDynamicMap, quantizeBlockwise, dequantizeBlockwise } from "./quantize.js";
export { ADAMW_DEFAULTS } from "./types.js";
export type { AdamWHyper, NamedVariables, Optimizer, StateBytes, StateTensor, StepOptions } from "./types.js";

export interface CreateOptimizerOptions extends Partial<Omit<AdamWHyper, "lr">> {
  lr: number;
  /** --use_8bit_adam */
  use8bit?: boolean;
  /** Keep optimizer state (and the fp32 master parameters) in host memory: the ZeRO-2 offload analogue. */
  offload?: boolean;
  /** 8-bit block size (default 256). */
  blockSize?: number;
}

/** 8-bit states always live on the host, so `use8bit` with `offload` is simply AdamW8bit. */
export function createOptimizer(params: NamedVariables, opts: CreateOptimizerOptions): Optimizer {
  const { use8bit, offload, blockSize, ...hyper } = opts;
  if (use8bit) return new AdamW8bit(params, { ...hyper, blockSize });
  if (offload) return new OffloadedAdamW(params, hyper);
  return new AdamW(params, hyper);
}
