/**
 * estimateMemory: peak device ("GPU" — the 4 GiB wasm heap here) and host memory of one ControlNet training step,
 * from configs alone. Parameters are counted exactly from shape-only models (nothing allocated); activations are
 * summed block by block over the architecture (lib/planner/architecture.ts) with per-block counts of the tensors
 * each engine keeps for backward.
 *
 * Three engine profiles (estimateMemory picks ours from the running engine, engineProfile()):
 *  - "tfjs" (ours on tfjs-wasm): tfjs keeps every tensor a kernel saves until the *end* of backprop, and every activation
 *    gradient too, so the peak is at the end of backward: saved activations + gradients of activations + parameter
 *    gradients. The per-block counts (in float32 elements per element of the block's input/output, plus one copy of
 *    the block's weights) were calibrated by measuring each block's saved bytes with measurePeak on bench-mid and
 *    tiny configs (lib/planner/measure.ts; least squares over 4 configs, residual < 3 % per block type), and the
 *    backward term by fitting peak − saved over the same runs — when wasm's Identity kernel still copied every tensor
 *    the tape saves. It now shares the buffer (engine/kernels/identity.ts): on wasm the weight copies, the skip
 *    connections' and attention maps' second copies are gone and the rest scales by WASM_SHARED_FACTOR.
 *  - "tfjs-native" (ours on tfjs-node, engine "node"/"node-gpu"): the same tape; tfjs-node's Identity adds a
 *    reference to the TF tensor, but each saved tensor is a handle tfjs' memory counter counts. Native keeps the
 *    fitted counts with the weight terms, skip and attention copies, and NATIVE_KEPT_SHARE of the activation terms
 *    (fitted on native, see the constant); with its fused kernels (lib/engine/fused.ts) no attention maps, and
 *    FUSED_BLOCK_SHARE of the blocks' counts.
 *  - "torch" (diffusers on CUDA, for reproducing the seed README's table): autograd frees saved tensors as backward
 *    proceeds, so the peak is at the start of backward. Counts come from what each torch op saves (GroupNorm, SiLU
 *    and conv save their inputs; attention keeps the softmax output; xformers keeps only the log-sum-exp), the
 *    frozen UNet is in eval mode so diffusers does not checkpoint it (only the ControlNet), and a CUDA context +
 *    cuDNN workspace of 1.3 GB is added (CUDA_OVERHEAD_BYTES; what nvidia-smi shows on top of the tensors).
 */
import {
  ControlNetModel, UNet2DConditionModel, AutoencoderKL, CLIPTextModel, Conv2d, Linear, ResnetBlock2D, Transformer2DModel, Downsample2D, Upsample2D, type Module,
} from "../models/index.js";
import { engineInfo, hasFusedAttention } from "../engine/index.js";
import { stepGeometry, condEmbeddingGeometry, type BlockShape, type UNetLikeConfig } from "./architecture.js";
import type { PlannerOptions } from "./types.js";

export type { PlannerOptions } from "./types.js";

export type EngineProfile = "tfjs" | "tfjs-native" | "torch";

/**
 * Share of the "tfjs" profile's activation bytes (saved tensors, activation gradients, block transients; not the
 * attention maps) that live at the peak on the native engine. Least squares over 8 step peaks measured on engine
 * "node" with measureTrainingStep (tiny 32 px b2 / 64 px b1; bench-mid 128 px b1 / b2 / checkpointing + 8-bit Adam,
 * 256 px b1 / chunked attention 256 / checkpointing): residuals −4.0 … +4.0 %. The rest were wasm's tape copies.
 */
export const NATIVE_KEPT_SHARE = 0.82;

/**
 * The block-weights' worth of bytes a native block keeps beyond its activations (the `weights` terms), as a share of
 * its parameters: 1 when fitted with the layers composed from tfjs ops (their reshaped copies of inputs counted as
 * tensors of their own); 0.25 since the linear layer and GEGLU are one kernel each (lib/engine/native/linear.ts),
 * refitted with the three constants below on the configs of `npm run bench -- planner-fit` on engine "node"
 * (predicted / measured 1.14–1.21 on the small configs and 0.91 with checkpointing before the refit; 0.996–1.081
 * after).
 */
export const NATIVE_WEIGHT_KEPT = 0.25;

