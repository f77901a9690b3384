/**
 * Multi-threaded tfjs-wasm under Node.
 *
 * tfjs 4.22 hard-codes `WASM_HAS_MULTITHREAD_SUPPORT = false` in Node (tfjs#3830). Two things stop the threaded
 * build from working when the flag is forced on:
 *  1. emscripten starts its pthread workers from a `blob:` URL, which Node's `worker_threads.Worker` rejects, and the
 *     worker then `importScripts()` the factory from another blob URL;
 *  2. the C++ side caps the pool at `os.cpus().length / 2`, i.e. one thread on a 2-vCPU machine.
 * This module writes the worker script to a real temp file (loading the factory with `require`), makes `Worker`
 * accept the blob URL by swapping in that file, and lets the caller report more logical cores while the pool is
 * created. It must run before the wasm backend initialises.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import crypto from "node:crypto";
import { createRequire } from "node:module";
import workerThreads from "node:worker_threads";

const require = createRequire(import.meta.url);
let installedWorkerFile: string | null = null;

function wasmPackageDir(): string {
  return path.dirname(require.resolve("@tensorflow/tfjs-backend-wasm/package.json"));
}

/** Writes the patched worker script and redirects blob: workers to it. Idempotent. */
export function installWasmWorkerShim(): string {
  if (installedWorkerFile) return installedWorkerFile;
  const dir = wasmPackageDir();
  const factory = path.join(dir, "wasm-out", "tfjs-backend-wasm-threaded-simd.js");
  const { wasmWorkerContents } = require(path.join(dir, "wasm-out", "tfjs-backend-wasm-threaded-simd.worker.js")) as {
    wasmWorkerContents: string;
  };
  const marker = "importScripts(objectUrl)";
  if (!wasmWorkerContents.includes(marker)) {
    throw new Error("tfjs-backend-wasm worker script has an unexpected shape (is the pinned 4.22.0 installed?)");
  }
  // tfjs escapes newlines before putting the script in a Blob; a file needs the same.
  const source = wasmWorkerContents
    .replace(/\n/g, "\\n")
    .replace(marker, `self.WasmBackendModuleThreadedSimd=require(${JSON.stringify(factory)})`);
  const hash = crypto.createHash("sha256").update(source).digest("hex").slice(0, 16);
  const file = path.join(os.tmpdir(), `controlnet-ts-wasm-worker-${hash}.cjs`);
  if (!fs.existsSync(file)) {
    const tmp = `${file}.${process.pid}.tmp`;
    fs.writeFileSync(tmp, source);
    fs.renameSync(tmp, file);
  }
  const Original = workerThreads.Worker;
  class BlobRedirectWorker extends Original {
    constructor(filename: string | URL, options?: workerThreads.WorkerOptions) {
      const name = String(filename);
      // Workers inherit the parent's execArgv; `--input-type` (from `node -e`) is refused for a file worker.
      const execArgv = (options?.execArgv ?? process.execArgv).filter((a) => !a.startsWith("--input-type"));
      super(name.startsWith("blob:") ? file : filename, { ...options, execArgv });
      // emscripten keeps a pool of idle workers; they must not keep a finished script alive.
      this.unref();
    }
  }
  (workerThreads as { Worker: typeof workerThreads.Worker }).Worker = BlobRedirectWorker;
  installedWorkerFile = file;
  return file;
}

/**
 * Runs `fn` while `os.cpus()` reports at least `logicalCores` entries. emscripten reads the core count when the
 * thread pool is created and halves it; without this a 2-vCPU machine gets a single thread.
 */
export async function withLogicalCores<T>(logicalCores: number, fn: () => Promise<T>): Promise<T> {
  const original = os.cpus;
  const real = original();
  if (real.length >= logicalCores) return fn();
  (os as { cpus: typeof os.cpus }).cpus = () => Array.from({ length: logicalCores }, (_, i) => real[i % real.length]!);
  try {
    return await fn();
  } finally {
    (os as { cpus: typeof os.cpus }).cpus = original;
  }
}
