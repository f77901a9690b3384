/**
 * Interrupts that reach a blocked main thread.
 *
 * A cell's synchronous code (a loop after its first `await`) holds the main thread, and with it every JavaScript
 * handler the kernel has there: the control socket is not read and a SIGINT listener never runs. So both interrupt
 * routes are received by a worker thread instead:
 *
 * - `interrupt_request` (and `shutdown_request`, which stops the running cell first): the worker owns the control
 *   socket. It checks the signature, starts the interrupt, and forwards every control message to the main thread
 *   (which answers them, and sends through the worker).
 * - SIGINT: the worker holds a libuv signal handle of its own (`process.on("SIGINT")` is not delivered in workers),
 *   so the signal is seen while the main thread is blocked.
 *
 * The worker then reaches the main thread through the V8 inspector (`Session#connectToMainThread`): Node dispatches
 * inspector messages to the main thread from an isolate interrupt, so a `Runtime.evaluate` runs there at once, nested
 * inside whatever code holds it. That evaluation calls `onInterrupt` below. It schedules the kernel's ordinary interrupt
 * (abort signal, grace, reply) for when the thread is free, and decides whether the code that holds the thread may be
 * stopped now: only the running cell's own code (a cell frame on the stack, no kernel frame, run in that cell's
 * context), and only if the cell never asked for its abort signal (library loops such as `cn.train` stop themselves at
 * a step boundary and must never be cut off mid-step). If so, `Runtime.terminateExecution` stops it: V8 unwinds that
 * code (its `finally` blocks do not run) and cancels the termination once the stack is empty, and the process goes on.
 *
 * Three things make that safe:
 * - Atomicity. The termination is posted by the worker while the main thread waits inside the evaluation (a
 *   SharedArrayBuffer handshake); the inspector dispatches it right after the evaluation, before any other JavaScript
 *   runs, so it can only stop the code that was judged.
 * - The async-id stack. Node's async hooks (AsyncLocalStorage, which the kernel uses) push an id for every promise
 *   job and pop it afterwards; the termination skips the pop, and Node aborts the process on the mismatch. The stack is
 *   cleared right before the termination, as Node itself does when an uncaught exception unwinds it
 *   (`clearAsyncIdStack`, reached through `process.binding("async_wrap")`: there is no public API for it).
 * - Lost microtasks. V8 drops the whole microtask queue when it terminates inside a microtask checkpoint. Cells are
 *   started in a checkpoint of their own (tslab-engine.ts), and the kernel's sockets send and dispatch from macrotasks
 *   (channels.ts, kernel.ts), so what can be lost is the interrupted cell's own pending work.
 */
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { MessageChannel, Worker, type MessagePort } from "node:worker_threads";
import { bound, endWorker, UNOWNED_FRAMES_SOURCE } from "./zmq-worker.js";

/** The global the worker's evaluation calls. */
const HOOK = Symbol.for("controlnet-ts.kernel.interrupt");

// handshake[0]: the termination handshake (IDLE → ASKED by the main thread → CLAIMED → POSTED by the worker)
// handshake[1]: interrupts the main thread has taken in (the worker repeats its evaluation until this catches up)
const IDLE = 0;
const ASKED = 1;
const POSTED = 2;

