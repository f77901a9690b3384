/**
 * The kernel: Jupyter messaging 5.3 on top of a CellEngine.
 *
 * Output attribution. Every cell runs inside an AsyncLocalStorage context that carries its request's header, so
 * whatever the cell starts (promises, timers, training loops that outlive it) keeps writing to the cell that started
 * it: stdout/stderr, displays, comm messages, even unhandled rejections. Code with no cell context (module-level
 * work of a library loaded earlier) falls back to the running cell, then to the last one.
 *
 * Concurrency. Shell and control messages are handled as they arrive; only executions are queued (one at a time).
 * So completion, inspection, comm messages and interrupts are answered while a cell awaits (a training loop that
 * yields between steps), which is what live widgets and the Stop button need.
 *
 * Interrupts (SIGINT, `interrupt_mode: "signal"`, or interrupt_request on control) are received by a worker thread
 * (interrupts.ts), so they arrive while a cell blocks this thread. They abort the running cell's AbortSignal:
 * cooperative code (the library's training loop) stops at its next step boundary and keeps its state. A cell that
 * never asked for its signal is abandoned at once, and its synchronous code, if it holds the thread, is stopped;
 * code that asked and ignores it is abandoned after a grace period (or at once on a second interrupt) so the kernel
 * becomes usable again; the cell reports KeyboardInterrupt. An abandoned cell's code still pending stops where it
 * resumes (its next `await`), so it does not go on in the background.
 */
import { AsyncLocalStorage } from "node:async_hooks";
import crypto from "node:crypto";
import util from "node:util";
import type { Comm, DisplayOptions, KernelBridge } from "./bridge.js";
import { installBridge, uninstallBridge } from "./bridge.js";
import { address, Channels, type ConnectionInfo } from "./channels.js";
import { hideAsyncBookkeeping, normalizeBundle, plainText, toMimeBundle } from "./display.js";
import type { CellEngine, CellError } from "./engine.js";
import { INTERRUPT_ENAME, isAbandonedError } from "./engine.js";
import { History, type HistoryQuery } from "./history.js";
import { startInterruptWorker, type InterruptWorker } from "./interrupts.js";
import { log, rawStderr, rawStdout } from "./log.js";
import { decode, encode, newHeader, PROTOCOL_VERSION, Signer, WireError, type Header, type Message, type OutBuffer } from "./wire.js";

type Parent = Header | Record<string, never>;

/** What a running (or finished) cell's asynchronous work needs to find its way back to the right output. */
interface CellContext {
  parent: Header;
  identities: Buffer[];
  abort: AbortController;
  allowStdin: boolean;
  finished: boolean;
  /** The cell (or code it called) asked for its AbortSignal: something may stop cooperatively, so an interrupt
   *  waits the grace period for it. A cell that never asked is abandoned at once (a plain `await`). */
  signalAsked: boolean;
  /** The kernel stopped waiting for the cell (interrupted, replied KeyboardInterrupt): its code still pending, in
   *  its own context, stops where it resumes (the engine's guard at every `await`), so it does not run on unseen. */
  abandoned: boolean;
  /** The client's id of the notebook cell (execute_request metadata `cellId`: JupyterLab, Notebook 7 send it), or
   *  null: the cell helpers' memo keeps one result per cell by it (lib/cells/memo.ts). */
  cellId: string | null;
  /** Run when the cell's code has returned, before its result, reply and idle (bridge `beforeIdle`): an async
   *  display method's output, a throttled widget's last redraw — what a headless run, which stops listening at idle,
   *  must not miss. */
  beforeIdle: Array<() => unknown>;
}

/** An input() call: the first in the queue is the one asked (its input_request's msg_id, which the reply names). */
interface InputAsk {
  ctx: CellContext;
  prompt: string;
  password: boolean;
  resolve: (v: string) => void;
  reject: (e: Error) => void;
  msgId?: string;
}

interface CommEntry {
  comm: Comm;
  ctx: CellContext | null;
  onMsg: Array<(data: unknown, buffers: Buffer[]) => void>;
  onClose: Array<(data: unknown) => void>;
}

export interface KernelOptions {
  connection: ConnectionInfo;
  /** Created lazily (may take seconds); requests that need it wait. */
  engine: () => Promise<CellEngine>;
  implementation: { name: string; version: string };
  /** The engine's name and the version of the TypeScript that compiles cells (kernel_info must not wait for it). */
  language: { engine: string; version: string };
  /** Grace period between aborting a cell's signal and abandoning it (ms). */
  interruptGraceMs?: number;
  /** Called after the shutdown reply went out and the sockets are closed. */
  onShutdown?: (restart: boolean) => void;
}

const STREAM_FLUSH_MS = 15;
const STREAM_MAX_CHARS = 1 << 16;

/** IPython's cell and line timing magics, at the start of a cell. */
const TIME_MAGIC = /^%%?time(?=[ \t]|\r?\n|$)/;

/** `%%time` / `%time` as the first line, or `%time <statement>`: the cell with the magic blanked out (lines and
 *  columns stay), and whether it was there. */
