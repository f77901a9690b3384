import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import {
  ForeignCheckpointError,
  cleanStaleCheckpoints,
  listForeignCheckpoints,
  listCheckpointDirs,
  listCheckpoints,
  loadCheckpoint,
  resolveResume,
  saveCheckpoint,
  verifyCheckpoint,
} from "../../lib/training/checkpoints.js";
import { holdTemp } from "../../lib/io/diffusers.js";
import { readSafetensors, writeSafetensors } from "../../lib/io/safetensors.js";
import { writeAccelerateCheckpoint } from "./fixtures/accelerate-checkpoint.js";
import { tempDir } from "../helpers.js";

const here = path.dirname(fileURLToPath(import.meta.url));
const tmpDir = () => tempDir("cnts-ckpt-");
const names = (dir: string) => listCheckpointDirs(dir).map((c) => path.basename(c.path));

function parts(step: number) {
  return {
    controlnet: (dir: string) => {
      fs.writeFileSync(path.join(dir, "config.json"), JSON.stringify({ step }));
      writeSafetensors(path.join(dir, "diffusion_pytorch_model.safetensors"), { w: { dtype: "float32", shape: [2], data: Float32Array.of(step, step) } });
    },
    optimizer: () => new Map([["step", { dtype: "int32" as const, shape: [], data: Int32Array.of(step) }], ["w.exp_avg", { dtype: "float32" as const, shape: [3], data: Float32Array.of(step, 1, 2) }]]),
    lrScheduler: () => ({ name: "constant", last_epoch: step, base_lr: 1e-5 }),
    rng: () => ({ noise: { algorithm: "xoshiro128**", s: [step, 2, 3, 4], spare: 0.5 } }),
    data: () => ({ epoch: 1, position: step * 4 }),
    training: () => ({ epoch: 1 }),
  };
}

/** The script's loop: global_step 1..maxSteps, checkpoint when global_step % every == 0. */
async function simulate(dir: string, from: number, maxSteps: number, every: number, limit: number | null): Promise<void> {
  for (let step = from + 1; step <= maxSteps; step++) if (step % every === 0) await saveCheckpoint(dir, step, parts(step), { totalLimit: limit });
}

test("checkpoints_total_limit=2, checkpointing_steps=2, 6 steps → exactly checkpoint-4 and checkpoint-6", async () => {
  const dir = tmpDir();
  await simulate(dir, 0, 6, 2, 2);
  assert.deepEqual(fs.readdirSync(dir).sort(), ["checkpoint-4", "checkpoint-6"]);
  // the script's test continued: resume from checkpoint-6 to 8 steps with limit 2 → {6, 8}
  await simulate(dir, 6, 8, 2, 2);
  assert.deepEqual(fs.readdirSync(dir).sort(), ["checkpoint-6", "checkpoint-8"]);
  const d2 = tmpDir();
  await simulate(d2, 0, 6, 2, null);
  assert.deepEqual(names(d2), ["checkpoint-2", "checkpoint-4", "checkpoint-6"]);
  // removes_multiple_checkpoints: that run resumed from checkpoint-6 to 8 steps with limit 2 removes 2 and 4 at once
  await simulate(d2, 6, 8, 2, 2);
  assert.deepEqual(names(d2), ["checkpoint-6", "checkpoint-8"]);
  const d3 = tmpDir();
  await simulate(d3, 0, 6, 2, 1);
  assert.deepEqual(fs.readdirSync(d3), ["checkpoint-6"]);
  // limit 0, as the script: every earlier checkpoint is removed before the new one is saved
  await saveCheckpoint(d3, 8, parts(8), { totalLimit: 0 });
  assert.deepEqual(fs.readdirSync(d3), ["checkpoint-8"]);
  await assert.rejects(saveCheckpoint(d3, 10, parts(10), { totalLimit: -1 }), /checkpoints_total_limit must be an integer >= 0, got -1/);
});

