/**
 * Fused attention on the native CPU engine: our TensorFlow ops ControlnetTsAttention / ControlnetTsAttentionGrad
 * (native/attention/attention.cc, built by `npm install` beside the engine) as a tfjs kernel with its gradient.
 * TensorFlow has no fused CPU attention; without these the step materialises every [batch·heads, N, M] score map
 * forward and backward. lib/engine/attention.ts is the engine-neutral entry point the models call.
 */
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { tf } from "../tf.js";
import type { TensorInfo } from "@tensorflow/tfjs";
import { FUSED_ATTENTION, FUSED_ATTENTION_GRAD } from "../attention.js";

interface AttentionAddon {
  register(): string[];
  kernelIsa(): "avx2" | "baseline";
}
interface NodeBackend {
  binding: { TF_ATTR_INT: number; TF_ATTR_FLOAT: number };
  executeMultipleOutputs(name: string, attrs: { name: string; type: number; value: unknown }[], inputs: TensorInfo[], numOutputs: number): TensorInfo[];
}

/** The TF op's attributes: the softmax scale and how many threads the kernel may use (the engine's intra-op count). */
function opAttrs(backend: NodeBackend, scale: number, threads: number) {
  const b = backend.binding;
  return [
    { name: "scale", type: b.TF_ATTR_FLOAT, value: scale },
    { name: "num_threads", type: b.TF_ATTR_INT, value: threads },
  ];
}

function registerKernels(threads: number): void {
  tf.registerKernel({
    kernelName: FUSED_ATTENTION,
    backendName: "tensorflow",
    kernelFunc: ({ inputs, backend, attrs }) => {
      const { q, k, v } = inputs as { q: TensorInfo; k: TensorInfo; v: TensorInfo };
      const nb = backend as unknown as NodeBackend;
      return nb.executeMultipleOutputs("ControlnetTsAttention", opAttrs(nb, (attrs as { scale: number }).scale, threads), [q, k, v], 2);
    },
  });
  tf.registerKernel({
    kernelName: FUSED_ATTENTION_GRAD,
    backendName: "tensorflow",
    kernelFunc: ({ inputs, backend, attrs }) => {
      const { q, k, v, out, lse, dout } = inputs as Record<string, TensorInfo>;
      const nb = backend as unknown as NodeBackend;
      return nb.executeMultipleOutputs("ControlnetTsAttentionGrad", opAttrs(nb, (attrs as { scale: number }).scale, threads), [q!, k!, v!, out!, lse!, dout!], 3);
    },
  });
  tf.registerGradient({
    kernelName: FUSED_ATTENTION,
    inputsToSave: ["q", "k", "v"],
    outputsToSave: [true, true],
    // One backward op yields all three gradients; it runs once, here, and each input's closure hands out its part
    // (an input that needs no gradient leaves its part to the enclosing tidy).
    gradFunc: (dy, saved, attrs) => {
      const [q, k, v, out, lse] = saved as tf.Tensor[];
      const dout = Array.isArray(dy) ? dy[0]! : dy;
      const [dq, dk, dv] = tf.engine().runKernel(FUSED_ATTENTION_GRAD, { q: q!, k: k!, v: v!, out: out!, lse: lse!, dout }, attrs as unknown as tf.NamedAttrMap) as tf.Tensor[];
      return { q: () => dq!, k: () => dk!, v: () => dv! };
    },
  });
}

let status: string | null = null;

/**
 * Loads the addon from `<nativeDir>/attention` and registers the kernel once; returns one line for describeEngine:
 * what runs attention, and why not the fused kernel when it does not. Never throws: attention then runs as tfjs ops.
 */
export function loadFusedAttention(nativeDir: string, threads: number, usingGpu: boolean): string {
  if (status) return status;
  const file = path.join(nativeDir, "attention", "attention.node");
  if (usingGpu) status = "TensorFlow's batched products (the fused kernel is CPU-only)";
  else if (!fs.existsSync(file)) status = `TensorFlow's batched products (the fused-attention addon is not built; rebuild with: npm run install-native)`;
  else {
    try {
      const addon = createRequire(import.meta.url)(file) as AttentionAddon;
      addon.register();
      registerKernels(threads);
      status = `fused (our TensorFlow op ControlnetTsAttention, ${addon.kernelIsa() === "avx2" ? "AVX2 + FMA" : "SSE2"}, ${threads} thread(s))`;
    } catch (err) {
      status = `TensorFlow's batched products (the fused-attention addon failed to load: ${(err instanceof Error ? err.message : String(err)).split("\n")[0]})`;
    }
  }
  return status;
}
