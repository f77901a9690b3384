/**
 * The native engine's installer (scripts/native/install.mjs), run into a temporary folder: it never fails
 * `npm install`, records why native is missing and the command that adds it, and a second install is a fast copy
 * from the user cache.
 */
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { nativeMissingReason } from "../../lib/engine/native/load.js";

const root = path.resolve(import.meta.dirname, "../..");
const installer = path.join(root, "scripts", "native", "install.mjs");

// every folder a test makes under the system's temporary folder goes when the file ends
const made: string[] = [];
function tempDir(prefix: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  made.push(dir);
  return dir;
}
after(() => {
  for (const d of made) fs.rmSync(d, { recursive: true, force: true });
});

function install(env: Record<string, string>, args: string[] = []) {
  const dir = tempDir("native-install-");
  const r = spawnSync(process.execPath, [installer, ...args], {
    cwd: root,
    env: { ...process.env, CONTROLNET_TS_NATIVE_DIR: dir, ...env },
    encoding: "utf8",
    timeout: 600_000,
  });
  const statusFile = path.join(dir, "status.json");
  const status = fs.existsSync(statusFile) ? JSON.parse(fs.readFileSync(statusFile, "utf8")) : null;
  return { code: r.status, err: r.stderr, status, dir };
}

/** A PATH holding only node, python3 and tar: no C++ compiler (what "g++ hidden from PATH" means). */
function pathWithoutCompiler(): string {
  const bin = tempDir("no-cxx-bin-");
  for (const tool of ["python3", "tar"]) {
    const found = spawnSync("sh", ["-c", `command -v ${tool}`], { encoding: "utf8" }).stdout.trim();
    if (found) fs.symlinkSync(found, path.join(bin, tool));
  }
  fs.symlinkSync(process.execPath, path.join(bin, "node"));
  return bin;
}

