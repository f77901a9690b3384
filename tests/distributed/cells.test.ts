/**
 * The notebook cell train({ processes: 2 }): worker processes train, the cell's ControlNet receives their weights,
 * and an in-process train() afterwards continues from their checkpoint; an interrupt (the kernel's abort signal)
 * stops every process at one step with a checkpoint while the cell's dashboard keeps updating.
 */
import { before, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import * as cn from "../../lib/index.js";
import { testEngine, tempDir } from "../helpers.js";
import { failureLine } from "../../lib/cells/processes.js";
import { listCheckpoints } from "../../lib/training/checkpoints.js";
import { installFakeBridge } from "../widgets/fakes.js";
import { freePorts, maxWeightDiff, root, skipReason } from "./helpers.js";

const skip = skipReason();

before(async () => {
  if (!skip) await testEngine();
});

function weights(model: cn.ControlNetModel): Map<string, Float32Array> {
  return new Map([...model.namedParameters()].map(([n, p]) => [n, p.variable.dataSync() as Float32Array]));
}

test("train({ processes: 2 }) trains in worker processes; the cell's ControlNet holds their weights and trains on in-process", { skip }, async () => {
  const out = tempDir("cells-dp-");
  const ds = await cn.dataset({ synthetic: { count: 16, seed: 1 }, resolution: 32 });
  const base = await cn.baseModel(path.join(root, "tests/fixtures/sd_tiny"));
  // an architecture no train_controlnet flag expresses (the tutorial's): resumed runs must build it too
  const controlnet = await cn.controlnet({ from: base, seed: 3, conditioningEmbeddingOutChannels: [8, 24] });
  const before = weights(controlnet);
  const opts = { base, controlnet, dataset: ds, outputDir: out, batchSize: 1, learningRate: 1e-4, seed: 1, checkpointing: { every: 100 } };
  const run = (step: number) => JSON.parse(fs.readFileSync(path.join(out, `checkpoint-${step}`, "training_state.json"), "utf8")).run;
  assert.equal((await cn.train({ ...opts, until: 1, processes: 2, threadsPerProcess: 1, mainProcessPort: await freePorts(2) })).globalStep, 1);
  // the cell run again continues: the processes resume it as the same run (started from the cell's ControlNet)
  const r = await cn.train({ ...opts, until: 2, processes: 2, threadsPerProcess: 1, mainProcessPort: await freePorts(2) });
  assert.equal(r.globalStep, 2);
  assert.match(run(1).init_weights, /^pretrained /);
  assert.equal(run(2).init_weights, run(1).init_weights);
  assert.equal(r.stopped, "until");
  assert.ok(typeof r.lastLoss === "number" && Number.isFinite(r.lastLoss));
  assert.deepEqual(fs.readdirSync(out).filter((f) => f.startsWith(".controlnet-ts")), [], "the starting weights handed to the processes are removed");
  // the cell's ControlNet holds the processes' weights (compared as saved folders: the same layout on both sides)
  controlnet.savePretrained(path.join(out, "cell"));
  assert.equal(maxWeightDiff(path.join(out, "cell"), path.join(out, "checkpoint-2", "controlnet")).max, 0);
  let moved = 0;
  for (const [n, w] of weights(controlnet)) for (let i = 0; i < w.length; i++) moved = Math.max(moved, Math.abs(w[i]! - before.get(n)![i]!));
  assert.ok(moved > 5e-5, `weights moved by ${moved}`);
  const steps = fs.readFileSync(path.join(out, "logs", "train_log.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l).step);
  assert.deepEqual(steps, [1, 2]);
  // the same cell without processes continues from their checkpoint, in the same run folder
  const r2 = await cn.train({ ...opts, until: 3 });
  assert.equal(r2.globalStep, 3);
  assert.equal(r2.outputDir, out);
  const after = fs.readFileSync(path.join(out, "logs", "train_log.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l).step);
  assert.deepEqual(after, [1, 2, 3], "continued at step 3, not a fresh run of steps 1–3");
  // processes again: they resume the in-process checkpoint, as the same run (it failed: a default-architecture
  // ControlNet could not take the checkpoint's weights)
  const r2p = await cn.train({ ...opts, until: 4, processes: 2, threadsPerProcess: 1, mainProcessPort: await freePorts(2) });
  assert.equal(r2p.globalStep, 4);
  // (the in-process cell records no starting ControlNet: its run is its model object)
  assert.equal(run(4).init_weights, run(3).init_weights, "the run the processes resumed, not a new starting ControlNet");
  // another ControlNet with processes is its own run (as in process): it never resumes this one's checkpoint
  const other = await cn.controlnet({ from: base, seed: 4 });
  const r3 = await cn.train({ ...opts, controlnet: other, until: 1, processes: 2, threadsPerProcess: 1, mainProcessPort: await freePorts(2) });
  assert.equal(r3.outputDir, `${out}-2`);
  assert.equal(r3.globalStep, 1);
  assert.deepEqual(listCheckpoints(out).map((c) => c.step).at(-1), 4, "the first run's checkpoints are untouched");
  fs.rmSync(`${out}-2`, { recursive: true, force: true });
});

test("a failed launch from a cell names the worker's reason first, then the launcher's summary", () => {
  const stderr = [
    "launch: 2 process(es) of 2 on this machine: rank 0 pid 1, rank 1 pid 2",
    "[rank 1] train_controlnet: resume_from_checkpoint latest: /o/checkpoint-2 is another run's (global batch 1 there, 2 here)",
    "launch: error: process 1 (pid 2) exited with code 2; stopped the other process(es): its arguments were refused (the error above); nothing was trained by this launch",
  ].join("\n");
  assert.equal(failureLine(stderr, 1),
    "train_controlnet: resume_from_checkpoint latest: /o/checkpoint-2 is another run's (global batch 1 there, 2 here) — " +
    "launch: error: process 1 (pid 2) exited with code 2; stopped the other process(es): its arguments were refused (the error above); nothing was trained by this launch");
  assert.equal(failureLine("launch: error: port 1 is already in use\n", 1), "launch: error: port 1 is already in use");
  assert.equal(failureLine("", 3), "exit code 3");
});

test("train({ processes: 2 }) in a notebook: the dashboard follows rank 0 and an interrupt stops the processes with a checkpoint", { skip }, async () => {
  const out = tempDir("cells-dp-int-");
  const bridge = installFakeBridge();
  try {
    const ds = await cn.dataset({ synthetic: { count: 16, seed: 1 }, resolution: 32 });
    const base = await cn.baseModel(path.join(root, "tests/fixtures/sd_tiny"));
    const controlnet = await cn.controlnet({ from: base, seed: 3 });
    const log = path.join(out, "logs", "train_log.jsonl");
    const logged = () => (fs.existsSync(log) ? fs.readFileSync(log, "utf8").trim().split("\n").filter(Boolean).length : 0);
    // the user interrupts once two steps are logged; the event loop stays free meanwhile (the watcher runs)
    let interruptedAt = 0;
    const watcher = setInterval(() => {
      if (!interruptedAt && logged() >= 2) {
        interruptedAt = Date.now();
        bridge.controller.abort();
      }
    }, 100);
    const r = await cn.train({ base, controlnet, dataset: ds, outputDir: out, batchSize: 1, learningRate: 1e-4, seed: 1, until: 200,
      processes: 2, threadsPerProcess: 1, mainProcessPort: await freePorts(2), checkpointing: { every: 1000 } }).finally(() => clearInterval(watcher));
    assert.ok(interruptedAt > 0, "the watcher saw two logged steps");
    const took = Date.now() - interruptedAt;
    assert.ok(took < 60_000, `the processes stopped ${took} ms after the interrupt`);
    assert.equal(r.stopped, "interrupted");
    assert.ok(r.globalStep >= 2 && r.globalStep < 200, `stopped at step ${r.globalStep}`);
    // every process stopped at the same step, and that step's checkpoint holds the cell's weights
    const ckpt = path.join(out, `checkpoint-${r.globalStep}`, "controlnet");
    assert.ok(fs.existsSync(ckpt), `checkpoint-${r.globalStep}: ${fs.readdirSync(out)}`);
    controlnet.savePretrained(path.join(out, "cell"));
    assert.equal(maxWeightDiff(path.join(out, "cell"), ckpt).max, 0);
    // the dashboard showed the processes' progress while they trained (updates of one display, not a final dump)
    const updates = bridge.calls.filter((c) => c.opts?.update).length;
    assert.ok(updates >= 2, `${updates} dashboard updates`);
    // its memory meter is rank 0's (logged with each step), not the kernel's, which trains nothing
    const shown = bridge.calls.map((c) => String(c.bundle["text/plain"] ?? "")).filter((t) => /memory \[/.test(t)).at(-1) ?? "";
    assert.match(shown, /memory \[\w+(-\w+)?, process 0 of 2\]/, shown);
    const rss = (fs.readFileSync(log, "utf8").trim().split("\n").map((l) => JSON.parse(l).memory?.rssBytes as number));
    assert.ok(rss.every((b) => b > 10 * 2 ** 20), `rank 0's RSS logged with each step: ${rss}`);
  } finally {
    bridge.uninstall();
  }
});
