/**
 * The training data loader: seeded per-epoch shuffling, train_controlnet.py's transforms, prompt dropping redrawn on
 * every use, and a queue of batches prepared ahead of the training step. Its position {epoch, index} is what a
 * training checkpoint stores; a loader started from a stored position yields exactly the batches the original would
 * have yielded next.
 *
 * Rows that cannot be used (missing file, corrupt image, bad cell) are skipped: the batch is filled from the next
 * positions, the row is remembered and never retried, and the files are named in one warning when the epoch ends
 * (or the loader closes). A training epoch never stops on bad data.
 */
import { hashInts, hashUniform, permutation, Prng } from "./prng.js";
import { checkResolution, resizeCenterCrop, toFloat } from "./transforms.js";
import { BadRowError, type DataSource } from "./types.js";

export interface LoaderPosition {
  /** Epoch number, from 0. */
  epoch: number;
  /** Positions of this epoch's permutation already consumed (skipped bad rows included). */
  index: number;
}

export interface Batch {
  /** [B, H, W, 3] float32 in [-1, 1] (targets). */
  pixelValues: Float32Array;
  /** [B, H, W, 3] float32 in [0, 1] (conditioning images). */
  conditioningPixelValues: Float32Array;
  /** Captions after prompt dropping ("" when dropped). */
  texts: string[];
  /** Dataset row indices of the batch. */
  indices: number[];
  /** Rows in this batch (the last batch of an epoch may be smaller unless dropLast). */
  size: number;
  resolution: number;
  /** Epoch the batch belongs to and the loader position right after it (store this one to resume). */
  epoch: number;
  next: LoaderPosition;
}

export interface LoaderOptions {
  batchSize: number;
  resolution: number;
  /** Shuffle seed (default 0). The permutation of epoch e depends on (seed, e) only. */
  seed?: number;
  /** Default true (train_controlnet.py's DataLoader shuffles). */
  shuffle?: boolean;
  /** Probability that a caption is replaced by "" (redrawn each time a row is used). */
  proportionEmptyPrompts?: number;
  /** Drop the last, smaller batch of each epoch (default false, like train_controlnet.py). */
  dropLast?: boolean;
  /** Batches prepared ahead (default 2). */
  prefetch?: number;
  /** Rows decoded at once inside a batch (default 4). */
  concurrency?: number;
  /** Where to start (a position stored in a checkpoint). */
  start?: LoaderPosition;
  /** Where the one warning per epoch about skipped rows goes (default console.warn). */
  warn?: (message: string) => void;
}

export interface SkippedRow {
  index: number;
  file: string;
  reason: string;
}

interface Planned {
  rows: { index: number; pos: number }[];
  epoch: number;
  next: LoaderPosition;
}

/** train_controlnet.py's check of `--proportion_empty_prompts` (one copy for every entry point: CLI, dataset, loader,
 *  demo); returns the value. */
export function checkProportionEmptyPrompts(p: number): number {
  if (!(p >= 0 && p <= 1)) throw new Error(`\`--proportion_empty_prompts\` must be in the range [0, 1] (got ${p}).`);
  return p;
}

export class DataLoader implements AsyncIterable<Batch> {
  readonly batchSize: number;
  readonly resolution: number;
  readonly seed: number;
  readonly shuffle: boolean;
  readonly proportionEmptyPrompts: number;
  readonly dropLast: boolean;
  readonly prefetch: number;
  readonly concurrency: number;
  /** Every row skipped so far. */
  readonly skipped: SkippedRow[] = [];

  private readonly bad = new Set<number>();
  private readonly unreported: SkippedRow[] = [];
  private readonly warn: (m: string) => void;
  private permEpoch = -1;
  private perm: Uint32Array | undefined;
  /** Position after the last batch handed to the caller. */
  private consumed: LoaderPosition;
  /** Position after the last batch planned (the producer runs ahead of `consumed`). */
  private planned: LoaderPosition;
  private readonly queue: Promise<Batch>[] = [];
  private closed = false;
  /** Good rows seen in the epoch being planned (an epoch of only bad rows is an error, not an endless loop). */
  private goodInEpoch = 0;
  /** Whether the epoch being planned was planned from its first position (only then can "no good row" be judged). */
  private wholeEpoch: boolean;

