/**
 * AutoencoderKL (diffusers models/autoencoders/autoencoder_kl.py + vae.py), NHWC: Encoder → quant_conv →
 * DiagonalGaussianDistribution; post_quant_conv → Decoder. Built from the same resnet/attention/up/down blocks as
 * the UNet (eps 1e-6, no time embedding, encoder downsampling padded bottom/right only).
 */
import { tf } from "../engine/index.js";
import { Module } from "./module.js";
import { CONFIG_LIMITS, ConfigCheck } from "./config-checks.js";
import { Conv2d, GroupNorm, activation } from "./layers.js";
import { DownEncoderBlock2D, UNetMidBlock2D, UpDecoderBlock2D } from "./unet-blocks.js";
import { Attention } from "./attention.js";
import { loadPretrained, savePretrained } from "./pretrained.js";
import type { FromPretrainedOptions, ModelBuildOptions } from "./pretrained.js";

export interface AutoencoderKLConfig {
  in_channels: number;
  out_channels: number;
  down_block_types: string[];
  up_block_types: string[];
  block_out_channels: number[];
  layers_per_block: number;
  act_fn: string;
  latent_channels: number;
  norm_num_groups: number;
  sample_size: number;
  scaling_factor: number;
  shift_factor: number | null;
  latents_mean: number[] | null;
  latents_std: number[] | null;
  force_upcast: boolean;
  use_quant_conv: boolean;
  use_post_quant_conv: boolean;
  mid_block_add_attention: boolean;
  [key: string]: unknown;
}

export const AUTOENCODER_KL_DEFAULTS: AutoencoderKLConfig = {
  in_channels: 3,
  out_channels: 3,
  down_block_types: ["DownEncoderBlock2D"],
  up_block_types: ["UpDecoderBlock2D"],
  block_out_channels: [64],
  layers_per_block: 1,
  act_fn: "silu",
  latent_channels: 4,
  norm_num_groups: 32,
  sample_size: 32,
  scaling_factor: 0.18215,
  shift_factor: null,
  latents_mean: null,
  latents_std: null,
  force_upcast: true,
  use_quant_conv: true,
  use_post_quant_conv: true,
  mid_block_add_attention: true,
};

/** The posterior: mean and log-variance (clamped to [-30, 20]) split from the encoder's channels. */
export class DiagonalGaussianDistribution {
  readonly mean: tf.Tensor4D;
  readonly logvar: tf.Tensor4D;
  readonly std: tf.Tensor4D;

  /** parameters: [B,h,w,2·latent] (mean channels first, then logvar, as torch.chunk on dim 1). */
  constructor(parameters: tf.Tensor4D) {
    const [mean, logvar] = tf.tidy(() => {
      const [m, lv] = tf.split(parameters, 2, 3) as [tf.Tensor4D, tf.Tensor4D];
      return [m, tf.clipByValue(lv, -30, 20) as tf.Tensor4D];
    });
    this.mean = mean;
    this.logvar = logvar;
    this.std = tf.tidy(() => tf.exp(tf.mul(logvar, 0.5)) as tf.Tensor4D);
  }

  /** mean + std·ε. ε: the given noise, or tf.randomNormal with `seed` (≥1; tfjs ignores seed 0). */
  sample(opts: { noise?: tf.Tensor; seed?: number } = {}): tf.Tensor4D {
    return tf.tidy(() => {
      const eps = opts.noise ?? tf.randomNormal(this.mean.shape, 0, 1, "float32", opts.seed);
      return tf.add(this.mean, tf.mul(this.std, eps)) as tf.Tensor4D;
    });
  }

  mode(): tf.Tensor4D {
    return this.mean.clone();
  }

  /** KL divergence to N(0, I), summed over h, w, c (diffusers' kl()). */
  kl(): tf.Tensor1D {
    return tf.tidy(() =>
      tf.mul(tf.sum(tf.sub(tf.add(tf.square(this.mean), tf.exp(this.logvar)), tf.add(this.logvar, 1)), [1, 2, 3]), 0.5) as tf.Tensor1D,
    );
  }

  dispose(): void {
    tf.dispose([this.mean, this.logvar, this.std]);
  }
}

function midBlock(c: AutoencoderKLConfig, channels: number): UNetMidBlock2D {
  return new UNetMidBlock2D({
    inChannels: channels,
    tembChannels: null,
    numLayers: 1,
    resnetEps: 1e-6,
    resnetGroups: c.norm_num_groups,
    resnetAct: c.act_fn,
    outputScaleFactor: 1,
    attentionHeadDim: channels,
    addAttention: c.mid_block_add_attention,
  });
}

