/**
 * The linear layer and the bias add as tfjs kernels of the native engine, each running TensorFlow's own ops
 * (MatMul, BiasAdd, BiasAddGrad, Reshape) or our fused-kernels addon's (below) behind one tfjs kernel
 * (lib/engine/fused.ts: fusedLinear, fusedBiasAdd).
 *
 * Why: composed from tfjs ops a linear layer is reshape → matMul → add(bias) → reshape forward and about six ops
 * backward, each paying tfjs' dispatch (~15–20 µs beyond TensorFlow's own) and tape bookkeeping; and the bias add
 * broadcasts through TensorFlow's generic Add, which splits even a 64K-element add across the intra-op pool (2
 * threads on this VM: [2048,32]+[32] 71 µs as Add, 31 µs as BiasAdd). The validation image of bench-mid runs ~1,100
 * linear layers and ~450 conv biases. Gradients stay lazy per input: the frozen UNet's layers never compute dW.
 * Where our fused-kernels addon is loaded (CPU), the forward products and dx of layers up to 256×256 run as its
 * ControlnetTsMatMul instead (bias fused, any rank, no reshapes: [2048,32]·[32,32] + b 76–108 µs against 158 µs
 * composed, torch 50 µs); dW stays TensorFlow's MatMul. The conv biases then run as its ControlnetTsAdd (a row
 * broadcast, the same sums bit for bit): 0.5–0.6 of BiasAdd's time at 2 threads on most conv outputs ([4,32,32,32]
 * 37 vs 60 µs, [4,256,256,16] 0.91 vs 1.70 ms, [1,64,64,320] 168 vs 337 µs), 1.33 on [4,16,16,64].
 */
import { tf } from "../tf.js";
import type { NamedTensorInfoMap, TensorInfo } from "@tensorflow/tfjs";
import { FUSED_BIAS_ADD, FUSED_BIAS_GRAD, FUSED_LINEAR, FUSED_LINEAR_GRAD_INPUT, FUSED_LINEAR_GRAD_WEIGHT } from "../fused.js";
import { matMul, reshape, type OpAttr } from "./tf-ops.js";

interface NodeBackend {
  binding: { TF_ATTR_TYPE: number; TF_ATTR_BOOL: number; TF_ATTR_STRING: number; TF_ATTR_INT: number; TF_FLOAT: number; TF_INT32: number };
  executeSingleOutput(name: string, attrs: OpAttr[], inputs: TensorInfo[]): tf.Tensor;
}

/** Threads for our ControlnetTsMatMul and ControlnetTsAdd (native/fused), or null while that addon is not loaded. */
let ownOpsThreads: number | null = null;

/**
 * Layers whose weight has at most this many entries (K·N up to 256×256: every layer of bench-mid and the tiny models,
 * feed-forwards included) run as our op — dispatch, TensorFlow's pool hand-off and the separate bias pass are much of
 * their time; wider layers (SD1.5's 320×320 and up) as TensorFlow's MatMul, whose blocking wins there. Chosen by the
 * layer, never by the batch, so a layer computes each row the same way whatever the batch (a split by multiply-adds
 * sent one tiny-model layer to different products at batch 4 and at batch 2). Measured at 2 threads (ours / TF's
 * MatMul + BiasAdd): [4096,32]·[32,256] 0.69, [4096,128]·[128,32] 0.57, [1024,64]·[64,512] 0.91, [1024,512]·[512,64]ᵀ
 * 0.72, [256,128]·[128,1024] 1.00; [4096,320]·[320,320] 1.05, [4096,1280]·[1280,320] 1.45. Raising the bound from
 * 64×64: linear layers of the validation image 103–116 ms against 127–138 (two runs each); the training step 0.97
 * (14 alternating pairs).
 */
const OWN_MATMUL_MAX_WEIGHT = 256 * 256;

/** Whether x [.., K] · w [K, N] (or wᵀ) runs as our op. */
function ownMatMulFits(w: TensorInfo): boolean {
  return ownOpsThreads !== null && tf.util.sizeFromShape(w.shape) <= OWN_MATMUL_MAX_WEIGHT;
}

/** The fused-kernels addon is loaded: products and bias adds run as its ops on `threads` threads. */
export function useOwnOps(threads: number): void {
  ownOpsThreads = threads;
}