test("checkpoints_total_limit counts and removes only our checkpoints: a checkpoint-N folder without our marker stays", async () => {
  const dir = tmpDir();
  // a user's weights in a folder that looks like a checkpoint, below and above the run's steps, and an empty one
  for (const name of ["checkpoint-0", "checkpoint-00", "checkpoint-500"]) {
    fs.mkdirSync(path.join(dir, name, "controlnet"), { recursive: true });
    fs.writeFileSync(path.join(dir, name, "controlnet", "diffusion_pytorch_model.safetensors"), "user's weights");
  }
  await simulate(dir, 0, 6, 2, 1);
  assert.deepEqual(fs.readdirSync(dir).sort(), ["checkpoint-0", "checkpoint-00", "checkpoint-500", "checkpoint-6"]);
  assert.equal(fs.readFileSync(path.join(dir, "checkpoint-0", "controlnet", "diffusion_pytorch_model.safetensors"), "utf8"), "user's weights");
  assert.deepEqual(listCheckpoints(dir).map((c) => c.step), [6]);
});

test("checkpoint contents round-trip; re-saving a step replaces it", async () => {
  const dir = tmpDir();
  const res = await saveCheckpoint(dir, 4, parts(4));
  assert.equal(res.path, path.join(dir, "checkpoint-4"));
  const c = loadCheckpoint(res.path);
  assert.equal(c.step, 4);
  assert.deepEqual(JSON.parse(fs.readFileSync(path.join(c.controlnetDir!, "config.json"), "utf8")), { step: 4 });
  assert.equal(c.optimizer!.get("step")!.data[0], 4);
  assert.deepEqual(Array.from(c.optimizer!.get("w.exp_avg")!.data), [4, 1, 2]);
  assert.deepEqual(c.lrScheduler, { name: "constant", last_epoch: 4, base_lr: 1e-5 });
  assert.deepEqual(c.rng, { noise: { algorithm: "xoshiro128**", s: [4, 2, 3, 4], spare: 0.5 } });
  assert.deepEqual(c.data, { epoch: 1, position: 16 });
  assert.deepEqual(c.training, { epoch: 1, global_step: 4 });
  const p = parts(4);
  await saveCheckpoint(dir, 4, { ...p, data: () => ({ epoch: 2, position: 0 }) });
  assert.deepEqual(loadCheckpoint(path.join(dir, "checkpoint-4")).data, { epoch: 2, position: 0 });
  assert.deepEqual(fs.readdirSync(dir), ["checkpoint-4"]);
});

