/**
 * Kernel fixes for tfjs-node 4.22 on the native engine. Registered over tfjs-node's own kernels for backend
 * "tensorflow" after it loads.
 *
 * Conv2DBackpropInput / Conv2DBackpropFilter: tfjs-node throws "TF Backend supports only 'valid' and 'same' padding
 * while padding was EXPLICIT" although its Conv2D forward already passes EXPLICIT with `explicit_paddings`, which
 * TensorFlow's two gradient ops accept as well. Our stride-2 downsamplers (diffusers' `padding=1` convs) need it.
 *
 * Conv2D and both gradients: an explicit padding that equals what "SAME" (or "VALID") computes for the geometry is
 * passed as that name. Same arithmetic; but TensorFlow's eager oneDNN rewrite skips every op whose padding is
 * EXPLICIT, so those ran on Eigen's kernels — the backward of a 3×3 conv with padding 1 (every conv of every resnet)
 * took 2.3× oneDNN's time (4×256×256×16, 16→16: 114 vs 50 ms forward + backward, 1 thread). A padding that is neither
 * (the stride-2 downsamplers: SAME would pad 0 before and 1 after) runs, on inputs of ≥ 1M elements and on the CPU (a
 * GPU's cuDNN takes the padding itself), as TensorFlow's Pad and a VALID conv (oneDNN), its input gradient sliced back
 * out of the padded one: forward + backward of the ControlNet's conditioning embedding convs, 2 threads, on the
 * AVX-512 host: [4,256,256,16]→32 30.5 → 19.6 ms, [4,128,128,32]→96 24.1 → 21.4, [4,64,64,96]→256 31.9 → 28.3;
 * smaller ones stay EXPLICIT ([4,32,32,32]→32 1.40 against 1.59 ms padded: the extra pass costs more than oneDNN
 * saves there).
 *
 * BatchMatMul of two matrices (every linear layer, forward and backward) runs TensorFlow's MatMul op, which tfjs-node
 * never uses: the same product (equal to BatchMatMulV2's, or within float rounding), but BatchMatMulV2's batch handling costs it on small products and
 * more so across threads (2 threads, this VM: [4096,32]·[32,32] 235 → 135 µs, [1024,64]·[64,64] 309 → 115 µs,
 * [4096,32]ᵀ·[4096,32] 243 → 103 µs; 1 thread 133 → 113 µs).
 *
 * Reshape to the tensor's own shape (tfjs' gradients of broadcasting ops end with one for every operand: ~630 in a
 * bench-mid step) shares the TensorFlow tensor, as the cpu and wasm backends do, instead of running TF's Reshape op
 * (~30 µs of dispatch each); every other reshape is tfjs-node's own kernel.
 */
import { tf } from "../tf.js";
import type { KernelConfig, KernelFunc, TensorInfo } from "@tensorflow/tfjs";
import { registerLinearKernels } from "./linear.js";
import { matMul, reshape, typeAttr, type OpAttr } from "./tf-ops.js";

interface NodeBackend {
  binding: { TF_ATTR_INT: number; TF_ATTR_STRING: number; TF_ATTR_BOOL: number; TF_ATTR_TYPE: number; TF_FLOAT: number; TF_INT32: number };
  executeSingleOutput(name: string, attrs: OpAttr[], inputs: TensorInfo[]): TensorInfo;
}
type ConvInfo = ReturnType<typeof tf.backend_util.computeConv2DInfo>;

/** The padding name TensorFlow gets: SAME or VALID when an explicit padding is exactly that, else as given. */
export function paddingName(info: ConvInfo): string {
  const p = info.padInfo;
  if (p.type !== "EXPLICIT") return p.type;
  if (p.top === 0 && p.bottom === 0 && p.left === 0 && p.right === 0) return "VALID";
  const same = tf.backend_util.computeConv2DInfo(
    info.inShape, [info.filterHeight, info.filterWidth, info.inChannels, info.outChannels], [info.strideHeight, info.strideWidth],
    [info.dilationHeight, info.dilationWidth], "same", undefined, false, info.dataFormat,
  ).padInfo;
  return same.top === p.top && same.bottom === p.bottom && same.left === p.left && same.right === p.right ? "SAME" : "EXPLICIT";
}

/** An NHWC tensor's [4, 2] paddings (flattened) for the conv's explicit padding: explicit_paddings' and Pad's form. */
function nhwcPaddings(info: ConvInfo): number[] {
  const p = info.padInfo;
  return [0, 0, p.top, p.bottom, p.left, p.right, 0, 0];
}

