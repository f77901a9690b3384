import { test } from "node:test";
import assert from "node:assert/strict";
import { testEngine } from "../helpers.js";
import { tf } from "../../lib/engine/index.js";
import { loadTinySd } from "../../lib/demo/tiny-sd.js";

// The embedded base must take its colours from the prompt. On SD1.5's ε-prediction schedule the tiny UNet learned to
// read them from the residual image left in x_T instead, and its prediction at high noise changed by <1% between
// prompts (colour score at chance). The zero-terminal-SNR v-prediction recipe (data/recipes/tiny-sd.ts) fixed that.
test("the embedded tiny SD's prediction at high noise depends on the prompt", async () => {
  await testEngine();
  const sd = loadTinySd();
  const L = sd.resolution / sd.vae.scaleFactor;
  assert.equal(sd.noiseScheduler.config.prediction_type, "v_prediction");
  const prompts = ["red circle with blue background", "blue circle with red background", ""];
  const rel = tf.tidy(() => {
    const h = sd.textEncoder.forward(sd.tokenizer.tokenize(prompts, sd.tokenizer.modelMaxLength)).lastHiddenState;
    const z = tf.tile(tf.randomNormal([1, L, L, 4], 0, 1, "float32", 3), [3, 1, 1, 1]) as tf.Tensor4D;
    const out = sd.unet.forward(z, tf.tensor1d([900, 900, 900]), h);
    const [a, b, e] = tf.split(out, 3);
    const n = (x: tf.Tensor, y: tf.Tensor) => tf.norm(tf.sub(x, y)).dataSync()[0]! / tf.norm(x).dataSync()[0]!;
    return { swapped: n(a!, b!), empty: n(a!, e!) };
  });
  // measured on this checkpoint: 0.066 (swapped colours) and 0.062 (empty prompt); the ε-prediction base: 0.003, 0.008
  assert.ok(rel.swapped > 0.03, `swapping the colours changed the prediction by only ${(100 * rel.swapped).toFixed(2)}%`);
  assert.ok(rel.empty > 0.03, `the empty prompt changed the prediction by only ${(100 * rel.empty).toFixed(2)}%`);
});
