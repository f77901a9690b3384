export { writeBasicConfig, type BasicConfig, type WriteBasicConfigOptions } from "./config.js";
export { dataset, baseModel, controlnet, train, validate, infer, save, pushToHub, resetTraining } from "./helpers.js";
export type { DatasetCellOptions, TrainCellOptions } from "./helpers.js";
export { memo, forget } from "./memo.js";
export { display, updateDisplay, clearOutput, abortSignal, newDisplayId } from "./display.js";