export class Encoder extends Module {
  readonly conv_in: Conv2d;
  readonly down_blocks: DownEncoderBlock2D[];
  readonly mid_block: UNetMidBlock2D;
  readonly conv_norm_out: GroupNorm;
  readonly conv_out: Conv2d;
  private readonly act: ReturnType<typeof activation>;

  constructor(c: AutoencoderKLConfig) {
    super();
    const boc = c.block_out_channels;
    this.act = activation(c.act_fn);
    this.conv_in = this.child("conv_in", new Conv2d(c.in_channels, boc[0]!, { kernel: 3, padding: 1 }));
    let out = boc[0]!;
    this.down_blocks = this.list(
      "down_blocks",
      c.down_block_types.map((type, i) => {
        if (type !== "DownEncoderBlock2D") throw new Error(`AutoencoderKL: unsupported down block type '${type}'`);
        const inC = out;
        out = boc[i]!;
        return new DownEncoderBlock2D({
          inChannels: inC,
          outChannels: out,
          tembChannels: null,
          numLayers: c.layers_per_block,
          resnetEps: 1e-6,
          resnetGroups: c.norm_num_groups,
          resnetAct: c.act_fn,
          addDownsample: i !== boc.length - 1,
          downsamplePadding: 0,
        });
      }),
    );
    const last = boc[boc.length - 1]!;
    this.mid_block = this.child("mid_block", midBlock(c, last));
    this.conv_norm_out = this.child("conv_norm_out", new GroupNorm(c.norm_num_groups, last, 1e-6));
    this.conv_out = this.child("conv_out", new Conv2d(last, 2 * c.latent_channels, { kernel: 3, padding: 1 }));
  }

  forward(x: tf.Tensor4D): tf.Tensor4D {
    return tf.tidy(() => {
      let h = this.conv_in.forward(x);
      for (const b of this.down_blocks) h = b.forward(h, null).hidden;
      h = this.mid_block.forward(h, null);
      return this.conv_out.forward(this.act(this.conv_norm_out.forward(h)));
    });
  }
}

export class Decoder extends Module {
  readonly conv_in: Conv2d;
  readonly mid_block: UNetMidBlock2D;
  readonly up_blocks: UpDecoderBlock2D[];
  readonly conv_norm_out: GroupNorm;
  readonly conv_out: Conv2d;
  private readonly act: ReturnType<typeof activation>;

  constructor(c: AutoencoderKLConfig) {
    super();
    const boc = c.block_out_channels;
    const rev = [...boc].reverse();
    this.act = activation(c.act_fn);
    this.conv_in = this.child("conv_in", new Conv2d(c.latent_channels, rev[0]!, { kernel: 3, padding: 1 }));
    this.mid_block = this.child("mid_block", midBlock(c, rev[0]!));
    let out = rev[0]!;
    this.up_blocks = this.list(
      "up_blocks",
      c.up_block_types.map((type, i) => {
        if (type !== "UpDecoderBlock2D") throw new Error(`AutoencoderKL: unsupported up block type '${type}'`);
        const prev = out;
        out = rev[i]!;
        return new UpDecoderBlock2D({
          inChannels: prev,
          outChannels: out,
          tembChannels: null,
          numLayers: c.layers_per_block + 1,
          resnetEps: 1e-6,
          resnetGroups: c.norm_num_groups,
          resnetAct: c.act_fn,
          addUpsample: i !== boc.length - 1,
        });
      }),
    );
    this.conv_norm_out = this.child("conv_norm_out", new GroupNorm(c.norm_num_groups, boc[0]!, 1e-6));
    this.conv_out = this.child("conv_out", new Conv2d(boc[0]!, c.out_channels, { kernel: 3, padding: 1 }));
  }

  forward(z: tf.Tensor4D): tf.Tensor4D {
    return tf.tidy(() => {
      let h = this.conv_in.forward(z);
      h = this.mid_block.forward(h, null);
      for (const b of this.up_blocks) h = b.forward(h);
      return this.conv_out.forward(this.act(this.conv_norm_out.forward(h)));
    });
  }
}

