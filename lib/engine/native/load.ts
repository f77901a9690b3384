/**
 * The native engine: tfjs-node 4.22's backend and kernels, running on our build of its addon against TensorFlow
 * 2.21's C library from PyPI (scripts/native/install.mjs). We load tfjs-node's backend class and kernel registry
 * directly rather than its index.js: that file locates the addon through node-pre-gyp, sets the backend as a side
 * effect and registers file:// model routers, none of which we want. Both resolve `@tensorflow/tfjs` to the same
 * instance as lib/engine/tf.ts (the package's node_modules), so there is one engine.
 */
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { tf } from "../tf.js";
import { INSTALL_NATIVE_COMMAND, nativeDir, readInstallStatus } from "./install-status.js";
import { registerNativeKernels, useHostConvPadding } from "./kernels.js";
import { configureHostMemory } from "./host-memory.js";
import { loadFusedKernels } from "./fused.js";
import { signalGuard } from "./signals.js";

const NAPI_DIR = "lib/napi-v8";

export interface NativeBinding {
  isUsingGpuDevice(): boolean;
  executeOp: (...args: never[]) => unknown;
  TF_Version?: string;
}

export interface LoadedNative {
  binding: NativeBinding;
  /** The GPU build (tensorflow[and-cuda]'s library) is installed. */
  gpuBuild: boolean;
  /** TensorFlow created a GPU device (the GPU build on a machine whose driver and GPU it can use). */
  usingGpu: boolean;
  /** Which allocator holds the tensors in host memory, in one line (lib/engine/native/host-memory.ts). */
  hostAllocator: string;
  /** Which fused kernels of ours run, or why none does (lib/engine/native/fused.ts). */
  fusedKernels: string;
  /** Whether signals are held back from TensorFlow's threads, or why not (lib/engine/native/signals.ts). */
  signals: string;
  dir: string;
}

let loaded: LoadedNative | null = null;

/**
 * Why the native engine is not installed, with the command that adds it; null when its files are there. The last
 * install's status decides: an install run with CONTROLNET_TS_NATIVE=off over an earlier build said "the wasm engine
 * runs", so that earlier build is not loaded (a failed install keeps a working one's status, and it stays in use).
 */
export function nativeMissingReason(dir = nativeDir()): string | null {
  const status = readInstallStatus(dir);
  const built = fs.existsSync(path.join(dir, "tfjs-node", NAPI_DIR, "tfjs_binding.node"));
  if (built && status?.ok !== false) return null;
  const fix = status?.fix ?? INSTALL_NATIVE_COMMAND;
  if (status && !status.ok && status.reason) return `not installed (${status.reason}); add it with: ${fix}`;
  return `not installed in ${dir}; add it with: ${fix}`;
}

/**
 * TensorFlow reads its threading, logging and GPU-memory settings from the environment when the addon creates its
 * eager context, so they are set (unless the user set them) before the addon loads.
 */
function configureTensorFlowEnv(threads: number, allowTf32: boolean): void {
  const env = process.env;
  // TensorFlow computes float32 matmuls and convolutions in TF32 on Ampere and newer GPUs unless told not to;
  // PyTorch (and so diffusers' --allow_tf32) defaults to exact float32. NVIDIA's switch, honoured by cuBLAS/cuDNN.
  if (!allowTf32) env.NVIDIA_TF32_OVERRIDE ??= "0";
  // TF's INFO/WARNING lines (we report the engine ourselves); its first two, written before its logging is set up
  // (absl's "All log messages before absl::InitializeLog()…" and oneDNN's notice), still show
  env.TF_CPP_MIN_LOG_LEVEL ??= "2";
  env.TF_NUM_INTRAOP_THREADS ??= String(threads);
  env.TF_NUM_INTEROP_THREADS ??= String(Math.min(threads, 2));
  env.TF_FORCE_GPU_ALLOW_GROWTH ??= "true"; // else TF takes nearly all GPU memory at start
}

/** Loads the native backend once (registering it as tfjs backend "tensorflow"); throws with a one-line reason. */
export function loadNative(threads: number, allowTf32 = false): LoadedNative {
  if (loaded) return loaded;
  const dir = nativeDir();
  const missing = nativeMissingReason(dir);
  if (missing) throw new Error(missing);
  configureTensorFlowEnv(threads, allowTf32);
  const hostAllocator = configureHostMemory(dir);
  const pkg = path.join(dir, "tfjs-node");
  const require = createRequire(path.join(pkg, "package.json"));
  const signals = signalGuard(dir);
  let binding: NativeBinding;
  try {
    binding = signals.whileLoading(() => require(`./${NAPI_DIR}/tfjs_binding.node`) as NativeBinding);
  } catch (err) {
    const msg = (err instanceof Error ? err.message : String(err)).split("\n")[0];
    throw new Error(`its addon failed to load (${msg}); reinstall with: ${INSTALL_NATIVE_COMMAND}`);
  }
  require("./dist/register_all_kernels.js");
  const { NodeJSKernelBackend } = require("./dist/nodejs_kernel_backend.js") as {
    NodeJSKernelBackend: new (binding: NativeBinding, packageName: string) => tf.KernelBackend;
  };
  const gpuBuild = fs.existsSync(path.join(dir, "tensorflow", "nvidia"));
  const guarded = signals.guard(binding);
  tf.registerBackend("tensorflow", () => new NodeJSKernelBackend(guarded, gpuBuild ? "@tensorflow/tfjs-node-gpu" : "@tensorflow/tfjs-node"), 3);
  registerNativeKernels();
  const usingGpu = binding.isUsingGpuDevice();
  useHostConvPadding(!usingGpu);
  loaded = { binding, gpuBuild, usingGpu, dir, hostAllocator, fusedKernels: loadFusedKernels(dir, threads, usingGpu), signals: signals.status };
  return loaded;
}
