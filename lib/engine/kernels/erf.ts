/**
 * Erf for tfjs-backend-wasm (missing there). Exact GELU — used by diffusers' GEGLU feed-forward and by CLIP configs
 * with hidden_act "gelu" — is x·½(1+erf(x/√2)). The complementary-error-function series below (Numerical Recipes'
 * erfcc, Chebyshev fit) has fractional error < 1.2e-7 everywhere, well inside float32 parity needs.
 */
import type { KernelFunc, NamedTensorInfoMap, TensorInfo } from "@tensorflow/tfjs";

interface WasmBackendLike {
  makeOutput(shape: number[], dtype: string): TensorInfo;
  typedArrayFromHeap(t: TensorInfo): Float32Array | Int32Array | Uint8Array;
}

export function erfScalar(x: number): number {
  const z = Math.abs(x);
  const t = 1 / (1 + 0.5 * z);
  const erfc =
    t *
    Math.exp(
      -z * z - 1.26551223 +
        t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806 + t * (0.27886807 +
        t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))),
    );
  return x >= 0 ? 1 - erfc : erfc - 1;
}

function erf(args: { inputs: NamedTensorInfoMap; backend: unknown }): TensorInfo {
  const x = args.inputs.x as TensorInfo;
  const backend = args.backend as WasmBackendLike;
  const out = backend.makeOutput(x.shape, "float32");
  const xv = backend.typedArrayFromHeap(x);
  const ov = backend.typedArrayFromHeap(out);
  for (let i = 0; i < xv.length; i++) ov[i] = erfScalar(xv[i]!);
  return out;
}

export const erfKernel = erf as unknown as KernelFunc;
