/** wasm32 addresses at most 4 GiB; tfjs-backend-wasm's heap can grow to exactly this and never shrinks. */
export const WASM_HEAP_LIMIT = 4 * 1024 ** 3;
