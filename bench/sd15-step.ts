/**
 * `npm run bench -- sd15-step [--resolution R] [--chunk C]`
 *
 * One training step of the SD1.5-config ControlNet (random weights, exact SD1.5 shapes: UNet 859,520,964 and
 * ControlNet 361,279,120 parameters) inside the 4 GiB wasm heap: the frozen UNet's resnet/transformer weights live
 * in host memory and are streamed into the heap block by block (lib/planner/offload.ts), gradient checkpointing on
 * both models, chunked attention, 8-bit AdamW (states on the host, update on the host), the ControlNet's weight
 * gradients moved to the host as backward produces them, conv/linear weights without XNNPACK's cached packed copies. Latents and text
 * embeddings are inputs (the VAE and text encoder are not run here). Prints measured peak heap / live bytes and host
 * memory beside the planner's prediction.
 */
import { initEngine, measurePeak, memoryInfo, tf, throwIfWasmKernelFailed, WASM_HEAP_LIMIT } from "../lib/engine/index.js";
import { ControlNetModel, UNet2DConditionModel, type Module } from "../lib/models/index.js";
import { DDPMScheduler } from "../lib/schedulers/index.js";
import { controlnetGradients } from "../lib/training/step.js";
import { clipGradNorm, createOptimizer } from "../lib/training/optim/index.js";
import { estimateMemory, streamFrozenWeights, SD15_UNET } from "../lib/planner/index.js";

function flag(args: string[], name: string, dflt: number): number {
  const i = args.indexOf(name);
  return i >= 0 ? Number(args[i + 1]) : dflt;
}

export async function run(args: string[]): Promise<object> {
  const resolution = flag(args, "--resolution", 64);
  const chunk = flag(args, "--chunk", 256);
  const info = await initEngine({ backend: "wasm" });
  const log = (s: string) => console.log(`[bench sd15-step] ${s}`);
  const t0 = performance.now();
  const unet = new UNet2DConditionModel(SD15_UNET, { shapeOnly: true });
  unet.trainable = false;
  unet.enableGradientCheckpointing(true);
  unet.setAttentionChunkSize(chunk);
  const stream = streamFrozenWeights(unet, 7);
  const resident: Module[] = [unet.conv_in, unet.time_embedding, unet.conv_norm_out, unet.conv_out];
  resident.forEach((m, i) => m.initialize(11 + i));
  unet.trainable = false;
  const controlnet = ControlNetModel.fromUnet(unet, { loadWeightsFromUnet: false, seed: 2 });
  controlnet.trainable = true;
  controlnet.enableGradientCheckpointing(true);
  // its 1.45 GB of weights would otherwise hold up to 2.9 GB of packed copies in the heap (engine/weight-cache.ts)
  controlnet.setKeepPackedWeights(false);
  controlnet.setAttentionChunkSize(chunk);
  const params = new Map([...controlnet.namedParameters()].map(([n, p]) => [n, p.variable] as [string, tf.Variable]));
  const optimizer = createOptimizer(params, { lr: 1e-5, use8bit: true });
  const scheduler = DDPMScheduler.fromConfig({ beta_schedule: "scaled_linear", beta_start: 0.00085, beta_end: 0.012, num_train_timesteps: 1000 });
  const built = memoryInfo();
  log(`built in ${((performance.now() - t0) / 1000).toFixed(1)} s: UNet ${unet.numParameters().toLocaleString()} params (${stream.blocks.length} blocks, ${(stream.hostBytes / 1e9).toFixed(2)} GB on the host), ControlNet ${controlnet.numParameters().toLocaleString()}; live ${(built.liveBytes / 1e9).toFixed(2)} GB, heap ${((built.heapBytes ?? 0) / 1e9).toFixed(2)} GB`);

  const lat = resolution / 8;
  const latents = tf.randomNormal([1, lat, lat, 4], 0, 1, "float32", 3) as tf.Tensor4D;
  const noise = tf.randomNormal([1, lat, lat, 4], 0, 1, "float32", 4) as tf.Tensor4D;
  const ehs = tf.randomNormal([1, 77, 768], 0, 1, "float32", 5) as tf.Tensor3D;
  const cond = tf.randomUniform([1, resolution, resolution, 3], 0, 1, "float32", 6) as tf.Tensor4D;
  const rss0 = process.memoryUsage().rss;
  const s0 = performance.now();
  // Gradients of the checkpointed ControlNet blocks go to the host as backward produces them (ZeRO-Offload): the
  // heap never holds all 1.45 GB of them next to the 1.45 GB of weights.
  const hostGrads = new Map<string, Float32Array>();
  const r = await measurePeak(() => {
    const { loss, grads } = controlnetGradients(unet, controlnet, scheduler, { latents, encoderHiddenStates: ehs, conditioning: cond, noise, timesteps: [500] }, 1, hostGrads);
    const norm = clipGradNorm(grads, 1, hostGrads);
    optimizer.step(grads, { disposeGrads: true, hostGrads });
    for (const g of grads.values()) if (!g.isDisposed) g.dispose();
    return { loss, norm };
  });
  const seconds = (performance.now() - s0) / 1000;
  throwIfWasmKernelFailed("sd15-step");
  const hostOpt = optimizer.stateBytes().host;
  const predicted = estimateMemory({
    unet: SD15_UNET, resolution, batchSize: 1,
    options: { gradientCheckpointing: true, attentionChunkSize: chunk, use8bitAdam: true, setGradsToNone: true, offloadFrozenWeights: true, keepPackedWeights: false },
  });
  const mem = memoryInfo();
  const out = {
    bench: "sd15-step",
    resolution, latent: lat, batch: 1, attention_chunk: chunk,
    engine: { backend: info.backend, threads: info.threads },
    seconds: +seconds.toFixed(1),
    loss: r.result.loss, grad_norm: r.result.norm,
    streamed_block_loads: stream.loads,
    measured: {
      peak_live_bytes: r.peakBytes,
      heap_bytes: mem.heapBytes,
      heap_limit: WASM_HEAP_LIMIT,
      host_frozen_weights_bytes: stream.hostBytes,
      host_optimizer_bytes: hostOpt,
      host_gradient_bytes: [...hostGrads.values()].reduce((a, g) => a + g.byteLength, 0),
      rss_bytes: mem.rssBytes,
      rss_growth_during_step: mem.rssBytes - rss0,
    },
    predicted: { device_total: predicted.device.total, wasm_heap: predicted.device.total + predicted.wasmPackedWeights, host_total: predicted.host.total, breakdown: predicted.breakdown },
  };
  log(`step: ${seconds.toFixed(1)} s, loss ${r.result.loss.toFixed(4)}, ${stream.loads} block loads; peak live ${(r.peakBytes / 1e9).toFixed(2)} GB ` +
    `(planner ${(predicted.device.total / 1e9).toFixed(2)} GB), heap ${((mem.heapBytes ?? 0) / 1e9).toFixed(2)} / ${(WASM_HEAP_LIMIT / 1e9).toFixed(2)} GB ` +
    `(planner ${((predicted.device.total + predicted.wasmPackedWeights) / 1e9).toFixed(2)} GB with packed weight copies); ` +
    `host: frozen ${(stream.hostBytes / 1e9).toFixed(2)} GB + optimizer ${(hostOpt / 1e9).toFixed(2)} GB (planner ${(predicted.host.total / 1e9).toFixed(2)} GB)`);
  tf.dispose([latents, noise, ehs, cond]);
  optimizer.dispose();
  controlnet.dispose();
  unet.dispose();
  return out;
}