/** The VAE config's types and magnitudes, before anything is built (config-checks.ts). */
function validateAutoencoderConfig(c: Record<string, unknown>): void {
  const check = new ConfigCheck(c, "AutoencoderKL");
  check.names("down_block_types");
  check.names("up_block_types");
  check.intList("block_out_channels", 1, CONFIG_LIMITS.channels);
  check.int("layers_per_block", 1, CONFIG_LIMITS.layers);
  for (const f of ["in_channels", "out_channels", "latent_channels"]) check.int(f, 1, 1024);
  check.int("norm_num_groups", 1, CONFIG_LIMITS.channels);
  check.groupsDivide("norm_num_groups", "block_out_channels", 32);
  check.int("sample_size", 1, 65_536, false);
  check.positive("scaling_factor");
  check.finite("shift_factor", false);
  const params = (c.block_out_channels as number[]).reduce((sum, ch) => sum + 2 * ((c.layers_per_block as number) + 1) * 2 * 9 * ch * ch, 0);
  check.parameters(params, "block_out_channels × layers_per_block, encoder and decoder");
}

export class AutoencoderKL extends Module {
  static readonly className = "AutoencoderKL";
  readonly config: AutoencoderKLConfig;
  readonly encoder: Encoder;
  readonly decoder: Decoder;
  readonly quant_conv: Conv2d | null;
  readonly post_quant_conv: Conv2d | null;

  constructor(config: Partial<AutoencoderKLConfig> & Record<string, unknown> = {}, opts: ModelBuildOptions = {}) {
    super();
    const clean = Object.fromEntries(Object.entries(config).filter(([k]) => !k.startsWith("_")));
    const c = (this.config = { ...AUTOENCODER_KL_DEFAULTS, ...clean } as AutoencoderKLConfig);
    validateAutoencoderConfig(c);
    if (c.block_out_channels.length !== c.down_block_types.length || c.up_block_types.length !== c.down_block_types.length) {
      throw new Error("AutoencoderKL: block_out_channels, down_block_types and up_block_types must have the same length");
    }
    this.encoder = this.child("encoder", new Encoder(c));
    this.decoder = this.child("decoder", new Decoder(c));
    const l2 = 2 * c.latent_channels;
    this.quant_conv = c.use_quant_conv ? this.child("quant_conv", new Conv2d(l2, l2, { kernel: 1 })) : null;
    this.post_quant_conv = c.use_post_quant_conv ? this.child("post_quant_conv", new Conv2d(c.latent_channels, c.latent_channels, { kernel: 1 })) : null;
    if (!opts.shapeOnly) this.initialize(opts.seed ?? 1);
    if (opts.trainable !== undefined) this.trainable = opts.trainable;
  }

  static fromPretrained(dir: string, opts: FromPretrainedOptions = {}): AutoencoderKL {
    return loadPretrained(dir, (c, o) => new AutoencoderKL(c, o), opts);
  }

  savePretrained(dir: string): void {
    savePretrained(dir, this, AutoencoderKL.className, this.config);
  }

  /** 2^(stages-1): the pixel/latent size ratio (8 for SD). */
  get scaleFactor(): number {
    return 2 ** (this.config.block_out_channels.length - 1);
  }

  /** The latent size (multiply a sample by this before the UNet; divide before decode). */
  get scalingFactor(): number {
    return this.config.scaling_factor;
  }

  /** x: [B,H,W,in_channels] in [-1,1] → the latent posterior (call dispose() on it when done). */
  encode(x: tf.Tensor4D): DiagonalGaussianDistribution {
    const moments = tf.tidy(() => {
      const h = this.encoder.forward(x);
      return this.quant_conv ? this.quant_conv.forward(h) : h;
    });
    const d = new DiagonalGaussianDistribution(moments);
    moments.dispose();
    return d;
  }

  /** z: [B,h,w,latent] (already divided by scaling_factor) → [B,H,W,out_channels]. */
  decode(z: tf.Tensor4D): tf.Tensor4D {
    return tf.tidy(() => this.decoder.forward(this.post_quant_conv ? this.post_quant_conv.forward(z) : z));
  }

  /** diffusers forward: encode, take the mode (or a sample), decode. */
  forward(x: tf.Tensor4D, opts: { samplePosterior?: boolean; seed?: number } = {}): tf.Tensor4D {
    const post = this.encode(x);
    try {
      return tf.tidy(() => this.decode(opts.samplePosterior ? post.sample({ seed: opts.seed }) : post.mode()));
    } finally {
      post.dispose();
    }
  }

  setAttentionChunkSize(chunkSize: number): this {
    for (const m of this.modules()) if (m instanceof Attention) m.chunkSize = chunkSize;
    return this;
  }
}
