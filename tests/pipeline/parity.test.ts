/**
 * Pipeline parity with diffusers 0.42 (tests/fixtures/pipeline_tiny on the sd_tiny pipeline): the same initial
 * latents and prompt embeddings through StableDiffusionControlNetPipeline with UniPC (from the PNDM config, as the
 * training validation does), 3 steps, guidance 1 and 6 and guess mode. Output images must match ≤ 1e-3 max abs.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { tf } from "../../lib/engine/index.js";
import { readSafetensors, type HostTensor } from "../../lib/io/safetensors.js";
import { testEngine, maxAbsDiff } from "../helpers.js";
import { loadControlNetPipeline } from "../../lib/pipeline/index.js";

const FIX = path.join("tests", "fixtures", "pipeline_tiny");
const SD = path.join("tests", "fixtures", "sd_tiny");

interface Meta {
  prompt: string;
  cases: Record<string, { guidance_scale: number; guess_mode?: boolean }>;
  scheduler_config: Record<string, unknown>;
  num_inference_steps: number;
}

/** NCHW host tensor → NHWC tf tensor. */
function nhwc(h: HostTensor): tf.Tensor4D {
  return tf.tidy(() => tf.transpose(tf.tensor4d(h.data as Float32Array, h.shape as [number, number, number, number]), [0, 2, 3, 1])) as tf.Tensor4D;
}

test("pipeline parity with diffusers: tiny SD ControlNet pipeline, guidance 1 / 6 / guess mode", async () => {
  await testEngine();
  assert.ok(fs.existsSync(path.join(FIX, "io.safetensors")), `missing fixture ${FIX}`);
  const meta = JSON.parse(fs.readFileSync(path.join(FIX, "meta.json"), "utf8")) as Meta;
  const t = readSafetensors(path.join(FIX, "io.safetensors")).tensors;
  const need = (n: string) => {
    const v = t.get(n);
    assert.ok(v, `fixture tensor ${n} missing`);
    return v;
  };
  // The whole folder as diffusers saved it: UNet, ControlNet, VAE, CLIP text encoder, tokenizer, UniPC from PNDM.
  const pipe = await loadControlNetPipeline(SD);
  // from_config of the saved PNDM file must give the scheduler diffusers used
  for (const [k, v] of Object.entries(pipe.scheduler.config)) {
    if (k in meta.scheduler_config) assert.deepEqual(v, meta.scheduler_config[k], `scheduler config ${k}`);
  }
  const pos = tf.tensor3d(need("prompt_embeds").data as Float32Array, need("prompt_embeds").shape as [number, number, number]);
  const neg = tf.tensor3d(need("negative_prompt_embeds").data as Float32Array, need("negative_prompt_embeds").shape as [number, number, number]);
  const latents = nhwc(need("latents"));
  const control = nhwc(need("control_image"));
  // Our PNG decoding must give the exact control tensor diffusers fed the ControlNet.
  const fromPng = await (await import("../../lib/pipeline/image.js")).prepareControlImage(path.join(FIX, "control.png"), { multiple: 2 });
  assert.equal(maxAbsDiff(fromPng.tensor.dataSync(), control.dataSync()), 0, "control.png decoding differs from PIL");
  fromPng.tensor.dispose();
  const report: string[] = [];
  for (const [name, c] of Object.entries(meta.cases)) {
    const perStep: tf.Tensor[] = [];
    const cfg = c.guidance_scale > 1;
    const out = await pipe.call({
      promptEmbeds: pos,
      negativePromptEmbeds: cfg ? neg : undefined,
      image: path.join(FIX, "control.png"),
      latents,
      numInferenceSteps: meta.num_inference_steps,
      guidanceScale: c.guidance_scale,
      guessMode: c.guess_mode ?? false,
      outputType: "tensor",
      onStep: (s) => perStep.push(s.latents.clone()),
    });
    assert.deepEqual(out.timesteps, Array.from(need(`${name}.timesteps`).data), `${name}: timesteps`);
    const wantSteps = need(`${name}.latents_per_step`);
    const n = wantSteps.data.length / perStep.length;
    perStep.forEach((l, k) => {
      const want = nhwc({ ...wantSteps, shape: wantSteps.shape.slice(1), data: wantSteps.data.slice(k * n, (k + 1) * n) });
      const e = maxAbsDiff(l.dataSync(), want.dataSync());
      assert.ok(e <= 1e-3, `${name}: latents after step ${k} differ by ${e}`);
      want.dispose();
    });
    const want = nhwc(need(`${name}.image`));
    const err = maxAbsDiff(out.pixels!.dataSync(), want.dataSync());
    report.push(`${name} ${err.toExponential(2)}`);
    assert.ok(err <= 1e-3, `${name}: image max abs diff ${err}`);
    tf.dispose([want, out.pixels!, ...perStep]);
  }
  // From text: our tokenizer + CLIP text encoder must reproduce diffusers' encode_prompt, and the image follow.
  const ePos = pipe.encodeText([meta.prompt]);
  const eNeg = pipe.encodeText([""]);
  const dPos = maxAbsDiff(ePos.dataSync(), pos.dataSync());
  const dNeg = maxAbsDiff(eNeg.dataSync(), neg.dataSync());
  assert.ok(dPos <= 1e-4 && dNeg <= 1e-4, `prompt embeddings differ: positive ${dPos}, negative ${dNeg}`);
  tf.dispose([ePos, eNeg]);
  const fromText = await pipe.call({
    prompt: meta.prompt, image: path.join(FIX, "control.png"), latents, numInferenceSteps: meta.num_inference_steps,
    guidanceScale: meta.cases.g6!.guidance_scale, outputType: "tensor",
  });
  const want6 = nhwc(need("g6.image"));
  const errText = maxAbsDiff(fromText.pixels!.dataSync(), want6.dataSync());
  assert.ok(errText <= 1e-3, `g6 from the prompt text: image max abs diff ${errText}`);
  report.push(`g6-from-text ${errText.toExponential(2)} (embeddings ${Math.max(dPos, dNeg).toExponential(1)})`);
  tf.dispose([want6, fromText.pixels!]);
  console.log(`  image max abs diff: ${report.join(", ")}`);
  tf.dispose([pos, neg, latents, control]);
});
