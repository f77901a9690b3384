/**
 * Probe of the WebGPU path for GPU users (not an engine of lib/engine yet): tfjs-backend-webgpu on Dawn's Node
 * binding (npm `webgpu`). Checks conv gradients and a tiny-SD UNet's loss and gradients against the cpu backend,
 * then times UNet training steps (forward + backward, no optimizer) at several batch sizes, for the tiny-sd UNet and
 * for bigger candidates (16×16 latents, a deeper or a wider UNet).
 *
 *   npm install --no-save webgpu@0.6.2 @tensorflow/tfjs-backend-webgpu@4.22.0
 *   node --import tsx bench/webgpu-probe.ts      (or: npm run bench -- webgpu-probe, which ends with a JSON line)
 *
 * On Linux Dawn loads Vulkan at run time: the machine needs libvulkan1 and libglvnd (libGLdispatch) and the NVIDIA
 * Vulkan ICD (in containers: `VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json`). Reads must be
 * asynchronous: tfjs-webgpu's synchronous read (`dataSync`) needs OffscreenCanvas, which Node lacks, so the library's
 * synchronous reads (losses, clipGradNorm, saving) throw there — the reason this is a probe and not an engine.
 */
import { tf } from "../lib/engine/tf.js";
import { UNet2DConditionModel } from "../lib/models/index.js";
import { TINY_UNET_CONFIG } from "../data/recipes/tiny-sd.js";
import type { BenchUsage } from "./_cli.js";

export const usage: BenchUsage = {
  summary: "probe of tfjs-backend-webgpu on Dawn's Node binding: conv and tiny-SD UNet gradients against cpu, then UNet forward+backward ms/step at several batch sizes (needs webgpu@0.6.2 and @tensorflow/tfjs-backend-webgpu@4.22.0 installed by hand, and a Vulkan driver)",
  options: [],
};

class NoAdapterError extends Error {}

/** Sets up WebGPU and the tfjs backend; null when there is no adapter. */
async function setUpWebgpu(): Promise<string | null> {
  // neither package is a dependency (installed by hand, above), so the typecheck must not resolve them
  // @ts-ignore
  const { create, globals } = (await import("webgpu")) as { create(o: string[]): unknown; globals: object };
  Object.assign(globalThis, globals);
  Object.defineProperty(globalThis, "navigator", { value: { gpu: create([]) }, configurable: true });
  const adapter = await (globalThis as unknown as { navigator: { gpu: { requestAdapter(): Promise<unknown> } } }).navigator.gpu.requestAdapter();
  if (!adapter) return "no WebGPU adapter (no Vulkan driver found: see the header)";
  // @ts-ignore
  await import("@tensorflow/tfjs-backend-webgpu");
  if (!(await tf.setBackend("webgpu"))) throw new Error("the webgpu backend did not initialise");
  return null;
}

function maxDiff(a: Float32Array, b: Float32Array): string {
  let m = 0;
  let s = 0;
  for (let i = 0; i < a.length; i++) {
    m = Math.max(m, Math.abs(a[i]! - b[i]!));
    s = Math.max(s, Math.abs(b[i]!));
  }
  return `${m.toExponential(2)} (max |ref| ${s.toFixed(2)})`;
}
async function read(ts: tf.Tensor[]): Promise<Float32Array[]> {
  const out: Float32Array[] = [];
  for (const t of ts) {
    out.push((await t.data()) as Float32Array);
    t.dispose();
  }
  return out;
}
/** f on webgpu and on cpu: [webgpu, cpu]. */
async function onBoth(f: () => tf.Tensor[]): Promise<[Float32Array[], Float32Array[]]> {
  await tf.setBackend("cpu");
  const ref = await read(f());
  await tf.setBackend("webgpu");
  return [await read(f()), ref];
}

type Pad = "same" | tf.backend_util.ExplicitPadding;
/**
 * An MSE through `net` on [B, L, L, 4] latents, with its gradients; seeded inputs when `seed` is given. Timesteps come
 * from a host array (the UNet reads them synchronously).
 */