function timeMagic(code: string): { timed: boolean; body: string } {
  const m = TIME_MAGIC.exec(code);
  return { timed: m !== null, body: m ? " ".repeat(m[0].length) + code.slice(m[0].length) : code };
}

/** 0.0123 → "12.3 ms", 4.5 → "4.50 s", 125 → "2 min 5 s" (IPython's %time style). */
export function formatSeconds(s: number): string {
  if (s < 1) return `${(s * 1000).toPrecision(3)} ms`;
  if (s < 60) return `${s.toFixed(2)} s`;
  return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
}

/** Jupyter counts cursor positions in code points, JavaScript strings in UTF-16 units. */
export function codePointsToUtf16(s: string, cp: number): number {
  let i = 0;
  for (let n = 0; n < cp && i < s.length; n++) i += (s.codePointAt(i)! > 0xffff ? 2 : 1);
  return i;
}
export function utf16ToCodePoints(s: string, idx: number): number {
  let n = 0;
  for (let i = 0; i < idx && i < s.length; n++) i += (s.codePointAt(i)! > 0xffff ? 2 : 1);
  return n;
}

export class Kernel {
  private readonly channels: Channels;
  private readonly signer: Signer;
  private readonly session = crypto.randomUUID();
  private readonly cells = new AsyncLocalStorage<CellContext>();
  private enginePromise: Promise<CellEngine> | null = null;
  /** The engine once started (console output maps errors' stacks with it). */
  private engineNow: CellEngine | null = null;
  private executionCount = 0;
  private execQueue: Promise<void> = Promise.resolve();
  /** Bumped when a cell fails with stop_on_error: executions queued before that are answered "aborted". */
  private abortGeneration = 0;
  private running: CellContext | null = null;
  private lastCell: CellContext | null = null;
  private forceTimer: NodeJS.Timeout | null = null;
  private pendingStream: { parent: Header; name: "stdout" | "stderr"; text: string } | null = null;
  /** When stream text last went out (performance.now()). */
  private lastStreamAt = -Infinity;
  private streamTimer: NodeJS.Timeout | null = null;
  private readonly history = new History();
  private readonly comms = new Map<string, CommEntry>();
  private readonly commTargets = new Map<string, (comm: Comm, data: unknown, buffers: Buffer[]) => void>();
  private readonly inputs: InputAsk[] = [];
  /** Bridge `onShutdown` callbacks (the cell library's: checkpoint a trainer's unsaved steps). */
  private readonly shutdownHooks: Array<() => unknown> = [];
  private closed = false;
  private closing = false;
  private interrupts: InterruptWorker | null = null;
  private readonly restoreIo: Array<() => void> = [];

  constructor(private readonly opts: KernelOptions) {
    this.channels = new Channels(opts.connection);
    this.signer = new Signer(opts.connection.key, opts.connection.signature_scheme);
  }

  // ------------------------------------------------------------------------------------------------- lifecycle

  async start(): Promise<void> {
    await this.channels.bind();
    const c = this.opts.connection;
    this.interrupts = await startInterruptWorker({
      controlAddress: address(c, c.control_port),
      key: c.key,
      log,
      target: { interrupt: (source) => this.interrupt(source), mayTerminateCurrent: () => this.mayTerminateCurrent() },
    });
    this.interrupts.onControl((frames) => this.receive("control", frames));
    this.publish("status", { execution_state: "starting" }, {});
    this.captureProcessOutput();
    this.installProcessHandlers();
    installBridge(this.bridge());
    this.engine().catch((e) => log(`engine failed to start: ${(e as Error).stack ?? e}`));
    void this.serve("shell");
    void this.serve("stdin");
    log(`listening (session ${this.session}, ${this.opts.connection.transport}://${this.opts.connection.ip})`);
  }

  private engine(): Promise<CellEngine> {
    return (this.enginePromise ??= this.opts.engine().then((engine) => {
      this.engineNow = engine;
      engine.watchAbandoned(() => this.cells.getStore()?.abandoned === true);
      return engine;
    }));
  }

  private async serve(channel: "shell" | "stdin"): Promise<void> {
    const socket = this.channels[channel];
    try {
      for await (const frames of socket) this.receive(channel, frames);
    } catch (e) {
      if (!this.closed) log(`${channel} socket failed: ${(e as Error).stack ?? e}`);
    }
  }

  /**
   * Handles a message in a macrotask of its own: what it resolves (an input() reply, a comm callback's promises) may
   * run a cell's code, and an interrupt that stops that code drops the microtasks queued behind it, which must not
   * include the socket's receive loop.
   */
  private receive(channel: "shell" | "control" | "stdin", frames: Buffer[]): void {
    setImmediate(() => {
      let msg: Message;
      try {
        msg = decode(frames, this.signer);
      } catch (e) {
        if (e instanceof WireError) log(`${channel}: rejected a message: ${e.message}`);
        else log(`${channel}: ${(e as Error).stack}`);
        return;
      }
      // Not awaited: a long execution must not block completions, comms or interrupts.
      void this.dispatch(channel, msg).catch((e) => log(`${channel} ${msg.header.msg_type}: ${(e as Error).stack ?? e}`));
    });
  }

