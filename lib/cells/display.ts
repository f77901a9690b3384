/**
 * The library's side of the display bridge: how lib/ and widgets/ put rich output in front of the user without
 * knowing which kernel (if any) runs them.
 *
 * Three channels, picked at every call (a kernel may install its bridge after this module was imported, and tests
 * install fake ones):
 *   1. our kernel: `globalThis[Symbol.for("controlnet-ts.kernel")]` (contract in the kernel's README) receives the
 *      whole MIME bundle, display ids, clear_output and the cell's AbortSignal;
 *   2. stock tslab: detected by the `__tslab__` global its executor defines. Its kernel's own `jupyter` module is
 *      found in the require cache and sent whole bundles; failing that, tslab's public `newDisplay()` API sends the
 *      bundle's richest single MIME type (its API takes one type per call);
 *   3. anything else (a plain script, the CLI, tests): the bundle's text/plain goes to stdout; updates of a
 *      one-line display overwrite that line when stdout is a terminal.
 * lib/ never imports kernel/: the dependency runs through the global only.
 */
import { randomBytes } from "node:crypto";
import { createRequire } from "node:module";
import { inspect } from "node:util";

/** A Jupyter MIME bundle: MIME type → value (string, JSON-able object, or bytes, which are sent as base64). */
export type MimeBundle = Record<string, unknown>;

export interface DisplayOptions {
  /** Ties the output to an id so later updates replace it (`transient.display_id`). */
  displayId?: string;
  /** Send `update_display_data` for `displayId` instead of a new `display_data`. */
  update?: boolean;
  /** Per-MIME metadata, e.g. `{ "image/png": { width: 256 } }`. */
  metadata?: Record<string, unknown>;
}

/** What our kernel installs on globalThis (see the shared contract). */
export interface KernelBridge {
  display(bundle: Record<string, unknown>, opts?: DisplayOptions): void;
  clearOutput(wait?: boolean): void;
  abortSignal(): AbortSignal;
  /** The client's id of the running cell, or null (optional: older bridges and fakes have none). */
  cellId?(): string | null;
  openComm?(target: string, data: unknown): { send(data: unknown): void; close(): void; onMsg(cb: (data: unknown) => void): void };
  /** Run `cb` when the running cell has returned, before its reply; false when no cell runs (optional, as below). */
  beforeIdle?(cb: () => unknown): boolean;
  /** Run `cb` when the kernel shuts down or restarts. */
  onShutdown?(cb: () => unknown): void;
}

export const KERNEL_BRIDGE = Symbol.for("controlnet-ts.kernel");
/** Objects with this method render as their MIME bundle (the kernel's execute_result convention). */
export const JUPYTER_DISPLAY = Symbol.for("Jupyter.display");

export type DisplayChannel = "kernel" | "tslab" | "text";

/** The bridge our kernel installed, or null. */
export function kernelBridge(): KernelBridge | null {
  const b = (globalThis as Record<symbol, unknown>)[KERNEL_BRIDGE] as KernelBridge | undefined;
  return b && typeof b.display === "function" ? b : null;
}

/** Which channel output goes to right now. */
export function displayChannel(): DisplayChannel {
  if (kernelBridge()) return "kernel";
  if (tslabChannel()) return "tslab";
  return "text";
}

/** A fresh display id (16 hex digits, like the ids Jupyter kernels make). */
export function newDisplayId(): string {
  return randomBytes(8).toString("hex");
}

function isBundle(x: unknown): x is MimeBundle {
  if (x === null || typeof x !== "object" || Array.isArray(x) || ArrayBuffer.isView(x)) return false;
  const keys = Object.keys(x);
  return keys.length > 0 && keys.every((k) => /^[a-z]+\/[\w.+-]+$/i.test(k));
}

/**
 * The MIME bundle for any value: objects with `[Symbol.for("Jupyter.display")]()` give theirs, a bundle is taken as
 * is, anything else becomes text/plain through util.inspect (strings print as themselves).
 */