function lossAndGrads(net: UNet2DConditionModel, B: number, L: number, seed?: number) {
  const params = [...net.namedParameters().values()].map((p) => p.variable);
  const x = tf.randomNormal([B, L, L, 4], 0, 1, "float32", seed) as tf.Tensor4D;
  const e = tf.randomNormal([B, 77, 32], 0, 1, "float32", seed === undefined ? undefined : seed + 1) as tf.Tensor3D;
  const t = tf.tensor1d(Float32Array.from({ length: B }, (_, i) => (i * 997) % 1000));
  const { value, grads } = tf.variableGrads(() => tf.mean(tf.square(tf.sub(net.forward(x, t, e), x))) as tf.Scalar, params);
  tf.dispose([x, e, t]);
  return { value, grads: Object.values(grads) };
}
/** Forward+backward ms/step of a UNet on [B, L, L, 4] latents (fresh random inputs each step). */
async function timeSteps(label: string, net: UNet2DConditionModel, L: number, batches: number[]): Promise<void> {
  for (const B of batches) {
    const step = async () => {
      const { value, grads } = lossAndGrads(net, B, L);
      await value.data();
      tf.dispose([value, ...grads]);
    };
    await step();
    await step();
    const N = 10;
    const t0 = performance.now();
    for (let i = 0; i < N; i++) await step();
    const ms = (performance.now() - t0) / N;
    console.log(`${label}, batch ${B}: ${ms.toFixed(0)} ms/step (${((1000 * B) / ms).toFixed(0)} samples/s)`);
  }
}

export async function run(_args: string[] = []): Promise<object> {
  const missing = await setUpWebgpu();
  if (missing) throw new NoAdapterError(missing);
  const convCases: Array<[number, Pad]> = [[1, "same"], [2, [[0, 0], [1, 1], [1, 1], [0, 0]]], [2, [[0, 0], [0, 1], [0, 1], [0, 0]]]];
  for (const [s, pad] of convCases) {
    const [g, r] = await onBoth(() => tf.tidy(() => {
      const x = tf.randomNormal([2, 9, 8, 3], 0, 1, "float32", 1) as tf.Tensor4D;
      const w = tf.randomNormal([3, 3, 3, 5], 0, 1, "float32", 2) as tf.Tensor4D;
      const y = tf.conv2d(x, w, s, pad);
      const rr = tf.randomNormal(y.shape, 0, 1, "float32", 3);
      const [dx, dw] = tf.grads((a: tf.Tensor, b: tf.Tensor) => tf.sum(tf.mul(tf.conv2d(a as tf.Tensor4D, b as tf.Tensor4D, s, pad), rr)))([x, w]);
      return [y, dx!, dw!];
    }));
    console.log(`conv2d stride ${s} pad ${JSON.stringify(pad)}: y ${maxDiff(g[0]!, r[0]!)}, dx ${maxDiff(g[1]!, r[1]!)}, dw ${maxDiff(g[2]!, r[2]!)}`);
  }

  const unet = new UNet2DConditionModel({ ...TINY_UNET_CONFIG, sample_size: 8 }, { seed: 1 });
  {
    const [g, r] = await onBoth(() => tf.tidy(() => {
      const { value, grads } = lossAndGrads(unet, 4, 8, 5);
      return [value, tf.concat(grads.map((x) => x.flatten()))];
    }));
    console.log(`tiny-sd UNet: loss ${g[0]![0]} (cpu ${r[0]![0]}), gradients ${maxDiff(g[1]!, r[1]!)}`);
  }
  await timeSteps("tiny-sd UNet forward+backward (8×8 latents)", unet, 8, [16, 64, 256]);
  // candidates for a bigger base (the next step for the demo's IoU): 16×16 latents (a ×2 VAE), a wider or deeper UNet
  const variants: Array<[string, object, number]> = [
    ["tiny-sd UNet on 16×16 latents", {}, 16],
    ["UNet [32, 64, 64] on 16×16 latents", { block_out_channels: [32, 64, 64], down_block_types: Array(3).fill("CrossAttnDownBlock2D"), up_block_types: Array(3).fill("CrossAttnUpBlock2D") }, 16],
    ["UNet [64, 128] on 8×8 latents", { block_out_channels: [64, 128], norm_num_groups: 16 }, 8],
  ];
  for (const [label, cfg, L] of variants) {
    const net = new UNet2DConditionModel({ ...TINY_UNET_CONFIG, ...cfg, sample_size: L }, { seed: 1 });
    await timeSteps(`${label} (${(net.numParameters() / 1e6).toFixed(2)} M params)`, net, L, [64, 256]);
  }
  return { bench: "webgpu-probe", backend: tf.getBackend() };
}

// run directly: `node --import tsx bench/webgpu-probe.ts` (exit 2 without an adapter)
if (process.argv[1] === import.meta.filename) {
  try {
    await run();
  } catch (e) {
    if (!(e instanceof NoAdapterError)) throw e;
    console.log(e.message);
    process.exit(2);
  }
}