test("resume_from_checkpoint: latest = highest complete; none → fresh with the script's message; explicit paths", async () => {
  const dir = tmpDir();
  const none = resolveResume(dir, "latest");
  assert.equal(none.checkpoint, null);
  assert.match(none.message, /does not exist\. Starting a new training run/);
  await simulate(dir, 0, 6, 2, null);
  // an incomplete folder under a final name (e.g. copied by hand) and a dead writer's tmp folder are never "latest"
  fs.mkdirSync(path.join(dir, "checkpoint-10"));
  fs.writeFileSync(path.join(dir, "checkpoint-10", "optimizer.safetensors"), "partial");
  fs.mkdirSync(path.join(dir, "checkpoint-12.tmp-999999999"));
  assert.equal(resolveResume(dir, "latest").checkpoint!.step, 6);
  assert.deepEqual(listCheckpoints(dir).map((c) => c.step), [2, 4, 6]);
  assert.ok(!fs.existsSync(path.join(dir, "checkpoint-12.tmp-999999999")), "stale tmp folder of a dead pid removed");
  assert.equal(resolveResume(dir, path.join(dir, "checkpoint-4")).checkpoint!.step, 4);
  assert.equal(resolveResume(dir, "checkpoint-2").checkpoint!.step, 2); // a name inside output_dir, as the script
  assert.throws(() => resolveResume(dir, "checkpoint-8"), /does not exist/);
  // a checkpoint of another run, by path
  const elsewhere = tmpDir();
  await saveCheckpoint(elsewhere, 8, parts(8));
  assert.equal(resolveResume(dir, path.join(elsewhere, "checkpoint-8")).checkpoint!.path, path.join(elsewhere, "checkpoint-8"));
  // the same name inside output_dir wins, as in the script
  assert.equal(resolveResume(dir, path.join(elsewhere, "..", "x", "checkpoint-4")).checkpoint!.path, path.join(dir, "checkpoint-4"));
  assert.throws(() => resolveResume(dir, "checkpoint-10"), /not a complete checkpoint/);
  assert.equal(resolveResume(dir, null).checkpoint, null);
  // a truncated file inside a checkpoint is detected by the marker
  const f = path.join(dir, "checkpoint-6", "optimizer.safetensors");
  fs.truncateSync(f, 10);
  assert.match(verifyCheckpoint(path.join(dir, "checkpoint-6"))!, /optimizer.safetensors/);
  // …and "latest" does not quietly take checkpoint-4 instead (that would redo steps 5–6 without a word): it names the
  // damage and the way on
  assert.throws(() => resolveResume(dir, "latest"),
    /the newest checkpoint .*checkpoint-6 is damaged \(file optimizer\.safetensors has 10 bytes, the marker says \d+\); nothing was changed\. Resume the one before by name \(resume_from_checkpoint checkpoint-4\)/);
  assert.equal(resolveResume(dir, "checkpoint-4").checkpoint!.step, 4);
  assert.ok(fs.existsSync(f), "the damaged checkpoint is left for the user to look at");
  // a marker that no longer parses is damage too (it was skipped as "not ours", then overwritten by the redone steps)
  fs.writeFileSync(path.join(dir, "checkpoint-6", "checkpoint.json"), "{bad");
  assert.throws(() => resolveResume(dir, "latest"), /the newest checkpoint .*checkpoint-6 is damaged \(.*\); nothing was changed\. Resume the one before by name/);
});