  async shutdown(restart: boolean): Promise<void> {
    if (this.closed || this.closing) return;
    this.closing = true;
    await this.beforeShutdown();
    this.flushStream(); // (what the shutdown hooks said: sent before IOPub closes)
    this.closed = true;
    for (const r of this.restoreIo.splice(0)) r();
    uninstallBridge();
    await this.channels.close();
    await this.interrupts?.close();
    if (this.enginePromise) (await this.enginePromise.catch(() => null))?.close();
    this.opts.onShutdown?.(restart);
  }

  // --------------------------------------------------------------------------------------------------- sending

  /** Returns the message's msg_id (what a reply to it names as its parent). */
  private send(channel: "shell" | "control" | "stdin" | "iopub", identities: Buffer[], msgType: string, content: unknown, parent: Parent, metadata: Record<string, unknown> = {}, buffers: OutBuffer[] = []): string {
    const header = newHeader(msgType, this.session);
    if (this.closed && channel === "iopub") return header.msg_id;
    const frames = encode(this.signer, identities, header, parent, metadata, content, buffers);
    if (channel === "control") this.interrupts?.sendControl(frames);
    else this.channels.out[channel].send(frames);
    return header.msg_id;
  }

  /** IOPub: anything pending on a stream goes out first, so output keeps its order. */
  private publish(msgType: string, content: unknown, parent: Parent, metadata: Record<string, unknown> = {}, buffers: OutBuffer[] = []): void {
    this.flushStream();
    const topic = Buffer.from(`kernel.${this.session}.${msgType}`);
    this.send("iopub", [topic], msgType, content, parent, metadata, buffers);
  }

  private reply(channel: "shell" | "control", req: Message, msgType: string, content: unknown, metadata: Record<string, unknown> = {}): void {
    this.send(channel, req.identities, msgType, content, req.header, metadata);
  }

  private stream(ctx: CellContext, name: "stdout" | "stderr", text: string): void {
    if (!text) return;
    const p = this.pendingStream;
    if (p && p.parent === ctx.parent && p.name === name) p.text += text;
    else {
      this.flushStream();
      this.pendingStream = { parent: ctx.parent, name, text };
    }
    // text goes at once when nothing went for the interval, else with the next write after it or the timer: the timer
    // cannot fire while a cell's synchronous code holds this thread, and the IOPub thread sends meanwhile (a line
    // printed before a long synchronous block shows before it ends, a loop's lines as they are printed)
    if (this.pendingStream!.text.length >= STREAM_MAX_CHARS || performance.now() - this.lastStreamAt >= STREAM_FLUSH_MS) this.flushStream();
    else if (!this.streamTimer) this.streamTimer = setTimeout(() => this.flushStream(), STREAM_FLUSH_MS);
  }

  private flushStream(): void {
    if (this.streamTimer) clearTimeout(this.streamTimer);
    this.streamTimer = null;
    const p = this.pendingStream;
    if (!p) return;
    this.pendingStream = null;
    this.lastStreamAt = performance.now();
    const topic = Buffer.from(`kernel.${this.session}.stream`);
    this.send("iopub", [topic], "stream", { name: p.name, text: p.text }, p.parent);
  }

  // ----------------------------------------------------------------------------------------- output routing

  /** The cell that output produced right now belongs to. */
  private outputContext(): CellContext | null {
    return this.cells.getStore() ?? this.running ?? this.lastCell;
  }

  private captureProcessOutput(): void {
    for (const name of ["stdout", "stderr"] as const) {
      const stream = process[name];
      const original = stream.write;
      const raw = name === "stdout" ? rawStdout : rawStderr;
      const kernel = this;
      stream.write = function (chunk: unknown, encoding?: unknown, cb?: unknown): boolean {
        const done = typeof encoding === "function" ? encoding : cb;
        const ctx = kernel.closed ? null : kernel.outputContext();
        if (!ctx) return (raw as (...a: unknown[]) => boolean)(chunk, encoding, cb);
        const text = typeof chunk === "string" ? chunk : Buffer.from(chunk as Uint8Array).toString(typeof encoding === "string" ? (encoding as BufferEncoding) : "utf8");
        kernel.stream(ctx, name, text);
        if (typeof done === "function") process.nextTick(done as () => void);
        return true;
      } as typeof stream.write;
      this.restoreIo.push(() => (stream.write = original));
    }
    // console.log(promise) inspects as the cell's result does (`Promise { 3 }`, no async-hook bookkeeping), and
    // console.error(err) shows its stack as a thrown one's (cell lines, no kernel frames)
    const kernel = this;
    for (const name of ["log", "info", "warn", "error", "debug", "dir", "dirxml", "table", "trace"] as const) {
      const original = console[name];
      console[name] = function (this: Console, ...args: unknown[]) {
        for (const a of args) hideAsyncBookkeeping(a);
        const shown = args.map((a) => (util.types.isNativeError(a) ? { [util.inspect.custom]: () => kernel.errorText(a) } : a));
        return (original as (...a: unknown[]) => void).apply(this, shown);
      } as typeof original;
      this.restoreIo.push(() => (console[name] = original));
    }
  }