/**
 * With the native engine's fused kernels (attention, GroupNorm+SiLU), the share of a resnet's or transformer's fitted
 * activation counts that a block holds when it is not checkpointed: the fused ops keep fewer intermediates than the
 * composed ones the counts were fitted on. Fitted on the non-checkpointed configs of `npm run bench -- planner-fit`
 * on engine "node": predicted / measured step peaks 1.047–1.109 without it, 0.951–1.071 with it (all 7 configs,
 * checkpointed ones included with the recompute term below); refitted with NATIVE_WEIGHT_KEPT since.
 */
export const FUSED_BLOCK_SHARE = 0.65; // 0.93 before the linear and GEGLU kernels (see NATIVE_WEIGHT_KEPT)

/**
 * Native's fused attention reads the heads where the projections put them, its LayerNorm is one kernel and the
 * conditioning embedding's SiLUs are one kernel: a transformer keeps this share of its fitted activation counts (no
 * split/merge copies, no LayerNorm or GEGLU intermediates), a fused SiLU 3 tensors per output element (composed: 5).
 * Fitted with `npm run bench -- planner-fit` on engine "node" (with NATIVE_WEIGHT_KEPT, after the linear and GEGLU
 * kernels): predicted / measured 0.996–1.081.
 */
export const FUSED_TRANSFORMER_SHARE = 0.3; // 0.65 before the linear and GEGLU kernels
export const FUSED_SILU_KEPT = 3; // 2 before

/**
 * Self-attention maps (bh·n² elements) beyond the probabilities and their gradient that a full-attention transformer
 * holds at the wasm step's peak (the softmax backward's intermediates). Fitted with `npm run bench -- planner-fit` on
 * engine "wasm" once the UNet's down and mid blocks ran outside the gradient scope: without it the configs whose
 * self-attention spans 1,024 tokens were predicted at 0.71 (tiny 64 px) and 0.85 (bench-mid 256 px) of their
 * measured peaks (0.75 and 0.88 before that change), enough to call a 4 GiB-heap run that cannot fit a fit; with
 * 0.8: 0.897–1.032 on the 7 configs without chunking (1.6: up to 1.137 on tiny 32 px).
 */
export const WASM_SOFTMAX_GRAD_MAPS = 0.8;

/**
 * Peak RSS beyond (live tensors + the process before building), as a share of the peak live tensors, on the native
 * CPU engine: SD1.5 at 512 px (`npm run bench -- sd15-step --resolution 512`, 2026-12-03/04): 0.064–0.085 with the
 * fused kernels of the 3rd, 0.105 and 0.148 with those of the 4th. 0.10: the runs' RSS is then predicted within
 * −4 … +5 %.
 */
export const NATIVE_HEAP_SLACK = 0.1;

/**
 * The wasm heap's high-water mark beyond live tensors + packed copies when frozen weights are streamed, in units of
 * the largest streamed block's weights (SD1.5: an up-block resnet 2560→1280, 196.7 MB). Measured with
 * `CONTROLNET_TS_BACKEND=wasm npm run bench -- sd15-step --resolution R` (2026-12-05, this 2-core machine): heap −
 * peak live − the planner's packed copies = 0.49 / 0.51 / 0.57 GB at R = 64 / 128 / 256 — about constant, so a
 * weights term, not an activations one: 2.5–2.9 blocks. 2.5: the planned heap is then 0.97 / 0.99 / 1.03 of the
 * measured (it was 0.80 / 0.82 / 0.88 without). Configurations that stream nothing (tiny, bench-mid) measure none.
 */
export const WASM_STREAM_HOLES = 2.5;

/** Our profile for the running engine: "tfjs-native" on tfjs-node (CPU or GPU), else "tfjs" (wasm, the default). */
export function engineProfile(): EngineProfile {
  const backend = engineInfo()?.backend;
  return backend === "node" || backend === "node-gpu" ? "tfjs-native" : "tfjs";
}

