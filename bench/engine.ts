/**
 * Engine micro-benchmarks: conv2d 3x3 (x[4,32,32,64] * w[3,3,64,64] 'same') forward and forward+backward (median
 * ms), matmul 1024^3 GFLOP/s (plain, transposed, batched), and the tiny-SD attention products (ms for the set of
 * ATTENTION shapes; on wasm also with our SIMD kernel turned off, side by side: the stock scalar loop), for the native
 * engine (TensorFlow's intra-op pool at 1 and 2 threads), wasm with 1 and 2 threads, and cpu. Each configuration
 * runs in its own process because the engine is chosen once per process; `npm run bench -- engine native_1_thread
 * wasm_2_threads` runs some.
 * Reference (from the issue, PyTorch 1 thread on these machines): conv forward 6.2 ms, forward+backward 17 ms.
 */
import { spawnSync } from "node:child_process";
import { initEngine, tf } from "../lib/engine/index.js";
import { setSimdBatchMatMul } from "../lib/engine/kernels/bmm.js";
import { median, type BenchUsage } from "./_cli.js";

const CONFIGS: [string, string, number][] = [
  ["native_1_thread", "node", 1], ["native_2_threads", "node", 2], ["wasm_1_thread", "wasm", 1], ["wasm_2_threads", "wasm", 2], ["cpu", "cpu", 1],
];

export const usage: BenchUsage = {
  summary: "engine micro-benchmarks: conv2d 3x3 forward and forward+backward (ms), matmul 1024^3 GFLOP/s, tiny-SD attention products (ms), per engine and thread count, each in its own process",
  positional: "[config ...]",
  options: [],
  notes: [`configs: ${CONFIGS.map(([l]) => l).join(", ")} (default: all of them)`],
};

/** Attention products of the demo's training step (batch 16 × 2 heads at 8×8 and 4×4 latents, 77 text tokens; the
 *  text encoder's 64 = 16 × 4 heads of 77 tokens): [a shape, b shape, transposeA, transposeB]. */
const ATTENTION: Array<[number[], number[], boolean, boolean]> = [
  [[32, 64, 16], [32, 77, 16], false, true], [[32, 64, 77], [32, 77, 16], false, false], [[32, 64, 16], [32, 64, 16], false, true],
  [[32, 64, 64], [32, 64, 16], false, false], [[32, 64, 64], [32, 64, 16], true, false], [[32, 16, 32], [32, 77, 32], false, true],
  [[64, 77, 8], [64, 77, 8], false, true],
];


function time(fn: () => void, reps: number, warmUp = true): number {
  if (warmUp) fn(); // first calls compile kernels and grow the heap
  const ts: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    fn();
    ts.push(performance.now() - t0);
  }
  return median(ts);
}

