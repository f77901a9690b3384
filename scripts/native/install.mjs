#!/usr/bin/env node
/**
 * Installs the native engine: tfjs-node 4.22's own N-API addon (unchanged source from the npm package) compiled
 * against the TensorFlow C API that PyPI's TensorFlow wheels carry. Runs as our `postinstall` and as
 * `npm run install-native`. Only the package registries are used: the npm registry (`npm pack`) and PyPI (`pip`).
 * tfjs-node's own install script (which downloads libtensorflow 2.9.1 from a Google storage host) never runs.
 *
 * Result: `<package>/.native/` holding
 *   tensorflow/lib/      libtensorflow_cc.so.2 + libtensorflow_framework.so.2 (hard links into the user cache)
 *   tensorflow/include/  the C API headers (for addons of ours built against the same library, e.g. collectives)
 *   tfjs-node/           the tfjs-node package; lib/napi-v8/tfjs_binding.node is our build of its addon
 *   collective/, host-memory/, fused/, signals/   our optional addons (native/*: data-parallel collectives, glibc's
 *                        malloc settings, fused kernels, signals held back from TensorFlow's threads), each built
 *                        (against the same library where it links one) when it can be
 *   status.json          what was installed, or why not (lib/engine reads it to explain the engine choice)
 *
 * Environment: CONTROLNET_TS_NATIVE = cpu | gpu | off (unset: the flavour installed before, else cpu, so a later
 * plain `npm install` keeps a GPU build); CONTROLNET_TS_CACHE_DIR (default
 * $XDG_CACHE_HOME/controlnet-ts or ~/.cache/controlnet-ts); CXX; PYTHON.
 * As a postinstall it never fails the install: when the native engine cannot be built, wasm runs and status.json
 * says why and how to add native. `--strict` (used by `npm run install-native`) exits 1 instead.
 */
import { spawnSync } from "node:child_process";
import { createRequire } from "node:module";
import { createHash } from "node:crypto";
import { nodeApiIncludeDir } from "./node-api.mjs";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const TENSORFLOW_VERSION = "2.21.0";
export const TFJS_NODE_VERSION = "4.22.0";
/** napi-v8 is what tfjs-node's package.json resolves to on Node 18–24 (napi_versions 3..8). */
const NAPI_VERSION = 8;
const FIX_COMMAND = "npm run install-native";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
const nativeDir = process.env.CONTROLNET_TS_NATIVE_DIR ? path.resolve(process.env.CONTROLNET_TS_NATIVE_DIR) : path.join(root, ".native");
const strict = process.argv.includes("--strict");

class Unavailable extends Error {
  /** `fix`: the command that adds native once this is fixed, when it is not the plain install-native. */
  constructor(message, fix) {
    super(message);
    this.fix = fix;
  }
}

function log(msg) {
  process.stderr.write(`controlnet-ts native engine: ${msg}\n`);
}

function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { encoding: "utf8", maxBuffer: 64 * 1024 * 1024, ...opts });
  return { ok: !r.error && r.status === 0, status: r.status, error: r.error, stdout: r.stdout ?? "", stderr: r.stderr ?? "" };
}

function mustRun(what, cmd, args, opts) {
  const r = run(cmd, args, opts);
  if (!r.ok) {
    const detail = (r.error?.message ?? r.stderr.trim().split("\n").slice(-3).join(" | ")) || `exit ${r.status}`;
    throw new Unavailable(`${what} failed (${cmd} ${args.slice(0, 3).join(" ")} …): ${detail}`);
  }
  return r;
}

/** The flavour to build: the variable's, else what is installed (a plain `npm install` must not turn a GPU build
 *  into the CPU one), else cpu; null for the opt-out. */