  /** An error as the cells' errors read: the engine maps its frames to cell lines (a timer's, a late rejection's, a
   *  logged or returned Error's) and drops the kernel's; before the engine started, its own stack. */
  private errorText(err: unknown): string {
    if (this.engineNow) return this.engineNow.describeError(err).traceback.join("\n");
    return util.types.isNativeError(err) ? ((err as Error).stack ?? String(err)) : util.inspect(err);
  }

  private installProcessHandlers(): void {
    const report = (what: string, err: unknown) => {
      const ctx = this.outputContext();
      const text = this.errorText(err);
      if (ctx && !this.closed) this.stream(ctx, "stderr", `${what}: ${text}\n`);
      else log(`${what}: ${text}`);
    };
    // an abandoned cell's code that the engine stopped where it resumed is no error of the user's: the cell already
    // reported KeyboardInterrupt
    const onRejection = (reason: unknown) => isAbandonedError(reason) || report("Unhandled promise rejection", reason);
    const onException = (err: unknown) => isAbandonedError(err) || report("Uncaught exception", err);
    // SIGINT is the interrupt worker's (it also sees it while a cell blocks this thread); this listener is the
    // fallback where the worker could not take it, and keeps the default action (exit) away in both cases.
    const onSigint = () => {
      if (!this.interrupts?.handlesSigint) this.interrupt("SIGINT");
    };
    // Kept for the life of the process (also while shutting down): an error then must not turn a clean exit
    // into a crash.
    process.on("unhandledRejection", onRejection);
    process.on("uncaughtException", onException);
    process.on("SIGINT", onSigint);
  }

  // ---------------------------------------------------------------------------------------------- dispatch

  private async dispatch(channel: "shell" | "control" | "stdin", msg: Message): Promise<void> {
    const type = msg.header.msg_type;
    if (channel === "stdin") {
      if (type === "input_reply") this.onInputReply(msg);
      else log(`stdin: unexpected ${type}`);
      return;
    }
    if (type === "execute_request" && channel === "shell") {
      // Queued; busy/idle are published when it actually runs, so `idle` means "this cell is done".
      const generation = this.abortGeneration;
      this.execQueue = this.execQueue.then(() => this.withStatus(msg, () => this.execute(msg, generation)));
      return this.execQueue;
    }
    await this.withStatus(msg, async () => {
      const c = msg.content as Record<string, unknown>;
      switch (type) {
        case "kernel_info_request":
          // Clients treat the first kernel_info reply as "ready" (jupyter_client's wait_for_ready, nbclient), so
          // it waits for the compiler to exist: the first cell then runs without a long silent pause.
          await this.engine().catch(() => null);
          return this.reply(channel, msg, "kernel_info_reply", this.kernelInfo());
        case "complete_request":
          return this.reply(channel, msg, "complete_reply", await this.complete(String(c.code ?? ""), Number(c.cursor_pos ?? 0)));
        case "inspect_request":
          return this.reply(channel, msg, "inspect_reply", await this.inspect(String(c.code ?? ""), Number(c.cursor_pos ?? 0)));
        case "is_complete_request":
          return this.reply(channel, msg, "is_complete_reply", await this.isComplete(String(c.code ?? "")));
        case "history_request":
          return this.reply(channel, msg, "history_reply", { status: "ok", history: this.history.query(c as HistoryQuery) });
        case "comm_info_request":
          return this.reply(channel, msg, "comm_info_reply", this.commInfo(c.target_name as string | undefined));
        case "comm_open":
          return this.onCommOpen(msg);
        case "comm_msg":
          return this.onCommMsg(msg);
        case "comm_close":
          return this.onCommClose(msg);
        case "interrupt_request":
          // already started by the interrupt worker, which read it first
          if (!this.interrupts) this.interrupt("interrupt_request");
          return this.reply(channel, msg, "interrupt_reply", { status: "ok" });
        case "shutdown_request": {
          const restart = !!c.restart;
          this.reply(channel, msg, "shutdown_reply", { status: "ok", restart });
          this.publish("status", { execution_state: "idle" }, msg.header);
          setImmediate(() => void this.shutdown(restart));
          return;
        }
        default:
          log(`${channel}: unsupported message type ${type}`);
      }
    });
  }

  private async withStatus(msg: Message, fn: () => Promise<void> | void): Promise<void> {
    if (this.closed) return;
    this.publish("status", { execution_state: "busy" }, msg.header);
    try {
      await fn();
    } finally {
      if (!this.closed) {
        this.publish("status", { execution_state: "idle" }, msg.header);
        // Frontends show the last status they saw as the kernel's state: a completion answered while a cell
        // trains must not leave the kernel looking idle.
        const running = this.running;
        if (running && running.parent !== msg.header) this.publish("status", { execution_state: "busy" }, running.parent);
      }
    }
  }

