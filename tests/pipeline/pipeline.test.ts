import { test } from "node:test";
import assert from "node:assert/strict";
import sharp from "sharp";
import { tf } from "../../lib/engine/index.js";
import { testEngine, maxAbsDiff } from "../helpers.js";
import { StableDiffusionControlNetPipeline, controlnetKeep, controlGuidanceWindows } from "../../lib/pipeline/index.js";
import { schedulerFromConfig, Generator } from "../../lib/schedulers/index.js";
import { FakeControlNet, FakeTextEncoder, FakeTokenizer, FakeUNet, FakeVae } from "./fakes.js";

const SD = { beta_start: 0.00085, beta_end: 0.012, beta_schedule: "scaled_linear", steps_offset: 1, clip_sample: false, set_alpha_to_one: false };

function makePipe(nets = 1, scheduler = "ddim") {
  const controlnets = Array.from({ length: nets }, (_, k) => new FakeControlNet(k + 1));
  const pipe = new StableDiffusionControlNetPipeline({
    unet: new FakeUNet(),
    controlnet: nets === 1 ? controlnets[0]! : controlnets,
    vae: new FakeVae(),
    scheduler: schedulerFromConfig(scheduler, SD),
    textEncoder: new FakeTextEncoder(),
    tokenizer: new FakeTokenizer(),
  });
  return { pipe, unet: pipe.unet as FakeUNet, nets: controlnets, text: pipe.textEncoder as FakeTextEncoder };
}

function controlImage(h = 8, w = 8, value = 0.5): tf.Tensor4D {
  return tf.fill([1, h, w, 3], value) as tf.Tensor4D;
}

test("classifier-free guidance: uncond first, ε = ε_u + g(ε_t − ε_u), negative prompt used", async () => {
  await testEngine();
  const { pipe, unet, text, nets } = makePipe();
  const img = controlImage();
  const out = await pipe.call({ prompt: "a cat", negativePrompt: "blurry", image: img, numInferenceSteps: 3, guidanceScale: 5, seed: 3, outputType: "latent" });
  assert.equal(unet.calls.length, 3);
  assert.equal(unet.calls[0]!.batch, 2);
  assert.deepEqual(nets[0]!.embedded, [1]); // once per call, not per step or guidance half
  assert.ok(nets[0]!.calls.every((c) => c.condBatch === 2));
  const tok = new FakeTokenizer();
  const expectNeg = (new FakeTextEncoder().forward(tok.tokenize(["blurry"], 5)).lastHiddenState.arraySync())[0];
  const expectPos = (new FakeTextEncoder().forward(tok.tokenize(["a cat"], 5)).lastHiddenState.arraySync())[0];
  assert.deepEqual(unet.calls[0]!.ehs[0], expectNeg);
  assert.deepEqual(unet.calls[0]!.ehs[1], expectPos);
  assert.deepEqual(text.calls.map((c) => c.length), [1, 1]);
  // Re-run the same loop by hand with the guidance formula and compare.
  const s = schedulerFromConfig("ddim", SD);
  s.setTimesteps(3);
  let x = new Generator(3).randn([1, 4, 4, 4]);
  const cond = tf.fill([1, 1, 1, 1], 0.5 + 1);
  for (const t of s.timesteps) {
    const meanOf = (e: number[][]) => e.flat().reduce((a, b) => a + b, 0) / e.flat().length;
    const eU = tf.add(tf.add(tf.mul(x, 0.1), meanOf(expectNeg!)), tf.mul(tf.add(tf.mul(cond, 0.5), tf.mul(cond, 0.25)), 1));
    const eT = tf.add(tf.add(tf.mul(x, 0.1), meanOf(expectPos!)), tf.mul(tf.add(tf.mul(cond, 0.5), tf.mul(cond, 0.25)), 1));
    const eps = tf.add(eU, tf.mul(5, tf.sub(eT, eU)));
    x = s.step(eps, t, x).prevSample;
  }
  assert.ok(maxAbsDiff(out.latents!.dataSync(), x.dataSync()) < 1e-5, "pipeline loop != hand-written guidance loop");
  tf.dispose([img, out.latents!]);
});

