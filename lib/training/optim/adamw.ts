/**
 * AdamW exactly as torch.optim.AdamW (the default, non-fused path), on the engine's device, plus
 * torch.nn.utils.clip_grad_norm_.
 *
 * tfjs has neither (its Adam has no weight decay and eps 1e-7), so both are written here. The per-parameter update is
 * the same sequence of float32 operations torch performs:
 *   p ← p·(1 − lr·wd)                         decoupled weight decay, before the Adam step
 *   m ← m + (g − m)·(1 − β1)                  torch's lerp_(g, 1 − β1)
 *   v ← v·β2 + g²·(1 − β2)
 *   p ← p + (m / (√v / √(1 − β2ᵗ) + ε)) · (−lr / (1 − β1ᵗ))
 * The host variants (offload, 8-bit) replay the very same float32 sequence, which is what lets a test demand equal
 * results from them, and so does the native engine's fused kernel (lib/engine/fused.ts), which updates a group of
 * tensors per kernel call instead of issuing 13 tiny ops per tensor.
 */

/** Elements per fused-kernel call: its outputs are new tensors, so a group costs 3× its size while it runs. */
const FUSED_GROUP_ELEMENTS = 1 << 22;
import { tf, fusedAdamW, fusedNorms, hasFusedAdamW, type AdamWScalars } from "../../engine/index.js";
import { hostScalars } from "./host-update.js";
import {
  ADAMW_DEFAULTS,
  adamScalars,
  expectFloat,
  readStep,
  stepTensor,
  toNamedMap,
  type AdamWHyper,
  type NamedVariables,
  type Optimizer,
  type StateBytes,
  type StateTensor,
  type StepOptions,
} from "./types.js";

export interface AdamWOptions extends Partial<Omit<AdamWHyper, "lr">> {
  lr: number;
}

interface Moments {
  m: tf.Variable;
  v: tf.Variable;
}

export class AdamW implements Optimizer {
  readonly kind = "adamw" as const;
  readonly hyper: AdamWHyper;
  private readonly params: Map<string, tf.Variable>;
  private readonly moments = new Map<string, Moments>();
  private steps = 0;

  constructor(params: NamedVariables, opts: AdamWOptions) {
    this.params = toNamedMap(params);
    this.hyper = { ...ADAMW_DEFAULTS, ...opts };
  }

  get lr(): number {
    return this.hyper.lr;
  }
  set lr(value: number) {
    this.hyper.lr = value;
  }
  get stepCount(): number {
    return this.steps;
  }

  step(grads: Map<string, tf.Tensor>, opts: StepOptions = {}): void {
    if (opts.hostGrads?.size) throw new Error("AdamW updates on the device: gradients kept on the host need a host optimizer (use_8bit_adam or offload_optimizer_state)");
    const dispose = opts.disposeGrads ?? true;
    this.steps++;
    const h = this.hyper;
    // float32 values, as tf.scalar or the fused kernel's attributes hold them
    const scalars: AdamWScalars = hostScalars(h, adamScalars(h, this.steps));
    const todo: [string, tf.Variable, tf.Tensor][] = [];
    for (const [name, p] of this.params) {
      const g = grads.get(name);
      if (!g) continue;
      checkShape(name, p, g);
      todo.push([name, p, g]);
    }
    const done = (name: string, g: tf.Tensor) => {
      if (!dispose) return;
      g.dispose();
      grads.delete(name);
    };
    if (hasFusedAdamW()) {
      for (const group of groupsOf(todo, FUSED_GROUP_ELEMENTS)) {
        const sts = group.map(([name, p]) => this.momentsOf(name, p));
        const out = fusedAdamW(group.map(([, p]) => p), group.map(([, , g]) => g), sts.map((st) => st.m), sts.map((st) => st.v), scalars)!;
        group.forEach(([name, p, g], i) => {
          p.assign(out.p[i]!);
          sts[i]!.m.assign(out.m[i]!);
          sts[i]!.v.assign(out.v[i]!);
          done(name, g);
        });
        tf.dispose([...out.p, ...out.m, ...out.v]);
      }
      return;
    }
    // float32 scalars, made once per step
    const c = Object.fromEntries(Object.entries(scalars).map(([k, x]) => [k, tf.scalar(x)])) as Scalars;
    try {
      for (const [name, p, g] of todo) {
        updateOnDevice(p, g, this.momentsOf(name, p), c);
        done(name, g);
      }
    } finally {
      for (const t of Object.values(c)) t.dispose();
    }
  }

