/**
 * A small static line-chart renderer: stacked panels sharing one x axis, written as a plain SVG string, so the
 * loss plot has a fallback every frontend (and nbconvert) shows without JavaScript or a browser to render it.
 */
import { escapeHtml, formatNumber } from "./format.js";

export interface ChartLine {
  name: string;
  x: number[];
  y: number[];
  color: string;
  /** 0..1; faint lines are raw values drawn under their smoothed curve. */
  opacity?: number;
  markers?: boolean;
  /** Left out of the legend. */
  hideLegend?: boolean;
}

export interface ChartPanel {
  title: string;
  lines: ChartLine[];
}

export interface ChartOptions {
  title?: string;
  xLabel?: string;
  width?: number;
  panelHeight?: number;
  /** x values are whole numbers (training steps): no fractional ticks. */
  integerX?: boolean;
}

/** Round tick values inside [lo, hi]: the 1, 2, 5 × 10^k step giving closest to `count` intervals (at least
 *  `minStep`: 1 for whole-number axes such as steps). */
export function niceTicks(lo: number, hi: number, count = 4, minStep = 0): number[] {
  if (!(hi > lo)) return [lo];
  const mag = 10 ** Math.floor(Math.log10((hi - lo) / count));
  const intervals = (s: number) => Math.abs((hi - lo) / s - count);
  const step = Math.max(minStep, [1, 2, 5, 10].map((m) => m * mag).reduce((a, b) => (intervals(b) < intervals(a) ? b : a)));
  const out: number[] = [];
  const first = Math.ceil(lo / step);
  // Counted, not accumulated: a step below the values' float resolution must not loop forever.
  for (let k = 0; k <= count * 3; k++) {
    const v = Number(((first + k) * step).toPrecision(12));
    if (v > hi + step * 1e-9) break;
    if (out.length === 0 || v !== out[out.length - 1]) out.push(v);
  }
  return out;
}

function extent(values: number[]): [number, number] | null {
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of values) if (Number.isFinite(v)) {
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  return lo <= hi ? [lo, hi] : null;
}

/** Pads a degenerate or tight range so lines do not sit on the frame. */
function padRange([lo, hi]: [number, number]): [number, number] {
  // A range within rounding noise (a constant series after smoothing) is treated as a single value.
  if (hi - lo <= 1e-9 * Math.max(Math.abs(lo), Math.abs(hi))) {
    const d = lo === 0 ? 1 : Math.abs(lo) * 0.1;
    return [lo - d, hi + d];
  }
  const d = (hi - lo) * 0.05;
  return [lo - d, hi + d];
}

const f1 = (v: number) => v.toFixed(1);

/** Tick labels with as many digits as it takes for neighbours to differ (1.05e-4 and 1.1e-4 were both "1.1e-4"). */
export function tickLabels(ticks: number[], digits = 3): string[] {
  for (let d = digits; d < 10; d++) {
    const labels = ticks.map((t) => formatNumber(t, d));
    if (new Set(labels).size === labels.length) return labels;
  }
  return ticks.map((t) => String(t));
}

