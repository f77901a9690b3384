/**
 * The heartbeat channel: a REP socket that echoes every ping. It lives in a worker thread so a cell that blocks the
 * main thread for minutes (a synchronous tfjs kernel, a long loop) does not make the frontend think the kernel died.
 * The worker is plain JavaScript evaluated from a string, so it needs no loader (tsx) of its own.
 */
import { createRequire } from "node:module";
import { Worker } from "node:worker_threads";
import { bound, endWorker, UNOWNED_FRAMES_SOURCE } from "./zmq-worker.js";

const WORKER_SOURCE = `
const { workerData, parentPort } = require("node:worker_threads");
const zmq = require(workerData.zeromq);
${UNOWNED_FRAMES_SOURCE}
(async () => {
  const sock = new zmq.Reply({ linger: 0 });
  await sock.bind(workerData.address);
  parentPort.postMessage("bound");
  parentPort.on("message", (m) => { if (m === "close") sock.close(); });
  try {
    for await (const frames of sock) await sock.send(unowned(frames));
  } catch (e) {
    if (!sock.closed) throw e;
  }
  await settled();
})().catch((e) => { parentPort.postMessage("error: " + (e && e.stack || e)); })
  // the socket is closed: let the thread end by itself (nothing left to run), so zeromq tears its context down on
  // its own schedule instead of being cut off by terminate()
  .finally(() => parentPort.close());
`;

export interface Heartbeat {
  close(): Promise<void>;
}

/** Starts the echo loop on `address` (e.g. tcp://127.0.0.1:5555); resolves once the socket is bound. */
export async function startHeartbeat(address: string): Promise<Heartbeat> {
  const zeromq = createRequire(import.meta.url).resolve("zeromq");
  const worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { address, zeromq } });
  worker.unref();
  await bound(worker, "heartbeat");
  worker.on("message", (m: string) => process.stderr.write(`[controlnet-ts kernel] heartbeat ${m}\n`));
  return {
    close: () => endWorker(worker, () => worker.postMessage("close")),
  };
}
