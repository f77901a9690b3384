/** wasm32 addresses at most 4 GiB; tfjs-backend-wasm's heap can grow to exactly this and never shrinks. */
export const WASM_HEAP_LIMIT = 4 * 1024 ** 3;

/** The most intra-op threads an engine is given (CONTROLNET_TS_THREADS, launch's --num_cpu_threads_per_process). */
export const MAX_ENGINE_THREADS = 64;
