/**
 * Slice for tfjs-backend-wasm. The built-in kernel reads the *whole* input out of the heap before slicing (26 ms to
 * take 1/8 of a [8,1024,1024] tensor). We copy only the contiguous runs of the slice, straight between heap views.
 */
import { tf } from "../tf.js";
import type { KernelFunc, NamedAttrMap, NamedTensorInfoMap, TensorInfo } from "@tensorflow/tfjs";

type Typed = Float32Array | Int32Array | Uint8Array;
interface WasmBackendLike {
  makeOutput(shape: number[], dtype: string): TensorInfo;
  typedArrayFromHeap(t: TensorInfo): Typed;
}

export function slice(args: { inputs: NamedTensorInfoMap; attrs?: NamedAttrMap; backend: unknown }): TensorInfo {
  const x = args.inputs.x as TensorInfo;
  const backend = args.backend as WasmBackendLike;
  const attrs = args.attrs as unknown as { begin: number | number[]; size: number | number[] };
  const [begin, size] = tf.slice_util.parseSliceParams(x as tf.Tensor, attrs.begin, attrs.size);
  tf.slice_util.assertParamsValid(x as tf.Tensor, begin, size);
  // Views must be taken after makeOutput: allocating can grow (and so detach) the heap.
  const out = backend.makeOutput(size, x.dtype);
  const total = size.reduce((p, s) => p * s, 1);
  if (total === 0) return out;
  const src = backend.typedArrayFromHeap(x);
  const dst = backend.typedArrayFromHeap(out);
  copySlice(src, x.shape, begin, size, dst);
  return out;
}

/** Copies the block `begin`/`size` of a C-order array of `shape` into `dst`, in maximal contiguous runs. */
export function copySlice(src: Typed, shape: number[], begin: number[], size: number[], dst: Typed): void {
  const rank = shape.length;
  if (rank === 0) {
    dst[0] = src[0]!;
    return;
  }
  const strides = new Array<number>(rank);
  strides[rank - 1] = 1;
  for (let i = rank - 2; i >= 0; i--) strides[i] = strides[i + 1]! * shape[i + 1]!;
  // The run covers dim d and every inner dim; inner dims must be taken whole for the run to be contiguous.
  let d = rank - 1;
  while (d > 0 && size[d] === shape[d]) d--;
  const run = size[d]! * strides[d]!;
  const outer = size.slice(0, d).reduce((p, s) => p * s, 1);
  const idx = new Array<number>(d).fill(0);
  let pos = 0;
  for (let o = 0; o < outer; o++) {
    let off = begin[d]! * strides[d]!;
    for (let i = 0; i < d; i++) off += (begin[i]! + idx[i]!) * strides[i]!;
    dst.set(src.subarray(off, off + run), pos);
    pos += run;
    for (let i = d - 1; i >= 0; i--) {
      if (++idx[i]! < size[i]!) break;
      idx[i] = 0;
    }
  }
}

export const sliceKernel = slice as unknown as KernelFunc;
