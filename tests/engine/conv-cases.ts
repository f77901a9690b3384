/** Conv2D cases shared by the wasm kernel tests and the native engine tests: stride 2, explicit/asymmetric pads, odd sizes. */
import assert from "node:assert/strict";
import { tf } from "../../lib/engine/index.js";
import { assertClose, onCpu } from "../helpers.js";

export type Pad = "same" | "valid" | tf.backend_util.ExplicitPadding;
export interface ConvCase { n: number; h: number; w: number; ci: number; co: number; k: [number, number]; s: [number, number]; pad: Pad }

export const convCases: ConvCase[] = [];
const pads: Pad[] = ["same", "valid", [[0, 0], [1, 1], [1, 1], [0, 0]], [[0, 0], [0, 2], [1, 0], [0, 0]]];
for (const [h, w] of [[8, 8], [9, 7]] as const)
  for (const k of [1, 3] as const)
    for (const s of [1, 2] as const)
      for (const pad of pads) convCases.push({ n: 2, h, w, ci: 3, co: 5, k: [k, k], s: [s, s], pad });
convCases.push({ n: 1, h: 11, w: 10, ci: 4, co: 2, k: [2, 2], s: [2, 2], pad: "valid" });
convCases.push({ n: 2, h: 8, w: 8, ci: 3, co: 4, k: [4, 4], s: [2, 2], pad: "same" });
convCases.push({ n: 1, h: 16, w: 13, ci: 2, co: 3, k: [3, 3], s: [3, 3], pad: [[0, 0], [1, 1], [1, 1], [0, 0]] });
convCases.push({ n: 3, h: 5, w: 6, ci: 2, co: 2, k: [3, 2], s: [1, 2], pad: "same" });
// ≥ 1M input elements with a padding neither SAME nor VALID: the native engine runs TensorFlow's Pad, a VALID conv and,
// for dX, a slice (lib/engine/native/kernels.ts); odd sizes leave the far padding partly unused
convCases.push({ n: 1, h: 512, w: 512, ci: 4, co: 2, k: [3, 3], s: [2, 2], pad: [[0, 0], [1, 1], [1, 1], [0, 0]] });
convCases.push({ n: 1, h: 513, w: 511, ci: 4, co: 3, k: [3, 3], s: [2, 2], pad: [[0, 0], [0, 2], [1, 0], [0, 0]] });

// Filters of ≥ 640 × 640 channels: on the native CPU engine, the product of the input's patches and the filter
// (lib/engine/native/kernels.ts); SAME, VALID (1×1) and a stride-2 downsampler's explicit padding (Pad first)
export const largeFilterConvCases: ConvCase[] = [
  { n: 2, h: 4, w: 3, ci: 640, co: 640, k: [3, 3], s: [1, 1], pad: [[0, 0], [1, 1], [1, 1], [0, 0]] },
  { n: 1, h: 5, w: 4, ci: 640, co: 640, k: [3, 3], s: [2, 2], pad: [[0, 0], [1, 1], [1, 1], [0, 0]] },
  { n: 1, h: 3, w: 5, ci: 1280, co: 320, k: [1, 1], s: [1, 1], pad: "valid" },
];

export function convGrads(c: ConvCase, seed: number): { dx: Float32Array; dw: Float32Array; y: Float32Array } {
  return tf.tidy(() => {
    const x = tf.randomNormal([c.n, c.h, c.w, c.ci], 0, 1, "float32", seed) as tf.Tensor4D;
    const wt = tf.randomNormal([c.k[0], c.k[1], c.ci, c.co], 0, 1, "float32", seed + 1) as tf.Tensor4D;
    const y = tf.conv2d(x, wt, c.s, c.pad);
    const r = tf.randomNormal(y.shape, 0, 1, "float32", seed + 2);
    const [dx, dw] = tf.grads((a: tf.Tensor, b: tf.Tensor) => tf.sum(tf.mul(tf.conv2d(a as tf.Tensor4D, b as tf.Tensor4D, c.s, c.pad), r)))([x, wt]);
    return { dx: dx!.dataSync() as Float32Array, dw: dw!.dataSync() as Float32Array, y: y.dataSync() as Float32Array };
  });
}


/** Case i on the running engine equals the cpu backend (forward, dX, dW ≤ 1e-4 rel) and leaks no tensor. */
export async function assertConvCaseMatchesCpu(c: ConvCase, i: number): Promise<void> {
  const before = tf.memory().numTensors;
  const got = convGrads(c, 10 + i);
  assert.equal(tf.memory().numTensors, before, "tensor leak");
  const ref = await onCpu(() => convGrads(c, 10 + i));
  assertClose(got.y, ref.y, 1e-4, "forward");
  assertClose(got.dx, ref.dx, 1e-4, "dX");
  assertClose(got.dw, ref.dw, 1e-4, "dW");
}