export function renderLineChart(panels: ChartPanel[], opts: ChartOptions = {}): string {
  const width = opts.width ?? 640;
  const ph = opts.panelHeight ?? 170;
  const m = { left: 64, right: 16, top: opts.title ? 34 : 16, bottom: 36, gap: 26 };
  const n = Math.max(1, panels.length);
  const height = m.top + n * ph + (n - 1) * m.gap + m.bottom;
  const plotW = width - m.left - m.right;
  const allX = panels.flatMap((p) => p.lines.flatMap((l) => l.x));
  const xr = extent(allX);
  const [x0, x1] = xr ? (xr[0] === xr[1] ? [xr[0] - 1, xr[1] + 1] : xr) : [0, 1];
  const sx = (x: number) => m.left + ((x - x0) / (x1 - x0)) * plotW;

  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="11">`);
  out.push(`<rect x="0" y="0" width="${width}" height="${height}" fill="#ffffff"/>`);
  if (opts.title) out.push(`<text x="${width / 2}" y="18" text-anchor="middle" font-size="13" font-weight="bold">${escapeHtml(opts.title)}</text>`);
  if (!xr) out.push(`<text x="${width / 2}" y="${m.top + ph / 2}" text-anchor="middle" fill="#888">no data yet</text>`);

  panels.forEach((panel, i) => {
    const top = m.top + i * (ph + m.gap);
    const bottom = top + ph;
    const yr = padRange(extent(panel.lines.flatMap((l) => l.y)) ?? [0, 1]);
    const sy = (y: number) => bottom - ((y - yr[0]) / (yr[1] - yr[0])) * ph;
    out.push(`<g class="panel">`);
    out.push(`<rect x="${m.left}" y="${top}" width="${plotW}" height="${ph}" fill="none" stroke="#bbbbbb"/>`);
    const yTicks = niceTicks(yr[0], yr[1]);
    tickLabels(yTicks).forEach((label, k) => {
      const y = f1(sy(yTicks[k]!));
      out.push(`<line x1="${m.left}" x2="${m.left + plotW}" y1="${y}" y2="${y}" stroke="#eeeeee"/>`);
      out.push(`<text x="${m.left - 4}" y="${y}" text-anchor="end" dominant-baseline="middle" fill="#444">${escapeHtml(label)}</text>`);
    });
    out.push(`<text x="14" y="${top + ph / 2}" text-anchor="middle" transform="rotate(-90 14 ${top + ph / 2})" fill="#222">${escapeHtml(panel.title)}</text>`);
    if (i === n - 1 && xr) {
      const xTicks = niceTicks(x0, x1, 6, opts.integerX ? 1 : 0).filter((t) => !opts.integerX || Number.isInteger(t));
      // steps are whole numbers: 15000, not 1.5e+4
      (opts.integerX ? xTicks.map((t) => String(t)) : tickLabels(xTicks, 4)).forEach((label, k) => {
        const x = f1(sx(xTicks[k]!));
        out.push(`<line x1="${x}" x2="${x}" y1="${bottom}" y2="${bottom + 4}" stroke="#888888"/>`);
        out.push(`<text x="${x}" y="${bottom + 15}" text-anchor="middle" fill="#444">${escapeHtml(label)}</text>`);
      });
      if (opts.xLabel) out.push(`<text x="${m.left + plotW / 2}" y="${bottom + 30}" text-anchor="middle" fill="#222">${escapeHtml(opts.xLabel)}</text>`);
    }
    for (const line of panel.lines) {
      // Non-finite values (a NaN loss) break the line instead of corrupting the path.
      let d = "";
      let pen = false;
      const dots: string[] = [];
      for (let k = 0; k < line.x.length; k++) {
        const xv = line.x[k]!;
        const yv = line.y[k]!;
        if (!Number.isFinite(xv) || !Number.isFinite(yv)) {
          pen = false;
          continue;
        }
        const px = f1(sx(xv));
        const py = f1(sy(yv));
        d += `${pen ? "L" : "M"}${px} ${py} `;
        pen = true;
        if (line.markers) dots.push(`<circle cx="${px}" cy="${py}" r="2.5" fill="${escapeHtml(line.color)}"/>`);
      }
      const op = line.opacity ?? 1;
      if (d) out.push(`<path d="${d.trim()}" fill="none" stroke="${escapeHtml(line.color)}" stroke-width="1.5" stroke-opacity="${op}"/>`);
      out.push(...dots);
    }
    // The legend sits above the panel's frame, right-aligned, so it never hides a line.
    let lx = m.left + plotW;
    for (const l of panel.lines.filter((l) => !l.hideLegend).reverse()) {
      lx -= 24 + 6.5 * l.name.length;
      const ly = top - 7;
      out.push(`<line x1="${f1(lx)}" x2="${f1(lx + 16)}" y1="${ly}" y2="${ly}" stroke="${escapeHtml(l.color)}" stroke-width="2"/>`);
      out.push(`<text x="${f1(lx + 20)}" y="${ly}" dominant-baseline="middle" fill="#222">${escapeHtml(l.name)}</text>`);
    }
    out.push(`</g>`);
  });
  out.push(`</svg>`);
  return out.join("");
}