test("accelerate's checkpoints (diffusers' own) are recognised and refused, whatever the resume mode; nothing is touched", () => {
  const dir = tmpDir();
  writeAccelerateCheckpoint(dir, 2);
  writeAccelerateCheckpoint(dir, 4);
  const before = fs.readdirSync(dir, { recursive: true }).sort();
  assert.deepEqual(listForeignCheckpoints(dir).map((c) => c.step), [2, 4]);
  for (const resume of ["latest", null, "checkpoint-4", path.join(dir, "checkpoint-2")]) {
    assert.throws(() => resolveResume(dir, resume), (e: ForeignCheckpointError) => {
      assert.ok(e instanceof ForeignCheckpointError, String(e));
      assert.match(e.message, /written by diffusers' train_controlnet\.py \/ accelerate \(checkpoint-2, checkpoint-4\)/);
      assert.match(e.message, new RegExp(`--controlnet_model_name_or_path=${path.join(dir, "checkpoint-4", "controlnet").replace(/[/.]/g, "\\$&")} and a new --output_dir`));
      assert.ok(!e.message.includes("\n"), "one line");
      return true;
    });
  }
  // an accelerate checkpoint elsewhere, by path
  const other = tmpDir();
  const ck = writeAccelerateCheckpoint(other, 6);
  assert.throws(() => resolveResume(tmpDir(), ck), (e: Error) => e instanceof ForeignCheckpointError && /checkpoint-6/.test(e.message));
  assert.deepEqual(fs.readdirSync(dir, { recursive: true }).sort(), before, "nothing written or removed");
  // our own incomplete folders are not mistaken for accelerate's
  const ours = tmpDir();
  fs.mkdirSync(path.join(ours, "checkpoint-10"));
  fs.writeFileSync(path.join(ours, "checkpoint-10", "optimizer.safetensors"), "partial");
  assert.deepEqual(listForeignCheckpoints(ours), []);
});

test("a file named like a checkpoint (a user's) is refused before a run and never replaced by a save", async () => {
  const dir = tmpDir();
  fs.writeFileSync(path.join(dir, "checkpoint-2"), "my important notes");
  for (const resume of ["latest", null]) assert.throws(() => resolveResume(dir, resume), /holds checkpoint-2, a file where checkpoint folders go: .*nothing was changed\. Move it away/);
  await simulate(dir, 0, 1, 1, null);
  await assert.rejects(saveCheckpoint(dir, 2, parts(2)), new RegExp(`could not write checkpoint-2 in .*: .*checkpoint-2 is a file, not a checkpoint folder, and is not replaced; the last complete checkpoint is .*checkpoint-1$`));
  assert.equal(fs.readFileSync(path.join(dir, "checkpoint-2"), "utf8"), "my important notes");
  assert.deepEqual(fs.readdirSync(dir).sort(), ["checkpoint-1", "checkpoint-2"], "no temporary left");
});

test("stale leftovers: a complete tmp whose final name is missing is moved into place, an old copy put back", async () => {
  const dir = tmpDir();
  await saveCheckpoint(dir, 2, parts(2));
  await saveCheckpoint(dir, 4, parts(4));
  // a newer same-step copy, as a writer would have had it ready in its tmp folder
  const other = tmpDir();
  await saveCheckpoint(other, 4, { ...parts(4), data: () => ({ epoch: 9, position: 0 }) });
  // simulate a writer (dead pid) killed between "checkpoint-4 → .old" and ".tmp → checkpoint-4"
  fs.renameSync(path.join(dir, "checkpoint-4"), path.join(dir, "checkpoint-4.old-999999998"));
  fs.renameSync(path.join(other, "checkpoint-4"), path.join(dir, "checkpoint-4.tmp-999999998"));
  cleanStaleCheckpoints(dir);
  assert.deepEqual(fs.readdirSync(dir).sort(), ["checkpoint-2", "checkpoint-4"]);
  // (the promoted tmp copy wins over the older set-aside one)
  assert.deepEqual(loadCheckpoint(path.join(dir, "checkpoint-4")).data, { epoch: 9, position: 0 });
  // only an old copy left: it is put back
  fs.renameSync(path.join(dir, "checkpoint-4"), path.join(dir, "checkpoint-4.old-999999998"));
  cleanStaleCheckpoints(dir);
  assert.deepEqual(fs.readdirSync(dir).sort(), ["checkpoint-2", "checkpoint-4"]);
  // an incomplete tmp is deleted; a live writer's (this process writing it, another live process) is left alone
  fs.mkdirSync(path.join(dir, "checkpoint-8.tmp-999999998"));
  const mine = path.join(dir, `checkpoint-8.tmp-${process.pid}`);
  fs.mkdirSync(mine);
  fs.mkdirSync(path.join(dir, `checkpoint-10.tmp-${process.ppid}`));
  const release = holdTemp(mine);
  assert.deepEqual(cleanStaleCheckpoints(dir), [path.join(dir, "checkpoint-8.tmp-999999998")]);
  assert.ok(fs.existsSync(mine) && fs.existsSync(path.join(dir, `checkpoint-10.tmp-${process.ppid}`)));
  // once this process no longer writes it, a tmp with our pid is a previous run's (every container run is pid 1)
  release();
  assert.deepEqual(cleanStaleCheckpoints(dir), [mine]);
});

function runWriter(dir: string, step: number, limit: string, mb: number, killAfterMs: number | null): Promise<{ killed: boolean; finished: boolean }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["--import", "tsx", path.join(here, "fixtures", "checkpoint-writer.ts"), dir, String(step), limit, String(mb)], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    let err = "";
    let timer: NodeJS.Timeout | null = null;
    child.stdout.on("data", (d: Buffer) => {
      out += d.toString();
      if (killAfterMs !== null && timer === null && out.includes("writing")) {
        timer = setTimeout(() => child.kill("SIGKILL"), killAfterMs);
      }
    });
    child.stderr.on("data", (d: Buffer) => (err += d.toString()));
    child.on("error", reject);
    child.on("exit", (code, signal) => {
      if (timer) clearTimeout(timer);
      if (signal !== "SIGKILL" && code !== 0) reject(new Error(`writer failed (${code}): ${err}`));
      else resolve({ killed: signal === "SIGKILL", finished: out.includes("done") });
    });
  });
}

