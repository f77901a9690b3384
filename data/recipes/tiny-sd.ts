/**
 * The recipe for data/tiny-sd: a tiny Stable Diffusion trained from scratch, by this project's own models and
 * optimizer, on the synthetic fill50k at 32×32 pixels. Three stages, all seeded:
 *
 *   1. AutoencoderKL (3 stages → factor 4, 8×8×4 latents) trained as an autoencoder: reconstruction MSE (or L1 + MSE)
 *      on a posterior sample + a small KL term. Its scaling_factor is then set to 1/std of the latents, as SD's was.
 *   2. CLIPTextModel (32 wide, 2 layers) from a random init, with the 1000-token CLIP BPE vocab of
 *      tests/fixtures/tokenizer, copied to data/recipes/clip-tokenizer (it spells every fill50k colour). Frozen, or
 *      (`trainTextEncoder`, what data/tiny-sd uses) trained in stage 3 with the UNet: a frozen random encoder left the
 *      UNet unable to learn the colour names.
 *   3. UNet2DConditionModel trained as a text-to-image latent diffusion model: v-prediction MSE under SD1.5's
 *      scaled_linear betas rescaled to zero terminal SNR (see TINY_SCHEDULER_CONFIG for why), 10% empty prompts so
 *      classifier-free guidance works.
 *
 * Latents (and, with a frozen text encoder, text embeddings) of a fixed pool of rows are computed once, so a UNet
 * step runs only the UNet (and the text encoder when it trains). Each stage can continue from an earlier checkpoint
 * (`vaeInitDir`, `unetInitDir`, `textEncoderInitDir`): pretraining is built up over several runs. The result is a
 * diffusers StableDiffusionPipeline folder.
 */
import fs from "node:fs";
import path from "node:path";
import { tf } from "../../lib/engine/index.js";
import { AutoencoderKL, CLIPTextModel, UNet2DConditionModel } from "../../lib/models/index.js";
import { SyntheticFill50k, toFloat, type RawImage } from "../../lib/data/index.js";
import { DDPMScheduler } from "../../lib/schedulers/index.js";
import { createOptimizer, clipGradNorm } from "../../lib/training/optim/index.js";
import { getScheduler } from "../../lib/training/lr-schedulers.js";
import { Rng } from "../../lib/training/rng.js";
import { CLIPTokenizer } from "../../lib/models/clip/tokenizer.js";

