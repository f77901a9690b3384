/**
 * Backend selection: the one place that initialises TensorFlow.js.
 *
 * Preference order is node-gpu → node → wasm → cpu. "node" / "node-gpu" are the native engine (lib/engine/native:
 * tfjs-node's backend on TensorFlow's C library from PyPI, built by `npm install`'s postinstall or
 * `npm run install-native`); wasm runs wherever that could not be built. The choice can be forced with
 * `initEngine({ backend })` or the CONTROLNET_TS_BACKEND environment variable; a forced backend that cannot load is
 * an error, never a silent fallback.
 */
import os from "node:os";
import { tf } from "./tf.js";
import { installWasmWorkerShim, withLogicalCores } from "./wasm-threads.js";
import { watchWasmFailures } from "./wasm-failures.js";
import { registerWasmKernels } from "./kernels/index.js";
import { installMemoryTracker } from "./memory.js";
import { loadNative, nativeMissingReason, type LoadedNative } from "./native/load.js";
import { INSTALL_NATIVE_COMMAND } from "./native/install-status.js";
import { gpuAbsenceReason, gpuMemory } from "./native/gpu.js";
import { registerNativeKernels } from "./native/kernels.js";

export const BACKENDS = ["node-gpu", "node", "wasm", "cpu"] as const;
export type BackendKind = (typeof BACKENDS)[number];

export interface EngineOptions {
  /** Force a backend; default: env CONTROLNET_TS_BACKEND, else the first that loads. */
  backend?: BackendKind | string;
  /** wasm threads; default: env CONTROLNET_TS_THREADS, else the number of CPUs. 1 disables the thread pool. */
  threads?: number;
  /**
   * TensorFlow's intra-op threads on the native CPU engine; default `threads`. Tiny models are faster with 1: their
   * ops are too small to split, and TF's pool threads then only compete with the thread that issues the ops (the
   * tiny-SD demo on 2 cores: 2.66 it/s at 1 thread, 1.87 at 2; bench-mid's larger step is 2.06 vs 1.80 s).
   */
  nativeThreads?: number;
  /** node-gpu: compute float32 matmuls/convolutions in TF32 (Ampere+), as diffusers' --allow_tf32. Default false. */
  allowTf32?: boolean;
  /** For tests: replaces the loader of the native engine (lib/engine/native/load.ts). */
  loadNative?: (threads: number, allowTf32?: boolean) => LoadedNative;
}

export interface EngineInfo {
  backend: BackendKind;
  /** tfjs' own backend name ("tensorflow", "wasm", "cpu"). */
  tfjsBackend: string;
  tfjsVersion: string;
  threads: number;
  /** Why each better backend is not running (empty when the best one runs). */
  unavailable: { backend: BackendKind; reason: string }[];
  /** Device memory limit in bytes where one exists (wasm32: 4 GiB), else null. */
  deviceMemoryLimit: number | null;
  /** True when our fast wasm training kernels are registered. */
  kernelOverrides: string[];
  /** Native engine: which allocator holds its tensors in host memory (lib/engine/native/host-memory.ts). */
  hostAllocator?: string;
  /** Native engine: which fused kernels of ours run (attention, GroupNorm, AdamW), or why none does. */
  fusedKernels?: string;
  /** Native engine: whether signals are held back from TensorFlow's threads (lib/engine/native/signals.ts). */
  signals?: string;
}

export { MAX_ENGINE_THREADS, WASM_HEAP_LIMIT } from "./constants.js";
import { MAX_ENGINE_THREADS, WASM_HEAP_LIMIT } from "./constants.js";

let current: EngineInfo | null = null;
let initialising: Promise<EngineInfo> | null = null;

export function parseBackend(value: string): BackendKind {
  const v = value.trim().toLowerCase();
  if ((BACKENDS as readonly string[]).includes(v)) return v as BackendKind;
  throw new Error(
    `Unknown engine backend '${value}': expected one of ${BACKENDS.join(", ")} ` +
      `(set by initEngine({backend}) or CONTROLNET_TS_BACKEND).`,
  );
}

function parseThreads(value: number | string | undefined): number {
  if (value === undefined || value === "") return Math.max(1, os.availableParallelism?.() ?? os.cpus().length);
  const n = Number(value);
  // digits only: "1e1" or "0x10" are not thread counts someone means
  if (!/^\s*\d+\s*$/.test(String(value)) || n < 1 || n > MAX_ENGINE_THREADS) {
    throw new Error(`Invalid engine thread count '${value}': expected an integer from 1 to ${MAX_ENGINE_THREADS} (CONTROLNET_TS_THREADS).`);
  }
  return n;
}

