import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import sharp from "sharp";
import { spawnSync } from "node:child_process";
import { engineInfo, tf } from "../../lib/engine/index.js";
import { testEngine, maxAbsDiff, tempDir } from "../helpers.js";
import { loadControlNetPipeline, generate, inferMain, parseInferArgs, inferOptions, outputFiles, controlnetFolder } from "../../lib/pipeline/index.js";
import type { TokenizerLike } from "../../lib/pipeline/index.js";
import { HubServer } from "../io/hub-server.js";

const SD = path.join("tests", "fixtures", "sd_tiny");
const CONTROL = path.join("tests", "fixtures", "pipeline_tiny", "control.png");

/** Ids inside the tiny CLIP's 1000-word vocabulary (the loader/CLI wiring is under test here, not tokenisation). */
const tinyTokenizer: TokenizerLike = {
  modelMaxLength: 77,
  tokenize: (texts, maxLength) => texts.map((t) => Array.from({ length: maxLength }, (_, i) => (i < t.length ? 3 + (t.charCodeAt(i) % 900) : 1))),
};

test("a hub base and ControlNet are downloaded in the variant asked for (infer --variant / --controlnet_variant), the base at --revision, into --cache_dir", async () => {
  await testEngine();
  const tmp = tempDir("infer-hub-variant-");
  // the tiny SD as a repo that has fp16 weights only (stored as F32: the names are what selection reads)
  const repo = path.join(tmp, "repo");
  fs.cpSync(SD, repo, { recursive: true });
  for (const dir of fs.readdirSync(repo)) {
    for (const f of ["diffusion_pytorch_model", "model"]) {
      const plain = path.join(repo, dir, `${f}.safetensors`);
      if (fs.existsSync(plain)) fs.renameSync(plain, path.join(repo, dir, `${f}.fp16.safetensors`));
    }
  }
  const server = await new HubServer().start();
  const env = { HF_ENDPOINT: process.env.HF_ENDPOINT, HF_HUB_CACHE: process.env.HF_HUB_CACHE };
  Object.assign(process.env, { HF_ENDPOINT: server.url, HF_HUB_CACHE: path.join(tmp, "cache") });
  try {
    server.addRepoFromDir("org/sd-fp16", repo);
    server.addRepoFromDir("org/cn-fp16", path.join(repo, "controlnet"));
    const pipe = await loadControlNetPipeline("org/sd-fp16", undefined, { variant: "fp16", tokenizer: tinyTokenizer });
    assert.equal(pipe.controlnets.length, 1, "the base's own controlnet/ in the base's variant");
    const own = await loadControlNetPipeline("org/sd-fp16", "org/cn-fp16", { variant: "fp16", controlnetVariant: "fp16", withoutTextEncoder: true });
    assert.equal(own.controlnets.length, 1);
    // --revision is the base's (from_pretrained's revision), --cache_dir where the hub files go
    server.addRepoFromDir("org/sd-branch", repo, { branch: "v2" });
    const flags = inferOptions(parseInferArgs(["--base", "org/sd-branch", "--image", "i", "--prompt", "p", "--revision", "v2", "--cache_dir", path.join(tmp, "own-cache")]));
    assert.deepEqual([flags.revision, flags.cacheDir], ["v2", path.join(tmp, "own-cache")]);
    await assert.rejects(loadControlNetPipeline("org/sd-branch", undefined, { variant: "fp16", withoutTextEncoder: true }), /HTTP 404/);
    const branch = await loadControlNetPipeline("org/sd-branch", undefined, { variant: "fp16", withoutTextEncoder: true, revision: flags.revision, cacheDir: flags.cacheDir });
    assert.equal(branch.controlnets.length, 1);
    assert.ok(fs.existsSync(path.join(tmp, "own-cache", "models--org--sd-branch", "refs", "v2")));
  } finally {
    for (const [k, v] of Object.entries(env)) v === undefined ? delete process.env[k] : (process.env[k] = v);
    await server.close();
  }
});

