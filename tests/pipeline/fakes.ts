/** Small deterministic stand-ins for the networks, recording how the pipeline calls them. */
import { tf } from "../../lib/engine/index.js";
import type { ControlNetLike, TextEncoderLike, TokenizerLike, UNetLike, VaeLike } from "../../lib/pipeline/types.js";

export const DIM = 6;

export class FakeTokenizer implements TokenizerLike {
  readonly modelMaxLength = 5;
  tokenize(texts: string[], maxLength: number): number[][] {
    return texts.map((t) => {
      const ids = [...t].slice(0, maxLength).map((c) => c.charCodeAt(0) % 50);
      while (ids.length < maxLength) ids.push(0);
      return ids;
    });
  }
}

/** Embedding = a fixed function of the ids, so different prompts give different embeddings. */
export class FakeTextEncoder implements TextEncoderLike {
  calls: number[][][] = [];
  forward(ids: number[][]) {
    this.calls.push(ids);
    const data = ids.flatMap((row) => row.flatMap((id, p) => Array.from({ length: DIM }, (_, d) => Math.sin(id * 0.37 + p * 0.11 + d))));
    return { lastHiddenState: tf.tensor3d(data, [ids.length, ids[0]!.length, DIM]) };
  }
}

export interface UNetCall {
  batch: number;
  timestep: number;
  ehs: number[][][];
  mid: number[][][][] | null;
}

/** ε = 0.1·x + mean(ehs) + 0.5·mean(mid residual), per sample. */
export class FakeUNet implements UNetLike {
  readonly config = { in_channels: 4, time_cond_proj_dim: null };
  calls: UNetCall[] = [];
  forward(sample: tf.Tensor4D, timestep: number | number[] | tf.Tensor, ehs: tf.Tensor3D, opts: { downBlockAdditionalResiduals?: tf.Tensor4D[]; midBlockAdditionalResidual?: tf.Tensor4D } = {}): tf.Tensor4D {
    const mid = opts.midBlockAdditionalResidual;
    this.calls.push({ batch: sample.shape[0], timestep: timestep as number, ehs: ehs.arraySync(), mid: mid ? mid.arraySync() : null });
    return tf.tidy(() => {
      let e = tf.add(tf.mul(sample, 0.1), tf.reshape(tf.mean(ehs, [1, 2]), [-1, 1, 1, 1]));
      if (mid) e = tf.add(e, tf.mul(tf.reshape(tf.mean(mid, [1, 2, 3]), [-1, 1, 1, 1]), 0.5));
      if (opts.downBlockAdditionalResiduals) e = tf.add(e, tf.mul(tf.reshape(tf.mean(opts.downBlockAdditionalResiduals[0]!, [1, 2, 3]), [-1, 1, 1, 1]), 0.25));
      return e as tf.Tensor4D;
    });
  }
}

export interface ControlCall {
  batch: number;
  scale: number;
  guessMode: boolean;
  ehs: number[][][];
  condBatch: number;
}

/** Residuals = scale·(mean(cond) + bias), as [B,2,2,3] (down) and [B,1,1,3] (mid). */
export class FakeControlNet implements ControlNetLike {
  readonly config = { global_pool_conditions: false };
  calls: ControlCall[] = [];
  /** Batch of each control image embedded (the identity here). */
  embedded: number[] = [];
  constructor(readonly bias = 1) {}
  embedCondition(cond: tf.Tensor4D) {
    this.embedded.push(cond.shape[0]);
    return { embedding: cond.clone() };
  }
  forward(sample: tf.Tensor4D, _t: number | number[] | tf.Tensor, ehs: tf.Tensor3D, condIn: tf.Tensor4D | { embedding: tf.Tensor4D }, opts: { conditioningScale?: number; guessMode?: boolean } = {}) {
    const scale = opts.conditioningScale ?? 1;
    const cond = "embedding" in condIn ? condIn.embedding : condIn;
    this.calls.push({ batch: sample.shape[0], scale, guessMode: !!opts.guessMode, ehs: ehs.arraySync(), condBatch: cond.shape[0] });
    return tf.tidy(() => {
      const m = tf.add(tf.reshape(tf.mean(cond, [1, 2, 3]), [-1, 1, 1, 1]), this.bias);
      const down = [tf.mul(tf.tile(m, [1, 2, 2, 3]), scale) as tf.Tensor4D];
      const mid = tf.mul(tf.tile(m, [1, 1, 1, 3]), scale) as tf.Tensor4D;
      return { downBlockResSamples: down, midBlockResSample: mid };
    });
  }
}

/** Decodes by 2× nearest upsampling of tanh(z[..., :3]). */
export class FakeVae implements VaeLike {
  readonly scaleFactor = 2;
  readonly scalingFactor = 0.5;
  decode(z: tf.Tensor4D): tf.Tensor4D {
    return tf.tidy(() => {
      const [, h, w] = z.shape;
      const rgb = tf.tanh(tf.slice(z, [0, 0, 0, 0], [-1, -1, -1, 3])) as tf.Tensor4D;
      return tf.image.resizeNearestNeighbor(rgb, [h * 2, w * 2]);
    });
  }
}