export interface TinySdRecipe {
  outDir: string;
  seed: number;
  resolution: number;
  /** Where the tokenizer files come from. */
  tokenizerDir: string;
  vaeSteps: number;
  vaeBatch: number;
  vaeLr: number;
  klWeight: number;
  /** Stage 1's reconstruction loss: "mse", or "l1+mse" (mean |x̂ − x| + mean (x̂ − x)²: the L1 term keeps pulling on
   *  the few pixels at a disc's edge after MSE has settled the flat colours; it raised the IoU ceiling of the
   *  reconstructions 0.78 → 0.80 over the same 600 continued steps). */
  vaeLoss: "mse" | "l1+mse";
  unetSteps: number;
  unetBatch: number;
  unetLr: number;
  /** Rows whose latents/text embeddings are precomputed for the UNet stage. */
  poolSize: number;
  /** Probability of training on the empty prompt (classifier-free guidance). */
  emptyPromptProb: number;
  /** Wall-clock budget in seconds: when set, each stage's step count is fitted to its share after timing its first
   *  steps (the counts actually run are written to the report, so passing them back reproduces the run exactly). */
  budgetSeconds?: number | null;
  /** Share of the budget for the autoencoder (the rest, less the pool encoding, goes to the UNet). */
  vaeShare?: number;
  /** Start from this trained AutoencoderKL folder (its weights and scaling_factor) instead of training stage 1. The
   *  UNet stage draws from its own seeded RNG, so it is the same whether the VAE was trained or loaded. */
  vaeDir?: string | null;
  /** Continue training stage 1 from this AutoencoderKL folder instead of from a random init (a fresh optimizer and lr
   *  schedule; the scaling_factor is measured again). Pretraining for hours fits no single session: this, with
   *  `unetInitDir`, lets each run add its steps to the last checkpoint. */
  vaeInitDir?: string | null;
  /** Continue training the UNet from this UNet2DConditionModel folder (a fresh optimizer and lr schedule). Its latents
   *  must be the VAE's: continuing across a VAE whose encoder changed starts the UNet off on a shifted distribution. */
  unetInitDir?: string | null;
  /** Which part of the VAE stage 1 trains: "all", or "decoder" (encoder frozen: the latents, and so any UNet
   *  trained on them, stay valid while the reconstructions sharpen; needs `vaeInitDir`). */
  vaeTrain?: "all" | "decoder";
  /** Continuing the whole VAE (`vaeInitDir`, `vaeTrain` "all"), also penalise how far its latent means move from the
   *  starting encoder's: this weight × mean((μ − μ₀)·scaling_factor)², in the UNet's (scaled) units. The encoder may
   *  then sharpen the reconstructions while the latents stay close enough for a UNet trained on the old ones (the
   *  scaling_factor is kept, not measured again). 0 / unset: no anchor. */
  vaeAnchor?: number;
  /** Write the pipeline folder every this many UNet steps too (a long run that is stopped keeps its progress). */
  saveEvery?: number | null;
  /** Train the text encoder with the UNet (as the LDM paper's text-to-image model did) instead of keeping it frozen
   *  at its random init: cross-attention then need not decode colour names from fixed random features. */
  trainTextEncoder?: boolean;
  /** Continue from this CLIPTextModel folder (a text encoder trained by an earlier `trainTextEncoder` run). */
  textEncoderInitDir?: string | null;
  log?: (line: string) => void;
}

export const TINY_SD_RECIPE: Omit<TinySdRecipe, "outDir"> = {
  seed: 1234,
  resolution: 32,
  tokenizerDir: "data/recipes/clip-tokenizer",
  vaeSteps: 1298,
  vaeBatch: 16,
  vaeLr: 2e-3,
  klWeight: 1e-6,
  vaeLoss: "mse",
  unetSteps: 1730,
  unetBatch: 16,
  unetLr: 1e-3,
  poolSize: 8192,
  emptyPromptProb: 0.1,
};

export const TINY_VAE_CONFIG = {
  in_channels: 3,
  out_channels: 3,
  down_block_types: ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
  up_block_types: ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"],
  block_out_channels: [16, 32, 32],
  layers_per_block: 1,
  latent_channels: 4,
  norm_num_groups: 8,
  sample_size: 32,
  mid_block_add_attention: false,
};

export const TINY_TEXT_CONFIG = {
  architectures: ["CLIPTextModel"],
  vocab_size: 1000,
  hidden_size: 32,
  intermediate_size: 64,
  projection_dim: 32,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  max_position_embeddings: 77,
  hidden_act: "quick_gelu",
  layer_norm_eps: 1e-5,
  bos_token_id: 998,
  eos_token_id: 999,
  pad_token_id: 999,
  model_type: "clip_text_model",
};

export const TINY_UNET_CONFIG = {
  sample_size: 8,
  in_channels: 4,
  out_channels: 4,
  block_out_channels: [32, 64],
  layers_per_block: 1,
  down_block_types: ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
  up_block_types: ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
  cross_attention_dim: 32,
  // diffusers reads this as the number of heads: 2 heads of 16/32 channels (8 heads of 4/8 made attention 3× slower
  // on wasm for no gain at this size)
  attention_head_dim: 2,
  norm_num_groups: 8,
};

