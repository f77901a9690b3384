/**
 * Parameter layouts. PyTorch (and so every diffusers/transformers file) stores conv weights as [out,in,kh,kw] and
 * linear weights as [out,in]; tfjs wants [kh,kw,in,out] and [in,out]. Every parameter carries one of these tags so
 * loading and saving convert exactly once, at the file boundary.
 */
import { tf } from "../engine/tf.js";

export type ParamLayout = "conv2d" | "linear" | "plain";

/** PyTorch layout → tfjs layout. */
export function toTfjsLayout(t: tf.Tensor, layout: ParamLayout): tf.Tensor {
  if (layout === "conv2d") return tf.transpose(t, [2, 3, 1, 0]);
  if (layout === "linear") return tf.transpose(t, [1, 0]);
  return t.clone();
}

/** tfjs layout → PyTorch layout. */
export function toTorchLayout(t: tf.Tensor, layout: ParamLayout): tf.Tensor {
  if (layout === "conv2d") return tf.transpose(t, [3, 2, 0, 1]);
  if (layout === "linear") return tf.transpose(t, [1, 0]);
  return t.clone();
}

/** The PyTorch shape of a tfjs-layout shape. */
export function torchShape(tfjsShape: number[], layout: ParamLayout): number[] {
  if (layout === "conv2d") return [tfjsShape[3]!, tfjsShape[2]!, tfjsShape[0]!, tfjsShape[1]!];
  if (layout === "linear") return [tfjsShape[1]!, tfjsShape[0]!];
  return [...tfjsShape];
}

/** The tfjs shape of a PyTorch-layout shape. */
export function tfjsShape(torch: number[], layout: ParamLayout): number[] {
  if (layout === "conv2d") return [torch[2]!, torch[3]!, torch[1]!, torch[0]!];
  if (layout === "linear") return [torch[1]!, torch[0]!];
  return [...torch];
}