test("guidance ≤ 1 runs one batch and never encodes a negative prompt", async () => {
  await testEngine();
  const { pipe, unet, text, nets } = makePipe();
  const img = controlImage();
  const out = await pipe.call({ prompt: ["a", "b"], image: img, numInferenceSteps: 2, guidanceScale: 1, seed: 1, outputType: "latent" });
  assert.equal(unet.calls[0]!.batch, 2); // two prompts, no doubling
  assert.equal(text.calls.length, 1);
  assert.equal(nets[0]!.calls[0]!.condBatch, 2); // control image repeated to the batch
  assert.deepEqual(nets[0]!.embedded, [1]); // embedded once for both steps, before it is repeated
  assert.deepEqual(out.latents!.shape, [2, 4, 4, 4]);
  tf.dispose([img, out.latents!]);
});

test("guess mode: ControlNet sees only the conditional half; the unconditional half gets zero residuals", async () => {
  await testEngine();
  const { pipe, unet, nets } = makePipe();
  const img = controlImage();
  const out = await pipe.call({ prompt: "p", image: img, numInferenceSteps: 2, guidanceScale: 7.5, guessMode: true, seed: 2, outputType: "latent" });
  const c = nets[0]!.calls[0]!;
  assert.equal(c.batch, 1);
  assert.equal(c.condBatch, 1);
  assert.equal(c.guessMode, true);
  assert.deepEqual(c.ehs[0], unet.calls[0]!.ehs[1]); // the positive embedding
  const mid = unet.calls[0]!.mid!;
  assert.equal(mid.length, 2);
  assert.ok(mid[0]!.flat(2).every((v) => v === 0), "uncond half must be zeros");
  assert.ok(mid[1]!.flat(2).every((v) => v !== 0), "cond half carries the control");
  tf.dispose([img, out.latents!]);
});

test("control mode \"controlnet\": ControlNet on the conditional half only, at its full scale (no guess-mode ramp)", async () => {
  await testEngine();
  const run = async (controlMode?: "balanced" | "controlnet", guidanceScale = 7.5) => {
    const { pipe, unet, nets } = makePipe();
    const img = controlImage();
    const out = await pipe.call({ prompt: "p", image: img, numInferenceSteps: 2, guidanceScale, controlMode, seed: 2, outputType: "latent" });
    const latents = out.latents!.arraySync();
    tf.dispose([img, out.latents!]);
    return { c: nets[0]!.calls[0]!, mid: unet.calls[0]!.mid!, ehs: unet.calls[0]!.ehs, latents };
  };
  const only = await run("controlnet");
  assert.equal(only.c.batch, 1);
  assert.equal(only.c.condBatch, 1);
  assert.equal(only.c.guessMode, false, "no depth ramp");
  assert.deepEqual(only.c.ehs[0], only.ehs[1]); // the positive embedding
  assert.equal(only.mid.length, 2);
  assert.ok(only.mid[0]!.flat(2).every((v) => v === 0), "uncond half must be zeros");
  assert.ok(only.mid[1]!.flat(2).every((v) => v !== 0), "cond half carries the control");
  const balanced = await run("balanced");
  assert.equal(balanced.c.batch, 2);
  assert.ok(balanced.mid.every((h) => h.flat(2).every((v) => v !== 0)), "balanced: both halves carry the control");
  assert.deepEqual((await run()).latents, balanced.latents, "balanced is the default");
  assert.notDeepEqual(only.latents, balanced.latents);
  // without guidance there is one batch and the two modes are the same
  assert.deepEqual((await run("controlnet", 1)).latents, (await run("balanced", 1)).latents);
  const { pipe } = makePipe();
  const img = controlImage();
  await assert.rejects(pipe.call({ prompt: "p", image: img, numInferenceSteps: 1, controlMode: "strong" as "balanced" }), /unknown control mode "strong" \(use balanced or controlnet\)/);
  img.dispose();
});

