/** Engine selection: each scenario in a fresh process, since the engine is a per-process singleton. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { tempDir } from "../helpers.js";

const root = path.resolve(import.meta.dirname, "../..");
const engineUrl = new URL("../../lib/engine/index.ts", import.meta.url).href;

let n = 0;
function scriptFile(script: string): string {
  const dir = tempDir("engine-select-");
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

const nativeInstalled = fs.existsSync(path.join(root, ".native", "tfjs-node", "lib", "napi-v8", "tfjs_binding.node"));
const emptyNativeDir = () => tempDir("no-native-");

test("auto selection prefers the native engine; node-gpu says why it is not used", { skip: !nativeInstalled && "the native engine is not installed here (npm run install-native)" }, () => {
  const r = run(printInfo, { CONTROLNET_TS_THREADS: "1" });
  assert.equal(r.code, 0, r.err);
  const info = JSON.parse(r.out.trim().split("\n").pop()!);
  assert.equal(info.backend, "node");
  assert.equal(info.tfjsBackend, "tensorflow");
  assert.deepEqual(info.unavailable.map((u: { backend: string }) => u.backend), ["node-gpu"]);
  assert.match(info.unavailable[0].reason, /CPU build.*CONTROLNET_TS_NATIVE=gpu npm run install-native/);
  assert.equal(info.deviceMemoryLimit, null, "no 4 GiB heap on native");
  // Conv2D: SAME where an explicit padding equals it; both gradients: EXPLICIT passed on (lib/engine/native/kernels.ts)
  assert.deepEqual(info.kernelOverrides, ["Conv2D", "Conv2DBackpropInput", "Conv2DBackpropFilter", "Reshape", "BatchMatMul"]);
  assert.match(info.fusedKernels, /^attention, GroupNorm\+SiLU, SiLU, LayerNorm, GEGLU, linear layers, AdamW, gradient norms \(TensorFlow ops of ours/);
});

test("without the native engine, auto selection falls back to wasm and says how to add native", () => {
  const r = run(printInfo, { CONTROLNET_TS_THREADS: "1", CONTROLNET_TS_NATIVE_DIR: emptyNativeDir() });
  assert.equal(r.code, 0, r.err);
  const info = JSON.parse(r.out.trim().split("\n").pop()!);
  assert.equal(info.backend, "wasm");
  assert.deepEqual(info.unavailable.map((u: { backend: string }) => u.backend), ["node-gpu", "node"]);
  assert.match(info.unavailable[1].reason, /not installed .*add it with: npm run install-native/);
  // node-gpu's own command is the GPU build's (install-native alone builds the CPU one)
  assert.match(info.unavailable[0].reason, /^no native engine is installed; the GPU build .* is added with: CONTROLNET_TS_NATIVE=gpu npm run install-native$/);
  assert.equal(info.deviceMemoryLimit, 4 * 1024 ** 3);
  assert.ok(info.kernelOverrides.includes("Conv2DBackpropFilter"));
});

test("the installer's recorded reason reaches describeEngine", () => {
  const dir = emptyNativeDir();
  fs.writeFileSync(path.join(dir, "status.json"), JSON.stringify({ ok: false, reason: "no C++17 compiler found (tried g++)", fix: "npm run install-native" }));
  const r = run(`import { initEngine, describeEngine } from ${JSON.stringify(engineUrl)};
    console.log(describeEngine(await initEngine()));`, { CONTROLNET_TS_THREADS: "1", CONTROLNET_TS_NATIVE_DIR: dir });
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /^engine: wasm/m);
  assert.match(r.out, /node unavailable: not installed \(no C\+\+17 compiler found \(tried g\+\+\)\); add it with: npm run install-native/);
});

test("forcing a missing native engine is a clear error, never a silent fallback", () => {
  const r = run(printInfo, { CONTROLNET_TS_BACKEND: "node", CONTROLNET_TS_NATIVE_DIR: emptyNativeDir() });
  assert.notEqual(r.code, 0);
  assert.match(r.err, /Engine backend 'node' was requested but is unavailable: not installed/);
});

test("a native engine that is present but fails to load is reported with its error", () => {
  const r = run(`import { initEngine } from ${JSON.stringify(engineUrl)};
    const info = await initEngine({ threads: 1, loadNative: () => {
      throw new Error("its addon failed to load (libtensorflow_cc.so.2: cannot open shared object file)");
    }});
    console.log(JSON.stringify(info));`);
  assert.equal(r.code, 0, r.err);
  const info = JSON.parse(r.out.trim().split("\n").pop()!);
  assert.equal(info.backend, "wasm");
  assert.match(info.unavailable[0].reason, /libtensorflow_cc\.so\.2: cannot open shared object file/);
});

test("nativeThreads sets TensorFlow's intra-op threads only; wasm keeps `threads`", () => {
  const r = run(`import { initEngine } from ${JSON.stringify(engineUrl)};
    let asked = null;
    const info = await initEngine({ threads: 2, nativeThreads: 1, loadNative: (t) => { asked = t; throw new Error("not loaded in this test"); } });
    console.log(JSON.stringify({ asked, backend: info.backend, threads: info.threads }));`);
  assert.equal(r.code, 0, r.err);
  assert.deepEqual(JSON.parse(r.out.trim().split("\n").pop()!), { asked: 1, backend: "wasm", threads: 2 });
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

test("a bad override is one clear error", () => {
  const r = run(printInfo, { CONTROLNET_TS_BACKEND: "cuda" });
  assert.notEqual(r.code, 0);
  assert.match(r.err, /Unknown engine backend 'cuda': expected one of node-gpu, node, wasm, cpu/);
  const t = run(printInfo, { CONTROLNET_TS_THREADS: "zero" });
  assert.notEqual(t.code, 0);
  assert.match(t.err, /Invalid engine thread count 'zero'/);
  const e = run(printInfo, { CONTROLNET_TS_THREADS: "1e1" });
  assert.notEqual(e.code, 0, "1e1 is not a thread count");
  assert.match(e.err, /Invalid engine thread count '1e1': expected an integer from 1 to 64/);
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