const WORKER_SOURCE = `
const { workerData, parentPort } = require("node:worker_threads");
const crypto = require("node:crypto");
const inspector = require("node:inspector");
const zmq = require(workerData.zeromq);
${UNOWNED_FRAMES_SOURCE}
const { handshake, port, controlAddress, key, hook } = workerData;
const [IDLE, ASKED, POSTED, CLAIMED] = [0, 1, 2, 3];
const log = (m) => port.postMessage({ log: m });

const session = new inspector.Session();
session.connectToMainThread();

// One evaluation at a time may offer to terminate; each waits (in this thread's event loop) for the main thread to ask.
let offering = false;
function evaluate(source, retry) {
  const mayTerminate = !offering;
  if (mayTerminate) {
    offering = true;
    Atomics.store(handshake, 0, IDLE);
    const w = Atomics.waitAsync(handshake, 0, IDLE);
    (w.async ? w.value : Promise.resolve()).then(() => {
      // claim before posting: the main thread gives up (ASKED → IDLE) if this thread is too slow to answer
      if (Atomics.compareExchange(handshake, 0, ASKED, CLAIMED) !== ASKED) return;
      session.post("Runtime.terminateExecution", (err) => err && log("terminateExecution: " + err.message));
      Atomics.store(handshake, 0, POSTED);
      Atomics.notify(handshake, 0);
    });
  }
  const expression = "globalThis[Symbol.for(" + JSON.stringify(hook) + ")](" + JSON.stringify(source) + ", " + retry + ", " + mayTerminate + ")";
  session.post("Runtime.evaluate", { expression, returnByValue: true }, (err, res) => {
    if (mayTerminate) {
      offering = false;
      Atomics.notify(handshake, 0); // releases the waiter if the main thread did not ask
    }
    if (err || res.exceptionDetails) log("interrupt: " + (err ? err.message : res.exceptionDetails.exception?.description ?? res.exceptionDetails.text));
  });
}

// An interrupt is taken in by the main thread when it is free; until then the evaluation is repeated (without a new
// interrupt), so a loop that was inside kernel code at the first try (a display() call) is stopped at a later one.
let sent = 0;
let retryTimer = null;
function interrupt(source) {
  sent++;
  evaluate(source, false);
  let tries = 0;
  clearInterval(retryTimer);
  retryTimer = setInterval(() => {
    if (Atomics.load(handshake, 1) >= sent || ++tries > 100) return clearInterval(retryTimer);
    if (!offering) evaluate(source, true);
  }, 150);
}

// SIGINT: signals are not delivered to process.on() in a worker; a libuv signal handle of this thread's own is.
process.noDeprecation = true; // process.binding's deprecation notice: this thread runs no user code
let signal = null;
try {
  const { Signal } = process.binding("signal_wrap");
  signal = new Signal();
  signal.onsignal = () => interrupt("SIGINT");
  const rc = signal.start(require("node:os").constants.signals.SIGINT);
  if (rc !== 0) throw new Error("uv_signal_start: " + rc);
} catch (e) {
  signal = null;
  port.postMessage({ sigint: false });
  log("SIGINT is handled on the main thread only: " + e.message);
}

// The control socket: checked for interrupt_request here, every message forwarded to the main thread.
const control = new zmq.Router({ linger: 1000 });
function signed(frames, d) {
  if (!key) return true;
  const h = crypto.createHmac("sha256", key);
  for (let i = d + 2; i < d + 6; i++) h.update(frames[i]);
  const expected = Buffer.from(h.digest("hex"));
  const got = Buffer.from(frames[d + 1].toString());
  return got.length === expected.length && crypto.timingSafeEqual(got, expected);
}
function isInterruptRequest(frames) {
  const d = frames.findIndex((f) => f.length === 9 && f.toString("latin1") === "<IDS|MSG>");
  if (d < 0 || frames.length < d + 6 || !signed(frames, d)) return false;
  try {
    // a shutdown stops the running cell too (its code may hold the main thread, which would never read the request)
    return ["interrupt_request", "shutdown_request"].includes(JSON.parse(frames[d + 2].toString()).msg_type);
  } catch {
    return false;
  }
}
let sending = Promise.resolve();
port.on("message", (m) => {
  if (m.send) sending = sending.then(() => control.closed ? undefined : control.send(unowned(m.send))).catch((e) => control.closed || log("control send: " + e.message));
  else if (m.close) {
    // the last replies (shutdown_reply) go out first
    sending.finally(() => {
      control.close();
      signal?.close();
      session.disconnect();
      port.close();
    });
  }
});
(async () => {
  await control.bind(controlAddress);
  parentPort.postMessage("bound");
  for await (const frames of control) {
    if (isInterruptRequest(frames)) interrupt("interrupt_request");
    port.postMessage({ control: frames });
  }
})().catch((e) => { if (!control.closed) parentPort.postMessage("error: " + (e && e.stack || e)); })
  .finally(() => settled().then(() => parentPort.close()));
`;

