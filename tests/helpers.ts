/** Shared test helpers: temporary folders, engine set-up and numeric comparison. The engine is imported when first
 *  used, so that tests which only need tempDir do not load TensorFlow.js. */
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import type { EngineInfo } from "../lib/engine/index.js";
import { loadModelFolder } from "../lib/io/diffusers.js";

const tempDirs: string[] = [];

/** A fresh folder under the system temp folder (`<prefix>XXXXXX`), removed with everything in it when the test
 *  process exits, whether its tests passed or failed (node's test runner runs each test file in a process of its
 *  own); kept when CONTROLNET_TS_KEEP_TEST_DIRS=1. */
export function tempDir(prefix: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  if (!tempDirs.length && process.env.CONTROLNET_TS_KEEP_TEST_DIRS !== "1") {
    process.on("exit", () => {
      for (const d of tempDirs) {
        try {
          fs.rmSync(d, { recursive: true, force: true, maxRetries: 3 });
        } catch {
          // best effort: a process the test started may still be writing there
        }
      }
    });
  }
  tempDirs.push(dir);
  return dir;
}

/** Initialises the engine the tests run on (wasm unless CONTROLNET_TS_BACKEND says otherwise). */
export async function testEngine(): Promise<EngineInfo> {
  const { initEngine } = await import("../lib/engine/index.js");
  return initEngine({ backend: process.env.CONTROLNET_TS_BACKEND ?? "wasm" });
}

/** Runs `fn` on the cpu backend (the reference) and returns plain arrays; switches back afterwards. */
export async function onCpu<T>(fn: () => T): Promise<T> {
  const { tf } = await import("../lib/engine/index.js");
  const prev = tf.getBackend();
  await tf.setBackend("cpu");
  try {
    return fn();
  } finally {
    await tf.setBackend(prev);
  }
}

export function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]!));
  return m;
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length, "length mismatch");
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

/** The largest |a − b| over the tensors of two saved model folders (which must hold the same tensor names), or over
 *  those whose name passes `keep`. */
export function maxFolderDiff(dirA: string, dirB: string, keep: (name: string) => boolean = () => true): number {
  const a = loadModelFolder(dirA).tensors;
  const b = loadModelFolder(dirB).tensors;
  assert.deepEqual([...a.keys()].sort(), [...b.keys()].sort());
  return Math.max(...[...a.keys()].filter(keep).map((n) => maxAbsDiff(a.get(n)!.data, b.get(n)!.data)));
}

/** max |a-b| / max(|b|, tiny): a scale-aware relative error. */
export function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  return maxAbsDiff(a, b) / Math.max(maxAbs(b), 1e-12);
}

export function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tol: number, what = "values"): void {
  const e = relErr(actual, expected);
  assert.ok(e <= tol, `${what}: relative error ${e.toExponential(2)} > ${tol}`);
}
