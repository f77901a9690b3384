/** Compiles lib/engine/kernels/bmm.wat (build time and tests only: wabt is a dev dependency, never loaded by lib/). */
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const FEATURES = { simd: true, threads: true };

export const BMM_WAT = path.join(path.dirname(fileURLToPath(import.meta.url)), "..", "lib", "engine", "kernels", "bmm.wat");

export async function compileBmmWat(sharedMemory: boolean): Promise<Uint8Array> {
  const wabt = await (await import("wabt")).default();
  const text = fs.readFileSync(BMM_WAT, "utf8").replace("MEMORY_SHARED", sharedMemory ? "shared" : "");
  const mod = wabt.parseWat("bmm.wat", text, FEATURES);
  try {
    // wabt's typings omit validate's features argument; without it, shared memory fails validation
    (mod.validate as (features: object) => void)(FEATURES);
    return mod.toBinary({}).buffer;
  } finally {
    mod.destroy();
  }
}