export function toMimeBundle(x: unknown): MimeBundle {
  if (x !== null && (typeof x === "object" || typeof x === "function")) {
    const fn = (x as Record<symbol, unknown>)[JUPYTER_DISPLAY];
    if (typeof fn === "function") return (fn as () => MimeBundle).call(x);
  }
  if (isBundle(x)) return x;
  return { "text/plain": typeof x === "string" ? x : inspect(x, { depth: 4, colors: false }) };
}

/** Jupyter carries binary MIME data as base64 strings. */
function encodeBundle(bundle: MimeBundle): MimeBundle {
  const out: MimeBundle = {};
  for (const [k, v] of Object.entries(bundle)) {
    out[k] = v instanceof Uint8Array ? Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString("base64") : v;
  }
  return out;
}

/** Shows a value (or a MIME bundle) as a new output, or updates the output with `displayId` when `update` is set. */
export function display(value: unknown, opts: DisplayOptions = {}): void {
  if (opts.update && !opts.displayId) throw new Error("display: update needs a displayId");
  const bundle = encodeBundle(toMimeBundle(value));
  const kernel = kernelBridge();
  if (kernel) {
    const o: DisplayOptions = {};
    if (opts.displayId !== undefined) o.displayId = opts.displayId;
    if (opts.update) o.update = true;
    if (opts.metadata !== undefined) o.metadata = opts.metadata;
    kernel.display(bundle, o);
    return;
  }
  const tslab = tslabChannel();
  if (tslab) {
    tslab.display(bundle, opts);
    return;
  }
  textDisplay(bundle, opts);
}

/** Replaces every output shown with `displayId` (update_display_data). */
export function updateDisplay(displayId: string, value: unknown, metadata?: Record<string, unknown>): void {
  display(value, metadata ? { displayId, update: true, metadata } : { displayId, update: true });
}

/** Clears the current cell's output (with `wait`, when the next output arrives). No-op outside our kernel. */
export function clearOutput(wait = false): void {
  kernelBridge()?.clearOutput(wait);
}

let sigintController: AbortController | null = null;

/** The id of the notebook cell that is running (our kernel, a client that names its cells), else null. */
export function currentCellId(): string | null {
  return kernelBridge()?.cellId?.() ?? null;
}

/** Has our kernel run `cb` when the running cell's code has returned, before its reply and idle (what a headless run,
 *  which stops listening at idle, must still get); false where there is no such cell or kernel. */
export function beforeCellEnds(cb: () => unknown): boolean {
  return kernelBridge()?.beforeIdle?.(cb) ?? false;
}

/** Has our kernel run `cb` when it shuts down or restarts; false elsewhere. */
export function onKernelShutdown(cb: () => unknown): boolean {
  const kernel = kernelBridge();
  if (!kernel?.onShutdown) return false;
  kernel.onShutdown(cb);
  return true;
}

/**
 * The signal a long-running call polls to stop cooperatively: our kernel's (aborted when the user interrupts the
 * cell). Under stock tslab, whose interrupt does not stop async work, a SIGINT listener aborts it (a fresh signal
 * is handed out once one has fired). Elsewhere null: a plain script keeps Ctrl-C's default meaning.
 */
export function abortSignal(): AbortSignal | null {
  const kernel = kernelBridge();
  if (kernel) return kernel.abortSignal();
  if (!tslabChannel()) return null;
  if (!sigintController || sigintController.signal.aborted) {
    const c = new AbortController();
    sigintController = c;
    process.once("SIGINT", () => c.abort(new Error("interrupted")));
  }
  return sigintController.signal;
}

// ---------------------------------------------------------------------------------------------------------------
// stock tslab

interface TslabSink {
  display(bundle: MimeBundle, opts: DisplayOptions): void;
}
interface TslabJupyterModule {
  lastWriteDisplayData: ((msg: unknown, update: boolean) => void) | null;
}
interface TslabDisplay {
  raw(contentType: string, b: unknown): void;
}

