/**
 * A tiny module system in the spirit of torch.nn.Module, just enough to mirror diffusers' state dicts.
 *
 * Constructors only *declare* parameters (name, tfjs-layout shape, PyTorch layout tag, initialiser); nothing is
 * allocated until `initialize(seed)` or `loadState(...)`. That gives the shape-only mode for free: building the
 * SD1.5 ControlNet declares 340 tensors without allocating 1.4 GB, and `fromPretrained` allocates each variable
 * straight from the file instead of first filling it with random numbers.
 *
 * Parameter names are the dotted paths diffusers/transformers use (`down_blocks.0.resnets.1.conv1.weight`), built
 * from the child names given at registration, so loading and saving never need a name map.
 */
import { tf, transientWeight } from "../engine/index.js";
import { checkpoint } from "../engine/checkpoint.js";
import { tfjsShape, toTfjsLayout, toTorchLayout, torchShape } from "../io/layout.js";
import type { ParamLayout } from "../io/layout.js";
import type { HostTensor } from "../io/safetensors.js";
import { tensorOrigin } from "../io/diffusers.js";

export type ParamInit =
  | { kind: "zeros" }
  | { kind: "ones" }
  /** U(-bound, bound): PyTorch's default for conv/linear weights and biases (bound 1/sqrt(fan_in)). */
  | { kind: "uniform"; bound: number }
  | { kind: "normal"; std: number };

export interface Param {
  /** Shape in tfjs layout ([kh,kw,in,out] for convs, [in,out] for linears). */
  readonly shape: number[];
  readonly layout: ParamLayout;
  readonly init: ParamInit;
  variable: tf.Variable | null;
  /** The module that owns it (its trainable flag decides the variable's). */
  readonly owner: Module;
  /** Local name inside the owner, for error messages. */
  readonly localName: string;
}

export interface NamedParameter {
  variable: tf.Variable;
  layout: ParamLayout;
}

export interface ParamSpec {
  /** Shape in PyTorch layout (what the safetensors file holds). */
  shape: number[];
  layout: ParamLayout;
}

export interface LoadStateOptions {
  /** Missing or unexpected keys are an error (shape mismatches always are). Default true. */
  strict?: boolean;
}

export interface LoadStateReport {
  missing: string[];
  unexpected: string[];
  loaded: number;
}

