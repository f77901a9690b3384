/** The planner's option names (camelCase forms of train_controlnet.py's memory flags). */
export interface PlannerOptions {
  /** --gradient_checkpointing: per-block recomputation (resnets and transformers). */
  gradientCheckpointing: boolean;
  /** --use_8bit_adam: blockwise-quantised moments (2 bytes/param + block scales). */
  use8bitAdam: boolean;
  /** Chunked attention (the xformers memory-efficient attention analogue): query chunk size, 0 = full scores. */
  attentionChunkSize: number;
  /** --set_grads_to_none: gradients freed as the optimizer consumes them. */
  setGradsToNone: boolean;
  /** ZeRO-2-like: optimizer state (and fp32 master copies) in host memory, update on the host. */
  offloadOptimizerState: boolean;
  /** Frozen weights (UNet, VAE, text encoder) in host memory, streamed in block by block. */
  offloadFrozenWeights: boolean;
  /** wasm: let XNNPACK keep its packed copies of resident conv/linear weights (Module.setKeepPackedWeights; default
   *  true). They are not tensors, so they are reported apart from the device total (MemoryEstimate.wasmPackedWeights). */
  keepPackedWeights: boolean;
  /** "no" = fp32 everywhere (our engine); "fp16" models torch's autocast (only for the seed-table reproduction). */
  mixedPrecision: "no" | "fp16";
}
