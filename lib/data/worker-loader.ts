/**
 * A DataLoader that runs in a worker thread, so decoding, resizing and float conversion never wait for (or delay) the
 * training step on the main thread — tfjs' wasm kernels run synchronously there. Same batches, same positions, same
 * resume semantics as DataLoader (it runs one inside the worker); needs a dataset built from plain options.
 */
import { Worker } from "node:worker_threads";
import type { Batch, LoaderOptions, LoaderPosition, SkippedRow } from "./loader.js";
import type { DatasetOptions } from "./dataset.js";

type FromWorker =
  | { type: "ready"; length: number; description: string; batchesPerEpoch: number }
  | { type: "batch"; batch: Batch; skipped: number }
  | { type: "warn"; message: string }
  | { type: "error"; message: string }
  | { type: "fatal"; message: string }
  | { type: "closed"; skipped: SkippedRow[] };

/**
 * Starts the worker script next to this module. Built (.js): directly. From sources under tsx (.ts): Node 20 does not
 * apply tsx's --import hooks to a worker's entry module, so a tiny bootstrap registers tsx first, then imports it.
 */
function startWorker(): Worker {
  const execArgv = process.execArgv.filter((a) => !a.startsWith("--input-type")); // refused for file workers
  if (!import.meta.url.endsWith(".ts")) return new Worker(new URL("./loader-worker.js", import.meta.url), { execArgv });
  const entry = new URL("./loader-worker.ts", import.meta.url).href;
  const tsx = import.meta.resolve("tsx/esm/api");
  const code = `import(${JSON.stringify(tsx)}).then((m) => { m.register(); return import(${JSON.stringify(entry)}); })`;
  return new Worker(code, { eval: true, execArgv });
}

export class WorkerDataLoader implements AsyncIterable<Batch> {
  private readonly worker: Worker;
  private readonly ready: Promise<{ length: number; batchesPerEpoch: number }>;
  private readonly received: ({ ok: true; batch: Batch } | { ok: false; error: Error })[] = [];
  private waiting: (() => void) | undefined;
  private consumed: LoaderPosition;
  private closed = false;
  private fatal: Error | undefined;
  private readonly warn: (m: string) => void;
  /** Rows skipped so far (complete after close()). */
  skipped: SkippedRow[] = [];
  readonly batchesPerEpoch: number;
  private closedAck: (() => void) | undefined;

  /** `length`: rows in the dataset (for batchesPerEpoch before the worker has opened it). */
  constructor(dataset: DatasetOptions, opts: LoaderOptions, length: number) {
    this.batchesPerEpoch = opts.dropLast ? Math.floor(length / opts.batchSize) : Math.ceil(length / opts.batchSize);
    this.warn = opts.warn ?? ((m) => console.warn(m));
    this.consumed = { ...(opts.start ?? { epoch: 0, index: 0 }) };
    const { warn: _w, ...loaderOpts } = opts;
    void _w;
    this.worker = startWorker();
    this.worker.unref();
    const prefetch = Math.max(1, opts.prefetch ?? 2);
    this.ready = new Promise((resolve, reject) => {
      this.worker.on("message", (m: FromWorker) => {
        switch (m.type) {
          case "ready":
            resolve(m);
            break;
          case "batch":
            this.received.push({ ok: true, batch: m.batch });
            break;
          case "error":
            this.received.push({ ok: false, error: new Error(m.message) });
            break;
          case "fatal":
            this.fatal = new Error(m.message);
            reject(this.fatal);
            break;
          case "warn":
            this.warn(m.message);
            break;
          case "closed":
            this.skipped = m.skipped;
            this.closedAck?.();
            break;
        }
        this.wake();
      });
      this.worker.on("error", (e) => {
        this.fatal = e;
        reject(e);
        this.wake();
      });
    });
    this.ready.catch(() => undefined);
    this.worker.postMessage({ type: "init", dataset: stripFunctions(dataset), loader: { ...loaderOpts, prefetch: 1 } });
    this.worker.postMessage({ type: "credit", n: prefetch });
  }

  private wake(): void {
    const w = this.waiting;
    this.waiting = undefined;
    w?.();
  }

  /** Where the next batch starts (store it in a checkpoint; pass it back as `start`). */
  get position(): LoaderPosition {
    return { ...this.consumed };
  }

  /** Resolves once the worker has opened the dataset (rejects with its error). */
  async opened(): Promise<void> {
    await this.ready;
  }

  async next(): Promise<Batch> {
    if (this.closed) throw new Error("DataLoader is closed");
    this.worker.ref();
    try {
      await this.ready;
      while (!this.received.length) {
        if (this.fatal) throw this.fatal;
        await new Promise<void>((r) => (this.waiting = r));
      }
    } finally {
      this.worker.unref();
    }
    const got = this.received.shift()!;
    this.worker.postMessage({ type: "credit", n: 1 });
    if (!got.ok) throw got.error;
    this.consumed = { ...got.batch.next };
    return got.batch;
  }

  async *[Symbol.asyncIterator](): AsyncIterator<Batch> {
    while (!this.closed) yield await this.next();
  }

  /** Stops the worker; its pending warning about skipped rows is printed first. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (!this.fatal) {
      this.worker.ref();
      const done = new Promise<void>((r) => (this.closedAck = r));
      this.worker.postMessage({ type: "close" });
      await Promise.race([done, new Promise((r) => setTimeout(r, 10_000))]);
    }
    await this.worker.terminate();
  }
}

/** Functions cannot cross to a worker; the dataset options must already name local files (resolved hub ids). */
function stripFunctions(o: DatasetOptions): DatasetOptions {
  const { resolveHub: _r, warn: _w, hub: _h, ...rest } = o;
  void _r;
  void _w;
  void _h;
  return rest;
}
