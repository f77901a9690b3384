/**
 * StableDiffusionControlNetPipeline: text + control image(s) → image(s), the loop of diffusers'
 * `pipelines/controlnet/pipeline_controlnet.py` on tfjs (NHWC). Classifier-free guidance, conditioning scales,
 * guess mode, control_guidance_start/end windows and several ControlNets (residuals summed) behave as in diffusers.
 *
 * Randomness: initial latents come from our seeded `Generator`, which is not torch's RNG — the same seed gives the
 * same image here every time but not diffusers' image. To compare with diffusers, pass `latents` explicitly.
 */
import { tf } from "../engine/index.js";
import { Generator, type Scheduler } from "../schedulers/index.js";
import type { RawImage } from "../data/types.js";
import type { ControlImageInput, ControlNetLike, TextEncoderLike, TokenizerLike, UNetLike, VaeLike } from "./types.js";
import { applyGuidance, controlGuidanceWindows, controlnetKeep, doClassifierFreeGuidance, parseControlMode, perNet, repeatInterleave, type ControlMode } from "./guidance.js";
import { denormalize, prepareControlImage, toPng, toRgbImages, type PreparedImage } from "./image.js";
import { refuseGenerationBeyondMemory } from "./memory.js";

export interface PipelineComponents {
  unet: UNetLike;
  /** One ControlNet, or several whose residuals are summed (diffusers' MultiControlNetModel). */
  controlnet: ControlNetLike | ControlNetLike[];
  vae: VaeLike;
  scheduler: Scheduler;
  /** Needed unless every call passes promptEmbeds (and negativePromptEmbeds when guidance is on). */
  textEncoder?: TextEncoderLike;
  tokenizer?: TokenizerLike;
}

export interface StepInfo {
  /** 0-based step index. */
  step: number;
  numSteps: number;
  timestep: number;
  /** The latents after this step (owned by the pipeline; clone to keep). */
  latents: tf.Tensor4D;
}

export interface PipelineCallOptions {
  prompt?: string | string[];
  /** Default: "" for every prompt (diffusers' unconditional embedding). */
  negativePrompt?: string | string[];
  /** [B, T, D] text embeddings instead of `prompt` (not disposed). */
  promptEmbeds?: tf.Tensor3D;
  negativePromptEmbeds?: tf.Tensor3D;
  /** One control image per ControlNet (a list when there are several). */
  image: ControlImageInput | ControlImageInput[];
  /** Output size; default: the control image's size floored to a multiple of the VAE factor. The control image is resized to it (as diffusers does). */
  height?: number;
  width?: number;
  /** Default 50 (diffusers' default; the training validation uses 20). */
  numInferenceSteps?: number;
  /** Default 7.5; ≤ 1 turns classifier-free guidance off. */
  guidanceScale?: number;
  numImagesPerPrompt?: number;
  /** DDIM's eta. Default 0. */
  eta?: number;
  /** Seeded source of the initial latents and any scheduler noise; `seed` makes one. */
  generator?: Generator;
  seed?: number;
  /** Initial latents [B·numImagesPerPrompt, H/f, W/f, C] (NHWC), before scaling by init_noise_sigma. Not disposed. */
  latents?: tf.Tensor4D;
  /** "png" (default): PNG bytes + 8-bit RGB; "tensor": [B,H,W,3] floats in [0,1]; "latent": the final latents. */
  outputType?: "png" | "tensor" | "latent";
  controlnetConditioningScale?: number | number[];
  /** ControlNet sees only the conditional batch; residuals scaled 0.1 → 1.0 by depth (diffusers guess_mode). */
  guessMode?: boolean;
  /** "balanced" (default, diffusers): ControlNet on both halves of the guidance batch; "controlnet": on the
   *  conditional half only, so guidance multiplies its effect (sd-webui-controlnet's "ControlNet is more important"). */
  controlMode?: ControlMode;
  controlGuidanceStart?: number | number[];
  controlGuidanceEnd?: number | number[];
  /** Use the text encoder's output `clipSkip` layers before the last (final norm re-applied). */
  clipSkip?: number;
  onStep?: (info: StepInfo) => void;
  /** Aborts between steps (throws an AbortError). */
  signal?: AbortSignal;
}