/**
 * The native engine (lib/engine/native): tfjs-node's backend on TensorFlow's C library from PyPI. "node-gpu" needs
 * the GPU build and a GPU TensorFlow can use; otherwise the same library runs as "node" on the CPU, and node-gpu's
 * entry in `unavailable` says why.
 */
function tryNative(kind: "node-gpu" | "node", load: () => LoadedNative): { reason: string } | LoadedNative {
  const addGpuBuild = `the GPU build (TensorFlow's library with CUDA 12 / cuDNN 9, from PyPI) is added with: CONTROLNET_TS_NATIVE=gpu ${INSTALL_NATIVE_COMMAND}`;
  // node's entry says why no build is installed and how to add the CPU one; node-gpu's names the GPU build's command
  if (kind === "node-gpu" && nativeMissingReason() !== null) return { reason: `no native engine is installed; ${addGpuBuild}` };
  let native: LoadedNative;
  try {
    native = load();
  } catch (err) {
    return { reason: err instanceof Error ? err.message : String(err) };
  }
  if (kind === "node-gpu") {
    if (!native.gpuBuild) {
      return { reason: `the native engine is the CPU build; ${addGpuBuild}` };
    }
    if (!native.usingGpu) return { reason: `the GPU build is installed but TensorFlow found no usable GPU (${gpuAbsenceReason()}); it runs on the CPU as 'node'` };
  }
  return native;
}

/**
 * emscripten's Node glue installs process-wide `uncaughtException`/`unhandledRejection` handlers that rethrow, which
 * turns any later unhandled rejection into a crash that prints the whole minified module. A kernel or a training
 * script must decide that for itself, so we remove the handlers the wasm module added.
 */
async function withoutAddedProcessHandlers<T>(fn: () => Promise<T>): Promise<T> {
  const events = ["uncaughtException", "unhandledRejection"];
  const proc = process as unknown as NodeJS.EventEmitter;
  const before = new Map(events.map((e) => [e, new Set(proc.listeners(e))]));
  try {
    return await fn();
  } finally {
    for (const e of events) {
      for (const l of proc.listeners(e)) if (!before.get(e)!.has(l)) proc.removeListener(e, l as (...a: unknown[]) => void);
    }
  }
}

async function initWasm(threads: number): Promise<string | null> {
  return withoutAddedProcessHandlers(() => initWasmInner(threads));
}

async function initWasmInner(threads: number): Promise<string | null> {
  try {
    const wasm = await import("@tensorflow/tfjs-backend-wasm");
    if (threads > 1) {
      installWasmWorkerShim();
      tf.env().set("WASM_HAS_MULTITHREAD_SUPPORT", true);
      wasm.setThreadsCount(threads);
    } else {
      tf.env().set("WASM_HAS_MULTITHREAD_SUPPORT", false);
    }
    watchWasmFailures(); // before the module exists: it binds console.warn when created
    // emscripten sizes its pool at (logical cores / 2); report enough cores while the pool is made.
    const ok = await withLogicalCores(threads * 2, () => tf.setBackend("wasm"));
    if (!ok) return "the wasm backend did not initialise";
    unrefPthreadWorkers();
    return null;
  } catch (err) {
    return `wasm failed: ${err instanceof Error ? err.message : String(err)}`;
  }
}

/**
 * emscripten `ref()`s each pthread worker while its thread runs, and the pool threads never finish, so a script
 * would never exit. The pool is idle between kernels; unref'ing lets Node exit when the script's work is done.
 */
function unrefPthreadWorkers(): void {
  const mod = (tf.backend() as unknown as { wasm?: { PThread?: { runningWorkers?: { unref(): void }[]; unusedWorkers?: { unref(): void }[] } } }).wasm;
  const pool = mod?.PThread;
  for (const w of [...(pool?.runningWorkers ?? []), ...(pool?.unusedWorkers ?? [])]) w.unref();
}

async function wasmThreadsCount(): Promise<number> {
  const wasm = await import("@tensorflow/tfjs-backend-wasm");
  return wasm.getThreadsCount();
}