  constructor(readonly source: DataSource, opts: LoaderOptions) {
    checkResolution(opts.resolution);
    if (!Number.isInteger(opts.batchSize) || opts.batchSize < 1) throw new Error(`batchSize must be a positive integer, got ${opts.batchSize}`);
    const p = checkProportionEmptyPrompts(opts.proportionEmptyPrompts ?? 0);
    if (source.length === 0) throw new Error(`the dataset is empty: ${source.description}`);
    this.batchSize = opts.batchSize;
    this.resolution = opts.resolution;
    this.seed = opts.seed ?? 0;
    this.shuffle = opts.shuffle ?? true;
    this.proportionEmptyPrompts = p;
    this.dropLast = opts.dropLast ?? false;
    this.prefetch = Math.max(1, opts.prefetch ?? 2);
    this.concurrency = Math.max(1, opts.concurrency ?? 4);
    this.warn = opts.warn ?? ((m) => console.warn(m));
    let start = opts.start ?? { epoch: 0, index: 0 };
    if (!(Number.isSafeInteger(start.epoch) && start.epoch >= 0 && Number.isSafeInteger(start.index) && start.index >= 0)) {
      throw new Error(`invalid start position ${JSON.stringify(start)}`);
    }
    if (start.index > source.length) {
      // a checkpoint of this run on more rows (continued, as asked, on fewer): that epoch's rest is empty here, as
      // accelerate's skip_first_batches would find it, so the next epoch begins
      this.warn(`the saved data position (epoch ${start.epoch}, row ${start.index}) is past the ${source.length} rows of this dataset: continuing at the start of epoch ${start.epoch + 1}`);
      start = { epoch: start.epoch + 1, index: 0 };
    }
    this.consumed = { ...start };
    this.planned = { ...start };
    this.wholeEpoch = start.index === 0;
    // start preparing at once: the first batch is usually ready by the time models are loaded
    queueMicrotask(() => this.fill());
  }

  /** Where the next batch starts: store it in a checkpoint and pass it back as `start` to resume. */
  get position(): LoaderPosition {
    return { ...this.consumed };
  }

  /** Batches in one epoch when no row is bad. */
  get batchesPerEpoch(): number {
    const n = this.source.length;
    return this.dropLast ? Math.floor(n / this.batchSize) : Math.ceil(n / this.batchSize);
  }

  /** The row index at position `pos` of epoch `epoch`. */
  rowAt(epoch: number, pos: number): number {
    if (!this.shuffle) return pos;
    if (this.permEpoch !== epoch) {
      this.perm = permutation(this.source.length, new Prng(hashInts(this.seed, 0x5e7f1e, epoch)));
      this.permEpoch = epoch;
    }
    return this.perm![pos]!;
  }

  /** The next batch (epochs roll over by themselves). */
  async next(): Promise<Batch> {
    if (this.closed) throw new Error("DataLoader is closed");
    this.fill();
    const b = await this.queue.shift()!;
    this.consumed = { ...b.next };
    this.fill();
    return b;
  }

  async *[Symbol.asyncIterator](): AsyncIterator<Batch> {
    while (!this.closed) yield await this.next();
  }

  /** Stops prefetching and prints the pending warning about skipped rows. */
  async close(): Promise<void> {
    this.closed = true;
    const pending = this.queue.splice(0);
    await Promise.allSettled(pending);
    this.flushWarning();
  }

  private fill(): void {
    while (!this.closed && this.queue.length < this.prefetch) {
      // chained: each batch's plan depends on how many positions the previous one consumed
      const prev = this.queue[this.queue.length - 1];
      const p = (prev ? prev.catch(() => undefined) : Promise.resolve()).then(() => this.produce());
      p.catch(() => undefined); // surfaced by next(); avoid unhandled rejections for batches never awaited
      this.queue.push(p);
    }
  }

