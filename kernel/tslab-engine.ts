/**
 * The CellEngine built on tslab's incremental TypeScript compiler and executor, used as a library (tslab@1.0.22,
 * pinned; deep imports of `tslab/dist/converter.js` and `tslab/dist/executor.js`, nothing copied or patched).
 *
 * What tslab gives us: type-checked cells whose declarations persist across cells, top-level await, completion,
 * quick-info and an is-complete check. Its executor reports through a console-like interface: the raw value of a
 * cell's last expression (`log(value)`), thrown values (`error(err)`) and type errors (`error("%s%d:%d - %s", ...)`),
 * which is what lets the kernel send a real execute_result and a real error message.
 *
 * The one thing we add around it is type resolution of our own package (see resolve.ts): answered through the
 * compiler's system interface (`ts.sys` of tslab's TypeScript), which tslab itself routes file lookups through.
 */
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";
import util from "node:util";
import type { CellEngine, CellError, CellOutcome, CompleteCheck, Completion, Inspection } from "./engine.js";
import { INTERRUPT_ENAME } from "./engine.js";

// Minimal shapes of the tslab internals we use (their own .d.ts drag in a second copy of TypeScript's types).
interface TslabConverter {
  close(): void;
}
interface TslabConverterModule {
  createConverter(options?: { isJS?: boolean; isBrowser?: boolean }): TslabConverter;
  isCompleteCode(content: string): { completed: boolean; indent?: string };
}
interface TslabExecutor {
  execute(src: string): Promise<boolean>;
  inspect(src: string, position: number): QuickInfo | undefined;
  complete(src: string, position: number): { start: number; end: number; candidates: string[] };
  interrupt(): void;
  close(): void;
}
interface TslabExecutorModule {
  createExecutor(
    rootDir: string,
    convs: { node: TslabConverter; browser: TslabConverter; close(): void },
    console: { log(...args: unknown[]): void; error(...args: unknown[]): void },
  ): TslabExecutor;
}
interface DisplayPart {
  text: string;
}
interface QuickInfo {
  displayParts?: DisplayPart[];
  documentation?: DisplayPart[];
  tags?: { name: string; text?: DisplayPart[] }[];
}
interface TsSys {
  fileExists(p: string): boolean;
  readFile(p: string, encoding?: string): string | undefined;
  directoryExists(p: string): boolean;
  getDirectories(p: string): string[];
}
interface TsFork {
  version: string;
  sys: TsSys;
}

const requireHere = createRequire(import.meta.url);
const tslabRequire = createRequire(requireHere.resolve("tslab/package.json"));

/** tslab's own TypeScript (a 5.0.4 fork): the compiler that really type-checks and emits cells. */
function tsFork(): TsFork {
  return tslabRequire("@tslab/typescript-for-tslab") as TsFork;
}

// ---------------------------------------------------------------------------------------------------------------
// Virtual files seen by the cell compiler.

const virtualFiles = new Map<string, string>();
const virtualDirs = new Set<string>();
let sysHooked = false;