  private momentsOf(name: string, p: tf.Variable): Moments {
    let st = this.moments.get(name);
    if (!st) {
      // torch creates the state lazily on the first step, zero-initialised.
      st = { m: zerosVariable(p), v: zerosVariable(p) };
      this.moments.set(name, st);
    }
    return st;
  }

  stateDict(): Map<string, StateTensor> {
    const out = new Map<string, StateTensor>([["step", stepTensor(this.steps)]]);
    for (const [name, st] of this.moments) {
      out.set(`${name}.exp_avg`, hostCopy(st.m));
      out.set(`${name}.exp_avg_sq`, hostCopy(st.v));
    }
    return out;
  }

  loadStateDict(state: Map<string, StateTensor>): void {
    if (state.has("int8_blocksize")) throw new Error("optimizer state was written by AdamW8bit; cannot load it into AdamW");
    const step = readStep(state);
    for (const [name, p] of this.params) {
      if (!state.has(`${name}.exp_avg`)) continue;
      const n = p.size;
      const m = expectFloat(state, `${name}.exp_avg`, n);
      const v = expectFloat(state, `${name}.exp_avg_sq`, n);
      const st = this.momentsOf(name, p);
      tf.tidy(() => {
        st.m.assign(tf.tensor(m, p.shape, "float32"));
        st.v.assign(tf.tensor(v, p.shape, "float32"));
      });
    }
    this.steps = step;
  }

  stateBytes(): StateBytes {
    let device = 0;
    for (const st of this.moments.values()) device += (st.m.size + st.v.size) * 4;
    return { device, host: 0 };
  }

  dispose(): void {
    for (const st of this.moments.values()) {
      st.m.dispose();
      st.v.dispose();
    }
    this.moments.clear();
  }
}

type Scalars = Record<keyof AdamWScalars, tf.Scalar>;

/** Consecutive runs of entries whose tensors add up to at most `limit` elements (a larger tensor goes alone). */
function groupsOf<T extends [string, tf.Tensor, tf.Tensor]>(entries: T[], limit: number): T[][] {
  const groups: T[][] = [];
  let size = limit;
  for (const e of entries) {
    if (size + e[1].size > limit) {
      groups.push([]);
      size = 0;
    }
    groups[groups.length - 1]!.push(e);
    size += e[1].size;
  }
  return groups;
}

/**
 * One parameter's update. Intermediates are disposed as soon as they are used (not kept to the end of a tidy), so the
 * update needs at most about three parameter-sized temporaries at a time: this is the optimizer's share of the peak.
 */
function updateOnDevice(p: tf.Variable, g: tf.Tensor, st: Moments, c: Scalars): void {
  const use = <T extends tf.Tensor>(t: T, ...done: tf.Tensor[]): T => {
    for (const d of done) d.dispose();
    return t;
  };
  // m ← m + (g − m)·(1 − β1)
  let t = tf.sub(g, st.m);
  t = use(tf.mul(t, c.oneMinusBeta1), t);
  t = use(tf.add(st.m, t), t);
  st.m.assign(t);
  t.dispose();
  // v ← v·β2 + g²·(1 − β2)
  let a = tf.square(g);
  a = use(tf.mul(a, c.oneMinusBeta2), a);
  let b = tf.mul(st.v, c.beta2);
  b = use(tf.add(b, a), a, b);
  st.v.assign(b);
  b.dispose();
  // u ← (m / (√v / √(1 − β2ᵗ) + ε)) · (−lr / (1 − β1ᵗ))
  let u = tf.sqrt(st.v);
  u = use(tf.div(u, c.bc2Sqrt), u);
  u = use(tf.add(u, c.eps), u);
  u = use(tf.div(st.m, u), u);
  u = use(tf.mul(u, c.negStepSize), u);
  // p ← p·(1 − lr·wd) + u   (the decay multiplies the old p, as torch applies it before the Adam step)
  let q = tf.mul(p, c.decay);
  q = use(tf.add(q, u), q, u);
  p.assign(q);
  q.dispose();
}

