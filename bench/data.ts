/**
 * `npm run bench -- data [--rows N] [--batch B] [--resolutions 512,256,64]`: rows per second of the whole data
 * pipeline as training sees it: synthetic fill50k rows encoded to PNG (what a file-backed dataset hands over), then
 * the loader's decode → resize/centre-crop → float NHWC → batch, with its prefetch queue, consumed as fast as
 * possible. Compare with what a training step consumes: bench-mid takes 4 rows of 256² per step.
 */
import os from "node:os";
import { DataLoader } from "../lib/data/loader.js";
import { SyntheticFill50k } from "../lib/data/synthetic.js";
import { createDataset } from "../lib/data/dataset.js";
import { parseOptions, type BenchUsage } from "./_cli.js";

export const usage: BenchUsage = {
  summary: "rows/s of the data pipeline (synthetic fill50k PNGs → decode → resize/crop → float NHWC → batch, prefetched), and the wait for data per simulated training step",
  options: [
    { flag: "--rows", value: "N", default: "64 at ≥ 512 px, 128 at ≥ 256 px, else 512", help: "rows per measurement" },
    { flag: "--batch", value: "B", default: 4, help: "batch size" },
    { flag: "--resolutions", value: "R,R,…", default: "512,256,64", help: "resolutions in px" },
    { flag: "--step-ms", value: "MS", default: 300, help: "simulated training step: main thread blocked this long" },
    { flag: "--step-resolution", value: "R", default: 256, help: "resolution of the simulated training run" },
  ],
};

async function measure(resolution: number, rows: number, batchSize: number, format: "png" | "raw") {
  const src = new SyntheticFill50k({ count: 100_000, seed: 1, resolution, format });
  const loader = new DataLoader(src, { batchSize, resolution, seed: 1, prefetch: 4, proportionEmptyPrompts: 0.1 });
  await loader.next(); // warm-up (sharp start-up, first permutation)
  const t0 = performance.now();
  let n = 0;
  while (n < rows) n += (await loader.next()).size;
  const secs = (performance.now() - t0) / 1000;
  await loader.close();
  return { resolution, format, rows: n, seconds: +secs.toFixed(3), rowsPerSecond: +(n / secs).toFixed(1) };
}

/** Blocks the main thread like a synchronous wasm training step. */
function busy(ms: number): void {
  const end = performance.now() + ms;
  while (performance.now() < end) { /* spin */ }
}

/**
 * Training-shaped consumption: each step blocks the main thread for `stepMs` (as tfjs-wasm does), then asks for the
 * next batch. Reports the average wait for data per step: ~0 means the pipeline keeps ahead, off the step's path.
 */
async function stalls(resolution: number, steps: number, stepMs: number, worker: boolean) {
  const ds = await createDataset({ synthetic: { count: 100_000, seed: 1, format: "png" }, resolution });
  const loader = worker ? ds.workerLoader({ batchSize: 4, prefetch: 4 }) : ds.loader({ batchSize: 4, prefetch: 4 });
  await loader.next();
  let waited = 0;
  for (let s = 0; s < steps; s++) {
    busy(stepMs);
    const t = performance.now();
    await loader.next();
    waited += performance.now() - t;
  }
  await loader.close();
  return { resolution, loader: worker ? "worker" : "in-thread", stepMs, steps, meanWaitMs: +(waited / steps).toFixed(1) };
}

export async function run(args: string[]): Promise<object> {
  const o = parseOptions("data", args, usage);
  const batch = o.num("--batch");
  const resolutions = o.str("--resolutions").split(",").map(Number);
  if (resolutions.some((r) => !(r > 0))) throw new Error(`bench data: --resolutions takes px values like 512,256, not '${o.str("--resolutions")}'`);
  const results = [];
  for (const r of resolutions) {
    // fewer rows at 512 keep the bench short on 2 cores
    const rows = o.has("--rows") ? o.num("--rows") : r >= 512 ? 64 : r >= 256 ? 128 : 512;
    for (const format of ["png", "raw"] as const) {
      const m = await measure(r, rows, batch, format);
      console.log(`data ${r}px ${format}: ${m.rowsPerSecond} rows/s (${m.rows} rows in ${m.seconds}s)`);
      results.push(m);
    }
  }
  const at256 = results.find((m) => m.resolution === 256 && m.format === "png");
  const stepMs = o.num("--step-ms");
  const stepRes = o.num("--step-resolution");
  const stepRuns = [];
  for (const worker of [false, true]) {
    const m = await stalls(stepRes, 10, stepMs, worker);
    console.log(`data ${stepRes}px, steps of ${stepMs} ms, ${m.loader}: waits ${m.meanWaitMs} ms per step for data`);
    stepRuns.push(m);
  }
  return {
    bench: "data",
    pipeline: "synthetic fill50k → PNG encode → sharp decode → resize/centre-crop → float32 NHWC → batch (prefetch 4)",
    batchSize: batch,
    cpus: os.cpus().length,
    results,
    simulatedSteps: stepRuns,
    // bench-mid consumes 4 rows of 256² per step: the pipeline keeps ≥ 10× ahead of steps longer than this
    benchMidStepFloorSeconds: at256 ? +((4 * 10) / at256.rowsPerSecond).toFixed(3) : undefined,
  };
}
