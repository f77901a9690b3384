/**
 * Identity for tfjs-backend-wasm that shares the input's buffer (reference-counted, as the backend's own Reshape
 * does) instead of copying it. tfjs' engine clones every tensor a kernel saves for backprop through Identity, so
 * the stock kernel — a full copy — doubled the bytes and the time of everything the tape keeps. Tensors are
 * immutable on this backend (no kernel writes into an input), so sharing is what the cpu backend does too.
 */
import type { DataId, KernelFunc, NamedTensorInfoMap, TensorInfo } from "@tensorflow/tfjs";

interface WasmBackendLike {
  incRef(dataId: DataId): void;
}

function identity(args: { inputs: NamedTensorInfoMap; backend: unknown }, original: KernelFunc): TensorInfo {
  const x = args.inputs.x as TensorInfo;
  // strings live outside the heap; the stock kernel handles them
  if (x.dtype === "string") return original(args as Parameters<KernelFunc>[0]) as TensorInfo;
  (args.backend as WasmBackendLike).incRef(x.dataId);
  return { dataId: x.dataId, shape: x.shape, dtype: x.dtype };
}

export function makeIdentity(original: KernelFunc): KernelFunc {
  return ((args: { inputs: NamedTensorInfoMap; backend: unknown }) => identity(args, original)) as unknown as KernelFunc;
}