/** The attributes TF's Conv2D and Conv2DBackprop* ops take, EXPLICIT padding included. */
function convAttrs(backend: NodeBackend, info: ConvInfo): OpAttr[] {
  const b = backend.binding;
  const nhwc = info.dataFormat === "channelsLast";
  const padding = paddingName(info);
  const attrs: OpAttr[] = [
    typeAttr(backend, "T", "float32"),
    { name: "strides", type: b.TF_ATTR_INT, value: nhwc ? [1, info.strideHeight, info.strideWidth, 1] : [1, 1, info.strideHeight, info.strideWidth] },
    { name: "padding", type: b.TF_ATTR_STRING, value: padding },
    { name: "data_format", type: b.TF_ATTR_STRING, value: nhwc ? "NHWC" : "NCHW" },
    { name: "use_cudnn_on_gpu", type: b.TF_ATTR_BOOL, value: true },
    { name: "dilations", type: b.TF_ATTR_INT, value: nhwc ? [1, info.dilationHeight, info.dilationWidth, 1] : [1, 1, info.dilationHeight, info.dilationWidth] },
  ];
  if (padding === "EXPLICIT") {
    const p = info.padInfo;
    attrs.push({ name: "explicit_paddings", type: b.TF_ATTR_INT, value: nhwc ? nhwcPaddings(info) : [0, 0, 0, 0, p.top, p.bottom, p.left, p.right] });
  }
  return attrs;
}

/** Inputs from this many elements up take Pad + VALID instead of an EXPLICIT padding (see the top of this file). */
const PAD_AS_OWN_OP = 1 << 20;

/** Whether convs run on the host (the CPU build, or the GPU build without a GPU): only there is Pad + VALID measured. */
let convsOnHost = false;

/** The engine's convs run on the CPU (true) or on a GPU, where cuDNN takes explicit paddings itself (false). */
export function useHostConvPadding(onHost: boolean): void {
  convsOnHost = onHost;
}

/**
 * For an EXPLICIT padding on a large channels-last input: the [4, 2] paddings of TensorFlow's Pad and the same conv's
 * geometry on the padded input with VALID padding; else null.
 */
function padThenValid(info: ConvInfo): { paddings: number[]; valid: ConvInfo } | null {
  if (!convsOnHost || paddingName(info) !== "EXPLICIT" || info.dataFormat !== "channelsLast" || tf.util.sizeFromShape(info.inShape) < PAD_AS_OWN_OP) return null;
  const p = info.padInfo;
  const [b, h, w, c] = info.inShape;
  const valid = tf.backend_util.computeConv2DInfo(
    [b, h + p.top + p.bottom, w + p.left + p.right, c], [info.filterHeight, info.filterWidth, info.inChannels, info.outChannels],
    [info.strideHeight, info.strideWidth], [info.dilationHeight, info.dilationWidth], "valid", undefined, false, "channelsLast",
  );
  return { paddings: nhwcPaddings(info), valid };
}

/** x zero-padded by TensorFlow's Pad ([4, 2] paddings, flattened). */
function pad(backend: NodeBackend, x: TensorInfo, paddings: number[]): TensorInfo {
  const amounts = tf.tensor2d(paddings, [4, 2], "int32");
  try {
    return backend.executeSingleOutput("Pad", [typeAttr(backend, "T", "float32"), typeAttr(backend, "Tpaddings", "int32")], [x, amounts]);
  } finally {
    amounts.dispose();
  }
}

/** x[begin : begin + size] by TensorFlow's Slice. */
function slice(backend: NodeBackend, x: TensorInfo, begin: number[], size: number[]): TensorInfo {
  const [b, s] = [tf.tensor1d(begin, "int32"), tf.tensor1d(size, "int32")];
  try {
    return backend.executeSingleOutput("Slice", [typeAttr(backend, "T", "float32"), typeAttr(backend, "Index", "int32")], [x, b, s]);
  } finally {
    tf.dispose([b, s]);
  }
}

/** Runs `op` on the padded x (disposed after: tfjs-node's outputs are tensors the engine tracks). */
function withPadded<T>(backend: NodeBackend, x: TensorInfo, paddings: number[], op: (padded: TensorInfo) => T): T {
  const padded = pad(backend, x, paddings);
  try {
    return op(padded);
  } finally {
    tf.dispose(padded as tf.Tensor);
  }
}

interface ConvAttrs {
  strides: [number, number] | number;
  pad: "valid" | "same" | number | tf.backend_util.ExplicitPadding;
  dataFormat: "NHWC" | "NCHW";
  dilations: [number, number] | number;
  dimRoundingMode?: "floor" | "round" | "ceil";
}

