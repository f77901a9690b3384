/**
 * Our fused kernels on the native CPU engine: the TensorFlow ops of native/fused (built by `npm install` beside the
 * engine) registered as tfjs kernels with their gradients. TensorFlow has no fused CPU attention (without it the step
 * materialises every [batch·heads, N, M] score map forward and backward), runs GroupNorm as a dozen small ops and
 * AdamW as 13 per parameter tensor. lib/engine/fused.ts is the engine-neutral entry point models and optimizer call.
 */
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { tf } from "../tf.js";
import { useOwnOps } from "./linear.js";
import type { NamedAttrMap, TensorInfo } from "@tensorflow/tfjs";
import { FUSED_ADAMW, FUSED_NORMS, FUSED_ATTENTION, FUSED_ATTENTION_GRAD, FUSED_GROUP_NORM, FUSED_GROUP_NORM_GRAD, FUSED_SILU, FUSED_SILU_GRAD, FUSED_LAYER_NORM, FUSED_LAYER_NORM_GRAD, FUSED_GEGLU, FUSED_GEGLU_GRAD } from "../fused.js";

interface FusedAddon {
  register(): string[];
  kernelIsa(): "avx512" | "avx2" | "baseline";
}
interface OpAttr {
  name: string;
  type: number;
  value: unknown;
}
interface NodeBackend {
  binding: { TF_ATTR_INT: number; TF_ATTR_FLOAT: number; TF_ATTR_BOOL: number };
  executeMultipleOutputs(name: string, attrs: OpAttr[], inputs: TensorInfo[], numOutputs: number): TensorInfo[];
}

/**
 * A tfjs kernel running TF op `op` on `inputNames` (in the op's order) with attributes from the tfjs attrs;
 * num_threads is the engine's thread count.
 */
function opKernel(kernelName: string, op: string, inputNames: string[] | ((attrs: NamedAttrMap) => string[]), numOutputs: number | ((attrs: NamedAttrMap) => number),
  threads: number, attrsOf: (b: NodeBackend["binding"], attrs: NamedAttrMap) => OpAttr[]): void {
  tf.registerKernel({
    kernelName,
    backendName: "tensorflow",
    kernelFunc: ({ inputs, backend, attrs }) => {
      const nb = backend as unknown as NodeBackend;
      const a = attrs as NamedAttrMap;
      const names = typeof inputNames === "function" ? inputNames(a) : inputNames;
      const ins = names.map((n) => (inputs as Record<string, TensorInfo>)[n]!);
      const opAttrs = [...attrsOf(nb.binding, a), { name: "num_threads", type: nb.binding.TF_ATTR_INT, value: threads }];
      return nb.executeMultipleOutputs(op, opAttrs, ins, typeof numOutputs === "function" ? numOutputs(a) : numOutputs);
    },
  });
}

