/**
 * BatchMatMul for tfjs-backend-wasm. The built-in kernel uses XNNPACK only for a single un-transposed GEMM; any
 * transpose or batch drops to a scalar loop (~1 GFLOP/s), and every matmul gradient has a transposed operand. We
 * make transposes explicit, fold a shared right-hand side into one GEMM, and otherwise loop over the batch, so all
 * work reaches the fast path (the original kernel, called with no transpose and batch 1).
 */
import { tf } from "../tf.js";
import type { KernelFunc, NamedAttrMap, NamedTensorInfoMap, TensorInfo } from "@tensorflow/tfjs";

export function makeBatchMatMul(original: KernelFunc): KernelFunc {
  const kernel = (args: { inputs: NamedTensorInfoMap; attrs?: NamedAttrMap; backend: unknown }): TensorInfo => {
    const a = args.inputs.a as tf.Tensor3D;
    const b = args.inputs.b as tf.Tensor3D;
    const { transposeA, transposeB } = (args.attrs ?? {}) as { transposeA?: boolean; transposeB?: boolean };
    const [ba] = a.shape;
    const [bb] = b.shape;
    if (!transposeA && !transposeB && ba === 1 && bb === 1) {
      return original(args as Parameters<KernelFunc>[0]) as TensorInfo;
    }
    return tf.tidy(() => {
      const at = transposeA ? tf.transpose(a, [0, 2, 1]) : a;
      const bt = transposeB ? tf.transpose(b, [0, 2, 1]) : b;
      const [, m, k] = at.shape;
      const n = bt.shape[2];
      if (bb === 1) {
        // One shared right-hand side: stack a's batch into rows, one GEMM.
        const out = tf.matMul(tf.reshape(at, [ba * m, k]), tf.reshape(bt, [k, n]));
        return tf.reshape(out, [ba, m, n]);
      }
      if (ba === 1) {
        // One shared left-hand side: put b's batch beside its columns, one GEMM.
        const b2 = tf.reshape(tf.transpose(bt, [1, 0, 2]), [k, bb * n]);
        const out = tf.matMul(tf.reshape(at, [m, k]), b2);
        return tf.transpose(tf.reshape(out, [m, bb, n]), [1, 0, 2]);
      }
      const parts: tf.Tensor[] = [];
      for (let i = 0; i < ba; i++) {
        const ai = tf.reshape(tf.slice(at, [i, 0, 0], [1, m, k]), [m, k]) as tf.Tensor2D;
        const bi = tf.reshape(tf.slice(bt, [i, 0, 0], [1, k, n]), [k, n]) as tf.Tensor2D;
        parts.push(tf.matMul(ai, bi));
      }
      return tf.stack(parts);
    });
  };
  return kernel as unknown as KernelFunc;
}
