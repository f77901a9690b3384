/** Registers our wasm kernel overrides (after the wasm backend initialised). Returns the kernel names replaced. */
import { tf } from "../tf.js";
import type { KernelConfig, KernelFunc } from "@tensorflow/tfjs";
import { conv2dBackpropFilter, conv2dBackpropInput } from "./conv-backprop.js";
import { makeBatchMatMul } from "./batch-matmul.js";
import { sliceKernel } from "./slice.js";
import { unsortedSegmentSumKernel } from "./segment-sum.js";
import { erfKernel } from "./erf.js";
import { makeIdentity } from "./identity.js";

let registered: string[] | null = null;

function replace(kernelName: string, make: (original: KernelConfig | undefined) => KernelFunc): void {
  const original = tf.getKernel(kernelName, "wasm");
  if (original) tf.unregisterKernel(kernelName, "wasm");
  tf.registerKernel({
    kernelName,
    backendName: "wasm",
    kernelFunc: make(original),
    // Keep the original setup (it binds the wasm export the original kernelFunc calls).
    ...(original?.setupFunc ? { setupFunc: original.setupFunc } : {}),
  });
}

export function registerWasmKernels(): string[] {
  if (registered) return registered;
  replace("Conv2DBackpropFilter", () => conv2dBackpropFilter as unknown as KernelFunc);
  replace("Conv2DBackpropInput", () => conv2dBackpropInput as unknown as KernelFunc);
  replace("BatchMatMul", (orig) => {
    if (!orig) throw new Error("tfjs-backend-wasm has no BatchMatMul kernel to wrap");
    return makeBatchMatMul(orig.kernelFunc);
  });
  replace("Slice", () => sliceKernel);
  replace("Identity", (orig) => {
    if (!orig) throw new Error("tfjs-backend-wasm has no Identity kernel to wrap");
    return makeIdentity(orig.kernelFunc);
  });
  const added = ["Conv2DBackpropFilter", "Conv2DBackpropInput", "BatchMatMul", "Slice", "Identity"];
  if (!tf.getKernel("UnsortedSegmentSum", "wasm")) {
    replace("UnsortedSegmentSum", () => unsortedSegmentSumKernel);
    added.push("UnsortedSegmentSum");
  }
  if (!tf.getKernel("Erf", "wasm")) {
    replace("Erf", () => erfKernel);
    added.push("Erf");
  }
  registered = added;
  return added;
}