test("SIGKILL while writing a checkpoint leaves the previous one intact and loadable, never a half one", { timeout: 240_000 }, async () => {
  const dir = tmpDir();
  const mb = 48;
  const first = await runWriter(dir, 2, "none", mb, null);
  assert.ok(first.finished);
  const before = fs.readFileSync(path.join(dir, "checkpoint-2", "controlnet", "diffusion_pytorch_model.safetensors"));
  const outcomes: string[] = [];
  for (const [i, delay] of [0, 15, 40, 80, 150, 250, 400, 700].entries()) {
    const limit = i % 2 === 0 ? "1" : "none"; // limit 1: the old checkpoint is deleted once the new one is in place
    const r = await runWriter(dir, 4, limit, mb, delay);
    const complete = listCheckpoints(dir);
    // never a half checkpoint under a final name
    for (const c of listCheckpointDirs(dir)) {
      const why = verifyCheckpoint(c.path);
      // the only tolerated incomplete one: checkpoint-2 caught while being deleted after checkpoint-4 became complete
      if (why) assert.ok(c.step === 2 && complete.some((k) => k.step === 4), `half checkpoint ${c.path}: ${why}`);
    }
    const latest = resolveResume(dir, "latest").checkpoint;
    assert.ok(latest, `no loadable checkpoint after a kill at ${delay} ms`);
    const loaded = loadCheckpoint(latest.path);
    const w = readSafetensors(path.join(loaded.controlnetDir!, "diffusion_pytorch_model.safetensors")).tensors.get("w")!;
    assert.ok(w.data.every((v) => v === latest.step), "weights belong to the checkpoint's own step");
    assert.equal(loaded.optimizer!.get("step")!.data[0], latest.step);
    if (latest.step === 2) {
      assert.deepEqual(fs.readFileSync(path.join(latest.path, "controlnet", "diffusion_pytorch_model.safetensors")), before);
    }
    outcomes.push(`${delay}ms:${r.killed ? "killed" : "finished"}→latest ${latest.step}`);
    // reset: back to only checkpoint-2 for the next timing
    cleanStaleCheckpoints(dir);
    assert.deepEqual(fs.readdirSync(dir).filter((n) => n.includes(".tmp-")), [], "dead writer's tmp folder cleaned");
    if (latest.step === 4) {
      fs.rmSync(path.join(dir, "checkpoint-4"), { recursive: true, force: true });
      fs.rmSync(path.join(dir, "checkpoint-2"), { recursive: true, force: true });
      assert.ok((await runWriter(dir, 2, "none", mb, null)).finished);
    }
  }
  console.log(`  kill outcomes: ${outcomes.join(", ")}`);
  // the timings must have caught the writer mid-write at least once
  assert.ok(outcomes.some((o) => o.includes("killed→latest 2")), outcomes.join(", "));
});

test("infer from a checkpoint whose files no longer match their SHA-256 is refused, naming the file (as resuming it is)", async () => {
  const { main: infer } = await import("../../lib/cli/infer.js");
  const dir = tmpDir();
  await saveCheckpoint(dir, 2, parts(2));
  const cn = path.join(dir, "checkpoint-2", "controlnet");
  const config = path.join(cn, "config.json");
  fs.writeFileSync(config, fs.readFileSync(config, "utf8").replace("2", "3")); // same size, other bytes
  const errors: string[] = [];
  const write = process.stderr.write;
  process.stderr.write = ((s: string) => (errors.push(String(s)), true)) as typeof process.stderr.write;
  try {
    for (const given of [cn, path.join(dir, "checkpoint-2")]) {
      errors.length = 0;
      assert.equal(await infer(["--base", "unused", "--controlnet", given, "--image", "unused.png", "--prompt", "p"]), 1);
      assert.match(errors.join(""), /^controlnet-ts infer: --controlnet .*: the checkpoint .*checkpoint-2 is damaged \(.*config\.json.*\); nothing was generated\n$/);
    }
  } finally {
    process.stderr.write = write;
  }
});

