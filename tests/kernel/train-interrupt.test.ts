/**
 * Interrupt over the wire during the real `cn.train` (the library's trainer on the tiny reference pipeline, not a
 * simulated loop): the kernel stops at the next step boundary and writes a checkpoint, the cell ends with
 * KeyboardInterrupt, the next cell runs, and training continues from where it stopped.
 */
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { after, before, it } from "node:test";
import type { Message } from "../../kernel/wire.js";
import { KernelClient, ofType, ROOT, streamText } from "./client.js";
import { tempDir } from "../helpers.js";

const SD_TINY = path.join(ROOT, "tests", "fixtures", "sd_tiny");
let k: KernelClient;
let cwd: string;

function resultText(iopub: Message[]): string | undefined {
  return ofType(iopub, "execute_result")[0]?.data?.["text/plain"];
}

function loggedSteps(): number[] {
  const f = path.join(cwd, "out", "logs", "train_log.jsonl");
  if (!fs.existsSync(f)) return [];
  return fs.readFileSync(f, "utf8").split("\n").filter((l) => l.trim()).map((l) => JSON.parse(l) as { step?: number })
    .filter((e) => typeof e.step === "number").map((e) => e.step!);
}

before(async () => {
  cwd = tempDir("kernel-train-");
  k = await KernelClient.start({ cwd, env: { CONTROLNET_TS_THREADS: "2" } });
  const setup = await k.execute([
    `import * as cn from "controlnet-ts";`,
    `const base: cn.BaseModel = await cn.baseModel(${JSON.stringify(SD_TINY)});`,
    `const net: cn.ControlNetModel = await cn.controlnet({ from: base });`,
    `const ds: cn.ControlNetDataset = await cn.dataset({ synthetic: { count: 32 }, resolution: 32 });`,
    `ds.length`,
  ].join("\n"), { timeoutMs: 300_000 });
  assert.equal(setup.reply.content.status, "ok", JSON.stringify(ofType(setup.iopub, "error")));
});

after(async () => {
  await k?.close();
});

it("interrupt_request during cn.train stops within one step; checkpoint written; the next cell runs; training continues", async (t) => {
  const cell = (until: number) =>
    `(await cn.train({ base: base, controlnet: net, dataset: ds, until: ${until}, batchSize: 1, learningRate: 1e-4, outputDir: "out" })).globalStep`;
  const id = k.send("shell", "execute_request", { code: cell(100_000) });
  // wait until a few steps are logged (the first step includes warm-up)
  await k.waitFor(() => loggedSteps().length >= 3, 300_000);
  assert.equal(k.hasReply(id), false, "the training cell is still running");
  const steps = loggedSteps();
  const stepsBefore = steps.length;
  const t0 = Date.now();
  const ir = await k.reply(k.send("control", "interrupt_request", {}), 30_000);
  assert.equal(ir.header.msg_type, "interrupt_reply");
  const reply = await k.reply(id, 120_000);
  const took = Date.now() - t0;
  assert.equal(reply.content.status, "error");
  assert.equal((reply.content as Record<string, unknown>).ename, "KeyboardInterrupt");
  const stoppedAt = Math.max(...loggedSteps());
  // "within one step": at most one more step finished after the interrupt arrived
  assert.ok(loggedSteps().length <= stepsBefore + 2, `steps after interrupt: ${loggedSteps().length - stepsBefore}`);
  t.diagnostic(`interrupt → KeyboardInterrupt in ${took} ms; stopped at step ${stoppedAt}`);
  // iopub and shell are separate sockets: the cell's output is complete at its idle status, not at its reply
  const text = streamText(await k.idle(id, 30_000), "stdout");
  assert.match(text, new RegExp(`interrupted at step ${stoppedAt}; checkpoint written`));
  assert.ok(fs.existsSync(path.join(cwd, "out", `checkpoint-${stoppedAt}`)), "checkpoint on disk");

  // the kernel is alive and the state intact: the next cells run, and training continues from the same step
  assert.equal(resultText((await k.execute("1 + 1")).iopub), "2");
  const more = await k.execute(cell(stoppedAt + 2), { timeoutMs: 300_000 });
  assert.equal(more.reply.content.status, "ok", JSON.stringify(ofType(more.iopub, "error")));
  assert.equal(resultText(more.iopub), String(stoppedAt + 2));
  const all = loggedSteps();
  assert.deepEqual(all.slice(-2), [stoppedAt + 1, stoppedAt + 2], "continued from the interrupted step, none repeated");
});