/**
 * Convs whose filters hold at least this many input × output channels (640 × 640) run on the CPU as the product of the
 * input's patches and the filter (TensorFlow's ExtractImagePatches, then MatMul) — the convs of SD1.5's lower levels.
 * TensorFlow's own Conv2D there took about twice the time: measured on this project's AVX-512 host, 2 threads, forward
 * alone, Conv2D against patches + MatMul: [1,16,16,1280]→1280 3×3 64–68 vs 32–37 ms, [1,8,8,1280]→1280 16–18 vs 8 ms,
 * [1,32,32,640]→640 47–54 vs 31 ms, [1,32,32,960]→640 83–94 vs 50–61, [1,64,64,640]→640 191–226 vs 127–143; below the
 * bound patches lose or tie ([1,64,64,320]→320 27–33 vs 45 ms, [1,64,64,640]→320 79–92 vs 100–103; bench-mid's [4,8,8,128]
 * →128 0.7–1.0 vs 1.2–1.3 ms). The gradients stay TensorFlow's Conv2DBackprop* ops (at parity with PyTorch's there).
 */
const PATCHES_MIN_CHANNEL_PRODUCT = 640 * 640;
/** The patches tensor this path may build (128 MB): a larger one stays a Conv2D, which needs no such buffer. */
const PATCHES_MAX_ELEMENTS = 1 << 25;
/** CONTROLNET_TS_CONV_PATCHES=0 keeps every conv on TensorFlow's Conv2D, for comparisons (also `useConvPatches`). */
let convPatches = process.env.CONTROLNET_TS_CONV_PATCHES !== "0";

/** Large-filter convs as patches · filter (true, the default) or on TensorFlow's Conv2D (false): for A/B timings. */
export function useConvPatches(on: boolean): void {
  convPatches = on;
}

/** The conv as patches · filter when it is one of the large-filter convs above (else null): NHWC, dilation 1, CPU. */
function convAsPatchesProduct(backend: NodeBackend, x: TensorInfo, filter: TensorInfo, info: ConvInfo): TensorInfo | null {
  const { batchSize, outHeight, outWidth, filterHeight: kh, filterWidth: kw, inChannels, outChannels } = info;
  if (!convPatches || !convsOnHost || info.dataFormat !== "channelsLast" || info.dilationHeight !== 1 || info.dilationWidth !== 1) return null;
  if (inChannels * outChannels < PATCHES_MIN_CHANNEL_PRODUCT) return null;
  const rows = batchSize * outHeight * outWidth, depth = kh * kw * inChannels;
  if (rows * depth > PATCHES_MAX_ELEMENTS) return null;
  const b = backend.binding;
  const name = paddingName(info);
  // ExtractImagePatches knows SAME and VALID only: any other padding is TensorFlow's Pad first, then VALID
  const patches = (input: TensorInfo, padding: string) => backend.executeSingleOutput("ExtractImagePatches", [
    typeAttr(backend, "T", "float32"),
    { name: "ksizes", type: b.TF_ATTR_INT, value: [1, kh, kw, 1] },
    { name: "strides", type: b.TF_ATTR_INT, value: [1, info.strideHeight, info.strideWidth, 1] },
    { name: "rates", type: b.TF_ATTR_INT, value: [1, 1, 1, 1] },
    { name: "padding", type: b.TF_ATTR_STRING, value: padding },
  ], [input]);
  const made: TensorInfo[] = [];
  const keep = (t: TensorInfo) => (made.push(t), t);
  try {
    // [B, outH, outW, kh·kw·Cin], depth ordered (row, column, channel) as the HWIO filter flattens
    const p = keep(name === "EXPLICIT" ? withPadded(backend, x, nhwcPaddings(info), (xp) => patches(xp, "VALID")) : patches(x, name));
    const product = keep(matMul(backend, keep(reshape(backend, p, [rows, depth])), keep(reshape(backend, filter, [depth, outChannels]))));
    return reshape(backend, product, [batchSize, outHeight, outWidth, outChannels]);
  } finally {
    tf.dispose(made as tf.Tensor[]);
  }
}

const conv2D: KernelFunc = ({ inputs, backend, attrs }) => {
  const { x, filter } = inputs as { x: TensorInfo; filter: TensorInfo };
  const a = attrs as unknown as ConvAttrs;
  const info = tf.backend_util.computeConv2DInfo(x.shape as [number, number, number, number], filter.shape as [number, number, number, number], a.strides, a.dilations, a.pad, a.dimRoundingMode, false, tf.backend_util.convertConv2DDataFormat(a.dataFormat));
  const nb = backend as unknown as NodeBackend;
  const product = convAsPatchesProduct(nb, x, filter, info);
  if (product) return product;
  const padded = padThenValid(info);
  if (padded) return withPadded(nb, x, padded.paddings, (xp) => nb.executeSingleOutput("Conv2D", convAttrs(nb, padded.valid), [xp, filter]));
  return nb.executeSingleOutput("Conv2D", convAttrs(nb, info), [x, filter]);
};

interface ConvBackpropAttrs {
  strides: [number, number] | number;
  pad: "valid" | "same" | number | tf.backend_util.ExplicitPadding;
  dataFormat: "NHWC" | "NCHW";
  dimRoundingMode?: "floor" | "round" | "ceil";
  inputShape?: [number, number, number, number];
  filterShape?: [number, number, number, number];
}