function flavourFromEnv(prev) {
  const v = (process.env.CONTROLNET_TS_NATIVE ?? "").trim().toLowerCase();
  if (["", "1", "on", "true"].includes(v)) return prev?.ok && prev.flavour === "gpu" ? "gpu" : "cpu";
  if (v === "cpu") return "cpu";
  if (v === "gpu") return "gpu";
  if (["0", "off", "false", "no", "skip", "wasm"].includes(v)) return null;
  // the fix sets a valid value for that one command (an exported bad value would fail it again)
  throw new Unavailable(`CONTROLNET_TS_NATIVE='${process.env.CONTROLNET_TS_NATIVE}' is not one of cpu, gpu, off`, `CONTROLNET_TS_NATIVE=cpu ${FIX_COMMAND}`);
}

function checkPlatform() {
  if (process.platform !== "linux" || process.arch !== "x64") {
    throw new Unavailable(`the native engine is built for Linux x86_64 only (this is ${process.platform} ${process.arch})`);
  }
  const glibc = process.report?.getReport?.().header?.glibcVersionRuntime;
  if (!glibc) throw new Unavailable("the native engine needs glibc (TensorFlow's wheels are manylinux; musl is not supported)");
  const [maj, min] = glibc.split(".").map(Number);
  if (maj < 2 || (maj === 2 && min < 27)) throw new Unavailable(`TensorFlow ${TENSORFLOW_VERSION}'s wheel needs glibc ≥ 2.27 (found ${glibc})`);
}

function findCompiler() {
  const candidates = process.env.CXX ? [process.env.CXX] : ["g++", "c++", "clang++"];
  for (const c of candidates) if (run(c, ["--version"]).ok) return c;
  throw new Unavailable(`no C++17 compiler found (tried ${candidates.join(", ")}; install g++ or set CXX)`);
}

function findPip() {
  const candidates = process.env.PYTHON ? [process.env.PYTHON] : ["python3", "python"];
  for (const py of candidates) if (run(py, ["-m", "pip", "--version"]).ok) return py;
  throw new Unavailable(`no python3 with pip found (tried ${candidates.join(", ")}; pip only downloads TensorFlow's wheel, whose C library the engine uses)`);
}

function cacheRoot() {
  if (process.env.CONTROLNET_TS_CACHE_DIR) return path.resolve(process.env.CONTROLNET_TS_CACHE_DIR);
  const base = process.env.XDG_CACHE_HOME || path.join(os.homedir(), ".cache");
  return path.join(base, "controlnet-ts");
}

/** mkdir -p, one level at a time: Node's recursive mkdirSync spins for ever under a path it cannot create in some
 *  filesystems (e.g. a cache dir set under /proc), where a plain mkdir fails at once with a reason. */
function makeDir(dir) {
  const missing = [];
  for (let d = path.resolve(dir); !fs.existsSync(d); d = path.dirname(d)) missing.unshift(d);
  for (const d of missing) fs.mkdirSync(d);
}