export const TINY_SCHEDULER_CONFIG = {
  _class_name: "DDPMScheduler",
  num_train_timesteps: 1000,
  beta_start: 0.00085,
  beta_end: 0.012,
  beta_schedule: "scaled_linear",
  // v-prediction on a zero-terminal-SNR schedule, with "trailing" timesteps (Lin et al. 2024, "Common Diffusion
  // Noise Schedules and Sample Steps are Flawed"; diffusers' rescale_betas_zero_snr). With SD1.5's ε-prediction
  // schedule, x_T still holds sqrt(ᾱ_T) = 0.07 of the image; on 8×8 latents the mean over 64 positions makes the
  // image's colours readable from x_T, so the UNet learned to take colours from the noise instead of the prompt
  // (its output changed by <1% between prompts and the demo's colour score was at chance). At SNR 0 the prompt is
  // the only source, and v-prediction keeps the loss defined (and weighted) at high noise.
  prediction_type: "v_prediction",
  rescale_betas_zero_snr: true,
  clip_sample: false,
  set_alpha_to_one: false,
  steps_offset: 1,
  timestep_spacing: "trailing",
};

/** Rows as [B,H,W,3] in [-1,1] (the training transform of train_controlnet.py). */
function pixelBatch(ds: SyntheticFill50k, indices: number[]): tf.Tensor4D {
  const r = ds.resolution;
  const out = new Float32Array(indices.length * r * r * 3);
  indices.forEach((idx, k) => toFloat(ds.row(idx).image as RawImage, "signed", out, k * r * r * 3));
  return tf.tensor4d(out, [indices.length, r, r, 3]);
}

/** The trainable variables of `m`, by name. */
function paramsOf(m: { namedParameters(): Map<string, { variable: tf.Variable }> }): Map<string, tf.Variable> {
  return new Map([...m.namedParameters()].filter(([, p]) => p.variable.trainable).map(([n, p]) => [n, p.variable] as [string, tf.Variable]));
}

/** One optimizer step of `lossFn` over `params` (gradients clipped to norm 1). */
function trainStep(params: Map<string, tf.Variable>, opt: ReturnType<typeof createOptimizer>, lossFn: () => tf.Scalar): number {
  const names = [...params.keys()];
  const { value, grads } = tf.variableGrads(lossFn, names.map((n) => params.get(n)!));
  const loss = value.dataSync()[0]!;
  value.dispose();
  const g = new Map<string, tf.Tensor>();
  for (const n of names) {
    const t = grads[params.get(n)!.name];
    if (t) g.set(n, t);
  }
  clipGradNorm(g, 1);
  opt.step(g, { disposeGrads: true });
  return loss;
}

function eta(done: number, total: number, t0: number): string {
  const s = (performance.now() - t0) / 1000;
  const rate = done / Math.max(s, 1e-9);
  return `${rate.toFixed(2)} it/s, ${s.toFixed(0)}s elapsed, ETA ${((total - done) / Math.max(rate, 1e-9)).toFixed(0)}s`;
}

/** Steps that fit `seconds` at the measured pace, capped by `maxSteps` (never below the steps already done). */
function fitSteps(seconds: number, done: number, elapsed: number, maxSteps: number): number {
  const per = elapsed / Math.max(done, 1);
  return Math.max(done, Math.min(maxSteps, Math.floor(seconds / per)));
}

/** Timing the first steps of a stage while still in warm-up, so refitting the step count changes no lr used so far. */
const CALIBRATION_STEPS = 6;

export interface TinySdReport {
  seconds: { vae: number; encode: number; unet: number; total: number };
  steps: { vae: number; unet: number };
  vaeFinalLoss: number;
  unetFinalLoss: number;
  scalingFactor: number;
  recipe: Omit<TinySdRecipe, "log">;
}

/** Stage 1 skipped: a trained AutoencoderKL folder (its weights and scaling_factor). */
function loadVae(dir: string, log: (l: string) => void): VaeStage {
  log(`vae: loaded ${dir} (stage 1 skipped)`);
  return { vae: AutoencoderKL.fromPretrained(dir), steps: 0, loss: NaN, seconds: 0 };
}

interface VaeStage {
  vae: AutoencoderKL;
  steps: number;
  loss: number;
  seconds: number;
}

