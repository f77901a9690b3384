/** The cell helpers as a notebook calls them (here without a kernel: text display), on the tiny reference SD. */
import { before, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import sharp from "sharp";
import * as cn from "../../lib/index.js";
import { maxFolderDiff, testEngine, tempDir } from "../helpers.js";
import { isDisposed } from "../../lib/cells/runs.js";
import { installFakeBridge } from "../widgets/fakes.js";

const sd = path.resolve(import.meta.dirname, "../fixtures/sd_tiny");
const cond = path.resolve(import.meta.dirname, "../../data/conditioning_image_1.png");

before(async () => {
  await testEngine();
});

test("dataset → baseModel → controlnet → train({until}) is idempotent, continues, and validates", async () => {
  const out = tempDir("cells-");
  const ds = await cn.dataset({ synthetic: { count: 8 }, resolution: 32 });
  assert.equal(await cn.dataset({ synthetic: { count: 8 }, resolution: 32 }), ds, "same arguments → cached");
  const bundle = (ds as unknown as Record<symbol, () => Record<string, string>>)[Symbol.for("Jupyter.display")]!();
  assert.match(bundle["text/html"]!, /<img/);
  const base = await cn.baseModel(sd);
  const controlnet = await cn.controlnet({ from: base });
  const opts = { base, controlnet, dataset: ds, outputDir: out, batchSize: 2, learningRate: 1e-4, checkpointing: { every: 2, totalLimit: 1 } };
  const r1 = await cn.train({ ...opts, until: 2 });
  assert.equal(r1.globalStep, 2);
  const r2 = await cn.train({ ...opts, until: 2 });
  assert.equal(r2.globalStep, 2, "a finished cell does nothing");
  const r3 = await cn.train({ ...opts, until: 3 });
  assert.equal(r3.globalStep, 3, "raising until continues");
  assert.ok(fs.existsSync(path.join(out, "checkpoint-2", "checkpoint.json")));
  const v = await cn.validate({ base, controlnet, images: [cond], prompts: ["red circle with blue background"], steps: 2, outputDir: out });
  assert.equal(v.pairs.length, 1);
  assert.ok(fs.existsSync(v.pairs[0]!.files[0]!));
  // a fill50k-style pair (outline image + "<colour> circle with <colour> background") is scored for control fidelity
  assert.ok(v.fidelity && v.fidelity.count === v.pairs[0]!.samples.length, `fidelity ${JSON.stringify(v.fidelity)}`);
  assert.ok(v.fidelity.iou >= 0 && v.fidelity.iou <= 1 && v.fidelity.colorScore >= 0 && v.fidelity.colorScore <= 1);
  const saved = cn.save(controlnet, path.join(out, "final"));
  assert.ok(fs.existsSync(path.join(saved, "diffusion_pytorch_model.safetensors")));
  // with save_model_card's card, as the command line writes it: the base as the cell named it, how it was trained
  const card = fs.readFileSync(path.join(saved, "README.md"), "utf8");
  assert.match(card, new RegExp(`^---\nbase_model: ${sd.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}\nlibrary_name: diffusers\n`));
  assert.match(card, /: 3 steps, batch 2 × 1 accumulation, learning rate 0\.0001, resolution 32\./);
  assert.equal(cn.trainedSteps(saved), 3);
  await cn.resetTraining();
  // the model still knows its steps after its trainer is closed
  assert.equal(cn.trainedSteps(cn.save(controlnet, path.join(out, "final-2"))), 3);
  // a ControlNet saved as made: a card that says so (0 steps), not another model's numbers
  const fresh = await cn.controlnet({ from: base, seed: 9 });
  assert.equal(cn.trainedSteps(cn.save(fresh, path.join(out, "untrained"))), 0);
  assert.equal(cn.trainedSteps(path.join(out, "checkpoint-2")), null, "no card, no number");
});

test("a closed trainer frees its optimizer's state: re-run train() cells do not pile up tensors", async () => {
  const out = tempDir("cells-free-");
  try {
    const ds = await cn.dataset({ synthetic: { count: 8 }, resolution: 32 });
    const base = await cn.baseModel(sd);
    const controlnet = await cn.controlnet({ from: base, seed: 21 });
    await cn.resetTraining();
    const live = () => cn.tf.memory().numTensors;
    const before = live();
    for (const [i, lr] of [1e-4, 2e-4, 3e-4].entries()) {
      // another learning rate: "options changed — starting a new trainer", which closes the last one
      await cn.train({ base, controlnet, dataset: ds, outputDir: out, batchSize: 2, learningRate: lr, until: 2 + i });
    }
    await cn.resetTraining();
    // (each trainer held AdamW's m and v per parameter: 2 × the ControlNet's tensors per closed trainer)
    assert.equal(live(), before);
  } finally {
    await cn.resetTraining();
  }
});

test("baseModel(): one folder however spelled; the cell run again with another base frees the old one, which is then refused in one line", async () => {
  const tmp = tempDir("cells-base-");
  const fake = installFakeBridge();
  try {
    for (const n of ["a", "b"]) fs.cpSync(sd, path.join(tmp, n), { recursive: true });
    fake.cell = "base-cell";
    const a = await cn.baseModel(path.join(tmp, "a"));
    // (the same cell run again, spelled otherwise; another cell holding `a` would keep it alive)
    assert.equal(await cn.baseModel(path.join(tmp, "a") + "/"), a, "a trailing slash is the same folder");
    assert.equal(await cn.baseModel(path.relative(process.cwd(), path.join(tmp, "a"))), a, "a relative path is the same folder");
    fake.cell = "other-cell";
    const ds = await cn.dataset({ synthetic: { count: 8 }, resolution: 32 });
    const controlnet = await cn.controlnet({ from: a, seed: 31 });
    await cn.train({ base: a, controlnet, dataset: ds, outputDir: path.join(tmp, "run"), batchSize: 2, until: 1 });
    const live = cn.tf.memory().numTensors;
    fake.cell = "base-cell";
    const b = await cn.baseModel(path.join(tmp, "b"));
    assert.notEqual(b, a);
    // (a's unet, vae and text encoder freed: the new base's tensors replace them, and a's trainer was closed)
    assert.ok(cn.tf.memory().numTensors < live, `${cn.tf.memory().numTensors} tensors, ${live} before`);
    assert.ok(fs.existsSync(path.join(tmp, "run", "checkpoint-1")), "the trainer on the freed base checkpointed its step");
    await assert.rejects(cn.train({ base: a, controlnet, dataset: ds, outputDir: path.join(tmp, "run"), batchSize: 2, until: 2 }),
      /^ArgsError: train: this base model's weights were freed when the baseModel\(\) cell ran again with other arguments; pass the base that cell returns now\.$/m);
    await assert.rejects(cn.validate({ base: a, controlnet, images: [cond], prompts: ["p"], steps: 1 }), /^ArgsError: validate: this base model's weights were freed/m);
    assert.equal((await cn.train({ base: b, controlnet, dataset: ds, outputDir: path.join(tmp, "run"), batchSize: 2, until: 2 })).globalStep, 2);
  } finally {
    fake.uninstall();
    await cn.resetTraining();
  }
});

test("cell options out of range are one line naming the option: resolution, an empty dataset, an empty base name, the control mode", async () => {
  await assert.rejects(cn.dataset({ synthetic: { count: 10 }, resolution: 33 }), /^ArgsError: dataset: resolution must be a positive multiple of 8, got 33$/m);
  await assert.rejects(cn.dataset({ synthetic: { count: 0 }, resolution: 32 }), /^ArgsError: dataset: synthetic\.count must be a positive integer, got 0$/m);
  await assert.rejects(cn.baseModel(""), /^ArgsError: baseModel: give a diffusers pipeline folder or a hub id/m);
  await assert.rejects(cn.dataset({ trainDataDir: path.join(os.tmpdir(), "no-such-dataset-dir"), resolution: 32 }), (e: Error) => (e as { inputError?: boolean }).inputError === true && /dataset path not found/.test(e.message));
  const base = await cn.baseModel(sd);
  const controlnet = await cn.controlnet({ from: base });
  for (const resolution of [30, 0, -8]) {
    await assert.rejects(cn.infer({ base, controlnet, image: cond, prompt: "p", steps: 1, resolution }), new RegExp(`^ArgsError: infer: resolution must be a positive multiple of 8, got ${resolution}$`, "m"));
  }
  await assert.rejects(cn.infer({ base, controlnet, image: cond, prompt: "p", steps: 1, resolution: 32, outputDir: os.tmpdir(), controlMode: "bogus" as "balanced" }),
    (e: Error) => (e as { inputError?: boolean }).inputError === true && /unknown control mode "bogus"/.test(e.message));
});

test("train({useEma}): validate() and save() use the weights' average, training goes on from the live weights", async () => {
  const out = tempDir("cells-ema-");
  try {
    const ds = await cn.dataset({ synthetic: { count: 8 }, resolution: 32 });
    const base = await cn.baseModel(sd);
    const controlnet = await cn.controlnet({ from: base, seed: 5 });
    await cn.train({ base, controlnet, dataset: ds, outputDir: out, batchSize: 2, learningRate: 1e-3, useEma: true, checkpointing: { every: 3 }, until: 3 });
    await cn.validate({ base, controlnet, images: [cond], prompts: ["red circle with blue background"], steps: 2, outputDir: out });
    const avg = cn.save(controlnet, path.join(out, "average"));
    // the trainer's checkpoint holds its average in controlnet_ema/: the cell saved exactly that
    assert.equal(maxFolderDiff(avg, path.join(out, "checkpoint-3", "controlnet_ema")), 0);
    // the model's own weights, as they are (the model's savePretrained, not the cell's save())
    let n = 0;
    const liveDiff = () => {
      const dir = path.join(out, `live-${n++}`);
      controlnet.savePretrained(dir);
      return maxFolderDiff(dir, path.join(out, "checkpoint-3", "controlnet"));
    };
    assert.equal(liveDiff(), 0, "after save() the live weights are the trained ones again");
    assert.ok(maxFolderDiff(avg, path.join(out, "checkpoint-3", "controlnet")) > 0, "the average differs from the last weights");
    // the average stays with the model when its trainer closes: save() and validate() still use it, at its step
    await cn.resetTraining();
    assert.equal(maxFolderDiff(cn.save(controlnet, path.join(out, "average-after-reset")), avg), 0);
    const v = await cn.validate({ base, controlnet, images: [cond], prompts: ["red circle with blue background"], steps: 2, outputDir: out, show: false });
    assert.equal(v.step, 3);
    assert.equal(liveDiff(), 0);
    // and training goes on from the live weights (its checkpoint), the next trainer resuming the average
    assert.equal((await cn.train({ base, controlnet, dataset: ds, outputDir: out, batchSize: 2, learningRate: 1e-3, useEma: true, checkpointing: { every: 3 }, until: 4 })).globalStep, 4);
  } finally {
    await cn.resetTraining();
  }
});

test("train() uses the dataset() cell's proportionEmptyPrompts; a re-run dataset() cell starts a new trainer, even with the same description", async () => {
  const out = tempDir("cells-ds-");
  try {
    const base = await cn.baseModel(sd);
    // a fresh ControlNet's zero convolutions leave step 1's loss independent of its seed: only the data can change it
    const firstLoss = async (proportionEmptyPrompts: number, seed: number) => {
      const ds = await cn.dataset({ synthetic: { count: 8 }, resolution: 32, proportionEmptyPrompts });
      const controlnet = await cn.controlnet({ from: base, seed });
      return (await cn.train({ base, controlnet, dataset: ds, outputDir: path.join(out, `s${seed}`), batchSize: 2, until: 1 })).lastLoss!;
    };
    const plain = await firstLoss(0, 11);
    assert.equal(await firstLoss(0, 12), plain);
    assert.notEqual(await firstLoss(1, 13), plain, "all prompts empty: another text conditioning, another loss");

    const lines: string[] = [];
    const log = console.log;
    console.log = (...a: unknown[]) => void lines.push(a.join(" "));
    try {
      const ds = await cn.dataset({ synthetic: { count: 8 }, resolution: 32, proportionEmptyPrompts: 0.5 });
      const controlnet = await cn.controlnet({ from: base, seed: 13 });
      assert.equal((await cn.train({ base, controlnet, dataset: ds, outputDir: path.join(out, "s13"), batchSize: 2, until: 2 })).globalStep, 2);
      assert.ok(lines.some((l) => l.startsWith("train: options changed")), lines.join("\n"));
    } finally {
      console.log = log;
    }
  } finally {
    await cn.resetTraining();
  }
});

test("issue 25 #4/#5: train() refuses learningRate -1 and an empty validation image before any step (the CLI's checks)", async () => {
  const out = tempDir("cells-bad-");
  try {
    const ds = await cn.dataset({ synthetic: { count: 8 }, resolution: 32 });
    const base = await cn.baseModel(sd);
    const controlnet = await cn.controlnet({ from: base });
    // in the cell's own option names
    await assert.rejects(cn.train({ base, controlnet, dataset: ds, outputDir: out, batchSize: 2, learningRate: -1, until: 1 }), /^ArgsError: train: learningRate must be >= 0 and finite \(PyTorch's AdamW refuses other values\), got -1$/m);
    // the checks the CLI makes that only a cell's own options reach (a total limit of 0 trained a step, then failed
    // to save it; validation every 0 steps never validated; a negative until returned as done)
    const ok = { base, controlnet, dataset: ds, outputDir: out, batchSize: 2, learningRate: 1e-4 };
    await assert.rejects(cn.train({ ...ok, until: 1, checkpointing: { every: 1, totalLimit: -1 } }), /train: checkpointing\.totalLimit must be an integer >= 0/);
    await assert.rejects(cn.train({ ...ok, until: 1, validation: { images: [cond], prompts: ["x"], every: 0 } }),
      /train: validation\.every must be a positive integer, got 0/);
    await assert.rejects(cn.train({ ...ok, until: -3 }), /train: until must be an integer >= 0, got -3/);
    await assert.rejects(cn.train({ ...ok, until: 1, gradientAccumulationSteps: 99999999999 }), /train: gradientAccumulationSteps must be a positive integer, at most 1048576/);
    const empty = path.join(out, "empty.png");
    fs.writeFileSync(empty, "");
    await assert.rejects(
      cn.train({ base, controlnet, dataset: ds, outputDir: out, batchSize: 2, learningRate: 1e-4, until: 1, validation: { images: [empty], prompts: ["x"], every: 1 } }),
      /validation image .*empty\.png is empty/,
    );
    assert.deepEqual(fs.readdirSync(out).filter((f) => f.startsWith("checkpoint-") || f === "logs"), [], "no step was taken");
    // a refused option leaves a running trainer as it was (it was closed first: "options changed — starting a new trainer")
    const lines: string[] = [];
    const log = console.log;
    console.log = (...a: unknown[]) => { lines.push(a.join(" ")); };
    try {
      assert.equal((await cn.train({ ...ok, until: 1 })).globalStep, 1);
      await assert.rejects(cn.train({ ...ok, until: 2, learningRate: Number.NaN }), /train: learningRate must be >= 0 and finite .*, got NaN/);
      await assert.rejects(cn.train({ ...ok, until: 2, lrScheduler: "cosin" }), /^ArgsError: train: lrScheduler 'cosin' is not a valid scheduler; choose from linear, cosine,/m);
      assert.equal((await cn.train({ ...ok, until: 2 })).globalStep, 2);
    } finally {
      console.log = log;
    }
    assert.deepEqual(lines.filter((l) => /options changed|closing the trainer/.test(l)), [], lines.join("\n"));
    // a decaying schedule with no planned length would barely decay: the cell says so (and trains)
    lines.length = 0;
    console.log = (...a: unknown[]) => { lines.push(a.join(" ")); };
    try {
      await cn.train({ ...ok, until: 2, lrScheduler: "linear" });
      await cn.train({ ...ok, until: 2, lrScheduler: "linear", maxTrainSteps: 10 });
    } finally {
      console.log = log;
    }
    assert.equal(lines.filter((l) => /lrScheduler "linear" decays over maxTrainSteps, which is not set: it spans 1,000,000 steps/.test(l)).length, 1, lines.join("\n"));
  } finally {
    await cn.resetTraining();
  }
});

test("train() knows which ControlNet it trains: the same object continues, another model is its own run, a freed one is refused", async () => {
  const out = tempDir("cells-runs-");
  const lines: string[] = [];
  const log = console.log;
  console.log = (...a: unknown[]) => { lines.push(a.join(" ")); };
  try {
    const ds = await cn.dataset({ synthetic: { count: 8 }, resolution: 32 });
    const base = await cn.baseModel(sd);
    const opts = { base, dataset: ds, outputDir: out, batchSize: 2, learningRate: 1e-4, checkpointing: { every: 100 } };
    // as JupyterLab runs them: each execute_request names its cell (metadata cellId)
    const inCell = async <T>(cell: string, run: () => Promise<T>): Promise<T> => {
      const fake = installFakeBridge();
      fake.cell = cell;
      try {
        return await run();
      } finally {
        fake.uninstall();
      }
    };
    const a = await inCell("model-cell", () => cn.controlnet({ from: base, seed: 11 }));
    const ra = await cn.train({ ...opts, controlnet: a, until: 2 });
    assert.equal(ra.globalStep, 2);
    assert.equal(ra.outputDir, out);
    assert.match(fs.readFileSync(path.join(out, "controlnet_run.json"), "utf8"), /seed=11/);

    // a ControlNet made in another cell: a stays usable (and is not checkpointed away)
    const other = await inCell("another-cell", () => cn.controlnet({ from: base, seed: 13 }));
    assert.notEqual(other, a);
    assert.ok(!fs.existsSync(path.join(out, "checkpoint-2")), "a is still training in this kernel");
    // a second ControlNet (the cell re-run with another seed): model a is freed after a checkpoint of its 2 steps
    const b = await inCell("model-cell", () => cn.controlnet({ from: base, seed: 12 }));
    assert.notEqual(b, a);
    assert.ok(fs.existsSync(path.join(out, "checkpoint-2", "checkpoint.json")), "the replaced model's unsaved steps were checkpointed");
    assert.equal(other.numParameters(), b.numParameters(), "the other cell's model is untouched");
    assert.ok(!isDisposed(other) && isDisposed(a));
    lines.length = 0;
    const rb = await cn.train({ ...opts, controlnet: b, until: 1 });
    assert.equal(rb.globalStep, 1, "the new model trains from step 0, not 'already at step 2'");
    assert.equal(rb.outputDir, `${out}-2`, "its own run folder");
    assert.ok(lines.some((l) => l.includes(`${out} holds the run of from_unet of`) && l.includes("seed 11 at step 2") && l.includes(`its own run in ${out}-2`)),
      lines.join("\n"));
    assert.ok(!lines.some((l) => /Resuming from checkpoint/.test(l)), "no other model's checkpoint is loaded");

    // the freed model gets one clear line, not "parameter 'weight' has no value"
    await assert.rejects(cn.train({ ...opts, controlnet: a, until: 3 }), /^ArgsError: train: this ControlNet's weights were freed when the controlnet\(\) cell ran again/);
    // and so do validate(), infer() and save()
    const img = (await cn.heldOut({ count: 1, resolution: 32, dir: path.join(out, "held") })).images[0]!;
    await assert.rejects(cn.validate({ base, controlnet: a, images: [img], prompts: ["x"], steps: 1 }), /^ArgsError: validate: this ControlNet's weights were freed/);
    await assert.rejects(cn.infer({ base, controlnet: a, image: img, prompt: "x", steps: 1 }), /^ArgsError: infer: this ControlNet's weights were freed/);
    assert.throws(() => cn.save(a, path.join(out, "saved")), /^ArgsError: save: this ControlNet's weights were freed/);

    // resetTraining keeps b's unsaved step (checkpoint) and the same object continues from it in its own folder
    await cn.resetTraining();
    assert.ok(fs.existsSync(path.join(`${out}-2`, "checkpoint-1", "checkpoint.json")));
    lines.length = 0;
    const rb2 = await cn.train({ ...opts, controlnet: b, until: 2 });
    assert.equal(rb2.globalStep, 2);
    assert.equal(rb2.outputDir, `${out}-2`);
    assert.ok(lines.some((l) => l === "Resuming from checkpoint checkpoint-1"), lines.join("\n"));

    // as after a kernel restart: an equal model made again (seed 11) finds its own run and resumes it
    cn.forget("controlnet");
    await cn.resetTraining();
    const a2 = await cn.controlnet({ from: base, seed: 11 });
    lines.length = 0;
    const ra2 = await cn.train({ ...opts, controlnet: a2, until: 3 });
    assert.equal(ra2.outputDir, out);
    assert.equal(ra2.globalStep, 3);
    assert.ok(lines.some((l) => l === "Resuming from checkpoint checkpoint-2"), lines.join("\n"));
    // and b, made again, finds the folder it moved to
    cn.forget("controlnet");
    await cn.resetTraining();
    const b2 = await cn.controlnet({ from: base, seed: 12 });
    const rb3 = await cn.train({ ...opts, controlnet: b2, until: 2 });
    assert.equal(rb3.outputDir, `${out}-2`);
    assert.equal(rb3.globalStep, 2, "resumed at step 2 of its own run");
    // the same object in another folder would restart its step count (and going back would roll its weights back)
    await assert.rejects(cn.train({ ...opts, controlnet: b2, until: 4, outputDir: `${out}-elsewhere` }),
      new RegExp(`^ArgsError: train: this ControlNet trains in ${out}-2 \\(step 2\\); its weights carry that run's steps`));
    assert.ok(!fs.existsSync(`${out}-elsewhere`), "nothing written there");
  } finally {
    console.log = log;
    await cn.resetTraining();
    fs.rmSync(`${out}-2`, { recursive: true, force: true });
  }
});

test("dataset grid: one row per sample with its prompt; dashboard: the planner's predicted peak, a resumed step plotted once", async () => {
  const { installFakeBridge } = await import("../widgets/fakes.js");
  const fake = installFakeBridge();
  const out = tempDir("cells-dash-");
  try {
    const ds = await cn.dataset({ synthetic: { count: 8, seed: 3 }, resolution: 32 });
    const html = (ds as unknown as Record<symbol, () => Record<string, string>>)[Symbol.for("Jupyter.display")]!()["text/html"]!;
    const captions = [...html.matchAll(/<figcaption[^>]*>([^<]*)<\/figcaption>/g)].map((m) => m[1]);
    assert.equal(captions.length, 8, "a caption under each sample's own images");
    const first = (await ds.preview(0)).text as string;
    assert.equal(captions[0], first);
    assert.match(html, new RegExp(`alt="conditioning: ${first}"`));

    const base = await cn.baseModel(sd);
    const controlnet = await cn.controlnet({ from: base, seed: 21 });
    const held = await cn.heldOut({ count: 1, resolution: 32, dir: path.join(out, "held") });
    const opts = { base, controlnet, dataset: ds, outputDir: out, batchSize: 2, learningRate: 1e-4, checkpointing: { every: 2 } };
    await cn.train({ ...opts, until: 3, validation: { ...held, every: 2, steps: 1 } }); // fidelity measured at step 2
    await cn.resetTraining(); // writes checkpoint-3
    fs.rmSync(path.join(out, "checkpoint-3"), { recursive: true });
    await cn.train({ ...opts, until: 4 }); // resumes at 2: step 3 again (the log drops the old line: issue 25 #11)
    const logged = fs.readFileSync(path.join(out, "logs", "train_log.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l).step);
    assert.deepEqual(logged, [1, 2, 3, 4], "each step once in the log");
    fake.calls.length = 0;
    await cn.train({ ...opts, until: 5 });
    const plots = fake.calls.map((c) => c.bundle["application/vnd.plotly.v1+json"] as { data: { name: string; x: number[] }[] } | undefined).filter((p) => p);
    const raw = plots.at(-1)!.data.find((t) => t.name === "loss (raw)" || t.name === "loss")!;
    assert.deepEqual(raw.x, [1, 2, 3, 4, 5], "each step once");
    // the fidelity measured before the resumes is plotted again (it was kept in memory only)
    const fid = plots.at(-1)!.data.find((t) => /fidelity/.test(t.name));
    assert.deepEqual(fid?.x, [2], JSON.stringify(plots.at(-1)!.data.map((t) => t.name)));
    const meter = fake.calls.map((c) => String(c.bundle["text/plain"] ?? "")).filter((t) => t.startsWith("memory")).at(-1)!;
    assert.match(meter, /peak \(predicted\) \d[\d.]* [KMG]iB/, meter);
    // the measured peak is the steps' (activations, gradients: ~46 MiB here), well above what stays allocated between them
    const mib = (label: string) => {
      const m = new RegExp(`${label} (\\d[\\d.]*) ([KMG])iB`).exec(meter)!;
      return Number(m[1]) * { K: 1 / 1024, M: 1, G: 1024 }[m[2] as "K" | "M" | "G"];
    };
    assert.ok(mib("peak \\(measured\\)") - mib("live tensors") > 20, meter);
  } finally {
    fake.uninstall();
    await cn.resetTraining();
  }
});

test("heldOut + validate(): scored outlines, each prompt under its own conditioning and sample; infer is titled inference", async () => {
  const out = tempDir("cells-heldout-");
  const base = await cn.baseModel(sd);
  const controlnet = await cn.controlnet({ from: base, seed: 31 });
  const held = await cn.heldOut({ count: 3, resolution: 32, dir: path.join(out, "held") });
  assert.equal(held.images.length, 3);
  assert.ok(held.images.every((f) => fs.existsSync(f)));
  assert.match(held.prompts[0]!, /circle with .* background/);
  const v = await cn.validate({ base, controlnet, ...held, steps: 2, guidanceScale: 1.5, conditioningScale: 2, controlMode: "controlnet", title: "before training", outputDir: out });
  assert.equal(v.fidelity!.count, 3);
  const html = (v as unknown as Record<symbol, () => Record<string, string>>)[Symbol.for("Jupyter.display")]!()["text/html"]!;
  assert.match(html, /before training — control fidelity: IoU \d\.\d{3}/);
  const figures = html.split("<figure").slice(1);
  assert.equal(figures.length, 3);
  figures.forEach((f, i) => {
    assert.equal((f.match(/<img/g) ?? []).length, 2, "conditioning and sample");
    assert.ok(f.includes(`<figcaption`) && f.includes(held.prompts[i]!), "its own prompt");
  });
  const inf = await cn.infer({ base, controlnet, image: cond.replace(/\.png$/, "_32px.png"), prompt: "red circle with blue background", steps: 2, outputDir: out });
  const infHtml = (inf as unknown as Record<symbol, () => Record<string, string>>)[Symbol.for("Jupyter.display")]!()["text/html"]!;
  assert.match(infHtml, />inference/);
  assert.doesNotMatch(infHtml, /validation \(step 0\)/);
  // as the seed's snippet: at the image's own size (floored to the VAE factor), no crop (it was cropped to the base's
  // resolution); each call its own file (the second overwrote the first)
  const odd = path.join(out, "odd.png");
  await sharp({ create: { width: 50, height: 37, channels: 3, background: { r: 0, g: 0, b: 255 } } }).png().toFile(odd);
  const own = await cn.infer({ base, controlnet, image: odd, prompt: "red circle with blue background", steps: 1, outputDir: out });
  assert.deepEqual([own.pairs[0]!.rgb[0]!.width, own.pairs[0]!.rgb[0]!.height], [50, 36]); // the test base's VAE factor: 2
  assert.deepEqual([inf.pairs[0]!.files, own.pairs[0]!.files], [[path.join(out, "image-0.png")], [path.join(out, "image-1.png")]]);
  assert.ok(own.pairs[0]!.files.concat(inf.pairs[0]!.files).every((f) => fs.existsSync(f)));
});

test("pushToHub(): the run folder without its checkpoints, logs, validation rounds, run record (a local path) and lock", async () => {
  const { HubServer } = await import("../io/hub-server.js");
  const server = await new HubServer().start();
  const dir = tempDir("cells-push-");
  const token = process.env.HF_TOKEN;
  try {
    server.addUser("hf_cellstoken", "alice");
    process.env.HF_TOKEN = "hf_cellstoken";
    for (const f of ["config.json", "diffusion_pytorch_model.safetensors", "controlnet_run.json", ".controlnet-ts.lock", "logs/train_log.jsonl",
      "checkpoint-2/checkpoint.json", "validation/step_2.png"]) {
      fs.mkdirSync(path.dirname(path.join(dir, f)), { recursive: true });
      fs.writeFileSync(path.join(dir, f), "{}");
    }
    await cn.pushToHub(dir, { repo: "alice/cn", hubUrl: server.url });
    const files = [...server.filesAt("alice/cn")!.keys()].filter((f) => f !== ".gitattributes").sort();
    assert.deepEqual(files, ["config.json", "diffusion_pytorch_model.safetensors"]);
  } finally {
    if (token === undefined) delete process.env.HF_TOKEN;
    else process.env.HF_TOKEN = token;
    await server.close();
  }
});

test("cells refuse what cannot work in one line, before doing anything: save() into a checkpoint or nowhere, validation images that do not pair or do not exist, heldOut of nothing", async () => {
  const out = tempDir("cells-refuse-");
  try {
    const ds = await cn.dataset({ synthetic: { count: 8 }, resolution: 32 });
    const base = await cn.baseModel(sd);
    const controlnet = await cn.controlnet({ from: base, seed: 21 });
    await cn.train({ base, controlnet, dataset: ds, outputDir: out, batchSize: 2, checkpointing: { every: 1 }, until: 1 });
    const ck = path.join(out, "checkpoint-1");
    const before = fs.readdirSync(path.join(ck, "controlnet")).sort();
    assert.throws(() => cn.save(controlnet, path.join(ck, "controlnet")), /^ArgsError: save: .*checkpoint-1 is a training checkpoint; save to a folder of its own/);
    assert.throws(() => cn.save(controlnet, ck), /is a training checkpoint/);
    assert.deepEqual(fs.readdirSync(path.join(ck, "controlnet")).sort(), before, "the checkpoint is untouched");
    assert.throws(() => cn.save(controlnet, ""), /^ArgsError: save: the folder is empty/);
    // two images, three prompts: refused before training (it used to train a step, then fail at the first round)
    await assert.rejects(cn.train({ base, controlnet, dataset: ds, outputDir: out, batchSize: 2, until: 3,
      validation: { images: [cond, cond], prompts: ["a", "b", "c"], every: 1 } }), /^ArgsError: train: validation: number of validation images \(2\) and prompts \(3\) must match/);
    assert.equal(cn.trainedSteps(cn.save(controlnet, path.join(out, "saved"))), 1, "no step was trained by the refused cell");
    await assert.rejects(cn.validate({ base, controlnet, images: [], prompts: [] }), /^ArgsError: validate: give at least one image and one prompt/);
    await assert.rejects(cn.validate({ base, controlnet, images: [path.join(out, "nope.png")], prompts: ["x"] }), /^InputError: validate: image .*nope\.png cannot be read \(no such file\); nothing was generated$/m);
    await assert.rejects(cn.infer({ base, controlnet, image: path.join(out, "nope.png"), prompt: "x" }), /^InputError: infer: conditioning image .*nope\.png cannot be read \(no such file\); nothing was generated$/m);
    await assert.rejects(cn.validate({ base, controlnet, images: [cond], prompts: ["x"], guidanceScale: Number.NaN }), /^ArgsError: validate: guidanceScale must be a finite number, got NaN/);
    await assert.rejects(cn.infer({ base, controlnet, image: cond, prompt: "x", steps: 0 }), /^ArgsError: infer: steps must be an integer >= 1, got 0/);
    await assert.rejects(cn.heldOut({ count: -1, resolution: 32 }), /^ArgsError: heldOut: count must be a positive integer, got -1/);
    await assert.rejects(cn.heldOut({ resolution: 0 }), /^ArgsError: heldOut: resolution must be a positive multiple of 8, got 0/);
  } finally {
    await cn.resetTraining();
  }
});
