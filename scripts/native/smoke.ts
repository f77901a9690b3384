/**
 * The installer's check of a freshly assembled native engine (run in a child process with
 * CONTROLNET_TS_NATIVE_DIR pointing at it): the engine must load through lib/engine as the product loads it, and
 * compute a matmul and a stride-2 explicitly padded conv gradient correctly. Prints one JSON line.
 */
import { initEngine, tf } from "../../lib/engine/index.js";

const info = await initEngine({ backend: "node", threads: 1 });
const y = tf.matMul(tf.tensor2d([[1, 2], [3, 4]]), tf.tensor2d([[5], [6]])).dataSync();
if (y[0] !== 17 || y[1] !== 39) throw new Error(`matMul gave [${Array.from(y)}], expected [17, 39]`);
const x = tf.ones([1, 4, 4, 1]);
const w = tf.ones([3, 3, 1, 1]);
const g = tf.grad((w: tf.Tensor) => tf.conv2d(x as tf.Tensor4D, w as tf.Tensor4D, 2, [[0, 0], [1, 1], [1, 1], [0, 0]]).sum())(w).dataSync();
// Output 2×2 over the input padded to 6×6 (data in rows/cols 1..4): tap (i, j) sums the data it meets over the
// 2×2 outputs, i.e. (outputs o with 1 ≤ 2o+i ≤ 4) × (same for j).
const hits = (i: number) => [0, 1].filter((o) => 2 * o + i >= 1 && 2 * o + i <= 4).length;
const expected = [0, 1, 2].flatMap((i) => [0, 1, 2].map((j) => hits(i) * hits(j)));
if (g.some((v, i) => v !== expected[i])) throw new Error(`conv2d filter gradient gave [${Array.from(g)}], expected [${expected}]`);
const { loadNative } = await import("../../lib/engine/native/load.js");
console.log(JSON.stringify({ backend: info.backend, gpu: loadNative(1).usingGpu }));