  private kernelInfo(): Record<string, unknown> {
    const { engine, version } = this.opts.language;
    return {
      status: "ok",
      protocol_version: PROTOCOL_VERSION,
      implementation: this.opts.implementation.name,
      implementation_version: this.opts.implementation.version,
      language_info: {
        name: "typescript",
        version,
        mimetype: "text/typescript",
        file_extension: ".ts",
        // a language name: JupyterLab 4 looks codemirror_mode up by name, then by its own MIME type
        // (application/typescript), and shows plain text when neither matches ("text/typescript" did not)
        codemirror_mode: "typescript",
        pygments_lexer: "typescript",
      },
      banner: `${this.opts.implementation.name} ${this.opts.implementation.version}: TypeScript ${version} (${engine}) on Node ${process.version}`,
      help_links: [],
    };
  }

  // ---------------------------------------------------------------------------------------------- execute

  private async execute(req: Message, generation: number): Promise<void> {
    const c = req.content as { code?: string; silent?: boolean; store_history?: boolean; allow_stdin?: boolean; stop_on_error?: boolean; user_expressions?: unknown };
    const code = String(c.code ?? "");
    const silent = !!c.silent;
    const storeHistory = c.store_history ?? !silent;
    const stopOnError = c.stop_on_error ?? true;
    if (generation !== this.abortGeneration || this.closing) {
      this.reply("shell", req, "execute_reply", { status: "aborted", execution_count: this.executionCount });
      return;
    }
    if (!silent && storeHistory) this.executionCount++;
    const count = this.executionCount;
    if (!silent && storeHistory) this.history.record(count, code);
    if (!silent) this.publish("execute_input", { code, execution_count: count }, req.header);

    const ctx: CellContext = { parent: req.header, identities: req.identities, abort: new AbortController(), allowStdin: c.allow_stdin ?? true, finished: false, signalAsked: false, abandoned: false,
      cellId: typeof req.metadata.cellId === "string" && req.metadata.cellId ? req.metadata.cellId : null, beforeIdle: [] };
    this.running = ctx;
    this.lastCell = ctx;
    let error: CellError | null = null;
    let expressions: Record<string, unknown> = {};
    try {
      const engine = await this.engine();
      // `%%time` / `%time` as the first line, or `%time <statement>` (IPython's line magic): the cell runs with the
      // magic blanked out (so lines and columns stay) and its wall time is printed after it, unless it did not compile
      const { timed, body } = timeMagic(code);
      const t0 = performance.now();
      let compiled: number | null = null;
      const onCompiled = () => { compiled = performance.now(); };
      const outcome = await this.cells.run(ctx, () => engine.execute(body, silent ? { onCompiled } : { label: `In[${count}]`, shown: code, onCompiled }));
      if (timed && compiled !== null) {
        // IPython's: the statement's wall time, and the compile's apart when it took 0.1 s or more
        const ran = `Wall time: ${formatSeconds((performance.now() - compiled) / 1000)}\n`;
        const compile = (compiled - t0) / 1000;
        this.stream(ctx, "stdout", compile >= 0.1 ? `${ran}Compiler : ${formatSeconds(compile)}\n` : ran);
      }
      // A promise the cell rejected without handling is reported (on its stderr) when the current macrotask ends:
      // wait for that, so the report comes before the reply and idle (headless runs stop listening at idle).
      await new Promise((r) => setImmediate(r));
      await this.runBeforeIdle(ctx);
      if (outcome.status === "error") error = outcome.error;
      else if (outcome.hasValue && !silent && !ctx.abort.signal.aborted) {
        try {
          // an Error as the result shows its stack as a thrown one does: at the cells' lines, without the kernel's frames
          const data = util.types.isNativeError(outcome.value)
            ? { "text/plain": this.errorText(outcome.value) }
            : await this.cells.run(ctx, () => toMimeBundle(outcome.value));
          this.publish("execute_result", { execution_count: count, data, metadata: {} }, req.header);
          if (storeHistory) this.history.setOutput(count, String(data["text/plain"] ?? ""));
        } catch (e) {
          // as IPython when a _repr_*_ fails: say why (at the cell's lines), and show the value as plain text
          this.stream(ctx, "stderr", `could not display the result with its own display method: ${this.errorText(e)}\n`);
          const data = { "text/plain": plainText(outcome.value) };
          this.publish("execute_result", { execution_count: count, data, metadata: {} }, req.header);
          if (storeHistory) this.history.setOutput(count, data["text/plain"]);
        }
      }
      if (outcome.status === "ok" && !ctx.abort.signal.aborted) expressions = await this.userExpressions(ctx, engine, c.user_expressions);
    } catch (e) {
      error = { ename: "KernelError", evalue: String((e as Error).message ?? e), traceback: String((e as Error).stack ?? e).split("\n") };
    } finally {
      ctx.finished = true;
      // those an interrupt or a kernel error left, or added since: they still start, unawaited (a widget counts on its
      // flush running); later ones are refused (the cell is finished)
      void this.startBeforeIdle(ctx, ctx.beforeIdle.splice(0));
      this.cancelInputs((a) => a.ctx === ctx, () => new Error("input request cancelled: its cell ended before the answer came"));
      if (this.forceTimer) clearTimeout(this.forceTimer);
      this.forceTimer = null;
      if (this.running === ctx) this.running = null;
    }
    // An interrupted cell is reported as interrupted even when its loop returned cleanly at the abort.
    if (ctx.abort.signal.aborted && error?.ename !== INTERRUPT_ENAME) {
      error = { ename: INTERRUPT_ENAME, evalue: "Interrupted", traceback: [`${INTERRUPT_ENAME}: the cell was interrupted`] };
    }
    if (error) {
      const { ename, evalue, traceback } = error;
      if (!silent) this.publish("error", { ename, evalue, traceback }, req.header);
      this.reply("shell", req, "execute_reply", { status: "error", execution_count: count, ename, evalue, traceback });
      if (stopOnError) this.abortGeneration++;
    } else {
      this.flushStream();
      this.reply("shell", req, "execute_reply", { status: "ok", execution_count: count, user_expressions: expressions, payload: [] });
    }
  }

