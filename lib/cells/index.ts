export { writeBasicConfig, type BasicConfig, type WriteBasicConfigOptions } from "./config.js";
export { dataset, baseModel, controlnet, train, validate, infer, heldOut, save, trainedSteps, pushToHub, resetTraining } from "./helpers.js";
export type { DatasetCellOptions, TrainCellOptions, TrainCellResult, SamplingOptions } from "./helpers.js";
export { memo, forget } from "./memo.js";
export { display, updateDisplay, clearOutput, abortSignal, newDisplayId } from "./display.js";
// Types of the helpers' results, exported at the top level so notebook cells (which tslab compiles with declaration
// emit) can name them.
export type { BaseModel } from "../training/base.js";
export type { ControlNetModel, UNet2DConditionModel, AutoencoderKL, CLIPTextModel } from "../models/index.js";
export type { ControlNetDataset } from "../data/index.js";
export type { TrainResult } from "../training/trainer.js";
export type { ValidationResult } from "../training/validation.js";
export { estimateMemory, type PlannerCellResult } from "./planner.js";
