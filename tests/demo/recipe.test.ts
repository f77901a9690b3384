import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { testEngine, maxAbsDiff } from "../helpers.js";
import { pretrainTinySd, TINY_SD_RECIPE } from "../../data/recipes/tiny-sd.js";
import { loadTinySd } from "../../lib/demo/tiny-sd.js";
import { loadModelFolder } from "../../lib/io/index.js";

// The recipe at a toy size: it writes a pipeline folder our loader reads back, and a second run continues from the
// first one's VAE and UNet (the warm start that lets pretraining span several sessions).
const tiny = { ...TINY_SD_RECIPE, vaeSteps: 2, unetSteps: 2, vaeBatch: 2, unetBatch: 2, poolSize: 8, log: () => {} };

/** The largest |a − b| over all tensors of two model folders (same tensor names). */
function maxChange(dirA: string, dirB: string, keep: (name: string) => boolean = () => true): number {
  const a = loadModelFolder(dirA).tensors;
  const b = loadModelFolder(dirB).tensors;
  assert.deepEqual([...a.keys()].sort(), [...b.keys()].sort());
  return Math.max(...[...a.keys()].filter(keep).map((n) => maxAbsDiff(a.get(n)!.data, b.get(n)!.data)));
}

test("the tiny-SD recipe writes a loadable pipeline, and a second run continues from it (VAE decoder, UNet and text encoder; saving as it goes)", async () => {
  await testEngine();
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "recipe-"));
  try {
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
      const d = maxChange(path.join(first, part), path.join(second, part));
      // two warm-up steps move the weights a little; a fresh random init would differ by far more than 0.05
      assert.ok(d > 0 && d < 0.05, `${part}: the continued run moved its weights by ${d} (0 = not trained, large = not continued)`);
    }
    // decoder-only: the encoder (so the latents, and the scaling factor) did not move
    const encoder = (n: string) => n.startsWith("encoder.") || n.startsWith("quant_conv.");
    assert.equal(maxChange(path.join(first, "vae"), path.join(second, "vae"), encoder), 0, "the frozen encoder changed");
    assert.equal(r2.scalingFactor, r1.scalingFactor);
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});

test("a UNet to continue that does not fit the VAE, or contradicting VAE inputs, is one clear error before any training", async () => {
  await testEngine();
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "recipe-"));
  try {
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
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});