test("loadControlNetPipeline: base folder with its own controlnet/, UniPC from the PNDM config", async () => {
  await testEngine();
  const pipe = await loadControlNetPipeline(SD, undefined, { tokenizer: tinyTokenizer });
  assert.equal(pipe.scheduler.className, "UniPCMultistepScheduler");
  assert.equal(pipe.controlnets.length, 1);
  const ddim = await loadControlNetPipeline(SD, [path.join(SD, "controlnet"), SD], { scheduler: "ddim", withoutTextEncoder: true });
  assert.equal(ddim.scheduler.className, "DDIMScheduler");
  assert.equal(ddim.controlnets.length, 2); // a folder holding controlnet/ is accepted
  assert.equal(ddim.textEncoder, undefined);
  // Two identical ControlNets at scale 1 sum to one ControlNet at scale 2 (residuals are linear in the scale).
  const emb = tf.randomNormal([1, 77, 32], 0, 1, "float32", 7) as tf.Tensor3D;
  const common = { promptEmbeds: emb, numInferenceSteps: 2, guidanceScale: 1, seed: 4, outputType: "tensor" as const };
  const two = await ddim.call({ ...common, image: [CONTROL, CONTROL] });
  const single = await loadControlNetPipeline(SD, undefined, { scheduler: "ddim", withoutTextEncoder: true });
  const one = await single.call({ ...common, image: CONTROL, controlnetConditioningScale: 2 });
  const zero = await single.call({ ...common, image: CONTROL, controlnetConditioningScale: 0 });
  assert.ok(maxAbsDiff(two.pixels!.dataSync(), one.pixels!.dataSync()) < 1e-5, "2 nets × scale 1 != 1 net × scale 2");
  assert.ok(maxAbsDiff(zero.pixels!.dataSync(), one.pixels!.dataSync()) > 1e-3, "the ControlNet must change the image");
  tf.dispose([emb, two.pixels!, one.pixels!, zero.pixels!]);
  assert.throws(() => controlnetFolder(path.join(SD, "unet", "..", "scheduler")), /not a ControlNet folder/);
  const withTok = await loadControlNetPipeline(SD, undefined, { scheduler: "ddpm" });
  // the tiny vocabulary: <|startoftext|> 998, "a</w>" 320, <|endoftext|> 999 (also the padding)
  assert.deepEqual(withTok.tokenizer!.tokenize(["a"], 4), [[998, 320, 999, 999]]);
});

test("generate: PNG files at the control image's size, seeded and reproducible", async () => {
  await testEngine();
  const dir = tempDir("gen-");
  const r = await generate({
    base: SD, image: CONTROL, prompt: "a red circle", steps: 2, seed: 5, numImagesPerPrompt: 2,
    output: path.join(dir, "out.png"), tokenizer: tinyTokenizer,
  });
  assert.deepEqual(r.files, [path.join(dir, "out-0.png"), path.join(dir, "out-1.png")]);
  for (const f of r.files) {
    const m = await sharp(f).metadata();
    assert.equal(m.format, "png");
    assert.equal(m.width, 32);
    assert.equal(m.height, 32);
  }
  const again = await generate({ base: SD, image: CONTROL, prompt: "a red circle", steps: 2, seed: 5, numImagesPerPrompt: 2, pipeline: r.pipeline });
  assert.deepEqual(again.images[0], r.images[0]);
  assert.equal(again.loadSeconds, 0);
  const euler = await generate({ base: SD, image: CONTROL, prompt: "a red circle", steps: 2, seed: 5, scheduler: "euler", pipeline: r.pipeline });
  assert.notDeepEqual(euler.images[0], r.images[0]);
  assert.equal(r.pipeline.scheduler.className, "EulerDiscreteScheduler");
  // an output that could not be written is refused before the work, not after it
  const t0 = performance.now();
  await assert.rejects(generate({ base: SD, image: CONTROL, prompt: "x", steps: 2, output: dir, tokenizer: tinyTokenizer }), /--output .* is a folder; give a file name/);
  await assert.rejects(generate({ base: SD, image: CONTROL, prompt: "x", steps: 2, output: path.join(dir, "x.jpg"), tokenizer: tinyTokenizer }), /the images are PNG; give a \.png name/);
  // a file where the output's folder should be (it was EEXIST from mkdir, after generating)
  fs.writeFileSync(path.join(dir, "afile"), "notes");
  await assert.rejects(generate({ base: SD, image: CONTROL, prompt: "x", steps: 2, output: path.join(dir, "afile", "sub", "x.png"), tokenizer: tinyTokenizer }),
    new RegExp(`--output .*x\\.png: ${path.join(dir, "afile").replace(/[.*+?^${}()|[\]\\/]/g, "\\$&")} is a file, not a folder`));
  assert.ok(performance.now() - t0 < 2000, "refused before loading the models");
});

