/** Engine selection: each scenario in a fresh process, since the engine is a per-process singleton. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

const root = path.resolve(import.meta.dirname, "../..");
const engineUrl = new URL("../../lib/engine/index.ts", import.meta.url).href;

let n = 0;
function scriptFile(script: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "engine-select-"));
  const file = path.join(dir, `s${n++}.mts`);
  fs.writeFileSync(file, script);
  return file;
}

function run(script: string, env: Record<string, string> = {}): { code: number; out: string; err: string } {
  const r = spawnSync(process.execPath, ["--import", "tsx", scriptFile(script)], {
    cwd: root,
    env: { ...process.env, CONTROLNET_TS_BACKEND: "", CONTROLNET_TS_THREADS: "", ...env },
    encoding: "utf8",
    timeout: 120_000,
  });
  return { code: r.status ?? -1, out: r.stdout, err: r.stderr };
}

const printInfo = `import { initEngine } from ${JSON.stringify(engineUrl)};
  const info = await initEngine(); console.log(JSON.stringify(info));`;

test("auto selection falls back to wasm and says why the native engines are unavailable", () => {
  const r = run(printInfo, { CONTROLNET_TS_THREADS: "1" });
  assert.equal(r.code, 0, r.err);
  const info = JSON.parse(r.out.trim().split("\n").pop()!);
  assert.equal(info.backend, "wasm");
  assert.deepEqual(info.unavailable.map((u: { backend: string }) => u.backend), ["node-gpu", "node"]);
  assert.match(info.unavailable[0].reason, /@tensorflow\/tfjs-node-gpu is not installed/);
  assert.equal(info.deviceMemoryLimit, 4 * 1024 ** 3);
  assert.ok(info.kernelOverrides.includes("Conv2DBackpropFilter"));
});

test("forced cpu and forced wasm with 2 threads (env and argument)", () => {
  const cpu = run(printInfo, { CONTROLNET_TS_BACKEND: "cpu" });
  assert.equal(cpu.code, 0, cpu.err);
  assert.equal(JSON.parse(cpu.out.trim().split("\n").pop()!).backend, "cpu");
  const wasm = run(`import { initEngine } from ${JSON.stringify(engineUrl)};
    const info = await initEngine({ backend: "wasm", threads: 2 }); console.log(JSON.stringify(info));`);
  assert.equal(wasm.code, 0, wasm.err);
  const info = JSON.parse(wasm.out.trim().split("\n").pop()!);
  assert.equal(info.backend, "wasm");
  assert.equal(info.threads, 2, "the thread pool should really have 2 threads on a 2-vCPU machine");
});

test("a missing optional package: forcing it is a clear error, never a silent fallback", () => {
  const r = run(printInfo, { CONTROLNET_TS_BACKEND: "node" });
  assert.notEqual(r.code, 0);
  assert.match(r.err, /Engine backend 'node' was requested but is unavailable: @tensorflow\/tfjs-node is not installed/);
});

test("a native package that is present but fails to load is reported with its error", () => {
  const r = run(`import { initEngine } from ${JSON.stringify(engineUrl)};
    const info = await initEngine({ threads: 1, importPackage: async (n) => {
      if (n === "@tensorflow/tfjs-node-gpu") throw new Error("libcudart.so.11.0: cannot open shared object file");
      throw new Error("Cannot find package '" + n + "'");
    }});
    console.log(JSON.stringify(info));`);
  assert.equal(r.code, 0, r.err);
  const info = JSON.parse(r.out.trim().split("\n").pop()!);
  assert.equal(info.backend, "wasm");
  assert.match(info.unavailable[0].reason, /failed to load: libcudart\.so\.11\.0/);
});

test("a bad override is one clear error", () => {
  const r = run(printInfo, { CONTROLNET_TS_BACKEND: "cuda" });
  assert.notEqual(r.code, 0);
  assert.match(r.err, /Unknown engine backend 'cuda': expected one of node-gpu, node, wasm, cpu/);
  const t = run(printInfo, { CONTROLNET_TS_THREADS: "zero" });
  assert.notEqual(t.code, 0);
  assert.match(t.err, /Invalid wasm thread count 'zero'/);
});

test("switching backend after initialisation is refused", () => {
  const r = run(`import { initEngine } from ${JSON.stringify(engineUrl)};
    await initEngine({ backend: "cpu" });
    try { await initEngine({ backend: "wasm" }); console.log("no error"); } catch (e) { console.log(String(e.message)); }`);
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /already runs on 'cpu'; it cannot switch to 'wasm'/);
});

test("a script using the threaded engine exits by itself", () => {
  // execFileSync throws on timeout: the process must end once its work is done.
  execFileSync(process.execPath, ["--import", "tsx", scriptFile(
    `import { initEngine, tf } from ${JSON.stringify(engineUrl)}; await initEngine({backend: "wasm", threads: 2});
     tf.conv2d(tf.ones([1,8,8,4]), tf.ones([3,3,4,4]), 1, "same").dataSync();`)], { cwd: root, timeout: 60_000 });
});