/** Rewrites a checkpoint's marker through `edit` (what a hand edit, or a tool that knows the format, would do). */
function editMarker(ck: string, edit: (m: Record<string, any>) => void): void {
  const file = path.join(ck, "checkpoint.json");
  const m = JSON.parse(fs.readFileSync(file, "utf8")) as Record<string, any>;
  edit(m);
  fs.writeFileSync(file, JSON.stringify(m, null, 2) + "\n");
}

/** Deletes part of a checkpoint and its entries in the marker, so that sizes and checksums still agree. */
function dropPart(ck: string, ...rels: string[]): void {
  editMarker(ck, (m) => {
    for (const key of Object.keys(m.files)) {
      if (rels.some((r) => key === r || key.startsWith(`${r}/`))) {
        delete m.files[key];
        delete m.sha256[key];
      }
    }
  });
  for (const r of rels) fs.rmSync(path.join(ck, r), { recursive: true });
}

/** Every way of refusing a damaged checkpoint-4 beside a good checkpoint-2: one line, naming the checkpoint, the
 *  problem and the checkpoint that can be used instead. */
function assertRefused(dir: string, problem: RegExp): void {
  const ck = path.join(dir, "checkpoint-4");
  const one = (e: Error) => { assert.ok(!e.message.includes("\n"), `one line: ${e.message}`); return true; };
  assert.match(verifyCheckpoint(ck) ?? "", problem);
  assert.deepEqual(listCheckpoints(dir).map((c) => c.step), [2], "a damaged checkpoint is not a complete one");
  assert.throws(() => resolveResume(dir, "latest"), (e: Error) => {
    assert.match(e.message, new RegExp(`the newest checkpoint ${ck}.* is damaged \\(${problem.source}.*\\); nothing was changed\\. Resume the one before by name \\(resume_from_checkpoint checkpoint-2\\)`));
    return one(e);
  });
  for (const given of ["checkpoint-4", ck]) {
    assert.throws(() => resolveResume(dir, given), (e: Error) => {
      assert.match(e.message, new RegExp(`checkpoint-4' is not a complete checkpoint: ${problem.source}.*; nothing was changed\\. The newest other complete checkpoint can be resumed instead: resume_from_checkpoint ${path.join(dir, "checkpoint-2")}\\.$`));
      return one(e);
    });
  }
  assert.throws(() => loadCheckpoint(ck), (e: Error) => {
    assert.match(e.message, new RegExp(`checkpoint-4' is not a complete checkpoint: ${problem.source}.*; nothing was changed\\. The newest other complete checkpoint can be resumed instead: resume_from_checkpoint .*checkpoint-2\\.$`));
    return one(e);
  });
  assert.equal(resolveResume(dir, "checkpoint-2").checkpoint!.step, 2, "the good one is still taken");
  assert.equal(loadCheckpoint(path.join(dir, "checkpoint-2")).step, 2);
}

async function twoCheckpoints(): Promise<string> {
  const dir = tmpDir();
  await saveCheckpoint(dir, 2, parts(2));
  await saveCheckpoint(dir, 4, parts(4));
  return dir;
}