  /**
   * The request's user_expressions, evaluated after a cell that succeeded (after an error none are, as in IPython):
   * each becomes its value's display bundle or the error it raised, and never fails the cell or changes `_`.
   */
  private async userExpressions(ctx: CellContext, engine: CellEngine, asked: unknown): Promise<Record<string, unknown>> {
    const out: Record<string, unknown> = {};
    if (!asked || typeof asked !== "object") return out;
    const failed = ({ ename, evalue, traceback }: CellError) => ({ status: "error", ename, evalue, traceback });
    for (const [name, expression] of Object.entries(asked as Record<string, unknown>)) {
      const outcome = await this.cells.run(ctx, () => engine.execute(String(expression), { label: `user_expressions[${JSON.stringify(name)}]`, keepLastResult: true }));
      if (outcome.status === "error") {
        out[name] = failed(outcome.error);
        continue;
      }
      try {
        const data = outcome.hasValue ? await this.cells.run(ctx, () => toMimeBundle(outcome.value)) : { "text/plain": "undefined" };
        out[name] = { status: "ok", data, metadata: {} };
      } catch (e) {
        out[name] = failed(engine.describeError(e));
      }
    }
    return out;
  }

  /** SIGINT or interrupt_request. */
  interrupt(source: string): void {
    const ctx = this.running;
    if (!ctx) return;
    if (!ctx.abort.signal.aborted) {
      log(`${source}: aborting the running cell`);
      ctx.abort.abort();
      if (!ctx.signalAsked) this.abandon(ctx);
      else this.forceTimer = setTimeout(() => this.abandon(ctx), this.opts.interruptGraceMs ?? 5000);
    } else {
      this.abandon(ctx);
    }
    // A cell waiting for input is unblocked too.
    this.cancelInputs(() => true, () => Object.assign(new Error("Interrupted"), { name: INTERRUPT_ENAME }));
  }

  /**
   * Asked by the interrupt worker at an arbitrary point of this thread: whether the code running right now belongs to
   * the running cell and may be stopped, because the cell never asked for its abort signal (code that asked stops by
   * itself at a safe point, a training step boundary, and must not be cut off in the middle of one).
   */
  private mayTerminateCurrent(): boolean {
    const ctx = this.cells.getStore();
    return !!ctx && ctx === this.running && !ctx.finished && !ctx.signalAsked;
  }

  private abandon(ctx: CellContext): void {
    if (ctx.finished || this.running !== ctx) return;
    log(ctx.signalAsked ? "the cell ignored its abort signal: no longer waiting for it" : "the cell does not watch its abort signal: no longer waiting for it");
    ctx.abandoned = true;
    // (checked again a microtask later: by then this cell may have ended and the next one started, which no
    // interrupt was meant for)
    void this.enginePromise?.then((e) => { if (this.running === ctx && !ctx.finished) e.interrupt(); });
  }

  // ------------------------------------------------------------------------------ completion and inspection

  private async complete(code: string, cursorPos: number): Promise<Record<string, unknown>> {
    const engine = await this.engine();
    try {
      const r = engine.complete(code, codePointsToUtf16(code, cursorPos));
      return { status: "ok", matches: r.matches, cursor_start: utf16ToCodePoints(code, r.start), cursor_end: utf16ToCodePoints(code, r.end), metadata: {} };
    } catch (e) {
      log(`complete: ${(e as Error).stack ?? e}`);
      return { status: "ok", matches: [], cursor_start: cursorPos, cursor_end: cursorPos, metadata: {} };
    }
  }

  private async inspect(code: string, cursorPos: number): Promise<Record<string, unknown>> {
    const engine = await this.engine();
    try {
      const r = engine.inspect(code, codePointsToUtf16(code, cursorPos));
      return { status: "ok", found: r.found, data: r.found ? { "text/plain": r.text } : {}, metadata: {} };
    } catch (e) {
      log(`inspect: ${(e as Error).stack ?? e}`);
      return { status: "ok", found: false, data: {}, metadata: {} };
    }
  }

  private async isComplete(code: string): Promise<Record<string, unknown>> {
    const engine = await this.engine();
    // (the magic dropped, not blanked: blanks before the code would be taken for its indentation)
    const m = TIME_MAGIC.exec(code);
    const r = engine.isComplete(m ? code.slice(m[0].length).replace(/^[ \t]*/, "") : code);
    return r.status === "incomplete" ? { status: r.status, indent: r.indent ?? "" } : { status: r.status };
  }

