/**
 * Where the native engine's tensors live in host memory. TensorFlow's x86 wheels run oneDNN, whose CPU allocator is a
 * BFC pool that never returns memory and fragments step after step (SD1.5 at 512 px: peak RSS 1.14 × the planner's
 * prediction after two steps, more after each further step). We switch TensorFlow to the system allocator
 * (TF_ONEDNN_USE_SYSTEM_ALLOCATOR=1) and ask glibc, through our small addon (native/host-memory), to serve large
 * blocks from its heap instead of fresh mappings, which the kernel would zero again on every use (see the addon's
 * header for the measurements). Without the addon, or when the user set TF_ONEDNN_USE_SYSTEM_ALLOCATOR, TensorFlow's
 * own choice stands.
 */
import { loadAddon } from "./addon.js";

interface HostMemoryAddon {
  useHeapForLargeBlocks(): boolean;
}

/** Marks TF_ONEDNN_USE_SYSTEM_ALLOCATOR as set by us rather than by the user. */
const OURS = "CONTROLNET_TS_SYSTEM_ALLOCATOR";

/**
 * Applies the policy before TensorFlow's library loads (it reads the variable when it creates its allocator) and says
 * which allocator the engine's tensors use, in one line.
 */
export function configureHostMemory(nativeDir: string): string {
  const env = process.env;
  // our own setting reaches child processes (launch's workers) through the environment: theirs is applied again
  if (env.TF_ONEDNN_USE_SYSTEM_ALLOCATOR !== undefined && env[OURS] !== env.TF_ONEDNN_USE_SYSTEM_ALLOCATOR) {
    return `TF_ONEDNN_USE_SYSTEM_ALLOCATOR=${env.TF_ONEDNN_USE_SYSTEM_ALLOCATOR} as set by the environment`;
  }
  const pool = (why: string) => `TensorFlow's oneDNN pool (${why})`;
  const loaded = loadAddon<HostMemoryAddon>(nativeDir, "host-memory");
  if ("missing" in loaded) return pool(loaded.missing);
  if (!loaded.addon.useHeapForLargeBlocks()) return pool("glibc refused the heap settings");
  env.TF_ONEDNN_USE_SYSTEM_ALLOCATOR = env[OURS] = "1";
  return "malloc, large blocks from glibc's heap, kept for reuse (TF_ONEDNN_USE_SYSTEM_ALLOCATOR=1, M_MMAP_MAX=0, no trim)";
}
