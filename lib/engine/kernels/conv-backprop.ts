/**
 * Convolution gradients for tfjs-backend-wasm, built on its fast (XNNPACK) forward conv.
 *
 * - Conv2DBackpropFilter is missing from wasm. dW is a correlation of x with dy over the batch, which is itself a
 *   forward conv once batch and channels swap roles: x as [Ci,H,W,N] convolved with dy as a filter [OH,OW,N,Co],
 *   dilated by the forward stride, gives [Ci,KH,KW,Co].
 * - Conv2DBackpropInput exists but is a scalar loop ~12x slower than forward. dX is a stride-1 forward conv of the
 *   zero-dilated dy with the spatially flipped, in/out-swapped filter.
 * Both run tf ops inside the kernel; those ops are not taped, and the returned Tensor is used as the output.
 */
import { tf } from "../tf.js";
import type { NamedAttrMap, NamedTensorInfoMap, TensorInfo } from "@tensorflow/tfjs";

type Pad = "valid" | "same" | number | tf.backend_util.ExplicitPadding;
interface ConvGradAttrs {
  strides: [number, number] | number;
  pad: Pad;
  dimRoundingMode?: "floor" | "round" | "ceil";
  dataFormat?: "NHWC" | "NCHW";
}

function asTensor(t: TensorInfo): tf.Tensor {
  return t as tf.Tensor;
}

function checkFormat(attrs: ConvGradAttrs): void {
  if (attrs.dataFormat && attrs.dataFormat !== "NHWC") {
    throw new Error(`wasm conv gradients support NHWC only (got ${attrs.dataFormat})`);
  }
}

/** Crops `t` ([B,H,W,C]) to `h` rows / `w` columns from the top-left. */
function cropHW(t: tf.Tensor4D, h: number, w: number): tf.Tensor4D {
  if (t.shape[1] === h && t.shape[2] === w) return t;
  return tf.slice(t, [0, 0, 0, 0], [-1, h, w, -1]);
}

export function conv2dBackpropFilter(args: { inputs: NamedTensorInfoMap; attrs?: NamedAttrMap }): TensorInfo {
  const x = asTensor(args.inputs.x!) as tf.Tensor4D;
  const dy = asTensor(args.inputs.dy!) as tf.Tensor4D;
  const attrs = args.attrs as unknown as ConvGradAttrs & { filterShape: [number, number, number, number] };
  checkFormat(attrs);
  return tf.tidy(() => {
    const info = tf.backend_util.computeConv2DInfo(
      x.shape, attrs.filterShape, attrs.strides, 1, attrs.pad, attrs.dimRoundingMode);
    const { filterHeight: kh, filterWidth: kw, strideHeight: sh, strideWidth: sw, outHeight: oh, outWidth: ow } = info;
    const { top, left } = info.padInfo;
    // Rows of (padded) x the forward conv actually read; trailing rows it skipped are cropped away.
    const usedH = (oh - 1) * sh + kh - top;
    const usedW = (ow - 1) * sw + kw - left;
    let xs: tf.Tensor4D = x;
    if (usedH < x.shape[1] || usedW < x.shape[2]) {
      xs = cropHW(x, Math.min(usedH, x.shape[1]), Math.min(usedW, x.shape[2]));
    }
    const bottom = usedH - xs.shape[1];
    const right = usedW - xs.shape[2];
    const xT = tf.transpose(xs, [3, 1, 2, 0]); // [Ci,H,W,N]
    const dyT = tf.transpose(dy, [1, 2, 0, 3]) as tf.Tensor4D; // [OH,OW,N,Co]
    const pad: tf.backend_util.ExplicitPadding = [[0, 0], [top, bottom], [left, right], [0, 0]];
    const dwT = tf.conv2d(xT as tf.Tensor4D, dyT, 1, pad, "NHWC", [sh, sw]); // [Ci,KH,KW,Co]
    return tf.transpose(dwT, [1, 2, 0, 3]);
  });
}

export function conv2dBackpropInput(args: { inputs: NamedTensorInfoMap; attrs?: NamedAttrMap }): TensorInfo {
  const dy = asTensor(args.inputs.dy!) as tf.Tensor4D;
  const filter = asTensor(args.inputs.filter!) as tf.Tensor4D;
  const attrs = args.attrs as unknown as ConvGradAttrs & { inputShape: [number, number, number, number] };
  checkFormat(attrs);
  return tf.tidy(() => {
    const info = tf.backend_util.computeConv2DInfo(
      attrs.inputShape, filter.shape, attrs.strides, 1, attrs.pad, attrs.dimRoundingMode);
    const { filterHeight: kh, filterWidth: kw, strideHeight: sh, strideWidth: sw, outHeight: oh, outWidth: ow } = info;
    const [n, h, w, ci] = attrs.inputShape;
    const co = dy.shape[3];
    // Insert (stride-1) zeros between dy's rows and columns.
    let d: tf.Tensor4D = dy;
    if (sh > 1 || sw > 1) {
      const r = tf.reshape(dy, [n, oh, 1, ow, 1, co]);
      const p = tf.pad(r, [[0, 0], [0, 0], [0, sh - 1], [0, 0], [0, sw - 1], [0, 0]]);
      d = cropHW(tf.reshape(p, [n, oh * sh, ow * sw, co]) as tf.Tensor4D, (oh - 1) * sh + 1, (ow - 1) * sw + 1);
    }
    let padT = kh - 1 - info.padInfo.top;
    let padL = kw - 1 - info.padInfo.left;
    // A negative leading pad means the forward conv padded more than the kernel reach: drop leading dy rows.
    if (padT < 0 || padL < 0) {
      const dropT = Math.max(0, -padT);
      const dropL = Math.max(0, -padL);
      d = tf.slice(d, [0, dropT, dropL, 0], [-1, d.shape[1] - dropT, d.shape[2] - dropL, -1]);
      padT = Math.max(0, padT);
      padL = Math.max(0, padL);
    }
    let padB = h + kh - 1 - padT - d.shape[1];
    let padR = w + kw - 1 - padL - d.shape[2];
    if (padB < 0 || padR < 0) {
      d = cropHW(d, d.shape[1] + Math.min(0, padB), d.shape[2] + Math.min(0, padR));
      padB = Math.max(0, padB);
      padR = Math.max(0, padR);
    }
    const wT = tf.transpose(tf.reverse(filter, [0, 1]), [0, 1, 3, 2]) as tf.Tensor4D; // [KH,KW,Co,Ci]
    const dx = tf.conv2d(d, wT, 1, [[0, 0], [padT, padB], [padL, padR], [0, 0]]);
    if (dx.shape[3] !== ci) throw new Error("internal: conv2dBackpropInput channel mismatch");
    return dx;
  });
}
