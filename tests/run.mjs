#!/usr/bin/env node
// The test command (`npm test`): type-check, then every tests/**/*.test.ts under node's own test runner (through
// tsx), then one closing line with the pass/fail counts. `npm test -- tests/engine` runs a subset.
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

if (files.length) {
  const tap = path.join(os.tmpdir(), `controlnet-ts-tests-${process.pid}.tap`);
  const run = spawnSync(process.execPath, [
    "--import", "tsx", "--test", "--test-timeout=900000",
    "--test-reporter=spec", "--test-reporter-destination=stdout",
    "--test-reporter=tap", `--test-reporter-destination=${tap}`,
    ...files,
  ], { stdio: "inherit", env: { ...process.env, NODE_ENV: "test" } });
  const text = fs.existsSync(tap) ? fs.readFileSync(tap, "utf8") : "";
  fs.rmSync(tap, { force: true });
  const count = (name) => Number((text.match(new RegExp(`^# ${name} (\\d+)$`, "m")) ?? [])[1] ?? 0);
  passed += count("pass");
  failed += count("fail") + count("cancelled");
  if (run.status !== 0 && count("fail") + count("cancelled") === 0) failed++; // the runner itself failed
}

const secs = ((Date.now() - started) / 1000).toFixed(0);
process.stdout.write(`\ntests: ${passed} passed, ${failed} failed (${files.length} files, ${secs}s)\n`);
process.exit(failed ? 1 : 0);
