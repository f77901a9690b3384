/**
 * A small table (the run config writeBasicConfig() shows, the planner's memory tiers with the chosen row
 * highlighted): escaped HTML plus an aligned text/plain rendering.
 */
import type { MimeBundle } from "../lib/cells/display.js";
import { Widget } from "./widget.js";
import type { WidgetOptions } from "./widget.js";
import { escapeHtml } from "./format.js";

export type Cell = string | number | boolean | null | undefined;

export interface TableState {
  title: string;
  columns: string[];
  rows: Cell[][];
  /** Row indices drawn highlighted (and marked with `>` in text). */
  highlight: number[];
  /** A line under the table. */
  note: string;
}

const show = (c: Cell): string => (c === null || c === undefined ? "" : String(c));

export class Table extends Widget<TableState> {
  constructor(init: Partial<TableState> = {}, opts: WidgetOptions = {}) {
    super({ title: "", columns: [], rows: [], highlight: [], note: "", ...init }, opts, 2);
  }

  /** A two-column key/value table from an object's entries. */
  static fromRecord(record: Record<string, Cell>, init: Partial<TableState> = {}, opts: WidgetOptions = {}): Table {
    return new Table({ columns: ["", ""], ...init, rows: Object.entries(record).map(([k, v]) => [k, v]) }, opts);
  }

  text(): string {
    const { title, columns, rows, highlight, note } = this.state;
    const all = [columns, ...rows.map((r) => r.map(show))];
    const n = Math.max(0, ...all.map((r) => r.length));
    const widths = Array.from({ length: n }, (_, j) => Math.max(0, ...all.map((r) => show(r[j]).length)));
    const line = (r: Cell[], mark: string) => (mark + r.map((c, j) => show(c).padEnd(widths[j]!)).join("  ")).trimEnd();
    const out: string[] = [];
    if (title) out.push(title);
    if (columns.some((c) => c)) out.push(line(columns, "  "), "  " + widths.map((w) => "-".repeat(w)).join("  "));
    rows.forEach((r, i) => out.push(line(r, highlight.includes(i) ? "> " : "  ")));
    if (note) out.push(note);
    return out.join("\n");
  }

  html(): string {
    const { title, columns, rows, highlight, note } = this.state;
    const td = "padding:2px 10px 2px 0;text-align:left;vertical-align:top";
    const head = columns.some((c) => c)
      ? `<tr>${columns.map((c) => `<th style="${td};border-bottom:1px solid #999999">${escapeHtml(c)}</th>`).join("")}</tr>`
      : "";
    const body = rows.map((r, i) => {
      const bg = highlight.includes(i) ? ";background-color:#fff3c4;font-weight:bold" : "";
      return `<tr>${r.map((c) => `<td style="${td}${bg}">${escapeHtml(show(c))}</td>`).join("")}</tr>`;
    });
    return (
      `<div class="cnts-table" style="font-family:monospace;font-size:12px;margin:2px 0">` +
      (title ? `<div style="font-weight:bold;margin-bottom:2px">${escapeHtml(title)}</div>` : "") +
      `<table style="border-collapse:collapse">${head}${body.join("")}</table>` +
      (note ? `<div style="color:#555555;margin-top:2px">${escapeHtml(note)}</div>` : "") +
      `</div>`
    );
  }

  bundle(): MimeBundle {
    return { "text/plain": this.text(), "text/html": this.html() };
  }
}
