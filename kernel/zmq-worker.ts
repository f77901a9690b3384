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
