/**
 * Best-of timings of single kernels on the native engine, at the shapes of SD1.5's step and bench-mid's:
 *   `node --import tsx scripts/kernel-timing.ts attention` — fused attention forward, and forward + backward, per
 *   [tokens, keys, heads × width] (SD1.5 at 512 px: 4096 / 1024 / 256 tokens; bench-mid: 1024 / 256);
 *   `node --import tsx scripts/kernel-timing.ts conv` — 3×3 convs forward with the large-filter path (patches · filter)
 *   and without it (TensorFlow's Conv2D), alternating in one process.
 * Threads: CONTROLNET_TS_THREADS (the benches use 2). Run on an otherwise idle machine; compare within one run.
 */
import { fusedAttention, initEngine, tf } from "../lib/engine/index.js";
import { useConvPatches } from "../lib/engine/native/kernels.js";
import { exitOnHelp } from "./_cli.js";

exitOnHelp("usage: node --import tsx scripts/kernel-timing.ts attention|conv\n" +
  "Best-of timings of the fused attention, or of large-filter convs with and without the patches path; see the file's comment.");
const which = process.argv[2] ?? "attention";
const info = await initEngine({ backend: "node" });
console.log(`engine ${info.backend}, ${process.env.CONTROLNET_TS_THREADS ?? "all"} thread(s)`);

/** The fastest of `reps` runs of fn (its result read back, then disposed), after one warm-up. */
function best(fn: () => tf.Tensor | tf.Tensor[], reps: number): number {
  let ms = Infinity;
  for (let r = 0; r <= reps; r++) {
    const t0 = performance.now();
    const out = fn();
    const all = Array.isArray(out) ? out : [out];
    for (const t of all) t.dataSync();
    if (r > 0) ms = Math.min(ms, performance.now() - t0);
    tf.dispose(all);
  }
  return ms;
}

if (which === "attention") {
  // [query tokens, keys, heads, head width]
  const cases: [number, number, number, number][] = [
    [4096, 4096, 8, 40], [4096, 77, 8, 40], [1024, 1024, 8, 80], [256, 256, 8, 160], // SD1.5 at 512 px
    [1024, 1024, 4, 8], [256, 256, 4, 16], [1024, 77, 4, 8], // bench-mid
  ];
  for (const [n, m, heads, d] of cases) {
    const c = heads * d, scale = 1 / Math.sqrt(d);
    const [q, k, v, w] = [n, m, m, n].map((rows, i) => tf.randomNormal([1, rows, c], 0, 1, "float32", i + 1) as tf.Tensor3D);
    const grads = tf.grads((a: tf.Tensor, b: tf.Tensor, cc: tf.Tensor) => tf.sum(tf.mul(fusedAttention(a as tf.Tensor3D, b as tf.Tensor3D, cc as tf.Tensor3D, scale, heads)!, w!)));
    const reps = n * m * d > 1e8 ? 3 : 20;
    const forward = best(() => fusedAttention(q!, k!, v!, scale, heads)!, reps);
    const both = best(() => grads([q!, k!, v!]), reps);
    console.log(`attention ${n} tokens × ${m} keys, ${heads} heads of ${d}: forward ${forward.toFixed(2)} ms, forward + backward ${both.toFixed(2)} ms`);
    tf.dispose([q!, k!, v!, w!]);
  }
} else if (which === "conv") {
  // [size, in channels, out channels] of 3×3 padding-1 convs, batch 1
  const cases: [number, number, number][] = [[16, 1280, 1280], [8, 1280, 1280], [32, 640, 640], [32, 960, 640], [64, 640, 640], [64, 320, 320]];
  for (const [s, ci, co] of cases) {
    const x = tf.randomNormal([1, s, s, ci], 0, 1, "float32", 1) as tf.Tensor4D, f = tf.randomNormal([3, 3, ci, co], 0, 1, "float32", 2) as tf.Tensor4D;
    const conv = () => tf.conv2d(x, f, 1, [[0, 0], [1, 1], [1, 1], [0, 0]]);
    const ms: Record<string, number[]> = { patches: [], conv2d: [] };
    for (let round = 0; round < 2; round++)
      for (const on of [true, false]) {
        useConvPatches(on);
        ms[on ? "patches" : "conv2d"]!.push(best(conv, 4));
      }
    useConvPatches(true);
    const fmt = (a: number[]) => a.map((t) => t.toFixed(1)).join(" / ");
    console.log(`conv [1,${s},${s},${ci}]→${co} 3×3: TensorFlow's Conv2D ${fmt(ms.conv2d!)} ms, patches · filter ${fmt(ms.patches!)} ms${ci * co < 640 * 640 ? " (below the bound: the engine uses Conv2D)" : ""}`);
    tf.dispose([x, f]);
  }
} else {
  console.error(`unknown kernel set '${which}' (attention|conv)`);
  process.exit(2);
}
