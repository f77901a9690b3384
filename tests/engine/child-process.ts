/** A fresh process for what only process start can set (TensorFlow's environment, which engine loads). */
import assert from "node:assert/strict";
import path from "node:path";
import { spawnSync } from "node:child_process";

const engineUrl = JSON.stringify(new URL("../../lib/engine/index.ts", import.meta.url).href);

/**
 * Runs `code` (an ES module that may import ENGINE, i.e. lib/engine) in a fresh process and returns the last line it
 * prints; the child must exit 0.
 */
export function lastLineOfChild(code: string, env: NodeJS.ProcessEnv): string {
  const r = spawnSync(process.execPath, ["--import", "tsx", "--input-type=module", "-e", code.replaceAll("ENGINE", engineUrl)],
    { cwd: path.resolve(import.meta.dirname, "../.."), encoding: "utf8", env });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout.trim().split("\n").pop()!;
}