export interface PipelineOutput {
  /** PNG files (outputType "png"). */
  images: Uint8Array[];
  /** 8-bit RGB pixels of the same images (outputType "png"). */
  rgb: RawImage[];
  /** [B,H,W,3] in [0,1] (outputType "tensor"); the caller disposes it. */
  pixels?: tf.Tensor4D;
  /** Final latents (outputType "latent"); the caller disposes it. */
  latents?: tf.Tensor4D;
  width: number;
  height: number;
  timesteps: number[];
  /** Wall time of the call. */
  seconds: number;
}

function asList<T>(v: T | T[]): T[] {
  return Array.isArray(v) ? v : [v];
}

function abortError(): Error {
  const e = new Error("The pipeline was aborted");
  e.name = "AbortError";
  return e;
}

export class StableDiffusionControlNetPipeline {
  readonly unet: UNetLike;
  readonly controlnets: ControlNetLike[];
  readonly vae: VaeLike;
  scheduler: Scheduler;
  readonly textEncoder?: TextEncoderLike;
  readonly tokenizer?: TokenizerLike;

  constructor(c: PipelineComponents) {
    this.unet = c.unet;
    this.controlnets = asList(c.controlnet);
    if (this.controlnets.length === 0) throw new Error("StableDiffusionControlNetPipeline needs at least one ControlNet");
    this.vae = c.vae;
    this.scheduler = c.scheduler;
    this.textEncoder = c.textEncoder;
    this.tokenizer = c.tokenizer;
  }

  /** Text → [B, T, D] embeddings (CLIP last hidden state, or an earlier layer + final norm with clipSkip). */
  encodeText(texts: string[], clipSkip?: number): tf.Tensor3D {
    if (!this.textEncoder || !this.tokenizer) {
      throw new Error("This pipeline has no text encoder/tokenizer: pass promptEmbeds (and negativePromptEmbeds) instead of prompts");
    }
    const max = this.tokenizer.modelMaxLength;
    const ids = this.tokenizer.tokenize(texts, max);
    // diffusers' encode_prompt warns so (logger.warning: stderr): a long prompt's end does not steer the image
    const cut = texts.map((t) => this.tokenizer!.truncatedPart?.(t, max) ?? null).filter((c): c is string => c !== null);
    if (cut.length) {
      process.stderr.write(`The following part of your input was truncated because CLIP can only handle sequences up to ${max} tokens: [${cut.map((c) => `'${c}'`).join(", ")}]\n`);
    }
    if (!clipSkip) {
      const out = this.textEncoder.forward(ids);
      out.pooledOutput?.dispose();
      return out.lastHiddenState;
    }
    const out = this.textEncoder.forward(ids, { outputHiddenStates: true });
    const states = out.hiddenStates ?? [];
    const norm = this.textEncoder.finalLayerNorm;
    if (!norm || clipSkip + 1 > states.length) {
      tf.dispose([out.lastHiddenState, out.pooledOutput, ...states].filter((t): t is tf.Tensor => !!t));
      throw new Error(`clipSkip ${clipSkip} needs the text encoder's hidden states (it has ${states.length})`);
    }
    const picked = norm.forward(states[states.length - (clipSkip + 1)]!);
    tf.dispose([out.lastHiddenState, out.pooledOutput, ...states].filter((t): t is tf.Tensor => !!t));
    return picked;
  }

