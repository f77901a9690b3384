/**
 * The native engine (tfjs-node's backend on TensorFlow 2.21's C library): the conv cases our models need, stride 2
 * with explicit and asymmetric padding included (tfjs-node 4.22's own Conv2DBackprop* kernels refuse EXPLICIT;
 * lib/engine/native/kernels.ts passes it to TensorFlow), against the cpu backend; and its memory report.
 * Runs when the native engine is installed (npm install builds it; CI requires it).
 */
import { before, describe, test } from "node:test";
import assert from "node:assert/strict";
import os from "node:os";
import path from "node:path";
import { spawnSync } from "node:child_process";
import { initEngine, memoryBudget, memoryInfo, tf } from "../../lib/engine/index.js";
import { nativeMissingReason } from "../../lib/engine/native/load.js";
import { assertClose, onCpu } from "../helpers.js";
import { convCases, convGrads } from "./conv-cases.js";

const missing = nativeMissingReason();

describe("native engine", { skip: missing ?? false }, () => {
  before(async () => {
    const info = await initEngine({ backend: "node" });
    assert.equal(info.tfjsBackend, "tensorflow");
  });

  convCases.forEach((c, i) => {
    test(`conv2d forward and gradients, case ${i}: ${c.h}x${c.w} k${c.k} s${c.s} pad ${JSON.stringify(c.pad)}`, async () => {
      const before = tf.memory().numTensors;
      const got = convGrads(c, 10 + i);
      assert.equal(tf.memory().numTensors, before, "tensor leak");
      const ref = await onCpu(() => convGrads(c, 10 + i));
      assertClose(got.y, ref.y, 1e-4, "forward");
      assertClose(got.dx, ref.dx, 1e-4, "dX");
      assertClose(got.dw, ref.dw, 1e-4, "dW");
    });
  });

  test("memory: live tensor bytes and RSS, no wasm heap, host memory as the budget", () => {
    const a = memoryInfo();
    const t = tf.zeros([1024, 1024]);
    const b = memoryInfo();
    assert.equal(b.liveBytes - a.liveBytes, 4 * 1024 * 1024);
    assert.equal(b.heapBytes, null);
    assert.equal(b.heapLimitBytes, null);
    assert.equal(b.gpuBytes, null, "the CPU build has no GPU");
    assert.ok(b.rssBytes > 0);
    assert.equal(memoryBudget(), os.totalmem());
    t.dispose();
    assert.equal(memoryInfo().liveBytes, a.liveBytes);
  });

  test("TF32 (node-gpu) is off unless allowTf32, as diffusers' --allow_tf32: NVIDIA_TF32_OVERRIDE=0 is set before TensorFlow loads", () => {
    const { NVIDIA_TF32_OVERRIDE: _, ...env } = process.env;
    const overrideAfterInit = (allowTf32: boolean) => {
      const r = spawnSync(process.execPath, ["--import", "tsx", "--input-type=module", "-e",
        `import { initEngine } from ${JSON.stringify(new URL("../../lib/engine/index.ts", import.meta.url).href)};
         await initEngine({ backend: "node", threads: 1, allowTf32: ${allowTf32} }); console.log(String(process.env.NVIDIA_TF32_OVERRIDE));`],
      { cwd: path.resolve(import.meta.dirname, "../.."), encoding: "utf8", env });
      assert.equal(r.status, 0, r.stderr);
      return r.stdout.trim().split("\n").pop();
    };
    assert.equal(overrideAfterInit(false), "0", "exact float32 by default");
    assert.equal(overrideAfterInit(true), "undefined", "allowTf32 leaves TensorFlow's default (TF32 on Ampere+)");
  });
});
