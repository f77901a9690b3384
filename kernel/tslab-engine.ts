/**
 * The CellEngine built on tslab's incremental TypeScript compiler, used as a library (tslab@1.0.22, pinned; deep
 * imports of `tslab/dist/converter.js` and `tslab/dist/metadata.js`, nothing copied or patched), on the project's
 * TypeScript 5.9 instead of tslab's 5.0 fork (typescript-for-tslab.ts).
 *
 * What tslab gives us: type-checked cells whose declarations persist across cells (its converter emits each cell's
 * JavaScript, the declarations of everything so far, and the name holding the last expression), completion and
 * quick-info. The executor is ours (see TslabEngine): named cells, await anywhere, errors mapped to cell lines.
 *
 * We also add type resolution of our own package (see resolve.ts): answered through the compiler's system interface
 * (`ts.sys` of the TypeScript tslab runs on), which tslab itself routes file lookups through.
 */
import fs from "node:fs";
import Module, { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";
import util from "node:util";
import vm from "node:vm";
import type * as TS from "typescript";
import { cellPosition, checkComplete, excerpt, globalizeTopLevelVariables, guardResumes, lineColOf, originalOffset, RESUME_GUARD, rewriteCell, type Rewritten } from "./cell-source.js";
import type { CellEngine, CellError, CellOutcome, CompleteCheck, Completion, ExecuteOptions, Inspection } from "./engine.js";
import { abandonedError, INTERRUPT_ENAME, isAbandonedError } from "./engine.js";
import { requireWithImportCondition } from "./import-condition.js";
import { compilingCell, typescriptForTslab } from "./typescript-for-tslab.js";

// Minimal shapes of the tslab internals we use (their own .d.ts drag in a second copy of TypeScript's types).
interface Diagnostic {
  start: { offset: number; line: number; character: number };
  end: { offset: number; line: number; character: number };
  messageText: string;
  fileName?: string;
}
interface Converted {
  output?: string;
  declOutput?: string;
  diagnostics: Diagnostic[];
  sideOutputs?: { path: string; data: string }[];
  lastExpressionVar?: string;
}
interface TslabConverter {
  convert(prevDecl: string, src: string): Converted;
  inspect(prevDecl: string, src: string, position: number): QuickInfo | undefined;
  complete(prevDecl: string, src: string, position: number): { start: number; end: number; candidates: string[]; original?: CompletionInfo };
  addModule(name: string, content: string, meta?: CodeMetadata): Diagnostic[];
  close(): void;
}
interface TslabConverterModule {
  createConverter(options?: { isJS?: boolean; isBrowser?: boolean }): TslabConverter;
}
interface TextSpan {
  start: number;
  length: number;
}
/** The part of TypeScript's CompletionInfo that says what a completion replaces. */
interface CompletionInfo {
  optionalReplacementSpan?: TextSpan;
  entries?: { replacementSpan?: TextSpan }[];
}
interface CodeMetadata {
  mode?: "node" | "browser";
  module?: string;
  jsx?: true;
}
interface DisplayPart {
  text: string;
}
interface QuickInfo {
  /** TypeScript's ScriptElementKind: "" where no symbol was found */
  kind?: string;
  displayParts?: DisplayPart[];
  documentation?: DisplayPart[];
  tags?: { name: string; text?: DisplayPart[] }[];
}
interface TsSys {
  fileExists(p: string): boolean;
  readFile(p: string, encoding?: string): string | undefined;
  directoryExists(p: string): boolean;
  getDirectories(p: string): string[];
  newLine: string;
}
type CellTs = typeof TS & { version: string; sys: TsSys };

const requireHere = createRequire(import.meta.url);
const tslabRequire = createRequire(requireHere.resolve("tslab/package.json"));

/** The compiler that type-checks and emits cells: the project's TypeScript, given to tslab's converter in place of
 * its 5.0 fork (typescript-for-tslab.ts). */
function cellTypescript(): CellTs {
  return typescriptForTslab() as CellTs;
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
  const sys = cellTypescript().sys;
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
 * the "Name: message" line ("<In[3]>:2 / throw ... / ^"); the compiled JavaScript it shows would only confuse, so it
 * is dropped with the internal frames.
 */
function userStack(stack: string, name: string): string[] {
  const lines = stack.split("\n");
  const head = lines.findIndex((l) => l.startsWith(name));
  return (head > 0 ? lines.slice(head) : lines).filter((l) => !internalFrame(l));
}

export function isInterruptError(e: unknown): boolean {
  if (!e || typeof e !== "object") return false;
  // the code of an abandoned cell, stopped where it resumed (a later cell that awaited its promise sees this too)
  if (isAbandonedError(e)) return true;
  // the engine's interrupt (TslabEngine.interrupt); a cell's synchronous code is stopped without an error
  return (e as { message?: unknown }).message === "Interrupted asynchronously";
}

/** The compiled JavaScript of a cell and its text, to map stack frames back (see cell-source.ts). */
export type CellSources = Map<string, { js: string; cell: string }>;

// "    at f (<In[3]>:3:28)" / "    at async <In[3]>:6:1"
const CELL_FRAME = /^(\s+at (?:async )?)(?:(.*) \()?<([^<>]+)>:(\d+):(\d+)\)?$/;

/**
 * Stack frames in cells become "at f (In[3], line 1, column 28)"; the innermost one is followed by an excerpt of its
 * cell with a caret, as IPython and Deno show them.
 */
function mapCellFrames(lines: string[], sources: CellSources): string[] {
  const out: string[] = [];
  let excerpted = false;
  for (const l of lines) {
    const m = CELL_FRAME.exec(l);
    const src = m ? sources.get(m[3]!) : undefined;
    // the wrapper's own call (its last line) is no frame of the user's
    if (m && src && Number(m[4]) === src.js.split("\n").length) continue;
    const pos = m && src ? cellPosition(src.js, src.cell, Number(m[4]), Number(m[5])) : null;
    if (!m || !src || !pos) {
      out.push(l);
      continue;
    }
    const where = `${m[3]}, line ${pos.line}, column ${pos.column}`;
    // earlier cells' functions are called as `exports.f`, which V8 names "Object.f" (the shared exports object)
    const fn = m[2]?.replace(/^(?:Object|Proxy)\./, "");
    out.push(`${m[1]}${fn ? `${fn} (${where})` : where}`);
    if (!excerpted) {
      excerpted = true;
      out.push(...excerpt(src.cell, pos.line, pos.column).map((e) => `      ${e}`));
    }
  }
  return out;
}

/** Turns anything a cell threw into the protocol's ename/evalue/traceback. */
export function toCellError(e: unknown, sources: CellSources = new Map()): CellError {
  if (isInterruptError(e)) {
    return { ename: INTERRUPT_ENAME, evalue: "Interrupted", traceback: [`${INTERRUPT_ENAME}: the cell was interrupted`], cause: e };
  }
  if (util.types.isNativeError(e) || e instanceof Error) {
    const err = e as Error;
    const ename = err.name || err.constructor?.name || "Error";
    let stack = typeof err.stack === "string" && err.stack ? userStack(err.stack, ename) : [`${ename}: ${err.message}`];
    // an error in what the cell asked for (the cell library's InputError: an option out of range, a missing folder)
    // says all in its message: the library's frames would read as a crash; the cells' frames say where it was asked
    if ((err as { inputError?: unknown }).inputError === true) stack = stack.filter((l) => !/^\s+at /.test(l) || [...sources.keys()].some((label) => l.includes(`<${label}>`)));
    return { ename, evalue: String(err.message ?? ""), traceback: mapCellFrames(stack, sources), cause: e };
  }
  // only an Error records where it was thrown: say so instead of leaving the user without a line
  const shown = util.inspect(e);
  const what = e === null || e === undefined ? String(e) : typeof e === "object" ? "an object that is not an Error" : `a ${typeof e}`;
  return { ename: "Error", evalue: shown, traceback: [`Uncaught ${shown}`, `(${what} was thrown, which carries no stack: throw new Error(...) to see the line)`], cause: e };
}

/**
 * The declarations later cells see, `next`, with the `declare global { … }` blocks of `prev` it lacks: tslab's
 * converter carries over earlier cells' declarations by the names they declare, and such a block declares none of
 * the cell's names, so it was dropped one cell after the one that wrote it.
 */
function withGlobalAugmentations(ts: CellTs, prev: string, next: string): string {
  const blocks = (text: string): string[] => {
    if (!text.includes("global")) return [];
    const sf = ts.createSourceFile("decl.d.ts", text, ts.ScriptTarget.Latest, false, ts.ScriptKind.TS);
    return sf.statements.filter((st) => ts.isModuleDeclaration(st) && (st.flags & ts.NodeFlags.GlobalAugmentation) !== 0)
      .map((st) => text.slice(st.getStart(sf), st.end));
  };
  const kept = new Set(blocks(next));
  const lost = blocks(prev).filter((b) => !kept.has(b));
  return lost.length ? `${next}\n${lost.join("\n")}\n` : next;
}

/** Type errors at the user's line and column, each with its excerpt. */
function compileError(code: string, rw: Rewritten | null, diagnostics: Diagnostic[]): CellError {
  const traceback: string[] = [];
  let first = "";
  let previous = "";
  for (const d of diagnostics) {
    // tslab's converter splits one diagnostic's message chain into one diagnostic per message, all at one place:
    // they continue the first, indented under its excerpt
    const place = `${d.fileName ?? ""}:${d.start.offset}:${d.end.offset}`;
    if (place === previous) {
      traceback.push(`    ${d.messageText}`);
      continue;
    }
    previous = place;
    if (d.fileName || !rw) {
      const line = `${d.fileName ? `${d.fileName} ` : ""}${d.start.line + 1}:${d.start.character + 1} - ${d.messageText}`;
      first ||= line;
      traceback.push(line);
      continue;
    }
    const start = originalOffset(rw, d.start.offset);
    const end = Math.max(start + 1, originalOffset(rw, d.end.offset));
    const at = lineColOf(code, start);
    const lineEnd = code.indexOf("\n", start);
    const line = `${at.line + 1}:${at.column + 1} - ${d.messageText}`;
    first ||= line;
    traceback.push(line, ...excerpt(code, at.line + 1, at.column + 1, Math.min(end, lineEnd < 0 ? code.length : lineEnd) - start).map((e) => `  ${e}`));
  }
  return { ename: "CompileError", evalue: first, traceback };
}

// ---------------------------------------------------------------------------------------------------------------

export interface TslabEngineOptions {
  /** Directory that cells' relative imports and `require` resolve from (the notebook's folder). */
  rootDir?: string;
  /** Names every cell sees (the kernel's `display`, `html`, `md`), with their TypeScript declarations. */
  globals?: { values: Record<string, unknown>; declarations: string };
}

/** What tslab's converter puts before a cell in the file it compiles (its `srcPrefix`: the cell is a module). */
const TSLAB_SOURCE_PREFIX = (ts: CellTs): string => "export {};" + ts.sys.newLine;

/** The name under which a cell's wrapper finds its `exports` and `require` (tslab used `__tslab__`). */
const CELL_GLOBAL = "__controlnet_ts_cell__";

/**
 * Runs cells with tslab's converter (type-check, declarations of earlier cells, emit) and our own executor: tslab's
 * executor ran cells without a file name (stack frames said `evalmachine.<anonymous>`), detected top-level await
 * only in simple expressions (`await (x as any).y` was a SyntaxError), and forgot the declarations of any cell that
 * failed or was interrupted. Here every cell runs as an async function named `<In[n]>`, and its declarations stay.
 */
export class TslabEngine implements CellEngine {
  /** The TypeScript version that compiles cells, without building the (slow) compiler. */
  static languageVersion(): string {
    return cellTypescript().version;
  }

  readonly info: { name: string; languageVersion: string };
  private readonly ts: CellTs;
  private readonly converterModule: TslabConverterModule;
  private readonly getCodeMetadata: (src: string) => CodeMetadata;
  private readonly node: TslabConverter;
  private browser: TslabConverter | null = null;
  /** Declarations of the cells so far (what later cells type-check against). */
  private prevDecl: string;
  private readonly exports: Record<string, unknown>;
  private readonly sources: CellSources = new Map();
  private readonly sideOutputs = new Map<string, string>();
  private readonly sideModules = new Map<string, Module>();
  private cells = 0;
  /** What the kernel last put in `_` (a different value there is the user's own). */
  private lastResult: unknown = undefined;
  private interruptNow: (e: Error) => void = () => {};
  private abandoned: () => boolean = () => false;

  constructor(opts: TslabEngineOptions = {}) {
    this.ts = cellTypescript();
    this.info = { name: "tslab", languageVersion: this.ts.version };
    this.converterModule = tslabRequire("./dist/converter.js") as TslabConverterModule;
    this.getCodeMetadata = (tslabRequire("./dist/metadata.js") as { getCodeMetadata: (s: string) => CodeMetadata }).getCodeMetadata;
    this.node = this.converterModule.createConverter({ isJS: false, isBrowser: false });
    this.exports = createExports();
    Object.assign(this.exports, opts.globals?.values ?? {});
    // Declarations of an "earlier cell" are what the converter makes visible (and rewrites to exports.x): the globals
    // are declared there, so later cells may also redeclare them.
    this.prevDecl = `declare let _: any;\n${opts.globals?.declarations ?? ""}`;
    const rootDir = opts.rootDir ?? process.cwd();
    const req = this.wrapRequire(Module.createRequire(path.join(rootDir, "src.js")), rootDir);
    // guard(v): where cell code resumes (after an `await`, in a `catch`), it stops if its cell was abandoned
    const guard = <T>(v: T): T => {
      if (this.abandoned()) throw abandonedError();
      return v;
    };
    // not enumerable: a cell that shows `globalThis` (or a bare `this`) sees the user's names, not the kernel's plumbing
    const hidden = (name: string, value: unknown) => Object.defineProperty(globalThis, name, { value, enumerable: false, configurable: true, writable: true });
    hidden(CELL_GLOBAL, { exports: this.exports, require: req, define: defineExport(this.exports) });
    hidden(RESUME_GUARD, guard);
  }

  private converter(meta: CodeMetadata): TslabConverter {
    if (meta.mode !== "browser") return this.node;
    // `/** @browser */` cells are rare; build their converter (hundreds of ms) only when one appears.
    return (this.browser ??= this.converterModule.createConverter({ isJS: false, isBrowser: true }));
  }

  async execute(code: string, opts: ExecuteOptions = {}): Promise<CellOutcome> {
    const meta = this.getCodeMetadata(code);
    try {
      if (meta.module) {
        // `/** @module name */`: a file other cells import (tslab's convention)
        const diags = this.converter(meta).addModule(meta.module, code, meta);
        return diags.length ? { status: "error", error: compileError(code, null, diags) } : { status: "ok", hasValue: false };
      }
      if (meta.mode === "browser") return { status: "ok", hasValue: false };
      const rw = rewriteCell(this.ts, code);
      const converted = compilingCell(rw.text, () => this.node.convert(this.prevDecl, rw.text));
      for (const out of converted.sideOutputs ?? []) {
        this.sideModules.delete(out.path);
        this.sideOutputs.set(out.path, out.data);
      }
      const shown = opts.shown ?? code;
      if (converted.diagnostics.length) return { status: "error", error: compileError(shown, rw, converted.diagnostics) };
      if (!converted.output) {
        this.prevDecl = withGlobalAugmentations(this.ts, this.prevDecl, converted.declOutput ?? "");
        return { status: "ok", hasValue: false };
      }
      return await this.run(shown, converted, opts.label ?? `cell ${++this.cells}`, opts, rw.lastVar);
    } catch (e) {
      // The compiler itself failed (not the user's code).
      return { status: "error", error: toCellError(e) };
    }
  }

  private async run(code: string, converted: Converted, label: string, opts: ExecuteOptions, lastVar?: string): Promise<CellOutcome> {
    // Always an async function: top-level await works wherever it is, and a synchronous throw is a rejection. Its
    // body starts after an `await`, as a promise job of a microtask checkpoint that holds nothing else (it is entered
    // from a macrotask of its own): an interrupt may then stop the cell's synchronous code anywhere (interrupts.ts)
    // without cutting through the kernel's frames or dropping the kernel's queued microtasks.
    // Where the cell's code resumes after waiting (every `await`, also in its functions, which later cells may call),
    // it first calls the guard, which throws if the code runs for a cell that the kernel abandoned: an interrupted
    // cell's loop must not go on in the background once the kernel replied (interrupting only stops the wait).
    const head = "(async function (exports, require) { await null; ";
    const body = globalizeTopLevelVariables(this.ts, definesThroughCellGlobal(converted.output!));
    const js = guardResumes(this.ts, `${head}${body}\n})(${CELL_GLOBAL}.exports, ${CELL_GLOBAL}.require)`, head.length);
    this.sources.set(label, { js, cell: code });
    opts.onCompiled?.(); // the cell's own JavaScript is ready: what runs from here is the cell
    let stopped = false;
    const interrupted = new Promise<never>((_, reject) => (this.interruptNow = (e) => reject((stopped = true, e))));
    interrupted.catch(() => {});
    let failure: { e: unknown } | null = null;
    try {
      await new Promise((r) => setImmediate(r));
      if (stopped) await interrupted; // interrupted before it started
      const promise = vm.runInThisContext(js, { filename: `<${label}>` }) as Promise<unknown>;
      await Promise.race([promise, interrupted]);
    } catch (e) {
      failure = { e };
    } finally {
      this.interruptNow = () => {};
    }
    // The cell's declarations stay even when it failed or was interrupted (as in IPython): names declared after the
    // point where it stopped exist and are undefined.
    this.prevDecl = withGlobalAugmentations(this.ts, this.prevDecl, converted.declOutput ?? "");
    const lastName = converted.lastExpressionVar ?? lastVar;
    const value = lastName ? this.exports[lastName] : undefined;
    // (assigned, not deleted: a delete turns `exports` into a slow dictionary object, and every cell's reads and writes
    // of its top-level variables go through it)
    if (lastName) this.exports[lastName] = undefined;
    if (failure) return { status: "error", error: toCellError(failure.e, this.sources) };
    if (value === undefined || value === null) return { status: "ok", hasValue: false };
    // an anonymous function or class as the last expression took the converter's variable's name (`const tsLastExpr =
    // x => x`): it is anonymous, as in the Node REPL (`[Function (anonymous)]`)
    if (typeof value === "function" && value.name === lastName) Object.defineProperty(value, "name", { value: "" });
    // `_`: the last result, as in IPython and the Node REPL — until a cell assigns `_` itself (lodash's `_`, a
    // throwaway): then it stays the user's, as both do, until it is set back to undefined (IPython's `del _`)
    if (!opts.keepLastResult && (this.exports._ === this.lastResult || this.exports._ === undefined)) this.exports._ = this.lastResult = value;
    return { status: "ok", hasValue: true, value };
  }

  describeError(e: unknown): CellError {
    return toCellError(e, this.sources);
  }

  /** require() for cells: `tslab` is tslab's own module, `/** @module *\/` cells resolve to their compiled output. */
  private wrapRequire(req: NodeJS.Require, dirname: string): NodeJS.Require {
    const fromSide = (id: string): unknown => {
      let filename = path.posix.join(dirname, id);
      if (path.extname(filename) === "") filename += ".js";
      const cached = this.sideModules.get(filename);
      if (cached) return cached.exports;
      const src = this.sideOutputs.get(filename);
      if (src === undefined) return null;
      // A local .ts module: where tsx loads .ts files (the kernel run from a source checkout), it loads it, with
      // source maps, so its stack frames name mymod.ts and its own lines (tslab's output is mymod.js, lines shifted).
      const source = filename.replace(/\.js$/, ".ts");
      if ((Module as unknown as { _extensions: Record<string, unknown> })._extensions[".ts"] && fs.existsSync(source)) {
        const exports = req(source) as unknown;
        this.sideModules.set(filename, { exports } as Module);
        return exports;
      }
      const mod = new Module(filename);
      mod.filename = filename;
      mod.paths = (Module as unknown as { _nodeModulePaths(d: string): string[] })._nodeModulePaths(path.dirname(filename));
      mod.require = this.wrapRequire(Module.createRequire(filename), path.dirname(filename));
      (mod as unknown as { _compile(src: string, file: string): void })._compile(src, filename);
      this.sideModules.set(filename, mod);
      return mod.exports;
    };
    return new Proxy(req, {
      apply: (_t, self, args: unknown[]) => {
        if (args.length !== 1 || typeof args[0] !== "string") return Reflect.apply(req, self, args);
        if (args[0] === "tslab") return tslabRequire(".");
        return fromSide(args[0]) ?? requireWithImportCondition(req, args[0]);
      },
    });
  }

  complete(code: string, cursor: number): Completion {
    const info = this.converter(this.getCodeMetadata(code)).complete(this.prevDecl, code, cursor);
    // tslab replaces only an identifier before the cursor; inside a string (a module name: 'node:f') TypeScript names
    // the span its completions replace, in the coordinates of tslab's file (the cell after tslab's `export {};` line)
    const span = info.original?.entries?.find((e) => e.replacementSpan)?.replacementSpan ?? info.original?.optionalReplacementSpan;
    if (span) {
      const start = span.start - TSLAB_SOURCE_PREFIX(this.ts).length;
      if (start <= cursor && cursor <= start + span.length) return { matches: info.candidates, start, end: start + span.length };
    }
    return { matches: info.candidates, start: info.start, end: info.end };
  }

  inspect(code: string, cursor: number): Inspection {
    const conv = this.converter(this.getCodeMetadata(code));
    // TypeScript answers a name it cannot resolve with a bare `any` of kind "" (no symbol): nothing found, as IPython
    // says of an undefined name
    const known = (i: QuickInfo | undefined): i is QuickInfo => !!i?.kind && !!i.displayParts?.length;
    let info = conv.inspect(this.prevDecl, code, cursor);
    if (!known(info)) {
      // inside a call's arguments (just after `(`, or after a `,`): the callee's signature, as IPython's Shift+Tab
      const callee = calleeEnd(code, cursor);
      if (callee !== null) info = conv.inspect(this.prevDecl, code, callee);
    }
    if (!known(info)) return { found: false };
    const text = (parts?: DisplayPart[]) => (parts ?? []).map((p) => p.text).join("");
    const sections = [text(info.displayParts)];
    const doc = text(info.documentation);
    if (doc) sections.push(doc);
    for (const tag of info.tags ?? []) sections.push(`@${tag.name} ${text(tag.text)}`.trimEnd());
    return { found: true, text: sections.join("\n\n") };
  }

  isComplete(code: string): CompleteCheck {
    const r = checkComplete(this.ts, code);
    return r.status === "incomplete" ? { status: "incomplete", indent: indentAfter(code) } : r;
  }

  interrupt(): void {
    this.interruptNow(new Error("Interrupted asynchronously"));
  }

  watchAbandoned(check: () => boolean): void {
    this.abandoned = check;
  }

  close(): void {
    this.node.close();
    this.browser?.close();
  }
}

/** The offset of the end of the callee name whose argument list holds `cursor` (null if none). */
function calleeEnd(code: string, cursor: number): number | null {
  let depth = 0;
  for (let i = cursor - 1; i >= 0; i--) {
    const c = code[i];
    if (c === ")" || c === "]" || c === "}") depth++;
    else if (c === "(" || c === "[" || c === "{") {
      if (depth > 0) {
        depth--;
        continue;
      }
      // inside an object literal or array argument (`cn.train({ until: 3, `): the call around it
      if (c !== "(") continue;
      let j = i;
      while (j > 0 && /\s/.test(code[j - 1]!)) j--;
      return j > 0 && /[\w$]/.test(code[j - 1]!) ? j - 1 : null;
    }
  }
  return null;
}

/** The indentation for the next line of an incomplete cell: the last line's, one level deeper after an opener. */
function indentAfter(code: string): string {
  // the last line with code on it (a console sends the text with its final newline)
  const line = /[^\n]*\S[^\n]*\s*$/.exec(code)?.[0].replace(/\s+$/, "") ?? "";
  const current = /^\s*/.exec(line)![0];
  return /[{([]\s*$/.test(line) ? current + "  " : current;
}

/** tslab's exports object for cells: named imports arrive through defineProperty, which must stay rewritable. */
/**
 * The cells' shared `exports`: a plain object, so a cell's top-level variables (`exports.x` in the emitted code) are
 * ordinary property accesses V8 optimises (through a Proxy a top-level loop ran ~20× slower than in a function).
 */
function createExports(): Record<string, unknown> {
  return {};
}

/**
 * What the emitted code's `Object.defineProperty(exports, …)` does instead (definesThroughCellGlobal): an import
 * re-exported, or a later cell's redeclaration, becomes a plain value a later cell may assign again — as a getter
 * without setter it could not be (a TypeError in the emitted strict code) — and `__esModule` is left out.
 */
function defineExport(exports: Record<string, unknown>) {
  return (o: object, prop: PropertyKey, attrs: PropertyDescriptor): object => {
    if (o !== exports) return Object.defineProperty(o, prop, attrs);
    if (prop !== "__esModule") exports[prop as string] = attrs.get ? attrs.get() : attrs.value;
    return o;
  };
}

/** The emitted code's definitions on `exports` (its own, and TypeScript's `__createBinding` helper's for `export *`)
 *  routed through defineExport. */
function definesThroughCellGlobal(js: string): string {
  return js.replaceAll("Object.defineProperty(exports, ", `${CELL_GLOBAL}.define(exports, `)
    .replaceAll("Object.defineProperty(o, k2, desc);", `${CELL_GLOBAL}.define(o, k2, desc);`);
}

/** tslab's display API (`import * as tslab from "tslab"; tslab.display.html(...)`) routed to `sink`. */
export function routeTslabDisplay(sink: (content: { data: Record<string, unknown>; metadata: Record<string, unknown>; transient?: { display_id?: string } }, update: boolean) => void): void {
  const jupyter = tslabRequire("./dist/jupyter.js") as { lastWriteDisplayData: unknown };
  jupyter.lastWriteDisplayData = sink;
}
