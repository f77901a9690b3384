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
 * plain `npm install` keeps a GPU build, and an opt-out: only `npm run install-native` or a value builds after one);
 * CONTROLNET_TS_CACHE_DIR (default $XDG_CACHE_HOME/controlnet-ts or ~/.cache/controlnet-ts); CXX; PYTHON.
 * Each cache entry's `.complete` records its files' sizes, checked before reuse: a damaged entry is rebuilt. The
 * compiler and pip are needed only for what the cache lacks (a repair or a second install from a full cache needs
 * neither).
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
  /** `fix`: the command that adds native once this is fixed, when it is not the plain install-native.
   *  `cacheDirs`: cache entries at fault, which the fix deletes first. */
  constructor(message, fix, cacheDirs) {
    super(message);
    this.fix = fix;
    this.cacheDirs = cacheDirs;
  }
}

function log(msg) {
  process.stderr.write(`controlnet-ts native engine: ${msg}\n`);
}

function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { encoding: "utf8", maxBuffer: 64 * 1024 * 1024, ...opts });
  return { ok: !r.error && r.status === 0, status: r.status, signal: r.signal, error: r.error, stdout: r.stdout ?? "", stderr: r.stderr ?? "" };
}

function mustRun(what, cmd, args, opts) {
  const r = run(cmd, args, opts);
  if (!r.ok) {
    const detail = (r.error?.message ?? r.stderr.trim().split("\n").slice(-3).join(" | ")) || (r.signal ? `killed by ${r.signal}` : `exit ${r.status}`);
    throw new Unavailable(`${what} failed (${cmd} ${args.slice(0, 3).join(" ")} …): ${detail}`);
  }
  return r;
}

/** The flavour to build: the variable's, else what is installed (a plain `npm install` must not turn a GPU build
 *  into the CPU one; a broken one's status keeps its flavour as `flavourBefore`), else cpu; null for the opt-out. */
