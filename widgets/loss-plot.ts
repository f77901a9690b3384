/**
 * Loss plot: one or more series (loss, learning rate, fidelity, ...) over steps, in stacked panels sharing the x
 * axis. The bundle carries plotly's MIME type (interactive where a plotly renderer exists: VS Code, JupyterLab with
 * the plotly extension) and, in the same bundle, a static SVG drawn here and a text summary for everything else.
 */
import type { MimeBundle } from "../lib/cells/display.js";
import { Widget } from "./widget.js";
import type { WidgetOptions } from "./widget.js";
import { formatNumber } from "./format.js";
import { renderLineChart } from "./svg-chart.js";
import type { ChartLine, ChartPanel } from "./svg-chart.js";

export const PLOTLY_MIME = "application/vnd.plotly.v1+json";

export interface SeriesOptions {
  /** Series with the same panel share a y axis; default: the series' own panel. */
  panel?: string;
  color?: string;
  /** Exponential smoothing weight in [0, 1) drawn over the raw line (TensorBoard's slider); 0 = none. */
  smoothing?: number;
  markers?: boolean;
}

export interface Series {
  name: string;
  x: number[];
  y: number[];
  panel: string;
  color: string;
  smoothing: number;
  markers: boolean;
}

export interface LossPlotState {
  series: Series[];
  title: string;
  xLabel: string;
  /** Points per line sent to the frontend; longer series are averaged into this many buckets. */
  maxPoints: number;
}

const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"];

/** Defaults for the series the trainer sends. */
const KNOWN: Record<string, SeriesOptions> = {
  loss: { panel: "loss", color: "#1f77b4", smoothing: 0.6 },
  lr: { panel: "learning rate", color: "#ff7f0e" },
  fidelity: { panel: "fidelity", color: "#2ca02c", markers: true },
};

/** Debiased exponential moving average (as TensorBoard draws it); non-finite values are skipped. */
export function smooth(y: number[], weight: number): number[] {
  let acc = 0;
  let n = 0;
  return y.map((v) => {
    if (!Number.isFinite(v)) return v;
    acc = acc * weight + (1 - weight) * v;
    n++;
    return acc / (1 - weight ** n);
  });
}

/** Averages consecutive points into at most `max` buckets; the last point is kept exactly. */
export function downsample(x: number[], y: number[], max: number): { x: number[]; y: number[] } {
  if (x.length <= max || max < 2) return { x, y };
  const ox: number[] = [];
  const oy: number[] = [];
  const per = (x.length - 1) / (max - 1);
  for (let b = 0; b < max - 1; b++) {
    const s = Math.floor(b * per);
    const e = Math.max(s + 1, Math.floor((b + 1) * per));
    let sx = 0;
    let sy = 0;
    let c = 0;
    for (let i = s; i < e; i++) if (Number.isFinite(y[i]!)) {
      sx += x[i]!;
      sy += y[i]!;
      c++;
    }
    ox.push(c ? sx / c : x[s]!);
    oy.push(c ? sy / c : NaN);
  }
  ox.push(x[x.length - 1]!);
  oy.push(y[y.length - 1]!);
  return { x: ox, y: oy };
}

const jsonNum = (v: number) => (Number.isFinite(v) ? v : null);

export class LossPlot extends Widget<LossPlotState> {
  constructor(init: Partial<Omit<LossPlotState, "series">> & { series?: (SeriesOptions & { name: string })[] } = {}, opts: WidgetOptions = {}) {
    const { series, ...rest } = init;
    super({ series: [], title: "", xLabel: "step", maxPoints: 500, ...rest }, opts, 2);
    this.textUpdates = "flush";
    for (const s of series ?? []) this.defineSeries(s.name, s);
  }

  /** Creates or reconfigures a series. */
  defineSeries(name: string, o: SeriesOptions = {}): Series {
    let s = this.state.series.find((t) => t.name === name);
    if (!s) {
      const k = KNOWN[name] ?? {};
      s = {
        name, x: [], y: [], panel: k.panel ?? name, color: k.color ?? PALETTE[this.state.series.length % PALETTE.length]!,
        smoothing: k.smoothing ?? 0, markers: k.markers ?? false,
      };
      this.state.series.push(s);
    }
    if (o.panel !== undefined) s.panel = o.panel;
    if (o.color !== undefined) s.color = o.color;
    if (o.smoothing !== undefined) s.smoothing = o.smoothing;
    if (o.markers !== undefined) s.markers = o.markers;
    return s;
  }

