/**
 * Identity that shares the input's buffer (reference-counted, as wasm's own Reshape does) instead of copying it;
 * registered for tfjs-backend-wasm and for the native engine (engine/native/kernels.ts). tfjs' engine clones every
 * tensor a kernel saves for backprop through Identity, so wasm's stock kernel — a full copy — doubled the bytes and the time of everything the tape keeps (on native: one TF
 * op and a separately counted tensor each). Tensors are immutable on both backends (no kernel writes into an input),
 * so sharing is what the cpu backend does too.
 */
import type { DataId, KernelFunc, NamedTensorInfoMap, TensorInfo } from "@tensorflow/tfjs";

interface RefCountingBackend {
  incRef(dataId: DataId): void;
}

function identity(args: { inputs: NamedTensorInfoMap; backend: unknown }, original: KernelFunc): TensorInfo {
  const x = args.inputs.x as TensorInfo;
  // strings live outside the heap; the stock kernel handles them
  if (x.dtype === "string") return original(args as Parameters<KernelFunc>[0]) as TensorInfo;
  (args.backend as RefCountingBackend).incRef(x.dataId);
  return { dataId: x.dataId, shape: x.shape, dtype: x.dtype };
}

export function makeIdentity(original: KernelFunc): KernelFunc {
  return ((args: { inputs: NamedTensorInfoMap; backend: unknown }) => identity(args, original)) as unknown as KernelFunc;
}