/**
 * Stage 1's loss on pixels `x` ([-1,1]) with the posterior sampled by `eps`: reconstruction (MSE, or L1 + MSE) + klWeight
 * × KL per latent element, + (anchored continuation) weight × mean((μ − μ₀)·scaling_factor)² against the starting
 * encoder's means μ₀.
 */
export function vaeTrainingLoss(
  vae: AutoencoderKL,
  x: tf.Tensor4D,
  eps: tf.Tensor4D,
  o: { loss: TinySdRecipe["vaeLoss"]; klWeight: number; anchor?: { means: tf.Tensor4D; weight: number } },
): tf.Scalar {
  return tf.tidy(() => {
    const post = vae.encode(x);
    const d = tf.sub(vae.decode(post.sample({ noise: eps })), x);
    const mse = tf.mean(tf.square(d));
    const terms = [o.loss === "l1+mse" ? tf.add(tf.mean(tf.abs(d)), mse) : mse, tf.mul(tf.div(tf.mean(post.kl()), post.mean.size / post.mean.shape[0]), o.klWeight)];
    if (o.anchor) terms.push(tf.mul(tf.mean(tf.square(tf.mul(tf.sub(post.mean, o.anchor.means), vae.config.scaling_factor))), o.anchor.weight));
    post.dispose();
    return tf.addN(terms) as tf.Scalar;
  });
}

/** Stage 1: the autoencoder trained on reconstruction (its own RNG, seeded by the recipe's seed). */
function trainVae(recipe: TinySdRecipe, ds: SyntheticFill50k, budget: number | null, log: (l: string) => void): VaeStage {
  const res = recipe.resolution;
  const rng = new Rng(recipe.seed);
  const vae = recipe.vaeInitDir ? AutoencoderKL.fromPretrained(recipe.vaeInitDir) : new AutoencoderKL({ ...TINY_VAE_CONFIG, sample_size: res }, { seed: recipe.seed });
  if (recipe.vaeInitDir) log(`vae: continuing from ${recipe.vaeInitDir}`);
  if (recipe.vaeTrain === "decoder") {
    vae.encoder.trainable = false;
    if (vae.quant_conv) vae.quant_conv.trainable = false;
    log("vae: encoder frozen, training the decoder only");
  }
  // the starting encoder, frozen: the anchor's targets
  const anchorVae = recipe.vaeAnchor ? AutoencoderKL.fromPretrained(recipe.vaeInitDir!) : null;
  if (anchorVae) {
    anchorVae.trainable = false;
    log(`vae: latent means anchored to ${recipe.vaeInitDir} (weight ${recipe.vaeAnchor})`);
  }
  const vaeParams = paramsOf(vae);
  const vaeOpt = createOptimizer(vaeParams, { lr: recipe.vaeLr, weightDecay: 0 });
  let vaeSteps = recipe.vaeSteps;
  const vaeSchedFor = (n: number) => getScheduler("cosine", { baseLr: recipe.vaeLr, numWarmupSteps: 20, numTrainingSteps: n, numCycles: 0.5, power: 1 });
  let vaeSched = vaeSchedFor(vaeSteps);
  const lat = res / vae.scaleFactor;
  const lc = vae.config.latent_channels;
  const t0 = performance.now();
  let vaeLoss = NaN;
  for (let step = 1; step <= vaeSteps; step++) {
    if (budget !== null && step === CALIBRATION_STEPS + 1) {
      vaeSteps = fitSteps(budget * (recipe.vaeShare ?? 0.3), CALIBRATION_STEPS, (performance.now() - t0) / 1000, recipe.vaeSteps);
      vaeSched = vaeSchedFor(vaeSteps);
      for (let i = 0; i < CALIBRATION_STEPS; i++) vaeSched.step();
      log(`vae: ${vaeSteps} steps fit the budget`);
    }
    const idx = Array.from({ length: recipe.vaeBatch }, () => rng.randint(0, ds.length));
    const x = pixelBatch(ds, idx);
    const eps = tf.tensor4d(rng.normals(recipe.vaeBatch * lat * lat * lc), [recipe.vaeBatch, lat, lat, lc]);
    const anchor = anchorVae ? tf.tidy(() => anchorVae.encode(x).mean.clone()) : null;
    vaeOpt.lr = vaeSched.getLastLr();
    vaeLoss = trainStep(vaeParams, vaeOpt, () =>
      vaeTrainingLoss(vae, x, eps, { loss: recipe.vaeLoss, klWeight: recipe.klWeight, anchor: anchor ? { means: anchor, weight: recipe.vaeAnchor! } : undefined }),
    );
    vaeSched.step();
    tf.dispose(anchor ? [x, eps, anchor] : [x, eps]);
    if (step % 25 === 0 || step === vaeSteps) log(`vae ${step}/${vaeSteps} loss ${vaeLoss.toFixed(5)} (${eta(step, vaeSteps, t0)})`);
  }
  anchorVae?.dispose();
  return { vae, steps: vaeSteps, loss: vaeLoss, seconds: (performance.now() - t0) / 1000 };
}

