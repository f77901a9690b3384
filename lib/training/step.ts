/**
 * One ControlNet training step's mathematics, exactly as diffusers' train_controlnet.py computes it:
 *
 *   latents = vae.encode(pixels).latent_dist.sample() * scaling_factor        (frozen, no gradient)
 *   noisy   = scheduler.add_noise(latents, noise, t)                          (t uniform in [0, T))
 *   ehs     = text_encoder(input_ids)[0]                                      (frozen)
 *   down, mid = controlnet(noisy, t, ehs, controlnet_cond=conditioning)       (trainable)
 *   pred    = unet(noisy, t, ehs, down_block_additional_residuals=down, mid_block_additional_residual=mid)  (frozen)
 *   loss    = mse(pred, noise | velocity)   (optionally Min-SNR weighted per sample)
 *
 * Everything random (posterior sample, noise, timesteps) is an input here so that a test can feed the reference
 * script's exact values; the trainer draws them from its seeded RNG.
 */
import { tf, withWeightGradientSink } from "../engine/index.js";
import type { AutoencoderKL, ControlNetModel, UNet2DConditionModel, UNetDownState } from "../models/index.js";
import { computeSnr, minSnrWeights } from "../schedulers/index.js";

export interface NoiseSchedule {
  readonly alphasCumprod: Float64Array;
  readonly config: { readonly prediction_type: string; readonly num_train_timesteps: number };
  addNoise(x0: tf.Tensor, noise: tf.Tensor, timesteps: number[] | tf.Tensor): tf.Tensor;
  getVelocity(x0: tf.Tensor, noise: tf.Tensor, timesteps: number[] | tf.Tensor): tf.Tensor;
}

/** Frozen VAE: pixel values [-1,1] NHWC → latents × scaling factor, using the given standard-normal draw. */
export function encodeLatents(vae: AutoencoderKL, pixelValues: tf.Tensor4D, posteriorNoise: tf.Tensor4D): tf.Tensor4D {
  return tf.tidy(() => {
    const dist = vae.encode(pixelValues);
    const z = dist.sample({ noise: posteriorNoise });
    dist.dispose();
    return tf.mul(z, vae.scalingFactor) as tf.Tensor4D;
  });
}

export interface LossInputs {
  /** VAE latents already multiplied by the scaling factor. */
  latents: tf.Tensor4D;
  /** Text-encoder last hidden state (frozen). */
  encoderHiddenStates: tf.Tensor3D;
  /** Conditioning images [B,H,W,3] in [0,1]. */
  conditioning: tf.Tensor4D;
  noise: tf.Tensor4D;
  timesteps: number[];
  /** Min-SNR-γ weighting (None in the seed script). */
  snrGamma?: number | null;
}

/**
 * What the loss needs that no trainable weight reaches: the noisy latents, the timesteps and the frozen UNet's
 * forwardDown (its down and mid blocks). controlnetGradients computes it outside the gradient scope, so tfjs' tape
 * neither records those kernels nor keeps what they save — autograd's behaviour for a frozen prefix.
 */
type FrozenPrefix = {
  noisy: tf.Tensor4D;
  ts: tf.Tensor1D;
  unetDown: UNetDownState;
};

function frozenPrefix(unet: UNet2DConditionModel, scheduler: NoiseSchedule, x: LossInputs): FrozenPrefix {
  return tf.tidy(() => {
    const noisy = scheduler.addNoise(x.latents, x.noise, x.timesteps) as tf.Tensor4D;
    const ts = tf.tensor1d(x.timesteps, "float32");
    return { noisy, ts, unetDown: unet.forwardDown(noisy, ts, x.encoderHiddenStates) };
  });
}

/** The scalar loss as a function of the ControlNet's current weights (call inside a gradient scope). */
export function controlnetLoss(
  unet: UNet2DConditionModel,
  controlnet: ControlNetModel,
  scheduler: NoiseSchedule,
  x: LossInputs,
  prefix?: FrozenPrefix,
): tf.Scalar {
  return tf.tidy(() => {
    const { noisy, ts, unetDown } = prefix ?? frozenPrefix(unet, scheduler, x);
    const { downBlockResSamples, midBlockResSample } = controlnet.forward(noisy, ts, x.encoderHiddenStates, x.conditioning);
    const pred = unet.forwardUp(unetDown, x.encoderHiddenStates, {
      downBlockAdditionalResiduals: downBlockResSamples,
      midBlockAdditionalResidual: midBlockResSample,
    });
    const kind = scheduler.config.prediction_type;
    let target: tf.Tensor;
    if (kind === "epsilon") target = x.noise;
    else if (kind === "v_prediction") target = scheduler.getVelocity(x.latents, x.noise, x.timesteps);
    else throw new Error(`Unknown prediction type ${kind}`);
    if (x.snrGamma == null) return tf.mean(tf.squaredDifference(pred, target)) as tf.Scalar;
    // Min-SNR: per-sample MSE weighted by min(SNR, γ)/SNR (ε) or min(SNR, γ)/(SNR+1) (v).
    const perSample = tf.mean(tf.squaredDifference(pred, target), [1, 2, 3]);
    const w = minSnrWeights(computeSnr(scheduler.alphasCumprod, x.timesteps), x.snrGamma, kind as "epsilon" | "v_prediction");
    return tf.mean(tf.mul(perSample, tf.tensor1d(Float32Array.from(w)))) as tf.Scalar;
  });
}

/**
 * Loss and gradients w.r.t. every trainable ControlNet parameter (diffusers names).
 *
 * With `hostGrads` (and gradient checkpointing on the ControlNet), the gradients of weights inside checkpointed
 * blocks are moved to host memory as each block's backward produces them and *added* into `hostGrads` (so several
 * calls accumulate); only the others come back in `grads`. The device then never holds all gradients at once.
 */
export function controlnetGradients(
  unet: UNet2DConditionModel,
  controlnet: ControlNetModel,
  scheduler: NoiseSchedule,
  x: LossInputs,
  lossScale = 1,
  hostGrads?: Map<string, Float32Array>,
): { loss: number; grads: Map<string, tf.Tensor> } {
  const named = [...controlnet.namedParameters()].filter(([, p]) => p.variable.trainable);
  const vars = named.map(([, p]) => p.variable);
  const prefix = frozenPrefix(unet, scheduler, x);
  const run = () =>
    tf.variableGrads(() => {
      const l = controlnetLoss(unet, controlnet, scheduler, x, prefix);
      return lossScale === 1 ? l : tf.tidy(() => tf.mul(l, lossScale) as tf.Scalar);
    }, vars);
  let result;
  try {
    if (hostGrads) {
      const nameOf = new Map<tf.Tensor, string>(named.map(([n, p]) => [p.variable, n]));
      result = withWeightGradientSink((w, g) => {
        const d = g.dataSync() as Float32Array;
        g.dispose();
        const name = nameOf.get(w);
        if (name === undefined) return; // a trainable weight of another model: not ours to update
        const acc = hostGrads.get(name);
        if (!acc) hostGrads.set(name, Float32Array.from(d));
        else for (let i = 0; i < d.length; i++) acc[i]! += d[i]!;
      }, run);
    } else result = run();
  } finally {
    tf.dispose(prefix); // the frozen prefix's tensors, whatever the backward did
  }
  const { value, grads } = result;
  const loss = value.dataSync()[0]! / lossScale;
  value.dispose();
  const out = new Map<string, tf.Tensor>();
  for (const [name, p] of named) {
    const g = grads[p.variable.name];
    if (g) out.set(name, g);
  }
  return { loss, grads: out };
}
