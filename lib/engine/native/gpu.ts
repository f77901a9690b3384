/**
 * What the native engine can say about GPUs without an addon of its own: whether an NVIDIA driver is present, and
 * the device's memory through nvidia-smi (the driver's own tool; TensorFlow's C API has no memory query that the
 * tfjs-node binding exposes).
 */
import fs from "node:fs";
import { spawnSync } from "node:child_process";

const DRIVER_VERSION_FILE = "/proc/driver/nvidia/version";

/** Why TensorFlow has no GPU device here, as far as can be told from outside it. */
export function gpuAbsenceReason(): string {
  if (!fs.existsSync(DRIVER_VERSION_FILE)) return `no NVIDIA driver is loaded (${DRIVER_VERSION_FILE} is absent)`;
  if (process.env.CUDA_VISIBLE_DEVICES !== undefined && /^\s*(-1)?\s*$/.test(process.env.CUDA_VISIBLE_DEVICES)) {
    return `CUDA_VISIBLE_DEVICES='${process.env.CUDA_VISIBLE_DEVICES}' hides every GPU`;
  }
  return "an NVIDIA driver is loaded but TensorFlow created no GPU device: run with TF_CPP_MIN_LOG_LEVEL=0 to see TensorFlow's reason (a driver older than CUDA 12 needs, or missing CUDA wheels)";
}

export interface GpuMemory {
  usedBytes: number;
  totalBytes: number;
}

let cache: { at: number; value: GpuMemory | null } | null = null;

/**
 * The GPUs a process may use, as CUDA names them for CUDA_VISIBLE_DEVICES: that variable's entries when it is set
 * (indexes or UUIDs), else one index per device nvidia-smi lists; none without a driver.
 */
export function visibleGpus(env: NodeJS.ProcessEnv = process.env): string[] {
  const set = cudaVisibleDevices(env);
  if (set) return set;
  if (!fs.existsSync(DRIVER_VERSION_FILE)) return [];
  const r = spawnSync("nvidia-smi", ["-L"], { encoding: "utf8", timeout: 5000 });
  const count = r.status === 0 ? r.stdout.split("\n").filter((l) => /^GPU \d+:/.test(l)).length : 0;
  return Array.from({ length: count }, (_, i) => String(i));
}

/** CUDA_VISIBLE_DEVICES' entries, or null when it is unset. CUDA stops at the first invalid one; -1 hides every GPU. */
function cudaVisibleDevices(env: NodeJS.ProcessEnv): string[] | null {
  if (env.CUDA_VISIBLE_DEVICES === undefined) return null;
  const entries = env.CUDA_VISIBLE_DEVICES.split(",").map((e) => e.trim());
  const end = entries.findIndex((e) => e === "" || e === "-1");
  return end < 0 ? entries : entries.slice(0, end);
}

/**
 * The used/total memory of the process's first GPU (the whole device's, as nvidia-smi reports it: CUDA_VISIBLE_DEVICES'
 * first entry, which nvidia-smi's -i also accepts), or null without nvidia-smi; read at most once a second.
 */
export function gpuMemory(): GpuMemory | null {
  const now = Date.now();
  if (cache && now - cache.at < 1000) return cache.value;
  let value: GpuMemory | null = null;
  const device = cudaVisibleDevices(process.env)?.[0] ?? "0";
  const r = spawnSync("nvidia-smi", ["--query-gpu=memory.used,memory.total", "--format=csv,noheader,nounits", "-i", device], { encoding: "utf8", timeout: 5000 });
  const m = r.status === 0 ? /^\s*(\d+)\s*,\s*(\d+)/.exec(r.stdout) : null;
  if (m) value = { usedBytes: Number(m[1]) * 2 ** 20, totalBytes: Number(m[2]) * 2 ** 20 };
  cache = { at: now, value };
  return value;
}