/** Builds `dir` through `build(tmp)` in a sibling temporary folder renamed into place, so a crash leaves no half entry. */
function cached(dir, build) {
  if (fs.existsSync(path.join(dir, ".complete"))) return dir;
  const tmp = `${dir}.tmp-${process.pid}`;
  fs.rmSync(tmp, { recursive: true, force: true });
  makeDir(tmp);
  try {
    build(tmp);
    fs.writeFileSync(path.join(tmp, ".complete"), new Date().toISOString() + "\n");
    fs.rmSync(dir, { recursive: true, force: true });
    fs.renameSync(tmp, dir);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  return dir;
}

/** The C headers the addon includes (tensorflow/c, the ctstring headers, and xla/tsl/c which 2.21's tf_status.h uses). */
const HEADER_PREFIXES = [
  "tensorflow/include/tensorflow/c/",
  "tensorflow/include/tensorflow/core/platform/ctstring",
  "tensorflow/include/tsl/platform/ctstring",
  "tensorflow/include/xla/tsl/c/",
];
const LIBRARIES = ["libtensorflow_cc.so.2", "libtensorflow_framework.so.2"];

/** Extracts members of a wheel (a zip) with Python's zipfile, which streams: the 800 MB library never sits in memory. */
function extractFromWheel(python, wheel, prefixes, dest) {
  const code = [
    "import sys, zipfile, shutil, os",
    "wheel, dest, prefixes = sys.argv[1], sys.argv[2], sys.argv[3:]",
    "with zipfile.ZipFile(wheel) as z:",
    "    for info in z.infolist():",
    "        if info.is_dir() or not any(info.filename.startswith(p) for p in prefixes): continue",
    "        out = os.path.join(dest, info.filename)",
    "        os.makedirs(os.path.dirname(out), exist_ok=True)",
    "        with z.open(info) as src, open(out, 'wb') as dst: shutil.copyfileobj(src, dst, 1 << 20)",
  ].join("\n");
  mustRun("extracting TensorFlow's wheel", python, ["-c", code, wheel, dest, ...prefixes]);
}

/** TensorFlow's C library and headers from PyPI: tensorflow-cpu (CPU) or tensorflow[and-cuda] (GPU, with CUDA 12 wheels). */
function tensorflowLibraries(python, flavour) {
  const dir = path.join(cacheRoot(), "native", `tensorflow-${flavour}-${TENSORFLOW_VERSION}`);
  return cached(dir, (tmp) => {
    if (flavour === "cpu") {
      log(`downloading tensorflow-cpu==${TENSORFLOW_VERSION} from PyPI (≈270 MB, once; cached in ${dir})`);
      const dl = path.join(tmp, "download");
      // The wheel is only a source of the C library, so its Python tag does not matter: ask for one that exists
      // whatever the local Python is (cp311 and cp312 carry byte-identical libraries).
      mustRun("pip download", python, [
        "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
        "--platform", "manylinux_2_27_x86_64", "--disable-pip-version-check", "-q", "-d", dl, `tensorflow-cpu==${TENSORFLOW_VERSION}`,
      ], { stdio: ["ignore", "inherit", "pipe"] });
      const wheel = fs.readdirSync(dl).find((f) => f.endsWith(".whl"));
      if (!wheel) throw new Unavailable("pip download produced no wheel");
      extractFromWheel(python, path.join(dl, wheel), [...HEADER_PREFIXES, ...LIBRARIES.map((l) => `tensorflow/${l}`)], tmp);
      fs.rmSync(dl, { recursive: true, force: true });
    } else {
      log(`installing tensorflow[and-cuda]==${TENSORFLOW_VERSION} from PyPI (≈3.5 GB with the CUDA 12 / cuDNN 9 wheels, once; cached in ${dir})`);
      mustRun("pip install", python, [
        "-m", "pip", "install", "--only-binary=:all:", "--disable-pip-version-check", "-q", "--target", path.join(tmp, "site"),
        `tensorflow[and-cuda]==${TENSORFLOW_VERSION}`,
      ], { stdio: ["ignore", "inherit", "pipe"] });
      // The libraries stay where pip put them: their RUNPATH ($ORIGIN/../nvidia/<pkg>/lib) finds the CUDA wheels.
      fs.symlinkSync(path.join("site", "tensorflow"), path.join(tmp, "tensorflow"));
    }
    for (const lib of LIBRARIES) {
      if (!fs.existsSync(path.join(tmp, "tensorflow", lib))) throw new Unavailable(`TensorFlow's wheel has no ${lib}`);
    }
  });
}

/** tfjs-node's package from the npm registry, unpacked (its install script is never run). */
function tfjsNodePackage() {
  const dir = path.join(cacheRoot(), "native", `tfjs-node-${TFJS_NODE_VERSION}`);
  return cached(dir, (tmp) => {
    const npm = process.env.npm_execpath
      ? [process.execPath, [process.env.npm_execpath]]
      : ["npm", []];
    mustRun("npm pack", npm[0], [...npm[1], "pack", `@tensorflow/tfjs-node@${TFJS_NODE_VERSION}`, "--pack-destination", tmp, "--silent"]);
    const tgz = fs.readdirSync(tmp).find((f) => f.endsWith(".tgz"));
    if (!tgz) throw new Unavailable("npm pack produced no tarball");
    mustRun("unpacking tfjs-node", "tar", ["xzf", path.join(tmp, tgz), "-C", tmp]);
    fs.rmSync(path.join(tmp, tgz));
  });
}

function nodeApiInclude() {
  const found = nodeApiIncludeDir();
  if (!found) throw new Unavailable("Node-API headers not found (node_api.h; the dependency node-api-headers provides them)");
  return found;
}

/** Compiles tfjs-node's addon source, unchanged, against TensorFlow's C API (a cached build per version pair). */
function buildAddon(cxx, tfDir, pkgDir) {
  const compilerId = run(cxx, ["--version"]).stdout.split("\n")[0].replace(/[^\w.-]+/g, "_").slice(0, 60);
  const dir = path.join(cacheRoot(), "native", `addon-tfjs-node-${TFJS_NODE_VERSION}-tf-${TENSORFLOW_VERSION}-napi${NAPI_VERSION}-${compilerId}`);
  return cached(dir, (tmp) => {
    log(`compiling tfjs-node's addon against TensorFlow ${TENSORFLOW_VERSION}'s C API with ${cxx} (≈30 s, once)`);
    const src = path.join(pkgDir, "package", "binding");
    const libDir = path.join(tfDir, "tensorflow");
    const include = path.join(libDir, "include");
    mustRun("compiling the addon", cxx, [
      "-std=c++17", "-O2", "-fPIC", "-shared", "-fvisibility=hidden", "-w",
      `-DNAPI_VERSION=${NAPI_VERSION}`, "-DNODE_ADDON_API_DISABLE_DEPRECATED",
      "-I", nodeApiInclude(), "-I", include, "-I", path.join(pkgDir, "package"),
      path.join(src, "tfjs_backend.cc"), path.join(src, "tfjs_binding.cc"),
      "-L", libDir, ...LIBRARIES.map((l) => `-l:${l}`),
      // Installed at .native/tfjs-node/lib/napi-v8/: the libraries are at .native/tensorflow/lib.
      "-Wl,-rpath,$ORIGIN/../../../tensorflow/lib", "-Wl,--no-as-needed",
      "-o", path.join(tmp, "tfjs_binding.node"),
    ]);
  });
}

/**
 * Our collective-ops addon (native/collective, data-parallel training on TensorFlow's collectives), built by
 * scripts/native/build-collective.mjs against the same library; cached per source hash. Laid out as in .native
 * (collective/ beside tensorflow/lib) so its relative rpath holds once copied there. Optional: without it the engine
 * works and `controlnet-ts launch` with more than one process says what is missing.
 */
function buildCollective(cxx, tfDir) {
  const hash = sourceHash(path.join(root, "native", "collective", "collective.cc"));
  const dir = path.join(cacheRoot(), "native", `collective-${hash}-tf-${TENSORFLOW_VERSION}`);
  return cached(dir, (tmp) => {
    log("compiling the collective-ops addon (data-parallel training) against the same library (≈20 s, once)");
    const tf = fs.realpathSync(path.join(tfDir, "tensorflow"));
    fs.mkdirSync(path.join(tmp, "tensorflow"));
    fs.symlinkSync(tf, path.join(tmp, "tensorflow", "lib"));
    mustRun("compiling the collective-ops addon", process.execPath, [
      path.join(root, "scripts", "native", "build-collective.mjs"), "--include", path.join(tf, "include"),
      "--lib", path.join(tmp, "tensorflow", "lib"), "--out", path.join(tmp, "collective", "collective.node"),
    ], { env: { ...process.env, CXX: cxx } });
  });
}

/**
 * One of our plain N-API addons that do not link TensorFlow (native/<name>/<name>.cc → <name>.node), cached per source
 * hash: host-memory (glibc's malloc settings the engine's tensors need; without it TensorFlow keeps its own pool) and
 * signals (asynchronous signals held back from the threads running TensorFlow's kernels; without it the engine runs
 * unguarded, and describeEngine says so). Each addon's header says why.
 */
function buildPlainAddon(cxx, name, extra = []) {
  const src = path.join(root, "native", name, `${name}.cc`);
  return cached(path.join(cacheRoot(), "native", `${name}-${sourceHash(src)}`), (tmp) => {
    log(`compiling the ${name} addon (≈2 s, once)`);
    compileOurAddon(cxx, name.replace(/-/g, "_"), src, path.join(tmp, `${name}.node`), extra);
  });
}

/**
 * Our fused-kernels addon (native/fused: TensorFlow ops of our own through TF's C kernel API — attention that never
 * materialises its score maps, GroupNorm+SiLU in one pass), linked to the engine's libtensorflow_framework.so.2;
 * cached per source hash. Optional: without it TensorFlow's own ops run them, and describeEngine says so.
 */
function buildFused(cxx, tfDir) {
  const dir = path.join(root, "native", "fused");
  const src = path.join(dir, "fused.cc");
  const hash = sourceHash(...fs.readdirSync(dir).sort().map((f) => path.join(dir, f)));
  return cached(path.join(cacheRoot(), "native", `fused-${hash}-tf-${TENSORFLOW_VERSION}`), (tmp) => {
    log("compiling the fused-kernels addon against the same library (≈15 s, once)");
    const tf = fs.realpathSync(path.join(tfDir, "tensorflow"));
    compileOurAddon(cxx, "fused", src, path.join(tmp, "fused.node"), [
      "-O3", "-Wno-psabi", "-I", path.join(tf, "include"), path.join(tf, "libtensorflow_framework.so.2"),
      // installed at .native/fused/: the library is at .native/tensorflow/lib
      "-Wl,-rpath,$ORIGIN/../tensorflow/lib",
    ]);
  });
}

/** One N-API addon of ours from one source file (the engine's own addon is tfjs-node's, built by buildAddon). */
function compileOurAddon(cxx, moduleName, src, out, extra = []) {
  mustRun(`compiling the ${moduleName.replace("_", "-")} addon`, cxx, [
    "-std=c++17", "-O2", "-fPIC", "-shared", "-fvisibility=hidden", `-DNODE_GYP_MODULE_NAME=${moduleName}`,
    `-DNAPI_VERSION=${NAPI_VERSION}`, "-I", nodeApiInclude(), src, "-o", out, ...extra,
  ]);
}

/** Cache key of one of our addons: its sources change, it is rebuilt. */
function sourceHash(...files) {
  const hash = createHash("sha256");
  for (const f of files) hash.update(fs.readFileSync(f));
  return hash.digest("hex").slice(0, 12);
}

/**
 * Builds one of our optional addons: { dir, status } with status "built", or the reason it was not (logged with what
 * the engine does without it), which lands in status.json.
 */
function optionalAddon(build, without) {
  try {
    return { dir: build(), status: "built" };
  } catch (err) {
    if (!(err instanceof Unavailable)) throw err;
    log(`${without}: ${err.message}`);
    return { dir: null, status: err.message };
  }
}

/** Hard links (same filesystem) or copies a tree: the install survives a cleared cache. */
function linkTree(from, to) {
  makeDir(to);
  for (const e of fs.readdirSync(from, { withFileTypes: true })) {
    const a = path.join(from, e.name);
    const b = path.join(to, e.name);
    if (e.isDirectory()) linkTree(a, b);
    else if (e.isSymbolicLink()) fs.symlinkSync(fs.readlinkSync(a), b);
    else linkFile(a, b);
  }
}

function linkFile(a, b) {
  try {
    fs.linkSync(a, b);
  } catch {
    fs.copyFileSync(a, b);
  }
}

function assemble(flavour, tfDir, pkgDir, addonDir, ours) {
  const tmp = `${nativeDir}.tmp-${process.pid}`;
  fs.rmSync(tmp, { recursive: true, force: true });
  const tfSrc = fs.realpathSync(path.join(tfDir, "tensorflow"));
  linkTree(path.join(tfSrc, "include"), path.join(tmp, "tensorflow", "include"));
  makeDir(path.join(tmp, "tensorflow", "lib"));
  for (const lib of LIBRARIES) linkFile(path.join(tfSrc, lib), path.join(tmp, "tensorflow", "lib", lib));
  if (flavour === "gpu") {
    // TensorFlow's libraries find the CUDA wheels at $ORIGIN/../nvidia/<pkg>/lib ($ORIGIN = tensorflow/lib here).
    fs.symlinkSync(path.join(path.dirname(tfSrc), "nvidia"), path.join(tmp, "tensorflow", "nvidia"));
  }
  linkTree(path.join(pkgDir, "package"), path.join(tmp, "tfjs-node"));
  linkRuntimeDependencies(tmp);
  const modulePath = path.join(tmp, "tfjs-node", "lib", `napi-v${NAPI_VERSION}`);
  makeDir(modulePath);
  fs.copyFileSync(path.join(addonDir, "tfjs_binding.node"), path.join(modulePath, "tfjs_binding.node"));
  // our optional addons, each in its own folder beside tensorflow/ (their rpaths are relative to it)
  for (const [name, file, dir] of ours) {
    if (!dir) continue;
    fs.mkdirSync(path.join(tmp, name));
    fs.copyFileSync(path.join(dir, file), path.join(tmp, name, path.basename(file)));
  }
  return tmp;
}

/**
 * tfjs-node's JS requires @tensorflow/tfjs(-core) and google-protobuf by name; they must be *our* instances (one tfjs
 * engine in the process) wherever .native lives, so .native/node_modules links to the node_modules folder that holds
 * our @tensorflow/tfjs (node resolves modules by real path, so both names give the same instance).
 */
function linkRuntimeDependencies(nativeRoot) {
  const tfjs = createRequire(path.join(root, "package.json")).resolve("@tensorflow/tfjs/package.json");
  const modules = path.dirname(path.dirname(path.dirname(tfjs)));
  fs.symlinkSync(path.relative(nativeRoot, modules), path.join(nativeRoot, "node_modules"));
}

/** Loads the assembled engine in a child process (a broken library must not take this script down). */
function smokeTest(dir) {
  const r = run(process.execPath, ["--import", "tsx", path.join(root, "scripts", "native", "smoke.ts")], {
    cwd: root,
    env: { ...process.env, CONTROLNET_TS_NATIVE_DIR: dir, CONTROLNET_TS_BACKEND: "node" },
    timeout: 120_000,
  });
  if (!r.ok) {
    const lines = r.stderr.split("\n").map((l) => l.trim()).filter(Boolean);
    const line = (lines.find((l) => /^(\w*Error|Error)\b/.test(l)) ?? lines.pop() ?? r.error?.message ?? `exit ${r.status}`).slice(0, 300);
    throw new Unavailable(`the built engine failed to load: ${line}`);
  }
  return JSON.parse(r.stdout.trim().split("\n").pop());
}

function writeStatus(dir, status) {
  makeDir(dir);
  const file = path.join(dir, "status.json");
  fs.writeFileSync(`${file}.tmp`, JSON.stringify(status, null, 2) + "\n");
  fs.renameSync(`${file}.tmp`, file);
}

function swapInto(tmp) {
  const old = `${nativeDir}.old-${process.pid}`;
  if (fs.existsSync(nativeDir)) fs.renameSync(nativeDir, old);
  fs.renameSync(tmp, nativeDir);
  fs.rmSync(old, { recursive: true, force: true });
}

function main() {
  const started = Date.now();
  const prev = readStatus();
  // `npx controlnet-ts` in a checkout installs the package into npx's cache as a link to it, which runs this
  // postinstall again (npm 10 on every call): what is installed (a GPU build, an opt-out) is kept.
  if (process.env.npm_command === "exec" && prev && !process.env.CONTROLNET_TS_NATIVE) {
    return 0;
  }
  let flavour;
  try {
    flavour = flavourFromEnv(prev);
    if (flavour === null) {
      writeStatus(nativeDir, { ok: false, reason: "skipped: CONTROLNET_TS_NATIVE=off at install", fix: `CONTROLNET_TS_NATIVE=cpu ${FIX_COMMAND}` });
      log("skipped (CONTROLNET_TS_NATIVE=off); the wasm engine runs");
      return 0;
    }
    const kept = !process.env.CONTROLNET_TS_NATIVE && prev?.ok && prev.flavour === flavour ? ", as installed before" : "";
    log(`the ${flavour.toUpperCase()} build of TensorFlow ${TENSORFLOW_VERSION}${kept} (CONTROLNET_TS_NATIVE=cpu|gpu|off chooses)`);
    checkPlatform();
    const cxx = findCompiler();
    const python = findPip();
    const tfDir = tensorflowLibraries(python, flavour);
    const pkgDir = tfjsNodePackage();
    const addonDir = buildAddon(cxx, tfDir, pkgDir);
    const collective = optionalAddon(() => buildCollective(cxx, tfDir), "the collective-ops addon (multi-process training) was not built");
    const hostMemory = optionalAddon(() => buildPlainAddon(cxx, "host-memory"), "the host-memory addon was not built (TensorFlow keeps its own memory pool)");
    const fused = optionalAddon(() => buildFused(cxx, tfDir), "the fused-kernels addon was not built (attention and GroupNorm run as TensorFlow's ops)");
    const signals = optionalAddon(() => buildPlainAddon(cxx, "signals", ["-pthread"]), "the signals addon was not built (a signal during a TensorFlow op may corrupt memory)");
    const tmp = assemble(flavour, tfDir, pkgDir, addonDir, [
      ["collective", "collective/collective.node", collective.dir],
      ["host-memory", "host-memory.node", hostMemory.dir],
      ["fused", "fused.node", fused.dir],
      ["signals", "signals.node", signals.dir],
    ]);
    let smoke;
    try {
      smoke = smokeTest(tmp);
    } catch (err) {
      fs.rmSync(tmp, { recursive: true, force: true });
      throw err;
    }
    writeStatus(tmp, {
      ok: true,
      flavour,
      tensorflow: TENSORFLOW_VERSION,
      tfjsNode: TFJS_NODE_VERSION,
      compiler: cxx,
      cache: cacheRoot(),
      gpuDevice: smoke.gpu,
      collective: collective.status,
      hostMemory: hostMemory.status,
      fusedKernels: fused.status,
      signals: signals.status,
      installedAt: new Date().toISOString(),
    });
    swapInto(tmp);
    log(`installed (TensorFlow ${TENSORFLOW_VERSION} ${flavour}, ${((Date.now() - started) / 1000).toFixed(0)} s) in ${nativeDir}`);
    return 0;
  } catch (err) {
    // Anything else (an unwritable cache, a full disk) is also a reason to run on wasm, never a failed `npm install`.
    const reason = err instanceof Unavailable ? err.message : `unexpected error: ${err?.message ?? err}`;
    const fix = err?.fix ?? (flavour === "gpu" ? `CONTROLNET_TS_NATIVE=gpu ${FIX_COMMAND}` : FIX_COMMAND);
    // A previous working install stays usable; only a missing one records the reason.
    try {
      if (!prev?.ok) writeStatus(nativeDir, { ok: false, reason, fix });
    } catch (e) {
      log(`could not record the reason in ${nativeDir} (${e.message})`);
    }
    log(`not installed: ${reason}`);
    log(prev?.ok ? `the previously installed native engine stays in ${nativeDir}` : `the wasm engine runs; once fixed, add native with: ${fix}`);
    return strict ? 1 : 0;
  }
}

function readStatus() {
  try {
    return JSON.parse(fs.readFileSync(path.join(nativeDir, "status.json"), "utf8"));
  } catch {
    return null;
  }
}

process.exitCode = main();