/** A deterministic PRNG (mulberry32) for parameter initialisation, independent of the tfjs backend. */
export function makeRng(seed: number): () => number {
  let a = seed >>> 0 || 0x9e3779b9;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function fill(init: ParamInit, n: number, rng: () => number): Float32Array {
  const out = new Float32Array(n);
  switch (init.kind) {
    case "zeros":
      break;
    case "ones":
      out.fill(1);
      break;
    case "uniform":
      for (let i = 0; i < n; i++) out[i] = (rng() * 2 - 1) * init.bound;
      break;
    case "normal":
      for (let i = 0; i < n; i += 2) {
        const u = Math.max(rng(), 1e-12);
        const v = rng();
        const r = Math.sqrt(-2 * Math.log(u)) * init.std;
        out[i] = r * Math.cos(2 * Math.PI * v);
        if (i + 1 < n) out[i + 1] = r * Math.sin(2 * Math.PI * v);
      }
      break;
  }
  return out;
}

const numel = (shape: number[]) => shape.reduce((a, b) => a * b, 1);

function listNames(names: string[], max = 12): string {
  const shown = names.slice(0, max).join(", ");
  return names.length > max ? `${shown}, … (${names.length} in all)` : shown;
}

export class Module {
  private readonly _params = new Map<string, Param>();
  private readonly _children = new Map<string, Module>();
  private _trainable = true;
  /** Recompute this module's sub-blocks in backward instead of storing their activations. Set via the model. */
  gradientCheckpointing = false;
  /** Let the backend keep packed copies of this module's conv/linear weights between calls (see
   *  engine/weight-cache.ts). Off trades ~10× slower small convs for up to 2× less heap. Set via the model. */
  keepPackedWeights = true;

  /** Declares a parameter. Names follow diffusers' state dict (the last path component). */
  protected param(name: string, shape: number[], layout: ParamLayout, init: ParamInit): Param {
    if (this._params.has(name) || this._children.has(name)) throw new Error(`duplicate parameter name '${name}'`);
    const p: Param = { shape, layout, init, variable: null, owner: this, localName: name };
    this._params.set(name, p);
    return p;
  }

  /** Registers a child module under `name` (its parameters become `name.<...>`). */
  protected child<T extends Module>(name: string, m: T): T {
    if (this._params.has(name) || this._children.has(name)) throw new Error(`duplicate child name '${name}'`);
    this._children.set(name, m);
    return m;
  }

  /** Registers a list of children as `name.0`, `name.1`, … (torch.nn.ModuleList). */
  protected list<T extends Module>(name: string, items: T[]): T[] {
    const holder = new Module();
    items.forEach((m, i) => holder.child(String(i), m));
    this.child(name, holder);
    return items;
  }

  /** The variable of a declared parameter; a clear error if the model was built shape-only and not loaded. */
  protected v(p: Param): tf.Variable {
    if (!p.variable) {
      throw new Error(
        `parameter '${p.localName}' of ${p.owner.constructor.name} has no value: the model was built shape-only; ` +
          `call initialize(seed) or loadState(...) first`,
      );
    }
    return p.variable;
  }

  *namedParams(prefix = ""): Generator<[string, Param]> {
    for (const [n, p] of this._params) yield [prefix + n, p];
    for (const [n, c] of this._children) yield* c.namedParams(`${prefix}${n}.`);
  }

  *modules(): Generator<Module> {
    yield this;
    for (const c of this._children.values()) yield* c.modules();
  }

  /** Named submodule lookup by dotted path (e.g. "down_blocks.0"). */
  submodule(path: string): Module {
    let m: Module = this;
    for (const part of path.split(".")) {
      const c = m._children.get(part);
      if (!c) throw new Error(`no submodule '${path}' in ${this.constructor.name}`);
      m = c;
    }
    return m;
  }

  /** Every parameter with its tfjs variable (tfjs layout) and layout tag, in diffusers' names. */
  namedParameters(): Map<string, NamedParameter> {
    const out = new Map<string, NamedParameter>();
    for (const [n, p] of this.namedParams()) out.set(n, { variable: this.v(p), layout: p.layout });
    return out;
  }

  /** Names and PyTorch-layout shapes, available without allocation (shape-only models included). */
  parameterSpecs(): Map<string, ParamSpec> {
    const out = new Map<string, ParamSpec>();
    for (const [n, p] of this.namedParams()) out.set(n, { shape: torchShape(p.shape, p.layout), layout: p.layout });
    return out;
  }

  numParameters(): number {
    let n = 0;
    for (const [, p] of this.namedParams()) n += numel(p.shape);
    return n;
  }

  /** True when every parameter has a value. */
  get materialized(): boolean {
    for (const [, p] of this.namedParams()) if (!p.variable) return false;
    return true;
  }

  /**
   * Allocates every parameter that has no value yet, with its PyTorch-style initialiser drawn from a seeded PRNG
   * (same seed → same weights on any backend). Returns this.
   */
  initialize(seed = 1): this {
    const rng = makeRng(seed);
    for (const [, p] of this.namedParams()) {
      if (p.variable) continue;
      const data = fill(p.init, numel(p.shape), rng);
      // the variable shares the tensor's buffer (one more reference): drop ours, or the buffer outlives dispose()
      const init = tf.tensor(data, p.shape, "float32");
      p.variable = tf.variable(init, p.owner._trainable);
      init.dispose();
    }
    return this;
  }

  /** Keys a checkpoint may hold that are not parameters (e.g. CLIP's position_ids buffer). */
  protected ignoredKeys(): RegExp[] {
    return [];
  }

  /**
   * Loads PyTorch-layout tensors by diffusers name, converting each to tfjs layout. Shape mismatches are always an
   * error; missing/unexpected keys are an error when strict (default). All problems are reported in one Error.
   */
  loadState(tensors: Map<string, HostTensor>, opts: LoadStateOptions = {}): LoadStateReport {
    const strict = opts.strict ?? true;
    const ignored = [...this.modules()].flatMap((m) => m.ignoredKeys());
    const params = new Map(this.namedParams());
    const missing: string[] = [];
    const mismatched: string[] = [];
    const notFloat: string[] = [];
    for (const [name, p] of params) {
      const t = tensors.get(name);
      if (!t) missing.push(name);
      else {
        // Every parameter is a float. An integer tensor (I8…U64, BOOL: read as int32) under a parameter's name is not
        // weights, and converting it (1042406592 for the bits of 0.01) would train on garbage without a word.
        // F16/BF16/F64 arrive here already converted to float32 by the reader and load as before.
        if (t.dtype !== "float32" || t.data instanceof Int32Array) {
          const o = tensorOrigin(t);
          notFloat.push(`${name} is ${o ? `${o.dtype} in ${o.file}` : `${t.dtype} (in memory)`}`);
        }
        const want = torchShape(p.shape, p.layout);
        if (t.shape.length !== want.length || t.shape.some((d, i) => d !== want[i])) {
          mismatched.push(`${name}: file [${t.shape.join(",")}] vs model [${want.join(",")}]`);
        }
      }
    }
    const unexpected = [...tensors.keys()].filter((k) => !params.has(k) && !ignored.some((r) => r.test(k)));
    const problems: string[] = [];
    if (notFloat.length) {
      problems.push(`integer dtype for ${notFloat.length} float parameter(s), refusing to load them as floats: ${listNames(notFloat, 8)} ` +
        `(parameters must be F32, F16, BF16 or F64; nothing was loaded)`);
    }
    if (mismatched.length) problems.push(`shape mismatch for ${mismatched.length} tensor(s): ${listNames(mismatched, 8)}`);
    if (strict && missing.length) problems.push(`missing ${missing.length} key(s): ${listNames(missing)}`);
    if (strict && unexpected.length) problems.push(`unexpected ${unexpected.length} key(s): ${listNames(unexpected)}`);
    if (problems.length) throw new Error(`${this.constructor.name}.loadState: ${problems.join("; ")}`);

    let loaded = 0;
    for (const [name, p] of params) {
      const t = tensors.get(name);
      if (!t) continue;
      const value = tf.tidy(() => {
        const data = t.data instanceof Float32Array ? t.data : Float32Array.from(t.data); // (float data only, checked above)
        return toTfjsLayout(tf.tensor(data, t.shape, "float32"), p.layout);
      });
      if (p.variable) {
        p.variable.assign(value);
        value.dispose();
      } else {
        p.variable = tf.variable(value, p.owner._trainable);
        value.dispose();
      }
      loaded++;
    }
    return { missing, unexpected, loaded };
  }

  /** All parameters in PyTorch layout, by diffusers name (what savePretrained writes). */
  stateDict(): Map<string, HostTensor> {
    const out = new Map<string, HostTensor>();
    for (const [name, p] of this.namedParams()) {
      const v = this.v(p);
      const t = tf.tidy(() => toTorchLayout(v, p.layout));
      out.set(name, { dtype: "float32", shape: torchShape(p.shape, p.layout), data: Float32Array.from(t.dataSync() as Float32Array) });
      if (t !== v) t.dispose(); // a transposed copy (plain layouts return the variable itself)
    }
    return out;
  }

  /** Whether this module's parameters take gradients (tf.Variable.trainable); setting it applies to the subtree. */
  get trainable(): boolean {
    return this._trainable;
  }
  set trainable(on: boolean) {
    for (const m of this.modules()) {
      m._trainable = on;
      for (const p of m._params.values()) if (p.variable) p.variable.trainable = on;
    }
  }

  /** The trainable variables of this subtree (what a checkpointed block must pass explicitly). */
  trainableVariables(): tf.Variable[] {
    const out: tf.Variable[] = [];
    for (const [, p] of this.namedParams()) if (p.variable && p.variable.trainable) out.push(p.variable);
    return out;
  }

  /** Whether conv/linear weights of the whole subtree keep their backend-packed copies between calls (default on).
   *  Off is for heap budgets: every call repacks from a transient copy (engine/weight-cache.ts). */
  setKeepPackedWeights(on: boolean): this {
    for (const m of this.modules()) m.keepPackedWeights = on;
    return this;
  }

  /** A conv/linear weight as the kernel should see it: the variable itself, or a per-call copy (keepPackedWeights off). */
  protected kernelWeight(p: Param): tf.Tensor {
    const w = this.v(p);
    return this.keepPackedWeights ? w : transientWeight(w);
  }

  /** Turns per-block gradient checkpointing on/off for the whole subtree. */
  enableGradientCheckpointing(on = true): this {
    for (const m of this.modules()) m.gradientCheckpointing = on;
    return this;
  }

  /**
   * Runs `fn(...inputs)`; with gradient checkpointing on, its activations are recomputed in backward instead of
   * kept. `block` names the module whose trainable weights fn reads (they must reach checkpoint explicitly).
   */
  protected maybeCheckpoint(block: Module, fn: (...xs: tf.Tensor[]) => tf.Tensor, inputs: tf.Tensor[]): tf.Tensor {
    if (!this.gradientCheckpointing) return fn(...inputs);
    return checkpoint(fn, inputs, block.trainableVariables());
  }

  /** Frees every variable (the module can be reloaded with loadState afterwards). */
  dispose(): void {
    for (const [, p] of this.namedParams()) {
      p.variable?.dispose();
      p.variable = null;
    }
  }
}

/** The tfjs shape of a PyTorch-layout shape (re-exported for callers building host tensors). */
export { tfjsShape };