test("no C++ compiler: the install still succeeds and records the reason and the fix", () => {
  const r = install({ PATH: pathWithoutCompiler(), CXX: "" });
  assert.equal(r.code, 0, r.err);
  assert.equal(r.status.ok, false);
  assert.match(r.status.reason, /no C\+\+17 compiler found \(tried g\+\+, c\+\+, clang\+\+/);
  assert.equal(r.status.fix, "npm run install-native");
  assert.match(r.err, /not installed: no C\+\+17 compiler found/);
  assert.match(r.err, /the wasm engine runs; once fixed, add native with: npm run install-native/);
});

test("`npm run install-native` (--strict) exits 1 when it cannot build", () => {
  const r = install({ CXX: "/nonexistent/g++" }, ["--strict"]);
  assert.equal(r.code, 1);
  assert.match(r.status.reason, /tried \/nonexistent\/g\+\+/);
});

test("the opt-out variable skips the build and says how to add it later", () => {
  const r = install({ CONTROLNET_TS_NATIVE: "off" });
  assert.equal(r.code, 0, r.err);
  assert.equal(r.status.ok, false);
  assert.match(r.status.reason, /skipped: CONTROLNET_TS_NATIVE=off/);
  const bad = install({ CONTROLNET_TS_NATIVE: "tpu" });
  assert.equal(bad.code, 0);
  assert.match(bad.status.reason, /CONTROLNET_TS_NATIVE='tpu' is not one of cpu, gpu, off/);
  // the plain fix would fail again while the bad value is exported: it sets a valid one
  assert.equal(bad.status.fix, "CONTROLNET_TS_NATIVE=cpu npm run install-native");
});

test("the opt-out over an earlier build: wasm runs, as the installer says (the earlier build is not loaded)", () => {
  const dir = tempDir("native-optout-");
  // an earlier successful install's files and status
  fs.mkdirSync(path.join(dir, "tfjs-node", "lib", "napi-v8"), { recursive: true });
  fs.writeFileSync(path.join(dir, "tfjs-node", "lib", "napi-v8", "tfjs_binding.node"), "");
  fs.writeFileSync(path.join(dir, "status.json"), JSON.stringify({ ok: true, flavour: "cpu" }));
  assert.equal(nativeMissingReason(dir), null, "the earlier build counts as installed");
  const r = spawnSync(process.execPath, [installer], { cwd: root, env: { ...process.env, CONTROLNET_TS_NATIVE_DIR: dir, CONTROLNET_TS_NATIVE: "off" }, encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stderr, /skipped \(CONTROLNET_TS_NATIVE=off\); the wasm engine runs/);
  assert.match(nativeMissingReason(dir)!, /^not installed \(skipped: CONTROLNET_TS_NATIVE=off at install\); add it with: CONTROLNET_TS_NATIVE=cpu npm run install-native$/);
});

test("an unexpected error (a cache dir that cannot be made) is a reason to run on wasm, not a failed npm install", () => {
  const file = path.join(tempDir("native-cache-"), "a-file");
  fs.writeFileSync(file, "");
  for (const cache of [path.join(file, "cache"), "/proc/controlnet-ts-no-such-dir/cache"]) {
    const started = Date.now();
    const r = install({ CONTROLNET_TS_CACHE_DIR: cache });
    assert.equal(r.code, 0, r.err);
    assert.ok(Date.now() - started < 60_000, `${cache}: took ${Date.now() - started} ms`); // Node's recursive mkdir spun for ever under /proc
    assert.equal(r.status?.ok, false, `${cache}: ${r.err}`);
    assert.match(r.status.reason, /^unexpected error: (ENOTDIR|ENOENT)/, cache);
    assert.match(r.err, /the wasm engine runs; once fixed, add native with: npm run install-native/);
  }
});

const cacheReady = fs.existsSync(path.join(root, ".native", "status.json")) &&
  JSON.parse(fs.readFileSync(path.join(root, ".native", "status.json"), "utf8")).ok === true;

test("a second install comes from the cache: fast, hard-linked, and it loads", { skip: !cacheReady && "no native engine was installed on this machine yet" }, () => {
  const started = Date.now();
  const r = install({});
  const secs = (Date.now() - started) / 1000;
  assert.equal(r.code, 0, r.err);
  assert.equal(r.status.ok, true, r.err);
  assert.equal(r.status.tensorflow, "2.21.0");
  assert.doesNotMatch(r.err, /downloading|compiling/, "nothing should be downloaded or compiled again");
  assert.ok(secs < 60, `install from the cache took ${secs.toFixed(1)} s`);
  const lib = fs.statSync(path.join(r.dir, "tensorflow", "lib", "libtensorflow_cc.so.2"));
  assert.ok(lib.nlink >= 2, "the 800 MB library should be a hard link into the cache, not a copy");
  assert.equal(r.status.hostMemory, "built");
  assert.ok(fs.existsSync(path.join(r.dir, "host-memory", "host-memory.node")), "the host-memory addon is installed beside the engine");
  assert.equal(r.status.fusedKernels, "built");
  assert.ok(fs.existsSync(path.join(r.dir, "fused", "fused.node")), "the fused-kernels addon is installed beside the engine");
  assert.equal(r.status.signals, "built");
  assert.ok(fs.existsSync(path.join(r.dir, "signals", "signals.node")), "the signals addon is installed beside the engine");
  fs.rmSync(r.dir, { recursive: true, force: true });
});

/** A folder holding an earlier install's status (and, for a working one, its binding). */
function earlierInstall(status: Record<string, unknown>): string {
  const dir = tempDir("native-earlier-");
  fs.mkdirSync(path.join(dir, "tfjs-node", "lib", "napi-v8"), { recursive: true });
  fs.writeFileSync(path.join(dir, "tfjs-node", "lib", "napi-v8", "tfjs_binding.node"), "");
  fs.writeFileSync(path.join(dir, "status.json"), JSON.stringify(status));
  return dir;
}

test("`npx controlnet-ts` (npm exec re-running the postinstall) keeps what is installed: a GPU build, an opt-out", () => {
  for (const status of [{ ok: true, flavour: "gpu" }, { ok: false, reason: "skipped: CONTROLNET_TS_NATIVE=off at install" }]) {
    const dir = earlierInstall(status);
    const before = fs.readFileSync(path.join(dir, "status.json"), "utf8");
    const r = spawnSync(process.execPath, [installer], { cwd: root, env: { ...process.env, CONTROLNET_TS_NATIVE_DIR: dir, CONTROLNET_TS_NATIVE: "", npm_command: "exec" }, encoding: "utf8" });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stderr, "", "nothing rebuilt, nothing said");
    assert.equal(fs.readFileSync(path.join(dir, "status.json"), "utf8"), before);
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("a plain install over a GPU build builds the GPU build again (not the CPU one); CONTROLNET_TS_NATIVE=cpu switches", () => {
  const dir = earlierInstall({ ok: true, flavour: "gpu" });
  const env = { ...process.env, CONTROLNET_TS_NATIVE_DIR: dir, CXX: "/nonexistent/g++", npm_command: "install" };
  const plain = spawnSync(process.execPath, [installer], { cwd: root, env: { ...env, CONTROLNET_TS_NATIVE: "" }, encoding: "utf8" });
  assert.equal(plain.status, 0, plain.stderr);
  assert.match(plain.stderr, /the GPU build of TensorFlow 2\.21\.0, as installed before/);
  // the build failed (no compiler): the earlier one stays
  assert.match(plain.stderr, /the previously installed native engine stays/);
  assert.equal(JSON.parse(fs.readFileSync(path.join(dir, "status.json"), "utf8")).flavour, "gpu");
  const cpu = spawnSync(process.execPath, [installer], { cwd: root, env: { ...env, CONTROLNET_TS_NATIVE: "cpu" }, encoding: "utf8" });
  assert.match(cpu.stderr, /the CPU build of TensorFlow 2\.21\.0 \(/);
  fs.rmSync(dir, { recursive: true, force: true });
});
