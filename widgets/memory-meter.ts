/**
 * Memory meter: live tensor bytes, the wasm heap against its 4 GiB ceiling, GPU memory where the engine reports it,
 * process RSS, and the planner's predicted peak beside the measured one. It renders numbers it is given (a
 * lib/engine `memoryInfo()` snapshot fits the state as is); it never reads the engine itself.
 */
import type { MimeBundle } from "../lib/cells/display.js";
import { Widget } from "./widget.js";
import type { WidgetOptions } from "./widget.js";
import { escapeHtml, formatBytes } from "./format.js";

export interface MemoryState {
  backend: string | null;
  liveTensors: number | null;
  liveBytes: number | null;
  /** wasm heap size (it only grows) and its limit; null off wasm. */
  heapBytes: number | null;
  heapLimitBytes: number | null;
  /** Device memory in use and its total, where the engine has them; null is shown as n/a. */
  gpuBytes: number | null;
  gpuLimitBytes: number | null;
  rssBytes: number | null;
  /** The planner's predicted peak for this run. */
  predictedPeakBytes: number | null;
  /** The measured peak; when null, the highest liveBytes this meter has seen. */
  measuredPeakBytes: number | null;
}

const EMPTY: MemoryState = {
  backend: null, liveTensors: null, liveBytes: null, heapBytes: null, heapLimitBytes: null, gpuBytes: null,
  gpuLimitBytes: null, rssBytes: null, predictedPeakBytes: null, measuredPeakBytes: null,
};

/** Anything with some MemoryState fields (extra fields, like a memoryInfo() snapshot's, are ignored). */
export type MemoryInput = { [K in keyof MemoryState]?: MemoryState[K] | undefined };

function pick(input: MemoryInput): Partial<MemoryState> {
  const out: Partial<MemoryState> = {};
  for (const k of Object.keys(EMPTY) as (keyof MemoryState)[]) {
    const v = input[k];
    if (v !== undefined) (out as Record<string, unknown>)[k] = v;
  }
  return out;
}

function ratioColor(r: number): string {
  return r >= 0.9 ? "#e53935" : r >= 0.7 ? "#fb8c00" : "#43a047";
}

export class MemoryMeter extends Widget<MemoryState> {
  private seenPeak = 0;

  constructor(init: MemoryInput = {}, opts: WidgetOptions = {}) {
    super({ ...EMPTY, ...pick(init) }, opts, 2);
    this.textUpdates = "flush";
    this.track();
  }

  override update(patch: MemoryInput, opts: { flush?: boolean } = {}): this {
    this.state = { ...this.state, ...pick(patch) };
    this.track();
    this.changed(opts.flush);
    return this;
  }

  private track(): void {
    if (this.state.liveBytes !== null) this.seenPeak = Math.max(this.seenPeak, this.state.liveBytes);
  }

  /** The measured peak shown: the one given, else the highest live bytes seen. */
  get measuredPeak(): number | null {
    return this.state.measuredPeakBytes ?? (this.seenPeak > 0 ? this.seenPeak : null);
  }

  /** The memory live tensors compete for: the GPU's, else the wasm heap's limit. */
  get budget(): number | null {
    return this.state.gpuLimitBytes ?? this.state.heapLimitBytes;
  }

  private rows(): { label: string; used: number | null; of: number | null; note: string }[] {
    const s = this.state;
    const tensors = s.liveTensors === null ? "" : `${s.liveTensors} tensors`;
    return [
      { label: "live tensors", used: s.liveBytes, of: this.budget, note: tensors },
      { label: "wasm heap", used: s.heapBytes, of: s.heapLimitBytes, note: "" },
      { label: "GPU", used: s.gpuBytes, of: s.gpuLimitBytes, note: "" },
      { label: "process RSS", used: s.rssBytes, of: null, note: "" },
      { label: "peak (measured)", used: this.measuredPeak, of: this.budget, note: "" },
      { label: "peak (predicted)", used: s.predictedPeakBytes, of: this.budget, note: "planner" },
    ];
  }

  text(): string {
    const s = this.state;
    const parts = this.rows().map(({ label, used, of, note }) => {
      let v = formatBytes(used);
      if (used !== null && of) v += ` / ${formatBytes(of)} (${Math.round((100 * used) / of)}%)`;
      if (note && used !== null) v += ` (${note})`;
      return `${label} ${v}`;
    });
    return `memory${s.backend ? ` [${s.backend}]` : ""}: ${parts.join(" | ")}`;
  }

  html(): string {
    const s = this.state;
    // Peaks share one scale so predicted and measured can be compared by eye.
    const peakScale = Math.max(this.budget ?? 0, this.measuredPeak ?? 0, s.predictedPeakBytes ?? 0);
    const rows = this.rows().map(({ label, used, of, note }) => {
      const scale = label.startsWith("peak") ? peakScale : of;
      let bar = "";
      if (used !== null && scale) {
        const r = Math.min(1, used / scale);
        const color = label === "peak (predicted)" ? "#8e24aa" : ratioColor(of ? used / of : 0);
        bar =
          `<div style="width:220px;height:10px;background-color:#e0e0e0;border-radius:2px;overflow:hidden">` +
          `<div style="width:${(r * 100).toFixed(1)}%;height:10px;background-color:${color}"></div></div>`;
      }
      let value = formatBytes(used);
      if (used !== null && of) value += ` / ${formatBytes(of)} (${Math.round((100 * used) / of)}%)`;
      if (note && used !== null) value += ` · ${note}`;
      return (
        `<tr><td style="padding:1px 8px 1px 0;text-align:left">${escapeHtml(label)}</td>` +
        `<td style="padding:1px 8px 1px 0">${bar}</td><td style="text-align:left">${escapeHtml(value)}</td></tr>`
      );
    });
    const title = `memory${s.backend ? ` (${s.backend})` : ""}`;
    return (
      `<div class="cnts-memory" style="font-family:monospace;font-size:12px;margin:2px 0">` +
      `<div style="font-weight:bold">${escapeHtml(title)}</div><table style="border-collapse:collapse">${rows.join("")}</table></div>`
    );
  }

  bundle(): MimeBundle {
    return { "text/plain": this.text(), "text/html": this.html() };
  }
}