function registerKernels(threads: number): void {
  const attention = (b: NodeBackend["binding"], a: NamedAttrMap) => [
    { name: "scale", type: b.TF_ATTR_FLOAT, value: a.scale },
    { name: "heads", type: b.TF_ATTR_INT, value: a.heads ?? 1 },
  ];
  opKernel(FUSED_ATTENTION, "ControlnetTsAttention", ["q", "k", "v"], 2, threads, attention);
  opKernel(FUSED_ATTENTION_GRAD, "ControlnetTsAttentionGrad", ["q", "k", "v", "out", "lse", "dout"], 3, threads, attention);
  const groupNorm = (b: NodeBackend["binding"], a: NamedAttrMap) => [
    { name: "groups", type: b.TF_ATTR_INT, value: a.groups },
    { name: "silu", type: b.TF_ATTR_BOOL, value: a.silu },
  ];
  opKernel(FUSED_GROUP_NORM, "ControlnetTsGroupNorm", ["x", "gamma", "beta"], 3, threads,
    (b, a) => [...groupNorm(b, a), { name: "eps", type: b.TF_ATTR_FLOAT, value: a.eps }]);
  opKernel(FUSED_GROUP_NORM_GRAD, "ControlnetTsGroupNormGrad", ["x", "gamma", "beta", "mean", "rstd", "dy"], 3, threads, groupNorm);
  // AdamW over n tensors: inputs p0…, g0…, m0…, v0… (the op's four lists), outputs the three new lists
  const adamScalars: [string, string][] = [
    ["decay", "decay"], ["oneMinusBeta1", "one_minus_beta1"], ["beta2", "beta2"], ["oneMinusBeta2", "one_minus_beta2"],
    ["bc2Sqrt", "bc2_sqrt"], ["eps", "eps"], ["negStepSize", "neg_step_size"],
  ];
  opKernel(FUSED_ADAMW, "ControlnetTsAdamW",
    (a) => ["p", "g", "m", "v"].flatMap((l) => Array.from({ length: a.n as number }, (_, i) => `${l}${i}`)), (a) => 3 * (a.n as number), threads,
    (b, a) => [{ name: "N", type: b.TF_ATTR_INT, value: a.n }, ...adamScalars.map(([k, op]) => ({ name: op, type: b.TF_ATTR_FLOAT, value: a[k] }))]);
  opKernel(FUSED_NORMS, "ControlnetTsNorms", (a) => Array.from({ length: a.n as number }, (_, i) => `t${i}`), 1, threads,
    (b, a) => [{ name: "N", type: b.TF_ATTR_INT, value: a.n }]);
  opKernel(FUSED_SILU, "ControlnetTsSilu", ["x"], 1, threads, () => []);
  opKernel(FUSED_SILU_GRAD, "ControlnetTsSiluGrad", ["x", "dy"], 1, threads, () => []);
  opKernel(FUSED_LAYER_NORM, "ControlnetTsLayerNorm", ["x", "gamma", "beta"], 3, threads, (b, a) => [{ name: "eps", type: b.TF_ATTR_FLOAT, value: a.eps }]);
  opKernel(FUSED_LAYER_NORM_GRAD, "ControlnetTsLayerNormGrad", ["x", "gamma", "mean", "rstd", "dy"], 3, threads, () => []);
  opKernel(FUSED_GEGLU, "ControlnetTsGeglu", ["h"], 1, threads, () => []);
  opKernel(FUSED_GEGLU_GRAD, "ControlnetTsGegluGrad", ["h", "dy"], 1, threads, () => []);
  registerAdd(threads);
  useOwnOps(threads);
  // One backward op yields every input's gradient; it runs once, in gradFunc, and each input's closure hands out its
  // part (an input that needs no gradient leaves its part to the enclosing tidy).
  tf.registerGradient({
    kernelName: FUSED_ATTENTION,
    inputsToSave: ["q", "k", "v"],
    outputsToSave: [true, true],
    gradFunc: (dy, saved, attrs) => {
      const [q, k, v, out, lse] = saved as tf.Tensor[];
      const dout = Array.isArray(dy) ? dy[0]! : dy;
      const [dq, dk, dv] = tf.engine().runKernel(FUSED_ATTENTION_GRAD, { q: q!, k: k!, v: v!, out: out!, lse: lse!, dout }, attrs as NamedAttrMap) as tf.Tensor[];
      return { q: () => dq!, k: () => dk!, v: () => dv! };
    },
  });
  // one input, one output: the gradient op takes the input and dy
  for (const [kernelName, grad, input] of [[FUSED_SILU, FUSED_SILU_GRAD, "x"], [FUSED_GEGLU, FUSED_GEGLU_GRAD, "h"]] as const) {
    tf.registerGradient({
      kernelName,
      inputsToSave: [input],
      gradFunc: (dy, saved) => {
        const d = Array.isArray(dy) ? dy[0]! : dy;
        return { [input]: () => (tf.engine().runKernel(grad, { [input]: saved[0]!, dy: d }) as tf.Tensor[])[0]! };
      },
    });
  }
  tf.registerGradient({
    kernelName: FUSED_LAYER_NORM,
    inputsToSave: ["x", "gamma", "beta"],
    outputsToSave: [false, true, true],
    gradFunc: (dy, saved) => {
      const [x, gamma, , mean, rstd] = saved as tf.Tensor[];
      const d = Array.isArray(dy) ? dy[0]! : dy;
      const [dx, dgamma, dbeta] = tf.engine().runKernel(FUSED_LAYER_NORM_GRAD, { x: x!, gamma: gamma!, mean: mean!, rstd: rstd!, dy: d }) as tf.Tensor[];
      return { x: () => dx!, gamma: () => dgamma!, beta: () => dbeta! };
    },
  });
  tf.registerGradient({
    kernelName: FUSED_GROUP_NORM,
    inputsToSave: ["x", "gamma", "beta"],
    outputsToSave: [false, true, true],
    gradFunc: (dy, saved, attrs) => {
      const [x, gamma, beta, mean, rstd] = saved as tf.Tensor[];
      const d = Array.isArray(dy) ? dy[0]! : dy;
      const [dx, dgamma, dbeta] = tf.engine().runKernel(FUSED_GROUP_NORM_GRAD, { x: x!, gamma: gamma!, beta: beta!, mean: mean!, rstd: rstd!, dy: d }, attrs as NamedAttrMap) as tf.Tensor[];
      return { x: () => dx!, gamma: () => dgamma!, beta: () => dbeta! };
    },
  });
}

