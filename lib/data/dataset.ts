/**
 * The dataset factory. Datasets for ControlNet training. `createDataset` picks the source the way train_controlnet.py does
 * (`dataset_name` before `train_data_dir`), plus the synthetic fill50k and Arrow caches, and returns a dataset
 * whose `loader()` yields NHWC float32 batches.
 *
 * Options use train_controlnet.py's flag names (snake_case); the camelCase spellings are accepted too:
 * datasetName, trainDataDir, imageColumn, conditioningImageColumn, captionColumn, maxTrainSamples,
 * proportionEmptyPrompts.
 */
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import sharp from "sharp";
import { DataLoader, checkProportionEmptyPrompts, type Batch, type LoaderOptions, type LoaderPosition, type SkippedRow } from "./loader.js";
import { WorkerDataLoader } from "./worker-loader.js";
import { numpyPermutation } from "./numpy-rng.js";
import { SyntheticFill50k, type SyntheticOptions } from "./synthetic.js";
import { openLocalTable } from "./sources/local.js";
import { resolveColumns, SubsetSource, TableSource } from "./sources/table.js";
import { checkResolution, resizeCenterCrop } from "./transforms.js";
import { isRawImage, type ColumnOptions, type DataSource, type DatasetRow, type RawImage } from "./types.js";
import type { HubOptions } from "../io/hub.js";

export interface DatasetOptions extends ColumnOptions {
  /** A local snapshot folder of a Hub dataset repo (parquet shards or train.jsonl + zips), or a dataset file. */
  dataset_name?: string;
  /** A local folder: imagefolder (metadata.jsonl / train.jsonl) or lllyasviel's prompt.json + source/ + target/. */
  train_data_dir?: string;
  /** The synthetic fill50k (true = 50,000 rows, seed 0, at `resolution`). */
  synthetic?: SyntheticOptions | boolean;
  /** An Arrow IPC file written by writeArrowDataset (or any Arrow file with the three columns). */
  arrow?: string;
  /** Split whose files are used when a folder holds several (default "train"). */
  split?: string;
  /** The config of a multi-config parquet repo (`<config>/train/*.parquet`). */
  dataset_config_name?: string | null;
  /** Hub cache directory for the default download (same as hub.cacheDir). */
  cache_dir?: string | null;
  /** Keep this many rows: `dataset.shuffle(seed).select(range(n))`, the same rows as HF datasets (numpy's PCG64). */
  max_train_samples?: number | null;
  /** Resize + centre-crop size; must be divisible by 8 (default 512). */
  resolution?: number;
  /** Seed for max_train_samples, shuffling and prompt dropping (default 0). */
  seed?: number | null;
  /** Probability of replacing a caption by "" each time a row is used (default 0). */
  proportion_empty_prompts?: number;
  /** Maps a Hub repo id to a local snapshot folder; used when dataset_name is not a local path. Default: lib/io/hub's
   *  snapshotDownload(repoId, { repoType: "dataset", ...hub }). */
  resolveHub?: (repoId: string) => Promise<string>;
  /** Options for the default hub download (revision, offline, cacheDir, token, onProgress). */
  hub?: HubOptions;
  /** Warnings (refused archive entries, skipped rows). Default console.warn. */
  warn?: (message: string) => void;
}

type AnyOptions = DatasetOptions & {
  /** Alias of dataset_name (the notebook's `cn.dataset({ name })`). */
  name?: string;
  datasetName?: string; trainDataDir?: string; imageColumn?: string | null; conditioningImageColumn?: string | null;
  captionColumn?: string | null; maxTrainSamples?: number | null; proportionEmptyPrompts?: number;
};

/** Accepts camelCase spellings of the flag names. */
export function normalizeDatasetOptions(o: AnyOptions): DatasetOptions {
  const pickDefined = <T>(a: T | undefined, b: T | undefined): T | undefined => (a !== undefined ? a : b);
  return {
    ...o,
    dataset_name: pickDefined(pickDefined(o.dataset_name, o.datasetName), o.name),
    train_data_dir: pickDefined(o.train_data_dir, o.trainDataDir),
    image_column: pickDefined(o.image_column, o.imageColumn),
    conditioning_image_column: pickDefined(o.conditioning_image_column, o.conditioningImageColumn),
    caption_column: pickDefined(o.caption_column, o.captionColumn),
    max_train_samples: pickDefined(o.max_train_samples, o.maxTrainSamples),
    proportion_empty_prompts: pickDefined(o.proportion_empty_prompts, o.proportionEmptyPrompts),
  };
}

/** What the trainer needs from a loader (DataLoader in-thread, WorkerDataLoader in a worker thread). */
export interface BatchLoader extends AsyncIterable<Batch> {
  readonly position: LoaderPosition;
  readonly batchesPerEpoch: number;
  readonly skipped: readonly SkippedRow[];
  next(): Promise<Batch>;
  close(): Promise<void>;
}

