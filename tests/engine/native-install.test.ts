/**
 * The native engine's installer (scripts/native/install.mjs), run into a temporary folder: it never fails
 * `npm install`, records why native is missing and the command that adds it, and a second install is a fast copy
 * from the user cache, which it checks (a damaged entry is rebuilt) and which needs no compiler or pip when full.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";

import { nativeMissingReason } from "../../lib/engine/native/load.js";
import { tempDir } from "../helpers.js";

const root = path.resolve(import.meta.dirname, "../..");
const installer = path.join(root, "scripts", "native", "install.mjs");

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

/** A PATH holding only node, python3 and tar: no C++ compiler (what "g++ hidden from PATH" means); without
 *  python3 too when `python` is false. */
function pathWithoutCompiler(python = true): string {
  const bin = tempDir("no-cxx-bin-");
  for (const tool of python ? ["python3", "tar"] : ["tar"]) {
    const found = spawnSync("sh", ["-c", `command -v ${tool}`], { encoding: "utf8" }).stdout.trim();
    if (found) fs.symlinkSync(found, path.join(bin, tool));
  }
  fs.symlinkSync(process.execPath, path.join(bin, "node"));
  return bin;
}

// An empty cache: with a full one no compiler is needed (see below).
test("no C++ compiler: the install still succeeds and records the reason and the fix", () => {
  const r = install({ PATH: pathWithoutCompiler(), CXX: "", CONTROLNET_TS_CACHE_DIR: tempDir("native-empty-cache-") });
  assert.equal(r.code, 0, r.err);
  assert.doesNotMatch(r.err, /downloading/, "the missing compiler is said before anything is downloaded");
  assert.equal(r.status.ok, false);
  assert.match(r.status.reason, /no C\+\+17 compiler found \(tried g\+\+, c\+\+, clang\+\+/);
  assert.equal(r.status.fix, "npm run install-native");
  assert.match(r.err, /not installed: no C\+\+17 compiler found/);
  assert.match(r.err, /the wasm engine runs; once fixed, add native with: npm run install-native/);
});

test("`npm run install-native` (--strict) exits 1 when it cannot build", () => {
  const r = install({ CXX: "/nonexistent/g++", CONTROLNET_TS_CACHE_DIR: tempDir("native-empty-cache-") }, ["--strict"]);
  assert.equal(r.code, 1);
  assert.match(r.status.reason, /tried \/nonexistent\/g\+\+/);
});

test("the opt-out variable skips the build and says how to add it later", () => {
  const r = install({ CONTROLNET_TS_NATIVE: "off" });
  assert.equal(r.code, 0, r.err);
  assert.equal(r.status.ok, false);
  assert.match(r.status.reason, /skipped: CONTROLNET_TS_NATIVE=off/);
  // the value as given
  const zero = install({ CONTROLNET_TS_NATIVE: "0" });
  assert.match(zero.err, /skipped \(CONTROLNET_TS_NATIVE=0\); the wasm engine runs/);
  assert.equal(zero.status.reason, "skipped: CONTROLNET_TS_NATIVE=0 at install");
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
  assert.match(r.stderr, /skipped \(CONTROLNET_TS_NATIVE=off\); the wasm engine runs; add native with: CONTROLNET_TS_NATIVE=cpu npm run install-native/);
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
});

/** The files a working install needs (stand-ins here); a GPU build's tensorflow/nvidia link too. */
const NEEDED = [
  "tensorflow/lib/libtensorflow_cc.so.2", "tensorflow/lib/libtensorflow_framework.so.2", "tfjs-node/lib/napi-v8/tfjs_binding.node",
  "tfjs-node/package.json", "tfjs-node/dist/nodejs_kernel_backend.js", "tfjs-node/dist/register_all_kernels.js",
];

/** A folder holding an earlier install's status and, for a working one, stand-ins of its files with their sizes
 *  recorded as the installer records them. */
function earlierInstall(status: Record<string, unknown>): string {
  const dir = tempDir("native-earlier-");
  const files: Record<string, number> = {};
  if (status.ok) {
    for (const rel of NEEDED) {
      fs.mkdirSync(path.dirname(path.join(dir, rel)), { recursive: true });
      fs.writeFileSync(path.join(dir, rel), `stand-in for ${rel}`);
      files[rel] = fs.statSync(path.join(dir, rel)).size;
    }
    if (status.flavour === "gpu") fs.symlinkSync(dir, path.join(dir, "tensorflow", "nvidia"));
  }
  fs.writeFileSync(path.join(dir, "status.json"), JSON.stringify(status.ok ? { ...status, files } : status));
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
  }
});