export interface EstimateConfig {
  /** The UNet's config.json object. */
  unet: Record<string, unknown>;
  /** ControlNet config overrides (default: fromUnet with the default conditioning embedding). */
  controlnet?: { conditioning_embedding_out_channels?: number[]; conditioning_channels?: number };
  /** VAE config.json (its parameters count as frozen weights; it runs outside the gradient scope). */
  vae?: Record<string, unknown> | null;
  /** Text encoder config.json (frozen weights). */
  textEncoder?: Record<string, unknown> | null;
  /** Pixel resolution of the training images. */
  resolution: number;
  batchSize: number;
  /** Tokens per prompt (77 for CLIP). */
  seqLen?: number;
  /** Pixels per latent pixel (8 for SD: 2^(VAE stages − 1)); default from the VAE config, else 8. */
  vaeScaleFactor?: number;
  options?: Partial<PlannerOptions>;
  /** Which engine's memory behaviour to model (default: the running engine's, engineProfile()). */
  profile?: EngineProfile;
  /**
   * Attention runs in one fused kernel that keeps no score maps, only its inputs, output and a log-sum-exp per query
   * (the native CPU engine's, lib/engine/fused.ts). Default: whether the running engine has it, when `profile` is
   * the running engine's.
   */
  fusedAttention?: boolean;
}

export interface MemoryParts {
  parameters: number;
  gradients: number;
  optimizerStates: number;
  activations: number;
  attention: number;
  workspace: number;
  total: number;
}

export interface MemoryEstimate {
  device: MemoryParts;
  host: MemoryParts;
  params: { unet: number; controlnet: number; vae: number; textEncoder: number };
  options: PlannerOptions;
  profile: EngineProfile;
  /**
   * wasm backend only: bytes of the hidden weight copies XNNPACK keeps per resident conv filter (a transposed and a
   * packed copy) and linear weight (a packed copy) — in the heap but not in tf.memory(), hence not in device.total
   * (measured in tests/engine/weight-cache.test.ts). With keepPackedWeights off, only the largest conv's transient
   * copies. The wasm heap needs device.total + this.
   */
  wasmPackedWeights: number;
  /**
   * Bytes the heap holds beyond its live tensors (and, on wasm, the packed copies) at the step's peak, which no
   * tensor can use. tfjs-native: freed blocks glibc's heap keeps for reuse (the engine never trims it:
   * lib/engine/native/host-memory.ts) — NATIVE_HEAP_SLACK of device.total; in the process's RSS, not in tf.memory().
   * wasm with frozen-weight streaming: the holes the streamed blocks' weights leave as they come and go
   * (WASM_STREAM_HOLES); wasm memory never shrinks, so its high-water mark is what must fit. 0 otherwise.
   */
  heapSlack: number;
  /** Human-readable lines, largest first. */
  breakdown: string[];
  /** Our profiles: the activation terms in float32 elements before the profile's shares (for refitting them). */
  activationParts?: { weights: number; saved: number; transient: number };
}

/**
 * What nvidia-smi shows besides tensors in the seed's setup (torch 1.13, CUDA 11): the CUDA context with every
 * kernel image loaded eagerly (~0.9 GB; lazy module loading only became the default with torch 2) plus cuDNN
 * convolution workspace (~0.4 GB for 512 px). An assumption, not a measurement: no GPU here.
 */
export const CUDA_OVERHEAD_BYTES = 1.3e9;

export const DEFAULT_OPTIONS: PlannerOptions = {
  gradientCheckpointing: false,
  use8bitAdam: false,
  attentionChunkSize: 0,
  setGradsToNone: false,
  offloadOptimizerState: false,
  offloadFrozenWeights: false,
  keepPackedWeights: true,
  mixedPrecision: "no",
};

/** The config's models built shape-only (declared, never allocated): what parameter and copy counts read. */
interface ShapeOnlyModels {
  unet: UNet2DConditionModel;
  controlnet: ControlNetModel;
  vae: AutoencoderKL | null;
  textEncoder: CLIPTextModel | null;
}

function shapeOnlyModels(c: EstimateConfig): ShapeOnlyModels {
  const unet = new UNet2DConditionModel(c.unet, { shapeOnly: true });
  const controlnet = ControlNetModel.fromUnet(unet, {
    shapeOnly: true,
    conditioningEmbeddingOutChannels: c.controlnet?.conditioning_embedding_out_channels,
    conditioningChannels: c.controlnet?.conditioning_channels,
  });
  return {
    unet,
    controlnet,
    vae: c.vae ? new AutoencoderKL(c.vae, { shapeOnly: true }) : null,
    textEncoder: c.textEncoder ? new CLIPTextModel(c.textEncoder, { shapeOnly: true }) : null,
  };
}

/**
 * Hidden XNNPACK copies (bytes) of the conv/linear weights in `models`, leaving out the subtrees `skip` picks;
 * `largestConv` is the biggest conv filter anywhere in `models`, skipped or not.
 */
