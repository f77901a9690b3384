/** One training run per output_dir (lib/training/run-lock.ts): two runs side by side had overwritten each other. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { LOCK_NAME, lockRun } from "../../lib/training/run-lock.js";
import { tempDir } from "../helpers.js";

const lockModule = pathToFileURL(path.resolve(import.meta.dirname, "../../lib/training/run-lock.ts")).href;

test("a second process is refused while the first holds output_dir; after the first dies (kill -9) its lock is taken over", async () => {
  const dir = tempDir("run-lock-");
  const holder = spawn(process.execPath, ["--import", "tsx", "-e",
    `const { lockRun } = await import(${JSON.stringify(lockModule)}); lockRun(${JSON.stringify(dir)}); console.log("held"); setInterval(() => {}, 1000);`],
  { stdio: ["ignore", "pipe", "inherit"] });
  try {
    await new Promise<void>((resolve, reject) => {
      holder.stdout!.on("data", (d) => String(d).includes("held") && resolve());
      holder.on("exit", (c) => reject(new Error(`the holder exited (${c})`)));
    });
    assert.throws(() => lockRun(dir), new RegExp(`^ArgsError: another training run \\(pid ${holder.pid} on ${os.hostname()}, since .*\\) is writing to ${dir}; nothing was changed`));
    holder.kill("SIGKILL");
    await new Promise((r) => holder.once("exit", r));
    // its process is gone: taken over; a second trainer of this process shares it; the last release removes the file
    const release = lockRun(dir);
    const again = lockRun(dir);
    assert.equal(JSON.parse(fs.readFileSync(path.join(dir, LOCK_NAME), "utf8")).pid, process.pid);
    again();
    assert.ok(fs.existsSync(path.join(dir, LOCK_NAME)), "still held by the first trainer");
    release();
    assert.ok(!fs.existsSync(path.join(dir, LOCK_NAME)));
  } finally {
    holder.kill("SIGKILL");
  }
});

test("a lock file left half-written (empty, garbage) is taken over once it is old, and refused while it may be being written", () => {
  const dir = tempDir("run-lock-torn-");
  const file = path.join(dir, LOCK_NAME);
  fs.writeFileSync(file, "");
  assert.throws(() => lockRun(dir), /another training run \(a process that is starting\)/);
  const old = new Date(Date.now() - 60_000);
  fs.utimesSync(file, old, old);
  const release = lockRun(dir);
  assert.equal(JSON.parse(fs.readFileSync(file, "utf8")).pid, process.pid);
  release();
});