test("a marker whose step was edited is refused: folder name, marker and training_state.json must agree", async () => {
  const dir = await twoCheckpoints();
  const ck = path.join(dir, "checkpoint-4");
  editMarker(ck, (m) => (m.step = 2));
  assertRefused(dir, /checkpoint\.json says step 2, the folder's name says 4/);
  // the folder renamed to match the edited step: training_state.json still says 4
  const renamed = tmpDir();
  await saveCheckpoint(renamed, 4, parts(4));
  fs.renameSync(path.join(renamed, "checkpoint-4"), path.join(renamed, "checkpoint-6"));
  editMarker(path.join(renamed, "checkpoint-6"), (m) => (m.step = 6));
  assert.equal(verifyCheckpoint(path.join(renamed, "checkpoint-6")), "training_state.json says global_step 4, checkpoint.json says step 6");
  assert.throws(() => resolveResume(renamed, "latest"), /checkpoint-6 is damaged \(training_state\.json says global_step 4, checkpoint\.json says step 6\); nothing was changed\. Remove checkpoint-6 to start a new run\./);
  // no step at all, or not a number
  editMarker(ck, (m) => delete m.step);
  assert.match(verifyCheckpoint(ck)!, /checkpoint\.json's step is undefined, not a step number/);
  editMarker(ck, (m) => (m.step = "4"));
  assert.match(verifyCheckpoint(ck)!, /checkpoint\.json's step is "4", not a step number/);
});

test("a checkpoint lacking a part the trainer always writes is refused, even with its marker entries removed", async () => {
  const cases: [string[], RegExp][] = [
    [["optimizer.safetensors"], /checkpoint\.json does not list optimizer\.safetensors, which every checkpoint has/],
    [["controlnet"], /checkpoint\.json lists nothing in controlnet\/, which every checkpoint has/],
    [["data_state.json", "random_states.json", "scheduler.json"], /checkpoint\.json does not list (scheduler|random_states|data_state)\.json, which every checkpoint has/],
    [["training_state.json"], /checkpoint\.json does not list training_state\.json/],
    [["controlnet/diffusion_pytorch_model.safetensors"], /checkpoint\.json lists no weights \(\*\.safetensors\) in controlnet\//],
    [["controlnet/config.json"], /checkpoint\.json does not list controlnet\/config\.json/],
  ];
  for (const [rels, problem] of cases) {
    const dir = await twoCheckpoints();
    dropPart(path.join(dir, "checkpoint-4"), ...rels);
    assertRefused(dir, problem);
  }
  // a file only deleted (its entry kept) was already caught; a file of the model added, or its entry removed while it
  // stays, is not loaded unvouched for
  const dir = await twoCheckpoints();
  const ck = path.join(dir, "checkpoint-4");
  editMarker(ck, (m) => { delete m.files["controlnet/config.json"]; delete m.sha256["controlnet/config.json"]; });
  assertRefused(dir, /file controlnet\/config\.json is not in checkpoint\.json \(added, or its entry removed, after the checkpoint was written\)/);
  const stray = await twoCheckpoints();
  fs.writeFileSync(path.join(stray, "checkpoint-4", "controlnet", ".DS_Store"), "finder");
  fs.writeFileSync(path.join(stray, "checkpoint-4", "notes.txt"), "mine");
  assert.equal(verifyCheckpoint(path.join(stray, "checkpoint-4"), { checksums: true }), null, "stray files the loader never reads are no damage");
  fs.writeFileSync(path.join(stray, "checkpoint-4", "controlnet", "diffusion_pytorch_model-extra.safetensors"), "x");
  assert.match(verifyCheckpoint(path.join(stray, "checkpoint-4"))!, /file controlnet\/diffusion_pytorch_model-extra\.safetensors is not in checkpoint\.json/);
});

test("controlnet_ema/ is optional, but when present every file of it is vouched for by the marker", async () => {
  const ema = (dir: string) => {
    const d = path.join(dir, "controlnet_ema");
    fs.mkdirSync(d);
    fs.writeFileSync(path.join(d, "config.json"), "{}");
    writeSafetensors(path.join(d, "diffusion_pytorch_model.safetensors"), { w: { dtype: "float32", shape: [1], data: Float32Array.of(1) } });
  };
  const dir = tmpDir();
  await saveCheckpoint(dir, 2, parts(2));
  await saveCheckpoint(dir, 4, { ...parts(4), extra: ema });
  assert.equal(verifyCheckpoint(path.join(dir, "checkpoint-2"), { checksums: true }), null, "saved without use_ema");
  assert.equal(verifyCheckpoint(path.join(dir, "checkpoint-4"), { checksums: true }), null);
  // the average's entries removed from the marker while its files stay: they would be loaded unverified
  editMarker(path.join(dir, "checkpoint-4"), (m) => {
    for (const k of Object.keys(m.files)) if (k.startsWith("controlnet_ema/")) { delete m.files[k]; delete m.sha256[k]; }
  });
  assertRefused(dir, /file controlnet_ema\/(config\.json|diffusion_pytorch_model\.safetensors) is not in checkpoint\.json/);
  // its weights removed with their entries: a half average
  const half = tmpDir();
  await saveCheckpoint(half, 2, parts(2));
  await saveCheckpoint(half, 4, { ...parts(4), extra: ema });
  dropPart(path.join(half, "checkpoint-4"), "controlnet_ema/diffusion_pytorch_model.safetensors");
  assertRefused(half, /checkpoint\.json lists no weights \(\*\.safetensors\) in controlnet_ema\//);
});

test("checksums: a marker of before checksums is loaded with one warning; a partial or extra checksum table is damage", async () => {
  const dir = await twoCheckpoints();
  const ck = path.join(dir, "checkpoint-4");
  // the format of 2026-11-26..12-03 (same version, no sha256): sizes only, and said once
  editMarker(ck, (m) => delete m.sha256);
  const warnings: string[] = [];
  const loaded = loadCheckpoint(ck, { warn: (l) => warnings.push(l) });
  assert.equal(loaded.step, 4);
  assert.deepEqual(warnings, [`warning: ${ck}: its checkpoint.json records no SHA-256 checksums (written by a controlnet-ts from before they were added); its files were checked by size only, a flipped bit would go unnoticed`]);
  assert.equal(verifyCheckpoint(ck), null, "listing (sizes only) says nothing");
  // the default reporter is console.warn, one line per load
  const seen: string[] = [];
  const warn = console.warn;
  console.warn = (...a: unknown[]) => void seen.push(a.join(" "));
  try {
    loadCheckpoint(ck);
  } finally {
    console.warn = warn;
  }
  assert.equal(seen.length, 1);
  assert.match(seen[0]!, /checkpoint-4: its checkpoint\.json records no SHA-256 checksums/);
  // a table missing one file's sum, with a flipped bit in that file: refused, not loaded unverified
  const other = await twoCheckpoints();
  const ck2 = path.join(other, "checkpoint-4");
  editMarker(ck2, (m) => delete m.sha256["optimizer.safetensors"]);
  const f = path.join(ck2, "optimizer.safetensors");
  const bytes = fs.readFileSync(f);
  bytes[bytes.length - 1]! ^= 0x01;
  fs.writeFileSync(f, bytes);
  assertRefused(other, /checkpoint\.json has no valid SHA-256 for optimizer\.safetensors/);
  editMarker(ck2, (m) => { m.sha256["optimizer.safetensors"] = "0".repeat(64); m.sha256["gone.bin"] = "0".repeat(64); });
  assertRefused(other, /checkpoint\.json has a SHA-256 for gone\.bin but does not list the file/);
  editMarker(ck2, (m) => (m.sha256 = null));
  assertRefused(other, /checkpoint\.json's sha256 is not a table of checksums/);
});

test("a JSON part that no longer parses (a marker without checksums cannot vouch for it) is refused naming the file", async () => {
  const dir = await twoCheckpoints();
  const ck = path.join(dir, "checkpoint-4");
  editMarker(ck, (m) => delete m.sha256);
  const f = path.join(ck, "data_state.json");
  fs.writeFileSync(f, "{".padEnd(fs.statSync(f).size, " ")); // same size
  assert.throws(() => loadCheckpoint(ck, { warn: () => {} }),
    /checkpoint-4' is not a complete checkpoint: data_state\.json does not parse \(.*\); nothing was changed\. The newest other complete checkpoint can be resumed instead: resume_from_checkpoint .*checkpoint-2\.$/);
});

test("saveCheckpoint refuses to write a checkpoint without a part every checkpoint holds", async () => {
  const dir = tmpDir();
  const { optimizer: _drop, ...rest } = parts(2);
  await assert.rejects(saveCheckpoint(dir, 2, rest as never), /saveCheckpoint: checkpoint-2 needs optimizer \(every checkpoint holds them\); nothing was written/);
  assert.deepEqual(fs.readdirSync(dir), []);
});
