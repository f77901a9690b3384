/**
 * The narrow interfaces the pipeline needs from its components. lib/models' UNet2DConditionModel, ControlNetModel,
 * AutoencoderKL and CLIPTextModel satisfy them structurally; tests use small fakes to check the guidance/control
 * logic without real networks. All image tensors are NHWC float32.
 */
import type { tf } from "../engine/index.js";
import type { RawImage } from "../data/types.js";

export interface UNetLike {
  readonly config: { in_channels: number; time_cond_proj_dim?: number | null; block_out_channels?: readonly number[] };
  forward(
    sample: tf.Tensor4D,
    timestep: number | number[] | tf.Tensor,
    encoderHiddenStates: tf.Tensor3D,
    opts?: { downBlockAdditionalResiduals?: tf.Tensor4D[]; midBlockAdditionalResidual?: tf.Tensor4D },
  ): tf.Tensor4D;
}

export interface ControlNetLike {
  readonly config: { global_pool_conditions?: boolean };
  /** The control image's conditioning embedding: the pipeline computes it once per call and passes it to forward. */
  embedCondition(controlnetCond: tf.Tensor4D): { embedding: tf.Tensor4D };
  forward(
    sample: tf.Tensor4D,
    timestep: number | number[] | tf.Tensor,
    encoderHiddenStates: tf.Tensor3D,
    controlnetCond: tf.Tensor4D | { embedding: tf.Tensor4D },
    opts?: { conditioningScale?: number; guessMode?: boolean },
  ): { downBlockResSamples: tf.Tensor4D[]; midBlockResSample: tf.Tensor4D };
}

export interface VaeLike {
  /** Pixel/latent size ratio (8 for SD). */
  readonly scaleFactor: number;
  /** Latent scaling (0.18215 for SD1.5). */
  readonly scalingFactor: number;
  /** Its config (the memory floor reads block_out_channels; test doubles may leave it out). */
  readonly config?: { block_out_channels?: readonly number[] };
  /** z (already divided by scalingFactor) → image in about [-1, 1]. */
  decode(z: tf.Tensor4D): tf.Tensor4D;
}

export interface TextEncoderLike {
  forward(inputIds: number[][], opts?: { outputHiddenStates?: boolean }): {
    lastHiddenState: tf.Tensor3D;
    pooledOutput?: tf.Tensor;
    hiddenStates?: tf.Tensor3D[];
  };
  /** Needed only for clip_skip (the final norm is re-applied to an earlier layer's output). */
  readonly finalLayerNorm?: { forward(x: tf.Tensor3D): tf.Tensor3D };
}

/**
 * Text → token ids, padded with the tokenizer's pad token and truncated to `maxLength`
 * (`tokenizer(texts, padding="max_length", max_length=maxLength, truncation=True).input_ids`).
 */
export interface TokenizeFn {
  (texts: string[], maxLength: number): number[][];
}

export interface TokenizerLike {
  /** 77 for CLIP. */
  readonly modelMaxLength: number;
  tokenize: TokenizeFn;
  /** The text of `text` that truncation to `maxLength` cuts off, or null (optional: the pipeline then says nothing). */
  truncatedPart?(text: string, maxLength: number): string | null;
}

/**
 * A control image: a file path, encoded image bytes (PNG/JPEG/WebP…), a raw RGB image, or a float tensor in [0, 1]
 * ([H,W,C] or [B,H,W,C], used as given).
 */
export type ControlImageInput = string | Uint8Array | RawImage | tf.Tensor;
