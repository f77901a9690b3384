/**
 * Worker-thread entry of WorkerDataLoader: builds the dataset from its (serialisable) options, runs a DataLoader and
 * posts batches back with their pixel buffers transferred, as many as the main thread has asked for.
 */
import { parentPort } from "node:worker_threads";
import { createDataset, type DatasetOptions } from "./dataset.js";
import type { DataLoader, LoaderOptions } from "./loader.js";

type Msg =
  | { type: "init"; dataset: DatasetOptions; loader: Omit<LoaderOptions, "warn"> }
  | { type: "credit"; n: number }
  | { type: "close" };

const port = parentPort!;
let loader: DataLoader | undefined;
let credit = 0;
let pumping = false;
let closing = false;

async function pump(): Promise<void> {
  if (pumping) return;
  pumping = true;
  try {
    while (credit > 0 && loader && !closing) {
      credit--;
      try {
        const b = await loader.next();
        port.postMessage({ type: "batch", batch: b, skipped: loader.skipped.length }, [b.pixelValues.buffer as ArrayBuffer, b.conditioningPixelValues.buffer as ArrayBuffer]);
      } catch (e) {
        port.postMessage({ type: "error", message: (e as Error).message });
      }
    }
  } finally {
    pumping = false;
  }
}

port.on("message", (m: Msg) => {
  void (async () => {
    if (m.type === "init") {
      try {
        const ds = await createDataset({ ...m.dataset, warn: (message) => port.postMessage({ type: "warn", message }) }, { fingerprint: false });
        loader = ds.loader({ ...m.loader, warn: (message) => port.postMessage({ type: "warn", message }) });
        port.postMessage({ type: "ready", length: ds.length, description: ds.description, batchesPerEpoch: loader.batchesPerEpoch });
        void pump();
      } catch (e) {
        port.postMessage({ type: "fatal", message: (e as Error).message });
      }
    } else if (m.type === "credit") {
      credit += m.n;
      void pump();
    } else if (m.type === "close") {
      closing = true;
      const skipped = loader?.skipped ?? [];
      await loader?.close();
      port.postMessage({ type: "closed", skipped });
      port.close();
    }
  })();
});
