/**
 * BatchMatMul for tfjs-backend-wasm. The built-in kernel uses XNNPACK only for a single un-transposed GEMM; any
 * transpose or batch drops to a scalar loop (~1 GFLOP/s), and every matmul gradient has a transposed operand. We
 * make transposes explicit, fold a shared right-hand side into one GEMM, and otherwise loop over the batch, so all
 * work reaches the fast path (the original kernel, called with no transpose and batch 1).
 *
 * Many small products (attention of a tiny model: 32 heads of 64×16·16×77) are the exception: there each GEMM call
 * costs more in per-op overhead (slice, reshape, kernel launch ≈ 40 µs) than the product itself, so below
 * SMALL_GEMM_FLOPS per product the whole batch goes to one call of our SIMD kernel (bmm.wat, on the backend's heap),
 * transposes made explicit — or, where the backend exposes no memory for it, to the original kernel's scalar loop.
 */
import { tf } from "../tf.js";
import type { KernelFunc, NamedAttrMap, NamedTensorInfoMap, TensorInfo } from "@tensorflow/tfjs";
import { hasSimdBatchMatMul, simdBatchMatMul } from "./bmm.js";

/** Per-product work (2·m·k·n) below which one call for the whole batch beats a loop of GEMMs. Measured on the tiny UNet
 *  for the stock scalar loop; the SIMD kernel that now takes these is 4–7× faster, so the crossover is likely higher
 *  (not re-measured: none of the measured workloads has batched products just above it). */
export const SMALL_GEMM_FLOPS = 256 * 1024;

/** Inner or output width (k or n) up to which a batch of products goes to the SIMD kernel whatever its size. Attention
 *  products all have the head width as k (QKᵀ, dO·Vᵀ) or n (AV, and the gradients of q, k, v): there the stock GEMM
 *  loop spends more on slicing each head out and stacking the results than on the product. Measured
 *  (scratch-style micro-bench, 1 thread, batch 8–16, 256×1024 scores): SIMD 1.1–1.9× faster at widths 8–32, 1.4–3×
 *  slower at 40 and 64, where XNNPACK's register tiling pays. */
export const NARROW_GEMM_DIM = 32;

export function makeBatchMatMul(original: KernelFunc): KernelFunc {
  const kernel = (args: { inputs: NamedTensorInfoMap; attrs?: NamedAttrMap; backend: unknown }): TensorInfo => {
    const a = args.inputs.a as tf.Tensor;
    const b = args.inputs.b as tf.Tensor;
    const { transposeA, transposeB } = (args.attrs ?? {}) as { transposeA?: boolean; transposeB?: boolean };
    // Inputs have rank >= 2; leading dims are batch dims that broadcast against each other.
    const aOuter = a.shape.slice(0, -2);
    const bOuter = b.shape.slice(0, -2);
    const ba = aOuter.reduce((p, d) => p * d, 1);
    const bb = bOuter.reduce((p, d) => p * d, 1);
    if (!transposeA && !transposeB && ba === 1 && bb === 1) {
      return original(args as Parameters<KernelFunc>[0]) as TensorInfo;
    }
    const outer = tf.broadcast_util.assertAndGetBroadcastShape(aOuter, bOuter);
    const batch = outer.reduce((p, d) => p * d, 1);
    return tf.tidy(() => {
      const rows = (t: tf.Tensor, transpose: boolean | undefined, n: number): tf.Tensor3D => {
        const [r, c] = t.shape.slice(-2) as [number, number];
        const t3 = tf.reshape(t, [n, r, c]) as tf.Tensor3D;
        return transpose ? tf.transpose(t3, [0, 2, 1]) : t3;
      };
      // A partially broadcast batch (e.g. [2,1] x [1,3]) is materialised; the common cases never are.
      const aFull = ba === 1 || ba === batch ? a : tf.broadcastTo(a, [...outer, ...a.shape.slice(-2)]);
      const bFull = bb === 1 || bb === batch ? b : tf.broadcastTo(b, [...outer, ...b.shape.slice(-2)]);
      // a stays as stored until a branch needs it un-transposed: the SIMD kernel reads a transposed a in place
      const aStored = rows(aFull, false, ba === 1 ? 1 : batch);
      let aRows: tf.Tensor3D | null = transposeA ? null : aStored;
      const at = (): tf.Tensor3D => (aRows ??= tf.transpose(aStored, [0, 2, 1]));
      const bt = rows(bFull, transposeB, bb === 1 ? 1 : batch);
      const na = aStored.shape[0];
      const [m, k] = transposeA ? [aStored.shape[2], aStored.shape[1]] : [aStored.shape[1], aStored.shape[2]];
      const [nb, , n] = bt.shape;
      let out: tf.Tensor;
      const simd = hasSimdBatchMatMul(args.backend);
      // narrow products of any size only with the SIMD kernel: the stock scalar loop would be slower than the GEMMs
      if (na === nb && (2 * m * k * n < SMALL_GEMM_FLOPS || (simd && na > 1 && Math.min(k, n) <= NARROW_GEMM_DIM))) {
        // Many small or narrow products: one call for the whole batch.
        let info: TensorInfo;
        if (simd) info = simdBatchMatMul(args.backend, aStored, bt, batch, transposeA ?? false);
        else {
          // The original kernel's loop takes dot products along k, reading b with stride n unless b is given as
          // [n,k] with transposeB — so b goes in that layout (a as [m,k]).
          const bRows = transposeB ? (tf.reshape(bFull, [nb, n, k]) as tf.Tensor3D) : (tf.transpose(bt, [0, 2, 1]) as tf.Tensor3D);
          info = original({ inputs: { a: at(), b: bRows }, attrs: { transposeA: false, transposeB: true }, backend: args.backend } as unknown as Parameters<KernelFunc>[0]) as TensorInfo;
        }
        out = tf.engine().makeTensorFromTensorInfo(info);
      } else if (nb === 1) {
        // One shared right-hand side: stack a's batch into rows, one GEMM.
        out = tf.matMul(tf.reshape(at(), [na * m, k]) as tf.Tensor2D, tf.reshape(bt, [k, n]) as tf.Tensor2D);
      } else if (na === 1) {
        // One shared left-hand side: put b's batch beside its columns, one GEMM.
        const b2 = tf.reshape(tf.transpose(bt, [1, 0, 2]), [k, nb * n]) as tf.Tensor2D;
        const o = tf.matMul(tf.reshape(at(), [m, k]) as tf.Tensor2D, b2);
        out = tf.transpose(tf.reshape(o, [m, nb, n]), [1, 0, 2]);
      } else {
        const parts: tf.Tensor[] = [];
        for (let i = 0; i < na; i++) {
          const ai = tf.reshape(tf.slice(at(), [i, 0, 0], [1, m, k]), [m, k]) as tf.Tensor2D;
          const bi = tf.reshape(tf.slice(bt, [i, 0, 0], [1, k, n]), [k, n]) as tf.Tensor2D;
          parts.push(tf.matMul(ai, bi));
        }
        out = tf.stack(parts);
      }
      return tf.reshape(out, [...outer, m, n]);
    });
  };
  return kernel as unknown as KernelFunc;
}
