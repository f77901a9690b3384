/**
 * Memory accounting for the engine: what the memory meter and the planner read.
 *
 * tfjs' own `tf.memory().numBytes` counts bytes per Tensor *object* (a reshape that shares its buffer counts twice)
 * and only `tf.profile` tracks a peak, at the cost of timing every kernel. We instead count bytes per backend
 * buffer (dataId) by wrapping the engine's two bookkeeping points, which gives live bytes and peaks over any
 * region at no measurable cost.
 */
import { tf } from "./tf.js";
import os from "node:os";
import { WASM_HEAP_LIMIT } from "./constants.js";
import { gpuMemory } from "./native/gpu.js";

export interface MemorySnapshot {
  backend: string;
  /** Live tensor objects. */
  liveTensors: number;
  /** Bytes held by live backend buffers (each buffer counted once). */
  liveBytes: number;
  /** Size of the wasm heap (it grows, never shrinks); null on other backends. */
  heapBytes: number | null;
  /** The device memory limit (4 GiB for wasm32), or null. */
  heapLimitBytes: number | null;
  /** Resident set size of the process: the wasm heap, and the native engine's host tensors, show up here. */
  rssBytes: number;
  /** GPU memory in use and the GPU's total (node-gpu, through nvidia-smi); null elsewhere. */
  gpuBytes: number | null;
  gpuLimitBytes: number | null;
}

interface TensorInfoEntry {
  bytes: number;
  backend: unknown;
}
interface EngineInternals {
  state: { tensorInfo: WeakMap<object, TensorInfoEntry> };
  trackTensor(a: { dataId: object }, backend: unknown): void;
  removeDataId(dataId: object, backend: unknown): void;
}

let installed = false;
let liveBytes = 0;
const regions = new Set<{ peak: number }>();

function bump(): void {
  for (const r of regions) if (liveBytes > r.peak) r.peak = liveBytes;
}

/** Wraps the engine's buffer bookkeeping once. Called by initEngine; safe to call again. */
export function installMemoryTracker(): void {
  if (installed) return;
  installed = true;
  const eng = tf.engine() as unknown as EngineInternals;
  // tensorInfo is a WeakMap (not iterable); tfjs' per-tensor count is exact when nothing shares buffers yet.
  liveBytes = tf.memory().numBytes;
  const track = eng.trackTensor.bind(eng);
  eng.trackTensor = (a, backend) => {
    const had = eng.state.tensorInfo.has(a.dataId);
    track(a, backend);
    if (!had) {
      const info = eng.state.tensorInfo.get(a.dataId);
      if (info) {
        liveBytes += info.bytes;
        bump();
      }
    }
  };
  const remove = eng.removeDataId.bind(eng);
  eng.removeDataId = (dataId, backend) => {
    const info = eng.state.tensorInfo.get(dataId);
    remove(dataId, backend);
    if (info && !eng.state.tensorInfo.has(dataId)) liveBytes -= info.bytes;
  };
}

function wasmHeapBytes(): number | null {
  if (tf.getBackend() !== "wasm") return null;
  const backend = tf.backend() as unknown as { wasm?: { HEAPU8?: Uint8Array } };
  return backend.wasm?.HEAPU8?.length ?? null;
}

/** True when tensors live in GPU memory: the native engine created a GPU device. */
function onGpu(): boolean {
  return tf.getBackend() === "tensorflow" && (tf.backend() as unknown as { isUsingGpuDevice?: boolean }).isUsingGpuDevice === true;
}

/**
 * The memory that live tensors compete for on the running engine — what the planner plans against: the wasm32
 * heap's 4 GiB, the GPU's memory on node-gpu, the host's memory on the native CPU engine (and on cpu).
 */
export function memoryBudget(): number {
  if (tf.getBackend() === "wasm") return WASM_HEAP_LIMIT;
  if (onGpu()) return gpuMemory()?.totalBytes ?? hostMemoryLimit();
  return hostMemoryLimit();
}

/**
 * The host memory this process may use: the machine's, or less where a container's cgroup limit says so (Docker's
 * --memory: os.totalmem() still reports the host's). Node reports no limit as 0, undefined or a near-2⁶³ "unlimited".
 */
export function hostMemoryLimit(total = os.totalmem(), constrained = process.constrainedMemory?.()): number {
  return constrained && constrained > 0 && constrained < total ? constrained : total;
}

/** `device: false` leaves GPU memory out (null): reading it runs nvidia-smi (at most once a second), which a training
 *  step's log line should not wait for. */
export function memoryInfo(opts: { device?: boolean } = {}): MemorySnapshot {
  const m = tf.memory();
  const isWasm = tf.getBackend() === "wasm";
  const gpu = opts.device !== false && onGpu() ? gpuMemory() : null;
  return {
    backend: tf.getBackend(),
    liveTensors: m.numTensors,
    liveBytes: installed ? liveBytes : m.numBytes,
    heapBytes: wasmHeapBytes(),
    heapLimitBytes: isWasm ? WASM_HEAP_LIMIT : null,
    rssBytes: process.memoryUsage().rss,
    gpuBytes: gpu?.usedBytes ?? null,
    gpuLimitBytes: gpu?.totalBytes ?? null,
  };
}

export interface PeakReport<T> {
  result: T;
  /** Live bytes when the region started. */
  startBytes: number;
  /** Highest live bytes seen during the region. */
  peakBytes: number;
  /** Live bytes when the region ended (what the region left allocated). */
  endBytes: number;
  /** peakBytes - startBytes: the extra memory the region needed. */
  peakDeltaBytes: number;
  heapBytes: number | null;
  rssBytes: number;
}

/** A running peak of live tensor bytes from now until stop() (for a meter that shows the peak while work goes on). */
export interface PeakTracker {
  readonly startBytes: number;
  /** The highest live bytes so far. */
  readonly peakBytes: number;
  stop(): void;
}

export function trackPeak(): PeakTracker {
  installMemoryTracker();
  const region = { peak: liveBytes };
  regions.add(region);
  return { startBytes: liveBytes, get peakBytes() { return region.peak; }, stop: () => void regions.delete(region) };
}

/** Runs `fn` and reports the peak of live tensor bytes during it. Regions may nest. */
export async function measurePeak<T>(fn: () => T | Promise<T>): Promise<PeakReport<T>> {
  const tracker = trackPeak();
  try {
    const result = await fn();
    return {
      result,
      startBytes: tracker.startBytes,
      peakBytes: tracker.peakBytes,
      endBytes: liveBytes,
      peakDeltaBytes: tracker.peakBytes - tracker.startBytes,
      heapBytes: wasmHeapBytes(),
      rssBytes: process.memoryUsage().rss,
    };
  } finally {
    tracker.stop();
  }
}