/**
 * b can be added by ControlnetTsAdd: shaped as a, or one row of a's last axis per batch item ([B, 1, …, 1, C]) or for
 * all ([1, …, 1, C], [C]) — a's shape is then the result's.
 */
export function addsAsRows(a: number[], b: number[]): boolean {
  if (tf.util.arraysEqual(a, b)) return true;
  if (a.length === 0 || b.length === 0 || b.length > a.length || b[b.length - 1] !== a[a.length - 1]) return false;
  const middle = b.slice(b.length === a.length ? 1 : 0, -1);
  return middle.every((d) => d === 1) && (b.length < a.length || b[0] === a[0] || b[0] === 1);
}

/** How describeEngine names the copy of the kernels the addon picked for this CPU (CONTROLNET_TS_FUSED_AVX512=0 keeps
 *  the AVX2 one). */
const ISA_NAMES = { avx512: "AVX-512VL", avx2: "AVX2 + FMA", baseline: "SSE2" } as const;

/** Adds below this many elements take our op, on one thread; larger ones gain from TensorFlow's pool. */
const ONE_THREAD_ADD = 1 << 18;

/**
 * Add over float32 tensors where one is shaped as the other or as a row per batch item (residuals, the resnets' time
 * embedding), below ONE_THREAD_ADD elements: our op on the calling thread (TensorFlow's Add splits a 131K-element add
 * across its pool: 209 vs 85 µs at 2 threads on this VM, [4,32,32,32] + [4,1,1,32] 272 vs 94 µs); every other add is
 * tfjs-node's kernel. The same float32 sums either way.
 */
function registerAdd(threads: number): void {
  const stock = tf.getKernel("Add", "tensorflow")!.kernelFunc;
  tf.unregisterKernel("Add", "tensorflow");
  tf.registerKernel({
    kernelName: "Add",
    backendName: "tensorflow",
    kernelFunc: (args) => {
      const { a, b } = args.inputs as { a: TensorInfo; b: TensorInfo };
      if (a.dtype !== "float32" || b.dtype !== "float32") return stock(args);
      const pair = addsAsRows(a.shape, b.shape) ? [a, b] : addsAsRows(b.shape, a.shape) ? [b, a] : null;
      if (!pair || tf.util.sizeFromShape(pair[0]!.shape) >= ONE_THREAD_ADD) return stock(args);
      const nb = args.backend as unknown as NodeBackend;
      return nb.executeMultipleOutputs("ControlnetTsAdd", [{ name: "num_threads", type: nb.binding.TF_ATTR_INT, value: threads }], pair, 1)[0]!;
    },
  });
}

let status: string | null = null;

/**
 * Loads the addon from `<nativeDir>/fused` and registers its kernels once; returns one line for describeEngine: which
 * fused kernels run, or why none does. Never throws: TensorFlow's own ops run instead.
 */
export function loadFusedKernels(nativeDir: string, threads: number, usingGpu: boolean): string {
  if (status) return status;
  const file = path.join(nativeDir, "fused", "fused.node");
  const composed = "none, TensorFlow's own ops run (attention as batched products)";
  if (usingGpu) status = `${composed}: the fused kernels are CPU-only`;
  else if (!fs.existsSync(file)) status = `${composed}: the fused-kernels addon is not built; rebuild with: npm run install-native`;
  else {
    try {
      const addon = createRequire(import.meta.url)(file) as FusedAddon;
      addon.register();
      registerKernels(threads);
      status = `attention, GroupNorm+SiLU, SiLU, LayerNorm, GEGLU, linear layers, AdamW, gradient norms (TensorFlow ops of ours; ${ISA_NAMES[addon.kernelIsa()]}, ${threads} thread(s))`;
    } catch (err) {
      status = `${composed}: the fused-kernels addon failed to load (${(err instanceof Error ? err.message : String(err)).split("\n")[0]})`;
    }
  }
  return status;
}
