/**
 * The GPU build of the native engine (CONTROLNET_TS_NATIVE=gpu: tensorflow[and-cuda]==2.21.0's library with the
 * CUDA 12 / cuDNN 9 wheels) as far as a machine without a GPU can check it: every CUDA library TensorFlow dlopens
 * is found through its RUNPATH from where the installer put it, the library loads and computes on the CPU, and the
 * engine says why it is not node-gpu. CI installs it into .native-gpu (.ci/run); elsewhere point
 * CONTROLNET_TS_TEST_GPU_BUILD at such an install.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";

const root = path.resolve(import.meta.dirname, "../..");
const dir = path.resolve(process.env.CONTROLNET_TS_TEST_GPU_BUILD ?? path.join(root, ".native-gpu"));
const installed = fs.existsSync(path.join(dir, "tensorflow", "nvidia"));
const skip = !installed && `no GPU build at ${dir} (CONTROLNET_TS_NATIVE=gpu CONTROLNET_TS_NATIVE_DIR=${dir} npm run install-native)`;

/** The libraries TensorFlow 2.21 dlopens for a GPU (none is in its NEEDED list). */
const CUDA_LIBRARIES = ["libcudart.so.12", "libcublas.so.12", "libcublasLt.so.12", "libcufft.so.11", "libcusolver.so.11", "libcusparse.so.12", "libcudnn.so.9", "libnccl.so.2", "libcupti.so.12"];

test("every CUDA library TensorFlow dlopens resolves through its RUNPATH from .native/tensorflow/lib", { skip }, () => {
  const libDir = path.join(dir, "tensorflow", "lib");
  // both libraries dlopen CUDA libraries; each searches its own RUNPATH (e.g. cuSOLVER is only in libtensorflow_cc's)
  const dirs = ["libtensorflow_cc.so.2", "libtensorflow_framework.so.2"].flatMap((lib) => {
    const dynamic = spawnSync("readelf", ["-d", path.join(libDir, lib)], { encoding: "utf8", maxBuffer: 1 << 26 }).stdout;
    const runpath = /RUNPATH\)\s+Library runpath: \[([^\]]*)\]/.exec(dynamic)?.[1];
    assert.ok(runpath, `${lib} has a RUNPATH`);
    return runpath.split(":").map((d) => d.replace("$ORIGIN", libDir));
  });
  for (const lib of CUDA_LIBRARIES) {
    const found = dirs.find((d) => fs.existsSync(path.join(d, lib)));
    assert.ok(found, `${lib} is not found through the RUNPATH (${dirs.length} folders)`);
  }
});

test("on a machine without a GPU the GPU build runs on the CPU and node-gpu says why", { skip }, () => {
  const script = `import { initEngine, describeEngine, tf } from ${JSON.stringify(new URL("../../lib/engine/index.ts", import.meta.url).href)};
    const info = await initEngine({ threads: 1 });
    const y = tf.matMul(tf.tensor2d([[1, 2], [3, 4]]), tf.tensor2d([[5], [6]])).dataSync();
    console.log(JSON.stringify({ info, y: Array.from(y), text: describeEngine(info) }));`;
  const r = spawnSync(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], {
    cwd: root, encoding: "utf8", timeout: 120_000,
    env: { ...process.env, CONTROLNET_TS_NATIVE_DIR: dir, CONTROLNET_TS_BACKEND: "" },
  });
  assert.equal(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout.trim().split("\n").pop()!);
  if (fs.existsSync("/proc/driver/nvidia/version")) return; // a GPU machine: the other branch is what is checked here
  assert.equal(out.info.backend, "node");
  assert.deepEqual(out.y, [17, 39]);
  assert.equal(out.info.unavailable[0].backend, "node-gpu");
  assert.match(out.info.unavailable[0].reason, /GPU build is installed but TensorFlow found no usable GPU \(no NVIDIA driver is loaded/);
  assert.match(out.text, /runs on the CPU as 'node'/);
});
