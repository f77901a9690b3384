/** A damaged checkpoint or log never resumes a wrong state silently, and a bad log line never blocks a resume. */
import { before, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { ControlNetTrainer } from "../../lib/training/trainer.js";
import { readJsonl } from "../../lib/training/tensorboard.js";
import { testEngine, tempDir } from "../helpers.js";
import { tinyComponents, tinyDataset, TINY_RESOLUTION } from "./tiny.js";

const tmp = () => tempDir("cnts-integrity-");

before(async () => {
  await testEngine();
});

/** Runs `fn` with console.warn collected (one entry per call). */
function warnings<T>(fn: () => T): { value: T; lines: string[] } {
  const lines: string[] = [];
  const warn = console.warn;
  console.warn = (...a: unknown[]) => void lines.push(a.map(String).join(" "));
  try {
    return { value: fn(), lines };
  } finally {
    console.warn = warn;
  }
}

test("readJsonl skips lines that are not JSON objects and names them in one warning line; a torn last line is silent", () => {
  const dir = tmp();
  const file = path.join(dir, "train_log.jsonl");
  fs.writeFileSync(file, [
    '{"step":1,"loss":0.5}',
    '{"step":2,"loss":0.4, bad}', // line 2: edited by hand
    "null", // line 3
    "\0\0\0\0", // line 4: NUL bytes (a file extended with zeros by a crash)
    '{"step":3,"loss":0.3}',
    "[1,2]", // line 6: JSON, not an object
    "",
    "7", // line 8
    '{"step":4,"loss":0.2}',
  ].join("\n") + "\n" + '{"step":5,"lo'); // torn last line: a writer killed mid-append
  const said: string[] = [];
  const rows = readJsonl(file, { warn: (l) => said.push(l) });
  assert.deepEqual(rows.map((r) => r.step), [1, 3, 4]);
  assert.deepEqual(said, [`warning: ${file}: skipped lines 2, 3, 4, 6, 8 (not a JSON object: damaged or edited); kept the other 3 records`]);
  // the default reporter: console.warn, once for the same file and lines however often it is read (a follower)
  const first = warnings(() => readJsonl(file));
  const again = warnings(() => readJsonl(file));
  assert.deepEqual(first.lines, said);
  assert.deepEqual(again.lines, []);
  assert.deepEqual(again.value.map((r) => r.step), [1, 3, 4]);
  // a new bad line is news; the torn line, terminated by a later append, is no longer a write in progress: named too
  fs.appendFileSync(file, "\n{oops\n");
  assert.deepEqual(warnings(() => readJsonl(file)).lines, [`warning: ${file}: skipped lines 2, 3, 4, 6, 8, 10, 11 (not a JSON object: damaged or edited); kept the other 3 records`]);
  // a clean log, or one whose only fault is a torn last line, says nothing
  const clean = path.join(dir, "clean.jsonl");
  fs.writeFileSync(clean, '{"step":1}\n{"step":2}\n{"st');
  const quiet = warnings(() => readJsonl(clean, {}));
  assert.deepEqual(quiet.lines, []);
  assert.deepEqual(quiet.value.map((r) => r.step), [1, 2]);
  // many bad lines: still one line
  const many = path.join(dir, "many.jsonl");
  fs.writeFileSync(many, Array.from({ length: 25 }, (_, i) => (i % 2 ? "{x" : `{"step":${i}}`)).join("\n") + "\n");
  const m: string[] = [];
  readJsonl(many, { warn: (l) => m.push(l) });
  assert.equal(m.length, 1);
  assert.match(m[0]!, /skipped lines 2, 4, 6, 8, 10, 12, 14, 16, 18, 20 and 2 more .*kept the other 13 records$/);
});

test("the trainer refuses a checkpoint with an edited step or a missing part, and resumes past bad log lines", async () => {
  const dir = tmp();
  const opts = { output_dir: dir, resolution: TINY_RESOLUTION, train_batch_size: 2, learning_rate: 1e-3, max_train_steps: 4, checkpointing_steps: 2, seed: 3 };
  const a = new ControlNetTrainer(tinyComponents(), await tinyDataset(), opts);
  await a.train();
  await a.close();
  const ck = path.join(dir, "checkpoint-4");
  const saved = path.join(tmp(), "checkpoint-4");
  fs.cpSync(ck, saved, { recursive: true });
  const restore = () => {
    fs.rmSync(ck, { recursive: true });
    fs.cpSync(saved, ck, { recursive: true });
  };
  const ds = await tinyDataset();
  const resume = (extra: Record<string, unknown> = {}) => {
    const said: string[] = [];
    return { said, make: () => new ControlNetTrainer(tinyComponents(), ds, { ...opts, max_train_steps: 6, resume_from_checkpoint: "latest", ...extra }, null, (l) => said.push(l)) };
  };

  // "step": 2 in checkpoint-4's marker: step-4 state was resumed as step 2
  const marker = path.join(ck, "checkpoint.json");
  fs.writeFileSync(marker, fs.readFileSync(marker, "utf8").replace(/"step": 4/, '"step": 2'));
  let r = resume();
  assert.throws(() => r.make(), /the newest checkpoint .*checkpoint-4 is damaged \(checkpoint\.json says step 2, the folder's name says 4\); nothing was changed\. Resume the one before by name \(resume_from_checkpoint checkpoint-2\)/);
  assert.ok(!r.said.some((l) => /Resuming/.test(l)), r.said.join("\n"));
  restore();

  // optimizer.safetensors deleted with its marker entries: a fresh Adam passed for the checkpoint's
  const m = JSON.parse(fs.readFileSync(marker, "utf8")) as { files: Record<string, number>; sha256: Record<string, string> };
  delete m.files["optimizer.safetensors"];
  delete m.sha256["optimizer.safetensors"];
  fs.writeFileSync(marker, JSON.stringify(m));
  fs.rmSync(path.join(ck, "optimizer.safetensors"));
  r = resume();
  assert.throws(() => r.make(), /checkpoint-4 is damaged \(checkpoint\.json does not list optimizer\.safetensors, which every checkpoint has\); nothing was changed\. Resume the one before by name \(resume_from_checkpoint checkpoint-2\)/);
  // named explicitly, the way on is named too
  r = resume({ resume_from_checkpoint: ck });
  assert.throws(() => r.make(), /checkpoint-4' is not a complete checkpoint: checkpoint\.json does not list optimizer\.safetensors.*; nothing was changed\. The newest other complete checkpoint can be resumed instead: resume_from_checkpoint .*checkpoint-2\./);
  restore();

  // bad lines in the log (damaged, null, NUL bytes) and a torn last line: the resume goes on and says so once
  const log = path.join(dir, "logs", "train_log.jsonl");
  const lines = fs.readFileSync(log, "utf8").split("\n");
  lines.splice(1, 0, '{"step": 2, bad}', "null", "\0\0\0");
  fs.writeFileSync(log, lines.join("\n") + '{"step": 5, "lo');
  r = resume();
  const { value: b, lines: warned } = warnings(() => r.make());
  assert.equal(b.globalStep, 4);
  assert.ok(r.said.includes("Resuming from checkpoint checkpoint-4"), r.said.join("\n"));
  assert.deepEqual(warned, [`warning: ${log}: skipped lines 2, 3, 4 (not a JSON object: damaged or edited); kept the other 4 records`]);
  await b.train();
  await b.close();
  assert.deepEqual(readJsonl(log).map((l) => l.step), [1, 2, 3, 4, 5, 6], "each step once, the bad lines gone");
});
