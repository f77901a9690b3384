/** TensorFlow's all-reduce through our addon, alone: exact sums over buffers split into several collectives. */
import { test } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { freePorts, skipReason, env } from "./helpers.js";
import { spawn } from "node:child_process";

const skip = skipReason();

test("3 processes sum 33.6 M floats (three collective pieces) exactly", { skip }, async () => {
  const port = await freePorts(3);
  const addresses = [0, 1, 2].map((i) => `127.0.0.1:${port + i}`);
  const worker = path.join(import.meta.dirname, "fixtures", "reduce-worker.ts");
  const runs = [0, 1, 2].map((rank) => new Promise<string>((resolve, reject) => {
    const c = spawn(process.execPath, ["--import", "tsx", worker, String(rank), "3", ...addresses], { env, stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    c.stdout.on("data", (d) => (out += d));
    c.on("exit", (code) => (code === 0 ? resolve(out) : reject(new Error(`rank ${rank} exited with ${code}`))));
  }));
  for (const out of await Promise.all(runs)) {
    const r = JSON.parse(out.trim().split("\n").at(-1)!) as { n: number; bad: number };
    assert.equal(r.n, 16 * 1024 * 1024 * 2 + 12345);
    assert.equal(r.bad, 0);
  }
});