  // -------------------------------------------------------------------------------------------------- comms

  private makeComm(id: string, target: string, ctx: CellContext | null): CommEntry {
    const entry: CommEntry = { ctx, onMsg: [], onClose: [], comm: null as unknown as Comm };
    const parentNow = (): Parent => (this.cells.getStore() ?? entry.ctx ?? this.outputContext())?.parent ?? {};
    entry.comm = {
      id,
      target,
      send: (data, buffers = []) => {
        if (!this.comms.has(id)) throw new Error(`comm ${id} is closed`);
        this.publish("comm_msg", { comm_id: id, data: data ?? {} }, parentNow(), {}, buffers);
      },
      close: (data) => {
        if (!this.comms.delete(id)) return;
        this.publish("comm_close", { comm_id: id, data: data ?? {} }, parentNow());
      },
      onMsg: (cb) => void entry.onMsg.push(cb),
      onClose: (cb) => void entry.onClose.push(cb),
    };
    this.comms.set(id, entry);
    return entry;
  }

  /** Runs a comm callback in the context of the cell that owns the comm, reporting its errors there. */
  private runCommCallback(entry: CommEntry, fn: () => void): void {
    const body = () => {
      try {
        fn();
      } catch (e) {
        const ctx = this.outputContext();
        const text = `comm ${entry.comm.target} handler failed: ${(e as Error).stack ?? e}\n`;
        if (ctx) this.stream(ctx, "stderr", text);
        else log(text);
      }
    };
    // A comm message is new work, not the rest of an interrupted cell: a widget's handler made by a cell that was
    // later interrupted still runs (as the same cell's output), and its awaits are not stopped.
    const ctx = entry.ctx?.abandoned ? { ...entry.ctx, abandoned: false } : entry.ctx;
    if (ctx) this.cells.run(ctx, body);
    else body();
  }

  private onCommOpen(msg: Message): void {
    const c = msg.content as { comm_id?: string; target_name?: string; data?: unknown };
    const id = String(c.comm_id ?? "");
    const target = String(c.target_name ?? "");
    const handler = this.commTargets.get(target);
    if (!id) return;
    if (!handler) {
      // The frontend must learn the comm is dead (ipywidgets waits otherwise).
      this.publish("comm_close", { comm_id: id, data: {} }, msg.header);
      return;
    }
    const entry = this.makeComm(id, target, this.outputContext());
    this.runCommCallback(entry, () => handler(entry.comm, c.data ?? {}, msg.buffers));
  }

  private onCommMsg(msg: Message): void {
    const c = msg.content as { comm_id?: string; data?: unknown };
    const entry = this.comms.get(String(c.comm_id ?? ""));
    if (!entry) return log(`comm_msg for unknown comm ${c.comm_id}`);
    for (const cb of entry.onMsg) this.runCommCallback(entry, () => cb(c.data ?? {}, msg.buffers));
  }

  private onCommClose(msg: Message): void {
    const c = msg.content as { comm_id?: string; data?: unknown };
    const id = String(c.comm_id ?? "");
    const entry = this.comms.get(id);
    if (!entry) return;
    this.comms.delete(id);
    for (const cb of entry.onClose) this.runCommCallback(entry, () => cb(c.data ?? {}));
  }

  private commInfo(targetName?: string): Record<string, unknown> {
    const comms: Record<string, { target_name: string }> = {};
    for (const [id, e] of this.comms) if (!targetName || e.comm.target === targetName) comms[id] = { target_name: e.comm.target };
    return { status: "ok", comms };
  }

  // -------------------------------------------------------------------------------------------------- stdin

  /** input(): asked at once, or after the requests before it are answered (`Promise.all` of two inputs asks twice). */
  private input(prompt: string, password: boolean): Promise<string> {
    const ctx = this.cells.getStore() ?? this.running;
    if (!ctx || ctx.finished) return Promise.reject(new Error("input() can only be used while a cell runs"));
    if (!ctx.allowStdin) return Promise.reject(Object.assign(new Error("this frontend does not support input requests"), { name: "StdinNotImplementedError" }));
    return new Promise<string>((resolve, reject) => {
      this.inputs.push({ ctx, prompt, password, resolve, reject });
      this.askNextInput();
    });
  }

  private askNextInput(): void {
    const next = this.inputs[0];
    if (!next || next.msgId) return;
    this.flushStream();
    next.msgId = this.send("stdin", next.ctx.identities, "input_request", { prompt: next.prompt, password: next.password }, next.ctx.parent);
  }

  /** Rejects (and forgets) the input calls `which` picks; the next one left is asked. A reply to a cancelled request
   *  that was already asked is dropped when it comes. */
  private cancelInputs(which: (a: InputAsk) => boolean, error: () => Error): void {
    for (let i = this.inputs.length - 1; i >= 0; i--) {
      if (which(this.inputs[i]!)) this.inputs.splice(i, 1)[0]!.reject(error());
    }
    this.askNextInput();
  }

