/** lib/planner: memory estimates and plans for ControlNet training (see estimate.ts for the model). */
export { estimateMemory, countParameters, engineProfile, DEFAULT_OPTIONS, NATIVE_KEPT_SHARE, FUSED_BLOCK_SHARE } from "./estimate.js";
export type { EstimateConfig, MemoryEstimate, MemoryParts, EngineProfile } from "./estimate.js";
export { planMemory, plannedDeviceBytes } from "./plan.js";
export type { MemoryPlan, PlanTier } from "./plan.js";
export { measureTrainingStep, createTrainingStep } from "./measure.js";
export type { MeasureStepConfig, MeasuredStep, TrainingStepRunner } from "./measure.js";
export { SD15_UNET, SD15_VAE, SD15_TEXT_ENCODER, SEED_TIERS } from "./sd15.js";
export type { SeedTier } from "./sd15.js";
export type { PlannerOptions } from "./types.js";
export { trainingStepFlops } from "./flops.js";
export type { StepFlops } from "./flops.js";
export { streamFrozenWeights } from "./offload.js";
export type { FrozenWeightStream, StreamedBlock } from "./offload.js";
