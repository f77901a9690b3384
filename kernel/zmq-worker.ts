/**
 * The lifecycle both of the kernel's zeromq worker threads share (heartbeat.ts, interrupts.ts): wait until the worker
 * has bound its socket, and end it by asking it to close its socket and letting the thread end by itself.
 */
import type { Worker } from "node:worker_threads";

/** Resolves once the worker posts "bound"; rejects with its first other message or error. */
export function bound(worker: Worker, name: string): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    worker.once("message", (m: string) => (m === "bound" ? resolve() : reject(new Error(`${name}: ${m}`))));
    worker.once("error", reject);
  });
}

/**
 * Asks the worker to close (`ask`) and waits for the thread to end by itself, so zeromq tears its socket down on its
 * own schedule: terminate() while a socket may still be closing is a suspect (not reproduced) for the intermittent
 * "terminate called after throwing an instance of 'Napi::Error'" at shutdown. terminate() only if it has not ended
 * within 2 s (`onLate` says so first).
 */
export async function endWorker(worker: Worker, ask: () => void, onLate?: () => void): Promise<void> {
  const exited = new Promise<void>((r) => worker.once("exit", () => r()));
  ask();
  const timer = new Promise<"late">((r) => setTimeout(() => r("late"), 2000).unref());
  if ((await Promise.race([exited, timer])) === "late") {
    onLate?.();
    await worker.terminate();
  }
}

/**
 * Source every zeromq worker evaluates first: `unowned(frames)`, the frames as they are handed to zeromq.js, and
 * `settled()`, awaited after the worker's socket is closed and before its thread may end.
 *
 * zeromq.js sends a buffer of more than 128 bytes without copying it and, once libzmq is done with it (on libzmq's own
 * I/O or reaper thread, after the send, or at the socket's close), hands it back to the addon instance of the thread
 * that sent it (outgoing_msg.cc: Reference::Recycle into the module's trash). If that worker thread has ended by then,
 * its addon instance is freed and the hand-back writes into freed memory: the kernel aborted at shutdown with
 * "tcache_thread_shutdown(): unaligned tcache chunk detected" (the worker's freed memory, written after its free;
 * 2 of 450 shutdowns with three kernels starting and stopping side by side, once in CI). A string is copied into
 * memory libzmq frees itself, with no hand-back: every frame that is valid UTF-8 (the protocol's delimiter, signature
 * and JSON parts) goes as one. A binary frame of more than 128 bytes (a comm's buffer) still goes without a copy; a
 * worker that sent one keeps its thread 200 ms after closing the socket, long enough for libzmq to finish with it.
 */
export const UNOWNED_FRAMES_SOURCE = `
const { isUtf8 } = require("node:buffer");
let sentShared = false;
const unowned = (frames) => frames.map((f) => {
  const b = Buffer.isBuffer(f) ? f : Buffer.from(f.buffer, f.byteOffset, f.byteLength);
  if (b.length <= 128) return b;
  if (isUtf8(b)) return b.toString("utf8");
  sentShared = true;
  return b;
});
const settled = () => new Promise((r) => (sentShared ? setTimeout(r, 200) : r()));
`;

