/**
 * controlnet-ts — `import * as cn from "controlnet-ts"`.
 * Top level: the notebook's cell helpers (the seed README as cells). Namespaces: the library beneath them, in
 * dependency order engine → io → models / schedulers → data / pipeline / training → cells.
 */
export * from "./cells/index.js";
export { tf, initEngine, describeEngine, memoryInfo, measurePeak } from "./engine/index.js";
export * as engine from "./engine/index.js";
export * as io from "./io/index.js";
export * as models from "./models/index.js";
export * as schedulers from "./schedulers/index.js";
export * as data from "./data/index.js";
export * as pipeline from "./pipeline/index.js";
export * as training from "./training/index.js";
export * as planner from "./planner/index.js";
