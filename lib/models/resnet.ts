/**
 * diffusers resnet.py / downsampling.py / upsampling.py: ResnetBlock2D, Downsample2D, Upsample2D (NHWC).
 */
import { tf } from "../engine/index.js";
import { Module } from "./module.js";
import { Conv2d, GroupNorm, Linear, activation } from "./layers.js";

export interface ResnetBlock2DOptions {
  inChannels: number;
  outChannels?: number;
  /** Width of the time embedding; null: no time_emb_proj (the VAE). */
  tembChannels: number | null;
  groups?: number;
  eps?: number;
  act?: string;
  outputScaleFactor?: number;
}

export class ResnetBlock2D extends Module {
  readonly norm1: GroupNorm;
  readonly conv1: Conv2d;
  readonly time_emb_proj: Linear | null;
  readonly norm2: GroupNorm;
  readonly conv2: Conv2d;
  readonly conv_shortcut: Conv2d | null;
  private readonly act: ReturnType<typeof activation>;
  /** The nonlinearity is SiLU: the norms apply it themselves (one fused kernel on native). */
  private readonly siluAct: boolean;
  readonly outputScaleFactor: number;

  constructor(o: ResnetBlock2DOptions) {
    super();
    const out = o.outChannels ?? o.inChannels;
    const groups = o.groups ?? 32;
    const eps = o.eps ?? 1e-6;
    this.act = activation(o.act ?? "silu");
    this.siluAct = ["silu", "swish"].includes(o.act ?? "silu");
    this.outputScaleFactor = o.outputScaleFactor ?? 1;
    this.norm1 = this.child("norm1", new GroupNorm(groups, o.inChannels, eps));
    this.conv1 = this.child("conv1", new Conv2d(o.inChannels, out, { kernel: 3, padding: 1 }));
    this.time_emb_proj = o.tembChannels ? this.child("time_emb_proj", new Linear(o.tembChannels, out)) : null;
    this.norm2 = this.child("norm2", new GroupNorm(groups, out, eps));
    this.conv2 = this.child("conv2", new Conv2d(out, out, { kernel: 3, padding: 1 }));
    this.conv_shortcut = o.inChannels !== out ? this.child("conv_shortcut", new Conv2d(o.inChannels, out, { kernel: 1 })) : null;
  }

  private normThenAct(norm: GroupNorm, x: tf.Tensor4D): tf.Tensor4D {
    return this.siluAct ? norm.forward(x, { silu: true }) : this.act(norm.forward(x));
  }

  /** x: [B,H,W,Cin]; temb: [B, tembChannels] (ignored when the block has no time projection). */
  forward(x: tf.Tensor4D, temb: tf.Tensor2D | null): tf.Tensor4D {
    return tf.tidy(() => {
      const normed = this.normThenAct(this.norm1, x);
      let h: tf.Tensor4D;
      if (this.time_emb_proj && temb) {
        // conv1's bias joins the projected time embedding's [B, C] rows, so the feature map takes one add, not two
        // (the same sum as diffusers' (conv1(x) + b) + temb, in another order)
        let t = this.time_emb_proj.forward(this.act(temb));
        const b = this.conv1.biasValue();
        if (b) t = tf.add(t, b);
        h = tf.add(this.conv1.convolve(normed), tf.reshape(t, [t.shape[0], 1, 1, t.shape[1]]));
      } else h = this.conv1.forward(normed);
      h = this.conv2.forward(this.normThenAct(this.norm2, h));
      const skip = this.conv_shortcut ? this.conv_shortcut.forward(x) : x;
      const y = tf.add(skip, h) as tf.Tensor4D;
      return this.outputScaleFactor === 1 ? y : (tf.div(y, this.outputScaleFactor) as tf.Tensor4D);
    });
  }
}

/**
 * Stride-2 conv. padding 1 (UNet/ControlNet) pads every side by 1; padding 0 (the VAE encoder) pads only the
 * bottom and right by 1, as diffusers' F.pad(x, (0, 1, 0, 1)) does.
 */
export class Downsample2D extends Module {
  readonly conv: Conv2d;
  constructor(channels: number, outChannels = channels, padding = 1) {
    super();
    const pad: [number, number, number, number] = padding === 0 ? [0, 1, 0, 1] : [padding, padding, padding, padding];
    this.conv = this.child("conv", new Conv2d(channels, outChannels, { kernel: 3, stride: 2, padding: pad }));
  }
  forward(x: tf.Tensor4D): tf.Tensor4D {
    return this.conv.forward(x);
  }
}

/** Nearest-neighbour ×2 (or to `size`, as the UNet asks for odd latent sizes) then a 3×3 conv. */
export class Upsample2D extends Module {
  readonly conv: Conv2d;
  constructor(channels: number, outChannels = channels) {
    super();
    this.conv = this.child("conv", new Conv2d(channels, outChannels, { kernel: 3, padding: 1 }));
  }
  forward(x: tf.Tensor4D, size?: [number, number]): tf.Tensor4D {
    return tf.tidy(() => {
      const [, h, w] = x.shape;
      const target = size ?? [h * 2, w * 2];
      let up: tf.Tensor4D;
      if (target[0] === h * 2 && target[1] === w * 2) {
        // exact 2× repeat, columns then rows, as a broadcast multiply by ones: its gradient is a plain sum on every
        // backend (the cpu ResizeNearestNeighborGrad is wrong for batch > 1), and on wasm it is ~30× faster than
        // tf.tile (a scalar index loop there) or tf.broadcastTo (which is Tile).
        const b = x.shape[0];
        const c = x.shape[3];
        const two = tf.ones([1, 1, 2, 1]);
        const cols = tf.mul(tf.reshape(x, [b * h, w, 1, c]), two);
        const rows = tf.mul(tf.reshape(cols, [b, h, 1, 2 * w * c]), two);
        up = tf.reshape(rows, [b, h * 2, w * 2, c]);
      } else {
        // PyTorch 'nearest' picks floor(dst * in/out): halfPixelCenters=false, alignCorners=false
        up = tf.image.resizeNearestNeighbor(x, target, false, false);
      }
      return this.conv.forward(up);
    });
  }
}
