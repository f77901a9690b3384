/** Host tensors for the io tests: deterministic values from a seed. */
import type { HostTensor } from "../../lib/io/safetensors.js";

export function f32(shape: number[], seed = 1): HostTensor {
  const count = shape.reduce((a, b) => a * b, 1);
  return { dtype: "float32", shape, data: Float32Array.from({ length: count }, (_, i) => Math.sin(seed * 100 + i)) };
}
