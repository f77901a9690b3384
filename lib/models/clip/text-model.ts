/**
 * CLIPTextModel (transformers models/clip/modeling_clip.py): token + position embeddings, pre-LayerNorm causal
 * transformer layers, final LayerNorm. Config-driven (SD1.x: 768 wide, quick_gelu; SD2.x: 1024 wide, gelu).
 * Parameter names are transformers' (`text_model.encoder.layers.0.self_attn.q_proj.weight`).
 */
import { tf } from "../../engine/index.js";
import { Module } from "../module.js";
import type { LoadStateOptions, LoadStateReport } from "../module.js";
import type { HostTensor } from "../../io/safetensors.js";
import { Embedding, LayerNorm, Linear, activation } from "../layers.js";
import { CONFIG_LIMITS, ConfigCheck } from "../config-checks.js";
import { scaledDotProductAttention } from "../attention.js";
import { loadPretrained, savePretrained } from "../pretrained.js";
import type { FromPretrainedOptions, ModelBuildOptions } from "../pretrained.js";
import fs from "node:fs";
import path from "node:path";
import { TRANSFORMERS_WEIGHTS_NAME, writeFileDurable } from "../../io/diffusers.js";

/** CLIPTextConfig fields typed float in transformers (written as 1.0, not 1). */
const CLIP_FLOAT_KEYS = ["attention_dropout", "dropout", "initializer_factor", "initializer_range", "layer_norm_eps", "logit_scale_init_value"];

export interface CLIPTextConfig {
  vocab_size: number;
  hidden_size: number;
  intermediate_size: number;
  projection_dim: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  max_position_embeddings: number;
  hidden_act: string;
  layer_norm_eps: number;
  bos_token_id: number;
  eos_token_id: number;
  pad_token_id: number;
  [key: string]: unknown;
}

export const CLIP_TEXT_DEFAULTS: CLIPTextConfig = {
  vocab_size: 49408,
  hidden_size: 512,
  intermediate_size: 2048,
  projection_dim: 512,
  num_hidden_layers: 12,
  num_attention_heads: 8,
  max_position_embeddings: 77,
  hidden_act: "quick_gelu",
  layer_norm_eps: 1e-5,
  bos_token_id: 49406,
  eos_token_id: 49407,
  pad_token_id: 1,
  model_type: "clip_text_model",
};

class CLIPAttention extends Module {
  readonly k_proj: Linear;
  readonly v_proj: Linear;
  readonly q_proj: Linear;
  readonly out_proj: Linear;
  chunkSize = 0;
  constructor(readonly dim: number, readonly heads: number) {
    super();
    this.k_proj = this.child("k_proj", new Linear(dim, dim));
    this.v_proj = this.child("v_proj", new Linear(dim, dim));
    this.q_proj = this.child("q_proj", new Linear(dim, dim));
    this.out_proj = this.child("out_proj", new Linear(dim, dim));
  }
  forward(x: tf.Tensor3D, mask: tf.Tensor): tf.Tensor3D {
    return tf.tidy(() => {
      const o = scaledDotProductAttention(this.q_proj.forward(x), this.k_proj.forward(x), this.v_proj.forward(x), 1 / Math.sqrt(this.dim / this.heads), {
        mask,
        chunkSize: this.chunkSize,
        heads: this.heads,
      });
      return this.out_proj.forward(o);
    });
  }
}

class CLIPMLP extends Module {
  readonly fc1: Linear;
  readonly fc2: Linear;
  private readonly act: ReturnType<typeof activation>;
  constructor(c: CLIPTextConfig) {
    super();
    this.act = activation(c.hidden_act);
    this.fc1 = this.child("fc1", new Linear(c.hidden_size, c.intermediate_size));
    this.fc2 = this.child("fc2", new Linear(c.intermediate_size, c.hidden_size));
  }
  forward(x: tf.Tensor3D): tf.Tensor3D {
    return tf.tidy(() => this.fc2.forward(this.act(this.fc1.forward(x))));
  }
}

class CLIPEncoderLayer extends Module {
  readonly self_attn: CLIPAttention;
  readonly layer_norm1: LayerNorm;
  readonly mlp: CLIPMLP;
  readonly layer_norm2: LayerNorm;
  constructor(c: CLIPTextConfig) {
    super();
    this.self_attn = this.child("self_attn", new CLIPAttention(c.hidden_size, c.num_attention_heads));
    this.layer_norm1 = this.child("layer_norm1", new LayerNorm(c.hidden_size, c.layer_norm_eps));
    this.mlp = this.child("mlp", new CLIPMLP(c));
    this.layer_norm2 = this.child("layer_norm2", new LayerNorm(c.hidden_size, c.layer_norm_eps));
  }
  forward(x: tf.Tensor3D, mask: tf.Tensor): tf.Tensor3D {
    return tf.tidy(() => {
      const h = tf.add(x, this.self_attn.forward(this.layer_norm1.forward(x), mask)) as tf.Tensor3D;
      return tf.add(h, this.mlp.forward(this.layer_norm2.forward(h))) as tf.Tensor3D;
    });
  }
}

