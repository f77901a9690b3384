/** Tensors print with their values through util.inspect (console.log, notebook results), also inside arrays and objects. */
import { test } from "node:test";
import assert from "node:assert/strict";
import util from "node:util";
import { tf } from "../../lib/engine/index.js";
import { testEngine } from "../helpers.js";

test("a tensor inside an array or object prints its values, shape and dtype; a disposed one says so", async () => {
  await testEngine();
  const t = tf.tensor([[1, 2], [3, 4]]);
  const text = util.inspect([t, { v: tf.variable(tf.tensor1d([7, 8], "int32")) }], { depth: 4 });
  assert.match(text, /\[\[1, 2\],\s+\[3, 4\]\]\s+\(shape \[2, 2\], float32\)/, text);
  assert.match(text, /\[7, 8\]\s+\(shape \[2\], int32\)/, text);
  // the engine's bookkeeping fields were all a user saw
  assert.doesNotMatch(text, /dataId|scopeId|kept/, text);
  t.dispose();
  assert.equal(util.inspect(t), "Tensor (disposed; shape [2, 2], float32)");
});
