/**
 * The IOPub channel: a PUB socket in a worker thread (as IPython's IOPub thread). The main thread hands it each
 * message's frames; the worker sends them in order, also while a cell's synchronous code holds the main thread — a
 * loop that prints shows its lines as they come instead of all at once when it ends. The worker is plain JavaScript
 * evaluated from a string, so it needs no loader (tsx) of its own.
 */
import { createRequire } from "node:module";
import { Worker } from "node:worker_threads";
import { bound, endWorker, UNOWNED_FRAMES_SOURCE } from "./zmq-worker.js";

const WORKER_SOURCE = `
const { workerData, parentPort } = require("node:worker_threads");
const zmq = require(workerData.zeromq);
${UNOWNED_FRAMES_SOURCE}
(async () => {
  const sock = new zmq.Publisher({ linger: 1000 });
  await sock.bind(workerData.address);
  // messages are sent one at a time (zeromq allows one send in flight), in the order they were posted
  const queue = [];
  let wake = null;
  let closing = false;
  parentPort.on("message", (m) => {
    queue.push(m);
    if (wake) { wake(); wake = null; }
  });
  parentPort.postMessage("bound");
  for (;;) {
    if (!queue.length) {
      if (closing) break;
      await new Promise((r) => (wake = r));
      continue;
    }
    const m = queue.shift();
    if (m === "close") closing = true;
    else if (typeof m === "object" && m.drain !== undefined) parentPort.postMessage({ drained: m.drain });
    else {
      try {
        await sock.send(unowned(m));
      } catch (e) {
        parentPort.postMessage("send failed: " + (e && e.message || e));
      }
    }
  }
  sock.close();
  await settled();
})().catch((e) => { parentPort.postMessage("error: " + (e && e.stack || e)); })
  // the socket is closed: let the thread end by itself (nothing left to run), so zeromq tears its context down on
  // its own schedule instead of being cut off by terminate()
  .finally(() => parentPort.close());
`;

/** The same shape as the main thread's send queues (channels.ts). */
export interface IopubSender {
  send(frames: Buffer[]): void;
  /** Resolves once everything posted so far is sent. */
  drain(): Promise<void>;
  close(): Promise<void>;
}

/** Binds the PUB socket on `address` in a worker; resolves once it is bound. */
export async function startIopub(address: string, log: (line: string) => void): Promise<IopubSender> {
  const zeromq = createRequire(import.meta.url).resolve("zeromq");
  const worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { address, zeromq } });
  worker.unref();
  await bound(worker, "iopub");
  let next = 0;
  const waiting = new Map<number, () => void>();
  worker.on("message", (m: unknown) => {
    const drained = (m as { drained?: number } | null)?.drained;
    if (typeof drained === "number") {
      waiting.get(drained)?.();
      waiting.delete(drained);
    } else log(`iopub ${String(m)}`);
  });
  let closed = false;
  // a worker that ended on its own (it failed) sends nothing more: nobody may wait for it
  worker.once("exit", () => {
    closed = true;
    for (const r of waiting.values()) r();
    waiting.clear();
  });
  return {
    send: (frames) => {
      if (!closed) worker.postMessage(frames);
    },
    drain: () => (closed ? Promise.resolve() : new Promise<void>((r) => {
      const id = next++;
      waiting.set(id, r);
      worker.postMessage({ drain: id });
    })),
    close: async () => {
      if (closed) return;
      closed = true;
      // (the worker sends what is queued, then closes its socket, lingering up to 1 s for slow subscribers)
      await endWorker(worker, () => worker.postMessage("close"), () => log("iopub: its thread did not end in 2 s"));
      for (const r of waiting.values()) r();
    },
  };
}
