/**
 * Analytic FLOPs (2 per multiply-add) of one ControlNet training step's convolutions and matmuls, from the same
 * block walk the memory model uses. Backward costs 2× forward for the trainable ControlNet (input and weight
 * gradients) and 1× for the frozen UNet (input gradients only, which must reach the ControlNet's residuals).
 */
import { stepGeometry, type BlockShape, type UNetLikeConfig } from "./architecture.js";

function blockFlops(b: BlockShape): number {
  const px = b.batch * b.h * b.w;
  if (b.kind === "resnet") return 2 * px * (9 * b.cin * b.cout + 9 * b.cout * b.cout + (b.cin !== b.cout ? b.cin * b.cout : 0));
  if (b.kind === "downsample") return 2 * (px / 4) * 9 * b.cin * b.cout;
  if (b.kind === "upsample") return 2 * (4 * px) * 9 * b.cin * b.cout;
  const c = b.cin;
  const n = b.h * b.w;
  const m = b.ctxLen!;
  const perLayer = 2 * b.batch * (n * (4 * c * c + 2 * c * c + 12 * c * c) + m * 2 * b.ctxDim! * c + 2 * n * n * c + 2 * n * m * c);
  return 2 * 2 * px * c * c + (b.layers ?? 1) * perLayer;
}

export interface StepFlops {
  controlnetForward: number;
  unetForward: number;
  /** forward + backward of the whole step. */
  total: number;
}

export function trainingStepFlops(unet: UNetLikeConfig, batch: number, resolution: number, opts: { seqLen?: number; vaeScaleFactor?: number; conditioningEmbeddingOutChannels?: number[] } = {}): StepFlops {
  const latent = Math.floor(resolution / (opts.vaeScaleFactor ?? 8));
  const geo = stepGeometry(unet, batch, latent, opts.seqLen ?? 77);
  let cn = 0;
  let un = 0;
  for (const b of geo.blocks) (b.model === "controlnet" ? (cn += blockFlops(b)) : (un += blockFlops(b)));
  // conditioning embedding: every conv's output elements × 9 × input channels × 2
  const emb = opts.conditioningEmbeddingOutChannels ?? [16, 32, 96, 256];
  let r = resolution;
  let f = 2 * batch * r * r * 9 * 3 * emb[0]!;
  for (let i = 0; i < emb.length - 1; i++) {
    f += 2 * batch * r * r * 9 * emb[i]! * emb[i]!;
    r = Math.ceil(r / 2);
    f += 2 * batch * r * r * 9 * emb[i]! * emb[i + 1]!;
  }
  const c0 = unet.block_out_channels[0]!;
  f += 2 * batch * r * r * 9 * emb[emb.length - 1]! * c0;
  // zero convs (1×1 on every skip state), conv_in of both models, conv_out of the UNet
  const zero = 2 * geo.zeroConvMacs;
  cn += f + zero + 2 * batch * latent * latent * 9 * 4 * c0;
  un += 2 * 2 * batch * latent * latent * 9 * 4 * c0;
  return { controlnetForward: cn, unetForward: un, total: 3 * cn + 2 * un };
}