  /** Positive and (with guidance) negative embeddings, each repeated numImagesPerPrompt times per prompt. */
  encodePrompt(o: PipelineCallOptions, numImagesPerPrompt: number, cfg: boolean): { pos: tf.Tensor3D; neg: tf.Tensor3D | null; batch: number } {
    let pos: tf.Tensor3D;
    if (o.promptEmbeds) {
      if (o.prompt !== undefined) throw new Error("Give either prompt or promptEmbeds, not both");
      if (o.promptEmbeds.rank !== 3) throw new Error(`promptEmbeds must be [B, T, D], got [${o.promptEmbeds.shape}]`);
      pos = o.promptEmbeds.clone();
    } else {
      if (o.prompt === undefined) throw new Error("Give a prompt (or promptEmbeds)");
      pos = this.encodeText(asList(o.prompt), o.clipSkip);
    }
    const batch = pos.shape[0];
    let neg: tf.Tensor3D | null = null;
    if (cfg) {
      if (o.negativePromptEmbeds) {
        if (o.negativePrompt !== undefined) throw new Error("Give either negativePrompt or negativePromptEmbeds, not both");
        if (o.negativePromptEmbeds.shape.join() !== pos.shape.join()) {
          pos.dispose();
          throw new Error(`negativePromptEmbeds [${o.negativePromptEmbeds.shape}] must have the shape of promptEmbeds [${o.promptEmbeds?.shape ?? pos.shape}]`);
        }
        neg = o.negativePromptEmbeds.clone();
      } else {
        const n = o.negativePrompt === undefined ? new Array<string>(batch).fill("") : asList(o.negativePrompt);
        const texts = n.length === 1 && batch > 1 ? new Array<string>(batch).fill(n[0]!) : n;
        if (texts.length !== batch) {
          pos.dispose();
          throw new Error(`negativePrompt has ${texts.length} entries but there are ${batch} prompts`);
        }
        neg = this.encodeText(texts, o.clipSkip);
      }
    }
    const rep = (t: tf.Tensor3D) => {
      const r = repeatInterleave(t, numImagesPerPrompt);
      t.dispose();
      return r;
    };
    return { pos: rep(pos), neg: neg && rep(neg), batch };
  }

  /** Loads and sizes every control image; all must share one size. */
  async prepareImages(o: PipelineCallOptions): Promise<PreparedImage[]> {
    const inputs = asList(o.image);
    const n = this.controlnets.length;
    if (inputs.length !== n) {
      throw new Error(`Got ${inputs.length} control image${inputs.length === 1 ? "" : "s"} for ${n} ControlNet${n === 1 ? "" : "s"}: give exactly one image per ControlNet`);
    }
    if (o.height !== undefined && (!Number.isInteger(o.height) || o.height % this.vae.scaleFactor !== 0 || o.height <= 0)) {
      throw new Error(`height must be a positive multiple of ${this.vae.scaleFactor}, got ${o.height}`);
    }
    if (o.width !== undefined && (!Number.isInteger(o.width) || o.width % this.vae.scaleFactor !== 0 || o.width <= 0)) {
      throw new Error(`width must be a positive multiple of ${this.vae.scaleFactor}, got ${o.width}`);
    }
    const prepared: PreparedImage[] = [];
    try {
      for (let i = 0; i < n; i++) {
        const p = await prepareControlImage(inputs[i]!, { multiple: this.vae.scaleFactor, height: o.height, width: o.width, index: i, count: n });
        prepared.push(p);
        const first = prepared[0]!;
        if (p.width !== first.width || p.height !== first.height) {
          throw new Error(`control image ${i + 1} is ${p.width}×${p.height} but control image 1 is ${first.width}×${first.height}: all control images must have the same size`);
        }
      }
    } catch (e) {
      tf.dispose(prepared.map((p) => p.tensor));
      throw e;
    }
    return prepared;
  }

  /** Refuses a size whose generation cannot fit the engine's memory (memory.ts), before the work starts. */
  private refuseBeyondMemory(width: number, height: number, unetBatch: number): void {
    const unetChannels = this.unet.config.block_out_channels?.[0];
    const vaeChannels = this.vae.config?.block_out_channels?.[0];
    if (!unetChannels || !vaeChannels) return; // a test double without configs
    refuseGenerationBeyondMemory(width, height, { vaeScaleFactor: this.vae.scaleFactor, unetChannels, vaeChannels, unetBatch },
      "give a smaller height and width (or control image), or fewer images or prompts");
  }

