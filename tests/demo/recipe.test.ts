import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { testEngine, maxFolderDiff, tempDir } from "../helpers.js";
import { pretrainTinySd, recipeDataset, vaeTrainingLoss, TINY_SD_RECIPE } from "../../data/recipes/tiny-sd.js";
import { toFloat, type RawImage } from "../../lib/data/index.js";
import { loadTinySd } from "../../lib/demo/tiny-sd.js";
import { AutoencoderKL } from "../../lib/models/index.js";
import { tf } from "../../lib/engine/index.js";

// The recipe at a toy size: it writes a pipeline folder our loader reads back, and a second run continues from the
// first one's VAE and UNet (the warm start that lets pretraining span several sessions).
const tiny = { ...TINY_SD_RECIPE, vaeSteps: 2, unetSteps: 2, vaeBatch: 2, unetBatch: 2, poolSize: 8, log: () => {} };

test("the tiny-SD recipe writes a loadable pipeline, and a second run continues from it (VAE decoder, UNet and text encoder; saving as it goes)", async () => {
  await testEngine();
  const root = tempDir("recipe-");
  const first = path.join(root, "first");
  const r1 = await pretrainTinySd({ ...tiny, outDir: first, vaeLoss: "l1+mse" });
  assert.deepEqual(r1.steps, { vae: 2, unet: 2 });
  for (const f of ["model_index.json", "unet/config.json", "vae/diffusion_pytorch_model.safetensors", "text_encoder/config.json", "tokenizer/vocab.json", "scheduler/scheduler_config.json"]) {
    assert.ok(fs.existsSync(path.join(first, f)), `${f} missing`);
  }
  const sd = loadTinySd(first);
  assert.equal(sd.resolution, 32);
  assert.ok(Number.isFinite(r1.scalingFactor) && r1.scalingFactor > 0);

  const second = path.join(root, "second");
  const lines: string[] = [];
  // another seed: a fresh init would then differ from the first run, so only a real continuation stays close
  const r2 = await pretrainTinySd({
    ...tiny, seed: tiny.seed + 10, outDir: second, log: (l) => lines.push(l),
    vaeInitDir: path.join(first, "vae"), vaeTrain: "decoder", unetInitDir: path.join(first, "unet"), saveEvery: 1,
    textEncoderInitDir: path.join(first, "text_encoder"), trainTextEncoder: true,
  });
  assert.ok(lines.includes(`saved ${second} at UNet step 1`), "the run saved its pipeline after UNet step 1");
  for (const part of ["vae", "unet", "text_encoder"]) {
    const d = maxFolderDiff(path.join(first, part), path.join(second, part));
    // two warm-up steps move the weights a little; a fresh random init would differ by far more than 0.05
    assert.ok(d > 0 && d < 0.05, `${part}: the continued run moved its weights by ${d} (0 = not trained, large = not continued)`);
  }
  // decoder-only: the encoder (so the latents, and the scaling factor) did not move
  const encoder = (n: string) => n.startsWith("encoder.") || n.startsWith("quant_conv.");
  assert.equal(maxFolderDiff(path.join(first, "vae"), path.join(second, "vae"), encoder), 0, "the frozen encoder changed");
  assert.equal(r2.scalingFactor, r1.scalingFactor);
});

test("a UNet to continue that does not fit the VAE, or contradicting VAE inputs, is one clear error before any training", async () => {
  await testEngine();
  const root = tempDir("recipe-");
  // a UNet made for 8-channel latents, the recipe's VAE makes 4
  const unetDir = path.join(root, "unet8");
  fs.mkdirSync(unetDir);
  const cfg = JSON.parse(fs.readFileSync("data/tiny-sd/unet/config.json", "utf8"));
  fs.writeFileSync(path.join(unetDir, "config.json"), JSON.stringify({ ...cfg, in_channels: 8, out_channels: 8 }));
  await assert.rejects(
    pretrainTinySd({ ...tiny, outDir: path.join(root, "out"), vaeDir: "data/tiny-sd/vae", unetInitDir: unetDir }),
    /takes 8-channel latents .* the VAE makes 4-channel latents/,
  );
  assert.ok(!fs.existsSync(path.join(root, "out")), "nothing is written when the run is refused");
  // inputs that contradict each other are refused the same way
  const out = path.join(root, "out2");
  await assert.rejects(pretrainTinySd({ ...tiny, outDir: out, vaeDir: "data/tiny-sd/vae", vaeInitDir: "data/tiny-sd/vae" }), /exclude each other/);
  await assert.rejects(pretrainTinySd({ ...tiny, outDir: out, vaeTrain: "decoder" }), /--vae-train decoder\) needs the trained VAE/);
  assert.ok(!fs.existsSync(out), "nothing is written when the run is refused");
});

test("an anchored VAE continuation: its loss adds weight × the mean squared move of the scaled latent means, and the scaling factor is kept", async () => {
  await testEngine();
  const vae = AutoencoderKL.fromPretrained("data/tiny-sd/vae");
  const ds = recipeDataset(99, 32);
  const px = new Float32Array(4 * 32 * 32 * 3);
  for (let i = 0; i < 4; i++) toFloat(ds.row(i).image as RawImage, "signed", px, i * 32 * 32 * 3);
  const x = tf.tensor4d(px, [4, 32, 32, 3]);
  const eps = tf.randomNormal([4, 8, 8, 4], 0, 1, "float32", 3) as tf.Tensor4D;
  const m0 = tf.tidy(() => vae.encode(x).mean.clone());
  const moved = tf.add(m0, tf.randomNormal(m0.shape, 0, 0.5, "float32", 5)) as tf.Tensor4D;
  const loss = (anchor?: { means: tf.Tensor4D; weight: number }) => {
    const l = vaeTrainingLoss(vae, x, eps, { loss: "l1+mse", klWeight: 1e-6, anchor });
    const v = l.dataSync()[0]!;
    l.dispose();
    return v;
  };
  const sf = vae.config.scaling_factor;
  const expected = tf.tidy(() => tf.mean(tf.square(tf.mul(tf.sub(m0, moved), sf))).dataSync()[0]!);
  assert.ok(Math.abs(loss({ means: m0, weight: 3 }) - loss()) < 1e-6, "anchored at its own means the encoder pays nothing");
  assert.ok(Math.abs(loss({ means: moved, weight: 3 }) - loss() - 3 * expected) < 1e-4 * (1 + 3 * expected));
  tf.dispose([x, eps, m0, moved]);
  vae.dispose();

  const root = tempDir("recipe-");
  const r = await pretrainTinySd({ ...tiny, outDir: path.join(root, "held"), vaeInitDir: "data/tiny-sd/vae", unetSteps: 0, vaeAnchor: 1 });
  assert.equal(r.scalingFactor, sf, "an anchored continuation keeps the scaling factor its UNet was trained with");
  await assert.rejects(pretrainTinySd({ ...tiny, outDir: path.join(root, "bad"), vaeAnchor: 1 }), /--vae-anchor .* needs --vae-init DIR/);
  await assert.rejects(pretrainTinySd({ ...tiny, outDir: path.join(root, "bad"), vaeInitDir: "data/tiny-sd/vae", vaeAnchor: -1 }), /must be a number ≥ 0 \(got -1\)/);
  assert.ok(!fs.existsSync(path.join(root, "bad")), "nothing is written when the run is refused");
});
