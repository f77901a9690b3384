/** Model I/O: safetensors files, diffusers/transformers folders, the Hugging Face hub, and parameter layouts. */
export * from "./layout.js";
export * from "./safetensors.js";
export * from "./diffusers.js";
export * from "./hub.js";
export * from "./input-error.js";
export * from "./dirs.js";
