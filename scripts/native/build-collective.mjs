#!/usr/bin/env node
/**
 * Builds native/collective/collective.cc — our N-API addon for TensorFlow's collective ops (data-parallel training) —
 * with plain g++ against TensorFlow's C API, the same headers and libraries the native engine uses:
 *
 *   node scripts/native/build-collective.mjs [--include <dir>] [--lib <dir>] [--out <file.node>]
 *
 * Defaults: <repo>/.native/tensorflow/{include,lib} (what scripts/native/install.mjs installs) and
 * <repo>/.native/collective/collective.node (where lib/training/collective.ts looks first). The addon's rpath points at
 * the lib dir (relative to the addon, then absolute), so it needs no LD_LIBRARY_PATH. Node-API headers come from the running Node's own include dir
 * (<prefix>/include/node) or the node-api-headers package. Exits 1 with one line saying why when it cannot build.
 */
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { nodeApiIncludeDir } from "./node-api.mjs";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
const source = path.join(root, "native", "collective", "collective.cc");

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  if (i >= 0 && process.argv[i + 1]) return path.resolve(process.argv[i + 1]);
  const eq = process.argv.find((a) => a.startsWith(`--${name}=`));
  return eq ? path.resolve(eq.slice(name.length + 3)) : fallback;
}

function fail(msg) {
  process.stderr.write(`build-collective: ${msg}\n`);
  process.exit(1);
}

const include = arg("include", path.join(root, ".native", "tensorflow", "include"));
const lib = arg("lib", path.join(root, ".native", "tensorflow", "lib"));
const out = arg("out", path.join(root, ".native", "collective", "collective.node"));
if (!fs.existsSync(path.join(include, "tensorflow", "c", "eager", "c_api_experimental.h"))) {
  fail(`TensorFlow's C API headers are not in ${include} (need tensorflow/c/eager/c_api_experimental.h; run npm run install-native or pass --include)`);
}
for (const so of ["libtensorflow_cc.so.2", "libtensorflow_framework.so.2"]) {
  if (!fs.existsSync(path.join(lib, so))) fail(`${so} is not in ${lib} (pass --lib <dir> holding TensorFlow's libraries)`);
}
const napi = nodeApiIncludeDir();
if (!napi) fail("no Node-API headers (node_api.h) found next to node, in /usr/include/node, or in node-api-headers");
const cxx = process.env.CXX || "g++";

fs.mkdirSync(path.dirname(out), { recursive: true });
const tmp = `${out}.tmp-${process.pid}`;
const args = [
  "-std=c++17", "-O2", "-fPIC", "-shared", "-fvisibility=hidden", "-DNODE_GYP_MODULE_NAME=collective", "-DNAPI_VERSION=8",
  `-I${include}`, `-I${napi}`, source, "-o", tmp,
  // the wheel ships only the versioned names: link them by file, find them at run time through the rpath
  // relative to the addon first, so a moved package (.native/collective next to .native/tensorflow) still loads
  path.join(lib, "libtensorflow_cc.so.2"), path.join(lib, "libtensorflow_framework.so.2"),
  `-Wl,-rpath,$ORIGIN/${path.relative(path.dirname(out), lib)}:${lib}`,
];
const t0 = Date.now();
const r = spawnSync(cxx, args, { encoding: "utf8" });
if (r.error || r.status !== 0) {
  fs.rmSync(tmp, { force: true });
  const detail = r.error ? r.error.message : r.stderr.trim().split("\n").slice(-5).join("\n");
  fail(`${cxx} failed:\n${detail}`);
}
fs.renameSync(tmp, out); // atomic: a half-written addon is never loaded
process.stdout.write(`build-collective: ${path.relative(process.cwd(), out) || out} (${((Date.now() - t0) / 1000).toFixed(1)} s, TensorFlow libraries in ${lib})\n`);
