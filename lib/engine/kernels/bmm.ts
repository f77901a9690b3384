/**
 * The SIMD batched matmul of bmm.wat, instantiated on tfjs-backend-wasm's own memory so it reads and writes tensors
 * in place (no copies). One instance per backend memory; null where the backend exposes none (then the caller keeps
 * the stock kernel).
 */
import type { TensorInfo } from "@tensorflow/tfjs";
import { BMM_WASM_BASE64, BMM_WASM_SHARED_BASE64 } from "./bmm-wasm.js";

interface WasmBackendLike {
  // the emscripten module: the threaded build keeps its (shared) memory in wasmMemory, the plain build only in the
  // instance's exports (asm.memory)
  wasm?: { wasmMemory?: unknown; asm?: { memory?: unknown } };
  makeOutput(shape: number[], dtype: string): TensorInfo;
  typedArrayFromHeap(t: TensorInfo): Float32Array;
}

// the WebAssembly global, typed as far as used here (this project's TypeScript lib has no DOM/WebAssembly types)
export interface WasmMemory { readonly buffer: ArrayBuffer | SharedArrayBuffer }
declare const WebAssembly: {
  Memory: abstract new (...args: never[]) => WasmMemory;
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object, imports: object) => { exports: Record<string, unknown> };
};

export type BmmExport = (a: number, b: number, c: number, batch: number, m: number, k: number, n: number, strideA: number, strideB: number, transA?: number) => void;

let cached: { memory: WasmMemory; bmm: BmmExport } | null = null;

function decode(base64: string): Uint8Array {
  return Uint8Array.from(atob(base64), (ch) => ch.charCodeAt(0));
}

/** bmm.wat instantiated on `memory`: bmm(a, b, c, batch, m, k, n, strideA, strideB, transA) with byte addresses. */
export function bmmOnMemory(memory: WasmMemory): BmmExport {
  // the threaded backend's heap is shared memory, and an import must say so
  const shared = typeof SharedArrayBuffer !== "undefined" && memory.buffer instanceof SharedArrayBuffer;
  const module = new WebAssembly.Module(decode(shared ? BMM_WASM_SHARED_BASE64 : BMM_WASM_BASE64));
  return new WebAssembly.Instance(module, { env: { memory } }).exports.bmm as BmmExport;
}

function instance(backend: WasmBackendLike): BmmExport | null {
  const memory = backend.wasm?.wasmMemory ?? backend.wasm?.asm?.memory;
  if (!(memory instanceof WebAssembly.Memory)) return null;
  if (cached && cached.memory === memory) return cached.bmm;
  cached = { memory, bmm: bmmOnMemory(memory) };
  return cached.bmm;
}

let enabled = true;

/** Turns the SIMD path off (the stock kernel's scalar loop then takes the small products) — for side-by-side
 *  benchmarks (bench/engine.ts); returns the previous setting. */
export function setSimdBatchMatMul(on: boolean): boolean {
  const was = enabled;
  enabled = on;
  return was;
}

/** Whether simdBatchMatMul is on and can run on this backend. */
export function hasSimdBatchMatMul(backend: unknown): boolean {
  return enabled && instance(backend as WasmBackendLike) !== null;
}

/**
 * C[i] = A[i] · B[i] for float32 a [batch|1, m, k] (or, with transposeA, a [batch|1, k, m] holding Aᵀ) and
 * b [batch|1, k, n] (a batch of 1 broadcasts): a new [batch, m, n] tensor info on the backend.
 */
export function simdBatchMatMul(backend: unknown, a: TensorInfo, b: TensorInfo, batch: number, transposeA = false): TensorInfo {
  const be = backend as WasmBackendLike;
  const bmm = instance(be);
  if (!bmm) throw new Error("simdBatchMatMul: this backend exposes no wasm memory");
  const [na, r, c] = a.shape as [number, number, number];
  const [m, k] = transposeA ? [c, r] : [r, c];
  const [nb, , n] = b.shape as [number, number, number];
  const out = be.makeOutput([batch, m, n], "float32");
  // addresses are taken after makeOutput: growing the heap moves no tensor, but detaches old views
  const ptr = (t: TensorInfo) => be.typedArrayFromHeap(t).byteOffset;
  bmm(ptr(a), ptr(b), ptr(out), batch, m, k, n, na === 1 ? 0 : m * k, nb === 1 ? 0 : k * n, transposeA ? 1 : 0);
  return out;
}