const conv2DBackpropInput: KernelFunc = ({ inputs, backend, attrs }) => {
  const { dy, filter } = inputs as { dy: TensorInfo; filter: TensorInfo };
  const a = attrs as unknown as ConvBackpropAttrs;
  const info = tf.backend_util.computeConv2DInfo(a.inputShape!, filter.shape as [number, number, number, number], a.strides, 1, a.pad, a.dimRoundingMode, false, tf.backend_util.convertConv2DDataFormat(a.dataFormat));
  const nb = backend as unknown as NodeBackend;
  const padded = padThenValid(info);
  const sizes = tf.tensor1d((padded?.valid ?? info).inShape, "int32");
  try {
    const dx = nb.executeSingleOutput("Conv2DBackpropInput", convAttrs(nb, padded?.valid ?? info), [sizes, filter, dy]);
    if (!padded) return dx;
    // the gradient of the padded input, less its padding
    try {
      return slice(nb, dx, [0, info.padInfo.top, info.padInfo.left, 0], info.inShape);
    } finally {
      tf.dispose(dx as tf.Tensor);
    }
  } finally {
    sizes.dispose();
  }
};

const conv2DBackpropFilter: KernelFunc = ({ inputs, backend, attrs }) => {
  const { x, dy } = inputs as { x: TensorInfo; dy: TensorInfo };
  const a = attrs as unknown as ConvBackpropAttrs;
  const info = tf.backend_util.computeConv2DInfo(x.shape as [number, number, number, number], a.filterShape!, a.strides, 1, a.pad, a.dimRoundingMode, false, tf.backend_util.convertConv2DDataFormat(a.dataFormat));
  const nb = backend as unknown as NodeBackend;
  const padded = padThenValid(info);
  const sizes = tf.tensor1d(info.filterShape, "int32");
  try {
    if (padded) return withPadded(nb, x, padded.paddings, (xp) => nb.executeSingleOutput("Conv2DBackpropFilter", convAttrs(nb, padded.valid), [xp, sizes, dy]));
    return nb.executeSingleOutput("Conv2DBackpropFilter", convAttrs(nb, info), [x, sizes, dy]);
  } finally {
    sizes.dispose();
  }
};

function matMulOf2D(stock: KernelFunc): KernelFunc {
  return (args) => {
    const { a, b } = args.inputs as { a: TensorInfo; b: TensorInfo };
    if (a.shape.length !== 2 || b.shape.length !== 2 || a.dtype !== "float32" || b.dtype !== "float32") return stock(args);
    const nb = args.backend as unknown as NodeBackend;
    const attrs = args.attrs as { transposeA: boolean; transposeB: boolean };
    return matMul(nb, a, b, attrs.transposeA, attrs.transposeB);
  };
}

function sharingReshape(stock: KernelFunc): KernelFunc {
  return (args) => {
    const x = args.inputs.x as TensorInfo;
    const shape = tf.util.inferFromImplicitShape([...(args.attrs!.shape as number[])], tf.util.sizeFromShape(x.shape));
    if (!tf.util.arraysEqual(shape, x.shape)) return stock(args);
    (args.backend as unknown as { incRef(dataId: object): void }).incRef(x.dataId);
    return { dataId: x.dataId, shape: x.shape, dtype: x.dtype };
  };
}

let registered: string[] | null = null;

function replace(config: KernelConfig): void {
  if (tf.getKernel(config.kernelName, "tensorflow")) tf.unregisterKernel(config.kernelName, "tensorflow");
  tf.registerKernel(config);
}

/** Registers the native kernel fixes once (and the linear layer's kernels); returns the kernel names replaced. */
export function registerNativeKernels(): string[] {
  if (registered) return registered;
  replace({ kernelName: "Conv2D", backendName: "tensorflow", kernelFunc: conv2D });
  replace({ kernelName: "Conv2DBackpropInput", backendName: "tensorflow", kernelFunc: conv2DBackpropInput });
  replace({ kernelName: "Conv2DBackpropFilter", backendName: "tensorflow", kernelFunc: conv2DBackpropFilter });
  replace({ kernelName: "Reshape", backendName: "tensorflow", kernelFunc: sharingReshape(tf.getKernel("Reshape", "tensorflow")!.kernelFunc) });
  replace({ kernelName: "BatchMatMul", backendName: "tensorflow", kernelFunc: matMulOf2D(tf.getKernel("BatchMatMul", "tensorflow")!.kernelFunc) });
  registered = ["Conv2D", "Conv2DBackpropInput", "Conv2DBackpropFilter", "Reshape", "BatchMatMul"];
  registerLinearKernels(); // new kernels beside these overrides: the linear layer and bias add (linear.ts)
  return registered;
}
