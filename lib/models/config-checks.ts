/**
 * Type and magnitude checks of a model config before anything is built, each failure one line naming the model, the
 * field, what it must be and what it was. A config is input (a hub download, a hand edit): `layers_per_block: 1e9`
 * would otherwise run the heap out minutes later, `scaling_factor: "big"` fail deep inside a kernel.
 */

/** Bounds well above any published Stable Diffusion family config (SD1.5: 2 layers, 1280 channels, 4 blocks; SDXL:
 *  10 transformer layers; OpenCLIP bigG: 32 layers, 1280 wide) and far below what would exhaust memory while the
 *  model is being built. */
export const CONFIG_LIMITS = { blocks: 16, layers: 100, channels: 65_536, heads: 4_096, parameters: 2e10 };

export class ConfigCheck {
  constructor(private readonly cfg: Record<string, unknown>, private readonly cls: string) {}

  fail(field: string, want: string): never {
    throw new Error(`${this.cls} config: ${field} must be ${want}, got ${JSON.stringify(this.cfg[field])}`);
  }

  private absent(field: string): boolean {
    return this.cfg[field] === undefined || this.cfg[field] === null;
  }

  static isInt(v: unknown, lo: number, hi: number): v is number {
    return typeof v === "number" && Number.isInteger(v) && v >= lo && v <= hi;
  }

  int(field: string, lo: number, hi: number, required = true): void {
    if (!required && this.absent(field)) return;
    if (!ConfigCheck.isInt(this.cfg[field], lo, hi)) this.fail(field, `an integer from ${lo} to ${hi}`);
  }

  /** An integer, or a list of them (one per block). */
  intOrList(field: string, lo: number, hi: number, required = true): void {
    if (!required && this.absent(field)) return;
    const v = this.cfg[field];
    const ok = Array.isArray(v) ? v.length > 0 && v.every((x) => ConfigCheck.isInt(x, lo, hi)) : ConfigCheck.isInt(v, lo, hi);
    if (!ok) this.fail(field, `an integer from ${lo} to ${hi}, or a list of them`);
  }

  intList(field: string, lo: number, hi: number, maxLength = CONFIG_LIMITS.blocks): void {
    const v = this.cfg[field];
    if (!Array.isArray(v) || v.length < 1 || v.length > maxLength || !v.every((x) => ConfigCheck.isInt(x, lo, hi))) {
      this.fail(field, `a list of 1 to ${maxLength} integers from ${lo} to ${hi}`);
    }
  }

  names(field: string, maxLength = CONFIG_LIMITS.blocks): void {
    const v = this.cfg[field];
    if (!Array.isArray(v) || v.length < 1 || v.length > maxLength || !v.every((t) => typeof t === "string")) {
      this.fail(field, `a list of 1 to ${maxLength} block type names`);
    }
  }

  /** A finite number in (lo, hi]: scales, epsilons. */
  positive(field: string, hi = 1e6, required = true): void {
    if (!required && this.absent(field)) return;
    const v = this.cfg[field];
    if (typeof v !== "number" || !Number.isFinite(v) || v <= 0 || v > hi) this.fail(field, `a number above 0 and at most ${hi}`);
  }

  finite(field: string, required = true): void {
    if (!required && this.absent(field)) return;
    const v = this.cfg[field];
    if (typeof v !== "number" || !Number.isFinite(v)) this.fail(field, "a finite number");
  }

  bool(field: string, required = true): void {
    if (!required && this.absent(field)) return;
    if (typeof this.cfg[field] !== "boolean") this.fail(field, "true or false");
  }

  /** GroupNorm's group count (`field`, `def` when absent) must divide every channel count of `channelsField`. */
  groupsDivide(field: string, channelsField: string, def: number): void {
    const groups = this.absent(field) ? def : (this.cfg[field] as number);
    const channels = this.cfg[channelsField] as number[];
    if (channels.some((c) => c % groups !== 0)) this.fail(field, `a divisor of every ${channelsField} entry (${channels.join(", ")}) for GroupNorm`);
  }

  /** Per-field bounds still multiply: refuse a model that would hold more parameters than this library builds. */
  parameters(count: number, what: string): void {
    if (count > CONFIG_LIMITS.parameters) {
      throw new Error(`${this.cls} config describes about ${count.toExponential(1)} parameters (${what}), ` +
        `more than the ${CONFIG_LIMITS.parameters.toExponential(0)} this library builds`);
    }
  }
}
