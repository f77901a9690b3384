/**
 * TensorFlow ops run directly on the tensorflow backend's tensors through tfjs-node's `executeSingleOutput` (an op by
 * name, no tfjs kernel, no tape): the helpers the native kernels (kernels.ts) and the linear layer (linear.ts) share.
 */
import { tf } from "../tf.js";
import type { TensorInfo } from "@tensorflow/tfjs";

export interface OpAttr {
  name: string;
  type: number;
  value: unknown;
}

/** What these helpers need of tfjs-node's backend. */
export interface TfOpBackend {
  binding: { TF_ATTR_TYPE: number; TF_ATTR_BOOL: number; TF_FLOAT: number; TF_INT32: number };
  executeSingleOutput(name: string, attrs: OpAttr[], inputs: TensorInfo[]): TensorInfo;
}

/** A TensorFlow op's type attribute (`T`, `Tpaddings`, `Tshape`, `Index`, …): float32 or int32. */
export function typeAttr(backend: TfOpBackend, name: string, dtype: "float32" | "int32"): OpAttr {
  const b = backend.binding;
  return { name, type: b.TF_ATTR_TYPE, value: dtype === "float32" ? b.TF_FLOAT : b.TF_INT32 };
}

/** A float32 x reshaped by TensorFlow's Reshape (a new handle on the same buffer). */
export function reshape(backend: TfOpBackend, x: TensorInfo, shape: number[]): TensorInfo {
  const s = tf.tensor1d(shape, "int32");
  try {
    return backend.executeSingleOutput("Reshape", [typeAttr(backend, "T", "float32"), typeAttr(backend, "Tshape", "int32")], [x, s]);
  } finally {
    s.dispose();
  }
}

/** a · b of two float32 matrices by TensorFlow's MatMul (either operand transposed). */
export function matMul(backend: TfOpBackend, a: TensorInfo, b: TensorInfo, transposeA = false, transposeB = false): TensorInfo {
  const bool = backend.binding.TF_ATTR_BOOL;
  return backend.executeSingleOutput("MatMul", [
    typeAttr(backend, "T", "float32"),
    { name: "transpose_a", type: bool, value: transposeA },
    { name: "transpose_b", type: bool, value: transposeB },
  ], [a, b]);
}