function packedCopyBytes(models: Module[], skip: (m: Module) => boolean = () => false): { total: number; largestConv: number } {
  const skipped = new Set<Module>();
  let total = 0;
  let largestConv = 0;
  for (const model of models) {
    for (const m of model.modules()) {
      if (!skipped.has(m) && skip(m)) for (const x of m.modules()) skipped.add(x);
      const n = m instanceof Conv2d || m instanceof Linear ? m.weight.shape.reduce((a, b) => a * b, 1) * 4 : 0;
      if (m instanceof Conv2d) largestConv = Math.max(largestConv, n);
      if (!skipped.has(m)) total += m instanceof Conv2d ? 2 * n : n;
    }
  }
  return { total, largestConv };
}

const streamedBlock = (m: Module) => m instanceof ResnetBlock2D || m instanceof Transformer2DModel || m instanceof Downsample2D || m instanceof Upsample2D;

/** What each resident model costs in hidden packed copies on wasm (see MemoryEstimate.wasmPackedWeights). */
function wasmPackedWeights(models: ShapeOnlyModels, o: PlannerOptions): number {
  const unet = packedCopyBytes([models.unet], o.offloadFrozenWeights ? streamedBlock : undefined);
  // a streamed block's copies live while it runs: the largest conv's two
  let bytes = unet.total + (o.offloadFrozenWeights ? 2 * unet.largestConv : 0);
  // the other frozen models, unless offloaded too (as device.parameters counts them): the VAE encoder (training only
  // encodes) and the text encoder
  if (!o.offloadFrozenWeights) {
    const frozen: Module[] = [];
    if (models.vae) frozen.push(models.vae.encoder, ...(models.vae.quant_conv ? [models.vae.quant_conv] : []));
    if (models.textEncoder) frozen.push(models.textEncoder);
    bytes += packedCopyBytes(frozen).total;
  }
  // keepPackedWeights (applied to the trainable ControlNet): all its copies stay, or one call's copy + its two at a time
  const cn = packedCopyBytes([models.controlnet]);
  return bytes + (o.keepPackedWeights ? cn.total : 3 * cn.largestConv);
}

/** Parameter counts from shape-only models (declared, never allocated). */
export function countParameters(c: EstimateConfig): MemoryEstimate["params"] {
  return parameterCounts(shapeOnlyModels(c));
}

function parameterCounts(m: ShapeOnlyModels): MemoryEstimate["params"] {
  return {
    unet: m.unet.numParameters(),
    controlnet: m.controlnet.numParameters(),
    vae: m.vae?.numParameters() ?? 0,
    textEncoder: m.textEncoder?.numParameters() ?? 0,
  };
}

/** Elements kept for backward by one block, and the extra its backward needs (both in elements). */
interface BlockCost {
  saved: number;
  attention: number;
  backward: number;
  /** What a checkpointed block keeps instead (its inputs). */
  inputs: number;
  /** The part of `saved` that scales with the block's weights, not its activations (tfjs profiles). */
  weights: number;
}

/**
 * "tfjs" (wasm): the fitted per-element counts below were measured when the wasm Identity kernel copied every tensor
 * a kernel saves; it now shares the buffer (engine/kernels/identity.ts), which drops the weights' saved copies (the
 * `weights` terms), a skip connection's second copy and the attention maps' second copy outright, and scales the rest
 * by this factor — the ratio of single-block training peaks after/before (resnet 0.75–0.78, transformer 0.77,
 * down/upsample 0.73/0.80, measured side by side with measurePeak), rounded to 0.8 against the whole-step peaks of
 * tests/planner (predicted/measured 0.96 tiny, 1.00 bench-mid 128 px, 0.99 with checkpointing + 8-bit Adam).
 */
const WASM_SHARED_FACTOR = 0.8;

/** The factor on a tfjs profile's fitted activation counts: wasm's shared tape buffers, else the fitted counts. */
function activationFactor(profile: EngineProfile): number {
  return profile === "tfjs" ? WASM_SHARED_FACTOR : 1;
}

