/**
 * Common machinery of the optimizers that keep their state in host memory (offload and 8-bit): per parameter,
 * download the gradient (and free it at once), update on the host, upload only the new parameter values.
 * Device memory then holds no optimizer state at all, and at most one gradient plus one new parameter tensor extra.
 */
import { tf } from "../../engine/index.js";
import { checkShape } from "./adamw.js";
import { hostScalars, type HostScalars } from "./host-update.js";
import {
  ADAMW_DEFAULTS,
  adamScalars,
  toNamedMap,
  type AdamWHyper,
  type NamedVariables,
  type Optimizer,
  type StateBytes,
  type StateTensor,
  type StepOptions,
} from "./types.js";

export interface HostOptimizerOptions extends Partial<Omit<AdamWHyper, "lr">> {
  lr: number;
}

interface Master {
  data: Float32Array;
  /** The variable's buffer when we last wrote it: a different one means somebody else assigned the variable. */
  dataId: object;
}

export abstract class HostOptimizer implements Optimizer {
  abstract readonly kind: Optimizer["kind"];
  readonly hyper: AdamWHyper;
  protected readonly params: Map<string, tf.Variable>;
  protected steps = 0;
  private readonly masters = new Map<string, Master>();

  /**
   * @param keepMaster keep an fp32 master copy of each parameter on the host (ZeRO-Offload style: saves the
   *   download of the parameter every step, costs 4 bytes/param of host memory). A variable assigned from outside
   *   is noticed (its buffer changes) and re-read.
   */
  protected constructor(params: NamedVariables, opts: HostOptimizerOptions, private readonly keepMaster: boolean) {
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

  /** Updates parameter `p` (host copy, in place) from gradient `g` at 1-based step `t`. */
  protected abstract updateHost(name: string, p: Float32Array, g: Float32Array, c: HostScalars): void;
  abstract stateDict(): Map<string, StateTensor>;
  abstract loadStateDict(state: Map<string, StateTensor>): void;
  protected abstract hostStateBytes(): number;

  step(grads: Map<string, tf.Tensor>, opts: StepOptions = {}): void {
    const dispose = opts.disposeGrads ?? true;
    this.steps++;
    const c = hostScalars(this.hyper, adamScalars(this.hyper, this.steps));
    for (const [name, variable] of this.params) {
      const g = grads.get(name);
      let gHost = opts.hostGrads?.get(name);
      if (g && gHost) throw new Error(`parameter '${name}' has a gradient both on the device and on the host`);
      if (g) {
        checkShape(name, variable, g);
        gHost = g.dataSync() as Float32Array; // a host copy on every backend
        if (dispose) {
          g.dispose();
          grads.delete(name);
        }
      } else if (!gHost) continue;
      else if (gHost.length !== variable.size) throw new Error(`host gradient of '${name}' has ${gHost.length} values, the parameter ${variable.size}`);
      const p = this.hostParam(name, variable);
      this.updateHost(name, p, gHost, c);
      // Upload a copy when p is our master: some backends (cpu) adopt the array given to tf.tensor without copying,
      // and the master must never alias a device buffer.
      const upload = tf.tensor(this.keepMaster ? p.slice() : p, variable.shape, "float32");
      variable.assign(upload);
      upload.dispose();
      if (this.keepMaster) this.masters.set(name, { data: p, dataId: variable.dataId });
    }
  }

  private hostParam(name: string, variable: tf.Variable): Float32Array {
    const master = this.masters.get(name);
    if (master && master.dataId === variable.dataId) return master.data;
    return Float32Array.from(variable.dataSync() as Float32Array);
  }

  stateBytes(): StateBytes {
    let master = 0;
    for (const m of this.masters.values()) master += m.data.byteLength;
    return { device: 0, host: this.hostStateBytes() + master };
  }

  dispose(): void {
    this.masters.clear();
  }
}