class CLIPTextEmbeddings extends Module {
  readonly token_embedding: Embedding;
  readonly position_embedding: Embedding;
  constructor(c: CLIPTextConfig) {
    super();
    this.token_embedding = this.child("token_embedding", new Embedding(c.vocab_size, c.hidden_size));
    this.position_embedding = this.child("position_embedding", new Embedding(c.max_position_embeddings, c.hidden_size));
  }
  forward(ids: tf.Tensor2D): tf.Tensor3D {
    return tf.tidy(() => {
      const n = ids.shape[1];
      const pos = tf.range(0, n, 1, "int32");
      return tf.add(this.token_embedding.forward(ids), this.position_embedding.forward(pos)) as tf.Tensor3D;
    });
  }
}

class CLIPTextTransformer extends Module {
  readonly embeddings: CLIPTextEmbeddings;
  readonly layers: CLIPEncoderLayer[];
  readonly final_layer_norm: LayerNorm;
  constructor(c: CLIPTextConfig) {
    super();
    this.embeddings = this.child("embeddings", new CLIPTextEmbeddings(c));
    const enc = new EncoderHolder();
    this.layers = enc.build(c);
    this.child("encoder", enc);
    this.final_layer_norm = this.child("final_layer_norm", new LayerNorm(c.hidden_size, c.layer_norm_eps));
  }
}

/** `text_model.encoder.layers.N`: a holder so the names carry the `encoder.` component. */
class EncoderHolder extends Module {
  build(c: CLIPTextConfig): CLIPEncoderLayer[] {
    const layers: CLIPEncoderLayer[] = [];
    for (let i = 0; i < c.num_hidden_layers; i++) layers.push(new CLIPEncoderLayer(c));
    return this.list("layers", layers);
  }
}

export interface CLIPTextOutput {
  /** [B, T, hidden] after final_layer_norm (what Stable Diffusion conditions on). */
  lastHiddenState: tf.Tensor3D;
  /** [B, hidden]: the EOS token's final state. */
  pooledOutput: tf.Tensor2D;
  /** With outputHiddenStates: the embeddings, then each layer's output (num_hidden_layers + 1), before the final norm. */
  hiddenStates?: tf.Tensor3D[];
}

/** The text encoder config's types and magnitudes, before anything is built (config-checks.ts). */
function validateTextConfig(c: Record<string, unknown>): void {
  const check = new ConfigCheck(c, "CLIPTextModel");
  check.int("hidden_size", 1, CONFIG_LIMITS.channels);
  check.int("intermediate_size", 1, 4 * CONFIG_LIMITS.channels);
  check.int("num_hidden_layers", 1, CONFIG_LIMITS.layers);
  check.int("num_attention_heads", 1, CONFIG_LIMITS.heads);
  check.int("max_position_embeddings", 1, 65_536);
  check.int("vocab_size", 1, 10_000_000);
  check.positive("layer_norm_eps", 1);
  const [h, f] = [c.hidden_size as number, c.intermediate_size as number];
  check.parameters((c.vocab_size as number) * h + (c.num_hidden_layers as number) * (4 * h * h + 2 * h * f), "vocab_size × hidden_size + layers × width");
}

export class CLIPTextModel extends Module {
  static readonly className = "CLIPTextModel";
  readonly config: CLIPTextConfig;
  readonly text_model: CLIPTextTransformer;

  constructor(config: Partial<CLIPTextConfig> & Record<string, unknown> = {}, opts: ModelBuildOptions = {}) {
    super();
    const clean = Object.fromEntries(Object.entries(config).filter(([k]) => !k.startsWith("_")));
    // a full CLIPConfig (text_config inside) is accepted too
    const text = (clean.text_config as Record<string, unknown> | undefined) ?? clean;
    this.config = { ...CLIP_TEXT_DEFAULTS, ...text } as CLIPTextConfig;
    validateTextConfig(this.config);
    if (this.config.hidden_size % this.config.num_attention_heads !== 0) {
      throw new Error(`CLIPTextModel: hidden_size ${this.config.hidden_size} not divisible by ${this.config.num_attention_heads} heads`);
    }
    activation(this.config.hidden_act); // reject unsupported activations at build time
    this.text_model = this.child("text_model", new CLIPTextTransformer(this.config));
    if (!opts.shapeOnly) this.initialize(opts.seed ?? 1);
    if (opts.trainable !== undefined) this.trainable = opts.trainable;
  }