test("control_guidance_start/end windows and conditioning scales", async () => {
  await testEngine();
  assert.deepEqual(controlnetKeep(4, [0.5], [1]).map((r) => r[0]), [0, 0, 1, 1]);
  assert.deepEqual(controlnetKeep(4, [0], [0.5]).map((r) => r[0]), [1, 1, 0, 0]);
  assert.throws(() => controlGuidanceWindows(0.6, 0.5, 1), /must be smaller than controlGuidanceEnd/);
  assert.throws(() => controlGuidanceWindows([0, 0.1], 1, 1), /got 2 values for 1 ControlNet/);
  const { pipe, unet, nets } = makePipe();
  const img = controlImage();
  const out = await pipe.call({
    prompt: "p", image: img, numInferenceSteps: 10, guidanceScale: 2, seed: 2, outputType: "latent",
    controlGuidanceStart: 0.3, controlGuidanceEnd: 0.8, controlnetConditioningScale: 0.5,
  });
  assert.equal(nets[0]!.calls.length, 5); // steps 3..7
  assert.ok(nets[0]!.calls.every((c) => c.scale === 0.5));
  assert.equal(unet.calls.filter((c) => c.mid === null).length, 5);
  tf.dispose([img, out.latents!]);
});

test("several ControlNets: one image each, per-net scales, residuals summed", async () => {
  await testEngine();
  const { pipe, unet, nets } = makePipe(2);
  const a = controlImage(8, 8, 0.2);
  const b = controlImage(8, 8, 0.6);
  const out = await pipe.call({ prompt: "p", image: [a, b], numInferenceSteps: 1, guidanceScale: 1, seed: 2, outputType: "latent", controlnetConditioningScale: [1, 0.5] });
  assert.equal(nets[0]!.calls[0]!.scale, 1);
  assert.equal(nets[1]!.calls[0]!.scale, 0.5);
  const mid = unet.calls[0]!.mid![0]![0]![0]![0]!;
  // net k adds scale·(mean(image) + bias_k): 1·(0.2+1) + 0.5·(0.6+2)
  assert.ok(Math.abs(mid - (1.2 + 1.3)) < 1e-5, `summed mid residual ${mid}`);
  await assert.rejects(pipe.call({ prompt: "p", image: [a], numInferenceSteps: 1 }), /Got 1 control image for 2 ControlNets/);
  await assert.rejects(pipe.call({ prompt: "p", image: [a, b], numInferenceSteps: 1, controlnetConditioningScale: [1, 2, 3] }), /got 3 values for 2 ControlNets/);
  await assert.rejects(pipe.call({ prompt: "p", image: [a, controlImage(10, 8)], numInferenceSteps: 1 }), /all control images must have the same size/);
  tf.dispose([a, b, out.latents!]);
});

test("bad input: wrong image size, zero steps, bad latents, prompt/embeds conflicts", async () => {
  await testEngine();
  const { pipe } = makePipe();
  const img = controlImage(8, 12);
  // a control image of another size is resized to the requested one, as diffusers' control image processor does
  const resized = await pipe.call({ prompt: "p", image: img, height: 8, width: 8, numInferenceSteps: 1, outputType: "latent" });
  assert.deepEqual(resized.latents!.shape, [1, 4, 4, 4]);
  resized.latents!.dispose();
  await assert.rejects(pipe.call({ prompt: "p", image: img, numInferenceSteps: 0 }), /numInferenceSteps must be a positive integer, got 0/);
  await assert.rejects(pipe.call({ prompt: "p", image: img, height: 7 }), /height must be a positive multiple of 2/);
  const lat = tf.zeros([1, 3, 3, 4]) as tf.Tensor4D;
  await assert.rejects(pipe.call({ prompt: "p", image: img, numInferenceSteps: 1, latents: lat }), /latents have shape \[1,3,3,4\], expected \[1,4,6,4\]/);
  await assert.rejects(pipe.call({ image: img, numInferenceSteps: 1 }), /Give a prompt/);
  await assert.rejects(pipe.call({ prompt: ["a", "b"], negativePrompt: ["x", "y", "z"], image: img, numInferenceSteps: 1 }), /negativePrompt has 3 entries but there are 2 prompts/);
  const before = tf.memory().numTensors;
  await assert.rejects(pipe.call({ prompt: "p", image: img, numInferenceSteps: 1, controlGuidanceEnd: 2 }), /must be ≤ 1/);
  assert.equal(tf.memory().numTensors, before, "a rejected call must not leak tensors");
  tf.dispose([img, lat]);
});

