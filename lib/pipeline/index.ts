/** lib/pipeline: the StableDiffusionControlNetPipeline equivalent, its one-call API and CLI entry. */
export { StableDiffusionControlNetPipeline } from "./pipeline.js";
export type { PipelineComponents, PipelineCallOptions, PipelineOutput, StepInfo } from "./pipeline.js";
export type { UNetLike, ControlNetLike, VaeLike, TextEncoderLike, TokenizerLike, TokenizeFn, ControlImageInput } from "./types.js";
export { perNet, controlGuidanceWindows, parseControlMode, CONTROL_MODES, type ControlMode, controlnetKeep, doClassifierFreeGuidance, applyGuidance, repeatInterleave } from "./guidance.js";
export { prepareControlImage, resizeRgb, denormalize, toRgbImages, toPng, type PreparedImage } from "./image.js";
export { loadControlNetPipeline, controlnetFolder, type LoadPipelineOptions } from "./load.js";
export { generate, outputFiles, type GenerateOptions, type GenerateResult } from "./generate.js";
export { inferMain, parseInferArgs, inferOptions, inferUsage, type InferArgs } from "./cli.js";
