/**
 * Where the process's resident memory is, step after step, on the SD1.5-config ControlNet step (the shapes of
 * `npm run bench -- sd15-step`: gradient checkpointing, fp32 AdamW, batch 1):
 *
 *   node --import tsx scripts/diag-rss.ts [resolution=256] [steps=2]      (CHUNK=<n>: chunked attention)
 *
 * After the build and each step it prints resident bytes by mapping kind (glibc's [heap], anonymous mappings by
 * size, shared libraries) beside the live tensor bytes, so allocator retention (TensorFlow's pool, glibc's arenas) is
 * told apart from tensors. Run it with different allocator settings to compare them (README, "Host memory on native").
 */
import fs from "node:fs";
import { initEngine, memoryInfo } from "../lib/engine/index.js";
import { createTrainingStep, SD15_UNET } from "../lib/planner/index.js";
import { exitOnHelp } from "./_cli.js";

exitOnHelp("usage: node --import tsx scripts/diag-rss.ts [resolution=256] [steps=2]   (CHUNK=<n>: chunked attention)\n" +
  "Resident memory by mapping kind beside live tensor bytes, after the build and each SD1.5-config ControlNet step.");

const GB = (b: number) => (b / 1e9).toFixed(2);

function kindOf(name: string, size: number): string {
  if (name === "[heap]") return "heap";
  if (name) return name.includes(".so") ? "libraries" : "other files";
  return size > 64 << 20 ? "anon >64M" : size >= 4 << 20 ? "anon 4-64M" : "anon <4M";
}

function report(tag: string): void {
  const resident = new Map<string, number>();
  let kind = "";
  for (const line of fs.readFileSync("/proc/self/smaps", "utf8").split("\n")) {
    const m = /^([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (m) kind = kindOf(m[3]!, parseInt(m[2]!, 16) - parseInt(m[1]!, 16));
    const rss = /^Rss:\s+(\d+) kB/.exec(line);
    if (rss) resident.set(kind, (resident.get(kind) ?? 0) + Number(rss[1]) * 1024);
  }
  const parts = [...resident].filter(([, v]) => v > 20e6).map(([k, v]) => `${k} ${GB(v)}`);
  console.log(`${tag}: RSS ${GB(process.memoryUsage().rss)} GB (${parts.join(", ")}), live tensors ${GB(memoryInfo().liveBytes)} GB`);
}

const info = await initEngine();
console.log(`engine ${info.backend}${info.hostAllocator ? `, host tensors: ${info.hostAllocator}` : ""}`);
const resolution = Number(process.argv[2] ?? 256);
const steps = Number(process.argv[3] ?? 2);
report("start");
const runner = createTrainingStep({
  unet: SD15_UNET, resolution, batchSize: 1,
  options: { gradientCheckpointing: true, attentionChunkSize: Number(process.env.CHUNK ?? 0) },
});
report("built");
for (let i = 1; i <= steps; i++) {
  const t0 = performance.now();
  await runner.step();
  report(`step ${i} (${((performance.now() - t0) / 1000).toFixed(1)} s)`);
}
runner.dispose();
