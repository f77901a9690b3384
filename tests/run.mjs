#!/usr/bin/env node
// The test command (`npm test`): type-check, then every tests/**/*.test.ts under node's own test runner (through
// tsx) on the wasm engine, then — when the native engine is installed — the engine-dependent folders again on it
// (ENGINE_DEPENDENT), then one closing line with the pass/fail counts. `npm test -- tests/engine` runs a subset;
// CONTROLNET_TS_BACKEND=node|wasm runs everything on that engine only.
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), "..");
process.chdir(root);
const args = process.argv.slice(2);

function findTests(dir) {
  const out = [];
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) { if (e.name !== "node_modules" && !e.name.startsWith(".")) out.push(...findTests(p)); }
    else if (e.name.endsWith(".test.ts")) out.push(p);
  }
  return out;
}

const roots = args.length ? args : ["tests"];
const files = roots.flatMap((r) => (fs.statSync(r).isDirectory() ? findTests(r) : [r])).sort();

let failed = 0;
let passed = 0;
const started = Date.now();

if (!process.env.SKIP_TYPECHECK) {
  process.stdout.write("typecheck: tsc --noEmit\n");
  const tsc = spawnSync(process.execPath, [path.join("node_modules", "typescript", "bin", "tsc"), "--noEmit", "-p", "tsconfig.json"], { stdio: "inherit" });
  if (tsc.status === 0) { passed++; process.stdout.write("typecheck: ok\n"); } else { failed++; process.stdout.write("typecheck: FAILED\n"); }
}

/** Test folders whose results depend on the engine: with the native engine installed, they run on it too. */
const ENGINE_DEPENDENT = ["tests/models", "tests/training", "tests/pipeline", "tests/schedulers", "tests/demo", "tests/kernel", "tests/cells", "tests/cli", "tests/planner", "tests/distributed"];

function runPass(label, passFiles, backend) {
  process.stdout.write(`\n== ${label}: ${passFiles.length} files on engine '${backend}' ==\n`);
  const tap = path.join(os.tmpdir(), `controlnet-ts-tests-${process.pid}-${backend}.tap`);
  const run = spawnSync(process.execPath, [
    "--import", "tsx", "--test", "--test-timeout=900000",
    "--test-reporter=spec", "--test-reporter-destination=stdout",
    "--test-reporter=tap", `--test-reporter-destination=${tap}`,
    ...passFiles,
  ], { stdio: "inherit", env: { ...process.env, NODE_ENV: "test", CONTROLNET_TS_BACKEND: backend } });
  const text = fs.existsSync(tap) ? fs.readFileSync(tap, "utf8") : "";
  fs.rmSync(tap, { force: true });
  const count = (name) => Number((text.match(new RegExp(`^# ${name} (\\d+)$`, "m")) ?? [])[1] ?? 0);
  let bad = count("fail") + count("cancelled");
  if (run.status !== 0 && bad === 0) bad = 1; // the runner itself failed
  passed += count("pass");
  failed += bad;
  summaries.push(`${label} (${backend}): ${count("pass")} passed, ${bad} failed`);
}

const summaries = [];
const nativeBinding = path.join(root, ".native", "tfjs-node", "lib", "napi-v8", "tfjs_binding.node");
if (files.length) {
  // The suite runs on wasm (the engine every machine has) unless CONTROLNET_TS_BACKEND names one; then, when the
  // native engine is installed and no engine was named, the engine-dependent folders run again on it.
  const forced = process.env.CONTROLNET_TS_BACKEND;
  runPass("all tests", files, forced || "wasm");
  if (!forced) {
    const dependent = files.filter((f) => ENGINE_DEPENDENT.some((d) => f === d || f.startsWith(d + path.sep) || f.startsWith(d + "/")));
    if (!dependent.length) {
      // nothing engine-dependent was asked for
    } else if (fs.existsSync(nativeBinding)) {
      runPass("engine-dependent tests", dependent, "node");
    } else {
      summaries.push(`native engine not installed (npm run install-native): the engine-dependent tests ran on wasm only`);
    }
  }
}

for (const s of summaries) process.stdout.write(`\n${s}`);
const secs = ((Date.now() - started) / 1000).toFixed(0);
process.stdout.write(`\ntests: ${passed} passed, ${failed} failed (${files.length} files, ${secs}s)\n`);
process.exit(failed ? 1 : 0);