/** The sink found for one tslab executor (its `__tslab__` object), so the search runs once per kernel. */
let tslabCache: { owner: object; sink: TslabSink | null } | null = null;

/** The richest MIME type tslab's one-type-per-call API can carry, most preferred first. */
const SINGLE_MIME_PREFERENCE = ["text/html", "image/svg+xml", "image/png", "image/jpeg", "text/markdown", "text/plain"];

function tslabChannel(): TslabSink | null {
  // Cheap check first: tslab's executor defines __tslab__ before running any cell.
  const owner = (globalThis as Record<string, unknown>).__tslab__;
  if (owner === undefined || owner === null || typeof owner !== "object") return null;
  if (tslabCache?.owner !== owner) tslabCache = { owner, sink: findTslabSink(owner as { require?: NodeJS.Require }) };
  return tslabCache.sink;
}

function findTslabSink(owner: { require?: NodeJS.Require }): TslabSink | null {
  const req = createRequire(import.meta.url);
  // The kernel's own jupyter module (it may come from another tslab installation than ours) is the one whose
  // writer is set; it takes whole bundles.
  const modules: TslabJupyterModule[] = [];
  for (const [file, mod] of Object.entries(req.cache)) {
    const j = mod?.exports as TslabJupyterModule | undefined;
    if (/[\\/]tslab[\\/]dist[\\/]jupyter\.js$/.test(file) && j && "lastWriteDisplayData" in j) modules.push(j);
  }
  if (modules.length) {
    return {
      display(bundle, opts) {
        const write = modules.find((j) => j.lastWriteDisplayData)?.lastWriteDisplayData;
        if (!write) throw new Error("tslab is not ready to display");
        const transient = opts.displayId ? { display_id: opts.displayId } : {};
        write({ data: bundle, metadata: opts.metadata ?? {}, transient }, !!opts.update);
      },
    };
  }
  // Fallback: the public API through the require tslab's executor hooks.
  try {
    const pub = (owner.require ?? req)("tslab") as { display: TslabDisplay; newDisplay(): TslabDisplay };
    const byId = new Map<string, TslabDisplay>();
    return {
      display(bundle, opts) {
        const mime = SINGLE_MIME_PREFERENCE.find((m) => m in bundle) ?? Object.keys(bundle)[0]!;
        let target = pub.display;
        if (opts.displayId) {
          // tslab's display objects send display_data first and update_display_data afterwards.
          let d = byId.get(opts.displayId);
          if (!d) byId.set(opts.displayId, (d = pub.newDisplay()));
          target = d;
        }
        target.raw(mime, bundle[mime]);
      },
    };
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// plain text

/** The one-line display last written to a terminal, and stdout's byte count right after it. */
let lastLine: { displayId: string; bytes: number } | null = null;

function bundleText(bundle: MimeBundle): string {
  const t = bundle["text/plain"];
  if (typeof t === "string") return t;
  const html = bundle["text/html"];
  if (typeof html === "string") return html.replace(/<[^>]*>/g, " ").replace(/\s+/g, " ").trim();
  return `[${Object.keys(bundle).join(", ")}]`;
}

function textDisplay(bundle: MimeBundle, opts: DisplayOptions): void {
  const text = bundleText(bundle);
  const out = process.stdout;
  const oneLine = !text.includes("\n");
  // On a terminal, an update of a one-line display rewrites that line, but only if nothing else was written
  // since (socket byte counts tell), so interleaved logging is never overwritten.
  const overwrite = out.isTTY && opts.update && oneLine && lastLine?.displayId === opts.displayId &&
    lastLine?.bytes === out.bytesWritten;
  out.write((overwrite ? "\x1b[1A\r\x1b[2K" : "") + (text.endsWith("\n") ? text : text + "\n"));
  lastLine = out.isTTY && oneLine && opts.displayId ? { displayId: opts.displayId, bytes: out.bytesWritten } : null;
}
