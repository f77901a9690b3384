/**
 * The training dashboard: progress bar, loss plot, memory meter and the latest validation grid, fed by the trainer
 * through onStep()/onValidation(). Each part is its own display (own display id and rate), so a progress tick never
 * resends the validation images; as a value (a cell's last expression) it renders everything as one bundle.
 */
import { JUPYTER_DISPLAY } from "../lib/cells/display.js";
import type { MimeBundle } from "../lib/cells/display.js";
import type { Clock } from "./throttle.js";
import { ProgressBar } from "./progress-bar.js";
import type { ProgressStatus } from "./progress-bar.js";
import { LossPlot } from "./loss-plot.js";
import { MemoryMeter } from "./memory-meter.js";
import type { MemoryInput } from "./memory-meter.js";
import { ImageGrid } from "./image-grid.js";
import type { ImageInput, ImageGridRow } from "./image-grid.js";
import { escapeHtml } from "./format.js";

export interface StepInfo {
  step: number;
  total?: number;
  loss?: number | null;
  lr?: number | null;
  itPerSec?: number | null;
  /** A memoryInfo() snapshot, or any MemoryState fields (e.g. measuredPeakBytes). */
  memory?: MemoryInput;
}

export interface ValidationInfo {
  /** The step the images were made at (default: the last onStep's). */
  step?: number;
  /** One entry per prompt: an image, or several samples of that prompt. */
  images: (ImageInput | ImageInput[])[];
  prompts: string[];
  /** Conditioning image per prompt, shown first in its row. */
  conditioning?: ImageInput[];
  /** Control-fidelity score: one for the run or one per prompt (their mean is plotted). */
  fidelity?: number | number[] | null;
}

export interface DashboardOptions {
  total?: number;
  /** The step a resumed run starts from (the bar's origin for rate and ETA). */
  initialStep?: number;
  /** Earlier points to plot (a run resumed from a checkpoint, with its logged history). */
  history?: { step: number; loss?: number | null; lr?: number | null; fidelity?: number | null }[];
  description?: string;
  /** The planner's predicted peak, shown beside the measured one. */
  predictedPeakBytes?: number | null;
  /** Loss smoothing weight (0 = raw only). */
  smoothing?: number;
  /** Redraws per second for each part (default: progress 4, plot and memory 2, images 1). */
  maxUpdatesPerSecond?: number;
  clock?: Clock;
}

export class TrainingDashboard {
  readonly progress: ProgressBar;
  readonly loss: LossPlot;
  readonly memory: MemoryMeter;
  readonly validation: ImageGrid;
  private shown = false;
  private lastStep = 0;

  constructor(opts: DashboardOptions = {}) {
    const w = { ...(opts.clock ? { clock: opts.clock } : {}), ...(opts.maxUpdatesPerSecond !== undefined ? { maxUpdatesPerSecond: opts.maxUpdatesPerSecond } : {}) };
    this.lastStep = opts.initialStep ?? 0;
    this.progress = new ProgressBar({ step: this.lastStep, total: opts.total ?? 0, description: opts.description ?? "train" }, w);
    this.loss = new LossPlot({ title: "training" }, w);
    this.loss.defineSeries("loss", opts.smoothing !== undefined ? { smoothing: opts.smoothing } : {});
    for (const h of opts.history ?? []) this.loss.add(h.step, { loss: h.loss, lr: h.lr, fidelity: h.fidelity });
    this.memory = new MemoryMeter({ predictedPeakBytes: opts.predictedPeakBytes ?? null }, w);
    this.validation = new ImageGrid({ title: "validation" }, w);
  }

  /** Shows the parts as outputs of the running cell (the validation grid appears with its first images). */
  show(): this {
    this.shown = true;
    this.progress.show();
    this.loss.show();
    this.memory.show();
    if (this.validation.imageCount) this.validation.show();
    return this;
  }

  /** One training step done. The last step (step ≥ total) is sent at once. */
  onStep(s: StepInfo): this {
    this.lastStep = s.step;
    const p: Parameters<ProgressBar["update"]>[0] = { step: s.step };
    if (s.total !== undefined) p.total = s.total;
    if (s.loss !== undefined) p.loss = s.loss;
    if (s.lr !== undefined) p.lr = s.lr;
    if (s.itPerSec !== undefined) p.itPerSec = s.itPerSec;
    this.progress.update(p);
    this.loss.add(s.step, { loss: s.loss, lr: s.lr });
    if (s.memory) this.memory.update(s.memory);
    const { step, total } = this.progress.value;
    if (total > 0 && step >= total) this.flush();
    return this;
  }

  /** New validation images (they replace the previous ones) and their fidelity score. */
  onValidation(v: ValidationInfo): this {
    const step = v.step ?? this.lastStep;
    const rows: ImageGridRow[] = v.images.map((imgs, i) => {
      const samples = Array.isArray(imgs) ? imgs : [imgs];
      const cond = v.conditioning?.[i];
      const labels = [...(cond ? ["conditioning"] : []), ...samples.map((_, j) => (samples.length > 1 ? `sample ${j + 1}` : "sample"))];
      const row: ImageGridRow = { images: cond ? [cond, ...samples] : samples, labels };
      if (v.prompts[i] !== undefined) row.caption = v.prompts[i]!;
      return row;
    });
    const fid = v.fidelity;
    const fidelity = Array.isArray(fid) ? (fid.length ? fid.reduce((a, b) => a + b, 0) / fid.length : null) : fid ?? null;
    const title = `validation at step ${step}${fidelity !== null ? `, fidelity ${fidelity.toFixed(3)}` : ""}`;
    this.validation.update({ rows, title });
    if (fidelity !== null) this.loss.add(step, { fidelity });
    if (this.shown && !this.validation.isShown) this.validation.show();
    return this;
  }

  /** Marks the run finished (or stopped/failed) and sends every part's final state now. */
  finish(status: ProgressStatus = "done"): this {
    this.progress.update({ status });
    return this.flush();
  }

  /** Sends every pending redraw now (call before the cell ends: nbclient keeps only what arrived by then). */
  flush(): this {
    this.progress.flush();
    this.loss.flush();
    this.memory.flush();
    this.validation.flush();
    return this;
  }

  private parts(): MimeBundle[] {
    const parts = [this.progress.bundle(), this.loss.bundle(), this.memory.bundle()];
    if (this.validation.imageCount) parts.push(this.validation.bundle());
    return parts;
  }

  /** All parts in one bundle: HTML (the SVG plot inlined as an image) and text. */
  bundle(): MimeBundle {
    const html = this.parts().map((b) => {
      if (typeof b["text/html"] === "string") return b["text/html"];
      const svg = b["image/svg+xml"];
      if (typeof svg === "string") return `<img src="data:image/svg+xml;base64,${Buffer.from(svg).toString("base64")}" alt="${escapeHtml("loss plot")}"/>`;
      return "";
    });
    const text = this.parts().map((b) => String(b["text/plain"] ?? "")).join("\n");
    return { "text/plain": text, "text/html": `<div class="cnts-dashboard">${html.join("")}</div>` };
  }

  [JUPYTER_DISPLAY](): MimeBundle {
    return this.bundle();
  }

  toString(): string {
    return String(this.bundle()["text/plain"]);
  }
}