export type LoaderSettings = Omit<LoaderOptions, "resolution" | "proportionEmptyPrompts" | "seed"> & { seed?: number; proportionEmptyPrompts?: number };

/** A dataset ready for training: a source plus the settings its transforms use. */
export class ControlNetDataset {
  constructor(
    readonly source: DataSource,
    readonly resolution: number,
    readonly seed: number,
    readonly proportionEmptyPrompts: number,
    /** Plain options that rebuild this dataset (hub ids resolved to folders); absent for custom sources. */
    readonly options?: DatasetOptions,
    /** A fingerprint of the rows' content (sampleFingerprint); part of a training run's identity. */
    readonly fingerprint?: string,
  ) {}

  get length(): number {
    return this.source.length;
  }
  get description(): string {
    return this.source.description;
  }

  /** A loader of [B, H, W, 3] batches (shuffled per epoch, prefetching, resumable from `start`). */
  loader(opts: LoaderSettings): DataLoader {
    return new DataLoader(this.source, {
      ...opts,
      resolution: this.resolution,
      seed: opts.seed ?? this.seed,
      proportionEmptyPrompts: opts.proportionEmptyPrompts ?? this.proportionEmptyPrompts,
    });
  }

  /**
   * The same loader running in a worker thread: decoding and float conversion never block (or wait for) the training
   * step. Needs a dataset made by createDataset.
   */
  workerLoader(opts: LoaderSettings): WorkerDataLoader {
    if (!this.options) throw new Error("workerLoader needs a dataset made by createDataset (its options rebuild it in the worker)");
    const warn = opts.warn ?? this.options.warn;
    return new WorkerDataLoader(this.options, {
      ...opts,
      warn,
      resolution: this.resolution,
      seed: opts.seed ?? this.seed,
      proportionEmptyPrompts: opts.proportionEmptyPrompts ?? this.proportionEmptyPrompts,
    }, this.length);
  }

  /** Row `index` after resize + centre crop, as RGB pixels (for previews). */
  async preview(index: number): Promise<{ image: RawImage; conditioning_image: RawImage; text: string | string[] }> {
    const r = await this.source.get(index);
    const [image, conditioning_image] = await Promise.all([resizeCenterCrop(r.image, this.resolution), resizeCenterCrop(r.conditioning_image, this.resolution)]);
    return { image, conditioning_image, text: r.text };
  }

  /**
   * A PNG grid of the first `rows` rows (or the given indices) after the transforms: conditioning | target per line,
   * each `size` px, with the captions returned alongside (for a notebook cell's display).
   */
  async previewGrid(opts: { rows?: number; indices?: number[]; size?: number } = {}): Promise<{ png: Buffer; texts: string[]; indices: number[] }> {
    const size = opts.size ?? 128;
    const indices = opts.indices ?? Array.from({ length: Math.min(opts.rows ?? 8, this.length) }, (_, i) => i);
    const gap = 4;
    const tiles: { input: Buffer; left: number; top: number }[] = [];
    const texts: string[] = [];
    for (const [k, i] of indices.entries()) {
      const p = await this.preview(i);
      texts.push(Array.isArray(p.text) ? p.text.join(" | ") : p.text);
      for (const [col, img] of [p.conditioning_image, p.image].entries()) {
        const tile = await sharp(img.data, { raw: { width: img.width, height: img.height, channels: 3 } }).resize(size, size, { kernel: "linear" }).png().toBuffer();
        tiles.push({ input: tile, left: col * (size + gap), top: k * (size + gap) });
      }
    }
    const png = await sharp({ create: { width: 2 * size + gap, height: Math.max(1, indices.length * (size + gap) - gap), channels: 3, background: { r: 255, g: 255, b: 255 } } })
      .composite(tiles).png().toBuffer();
    return { png, texts, indices };
  }

  async close(): Promise<void> {
    await this.source.close?.();
  }
}

/** Builds the dataset the options describe: dataset_name (with train_data_dir as its data_dir, as diffusers' script
 *  passes it), else train_data_dir, synthetic or arrow. */
