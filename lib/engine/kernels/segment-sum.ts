/**
 * UnsortedSegmentSum for tfjs-backend-wasm (missing there). It is the gradient of `tf.gather`, i.e. of embedding
 * lookups, so a trainable token or position embedding needs it. A plain loop over heap views is enough: it is
 * memory-bound and runs once per step.
 */
import type { KernelFunc, NamedAttrMap, NamedTensorInfoMap, TensorInfo } from "@tensorflow/tfjs";

interface WasmBackendLike {
  makeOutput(shape: number[], dtype: string): TensorInfo;
  typedArrayFromHeap(t: TensorInfo): Float32Array | Int32Array | Uint8Array;
}

export function unsortedSegmentSum(args: { inputs: NamedTensorInfoMap; attrs?: NamedAttrMap; backend: unknown }): TensorInfo {
  const x = args.inputs.x as TensorInfo;
  const ids = args.inputs.segmentIds as TensorInfo;
  const backend = args.backend as WasmBackendLike;
  const { numSegments } = args.attrs as unknown as { numSegments: number };
  const inner = x.shape.slice(ids.shape.length).reduce((p, s) => p * s, 1);
  const out = backend.makeOutput([numSegments, ...x.shape.slice(ids.shape.length)], x.dtype);
  const xv = backend.typedArrayFromHeap(x);
  const iv = backend.typedArrayFromHeap(ids);
  const ov = backend.typedArrayFromHeap(out);
  ov.fill(0);
  for (let i = 0; i < iv.length; i++) {
    const seg = iv[i]!;
    if (seg < 0 || seg >= numSegments) continue; // TensorFlow drops out-of-range ids.
    const o = seg * inner;
    const s = i * inner;
    for (let j = 0; j < inner; j++) ov[o + j] += xv[s + j]!;
  }
  return out;
}

export const unsortedSegmentSumKernel = unsortedSegmentSum as unknown as KernelFunc;