  /** Appends one point per named value at `x` (null/undefined values are skipped): `add(step, { loss, lr })`. */
  add(x: number, values: Record<string, number | null | undefined>, opts: { flush?: boolean } = {}): this {
    for (const [name, v] of Object.entries(values)) {
      if (v === null || v === undefined) continue;
      const s = this.defineSeries(name);
      s.x.push(x);
      s.y.push(v);
    }
    this.changed(opts.flush);
    return this;
  }

  /** Panels in order of first appearance, each with its lines (a smoothed series adds its raw line, faint). */
  private panels(): ChartPanel[] {
    const byPanel = new Map<string, ChartLine[]>();
    for (const s of this.state.series) {
      if (!s.x.length) continue;
      const lines = byPanel.get(s.panel) ?? [];
      byPanel.set(s.panel, lines);
      if (s.smoothing > 0) {
        const raw = downsample(s.x, s.y, this.state.maxPoints);
        lines.push({ name: `${s.name} (raw)`, ...raw, color: s.color, opacity: 0.3, hideLegend: true });
        const sm = downsample(s.x, smooth(s.y, s.smoothing), this.state.maxPoints);
        lines.push({ name: s.name, ...sm, color: s.color, markers: s.markers });
      } else {
        lines.push({ name: s.name, ...downsample(s.x, s.y, this.state.maxPoints), color: s.color, markers: s.markers });
      }
    }
    return [...byPanel].map(([title, lines]) => ({ title, lines }));
  }

  /** Plotly figure JSON: {data, layout}, panels as stacked y axes over one shared x axis. */
  plotly(): { data: Record<string, unknown>[]; layout: Record<string, unknown> } {
    const panels = this.panels();
    const n = Math.max(1, panels.length);
    const gap = 0.06;
    const h = (1 - gap * (n - 1)) / n;
    const data: Record<string, unknown>[] = [];
    const layout: Record<string, unknown> = {
      height: 120 + 200 * n,
      margin: { l: 70, r: 20, t: this.state.title ? 40 : 20, b: 50 },
      showlegend: true,
      hovermode: "x unified",
    };
    if (this.state.title) layout.title = { text: this.state.title };
    panels.forEach((p, i) => {
      const yid = i === 0 ? "y" : `y${i + 1}`;
      const top = 1 - i * (h + gap);
      layout[i === 0 ? "yaxis" : `yaxis${i + 1}`] = { title: { text: p.title }, domain: [Math.max(0, top - h), top], anchor: "x" };
      for (const l of p.lines) {
        const trace: Record<string, unknown> = {
          type: "scatter", mode: l.markers ? "lines+markers" : "lines", name: l.name,
          x: l.x.map(jsonNum), y: l.y.map(jsonNum), xaxis: "x", yaxis: yid, line: { color: l.color },
        };
        if (l.opacity !== undefined) trace.opacity = l.opacity;
        if (l.hideLegend) trace.showlegend = false;
        data.push(trace);
      }
    });
    // whole-number x (steps): over a short range plotly's automatic ticks would be 0.5 apart
    const xs = panels.flatMap((p) => p.lines.flatMap((l) => l.x));
    const span = xs.length ? Math.max(...xs) - Math.min(...xs) : 0;
    const whole = this.integerX() ? (span < 10 ? { dtick: 1 } : { tickformat: "d" }) : {};
    layout.xaxis = { title: { text: this.state.xLabel }, anchor: n === 1 ? "y" : `y${n}`, ...whole };
    return { data, layout };
  }

  svg(): string {
    return renderLineChart(this.panels(), { title: this.state.title, xLabel: this.state.xLabel, integerX: this.integerX() });
  }

  /** Every x is a whole number (training steps). */
  private integerX(): boolean {
    return this.state.series.every((s) => s.x.every((x) => Number.isInteger(x)));
  }

  /** One line per series: points, last and best value. */
  text(): string {
    const lines = this.state.series.filter((s) => s.x.length).map((s) => {
      const finite = s.y.filter(Number.isFinite);
      const last = s.y[s.y.length - 1]!;
      const min = finite.length ? finite.reduce((a, b) => Math.min(a, b)) : NaN;
      const max = finite.length ? finite.reduce((a, b) => Math.max(a, b)) : NaN;
      return `  ${s.name}: ${s.x.length} points, last ${formatNumber(last)} at ${s.x[s.x.length - 1]}, min ${formatNumber(min)}, max ${formatNumber(max)}`;
    });
    return [`${this.state.title || "LossPlot"}${lines.length ? "" : ": no data yet"}`, ...lines].join("\n");
  }

  bundle(): MimeBundle {
    return { [PLOTLY_MIME]: this.plotly(), "image/svg+xml": this.svg(), "text/plain": this.text() };
  }
}