async function select(opts: EngineOptions): Promise<EngineInfo> {
  const forcedRaw = opts.backend ?? process.env.CONTROLNET_TS_BACKEND;
  const forced = forcedRaw ? parseBackend(forcedRaw) : null;
  const threads = parseThreads(opts.threads ?? process.env.CONTROLNET_TS_THREADS);
  const tfThreads = opts.nativeThreads === undefined ? threads : parseThreads(opts.nativeThreads);
  const load = () => (opts.loadNative ?? loadNative)(tfThreads, opts.allowTf32 ?? false);
  const unavailable: EngineInfo["unavailable"] = [];
  const order = forced ? [forced] : [...BACKENDS];

  for (const kind of order) {
    let reason: string | null;
    let native: LoadedNative | null = null;
    if (kind === "node-gpu" || kind === "node") {
      const tried = tryNative(kind, load);
      if ("reason" in tried) reason = tried.reason;
      else {
        native = tried;
        reason = (await tf.setBackend("tensorflow")) ? null : "the native library loaded but tfjs' 'tensorflow' backend did not initialise";
      }
    } else if (kind === "wasm") reason = await initWasm(threads);
    else reason = (await tf.setBackend("cpu")) ? null : "the cpu backend did not initialise";

    if (reason !== null) {
      if (forced) throw new Error(`Engine backend '${forced}' was requested but is unavailable: ${reason}.`);
      unavailable.push({ backend: kind, reason });
      continue;
    }
    await tf.ready();
    quietCpuBackend();
    const kernelOverrides = kind === "wasm" ? registerWasmKernels() : kind === "node" || kind === "node-gpu" ? registerNativeKernels() : [];
    installMemoryTracker();
    return {
      backend: kind,
      tfjsBackend: tf.getBackend(),
      tfjsVersion: tf.version.tfjs,
      threads: kind === "wasm" ? await wasmThreadsCount() : kind === "cpu" ? 1 : tfThreads,
      unavailable,
      deviceMemoryLimit: kind === "wasm" ? WASM_HEAP_LIMIT : kind === "node-gpu" ? (gpuMemory()?.totalBytes ?? null) : null,
      kernelOverrides,
      ...(native ? { hostAllocator: native.hostAllocator, fusedKernels: native.fusedKernels, signals: native.signals } : {}),
    };
  }
  throw new Error(`No TensorFlow.js backend could start: ${unavailable.map((u) => `${u.backend}: ${u.reason}`).join("; ")}`);
}

/** tfjs-backend-cpu prints a "use tfjs-node" banner on first use; we already report that choice ourselves. */
function quietCpuBackend(): void {
  const cpu = tf.findBackend("cpu") as unknown as { firstUse?: boolean } | null;
  if (cpu) cpu.firstUse = false;
}

/**
 * Initialises the engine once per process and returns what runs. Calling again with no options (or the same
 * backend) returns the existing engine; asking for a different backend after initialisation is an error, because
 * tensors cannot move between engines safely mid-run.
 */
export async function initEngine(opts: EngineOptions = {}): Promise<EngineInfo> {
  if (current) {
    const wanted = opts.backend ?? process.env.CONTROLNET_TS_BACKEND;
    if (wanted && parseBackend(wanted) !== current.backend) {
      throw new Error(
        `The engine already runs on '${current.backend}'; it cannot switch to '${wanted}' in this process (restart the kernel or script).`,
      );
    }
    return current;
  }
  if (!initialising) {
    initialising = select(opts).then(
      (info) => (current = info),
      (err) => {
        initialising = null;
        throw err;
      },
    );
  }
  return initialising;
}

/** The running engine, or null before initEngine(). */
export function engineInfo(): EngineInfo | null {
  return current;
}

/** A one-paragraph human explanation of the engine choice (used by writeBasicConfig and the CLI). */
export function describeEngine(info: EngineInfo): string {
  const lines = [`engine: ${info.backend} (tfjs ${info.tfjsVersion}, backend '${info.tfjsBackend}', ${info.threads} thread(s))`];
  for (const u of info.unavailable) lines.push(`  ${u.backend} unavailable: ${u.reason}`);
  if (info.backend === "wasm" && info.deviceMemoryLimit) lines.push(`  device memory limit: ${(info.deviceMemoryLimit / 1024 ** 3).toFixed(0)} GiB (wasm32 heap; it never shrinks)`);
  if (info.backend === "node-gpu" && info.deviceMemoryLimit) lines.push(`  GPU memory: ${(info.deviceMemoryLimit / 1024 ** 3).toFixed(0)} GiB (TensorFlow grows into it as needed: TF_FORCE_GPU_ALLOW_GROWTH)`);
  if (info.backend === "node" || info.backend === "node-gpu") lines.push(`  no 4 GiB heap: host memory is the limit${info.backend === "node-gpu" ? " for host tensors" : ""}`);
  if (info.hostAllocator) lines.push(`  host tensors: ${info.hostAllocator}`);
  if (info.fusedKernels) lines.push(`  fused kernels: ${info.fusedKernels}`);
  if (info.signals) lines.push(`  signals: ${info.signals}`);
  return lines.join("\n");
}