function readJson(file: string): Record<string, unknown> {
  return JSON.parse(fs.readFileSync(file, "utf8")) as Record<string, unknown>;
}

/** Refuses, before any training, inputs that contradict each other, and a UNet to continue from that cannot take this
 *  VAE's latents or this text encoder. */
function checkRecipe(recipe: TinySdRecipe): void {
  if (recipe.vaeDir && recipe.vaeInitDir) {
    throw new Error("vaeDir (--vae: load a trained VAE, skip stage 1) and vaeInitDir (--vae-init: continue training it) exclude each other");
  }
  if (recipe.vaeTrain === "decoder" && !recipe.vaeInitDir) {
    throw new Error("training only the VAE's decoder (--vae-train decoder) needs the trained VAE whose encoder stays frozen (vaeInitDir, --vae-init DIR)");
  }
  if (recipe.vaeAnchor !== undefined && !(Number.isFinite(recipe.vaeAnchor) && recipe.vaeAnchor >= 0)) {
    throw new Error(`the VAE's latent anchor weight (--vae-anchor) must be a number ≥ 0 (got ${recipe.vaeAnchor})`);
  }
  if (recipe.vaeAnchor && (!recipe.vaeInitDir || recipe.vaeTrain === "decoder")) {
    throw new Error("--vae-anchor holds a continued encoder's latents near its start: it needs --vae-init DIR and the whole VAE training (not --vae-train decoder)");
  }
  if (!recipe.unetInitDir) return;
  const vaeFolder = recipe.vaeDir ?? recipe.vaeInitDir;
  const latC = Number(vaeFolder ? readJson(path.join(vaeFolder, "config.json")).latent_channels : TINY_VAE_CONFIG.latent_channels);
  const c = readJson(path.join(recipe.unetInitDir, "config.json"));
  const hidden = TINY_TEXT_CONFIG.hidden_size;
  if (c.in_channels !== latC || c.out_channels !== latC || c.cross_attention_dim !== hidden) {
    throw new Error(
      `unet init ${recipe.unetInitDir}: its UNet takes ${String(c.in_channels)}-channel latents and ${String(c.cross_attention_dim)}-wide text, ` +
        `but the VAE makes ${latC}-channel latents and the text encoder is ${hidden} wide`,
    );
  }
}

/** The synthetic fill50k every stage draws its rows from. */
export function recipeDataset(seed: number, resolution: number): SyntheticFill50k {
  return new SyntheticFill50k({ count: 50_000, seed, resolution });
}

/**
 * The UNet stage's pool: `size` row indices of a `datasetLength`-row dataset, drawn first from the stage's own RNG
 * (seed + 3: the same whether stage 1 ran or not), which the caller goes on drawing the UNet's batches from.
 */
