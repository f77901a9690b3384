/** A fresh process for what only process start can set (TensorFlow's environment, which engine loads). */
import assert from "node:assert/strict";
import path from "node:path";
import { spawnSync, type SpawnSyncReturns } from "node:child_process";

const engineUrl = JSON.stringify(new URL("../../lib/engine/index.ts", import.meta.url).href);

/** Runs `code` (an ES module that may import ENGINE, i.e. lib/engine) in a fresh Node started with `nodeArgs`. */
export function runChild(code: string, env: NodeJS.ProcessEnv, nodeArgs: string[] = []): SpawnSyncReturns<string> {
  return spawnSync(process.execPath, [...nodeArgs, "--import", "tsx", "--input-type=module", "-e", code.replaceAll("ENGINE", engineUrl)],
    { cwd: path.resolve(import.meta.dirname, "../.."), encoding: "utf8", env });
}

/** runChild's last printed line; the child must exit 0. */
export function lastLineOfChild(code: string, env: NodeJS.ProcessEnv, nodeArgs: string[] = []): string {
  const r = runChild(code, env, nodeArgs);
  assert.equal(r.status, 0, r.stderr);
  return r.stdout.trim().split("\n").pop()!;
}