test("infer CLI: flags, output file, usage and runtime errors as exit codes", async () => {
  await testEngine();
  const a = parseInferArgs(["--base", "b", "--controlnet=c1", "--controlnet", "c2", "--image", "i1", "--image", "i2", "--prompt", "p",
    "--num-inference-steps", "7", "--controlnet_conditioning_scale", "0.5,1", "--guess-mode", "--scheduler", "DDIMScheduler", "--control-mode", "controlnet"]);
  const o = inferOptions(a);
  assert.deepEqual(o.controlnet, ["c1", "c2"]);
  assert.deepEqual(o.image, ["i1", "i2"]);
  assert.equal(o.steps, 7);
  assert.deepEqual(o.controlnetConditioningScale, [0.5, 1]);
  assert.equal(o.guessMode, true);
  assert.equal(o.controlMode, "controlnet");
  assert.equal(inferOptions(parseInferArgs(["--base", "b", "--image", "i", "--prompt", "p"])).controlMode, undefined);
  assert.throws(() => inferOptions(parseInferArgs(["--base", "b", "--image", "i", "--prompt", "p", "--control-mode", "both"])), /unknown control mode "both"/);
  assert.equal(o.scheduler, "ddim");
  assert.equal(o.output, "output.png");
  assert.throws(() => parseInferArgs(["--stepz", "3"]), /unknown flag --stepz/);
  assert.throws(() => parseInferArgs(["--steps", "2.5"]), /not an integer/);
  assert.throws(() => inferOptions(parseInferArgs(["--base", "b"])), /--image is required/);
  // counts by their flags, before anything loads (the pipeline's own check said numInferenceSteps)
  assert.throws(() => inferOptions(parseInferArgs(["--base", "b", "--image", "i", "--prompt", "p", "--steps", "0"])), /^Error: --steps must be a positive integer, got 0$/);
  assert.throws(() => inferOptions(parseInferArgs(["--base", "b", "--image", "i", "--prompt", "p", "--num_images", "0"])), /^Error: --num_images must be a positive integer, got 0$/);
  // several prompts are a batch, as diffusers' prompt list (only the last was kept); a one-value flag twice is said
  const batch = inferOptions(parseInferArgs(["--base", "b", "--image", "i", "--prompt", "p1", "--prompt", "p2", "--negative_prompt", "n1", "--negative_prompt", "n2"]));
  assert.deepEqual([batch.prompt, batch.negativePrompt], [["p1", "p2"], ["n1", "n2"]]);
  assert.equal(inferOptions(parseInferArgs(["--base", "b", "--image", "i", "--prompt", "p"])).prompt, "p");
  assert.throws(() => parseInferArgs(["--seed", "1", "--seed=2"]), /--seed is given twice \(1, "2"\); it takes one value/);
  // the ControlNet's variant is its own (ControlNetModel.from_pretrained(…, variant=)), --variant is the base's
  const variants = inferOptions(parseInferArgs(["--base", "b", "--image", "i", "--prompt", "p", "--controlnet_variant", "fp16"]));
  assert.deepEqual([variants.variant, variants.controlnetVariant], [undefined, "fp16"]);
  assert.deepEqual(outputFiles("x/y.png", 3), ["x/y-0.png", "x/y-1.png", "x/y-2.png"]);
  const dir = tempDir("infer-");
  const out = path.join(dir, "o.png");
  const quiet = process.stderr.write;
  process.stderr.write = (() => true) as typeof process.stderr.write;
  try {
    assert.equal(await inferMain(["--bogus"]), 2);
    assert.equal(await inferMain(["--base", SD, "--image", "missing.png", "--prompt", "p", "--steps", "1"], { tokenizer: tinyTokenizer }), 1);
    assert.equal(await inferMain(["--base", SD, "--image", CONTROL, "--prompt", "p", "--steps", "0"], { tokenizer: tinyTokenizer }), 2); // a usage error, before loading
    assert.equal(await inferMain(["--base", SD, "--image", CONTROL, "--prompt", "p", "--steps", "2", "--output", out, "--backend", engineInfo()!.backend], { tokenizer: tinyTokenizer }), 0);
  } finally {
    process.stderr.write = quiet;
  }
  assert.equal((await sharp(out).metadata()).width, 32);
  // a size no engine here can generate is refused before any work (it filled 15 GB and never finished)
  const said: string[] = [];
  process.stderr.write = ((s: string) => (said.push(String(s)), true)) as typeof process.stderr.write;
  const started = Date.now();
  try {
    const huge = path.join(dir, "huge.png");
    assert.equal(await inferMain(["--base", SD, "--image", CONTROL, "--prompt", "p", "--steps", "1", "--height", "16384", "--width", "16384", "--output", huge], { tokenizer: tinyTokenizer }), 1);
    assert.ok(!fs.existsSync(huge));
  } finally {
    process.stderr.write = quiet;
  }
  assert.ok(Date.now() - started < 10_000, `refused up front (${Date.now() - started} ms)`);
  assert.match(said.join(""), /controlnet-ts infer: generating 2 latent\(s\) at 16384×16384 needs at least ~\d+\.\d GB, more than the engine's \d+\.\d GB; give a smaller height and width .*Nothing was generated\./);
});

test("infer onto a full disk: the image already there stays whole, the message names the file, no temporary is left", async (t) => {
  await testEngine();
  const mnt = tempDir("infer-full-");
  const m = spawnSync("mount", ["-t", "tmpfs", "-o", "size=64k", "tmpfs", mnt], { encoding: "utf8" });
  if (m.status !== 0) {
    t.skip(`cannot mount a tmpfs here (${(m.stderr || "").trim()}): needs root`);
    return;
  }
  const errors: string[] = [];
  const write = process.stderr.write;
  process.stderr.write = ((s: string) => (errors.push(String(s)), true)) as typeof process.stderr.write;
  try {
    const out = path.join(mnt, "keep.png");
    const args = ["--base", SD, "--image", CONTROL, "--prompt", "p", "--steps", "1", "--output", out, "--backend", engineInfo()!.backend];
    assert.equal(await inferMain(args, { tokenizer: tinyTokenizer }), 0);
    const kept = fs.readFileSync(out);
    assert.throws(() => fs.writeFileSync(path.join(mnt, "filler"), Buffer.alloc(1 << 20)), /ENOSPC/);
    errors.length = 0;
    assert.equal(await inferMain([...args, "--seed", "7"], { tokenizer: tinyTokenizer }), 1);
    assert.deepEqual(fs.readFileSync(out), kept, "the earlier image is untouched");
    assert.match(errors.join(""), new RegExp(`controlnet-ts infer: no space left on the device while writing ${mnt}/keep\\.png:`));
    assert.deepEqual(fs.readdirSync(mnt).sort(), ["filler", "keep.png"]);
  } finally {
    process.stderr.write = write;
    spawnSync("umount", [mnt]);
  }
});