function flavourFromEnv(prev) {
  const v = (process.env.CONTROLNET_TS_NATIVE ?? "").trim().toLowerCase();
  if (["", "1", "on", "true"].includes(v)) return installedFlavour(prev) === "gpu" ? "gpu" : "cpu";
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

/** The flavour of the engine installed before (also one found broken by a failed install since). */
function installedFlavour(prev) {
  return prev?.ok ? prev.flavour : prev?.flavourBefore;
}

/** The opt-out recorded by an earlier install ("skipped: CONTROLNET_TS_NATIVE=<value> at install"), else null. */
function earlierOptOut(prev) {
  return prev && !prev.ok && /^skipped: CONTROLNET_TS_NATIVE=/.test(prev.reason ?? "") ? prev.reason : null;
}

/** `f()` once, when first asked for (its Unavailable too): the compiler and pip are looked for only when needed. */
function lazily(f) {
  let result;
  const get = () => {
    result ??= (() => {
      try {
        return { value: f() };
      } catch (err) {
        return { err };
      }
    })();
    if (result.err) throw result.err;
    return result.value;
  };
  get.found = () => result?.value ?? null;
  return get;
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

/**
 * The cache. Each entry's `.complete` marker records the size of every file in it (and every symlink's target), and
 * an entry is reused only when they still match; else it is rebuilt as on a miss. Sizes, not hashes: what happens
 * to a local cache — a file deleted, a copy or an extraction cut short, a full disk — changes sizes, which a stat
 * sees (the GPU entry's 28,846 files: ~0.5 s). A SHA-256 would also see same-size corruption, but it costs a full
 * read on every install: ~1.3 s for the CPU entry's 850 MB here and ~10 s for the GPU entry's 3.5 GB, where reuse
 * is meant to take seconds. Markers of earlier installs (a date only) are checked once by their required files and
 * the ELF structure of their libraries (a cut-short one ends before its section headers), then given the sizes.
 */
const OK = null;
const ABSENT = "absent";
const entryStates = new Map();

/** OK, ABSENT (never built), or what is wrong with the entry (one phrase); `fresh` ignores this run's earlier answer. */
function entryState(dir, required = [], fresh = false) {
  if (!fresh && entryStates.has(dir)) return entryStates.get(dir);
  const state = checkEntry(dir, required);
  entryStates.set(dir, state);
  return state;
}

function checkEntry(dir, required) {
  const marker = path.join(dir, ".complete");
  let text;
  try {
    text = fs.readFileSync(marker, "utf8");
  } catch {
    return ABSENT;
  }
  let manifest = null;
  try {
    manifest = JSON.parse(text);
  } catch {
    // an earlier installer's marker (a date)
  }
  if (manifest?.files) {
    for (const [rel, size] of Object.entries(manifest.files)) {
      let st;
      try {
        st = fs.lstatSync(path.join(dir, rel));
      } catch {
        return `${rel} is missing`;
      }
      if (!st.isFile()) return `${rel} is no longer a file`;
      if (st.size !== size) return `${rel} is ${st.size} bytes, ${size} when cached`;
    }
    for (const [rel, target] of Object.entries(manifest.links ?? {})) {
      let now;
      try {
        now = fs.readlinkSync(path.join(dir, rel));
      } catch {
        return `${rel} is missing`;
      }
      if (now !== target) return `${rel} points to ${now}, ${target} when cached`;
    }
  }
  for (const rel of required) {
    const file = path.join(dir, rel);
    if (!fs.existsSync(file)) return `${rel} is missing`;
    if (fs.statSync(file).isFile() && fs.statSync(file).size === 0) return `${rel} is empty`;
  }
  if (!manifest?.files) {
    const contents = entryContents(dir);
    for (const [rel, size] of Object.entries(contents.files)) {
      const problem = isLibrary(rel) ? elfProblem(path.join(dir, rel), size) : null;
      if (problem) return `${rel} ${problem}`;
    }
    // it holds up: record its sizes, so from now on it is checked as a new one (written beside and renamed, which
    // never writes into a file another cache copy may share through a hard link); a read-only cache stays as it is
    try {
      writeManifest(dir, contents, text.trim());
    } catch {
      // checked again next time
    }
  }
  return OK;
}

/** Every file (size) and symlink (target) under `dir`, by relative path; the marker itself is not part of it. */
function entryContents(dir) {
  const files = {};
  const links = {};
  const walk = (rel) => {
    for (const e of fs.readdirSync(path.join(dir, rel), { withFileTypes: true })) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (!rel && e.name.startsWith(".complete")) continue;
      if (e.isDirectory()) walk(r);
      else if (e.isSymbolicLink()) links[r] = fs.readlinkSync(path.join(dir, r));
      else files[r] = fs.lstatSync(path.join(dir, r)).size;
    }
  };
  walk("");
  return { files, links };
}

function writeManifest(dir, contents, completed = new Date().toISOString()) {
  const marker = path.join(dir, ".complete");
  fs.writeFileSync(`${marker}.tmp-${process.pid}`, JSON.stringify({ completed, ...contents }) + "\n");
  fs.renameSync(`${marker}.tmp-${process.pid}`, marker);
}

function isLibrary(rel) {
  return /\.so(\.[\d.]+)?$|\.node$/.test(rel);
}

/** Why a 64-bit ELF file cannot be whole (it ends before its headers or segments), else null; not judged: not ELF. */
function elfProblem(file, size) {
  if (size === 0) return "is empty";
  const fd = fs.openSync(file, "r");
  try {
    const h = Buffer.alloc(64);
    if (fs.readSync(fd, h, 0, 64, 0) < 64 || h.readUInt32BE(0) !== 0x7f454c46 || h[4] !== 2 || h[5] !== 1) return null;
    const phoff = Number(h.readBigUInt64LE(0x20));
    const shoff = Number(h.readBigUInt64LE(0x28));
    const [phentsize, phnum, shentsize, shnum] = [0x36, 0x38, 0x3a, 0x3c].map((o) => h.readUInt16LE(o));
    let end = Math.max(phoff + phnum * phentsize, shnum ? shoff + shnum * shentsize : 0);
    if (phoff + phnum * phentsize <= size && phentsize >= 40 && phnum * phentsize <= 1 << 20) {
      const ph = Buffer.alloc(phnum * phentsize);
      fs.readSync(fd, ph, 0, ph.length, phoff);
      for (let i = 0; i < phnum; i++) {
        end = Math.max(end, Number(ph.readBigUInt64LE(i * phentsize + 8) + ph.readBigUInt64LE(i * phentsize + 32)));
      }
    }
    return end > size ? `is cut short: ${size} bytes, its headers reach ${end}` : null;
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * A cache entry: `dir` when it checks out, else built through `build(tmp)` in a sibling temporary folder renamed into
 * place (a crash leaves no half entry); `required` are the files the entry must hold. A damaged entry is rebuilt.
 */
function cached(dir, required, build) {
  const state = entryState(dir, required);
  if (state === OK) return dir;
  if (state !== ABSENT) log(`the cache entry ${dir} is damaged (${state}); rebuilding it`);
  const tmp = `${dir}.tmp-${process.pid}`;
  fs.rmSync(tmp, { recursive: true, force: true });
  makeDir(tmp);
  try {
    build(tmp);
    for (const rel of required) {
      if (!fs.existsSync(path.join(tmp, rel))) throw new Unavailable(`building the cache entry ${path.basename(dir)} left no ${rel}`);
    }
    writeManifest(tmp, entryContents(tmp));
    fs.rmSync(dir, { recursive: true, force: true });
    fs.renameSync(tmp, dir);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  entryStates.set(dir, OK);
  return dir;
}

/**
 * The tool a cache entry's build needs, looked for before any download or build starts (so a missing compiler is
 * said before a 270 MB download, as when the tools were looked for first), and only when the entry is not usable.
 */
function needFor(dir, required, tool) {
  const state = entryState(dir, required);
  if (state === OK) return;
  try {
    tool();
  } catch (err) {
    if (state === ABSENT || !(err instanceof Unavailable)) throw err;
    throw new Unavailable(`the cache entry ${dir} is damaged (${state}) and cannot be rebuilt here: ${err.message}`);
  }
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

function tensorflowDir(flavour) {
  return path.join(cacheRoot(), "native", `tensorflow-${flavour}-${TENSORFLOW_VERSION}`);
}
const TENSORFLOW_REQUIRED = [...LIBRARIES.map((l) => `tensorflow/${l}`), "tensorflow/include/tensorflow/c/c_api.h"];

/** TensorFlow's C library and headers from PyPI: tensorflow-cpu (CPU) or tensorflow[and-cuda] (GPU, with CUDA 12 wheels). */
function tensorflowLibraries(pip, flavour) {
  const dir = tensorflowDir(flavour);
  return cached(dir, TENSORFLOW_REQUIRED, (tmp) => {
    const python = pip();
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
  const required = ["package/package.json", "package/binding/tfjs_backend.cc", "package/binding/tfjs_binding.cc", "package/dist/nodejs_kernel_backend.js", "package/dist/register_all_kernels.js"];
  return cached(dir, required, (tmp) => {
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

const ADDON_PREFIX = `addon-tfjs-node-${TFJS_NODE_VERSION}-tf-${TENSORFLOW_VERSION}-napi${NAPI_VERSION}-`;
const ADDON_REQUIRED = ["tfjs_binding.node"];

/**
 * The cache entry of tfjs-node's addon: keyed by the compiler found (a different compiler builds its own). With no
 * compiler, a build this cache holds is used as it is (e.g. g++ removed since; the smoke test loads it), the newest
 * if several; with neither, the missing compiler is the reason.
 */
function addonDir(cxx) {
  let compiler = null;
  try {
    compiler = cxx();
  } catch (err) {
    if (!(err instanceof Unavailable)) throw err;
  }
  if (compiler) {
    const compilerId = run(compiler, ["--version"]).stdout.split("\n")[0].replace(/[^\w.-]+/g, "_").slice(0, 60);
    return path.join(cacheRoot(), "native", `${ADDON_PREFIX}${compilerId}`);
  }
  const nativeCache = path.join(cacheRoot(), "native");
  const entries = (fs.existsSync(nativeCache) ? fs.readdirSync(nativeCache) : [])
    .filter((n) => n.startsWith(ADDON_PREFIX) && !n.includes(".tmp-"))
    .map((n) => path.join(nativeCache, n));
  const builds = entries
    .filter((d) => entryState(d, ADDON_REQUIRED) === OK)
    .sort((a, b) => fs.statSync(path.join(b, ".complete")).mtimeMs - fs.statSync(path.join(a, ".complete")).mtimeMs);
  if (builds.length) return builds[0];
  // none usable: the missing compiler is the reason (naming a damaged build it would have used)
  const damaged = entries.find((d) => entryState(d, ADDON_REQUIRED) !== ABSENT);
  if (damaged) needFor(damaged, ADDON_REQUIRED, cxx);
  return cxx();
}

/** Compiles tfjs-node's addon source, unchanged, against TensorFlow's C API (a cached build per version pair). */
function buildAddon(cxx, dir, tfDir, pkgDir) {
  return cached(dir, ADDON_REQUIRED, (tmp) => {
    log(`compiling tfjs-node's addon against TensorFlow ${TENSORFLOW_VERSION}'s C API with ${cxx()} (≈30 s, once)`);
    const src = path.join(pkgDir, "package", "binding");
    const libDir = path.join(tfDir, "tensorflow");
    const include = path.join(libDir, "include");
    mustRun("compiling the addon", cxx(), [
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
  return cached(dir, ["collective/collective.node"], (tmp) => {
    log("compiling the collective-ops addon (data-parallel training) against the same library (≈20 s, once)");
    const tf = fs.realpathSync(path.join(tfDir, "tensorflow"));
    fs.mkdirSync(path.join(tmp, "tensorflow"));
    fs.symlinkSync(tf, path.join(tmp, "tensorflow", "lib"));
    mustRun("compiling the collective-ops addon", process.execPath, [
      path.join(root, "scripts", "native", "build-collective.mjs"), "--include", path.join(tf, "include"),
      "--lib", path.join(tmp, "tensorflow", "lib"), "--out", path.join(tmp, "collective", "collective.node"),
    ], { env: { ...process.env, CXX: cxx() } });
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
  return cached(path.join(cacheRoot(), "native", `${name}-${sourceHash(src)}`), [`${name}.node`], (tmp) => {
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
  return cached(path.join(cacheRoot(), "native", `fused-${hash}-tf-${TENSORFLOW_VERSION}`), ["fused.node"], (tmp) => {
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
  mustRun(`compiling the ${moduleName.replace("_", "-")} addon`, cxx(), [
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

/** Lays the engine out in `tmp` (the caller removes it whatever happens). */
function assemble(tmp, flavour, tfDir, pkgDir, addonDir, ours) {
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
}

/** The files a working install needs (load.ts loads them); their sizes land in status.json as `files`. */
function neededFiles(flavour) {
  return [
    ...LIBRARIES.map((l) => `tensorflow/lib/${l}`),
    `tfjs-node/lib/napi-v${NAPI_VERSION}/tfjs_binding.node`,
    "tfjs-node/package.json",
    "tfjs-node/dist/nodejs_kernel_backend.js",
    "tfjs-node/dist/register_all_kernels.js",
    ...(flavour === "gpu" ? ["tensorflow/nvidia"] : []),
  ];
}

function fileSizes(dir, rels) {
  return Object.fromEntries(rels.filter((r) => fs.statSync(path.join(dir, r)).isFile()).map((r) => [r, fs.statSync(path.join(dir, r)).size]));
}

/** What is wrong with the engine an earlier install left in `dir` (status `prev`), or null when its files are whole. */
function installedProblem(dir, prev) {
  for (const rel of neededFiles(prev.flavour)) {
    let st;
    try {
      st = fs.statSync(path.join(dir, rel));
    } catch {
      return `${rel} is missing`;
    }
    const recorded = prev.files?.[rel];
    if (recorded !== undefined) {
      if (st.size !== recorded) return `${rel} is ${st.size} bytes, ${recorded} when installed`;
    } else if (st.isFile() && isLibrary(rel)) {
      const problem = elfProblem(path.join(dir, rel), st.size);
      if (problem) return `${rel} ${problem}`;
    }
  }
  return null;
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

/** Loads the assembled engine in a child process (a broken library must not take this script down); `sources`: the
 *  cache entries its libraries and addon come from, which the fix deletes when the child dies of SIGBUS. */
function smokeTest(dir, sources) {
  const r = run(process.execPath, ["--import", "tsx", path.join(root, "scripts", "native", "smoke.ts")], {
    cwd: root,
    env: { ...process.env, CONTROLNET_TS_NATIVE_DIR: dir, CONTROLNET_TS_BACKEND: "node" },
    timeout: 120_000,
  });
  if (r.error?.code === "ETIMEDOUT") throw new Unavailable("the built engine failed to load: it did not finish in 120 s");
  if (r.signal) {
    // SIGBUS: a mapped library shorter than it was (one cut short after the cache's check); else no cache to blame
    const blame = r.signal === "SIGBUS" ? sources : undefined;
    throw new Unavailable(`the built engine failed to load: killed by ${r.signal}${blame ? " (a damaged library in the cache)" : ""}`, undefined, blame);
  }
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
  const had = fs.existsSync(nativeDir);
  if (had) fs.renameSync(nativeDir, old);
  try {
    fs.renameSync(tmp, nativeDir);
  } catch (err) {
    if (had) fs.renameSync(old, nativeDir);
    throw err;
  }
  fs.rmSync(old, { recursive: true, force: true });
}

/** A path for a shell command line, quoted when it needs to be. */
function shellPath(p) {
  return /^[\w@%+=:,./-]+$/.test(p) ? p : `'${p.replace(/'/g, "'\\''")}'`;
}

/** The cache entry (folder) an fs error's paths point into, when that entry no longer checks out; else null. */
function damagedEntryOf(err) {
  const nativeCache = path.join(cacheRoot(), "native") + path.sep;
  for (const p of [err?.path, err?.dest]) {
    if (typeof p !== "string" || !path.resolve(p).startsWith(nativeCache)) continue;
    const entry = path.join(nativeCache, path.resolve(p).slice(nativeCache.length).split(path.sep)[0]);
    const state = entryState(entry, [], true);
    if (state !== OK && state !== ABSENT) return { entry, state };
  }
  return null;
}

function main() {
  const started = Date.now();
  const prev = readStatus();
  // `npx controlnet-ts` in a checkout installs the package into npx's cache as a link to it, which runs this
  // postinstall again (npm 10 on every call): what is installed (a GPU build, an opt-out) is kept.
  if (process.env.npm_command === "exec" && prev && !process.env.CONTROLNET_TS_NATIVE) {
    return 0;
  }
  const given = (process.env.CONTROLNET_TS_NATIVE ?? "").trim();
  // An earlier install's opt-out holds for a plain `npm install` too; `npm run install-native` (--strict) or a value
  // of the variable builds.
  const optOut = earlierOptOut(prev);
  if (optOut && !given && !strict) {
    log(`skipped (${optOut.replace(/^skipped: /, "")}, kept by a plain install); the wasm engine runs; add native with: ${prev.fix ?? `CONTROLNET_TS_NATIVE=cpu ${FIX_COMMAND}`}`);
    return 0;
  }
  let flavour;
  const tmp = `${nativeDir}.tmp-${process.pid}`;
  try {
    flavour = flavourFromEnv(prev);
    if (flavour === null) {
      writeStatus(nativeDir, { ok: false, reason: `skipped: CONTROLNET_TS_NATIVE=${given} at install`, fix: `CONTROLNET_TS_NATIVE=cpu ${FIX_COMMAND}` });
      log(`skipped (CONTROLNET_TS_NATIVE=${given}); the wasm engine runs; add native with: CONTROLNET_TS_NATIVE=cpu ${FIX_COMMAND}`);
      return 0;
    }
    const kept = !given && installedFlavour(prev) === flavour ? ", as installed before" : "";
    log(`the ${flavour.toUpperCase()} build of TensorFlow ${TENSORFLOW_VERSION}${kept} (CONTROLNET_TS_NATIVE=cpu|gpu|off chooses)`);
    checkPlatform();
    // The compiler and pip are needed only for what the cache lacks, and are looked for before anything is built.
    const cxx = lazily(findCompiler);
    const pip = lazily(findPip);
    const addon = addonDir(cxx);
    needFor(addon, ADDON_REQUIRED, cxx);
    needFor(tensorflowDir(flavour), TENSORFLOW_REQUIRED, pip);
    const tfDir = tensorflowLibraries(pip, flavour);
    const pkgDir = tfjsNodePackage();
    buildAddon(cxx, addon, tfDir, pkgDir);
    const collective = optionalAddon(() => buildCollective(cxx, tfDir), "the collective-ops addon (multi-process training) was not built");
    const hostMemory = optionalAddon(() => buildPlainAddon(cxx, "host-memory"), "the host-memory addon was not built (TensorFlow keeps its own memory pool)");
    const fused = optionalAddon(() => buildFused(cxx, tfDir), "the fused-kernels addon was not built (attention and GroupNorm run as TensorFlow's ops)");
    const signals = optionalAddon(() => buildPlainAddon(cxx, "signals", ["-pthread"]), "the signals addon was not built (a signal during a TensorFlow op may corrupt memory)");
    // one place removes the temporary engine whatever fails (assembling, the smoke test, the swap)
    try {
      assemble(tmp, flavour, tfDir, pkgDir, addon, [
        ["collective", "collective/collective.node", collective.dir],
        ["host-memory", "host-memory.node", hostMemory.dir],
        ["fused", "fused.node", fused.dir],
        ["signals", "signals.node", signals.dir],
      ]);
      const smoke = smokeTest(tmp, [tfDir, addon]);
      writeStatus(tmp, {
        ok: true,
        flavour,
        tensorflow: TENSORFLOW_VERSION,
        tfjsNode: TFJS_NODE_VERSION,
        compiler: cxx.found() ?? `none found (the cached build in ${addon})`,
        cache: cacheRoot(),
        gpuDevice: smoke.gpu,
        collective: collective.status,
        hostMemory: hostMemory.status,
        fusedKernels: fused.status,
        signals: signals.status,
        files: fileSizes(tmp, neededFiles(flavour)),
        installedAt: new Date().toISOString(),
      });
      swapInto(tmp);
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
    log(`installed (TensorFlow ${TENSORFLOW_VERSION} ${flavour}, ${((Date.now() - started) / 1000).toFixed(0)} s) in ${nativeDir}`);
    return 0;
  } catch (err) {
    // Anything else (an unwritable cache, a full disk) is also a reason to run on wasm, never a failed `npm install`.
    let reason = err instanceof Unavailable ? err.message : `unexpected error: ${err?.message ?? err}`;
    let cacheDirs = err?.cacheDirs;
    const damaged = err instanceof Unavailable ? null : damagedEntryOf(err);
    if (damaged) {
      reason = `the cache entry ${damaged.entry} is damaged (${damaged.state}): ${reason}`;
      cacheDirs = [damaged.entry];
    }
    const install = flavour === "gpu" ? `CONTROLNET_TS_NATIVE=gpu ${FIX_COMMAND}` : FIX_COMMAND;
    // a failure a cache entry causes: the fix deletes it, and the install builds it again
    const fix = err?.fix ?? (cacheDirs?.length ? `rm -rf ${cacheDirs.map(shellPath).join(" ")} && ${install}` : install);
    // A previous working install stays usable; only a missing or broken one records the reason.
    const broken = prev?.ok ? installedProblem(nativeDir, prev) : null;
    try {
      if (!prev?.ok) {
        const flavourBefore = installedFlavour(prev);
        writeStatus(nativeDir, { ok: false, reason, fix, ...(flavourBefore ? { flavourBefore } : {}) });
      } else if (broken) {
        writeStatus(nativeDir, { ok: false, reason: `${reason}; the engine installed before is broken (${broken})`, fix, flavourBefore: prev.flavour });
      }
    } catch (e) {
      log(`could not record the reason in ${nativeDir} (${e.message})`);
    }
    log(`not installed: ${reason}`);
    if (prev?.ok && !broken) log(`the previously installed native engine stays in ${nativeDir}`);
    else if (broken) log(`the native engine installed before in ${nativeDir} is broken (${broken}); the wasm engine runs; once fixed, repair it with: ${fix}`);
    else log(`the wasm engine runs; once fixed, add native with: ${fix}`);
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