export function drawPool(seed: number, size: number, datasetLength: number): { rng: Rng; rows: number[] } {
  const rng = new Rng(seed + 3);
  return { rng, rows: Array.from({ length: size }, () => rng.randint(0, datasetLength)) };
}

/** Runs the whole recipe and writes the pipeline folder to `outDir`. */
export async function pretrainTinySd(recipe: TinySdRecipe): Promise<TinySdReport> {
  const log = recipe.log ?? ((l: string) => console.log(l));
  const tStart = performance.now();
  const res = recipe.resolution;
  const ds = recipeDataset(recipe.seed, res);

  checkRecipe(recipe);

  // ---- 1. the autoencoder (or a trained one, loaded) ----
  const budget = recipe.budgetSeconds ?? null;
  const stage1 = recipe.vaeDir ? loadVae(recipe.vaeDir, log) : trainVae(recipe, ds, budget, log);
  const { vae } = stage1;
  vae.trainable = false;

  // ---- 2. the text encoder (random, or continued; frozen unless trained with the UNet) + tokenizer ----
  const tokenizer = CLIPTokenizer.fromFolder(recipe.tokenizerDir);
  const textEncoder = recipe.textEncoderInitDir
    ? CLIPTextModel.fromPretrained(recipe.textEncoderInitDir)
    : new CLIPTextModel(TINY_TEXT_CONFIG, { seed: recipe.seed + 1 });
  const trainText = recipe.trainTextEncoder ?? false;
  textEncoder.trainable = trainText;

  // ---- pool: latent posteriors and prompt token ids (and their embeddings when the text encoder is frozen) ----
  let t0 = performance.now();
  const { rng, rows: poolIdx } = drawPool(recipe.seed, recipe.poolSize, ds.length);
  const lat = res / vae.scaleFactor;
  const latC = vae.config.latent_channels;
  const latSize = lat * lat * latC;
  const means = new Float32Array(recipe.poolSize * latSize);
  const stds = new Float32Array(recipe.poolSize * latSize);
  const seq = tokenizer.modelMaxLength;
  const hidden = TINY_TEXT_CONFIG.hidden_size;
  // a frozen text encoder's outputs are computed once, like the latents; a trained one runs in every step
  const embeds = new Float32Array(trainText ? 0 : recipe.poolSize * seq * hidden);
  const poolIds: number[][] = [];
  const chunk = 64;
  for (let s = 0; s < recipe.poolSize; s += chunk) {
    const idx = poolIdx.slice(s, s + chunk);
    const x = pixelBatch(ds, idx);
    const post = vae.encode(x);
    means.set(post.mean.dataSync(), s * latSize);
    stds.set(post.std.dataSync(), s * latSize);
    post.dispose();
    x.dispose();
    const ids = tokenizer.tokenize(idx.map((i) => ds.truth(i).prompt), seq);
    poolIds.push(...ids);
    if (trainText) continue;
    const h = textEncoder.forward(ids).lastHiddenState;
    embeds.set(h.dataSync(), s * seq * hidden);
    h.dispose();
  }
  // SD's scaling factor: 1 / std of the latents (of the posterior means here).
  let sum = 0;
  let sq = 0;
  for (let i = 0; i < means.length; i++) {
    sum += means[i]!;
    sq += means[i]! * means[i]!;
  }
  const mu = sum / means.length;
  // (a loaded VAE, or one whose encoder stayed frozen or anchored, keeps the scaling_factor it was released with)
  if (!recipe.vaeDir && recipe.vaeTrain !== "decoder" && !recipe.vaeAnchor) (vae.config as { scaling_factor: number }).scaling_factor = Number((1 / Math.sqrt(sq / means.length - mu * mu)).toPrecision(5));
  const scalingFactor = vae.config.scaling_factor;
  const emptyIds = tokenizer.tokenize([""], seq)[0]!;
  const emptyEmbed = trainText ? null : tf.tidy(() => textEncoder.forward([emptyIds]).lastHiddenState.dataSync() as Float32Array);
  const encodeSeconds = (performance.now() - t0) / 1000;
  log(`pool: ${recipe.poolSize} rows encoded in ${encodeSeconds.toFixed(0)}s; scaling_factor ${vae.config.scaling_factor}`);

  // ---- 3. the UNet ----
  const unet = recipe.unetInitDir
    ? UNet2DConditionModel.fromPretrained(recipe.unetInitDir)
    : new UNet2DConditionModel({ ...TINY_UNET_CONFIG, sample_size: lat, in_channels: latC, out_channels: latC }, { seed: recipe.seed + 2 });
  if (recipe.unetInitDir) log(`unet: continuing from ${recipe.unetInitDir}`);
  // the UNet, and the text encoder when it trains (its names prefixed so the two never collide)
  const stage3Params = new Map([...paramsOf(unet), ...[...paramsOf(textEncoder)].map(([n, v]) => [`text_encoder.${n}`, v] as const)]);
  const unetOpt = createOptimizer(stage3Params, { lr: recipe.unetLr, weightDecay: 1e-2 });
  let unetSteps = recipe.unetSteps;
  const unetSchedFor = (n: number) => getScheduler("cosine", { baseLr: recipe.unetLr, numWarmupSteps: 50, numTrainingSteps: n, numCycles: 0.5, power: 1 });
  let unetSched = unetSchedFor(unetSteps);
  const unetBudget = budget === null ? 0 : budget - (performance.now() - tStart) / 1000 - 15; // 15 s for saving
  const noiseScheduler = DDPMScheduler.fromConfig(TINY_SCHEDULER_CONFIG);
  const B = recipe.unetBatch;
  t0 = performance.now();
  let unetLoss = NaN;
  let ema = NaN;
  const write = (steps: number, loss: number, seconds: number, total: number): TinySdReport => {
    writePipeline(recipe.outDir, recipe.tokenizerDir, vae, unet, textEncoder);
    const { log: _l, ...plain } = recipe;
    const report: TinySdReport = {
      seconds: { vae: stage1.seconds, encode: encodeSeconds, unet: seconds, total },
      steps: { vae: stage1.steps, unet: steps },
      vaeFinalLoss: stage1.loss, unetFinalLoss: loss, scalingFactor, recipe: plain,
    };
    fs.writeFileSync(path.join(recipe.outDir, "training_report.json"), JSON.stringify(report, null, 2) + "\n");
    return report;
  };
  for (let step = 1; step <= unetSteps; step++) {
    if (budget !== null && step === CALIBRATION_STEPS + 1) {
      unetSteps = fitSteps(unetBudget, CALIBRATION_STEPS, (performance.now() - t0) / 1000, recipe.unetSteps);
      unetSched = unetSchedFor(unetSteps);
      for (let i = 0; i < CALIBRATION_STEPS; i++) unetSched.step();
      log(`unet: ${unetSteps} steps fit the budget`);
    }
    const z = new Float32Array(B * latSize);
    const e = new Float32Array(trainText ? 0 : B * seq * hidden);
    const ids: number[][] = [];
    const rows = Array.from({ length: B }, () => rng.randint(0, recipe.poolSize));
    const post = rng.normals(B * latSize);
    rows.forEach((p, k) => {
      for (let i = 0; i < latSize; i++) z[k * latSize + i] = (means[p * latSize + i]! + stds[p * latSize + i]! * post[k * latSize + i]!) * scalingFactor;
      const empty = rng.random() < recipe.emptyPromptProb;
      if (trainText) ids.push(empty ? emptyIds : poolIds[p]!);
      else if (empty) e.set(emptyEmbed!, k * seq * hidden);
      else e.set(embeds.subarray(p * seq * hidden, (p + 1) * seq * hidden), k * seq * hidden);
    });
    const latents = tf.tensor4d(z, [B, lat, lat, latC]);
    const ehs = trainText ? null : tf.tensor3d(e, [B, seq, hidden]);
    const noise = tf.tensor4d(rng.normals(B * latSize), [B, lat, lat, latC]);
    const timesteps = Array.from({ length: B }, () => rng.randint(0, 1000));
    const ts = tf.tensor1d(timesteps, "float32");
    unetOpt.lr = unetSched.getLastLr();
    unetLoss = trainStep(stage3Params, unetOpt, () =>
      tf.tidy(() => {
        const noisy = noiseScheduler.addNoise(latents, noise, timesteps) as tf.Tensor4D;
        const target = noiseScheduler.config.prediction_type === "v_prediction" ? noiseScheduler.getVelocity(latents, noise, timesteps) : noise;
        const text = ehs ?? textEncoder.forward(ids).lastHiddenState;
        return tf.mean(tf.squaredDifference(unet.forward(noisy, ts, text), target)) as tf.Scalar;
      }),
    );
    unetSched.step();
    tf.dispose([latents, noise, ts]);
    ehs?.dispose();
    ema = Number.isNaN(ema) ? unetLoss : 0.98 * ema + 0.02 * unetLoss;
    if (!Number.isFinite(unetLoss)) throw new Error(`UNet loss became ${unetLoss} at step ${step}`);
    if (step % 25 === 0 || step === unetSteps) log(`unet ${step}/${unetSteps} loss ${unetLoss.toFixed(4)} ema ${ema.toFixed(4)} (${eta(step, unetSteps, t0)})`);
    if (recipe.saveEvery && step % recipe.saveEvery === 0 && step < unetSteps) {
      write(step, ema, (performance.now() - t0) / 1000, (performance.now() - tStart) / 1000);
      log(`saved ${recipe.outDir} at UNet step ${step}`);
    }
  }
  const unetSeconds = (performance.now() - t0) / 1000;

  const total = (performance.now() - tStart) / 1000;
  const report = write(unetSteps, unetLoss, unetSeconds, total);
  log(`done in ${total.toFixed(0)}s (vae ${stage1.seconds.toFixed(0)}s, pool ${encodeSeconds.toFixed(0)}s, unet ${unetSeconds.toFixed(0)}s) → ${recipe.outDir}`);
  return report;
}