test("images: size from the control image floored to the VAE multiple, PNG output, seeded and reproducible", async () => {
  await testEngine();
  const { pipe } = makePipe(1, "unipc");
  const raw = { data: new Uint8Array(13 * 9 * 3).map((_, i) => (i * 37) % 256), width: 13, height: 9, channels: 3 as const };
  const png = await sharp(raw.data, { raw: { width: 13, height: 9, channels: 3 } }).png().toBuffer();
  const before = tf.memory().numTensors;
  const a = await pipe.call({ prompt: "p", image: png, numInferenceSteps: 3, seed: 7, numImagesPerPrompt: 2 });
  assert.equal(tf.memory().numTensors, before, "pipeline call leaked tensors");
  assert.equal(a.width, 12);
  assert.equal(a.height, 8);
  assert.equal(a.images.length, 2);
  const meta = await sharp(Buffer.from(a.images[0]!)).metadata();
  assert.equal(meta.format, "png");
  assert.equal(meta.width, 12);
  assert.equal(meta.height, 8);
  assert.equal(a.rgb[0]!.data.length, 12 * 8 * 3);
  const b = await pipe.call({ prompt: "p", image: raw, numInferenceSteps: 3, seed: 7, numImagesPerPrompt: 2 });
  assert.deepEqual(b.rgb[0]!.data, a.rgb[0]!.data);
  assert.notDeepEqual(a.rgb[0]!.data, a.rgb[1]!.data); // two images per prompt draw different latents
  const c = await pipe.call({ prompt: "p", image: raw, numInferenceSteps: 3, seed: 8 });
  assert.notDeepEqual(c.rgb[0]!.data, a.rgb[0]!.data);
  const t = await pipe.call({ prompt: "p", image: raw, numInferenceSteps: 3, seed: 7, outputType: "tensor" });
  const px = t.pixels!.dataSync();
  assert.ok(px.every((v) => v >= 0 && v <= 1));
  assert.ok(maxAbsDiff(Array.from(px, (v) => Math.round(v * 255)), a.rgb[0]!.data) <= 1);
  t.pixels!.dispose();
  const ctl = new AbortController();
  let steps = 0;
  const beforeAbort = tf.memory().numTensors;
  await assert.rejects(
    pipe.call({ prompt: "p", image: raw, numInferenceSteps: 5, onStep: () => { if (++steps === 2) ctl.abort(); }, signal: ctl.signal }),
    /aborted/,
  );
  assert.equal(steps, 2);
  assert.equal(tf.memory().numTensors, beforeAbort, "an aborted call must not leak tensors");
});

test("clipSkip re-applies the final norm to an earlier layer's output", async () => {
  await testEngine();
  const { pipe } = makePipe();
  const layers = [tf.fill([1, 5, 6], 1), tf.fill([1, 5, 6], 2), tf.fill([1, 5, 6], 3)] as tf.Tensor3D[];
  const enc = {
    forward: (_ids: number[][], o: { outputHiddenStates?: boolean } = {}) => ({
      lastHiddenState: tf.fill([1, 5, 6], 9) as tf.Tensor3D,
      hiddenStates: o.outputHiddenStates ? layers.map((l) => l.clone()) : undefined,
    }),
    finalLayerNorm: { forward: (x: tf.Tensor3D) => tf.mul(x, 10) as tf.Tensor3D },
  };
  const p2 = new StableDiffusionControlNetPipeline({ unet: pipe.unet, controlnet: pipe.controlnets[0]!, vae: pipe.vae, scheduler: pipe.scheduler, textEncoder: enc, tokenizer: pipe.tokenizer });
  const before = tf.memory().numTensors;
  const plain = p2.encodeText(["x"]);
  const skip1 = p2.encodeText(["x"], 1);
  assert.equal(plain.dataSync()[0], 9);
  assert.equal(skip1.dataSync()[0], 20); // hiddenStates[-2] = 2, through the final norm (×10)
  tf.dispose([plain, skip1]);
  assert.equal(tf.memory().numTensors, before);
  assert.throws(() => p2.encodeText(["x"], 5), /clipSkip 5 needs/);
  tf.dispose(layers);
});