/** TensorFlow ops on tensors of the tensorflow backend; every intermediate is disposed by the caller. */
class Ops {
  constructor(private readonly nb: NodeBackend) {}
  /** a [.., K] · b [K, N] (b [N, K] with transposeB) + bias → [.., N]: our op, any rank, no reshapes. */
  ownMatMul(a: TensorInfo, b: TensorInfo, bias: TensorInfo | undefined, transposeB: boolean, threads: number): tf.Tensor {
    const attrs = [
      { name: "transpose_b", type: this.nb.binding.TF_ATTR_BOOL, value: transposeB },
      { name: "has_bias", type: this.nb.binding.TF_ATTR_BOOL, value: bias !== undefined },
      { name: "num_threads", type: this.nb.binding.TF_ATTR_INT, value: threads },
    ];
    return this.nb.executeSingleOutput("ControlnetTsMatMul", attrs, [a, b, bias ?? b]); // without a bias, b stands in unread
  }
  /** x [.., C] + bias [C]: our op (the same float32 sums as BiasAdd, bit for bit). */
  ownAdd(x: TensorInfo, bias: TensorInfo, threads: number): tf.Tensor {
    return this.nb.executeSingleOutput("ControlnetTsAdd", [{ name: "num_threads", type: this.nb.binding.TF_ATTR_INT, value: threads }], [x, bias]);
  }
  private get float(): OpAttr {
    return { name: "T", type: this.nb.binding.TF_ATTR_TYPE, value: this.nb.binding.TF_FLOAT };
  }
  reshape(x: TensorInfo, shape: number[]): tf.Tensor {
    return reshape(this.nb, x, shape) as tf.Tensor;
  }
  matMul(a: TensorInfo, b: TensorInfo, transposeA: boolean, transposeB: boolean): tf.Tensor {
    return matMul(this.nb, a, b, transposeA, transposeB) as tf.Tensor;
  }
  biasAdd(x: TensorInfo, bias: TensorInfo): tf.Tensor {
    return this.nb.executeSingleOutput("BiasAdd", [this.float, this.nhwc], [x, bias]);
  }
  biasAddGrad(dy: TensorInfo): tf.Tensor {
    return this.nb.executeSingleOutput("BiasAddGrad", [this.float, this.nhwc], [dy]);
  }
  private get nhwc(): OpAttr {
    return { name: "data_format", type: this.nb.binding.TF_ATTR_STRING, value: "NHWC" };
  }
}

/** x [.., K] as [rows, K] (x itself when it is 2-D); `made` collects what the caller disposes. */
function rows(ops: Ops, x: TensorInfo, made: tf.Tensor[]): TensorInfo {
  if (x.shape.length === 2) return x;
  const k = x.shape[x.shape.length - 1]!;
  const r = ops.reshape(x, [tf.util.sizeFromShape(x.shape) / k, k]);
  made.push(r);
  return r;
}

/** y [rows, N] shaped as `lead` + [N]; y itself when already so. */
function unrows(ops: Ops, y: tf.Tensor, lead: number[]): tf.Tensor {
  if (lead.length === 1) return y;
  const out = ops.reshape(y, [...lead, y.shape[1]!]);
  y.dispose();
  return out;
}

function kernel(kernelName: string, fn: (ops: Ops, inputs: NamedTensorInfoMap, made: tf.Tensor[]) => tf.Tensor): void {
  tf.registerKernel({
    kernelName,
    backendName: "tensorflow",
    kernelFunc: ({ inputs, backend }) => {
      const made: tf.Tensor[] = [];
      try {
        return fn(new Ops(backend as unknown as NodeBackend), inputs, made);
      } finally {
        tf.dispose(made);
      }
    },
  });
}

/** Registers the kernels and their gradients on backend "tensorflow" (CPU and GPU builds alike). */
export function registerLinearKernels(): void {
  // x [.., K] · weight [K, N] (+ bias [N]) → [.., N]
  kernel(FUSED_LINEAR, (ops, { x, weight, bias }, made) => {
    if (ownMatMulFits(weight!)) return ops.ownMatMul(x!, weight!, bias, false, ownOpsThreads!);
    let y = ops.matMul(rows(ops, x!, made), weight!, false, false);
    if (bias) {
      made.push(y);
      y = ops.biasAdd(y, bias);
    }
    return unrows(ops, y, x!.shape.slice(0, -1));
  });
  // dy [.., N], weight [K, N] → dx [.., K]
  kernel(FUSED_LINEAR_GRAD_INPUT, (ops, { dy, weight }, made) => ownMatMulFits(weight!)
    ? ops.ownMatMul(dy!, weight!, undefined, true, ownOpsThreads!)
    : unrows(ops, ops.matMul(rows(ops, dy!, made), weight!, false, true), dy!.shape.slice(0, -1)));
  // x [.., K], dy [.., N] → dweight [K, N]
  kernel(FUSED_LINEAR_GRAD_WEIGHT, (ops, { x, dy }, made) => ops.matMul(rows(ops, x!, made), rows(ops, dy!, made), true, false));
  kernel(FUSED_BIAS_ADD, (ops, { x, bias }) => ownOpsThreads !== null ? ops.ownAdd(x!, bias!, ownOpsThreads) : ops.biasAdd(x!, bias!));
  // dy [.., N] → Σ over all but the last axis [N]
  kernel(FUSED_BIAS_GRAD, (ops, { dy }) => ops.biasAddGrad(dy!));
  const biasGrad = (dy: tf.Tensor) => () => tf.engine().runKernel(FUSED_BIAS_GRAD, { dy }) as tf.Tensor;
  tf.registerGradient({
    kernelName: FUSED_LINEAR,
    inputsToSave: ["x", "weight"],
    gradFunc: (dy, saved) => {
      const [x, weight] = saved as tf.Tensor[];
      const d = Array.isArray(dy) ? dy[0]! : dy;
      return {
        x: () => tf.engine().runKernel(FUSED_LINEAR_GRAD_INPUT, { dy: d, weight: weight! }) as tf.Tensor,
        weight: () => tf.engine().runKernel(FUSED_LINEAR_GRAD_WEIGHT, { x: x!, dy: d }) as tf.Tensor,
        bias: biasGrad(d),
      };
    },
  });
  tf.registerGradient({
    kernelName: FUSED_BIAS_ADD,
    gradFunc: (dy) => {
      const d = Array.isArray(dy) ? dy[0]! : dy;
      return { x: () => tf.reshape(d, d.shape), bias: biasGrad(d) }; // the reshape shares d (kernels.ts)
    },
  });
}