  async call(o: PipelineCallOptions): Promise<PipelineOutput> {
    const started = performance.now();
    const numSteps = o.numInferenceSteps ?? 50;
    if (!Number.isInteger(numSteps) || numSteps < 1) throw new Error(`numInferenceSteps must be a positive integer, got ${numSteps}`);
    const numImages = o.numImagesPerPrompt ?? 1;
    if (!Number.isInteger(numImages) || numImages < 1) throw new Error(`numImagesPerPrompt must be a positive integer, got ${numImages}`);
    const guidanceScale = o.guidanceScale ?? 7.5;
    if (this.unet.config.time_cond_proj_dim !== null && this.unet.config.time_cond_proj_dim !== undefined) {
      throw new Error("UNets with time_cond_proj_dim (LCM guidance embedding) are not supported");
    }
    const nNets = this.controlnets.length;
    const condScales = perNet(o.controlnetConditioningScale ?? 1, nNets, "controlnetConditioningScale");
    const windows = controlGuidanceWindows(o.controlGuidanceStart ?? 0, o.controlGuidanceEnd ?? 1, nNets);
    const cfg = doClassifierFreeGuidance(guidanceScale, this.unet.config.time_cond_proj_dim);
    const guessMode = (o.guessMode ?? false) || !!this.controlnets[0]!.config.global_pool_conditions;
    // the ControlNet sees only the conditional half of the guidance batch (guess mode, or control mode "controlnet")
    const controlMode = parseControlMode(o.controlMode ?? "balanced");
    const condOnly = cfg && (guessMode || controlMode === "controlnet");
    if (o.generator && o.seed !== undefined) throw new Error("Give either generator or seed, not both");
    const generator = o.generator ?? (o.seed !== undefined ? new Generator(o.seed) : new Generator(Math.floor(Math.random() * 2 ** 31)));

    // a size given up front is checked before the control image is resized to it (itself gigabytes at 16384²)
    if (o.height && o.width) this.refuseBeyondMemory(o.width, o.height, (cfg ? 2 : 1) * (o.promptEmbeds?.shape[0] ?? asList(o.prompt ?? "").length) * numImages);
    const images = await this.prepareImages(o);
    const { width, height } = images[0]!;
    const owned: tf.Tensor[] = images.map((p) => p.tensor);
    // the current latents, released if the loop throws (abort, a bad network output)
    let live: tf.Tensor | null = null;
    try {
      const { pos, neg, batch } = this.encodePrompt(o, numImages, cfg);
      owned.push(pos);
      this.refuseBeyondMemory(width, height, (cfg ? 2 : 1) * batch * numImages);
      if (neg) owned.push(neg);
      const total = batch * numImages;
      const embeds = neg ? (tf.concat([neg, pos], 0) as tf.Tensor3D) : pos;
      if (neg) owned.push(embeds);
      const cnEmbeds = condOnly ? pos : embeds;

      // Control images: batch 1 → every sample; batch B → each prompt's images; doubled for CFG unless condOnly.
      // Each is embedded once, as given (the embedding depends on the image alone), then repeated.
      const conds = images.map((p, k) => {
        const b = p.tensor.shape[0];
        if (b !== 1 && b !== batch) {
          throw new Error(`control image ${k + 1} has batch ${b}; it must be 1 or the number of prompts (${batch})`);
        }
        const { embedding } = this.controlnets[k]!.embedCondition(p.tensor);
        const rep = repeatInterleave(embedding, b === 1 ? total : numImages);
        embedding.dispose();
        if (!cfg || condOnly) return rep;
        const doubled = tf.concat([rep, rep], 0) as tf.Tensor4D;
        rep.dispose();
        return doubled;
      });
      owned.push(...conds);

      this.scheduler.setTimesteps(numSteps);
      const timesteps = [...this.scheduler.timesteps];
      const keep = controlnetKeep(timesteps.length, windows.start, windows.end);
      const f = this.vae.scaleFactor;
      const shape = [total, height / f, width / f, this.unet.config.in_channels];
      let latents: tf.Tensor4D;
      if (o.latents) {
        if (o.latents.shape.join() !== shape.join()) {
          throw new Error(`latents have shape [${o.latents.shape}], expected [${shape}] (NHWC: batch·images, height/${f}, width/${f}, channels)`);
        }
        latents = tf.mul(o.latents, this.scheduler.initNoiseSigma) as tf.Tensor4D;
      } else {
        latents = tf.tidy(() => tf.mul(generator.randn(shape), this.scheduler.initNoiseSigma)) as tf.Tensor4D;
      }
      live = latents;

      for (let i = 0; i < timesteps.length; i++) {
        if (o.signal?.aborted) throw abortError();
        const t = timesteps[i]!;
        const noisePred = tf.tidy(() => {
          const doubled = cfg ? tf.concat([latents, latents], 0) : latents;
          const modelInput = this.scheduler.scaleModelInput(doubled, t) as tf.Tensor4D;
          const controlInput = condOnly ? (this.scheduler.scaleModelInput(latents, t) as tf.Tensor4D) : modelInput;
          let down: tf.Tensor4D[] | undefined;
          let mid: tf.Tensor4D | undefined;
          this.controlnets.forEach((net, k) => {
            const scale = condScales[k]! * keep[i]![k]!;
            if (scale === 0) return; // a zero-scaled ControlNet adds exact zeros: skip its forward pass
            const r = net.forward(controlInput, t, cnEmbeds, { embedding: conds[k]! }, { conditioningScale: scale, guessMode });
            down = down ? down.map((d, j) => tf.add(d, r.downBlockResSamples[j]!) as tf.Tensor4D) : r.downBlockResSamples;
            mid = mid ? (tf.add(mid, r.midBlockResSample) as tf.Tensor4D) : r.midBlockResSample;
          });
          if (down && mid && condOnly) {
            // the unconditional half gets no control
            down = down.map((d) => tf.concat([tf.zerosLike(d), d], 0) as tf.Tensor4D);
            mid = tf.concat([tf.zerosLike(mid), mid], 0) as tf.Tensor4D;
          }
          const pred = this.unet.forward(modelInput, t, embeds, down && mid ? { downBlockAdditionalResiduals: down, midBlockAdditionalResidual: mid } : {});
          return cfg ? applyGuidance(pred, guidanceScale) : pred;
        });
        const { prevSample, predOriginalSample } = this.scheduler.step(noisePred, t, latents, { generator, eta: o.eta ?? 0 });
        tf.dispose([noisePred, predOriginalSample, latents].filter((x): x is tf.Tensor => !!x));
        latents = live = prevSample as tf.Tensor4D;
        o.onStep?.({ step: i, numSteps: timesteps.length, timestep: t, latents });
        // let timers/abort handlers run between steps
        await new Promise((r) => setImmediate(r));
      }
      this.scheduler.dispose(); // multistep history
      live = null; // consumed below

      const out: PipelineOutput = { images: [], rgb: [], width, height, timesteps, seconds: 0 };
      if ((o.outputType ?? "png") === "latent") {
        out.latents = latents;
      } else {
        const pixels = this.decodeLatents(latents);
        latents.dispose();
        if (o.outputType === "tensor") out.pixels = pixels;
        else {
          out.rgb = toRgbImages(pixels);
          pixels.dispose();
          for (const img of out.rgb) out.images.push(await toPng(img));
        }
      }
      out.seconds = (performance.now() - started) / 1000;
      return out;
    } finally {
      tf.dispose(owned);
      live?.dispose();
      this.scheduler.dispose();
    }
  }

  /** latents / scaling_factor → VAE decode (one image at a time, to bound memory) → [B,H,W,3] in [0,1]. */
  decodeLatents(latents: tf.Tensor4D): tf.Tensor4D {
    const parts: tf.Tensor4D[] = [];
    for (let b = 0; b < latents.shape[0]; b++) {
      parts.push(
        tf.tidy(() => {
          const z = tf.div(tf.slice(latents, [b, 0, 0, 0], [1, -1, -1, -1]), this.vae.scalingFactor) as tf.Tensor4D;
          return denormalize(this.vae.decode(z));
        }),
      );
    }
    const all = tf.concat(parts, 0) as tf.Tensor4D;
    tf.dispose(parts);
    return all;
  }
}
