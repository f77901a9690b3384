/** A tqdm-like progress bar: step/total, loss, learning rate, it/s and ETA, as text/plain and HTML. */
import type { MimeBundle } from "../lib/cells/display.js";
import { Widget } from "./widget.js";
import type { WidgetOptions } from "./widget.js";
import { escapeHtml, formatDuration, formatNumber } from "./format.js";

export type ProgressStatus = "running" | "done" | "stopped" | "error";

export interface ProgressState {
  step: number;
  total: number;
  description: string;
  loss: number | null;
  lr: number | null;
  /** Iterations per second; when null it is measured from the updates' timing. */
  itPerSec: number | null;
  /** Extra key=value pairs shown after loss and lr. */
  postfix: Record<string, string | number>;
  status: ProgressStatus;
}

const BLOCKS = " ▏▎▍▌▋▊▉█";
const COLORS: Record<ProgressStatus, string> = { running: "#1e88e5", done: "#43a047", stopped: "#fb8c00", error: "#e53935" };

export class ProgressBar extends Widget<ProgressState> {
  /** Clock time (ms) at creation: the origin of elapsed time. */
  private origin: { t: number; step: number } | null = null;
  /** The previous update that moved the step, for the measured rate. */
  private last: { t: number; step: number } | null = null;
  private measuredRate: number | null = null;
  private endedAt: number | null = null;

  constructor(init: Partial<ProgressState> & { total?: number } = {}, opts: WidgetOptions = {}) {
    super({ step: 0, total: 0, description: "", loss: null, lr: null, itPerSec: null, postfix: {}, status: "running", ...init }, opts, 4);
    this.origin = { t: this.clock.now(), step: this.state.step };
    this.last = this.origin;
  }

  /** Moves the bar; reaching `total` (or a status other than running) sends the final state at once. */
  override update(patch: Partial<ProgressState>, opts: { flush?: boolean } = {}): this {
    const now = this.clock.now();
    if (patch.step !== undefined && this.last && patch.step > this.last.step) {
      // tqdm's estimate: an exponential moving average of the rate between updates, so a slow first step
      // (compilation, warm-up) stops dominating the ETA after a few steps.
      const dt = (now - this.last.t) / 1000;
      if (dt > 0) {
        const inst = (patch.step - this.last.step) / dt;
        this.measuredRate = this.measuredRate === null ? inst : 0.3 * inst + 0.7 * this.measuredRate;
        this.last = { t: now, step: patch.step };
      }
    }
    const next = { ...this.state, ...patch };
    const final = (next.total > 0 && next.step >= next.total) || next.status !== "running";
    if (final && this.endedAt === null) this.endedAt = now;
    if (next.total > 0 && next.step >= next.total && next.status === "running") next.status = "done";
    this.state = next;
    this.changed(opts.flush || final);
    return this;
  }

  /** Iterations per second: the one given, else measured (a moving average over updates). */
  get rate(): number | null {
    return this.state.itPerSec ?? this.measuredRate;
  }

  /** Seconds since the bar was created (frozen once it finished). */
  get elapsed(): number {
    return ((this.endedAt ?? this.clock.now()) - (this.origin?.t ?? 0)) / 1000;
  }

  /** Seconds left at the current rate, or null when unknown. */
  get eta(): number | null {
    const r = this.rate;
    const { step, total } = this.state;
    if (total <= 0) return null;
    if (step >= total) return 0;
    return r && r > 0 ? (total - step) / r : null;
  }

  private fraction(): number {
    const { step, total } = this.state;
    return total > 0 ? Math.min(1, Math.max(0, step / total)) : 0;
  }

  private postfixText(): string[] {
    const s = this.state;
    const parts: string[] = [];
    if (s.loss !== null) parts.push(`loss=${formatNumber(s.loss)}`);
    if (s.lr !== null) parts.push(`lr=${formatNumber(s.lr, 3)}`);
    for (const [k, v] of Object.entries(s.postfix)) parts.push(`${k}=${typeof v === "number" ? formatNumber(v) : v}`);
    return parts;
  }

  /** tqdm's line: `train:  45%|████▌     | 45/100 [00:12<00:15, 3.61it/s, loss=0.123]`. */
  text(width = 20): string {
    const s = this.state;
    const f = this.fraction();
    const cells = f * width;
    const full = Math.floor(cells);
    const part = Math.floor((cells - full) * 8);
    const bar = "█".repeat(full) + (full < width ? BLOCKS[part]! + " ".repeat(width - full - 1) : "");
    const r = this.rate;
    const rate = r === null ? "?it/s" : r >= 1 || r === 0 ? `${r.toFixed(2)}it/s` : `${(1 / r).toFixed(2)}s/it`;
    const desc = s.description ? `${s.description}: ` : "";
    const status = s.status === "running" || s.status === "done" ? "" : ` (${s.status})`;
    const total = s.total > 0 ? String(s.total) : "?";
    const info = [`${formatDuration(this.elapsed)}<${formatDuration(this.eta)}`, rate, ...this.postfixText()].join(", ");
    return `${desc}${String(Math.round(f * 100)).padStart(3)}%|${bar}| ${s.step}/${total} [${info}]${status}`;
  }

  html(): string {
    const s = this.state;
    const pct = (this.fraction() * 100).toFixed(1);
    const r = this.rate;
    const info = [
      `${s.step}/${s.total > 0 ? s.total : "?"} [${formatDuration(this.elapsed)}<${formatDuration(this.eta)}, ${r === null ? "?" : formatNumber(r, 3)} it/s]`,
      ...this.postfixText(),
    ];
    if (s.status !== "running") info.push(s.status);
    // Only inline styles JupyterLab's sanitizer keeps (no flex/gap), so a reopened, untrusted notebook shows
    // the same bar.
    const cell = "display:inline-block;vertical-align:middle;margin-right:8px";
    return (
      `<div class="cnts-progress" style="font-family:monospace;font-size:13px;margin:2px 0">` +
      (s.description ? `<span style="${cell}">${escapeHtml(s.description)}</span>` : "") +
      `<div style="${cell};width:240px;height:14px;background-color:#e0e0e0;border-radius:3px;overflow:hidden">` +
      `<div style="width:${pct}%;height:14px;background-color:${COLORS[s.status]}"></div></div>` +
      `<span style="${cell}">${escapeHtml(info.join(" · "))}</span></div>`
    );
  }

  bundle(): MimeBundle {
    return { "text/plain": this.text(), "text/html": this.html() };
  }
}