/** The diffusers StableDiffusionPipeline folder (each part written whole: a stopped run leaves the last one). */
function writePipeline(out: string, tokenizerDir: string, vae: AutoencoderKL, unet: UNet2DConditionModel, textEncoder: CLIPTextModel): void {
  fs.mkdirSync(out, { recursive: true });
  vae.savePretrained(path.join(out, "vae"));
  unet.savePretrained(path.join(out, "unet"));
  textEncoder.savePretrained(path.join(out, "text_encoder"));
  fs.mkdirSync(path.join(out, "tokenizer"), { recursive: true });
  for (const f of ["vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"]) {
    fs.copyFileSync(path.join(tokenizerDir, f), path.join(out, "tokenizer", f));
  }
  fs.mkdirSync(path.join(out, "scheduler"), { recursive: true });
  fs.writeFileSync(path.join(out, "scheduler", "scheduler_config.json"), JSON.stringify({ ...TINY_SCHEDULER_CONFIG, _diffusers_version: "0.30.0" }, null, 2) + "\n");
  fs.writeFileSync(path.join(out, "model_index.json"), JSON.stringify(MODEL_INDEX, null, 2) + "\n");
}

export const MODEL_INDEX = {
  _class_name: "StableDiffusionPipeline",
  _diffusers_version: "0.30.0",
  feature_extractor: [null, null],
  image_encoder: [null, null],
  requires_safety_checker: false,
  safety_checker: [null, null],
  scheduler: ["diffusers", "DDPMScheduler"],
  text_encoder: ["transformers", "CLIPTextModel"],
  tokenizer: ["transformers", "CLIPTokenizer"],
  unet: ["diffusers", "UNet2DConditionModel"],
  vae: ["diffusers", "AutoencoderKL"],
};