test("a plain install over a GPU build builds the GPU build again (not the CPU one); CONTROLNET_TS_NATIVE=cpu switches", () => {
  const dir = earlierInstall({ ok: true, flavour: "gpu" });
  // an empty cache and no compiler: the build fails before any download
  const env = { ...process.env, CONTROLNET_TS_NATIVE_DIR: dir, CXX: "/nonexistent/g++", npm_command: "install", CONTROLNET_TS_CACHE_DIR: tempDir("native-empty-cache-") };
  const plain = spawnSync(process.execPath, [installer], { cwd: root, env: { ...env, CONTROLNET_TS_NATIVE: "" }, encoding: "utf8" });
  assert.equal(plain.status, 0, plain.stderr);
  assert.match(plain.stderr, /the GPU build of TensorFlow 2\.21\.0, as installed before/);
  // the build failed (no compiler): the earlier one stays
  assert.match(plain.stderr, /the previously installed native engine stays/);
  assert.equal(JSON.parse(fs.readFileSync(path.join(dir, "status.json"), "utf8")).flavour, "gpu");
  const cpu = spawnSync(process.execPath, [installer], { cwd: root, env: { ...env, CONTROLNET_TS_NATIVE: "cpu" }, encoding: "utf8" });
  assert.match(cpu.stderr, /the CPU build of TensorFlow 2\.21\.0 \(/);
});

test("a failed install over a broken earlier build says it is broken (not that it stays), and wasm runs until repaired", () => {
  const emptyCache = tempDir("native-empty-cache-");
  const env = { ...process.env, CXX: "/nonexistent/g++", npm_command: "install", CONTROLNET_TS_CACHE_DIR: emptyCache, CONTROLNET_TS_NATIVE: "" };
  // a library gone, or shorter than when it was installed (its recorded size)
  for (const [damage, problem] of [
    [(dir: string) => fs.rmSync(path.join(dir, "tensorflow", "lib", "libtensorflow_cc.so.2")), /tensorflow\/lib\/libtensorflow_cc\.so\.2 is missing/],
    [(dir: string) => fs.writeFileSync(path.join(dir, "tensorflow", "lib", "libtensorflow_framework.so.2"), "cut"), /tensorflow\/lib\/libtensorflow_framework\.so\.2 is 3 bytes, \d+ when installed/],
  ] as const) {
    const dir = earlierInstall({ ok: true, flavour: "gpu" });
    damage(dir);
    const r = spawnSync(process.execPath, [installer], { cwd: root, env: { ...env, CONTROLNET_TS_NATIVE_DIR: dir }, encoding: "utf8" });
    assert.equal(r.status, 0, r.stderr);
    assert.doesNotMatch(r.stderr, /stays/);
    assert.match(r.stderr, new RegExp(`the native engine installed before in ${dir} is broken \\(${problem.source}\\); the wasm engine runs; once fixed, repair it with: CONTROLNET_TS_NATIVE=gpu npm run install-native`));
    // the loader no longer takes it for installed, and says why
    assert.match(nativeMissingReason(dir)!, new RegExp(`^not installed \\(no C\\+\\+17 compiler found .*; the engine installed before is broken \\(${problem.source}\\)\\); add it with: CONTROLNET_TS_NATIVE=gpu npm run install-native$`));
    // a later plain install still builds its flavour
    const again = spawnSync(process.execPath, [installer], { cwd: root, env: { ...env, CONTROLNET_TS_NATIVE_DIR: dir }, encoding: "utf8" });
    assert.match(again.stderr, /the GPU build of TensorFlow 2\.21\.0, as installed before/);
  }
});

test("the opt-out is remembered: a later plain install keeps skipping; install-native or a value builds", () => {
  const dir = tempDir("native-optout-kept-");
  const env = { ...process.env, CONTROLNET_TS_NATIVE_DIR: dir, CXX: "/nonexistent/g++", npm_command: "install", CONTROLNET_TS_CACHE_DIR: tempDir("native-empty-cache-") };
  const off = spawnSync(process.execPath, [installer], { cwd: root, env: { ...env, CONTROLNET_TS_NATIVE: "off" }, encoding: "utf8" });
  assert.equal(off.status, 0, off.stderr);
  const skipped = fs.readFileSync(path.join(dir, "status.json"), "utf8");
  const plain = spawnSync(process.execPath, [installer], { cwd: root, env: { ...env, CONTROLNET_TS_NATIVE: "" }, encoding: "utf8" });
  assert.equal(plain.status, 0, plain.stderr);
  assert.equal(plain.stderr.trim().split("\n").length, 1, plain.stderr);
  assert.match(plain.stderr.trim(), /skipped \(CONTROLNET_TS_NATIVE=off at install, kept by a plain install\); the wasm engine runs; add native with: CONTROLNET_TS_NATIVE=cpu npm run install-native$/);
  assert.equal(fs.readFileSync(path.join(dir, "status.json"), "utf8"), skipped);
  // a value builds (here it fails on the missing compiler, which shows it tried)
  const cpu = spawnSync(process.execPath, [installer], { cwd: root, env: { ...env, CONTROLNET_TS_NATIVE: "cpu" }, encoding: "utf8" });
  assert.match(cpu.stderr, /the CPU build of TensorFlow 2\.21\.0 \(.*\n.*not installed: no C\+\+17 compiler found/);
  // and so does `npm run install-native`, with the variable unset
  fs.writeFileSync(path.join(dir, "status.json"), skipped);
  const strict = spawnSync(process.execPath, [installer, "--strict"], { cwd: root, env: { ...env, CONTROLNET_TS_NATIVE: "", npm_command: "run-script" }, encoding: "utf8" });
  assert.equal(strict.status, 1);
  assert.match(strict.stderr, /the CPU build of TensorFlow 2\.21\.0 \(.*\n.*not installed: no C\+\+17 compiler found/);
});

// --- a full cache: a hard-linked copy of this machine's (the one CONTROLNET_TS_CACHE_DIR or the last install used),
// so the tests may damage it. Its files are shared with the real cache: damage replaces a file, never writes into one.
const sourceCache = process.env.CONTROLNET_TS_CACHE_DIR ?? (cacheReady ? JSON.parse(fs.readFileSync(path.join(root, ".native", "status.json"), "utf8")).cache : "");
const fullCache = cacheReady && !!sourceCache && fs.existsSync(path.join(sourceCache, "native", "tensorflow-cpu-2.21.0", ".complete"));
const noFullCache = !fullCache && "no native engine was installed on this machine yet";

function cacheCopy(): string {
  const copy = tempDir("native-cache-copy-");
  const link = (from: string, to: string) => {
    fs.mkdirSync(to, { recursive: true });
    for (const e of fs.readdirSync(from, { withFileTypes: true })) {
      const [a, b] = [path.join(from, e.name), path.join(to, e.name)];
      if (e.isDirectory()) link(a, b);
      else if (e.isSymbolicLink()) fs.symlinkSync(fs.readlinkSync(a), b);
      else fs.linkSync(a, b);
    }
  };
  // the GPU entry (28k files) is not needed here; half-built entries are not copied
  for (const e of fs.readdirSync(path.join(sourceCache, "native"))) {
    if (!e.startsWith("tensorflow-gpu") && !e.includes(".tmp-")) link(path.join(sourceCache, "native", e), path.join(copy, "native", e));
  }
  return copy;
}

/** Writes a new file in place of `file` (a hard link into the real cache is unlinked, not written through). */
function replaceFile(file: string, contents: Buffer | string): void {
  fs.rmSync(file);
  fs.writeFileSync(file, contents);
}

function entry(cache: string, prefix: string): string {
  const name = fs.readdirSync(path.join(cache, "native")).find((e) => e.startsWith(prefix));
  assert.ok(name, `the cache has no ${prefix}* entry`);
  return path.join(cache, "native", name);
}

/** Temporary folders the installer left beside `dir` (its .tmp-<pid> engine). */
function leftovers(dir: string): string[] {
  return fs.readdirSync(path.dirname(dir)).filter((e) => e.startsWith(`${path.basename(dir)}.tmp-`));
}

test("everything cached: a repair or second install needs neither a compiler nor pip", { skip: noFullCache }, () => {
  const cache = cacheCopy();
  const noTools = { CONTROLNET_TS_CACHE_DIR: cache, PATH: pathWithoutCompiler(false), CXX: "", PYTHON: "/nonexistent/python3" };
  const r = install(noTools);
  assert.equal(r.code, 0, r.err);
  assert.equal(r.status.ok, true, r.err);
  assert.match(r.status.compiler, /^none found \(the cached build in .*addon-tfjs-node-4\.22\.0-tf-2\.21\.0-napi8-/);
  assert.doesNotMatch(r.err, /downloading|compiling|damaged/);
  assert.ok(r.status.files["tensorflow/lib/libtensorflow_cc.so.2"] > 100e6, "the installed files' sizes are recorded");
  // the cached addon damaged: rebuilding it needs the compiler, and the reason says both
  const addon = entry(cache, "addon-tfjs-node-");
  fs.rmSync(path.join(addon, "tfjs_binding.node"));
  const broken = install(noTools);
  assert.match(broken.status.reason, new RegExp(`^the cache entry ${addon} is damaged \\(tfjs_binding\\.node is missing\\) and cannot be rebuilt here: no C\\+\\+17 compiler found`));
});

test("a damaged cache entry is rebuilt: a file missing, a file cut short", { skip: noFullCache }, () => {
  const cache = cacheCopy();
  const hostMemory = entry(cache, "host-memory-");
  const signals = entry(cache, "signals-");
  fs.rmSync(path.join(hostMemory, "host-memory.node"));
  replaceFile(path.join(signals, "signals.node"), fs.readFileSync(path.join(signals, "signals.node")).subarray(0, 4096));
  const r = install({ CONTROLNET_TS_CACHE_DIR: cache });
  assert.equal(r.code, 0, r.err);
  assert.equal(r.status.ok, true, r.err);
  assert.match(r.err, new RegExp(`the cache entry ${hostMemory} is damaged \\(host-memory\\.node is missing\\); rebuilding it`));
  // sizes recorded in the entry's .complete, or (an entry an earlier installer made) its ELF headers reach further
  assert.match(r.err, new RegExp(`the cache entry ${signals} is damaged \\(signals\\.node (is 4096 bytes, \\d+ when cached|is cut short: 4096 bytes, its headers reach \\d+)\\); rebuilding it`));
  assert.match(r.err, /compiling the host-memory addon/);
  assert.equal(r.status.hostMemory, "built");
  assert.equal(r.status.signals, "built");
  assert.ok(fs.statSync(path.join(signals, "signals.node")).size > 4096);
  assert.match(fs.readFileSync(path.join(hostMemory, ".complete"), "utf8"), /"host-memory\.node":\d+/, "the rebuilt entry records its files' sizes");
  // the next install trusts it again
  const again = install({ CONTROLNET_TS_CACHE_DIR: cache });
  assert.equal(again.status.ok, true, again.err);
  assert.doesNotMatch(again.err, /damaged|compiling/);
});

test("a TensorFlow library missing or cut short in the cache: one line naming the entry, never ENOENT or SIGBUS", { skip: noFullCache }, () => {
  for (const [lib, damage, problem] of [
    ["libtensorflow_cc.so.2", (f: string) => fs.rmSync(f), "is missing"],
    ["libtensorflow_framework.so.2", (f: string) => replaceFile(f, fs.readFileSync(f).subarray(0, 1 << 20)), "(is 1048576 bytes, \\d+ when cached|is cut short: 1048576 bytes, its headers reach \\d+)"],
  ] as const) {
    const cache = cacheCopy();
    const tf = path.join(cache, "native", "tensorflow-cpu-2.21.0");
    damage(path.join(tf, "tensorflow", lib));
    // without pip it cannot be downloaded again: it says so (with pip the entry is rebuilt, as on a miss)
    const r = install({ CONTROLNET_TS_CACHE_DIR: cache, PYTHON: "/nonexistent/python3" });
    assert.equal(r.code, 0, r.err);
    assert.equal(r.status.ok, false);
    assert.match(r.status.reason, new RegExp(`^the cache entry ${tf} is damaged \\(tensorflow/${lib.replace(/\./g, "\\.")} ${problem}\\) and cannot be rebuilt here: no python3 with pip found \\(tried /nonexistent/python3;`));
    assert.equal(r.status.fix, "npm run install-native");
    assert.doesNotMatch(r.err, /ENOENT|SIGBUS|unexpected error/);
  }
});

test("the smoke test killed by a signal: said as such, and a SIGBUS's fix deletes the cache entries it loaded", { skip: noFullCache }, () => {
  const cache = cacheCopy();
  // the one stand-in here: the smoke-test child (only it runs scripts/native/smoke.ts) dies of SIGBUS as it does on a
  // library cut short after the cache's check
  const hook = path.join(tempDir("native-sigbus-"), "sigbus.mjs");
  fs.writeFileSync(hook, `if (process.argv[1]?.endsWith("smoke.ts")) process.kill(process.pid, "SIGBUS");\n`);
  const r = install({ CONTROLNET_TS_CACHE_DIR: cache, NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ""} --import=${hook}` });
  assert.equal(r.code, 0, r.err);
  assert.equal(r.status.ok, false);
  assert.match(r.status.reason, /^the built engine failed to load: killed by SIGBUS \(a damaged library in the cache\)$/);
  const addon = entry(cache, "addon-tfjs-node-");
  assert.equal(r.status.fix, `rm -rf ${path.join(cache, "native", "tensorflow-cpu-2.21.0")} ${addon} && npm run install-native`);
  assert.deepEqual(leftovers(r.dir), []);
});

test("an engine that fails to assemble leaves no temporary folder behind", { skip: noFullCache }, () => {
  const cache = cacheCopy();
  // a file where the addon's folder goes: assembling fails after the temporary engine is begun
  fs.writeFileSync(path.join(cache, "native", "tfjs-node-4.22.0", "package", "lib"), "");
  const r = install({ CONTROLNET_TS_CACHE_DIR: cache });
  assert.equal(r.code, 0, r.err);
  assert.match(r.status.reason, /^unexpected error: ENOTDIR/);
  assert.equal(r.status.fix, "npm run install-native", "the cache entries check out: nothing to delete");
  assert.deepEqual(leftovers(r.dir), []);
});