export async function createDataset(options: AnyOptions, opts: { fingerprint?: boolean } = {}): Promise<ControlNetDataset> {
  const o = normalizeDatasetOptions(options);
  const resolution = o.resolution ?? 512;
  checkResolution(resolution);
  const seed = o.seed ?? 0;
  const p = checkProportionEmptyPrompts(o.proportion_empty_prompts ?? 0);
  const cols: ColumnOptions = { image_column: o.image_column, conditioning_image_column: o.conditioning_image_column, caption_column: o.caption_column };

  let source: DataSource;
  const resolved: DatasetOptions = { ...o };
  if (o.dataset_name) {
    let dir = o.dataset_name;
    if (!fs.existsSync(dir)) {
      // imported on demand: the loader worker rebuilds datasets from local paths and never needs the hub client
      const hub = o.resolveHub ?? (async (id: string) => (await import("../io/hub.js")).snapshotDownload(id, { repoType: "dataset", ...(o.cache_dir ? { cacheDir: o.cache_dir } : {}), ...o.hub }));
      dir = await hub(dir);
      resolved.dataset_name = dir;
      delete resolved.hub;
    }
    if (o.train_data_dir) {
      // load_dataset(dataset_name, data_dir=train_data_dir), as train_controlnet.py calls it: the data under that folder
      const sub = path.resolve(dir, o.train_data_dir);
      if (path.relative(dir, sub).startsWith("..") || !fs.existsSync(sub) || !fs.statSync(sub).isDirectory()) {
        throw new Error(`train_data_dir '${o.train_data_dir}' is given with dataset_name, so it is load_dataset's data_dir: a folder inside the dataset, and ${o.dataset_name} has no such folder`);
      }
      dir = sub;
    }
    source = new TableSource(await openLocalTable(dir, { split: o.split, config: o.dataset_config_name ?? undefined, strictPaths: true, warn: o.warn }), cols);
  } else if (o.train_data_dir) {
    source = new TableSource(await openLocalTable(o.train_data_dir, { split: o.split, config: o.dataset_config_name ?? undefined, warn: o.warn }), cols);
  } else if (o.arrow) {
    source = new TableSource(await openLocalTable(o.arrow), cols);
  } else if (o.synthetic) {
    const s = o.synthetic === true ? {} : o.synthetic;
    const synthetic = new SyntheticFill50k({ resolution, seed, ...s });
    // the column flags name fill50k's columns as for any dataset (a wrong name was silently ignored)
    const used = resolveColumns(synthetic, cols);
    if (used.image !== "image" || used.conditioning_image !== "conditioning_image" || used.caption !== "text") {
      throw new Error(`the synthetic fill50k's columns are image, conditioning_image and text as they are; --image_column ${used.image}, ` +
        `--conditioning_image_column ${used.conditioning_image}, --caption_column ${used.caption} would map them otherwise`);
    }
    source = synthetic;
  } else {
    throw new Error("You must specify either a dataset name from the hub or a train data directory (dataset_name, train_data_dir, arrow or synthetic).");
  }

  const max = o.max_train_samples;
  if (max !== undefined && max !== null) {
    if (!Number.isInteger(max) || max < 1) throw new Error(`max_train_samples must be a positive integer, got ${max}`);
    // dataset.shuffle(seed=seed).select(range(max)): datasets' shuffle is numpy's default_rng(seed).permutation
    const n = source.length;
    if (max > n) {
      (o.warn ?? console.warn)(`max_train_samples ${max} is more than the dataset's ${n} rows: all ${n} are kept (shuffled)`);
      resolved.max_train_samples = n; // the same rows, said once (a worker loader rebuilds from these options)
    }
    source = new SubsetSource(source, numpyPermutation(n, seed).subarray(0, Math.min(max, n)));
  }
  // the loader worker rebuilds the dataset the trainer already fingerprinted
  return new ControlNetDataset(source, resolution, seed, p, resolved, opts.fingerprint === false ? undefined : await sampleFingerprint(source));
}

/** Rows whose content the fingerprint reads: enough to tell one dataset from another of the same length (a different
 *  folder, subset, or synthetic seed), few enough that a large Parquet dataset does not decode many row groups. */
const FINGERPRINT_ROWS = 4;

/**
 * A short hash of a source's length and of the captions and image bytes of FINGERPRINT_ROWS rows spread over it (first
 * and last included). Where the data lives is not part of it: the same data in another folder or machine is the same
 * run. A row that cannot be read counts as such (the loader skips it the same way every time).
 */
export async function sampleFingerprint(source: DataSource): Promise<string> {
  const h = crypto.createHash("sha256").update(`rows ${source.length};`);
  const n = source.length;
  const picks = [...new Set(Array.from({ length: Math.min(FINGERPRINT_ROWS, n) }, (_, k) => Math.round((k * (n - 1)) / Math.max(1, FINGERPRINT_ROWS - 1))))];
  const image = (v: DatasetRow["image"]): void => {
    if (isRawImage(v)) h.update(`raw ${v.width}x${v.height}x${v.channels};`).update(v.data);
    else h.update(`bytes ${v.length};`).update(v);
  };
  for (const i of picks) {
    try {
      const r = await source.get(i);
      h.update(`row ${i};${JSON.stringify(r.text)};`);
      image(r.image);
      image(r.conditioning_image);
    } catch {
      h.update(`row ${i} unreadable;`);
    }
  }
  return h.digest("hex").slice(0, 12);
}