  /** Older checkpoints store the position_ids buffer; it is not a parameter. */
  protected override ignoredKeys(): RegExp[] {
    return [/^(text_model\.)?embeddings\.position_ids$/];
  }

  /**
   * Accepts both key styles: `text_model.…` (every SD checkpoint, transformers 4.x) and the un-prefixed keys
   * transformers 5.x writes for a bare CLIPTextModel.
   */
  override loadState(tensors: Map<string, HostTensor>, opts: LoadStateOptions = {}): LoadStateReport {
    const prefixed = [...tensors.keys()].some((k) => k.startsWith("text_model."));
    if (prefixed) return super.loadState(tensors, opts);
    return super.loadState(new Map([...tensors].map(([k, v]) => [`text_model.${k}`, v])), opts);
  }

  static fromPretrained(dir: string, opts: FromPretrainedOptions = {}): CLIPTextModel {
    return loadPretrained(dir, (c, o) => new CLIPTextModel(c, o), opts);
  }

  /**
   * Writes a transformers-style folder (config.json with architectures, model.safetensors). transformers 5 validates
   * config types strictly (`initializer_factor: 1` is rejected, it wants 1.0), and JSON from JS numbers loses the
   * ".0", so the float-typed keys are re-written with a decimal point.
   */
  savePretrained(dir: string): void {
    savePretrained(dir, this, CLIPTextModel.className, { ...this.config }, TRANSFORMERS_WEIGHTS_NAME);
    const file = path.join(dir, "config.json");
    let text = fs.readFileSync(file, "utf8");
    for (const key of CLIP_FLOAT_KEYS) {
      text = text.replace(new RegExp(`("${key}": )(-?\\d+)(,?\n)`), "$1$2.0$3");
    }
    writeFileDurable(file, text);
  }

  get finalLayerNorm(): LayerNorm {
    return this.text_model.final_layer_norm;
  }

  setAttentionChunkSize(chunkSize: number): this {
    for (const m of this.modules()) if (m instanceof CLIPAttention) m.chunkSize = chunkSize;
    return this;
  }

  /** inputIds: [B, T] token ids (int32 tensor or nested arrays). No padding mask is applied (as SD calls it). */
  forward(inputIds: tf.Tensor2D | number[][], opts: { outputHiddenStates?: boolean } = {}): CLIPTextOutput {
    const ids = Array.isArray(inputIds) ? tf.tensor2d(inputIds, undefined, "int32") : inputIds;
    const idRows = (ids.arraySync() as number[][]).map((r) => r.map(Math.round));
    const out = tf.tidy(() => {
      const [b, t] = ids.shape;
      // causal mask: position i attends to j ≤ i (additive, large negative above the diagonal)
      const maskData = new Float32Array(t * t);
      for (let i = 0; i < t; i++) for (let j = i + 1; j < t; j++) maskData[i * t + j] = -1e9;
      const mask = tf.tensor3d(maskData, [1, t, t]);
      let h = this.text_model.embeddings.forward(ids);
      const states: tf.Tensor3D[] = [h];
      for (const layer of this.text_model.layers) {
        h = this.maybeCheckpoint(layer, (x) => layer.forward(x as tf.Tensor3D, mask), [h]) as tf.Tensor3D;
        states.push(h);
      }
      const last = this.text_model.final_layer_norm.forward(h);
      // EOS position: argmax of the ids for legacy configs (eos_token_id 2), else the first eos_token_id
      const eos = this.config.eos_token_id;
      const positions = idRows.map((row) => {
        if (eos === 2) return row.indexOf(Math.max(...row));
        const p = row.indexOf(eos);
        return p < 0 ? row.length - 1 : p;
      });
      const gatherIdx = tf.tensor1d(positions.map((p, i) => i * t + p), "int32");
      const pooled = tf.gather(tf.reshape(last, [b * t, -1]), gatherIdx) as tf.Tensor2D;
      return { last, pooled, states: opts.outputHiddenStates ? states : [] };
    });
    if (Array.isArray(inputIds)) ids.dispose();
    return {
      lastHiddenState: out.last,
      pooledOutput: out.pooled,
      ...(opts.outputHiddenStates ? { hiddenStates: out.states } : {}),
    };
  }
}
