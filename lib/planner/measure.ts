/**
 * Measures what the planner predicts: the peak of live tensor bytes over one ControlNet training step on our
 * engine (forward of ControlNet + frozen UNet, backward into the ControlNet, grad clip, AdamW update), with the
 * same option names the planner takes. Used to calibrate and test the activation model, and by the benches.
 *
 * The VAE and text encoder are left out (latents and text embeddings are inputs, as in the step function): their
 * forward runs outside the gradient scope and is freed before the ControlNet forward begins.
 */
import { tf, measurePeak, memoryInfo } from "../engine/index.js";
import { ControlNetModel, UNet2DConditionModel } from "../models/index.js";
import { DDPMScheduler } from "../schedulers/index.js";
import { controlnetGradients } from "../training/step.js";
import { clipGradNorm, createOptimizer, type Optimizer } from "../training/optim/index.js";
import type { PlannerOptions } from "./types.js";

export interface MeasureStepConfig {
  unet: Record<string, unknown>;
  conditioningEmbeddingOutChannels?: number[];
  /** Pixel resolution of the conditioning image (latents are resolution / vaeScaleFactor). */
  resolution: number;
  /** 2^(VAE stages − 1); 8 for SD. Must equal the conditioning embedding's downsampling. Default 8. */
  vaeScaleFactor?: number;
  batchSize: number;
  /** Text sequence length (77 for CLIP). */
  seqLen?: number;
  options?: Partial<PlannerOptions>;
  /** Steps run before the measured one (the first creates the optimizer state). Default 1. */
  warmup?: number;
}

export interface MeasuredStep {
  /** Peak live tensor bytes during the measured step (everything live: weights, optimizer state, activations). */
  peakBytes: number;
  /** Live bytes before the models were built (whatever the caller had allocated). */
  baselineBytes: number;
  /** peakBytes − baselineBytes: what the planner's device total predicts. */
  stepPeakBytes: number;
  /** Live bytes before the step (weights + optimizer state on the device). */
  startBytes: number;
  /** Host bytes held by the optimizer (offloaded / 8-bit states). */
  optimizerHostBytes: number;
  optimizerDeviceBytes: number;
  seconds: number;
  heapBytes: number | null;
}

export interface TrainingStepRunner {
  unet: UNet2DConditionModel;
  controlnet: ControlNetModel;
  optimizer: Optimizer;
  /** One full step (random inputs drawn from fixed seeds); returns the loss. */
  step(): number;
  dispose(): void;
}

/** Builds the models (random weights), optimizer and inputs of one training step at the given config. */
export function createTrainingStep(c: MeasureStepConfig): TrainingStepRunner {
  const o = c.options ?? {};
  const seq = c.seqLen ?? 77;
  const lat = c.resolution / (c.vaeScaleFactor ?? 8);
  const unet = new UNet2DConditionModel(c.unet, { seed: 1, trainable: false });
  const controlnet = ControlNetModel.fromUnet(unet, { conditioningEmbeddingOutChannels: c.conditioningEmbeddingOutChannels, seed: 2 });
  controlnet.trainable = true;
  if (o.gradientCheckpointing) {
    unet.enableGradientCheckpointing(true);
    controlnet.enableGradientCheckpointing(true);
  }
  if (o.attentionChunkSize) {
    unet.setAttentionChunkSize(o.attentionChunkSize);
    controlnet.setAttentionChunkSize(o.attentionChunkSize);
  }
  const params = new Map([...controlnet.namedParameters()].map(([n, p]) => [n, p.variable] as [string, tf.Variable]));
  const optimizer = createOptimizer(params, { lr: 1e-5, use8bit: o.use8bitAdam, offload: o.offloadOptimizerState });
  const scheduler = DDPMScheduler.fromConfig({ beta_schedule: "scaled_linear", beta_start: 0.00085, beta_end: 0.012, num_train_timesteps: 1000 });
  const ctxDim = Number((unet.config as Record<string, unknown>).cross_attention_dim);
  // the batch is made once, the noise each step (as tests/reference/bench_diffusers.py does): tfjs draws random numbers
  // in JS, and drawing bench-mid's 786K-pixel conditioning images every step cost ~7 ms of a ~0.8 s step
  const latents = tf.randomNormal([c.batchSize, lat, lat, 4], 0, 1, "float32", 3) as tf.Tensor4D;
  const ehs = tf.randomNormal([c.batchSize, seq, ctxDim], 0, 1, "float32", 5) as tf.Tensor3D;
  const cond = tf.randomUniform([c.batchSize, c.resolution, c.resolution, 3], 0, 1, "float32", 6) as tf.Tensor4D;
  let n = 0;
  const step = () => {
    n++;
    const noise = tf.randomNormal([c.batchSize, lat, lat, 4], 0, 1, "float32", 4 + n) as tf.Tensor4D;
    const timesteps = Array.from({ length: c.batchSize }, (_, i) => (i * 397 + n * 131 + 11) % 1000);
    // as the trainer does: a host optimizer with checkpointing gets the checkpointed blocks' gradients on the host
    const hostGrads = o.gradientCheckpointing && optimizer.kind !== "adamw" ? new Map<string, Float32Array>() : undefined;
    const { loss, grads } = controlnetGradients(unet, controlnet, scheduler, { latents, encoderHiddenStates: ehs, conditioning: cond, noise, timesteps }, 1, hostGrads);
    clipGradNorm(grads, 1, hostGrads);
    optimizer.step(grads, { disposeGrads: o.setGradsToNone ?? true, hostGrads });
    for (const g of grads.values()) if (!g.isDisposed) g.dispose();
    noise.dispose();
    return loss;
  };
  return {
    unet, controlnet, optimizer, step,
    dispose() {
      tf.dispose([latents, ehs, cond]);
      optimizer.dispose();
      controlnet.dispose();
      unet.dispose();
    },
  };
}

export async function measureTrainingStep(c: MeasureStepConfig): Promise<MeasuredStep> {
  const baselineBytes = memoryInfo().liveBytes;
  const r0 = createTrainingStep(c);
  try {
    for (let i = 0; i < (c.warmup ?? 1); i++) r0.step();
    const t0 = performance.now();
    const r = await measurePeak(() => r0.step());
    const seconds = (performance.now() - t0) / 1000;
    const sb = r0.optimizer.stateBytes();
    return { peakBytes: r.peakBytes, baselineBytes, stepPeakBytes: r.peakBytes - baselineBytes, startBytes: r.startBytes, optimizerHostBytes: sb.host, optimizerDeviceBytes: sb.device, seconds, heapBytes: memoryInfo().heapBytes };
  } finally {
    r0.dispose();
  }
}