it("a second ControlNet in the same notebook (the controlnet cell re-run with another seed) trains as its own run", async () => {
  const train = (until: number) =>
    `(await cn.train({ base: base, controlnet: other, dataset: ds, until: ${until}, batchSize: 1, learningRate: 1e-4, outputDir: "runs" })).globalStep`;
  const first = await k.execute(`const other: cn.ControlNetModel = await cn.controlnet({ from: base, seed: 21 });\n${train(2)}`, { timeoutMs: 300_000 });
  assert.equal(first.reply.content.status, "ok", JSON.stringify(ofType(first.iopub, "error")));
  assert.equal(resultText(first.iopub), "2");
  // the same cells re-run as a user would: `other` is now a different model (seed 22)
  const again = await k.execute(`const other: cn.ControlNetModel = await cn.controlnet({ from: base, seed: 22 });\n${train(1)}`, { timeoutMs: 300_000 });
  assert.equal(again.reply.content.status, "ok", JSON.stringify(ofType(again.iopub, "error")));
  assert.equal(resultText(again.iopub), "1", "the new model trains from step 0, not 'already at step 2'");
  const said = streamText(again.iopub, "stdout");
  assert.match(said, /runs holds the run of .*seed 21 at step 2.*its own run in .*runs-2/, said);
  assert.doesNotMatch(said, /Resuming from checkpoint/, "no other model's checkpoint is loaded");
  assert.ok(fs.existsSync(path.join(cwd, "runs-2", "controlnet_run.json")), "its own run folder");
  assert.match(fs.readFileSync(path.join(cwd, "runs", "controlnet_run.json"), "utf8"), /seed=21/, "the first run's folder is left as it was");
});

it("a kernel shutdown (or restart) checkpoints the steps trained since the last checkpoint: a restart resumes where training was", async () => {
  // `other` (seed 22) trained 1 step in runs-2 and no checkpoint was due; one more step, then the kernel shuts down
  const more = await k.execute(`(await cn.train({ base: base, controlnet: other, dataset: ds, until: 2, batchSize: 1, learningRate: 1e-4, outputDir: "runs" })).globalStep`, { timeoutMs: 300_000 });
  assert.equal(resultText(more.iopub), "2", JSON.stringify(ofType(more.iopub, "error")));
  assert.deepEqual(fs.readdirSync(path.join(cwd, "runs-2")).filter((f) => f.startsWith("checkpoint-")), []);
  const r = await k.reply(k.send("control", "shutdown_request", { restart: true }));
  assert.equal(r.header.msg_type, "shutdown_reply");
  const code = await Promise.race([k.exited, new Promise((res) => setTimeout(() => res("still running"), 60_000))]);
  assert.equal(code, 0, k.stderrText.join("").slice(-2000));
  assert.ok(fs.existsSync(path.join(cwd, "runs-2", "checkpoint-2", "controlnet")), `checkpoint-2 on shutdown: ${fs.readdirSync(path.join(cwd, "runs-2"))}`);
});

it("a shutdown while train() runs stops it at a step boundary and keeps one complete checkpoint of that step (none written twice)", async () => {
  const dir = tempDir("kernel-train-stop-");
  // no grace: the kernel stops waiting for the cell at once, while train() is still on its way to the step boundary and
  // its checkpoint (a real model's step or checkpoint outlasts the 5 s grace): the shutdown must wait for it
  const kk = await KernelClient.start({ cwd: dir, env: { CONTROLNET_TS_THREADS: "2", CONTROLNET_TS_INTERRUPT_GRACE_MS: "1" } });
  const id = kk.send("shell", "execute_request", { code: [
    `import * as cn from "controlnet-ts";`,
    `const base = await cn.baseModel(${JSON.stringify(SD_TINY)});`,
    `const net = await cn.controlnet({ from: base });`,
    `const ds = await cn.dataset({ synthetic: { count: 16 }, resolution: 32 });`,
    `await cn.train({ base, controlnet: net, dataset: ds, until: 100000, batchSize: 1, learningRate: 1e-4, outputDir: "out" });`,
  ].join("\n") });
  const log = path.join(dir, "out", "logs", "train_log.jsonl");
  await kk.waitFor(() => fs.existsSync(log) && fs.readFileSync(log, "utf8").trim().split("\n").length >= 2, 300_000);
  await kk.reply(kk.send("control", "shutdown_request", { restart: true }));
  const code = await Promise.race([kk.exited, new Promise((res) => setTimeout(() => res("still running"), 60_000))]);
  assert.equal(code, 0, kk.stderrText.join("").slice(-2000));
  assert.equal(kk.hasReply(id), true, "the training cell was answered (interrupted) before the kernel ended");
  const { listCheckpointDirs, listCheckpoints } = await import("../../lib/training/checkpoints.js");
  const all = listCheckpointDirs(path.join(dir, "out"));
  assert.equal(all.length, 1, `one checkpoint: ${fs.readdirSync(path.join(dir, "out"))}`);
  assert.deepEqual(listCheckpoints(path.join(dir, "out")), all, "complete (its files match its marker)");
  assert.deepEqual(fs.readdirSync(path.join(dir, "out")).filter((f) => f.includes(".tmp")), [], "no temporary left");
  await kk.close();
});