export function checkShape(name: string, p: tf.Tensor, g: tf.Tensor): void {
  if (p.size !== g.size || p.shape.length !== g.shape.length || p.shape.some((d, i) => d !== g.shape[i])) {
    throw new Error(`gradient for '${name}' has shape [${g.shape}], parameter has [${p.shape}]`);
  }
}

function zerosVariable(p: tf.Tensor): tf.Variable {
  const z = tf.zeros(p.shape, "float32");
  const v = tf.variable(z, false);
  z.dispose(); // the variable holds its own reference to the buffer
  return v;
}

function hostCopy(t: tf.Tensor): StateTensor {
  return { dtype: "float32", shape: [...t.shape], data: Float32Array.from(t.dataSync() as Float32Array) };
}

/**
 * torch.nn.utils.clip_grad_norm_(params, maxNorm): the total 2-norm over all gradients (the 2-norm of the per-tensor
 * 2-norms), and when it exceeds maxNorm every gradient is scaled by maxNorm / (norm + 1e-6). Like torch it works in
 * place: the map's tensors are replaced by the scaled ones (the originals disposed). Returns the total norm before
 * clipping (what torch returns). A non-finite norm leaves the gradients as they are (the loop stops on a NaN loss).
 */
export function clipGradNorm(grads: Map<string, tf.Tensor>, maxNorm: number, hostGrads?: Map<string, Float32Array>): number {
  if (grads.size === 0 && !hostGrads?.size) return 0;
  let deviceNorm = 0;
  if (grads.size) {
    // one tidy per gradient: its square is freed before the next one is made (a single tidy around all of them kept
    // a squared copy of every gradient alive at once — the step's memory peak on SD1.5, 1.45 GB above the backward's)
    // (the native engine's fused kernel computes all the per-tensor norms in one call, summing in double)
    const fused = fusedNorms([...grads.values()]);
    const norms = fused ? [fused] : [...grads.values()].map((g) => tf.tidy(() => tf.sqrt(tf.sum(tf.square(g)))));
    const total = tf.tidy(() => tf.sqrt(tf.sum(tf.square(fused ?? tf.stack(norms)))));
    tf.dispose(norms);
    deviceNorm = total.dataSync()[0]!;
    total.dispose();
  }
  let totalNorm = deviceNorm;
  if (hostGrads?.size) {
    let sumSq = deviceNorm * deviceNorm;
    for (const g of hostGrads.values()) for (let i = 0; i < g.length; i++) sumSq += g[i]! * g[i]!;
    totalNorm = Math.fround(Math.sqrt(sumSq));
  }
  // torch: clip_coef = max_norm / (total_norm + 1e-6), clamped to 1; all float32.
  const coef = Math.fround(Math.fround(maxNorm) / Math.fround(totalNorm + 1e-6));
  if (Number.isFinite(coef) && coef < 1) {
    for (const [name, g] of grads) {
      grads.set(name, tf.tidy(() => tf.mul(g, tf.scalar(coef))));
      g.dispose();
    }
    for (const g of hostGrads?.values() ?? []) for (let i = 0; i < g.length; i++) g[i] = Math.fround(g[i]! * coef);
  }
  return totalNorm;
}