const KERNEL_DIR = path.dirname(fileURLToPath(import.meta.url));
const requireHere = createRequire(import.meta.url);
const TSLAB_DIR = path.dirname(createRequire(requireHere.resolve("tslab/package.json")).resolve("./package.json"));

/** What the main thread decides, at the interrupt, about the code that holds it. */
export interface InterruptTarget {
  /** The kernel's ordinary interrupt, run once the thread is free. */
  interrupt(source: string): void;
  /** Whether the code running right now belongs to a cell that may be stopped (the kernel's cell context). */
  mayTerminateCurrent(): boolean;
}

export interface InterruptWorker {
  /** Frames that arrived on the control socket. */
  onControl(cb: (frames: Buffer[]) => void): void;
  sendControl(frames: Buffer[]): void;
  /** True when SIGINT is received by the worker (the main thread's own listener should then stay quiet). */
  readonly handlesSigint: boolean;
  close(): Promise<void>;
}

/** process.binding("async_wrap").clearAsyncIdStack, fetched once, without its deprecation notice. */
function asyncIdStackClearer(): () => void {
  const quiet = process.noDeprecation;
  process.noDeprecation = true;
  try {
    const binding = (process as unknown as { binding(name: string): { clearAsyncIdStack?: () => void } }).binding("async_wrap");
    if (typeof binding.clearAsyncIdStack !== "function") throw new Error("no clearAsyncIdStack in this Node");
    return binding.clearAsyncIdStack;
  } finally {
    process.noDeprecation = quiet;
  }
}

/**
 * Kernel functions that a cell's own statements run through and that leave nothing half-done when stopped: the trap of
 * the cells' exports object (every top-level `x = ...` of a cell is `exports.x = ...`, tslab-engine.ts).
 */
const ATOMIC_KERNEL_FRAMES = [{ file: `${path.sep}tslab-engine.ts`, fn: "defineProperty" }];

/**
 * Whether the code at the top of the stack may be stopped: a cell's own code, running as a promise job (a cell body
 * after `await`, or an async function of a cell), with no frame of the kernel, of tslab or of Node above it. Frames
 * below its outermost cell frame are left intact by the termination only when that frame was started by a microtask
 * checkpoint (nothing below it, or Node's tick processing, which goes on after the checkpoint returns); a cell's
 * callback run by Node's timers or an event emitter is not stopped (their bookkeeping is not re-entrant).
 */
function cellCodeOnStack(stack: NodeJS.CallSite[]): boolean {
  // the first frame is the inspector's evaluation itself; async frames are callers awaiting, not on the stack
  const sites = stack.slice(1).filter((s) => !(s as { isAsync?: () => boolean }).isAsync?.());
  const file = (s: NodeJS.CallSite) => s.getFileName() ?? s.getScriptNameOrSourceURL() ?? "";
  // cells run as vm scripts named by their label: `<In[3]>` (kernel.ts), `<cell 3>` for silent ones (tslab-engine.ts)
  const isCell = (s: NodeJS.CallSite) => /^<(In\[\d+\]|cell \d+)>$/.test(file(s));
  const outermost = sites.findLastIndex(isCell);
  if (outermost < 0) return false;
  for (const s of sites.slice(0, outermost)) {
    const f = file(s);
    if (ATOMIC_KERNEL_FRAMES.some((a) => f.endsWith(a.file) && s.getFunctionName() === a.fn)) continue;
    if (f.startsWith("node:") || f.includes(KERNEL_DIR + path.sep) || f.includes(TSLAB_DIR + path.sep)) return false;
  }
  const below = sites.slice(outermost + 1);
  return below.length === 0 || (file(below[0]!) === "node:internal/process/task_queues" && ["processTicksAndRejections", "runNextTicks"].includes(below[0]!.getFunctionName() ?? ""));
}

