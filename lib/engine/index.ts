/** lib/engine: TensorFlow.js initialisation, backend choice, fast wasm kernels, memory accounting, checkpointing. */
import { installTensorInspect } from "./inspect.js";
export { tf } from "./tf.js";
export type { Tensor, Variable } from "./tf.js";
export { initEngine, engineInfo, describeEngine, parseBackend, BACKENDS, MAX_ENGINE_THREADS, WASM_HEAP_LIMIT } from "./backend.js";
export type { BackendKind, EngineInfo, EngineOptions } from "./backend.js";
export { memoryInfo, memoryBudget, hostMemoryLimit, measurePeak, trackPeak, installMemoryTracker } from "./memory.js";
export type { MemorySnapshot, PeakReport } from "./memory.js";
export { checkpoint, withWeightGradientSink } from "./checkpoint.js";
export type { WeightGradientSink } from "./checkpoint.js";
export { SMALL_GEMM_FLOPS } from "./kernels/batch-matmul.js";
export { transientWeight, backendCachesPackedWeights } from "./weight-cache.js";
export { watchWasmFailures, throwIfWasmKernelFailed } from "./wasm-failures.js";
export { engineErrorLine } from "./errors.js";
export { fusedAdamW, fusedAttention, fusedBiasAdd, fusedGeglu, fusedLinear, fusedGroupNorm, fusedLayerNorm, fusedNorms, fusedSilu, hasFusedAdamW, hasFusedAttention, useFusedKernels } from "./fused.js";
export type { AdamWScalars } from "./fused.js";

// tensors print with their values wherever Node prints them (console.log, notebook results, inside arrays)
installTensorInspect();