function blockCost(b: BlockShape, profile: EngineProfile, chunk: number, fused: boolean): BlockCost {
  // native: a share of the block's weights kept per block (fitted); wasm's tape now shares the saved weights
  const weights = profile === "tfjs-native" ? NATIVE_WEIGHT_KEPT * b.params : 0;
  const t = activationFactor(profile);
  const tape = profile !== "torch";
  const px = b.batch * b.h * b.w;
  const inE = px * b.cin;
  const outE = px * b.cout;
  if (b.kind === "resnet") {
    const saved = tape ? weights + t * (15 * inE + 19 * outE + (b.cin !== b.cout ? 2 * outE : 0)) : 3 * inE + 3 * outE;
    return { saved, attention: 0, backward: 0, inputs: inE, weights };
  }
  if (b.kind === "downsample") {
    return { saved: tape ? weights + t * (1.41 * inE + 0.35 * (inE / 4)) : inE, attention: 0, backward: 0, inputs: inE, weights };
  }
  if (b.kind === "upsample") {
    return { saved: tape ? weights + t * (1.29 * inE + 5.18 * 4 * inE) : 5 * inE, attention: 0, backward: 0, inputs: inE, weights };
  }
  // transformer
  const n = b.h * b.w;
  const m = b.ctxLen!;
  const bh = b.batch * b.heads!;
  const layers = b.layers ?? 1;
  const ctxE = b.batch * m * b.cin;
  const chunked = chunk > 0 && n > chunk;
  if (tape) {
    const act = t * layers * (152 * outE + 13 * ctxE);
    // full attention keeps the probabilities of self- and cross-attention for softmax's and AV's backward: one buffer
    // on wasm (its Identity shares it), two tracked handles on native; their gradients are as big. The fused kernel
    // keeps none (a log-sum-exp per query row, negligible) and recomputes them row by row in its backward.
    if (fused) {
      // native's fused attention also reads the heads where the projections put them: no split/merge copies kept
      const kept = profile === "tfjs-native" ? FUSED_TRANSFORMER_SHARE * act : act;
      return { saved: weights + kept, attention: 0, backward: 0.93 * kept, inputs: outE + b.batch * m * b.ctxDim!, weights };
    }
    const scores = chunked ? 0 : layers * (profile === "tfjs" ? 1 : 2) * bh * (n * n + n * m);
    // chunked: one chunk's scores are recomputed at a time (scores, probabilities and their gradients).
    const chunkTransient = chunked ? 4 * bh * chunk * Math.max(n, m) : 0;
    const softmaxGrad = profile === "tfjs" && !chunked ? WASM_SOFTMAX_GRAD_MAPS * layers * bh * n * n : 0;
    return { saved: weights + act, attention: scores, backward: 0.93 * act + scores + chunkTransient + softmaxGrad, inputs: outE + b.batch * m * b.ctxDim!, weights };
  }
  const act = layers * (31 * outE + 2 * ctxE);
  const probs = chunked ? layers * bh * n : layers * bh * (n * n + n * m);
  return { saved: act, attention: probs, backward: chunked ? 0 : 2 * bh * n * n, inputs: outE + b.batch * m * b.ctxDim!, weights: 0 };
}