/** The JavaScript stack below `fn`, as call sites. */
function callSitesBelow(fn: Function): NodeJS.CallSite[] {
  const prepare = Error.prepareStackTrace;
  const limit = Error.stackTraceLimit;
  Error.prepareStackTrace = (_e, sites) => sites;
  Error.stackTraceLimit = Infinity;
  try {
    const holder: { stack?: NodeJS.CallSite[] } = {};
    Error.captureStackTrace(holder, fn);
    return holder.stack ?? [];
  } finally {
    Error.prepareStackTrace = prepare;
    Error.stackTraceLimit = limit;
  }
}

/** Starts the worker: binds the control socket on `controlAddress` and takes over SIGINT. */
export async function startInterruptWorker(opts: { controlAddress: string; key: string; target: InterruptTarget; log: (m: string) => void }): Promise<InterruptWorker> {
  const clearAsyncIdStack = asyncIdStackClearer();
  const handshake = new Int32Array(new SharedArrayBuffer(8));
  const { port1, port2 } = new MessageChannel();
  const { target, log } = opts;

  const onInterrupt = (source: string, retry: boolean, mayTerminate: boolean): string => {
    if (!retry) {
      // The ordinary interrupt runs when the thread is free, outside whatever context the evaluation found.
      setImmediate(() => {
        Atomics.add(handshake, 1, 1);
        target.interrupt(source);
      });
    }
    if (!mayTerminate || !target.mayTerminateCurrent() || !cellCodeOnStack(callSitesBelow(onInterrupt))) return "not terminated";
    Atomics.store(handshake, 0, ASKED);
    Atomics.notify(handshake, 0);
    Atomics.wait(handshake, 0, ASKED, 1000);
    if (Atomics.compareExchange(handshake, 0, ASKED, IDLE) === ASKED) return "the worker did not answer: not terminated";
    while (Atomics.load(handshake, 0) !== POSTED) Atomics.wait(handshake, 0, Atomics.load(handshake, 0), 100);
    Atomics.store(handshake, 0, IDLE);
    // Nothing runs between here and the termination: the frames it skips will not pop their async ids.
    clearAsyncIdStack();
    return "terminated";
  };
  (globalThis as Record<symbol, unknown>)[HOOK] = onInterrupt;

  const worker = new Worker(WORKER_SOURCE, {
    eval: true,
    workerData: { handshake, port: port2, controlAddress: opts.controlAddress, key: opts.key, hook: HOOK.description, zeromq: requireHere.resolve("zeromq") },
    transferList: [port2],
  });
  worker.unref();
  port1.unref();
  await bound(worker, "interrupt worker");
  worker.on("message", (m: string) => log(`interrupt worker ${m}`));
  worker.on("error", (e) => log(`interrupt worker failed: ${e.stack ?? e}`));
  let controlCb: (frames: Buffer[]) => void = () => {};
  let sigintInWorker = true;
  port1.on("message", (m: { log?: string; sigint?: boolean; control?: Uint8Array[] }) => {
    if (m.log) log(m.log);
    else if (m.sigint === false) sigintInWorker = false;
    else if (m.control) controlCb(m.control.map((f) => Buffer.from(f.buffer, f.byteOffset, f.byteLength)));
  });
  return {
    onControl: (cb) => void (controlCb = cb),
    sendControl: (frames) => port1.postMessage({ send: frames }),
    get handlesSigint() {
      return sigintInWorker;
    },
    async close() {
      delete (globalThis as Record<symbol, unknown>)[HOOK];
      await endWorker(worker, () => port1.postMessage({ close: true }), () => log("interrupt worker did not end within 2 s: terminating it"));
      port1.close();
    },
  };
}