/** Adds files (absolute path → content) that tslab's compiler will see as if they were on disk. */
export function addVirtualFiles(files: Map<string, string>): void {
  for (const [file, content] of files) {
    const p = path.resolve(file);
    virtualFiles.set(p, content);
    for (let d = path.dirname(p); d !== path.dirname(d); d = path.dirname(d)) virtualDirs.add(d);
  }
  if (sysHooked) return;
  sysHooked = true;
  const sys = tsFork().sys;
  const { fileExists, readFile, directoryExists, getDirectories } = sys;
  sys.fileExists = (p) => virtualFiles.has(path.resolve(p)) || fileExists.call(sys, p);
  sys.readFile = (p, enc) => virtualFiles.get(path.resolve(p)) ?? readFile.call(sys, p, enc);
  sys.directoryExists = (p) => virtualDirs.has(path.resolve(p)) || directoryExists.call(sys, p);
  sys.getDirectories = (p) => {
    const real = directoryExists.call(sys, p) ? getDirectories.call(sys, p) : [];
    const abs = path.resolve(p);
    const extra = [...virtualDirs].filter((d) => path.dirname(d) === abs).map((d) => path.basename(d));
    return [...new Set([...real, ...extra])];
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Errors.

const KERNEL_DIR = path.dirname(fileURLToPath(import.meta.url));
const TSLAB_DIR = path.dirname(tslabRequire.resolve("./package.json"));

/** A stack frame of Node itself, of tslab or of this kernel: nothing the user can act on. */
function internalFrame(line: string): boolean {
  if (!/^\s+at /.test(line)) return false;
  return /[( ]node:/.test(line) || line.includes(TSLAB_DIR + path.sep) || line.includes(KERNEL_DIR + path.sep);
}

/**
 * The user's part of an error's stack. Errors thrown synchronously inside vm code carry a source excerpt before
 * the "Name: message" line ("evalmachine.<anonymous>:2 / throw ... / ^"); the compiled JavaScript it shows would only
 * confuse, so it is dropped with the internal frames.
 */
function userStack(stack: string, name: string): string[] {
  const lines = stack.split("\n");
  const head = lines.findIndex((l) => l.startsWith(name));
  return (head > 0 ? lines.slice(head) : lines).filter((l) => !internalFrame(l));
}

export function isInterruptError(e: unknown): boolean {
  if (!e || typeof e !== "object") return false;
  const err = e as { code?: unknown; message?: unknown };
  // vm's breakOnSigint (a synchronous cell) and tslab's asynchronous interrupt.
  return err.code === "ERR_SCRIPT_EXECUTION_INTERRUPTED" || err.message === "Interrupted asynchronously";
}

/** Turns anything a cell threw into the protocol's ename/evalue/traceback. */
export function toCellError(e: unknown): CellError {
  if (isInterruptError(e)) {
    return { ename: INTERRUPT_ENAME, evalue: "Interrupted", traceback: [`${INTERRUPT_ENAME}: the cell was interrupted`], cause: e };
  }
  if (util.types.isNativeError(e) || e instanceof Error) {
    const err = e as Error;
    const ename = err.name || err.constructor?.name || "Error";
    const stack = typeof err.stack === "string" && err.stack ? userStack(err.stack, ename) : [`${ename}: ${err.message}`];
    return { ename, evalue: String(err.message ?? ""), traceback: stack, cause: e };
  }
  const shown = util.inspect(e);
  return { ename: "Error", evalue: shown, traceback: [`Uncaught ${shown}`], cause: e };
}

// ---------------------------------------------------------------------------------------------------------------

export interface TslabEngineOptions {
  /** Directory that cells' relative imports and `require` resolve from (the notebook's folder). */
  rootDir?: string;
}

export class TslabEngine implements CellEngine {
  /** The TypeScript version that compiles cells, without building the (slow) compiler. */
  static languageVersion(): string {
    return tsFork().version;
  }

  readonly info: { name: string; languageVersion: string };
  private readonly executor: TslabExecutor;
  private readonly converterModule: TslabConverterModule;
  private readonly node: TslabConverter;
  private browser: TslabConverter | null = null;
  /** Per-execution capture of what the executor reports; executions are serialised by the kernel. */
  private sink: { hasValue: boolean; value?: unknown; diagnostics: string[]; errors: unknown[] } | null = null;

  constructor(opts: TslabEngineOptions = {}) {
    const ts = tsFork();
    this.info = { name: "tslab", languageVersion: ts.version };
    this.converterModule = tslabRequire("./dist/converter.js") as TslabConverterModule;
    const executorModule = tslabRequire("./dist/executor.js") as TslabExecutorModule;
    this.node = this.converterModule.createConverter({ isJS: false, isBrowser: false });
    const self = this;
    const convs = {
      node: this.node,
      // `/** @browser */` cells are rare; build their converter (hundreds of ms) only when one appears.
      get browser(): TslabConverter {
        return (self.browser ??= self.converterModule.createConverter({ isJS: false, isBrowser: true }));
      },
      close: () => {
        this.node.close();
        this.browser?.close();
      },
    };
    const reporter = {
      log: (...args: unknown[]) => {
        if (!this.sink) return;
        this.sink.hasValue = true;
        this.sink.value = args[0];
      },
      error: (...args: unknown[]) => {
        if (!this.sink) return;
        if (typeof args[0] === "string" && args[0].startsWith("%s%d:%d - %s")) this.sink.diagnostics.push(util.format(...args));
        else this.sink.errors.push(args[0]);
      },
    };
    this.executor = executorModule.createExecutor(opts.rootDir ?? process.cwd(), convs, reporter);
  }

  async execute(code: string): Promise<CellOutcome> {
    const sink = (this.sink = { hasValue: false, value: undefined as unknown, diagnostics: [] as string[], errors: [] as unknown[] });
    let ok: boolean;
    try {
      ok = await this.executor.execute(code);
    } catch (e) {
      // The compiler itself failed (not the user's code).
      ok = false;
      sink.errors.push(e);
    } finally {
      this.sink = null;
    }
    if (sink.diagnostics.length) {
      const lines = sink.diagnostics;
      return { status: "error", error: { ename: "CompileError", evalue: lines[0]!, traceback: lines } };
    }
    if (sink.errors.length) return { status: "error", error: toCellError(sink.errors[0]) };
    if (!ok) return { status: "error", error: { ename: "Error", evalue: "the cell failed", traceback: ["the cell failed"] } };
    return sink.hasValue ? { status: "ok", hasValue: true, value: sink.value } : { status: "ok", hasValue: false };
  }

  complete(code: string, cursor: number): Completion {
    const info = this.executor.complete(code, cursor);
    return { matches: info.candidates, start: info.start, end: info.end };
  }

  inspect(code: string, cursor: number): Inspection {
    const info = this.executor.inspect(code, cursor);
    if (!info || !info.displayParts?.length) return { found: false };
    const text = (parts?: DisplayPart[]) => (parts ?? []).map((p) => p.text).join("");
    const sections = [text(info.displayParts)];
    const doc = text(info.documentation);
    if (doc) sections.push(doc);
    for (const tag of info.tags ?? []) sections.push(`@${tag.name} ${text(tag.text)}`.trimEnd());
    return { found: true, text: sections.join("\n\n") };
  }

  isComplete(code: string): CompleteCheck {
    const r = this.converterModule.isCompleteCode(code);
    return r.completed ? { status: "complete" } : { status: "incomplete", indent: r.indent ?? "" };
  }

  interrupt(): void {
    this.executor.interrupt();
  }

  close(): void {
    this.executor.close();
  }
}

/** tslab's display API (`import * as tslab from "tslab"; tslab.display.html(...)`) routed to `sink`. */
export function routeTslabDisplay(sink: (content: { data: Record<string, unknown>; metadata: Record<string, unknown>; transient?: { display_id?: string } }, update: boolean) => void): void {
  const jupyter = tslabRequire("./dist/jupyter.js") as { lastWriteDisplayData: unknown };
  jupyter.lastWriteDisplayData = sink;
}