export function estimateMemory(c: EstimateConfig): MemoryEstimate {
  const o: PlannerOptions = { ...DEFAULT_OPTIONS, ...(c.options ?? {}) };
  const profile = c.profile ?? engineProfile();
  const fused = profile !== "torch" && (c.fusedAttention ?? (profile === engineProfile() && hasFusedAttention()));
  // our engines run tfjs' tape ("tfjs" on wasm, "tfjs-native" on tfjs-node); "torch" is autograd
  const tape = profile !== "torch";
  const models = shapeOnlyModels(c);
  const params = parameterCounts(models);
  const unetCfg = c.unet as UNetLikeConfig;
  const embOut = c.controlnet?.conditioning_embedding_out_channels ?? [16, 32, 96, 256];
  const vaeBlocks = (c.vae?.block_out_channels as number[] | undefined)?.length;
  const scale = c.vaeScaleFactor ?? (vaeBlocks ? 2 ** (vaeBlocks - 1) : 8);
  const latent = Math.floor(c.resolution / scale);
  const seq = c.seqLen ?? 77;
  const geo = stepGeometry(unetCfg, c.batchSize, latent, seq);
  const ce = condEmbeddingGeometry(embOut, unetCfg.block_out_channels[0]!, c.batchSize, c.resolution, c.controlnet?.conditioning_channels ?? 3);

  // Activation and weight dtypes: fp32 everywhere on our engine; torch fp16 autocast halves activations and the
  // frozen weights (train_controlnet.py casts unet/vae/text_encoder to weight_dtype).
  const half = profile === "torch" && o.mixedPrecision === "fp16";
  const actBytes = half ? 2 : 4;
  const frozenBytes = half ? 2 : 4;

  // --- activations
  let saved = 0;
  let attention = 0;
  let maxBlock = 0;
  let backward = 0;
  let weightTerms = 0;
  for (const b of geo.blocks) {
    const k = blockCost(b, profile, o.attentionChunkSize, fused);
    // torch: diffusers only checkpoints modules in training mode, i.e. the ControlNet, never the frozen UNet.
    // ours also checkpoints the down/upsamplers (so frozen ones can be streamed from the host).
    const ckpt = o.gradientCheckpointing && (tape ? true : (b.kind === "resnet" || b.kind === "transformer") && b.model === "controlnet");
    const share = fused ? FUSED_BLOCK_SHARE : 1;
    // ours runs the UNet's down and mid blocks outside the gradient scope (training/step.ts): nothing they compute is
    // taped, only their outputs live on (the UNet's skips, counted below). Their activation-gradient terms (as the
    // branches below count them) stay: no gradient ever flowed through them, but the shares were fitted with them.
    if (tape && b.frozenPrefix) {
      backward += ckpt ? k.inputs : share * k.backward;
      continue;
    }
    if (ckpt) {
      saved += k.inputs;
      // tfjs: the gradient reaching each checkpointed block's inputs also lives until the end of backprop.
      if (tape) backward += k.inputs;
      // native: a recomputed block's backward holds its attention maps once more (SD1.5 on native, measured minus
      // predicted peak: +0.10 GB at 256 px, +1.12 GB at 512 px — the 16× of n², one map pair of 0.54 GB at 512;
      // without checkpointing bench-mid's 256 px peak is predicted within 0.4 %, so the extra is the recompute's)
      // With the fused kernels there are no maps, and the recompute's deficit fits one more copy of the block's
      // saved activations (planner-fit, engine node: bench-mid 128 px ckpt + 8-bit 0.947 → 1.004, 256 px ckpt
      // 0.893 → 0.964)
      const recomputeExtra = profile !== "tfjs-native" ? 0 : fused ? k.saved - k.weights : k.attention;
      maxBlock = Math.max(maxBlock, k.saved + k.attention + k.backward + recomputeExtra);
    } else {
      saved += k.weights + share * (k.saved - k.weights);
      weightTerms += k.weights;
      attention += k.attention;
      backward += share * k.backward;
      if (profile === "torch") maxBlock = Math.max(maxBlock, k.backward);
    }
  }
  const wasm = profile === "tfjs";
  if (profile === "tfjs-native") weightTerms += ce.params;
  // the conditioning embedding's SiLUs: composed, each keeps x and sigmoid(x) (and its product's operands); the
  // fused kernel keeps x alone
  const siluKept = fused && profile === "tfjs-native" ? FUSED_SILU_KEPT : 5;
  const cond = tape
    ? (wasm ? 0 : ce.params) + activationFactor(profile) * (siluKept * ce.siluOut + 2 * ce.convOut) + ce.input
    : 2 * ce.siluOut + ce.input + ce.convOut;
  // a skip connection's second copy is a tape copy: gone on wasm, a separate tracked handle on native; with a tape,
  // the frozen UNet's own skips (forwardDown's, as many elements as the ControlNet's) live until backprop ends too
  saved += cond + geo.concatElements + (wasm ? 1 : 2) * geo.skipElements + (tape ? geo.skipElements : 0);
  if (tape) backward += 0.49 * cond;
  // tfjs holds every activation gradient to the end of backprop; torch needs only the largest block's backward.
  const transient = tape ? backward + maxBlock : maxBlock;
  // native: no tape copies of activations (NATIVE_KEPT_SHARE); the weight terms stay
  const activationElements = profile === "tfjs-native" ? weightTerms + (saved + transient - weightTerms) * NATIVE_KEPT_SHARE : saved + transient;

  // --- parameters, gradients, optimizer
  const frozen = params.unet + params.vae + params.textEncoder;
  const trainable = params.controlnet;
  const deepspeedFp16 = half && o.offloadOptimizerState;
  const frozenDevice = o.offloadFrozenWeights ? largestBlockParams(geo.blocks) * 4 : frozen * frozenBytes;
  const trainableDevice = trainable * (deepspeedFp16 ? 2 : 4);
  // torch with set_to_none: no gradient tensors exist at the peak (start of backward); zeroed ones do otherwise.
  // tfjs: the parameter gradients appear at the end of backprop, where its peak is.
  const gradBytesPer = deepspeedFp16 ? 2 : 4;
  // DeepSpeed keeps its own flat fp16 gradient partition whatever zero_grad does.
  // tfjs with a host optimizer and checkpointing: checkpointed ControlNet blocks send their weight gradients to the
  // host as backward produces them (training/step.ts hostGrads); only the rest are on the device at the end.
  const streamedGrads = tape && o.gradientCheckpointing && (o.use8bitAdam || o.offloadOptimizerState)
    ? geo.blocks.filter((b) => b.model === "controlnet").reduce((a, b) => a + b.params, 0)
    : 0;
  const gradients = profile === "torch" && o.setGradsToNone && !deepspeedFp16 ? 0 : (trainable - streamedGrads) * gradBytesPer;
  // ZeRO-2's reduce and all-gather buckets: 5e8 elements each by default, fp16.
  const deepspeedBuckets = deepspeedFp16 ? 2 * 5e8 * 2 : 0;
  let optDevice = 0;
  let optHost = 0;
  if (o.use8bitAdam) {
    // bitsandbytes keeps its 2×uint8 moments (+ a float32 absmax per 2048/256-block) on the GPU; ours on the host.
    const q = trainable * 2 + Math.ceil(trainable / 256) * 8;
    if (profile === "torch" && !o.offloadOptimizerState) optDevice = q;
    else optHost = q;
  } else if (o.offloadOptimizerState) optHost = trainable * (deepspeedFp16 ? 12 : 8) + (tape ? trainable * 4 : 0);
  else optDevice = trainable * 8;

  // attention: score/probability matrices kept for backward (and, on tfjs, their gradients, inside `transient`).
  const device = {
    parameters: frozenDevice + trainableDevice,
    gradients,
    optimizerStates: optDevice,
    activations: activationElements * actBytes,
    attention: attention * actBytes,
    workspace: (profile === "torch" ? CUDA_OVERHEAD_BYTES : 0) + deepspeedBuckets,
    total: 0,
  };
  device.total = device.parameters + device.gradients + device.optimizerStates + device.activations + device.attention + device.workspace;
  const host = {
    parameters: o.offloadFrozenWeights ? frozen * 4 : 0,
    gradients: deepspeedFp16 ? trainable * 4 : streamedGrads * 4,
    optimizerStates: optHost,
    activations: 0,
    attention: 0,
    workspace: 0,
    total: 0,
  };
  host.total = host.parameters + host.gradients + host.optimizerStates;
  const packed = profile === "tfjs" ? wasmPackedWeights(models, o) : 0;
  const GB = (x: number) => `${(x / 1e9).toFixed(2)} GB`;
  const breakdown = Object.entries(device)
    .filter(([k, v]) => k !== "total" && v > 0)
    .sort((a, b) => b[1] - a[1])
    .map(([k, v]) => `device ${k}: ${GB(v)}`);
  breakdown.push(`device total: ${GB(device.total)}`, `host total: ${GB(host.total)}`);
  if (packed > 0) breakdown.push(`wasm heap: + ${GB(packed)} of XNNPACK's packed weight copies = ${GB(device.total + packed)}`);
  const heapSlack = profile === "tfjs-native" ? NATIVE_HEAP_SLACK * device.total
    : profile === "tfjs" && o.offloadFrozenWeights ? WASM_STREAM_HOLES * (largestBlockParams(geo.blocks) / 2) * 4 : 0;
  if (heapSlack > 0 && profile === "tfjs-native") breakdown.push(`host heap: + ${GB(heapSlack)} of freed blocks kept for reuse = ${GB(device.total + heapSlack)}`);
  if (heapSlack > 0 && profile === "tfjs") breakdown.push(`wasm heap: + ${GB(heapSlack)} the streamed weights leave unusable = ${GB(device.total + packed + heapSlack)}`);
  return { device, host, params, options: o, profile, wasmPackedWeights: packed, heapSlack, breakdown, ...(tape ? { activationParts: { weights: weightTerms, saved: saved - weightTerms, transient } } : {}) };
}

/** With frozen weights streamed in, only the biggest block's weights (×2: the one in use and the next) are resident. */
function largestBlockParams(blocks: BlockShape[]): number {
  let m = 0;
  for (const b of blocks) if (b.model === "unet") m = Math.max(m, b.params);
  return 2 * m;
}