  private onInputReply(msg: Message): void {
    // JupyterLab names the request it answers (parent_header); jupyter_client's input() names none: the oldest asked
    const asked = msg.parent_header.msg_id;
    const i = this.inputs.findIndex((a) => a.msgId !== undefined && (asked === undefined || a.msgId === asked));
    if (i < 0) return log(`input_reply to ${asked ?? "no request"}: not waiting for it (its cell ended or was interrupted)`);
    const p = this.inputs.splice(i, 1)[0]!;
    const c = msg.content as { value?: unknown; status?: string };
    if (c.status && c.status !== "ok") p.reject(new Error(`input request failed: ${c.status}`));
    else p.resolve(String(c.value ?? ""));
    this.askNextInput();
  }

  // ------------------------------------------------------------------------------------------- cell end, shutdown

  /** The cell's beforeIdle callbacks (and those they add), awaited; an interrupt stops the wait. */
  private async runBeforeIdle(ctx: CellContext): Promise<void> {
    const interrupted = new Promise<void>((r) => (ctx.abort.signal.aborted ? r() : ctx.abort.signal.addEventListener("abort", () => r(), { once: true })));
    while (ctx.beforeIdle.length && !ctx.abort.signal.aborted) {
      await Promise.race([this.startBeforeIdle(ctx, ctx.beforeIdle.splice(0)), interrupted]);
    }
  }

  /** Runs beforeIdle callbacks in their cell's context; an error is reported on the cell's stderr. */
  private startBeforeIdle(ctx: CellContext, batch: Array<() => unknown>): Promise<unknown> {
    return Promise.allSettled(batch.map((cb) => this.cells.run(ctx, async () => {
      try {
        await cb();
      } catch (e) {
        this.stream(ctx, "stderr", `${this.errorText(e)}\n`);
      }
    })));
  }

  /** Before the sockets close: a running cell is interrupted and given its grace to stop at a step boundary, queued
   *  ones are answered aborted, then the onShutdown callbacks run (a trainer's unsaved steps become a checkpoint). */
  private async beforeShutdown(): Promise<void> {
    this.abortGeneration++;
    const running = this.running;
    if (running) {
      this.interrupt("shutdown");
      const grace = new Promise((r) => setTimeout(r, (this.opts.interruptGraceMs ?? 5000) + 1000).unref());
      await Promise.race([this.execQueue, grace]);
    }
    for (const hook of this.shutdownHooks.splice(0)) {
      try {
        await hook();
      } catch (e) {
        log(`shutdown: ${(e as Error).stack ?? e}`);
      }
    }
  }

  // ------------------------------------------------------------------------------------------------- bridge

  private bridge(): KernelBridge {
    const kernel = this;
    const parentNow = (): Parent => this.outputContext()?.parent ?? {};
    const neverAborted = new AbortController().signal;
    return {
      kernel: { ...this.opts.implementation },
      display(bundle: Record<string, unknown>, opts: DisplayOptions = {}): void {
        const content: Record<string, unknown> = { data: normalizeBundle(bundle), metadata: opts.metadata ?? {}, transient: {} };
        if (opts.displayId) content.transient = { display_id: opts.displayId };
        if (opts.update && !opts.displayId) throw new Error("display(..., {update: true}) needs a displayId");
        kernel.publish(opts.update ? "update_display_data" : "display_data", content, parentNow());
      },
      clearOutput(wait = false): void {
        kernel.publish("clear_output", { wait }, parentNow());
      },
      abortSignal(): AbortSignal {
        const ctx = kernel.cells.getStore() ?? kernel.running;
        if (ctx) ctx.signalAsked = true;
        return ctx?.abort.signal ?? neverAborted;
      },
      cellId(): string | null {
        return (kernel.cells.getStore() ?? kernel.running)?.cellId ?? null;
      },
      openComm(target, data, opts = {}): Comm {
        const entry = kernel.makeComm(crypto.randomUUID(), target, kernel.outputContext());
        kernel.publish("comm_open", { comm_id: entry.comm.id, target_name: target, data: data ?? {} }, parentNow(), opts.metadata ?? {}, opts.buffers ?? []);
        return entry.comm;
      },
      registerCommTarget(target, handler): void {
        kernel.commTargets.set(target, handler);
      },
      input(prompt = "", opts = {}): Promise<string> {
        return kernel.input(prompt, !!opts.password);
      },
      beforeIdle(cb): boolean {
        const ctx = kernel.cells.getStore() ?? kernel.running;
        if (!ctx || ctx.finished) return false;
        ctx.beforeIdle.push(cb);
        return true;
      },
      onShutdown(cb): void {
        kernel.shutdownHooks.push(cb);
      },
    };
  }

  /** For tslab's own display API (`tslab.display.*`, `tslab.newDisplay()`), routed like the bridge. */
  tslabDisplay(content: { data: Record<string, unknown>; metadata: Record<string, unknown>; transient?: { display_id?: string } }, update: boolean): void {
    const id = content.transient?.display_id;
    const parent = this.outputContext()?.parent ?? {};
    this.publish(update && id ? "update_display_data" : "display_data", { data: content.data, metadata: content.metadata ?? {}, transient: id ? { display_id: id } : {} }, parent);
  }
}