async function measure(backend: string, threads: number) {
  const info = await initEngine({ backend, threads });
  const slow = backend === "cpu";
  const reps = slow ? 1 : 7;
  const x = tf.randomNormal([4, 32, 32, 64], 0, 1, "float32", 1) as tf.Tensor4D;
  const w = tf.randomNormal([3, 3, 64, 64], 0, 1, "float32", 2) as tf.Tensor4D;
  // The cpu backend is ~100x slower: one timed run, no warm-up (it has nothing to compile).
  const convFwd = time(() => tf.tidy(() => tf.conv2d(x, w, 1, "same").dataSync()), reps, !slow);
  const grad = tf.grads((a: tf.Tensor, b: tf.Tensor) => tf.sum(tf.conv2d(a as tf.Tensor4D, b as tf.Tensor4D, 1, "same")));
  const convFwdBwd = time(() => tf.tidy(() => grad([x, w]).forEach((g) => g.dataSync())), reps, !slow);
  const n = 1024;
  const a = tf.randomNormal([n, n], 0, 1, "float32", 3) as tf.Tensor2D;
  const b = tf.randomNormal([n, n], 0, 1, "float32", 4) as tf.Tensor2D;
  const a3 = tf.randomNormal([4, n / 2, n], 0, 1, "float32", 5) as tf.Tensor3D;
  const b3 = tf.randomNormal([4, n, n / 2], 0, 1, "float32", 6) as tf.Tensor3D;
  const gflops = (flops: number, ms: number) => +(flops / ms / 1e6).toFixed(2);
  const mmReps = slow ? 1 : 5;
  const plain = time(() => tf.tidy(() => tf.matMul(a, b).dataSync()), mmReps, !slow);
  const transposed = time(() => tf.tidy(() => tf.matMul(a, b, true, true).dataSync()), mmReps, !slow);
  const batched = time(() => tf.tidy(() => tf.matMul(a3, b3).dataSync()), mmReps, !slow);
  const pairs = ATTENTION.map(([sa, sb, ta, tb], i) => [tf.randomNormal(sa, 0, 1, "float32", 10 + i), tf.randomNormal(sb, 0, 1, "float32", 30 + i), ta, tb] as const);
  const attention = () => time(() => tf.tidy(() => pairs.forEach(([p, q, ta, tb]) => tf.matMul(p, q, ta, tb).dataSync())), slow ? 1 : 9, !slow);
  const attentionMs = attention();
  let attentionStockMs: number | null = null;
  if (info.backend === "wasm") {
    const was = setSimdBatchMatMul(false);
    attentionStockMs = attention();
    setSimdBatchMatMul(was);
  }
  return {
    backend: info.backend,
    threads: info.threads,
    conv_fwd_ms: +convFwd.toFixed(2),
    conv_fwd_bwd_ms: +convFwdBwd.toFixed(2),
    matmul_gflops: {
      plain: gflops(2 * n ** 3, plain),
      transposed: gflops(2 * n ** 3, transposed),
      batched: gflops(2 * 4 * (n / 2) * n * (n / 2), batched),
    },
    attention_ms: +attentionMs.toFixed(2),
    ...(attentionStockMs === null ? {} : { attention_stock_kernel_ms: +attentionStockMs.toFixed(2), attention_speedup: +(attentionStockMs / attentionMs).toFixed(2) }),
  };
}

export async function run(args: string[]): Promise<object> {
  const child = args.indexOf("--child");
  if (child >= 0) return measure(args[child + 1]!, Number(args[child + 2]));
  const configs = CONFIGS;
  const only = args.filter((a) => !a.startsWith("-"));
  const unknown = only.filter((a) => !configs.some(([l]) => l === a));
  if (unknown.length) throw new Error(`bench engine: unknown config(s) ${unknown.join(", ")}; known: ${configs.map(([l]) => l).join(", ")}`);
  const result: Record<string, unknown> = {
    bench: "engine",
    conv: "x[4,32,32,64] * w[3,3,64,64] 'same'",
    matmul: "1024^3 (batched: 4 x [512,1024]x[1024,512])",
    attention: ATTENTION.map(([a, b, ta, tb]) => `[${a}]${ta ? "ᵀ" : ""}x[${b}]${tb ? "ᵀ" : ""}`).join(", "),
    pytorch_1_thread_reference_ms: { conv_fwd: 6.2, conv_fwd_bwd: 17 },
  };
  for (const [label, backend, threads] of configs) {
    if (only.length && !only.includes(label)) continue;
    console.log(`bench engine: ${label} ...`);
    const r = spawnSync(process.execPath, ["--import", "tsx", import.meta.filename, "--child", backend, String(threads)], {
      encoding: "utf8", env: { ...process.env, CONTROLNET_TS_BACKEND: "", TF_NUM_INTRAOP_THREADS: String(threads), TF_NUM_INTEROP_THREADS: "1" },
    });
    if (r.status !== 0) throw new Error(`bench engine ${label} failed:\n${r.stderr.slice(-2000)}`);
    result[label] = JSON.parse(r.stdout.trim().split("\n").pop()!);
    console.log(`  ${JSON.stringify(result[label])}`);
  }
  return result;
}

// Child mode: `node --import tsx bench/engine.ts --child <backend> <threads>`.
if (process.argv.includes("--child") && process.argv[1] === import.meta.filename) {
  console.log(JSON.stringify(await run(process.argv.slice(2))));
}