  /** Plans and builds the next batch from `planned`, replacing bad rows with later positions of the same epoch. */
  private async produce(): Promise<Batch> {
    const B = this.batchSize;
    const R = this.resolution;
    const px = R * R * 3;
    for (;;) {
      let { epoch, index } = this.planned;
      const n = this.source.length;
      if (index >= n) {
        this.endEpoch(epoch);
        epoch += 1;
        index = 0;
        this.planned = { epoch, index };
      }
      const pixelValues = new Float32Array(B * px);
      const conditioningPixelValues = new Float32Array(B * px);
      const texts: string[] = [];
      const indices: number[] = [];
      // take positions until the batch is full or the epoch runs out; rows are decoded `concurrency` at a time
      while (indices.length < B && index < n) {
        const want = Math.min(B - indices.length, this.concurrency);
        const take: { row: number; pos: number }[] = [];
        while (take.length < want && index < n) {
          const row = this.rowAt(epoch, index);
          if (!this.bad.has(row)) take.push({ row, pos: index });
          index++;
        }
        const results = await Promise.all(take.map((t) => this.loadRow(t.row, epoch, t.pos)));
        for (const r of results) {
          if (!r) continue;
          const slot = indices.length;
          toFloat(r.image, "signed", pixelValues, slot * px);
          toFloat(r.cond, "unit", conditioningPixelValues, slot * px);
          texts.push(r.text);
          indices.push(r.row);
        }
      }
      this.goodInEpoch += indices.length;
      this.planned = { epoch, index };
      if (indices.length === 0 || (this.dropLast && indices.length < B)) {
        // nothing (or only a short remainder that dropLast discards) left in this epoch: go on with the next one
        this.planned = { epoch, index: n };
        continue;
      }
      const size = indices.length;
      return {
        pixelValues: size === B ? pixelValues : pixelValues.slice(0, size * px),
        conditioningPixelValues: size === B ? conditioningPixelValues : conditioningPixelValues.slice(0, size * px),
        texts, indices, size, resolution: R, epoch, next: { epoch, index },
      };
    }
  }

  private endEpoch(epoch: number): void {
    this.flushWarning();
    if (this.goodInEpoch === 0 && this.wholeEpoch) {
      // the first reason goes in the error itself: a headless run may not show the warning printed just before
      const first = this.skipped[0];
      throw new Error(`epoch ${epoch}: no usable row in ${this.source.description} (${this.skipped.length} skipped` +
        `${first ? `; the first: ${first.file} (${first.reason})` : ""})`);
    }
    this.goodInEpoch = 0;
    this.wholeEpoch = true;
  }

  private async loadRow(row: number, epoch: number, pos: number) {
    let origin: string | undefined;
    try {
      const r = await this.source.get(row);
      origin = r.origin;
      const [image, cond] = await Promise.all([resizeCenterCrop(r.image, this.resolution), resizeCenterCrop(r.conditioning_image, this.resolution)]);
      return { row, image, cond, text: this.caption(r.text, epoch, pos) };
    } catch (e) {
      const s: SkippedRow = e instanceof BadRowError
        ? { index: row, file: e.file, reason: e.reason }
        : { index: row, file: origin ?? `row ${row}`, reason: (e as Error).message };
      this.bad.add(row);
      this.skipped.push(s);
      this.unreported.push(s);
      return undefined;
    }
  }

  /** Prompt dropping and caption choice, drawn from (seed, epoch, position) so a resumed run draws the same. */
  private caption(text: string | string[], epoch: number, pos: number): string {
    if (this.proportionEmptyPrompts > 0 && hashUniform(this.seed, 0xe3b7, epoch, pos) < this.proportionEmptyPrompts) return "";
    if (typeof text === "string") return text;
    if (text.length === 0) return "";
    return text[hashInts(this.seed, 0xca97, epoch, pos) % text.length]!;
  }

  private flushWarning(): void {
    if (!this.unreported.length) return;
    const list = this.unreported.splice(0);
    const shown = list.slice(0, 20).map((s) => `${s.file} (${s.reason})`).join("; ");
    const more = list.length > 20 ? `; and ${list.length - 20} more` : "";
    this.warn(`skipped ${list.length} unusable row${list.length === 1 ? "" : "s"} of ${this.source.description}: ${shown}${more}`);
  }
}
