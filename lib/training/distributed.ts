/**
 * Data-parallel training (DistributedDataParallel's semantics, accelerate's environment): N processes, each with the
 * whole ControlNet, each taking its contiguous shard of every global batch of N·b rows, so that N processes × batch
 * b ≡ 1 process × batch N·b (gradient accumulation included). Every process draws the global batch's randomness
 * from the same seeded RNG and keeps its rows' part, the gradients (scaled by the shard's share of the global batch)
 * are summed by TensorFlow's collective all-reduce before clipping and the optimizer step, so every process applies
 * the same update and the weights stay equal. Rank 0 alone writes checkpoints, logs, validation and pushes.
 *
 * The environment is accelerate's / torchrun's (set by `controlnet-ts launch`): RANK, WORLD_SIZE, LOCAL_RANK,
 * MASTER_ADDR, MASTER_PORT, plus CONTROLNET_TS_WORKER_HOSTS, the host:port of every process (TF's cluster spec).
 */
import { tf } from "../engine/index.js";
import type { Batch } from "../data/index.js";
import { CollectiveGroup, DistributedError } from "./collective.js";

/** Set by `controlnet-ts launch` in its processes' environment: their stdin is a pipe from the launcher, which closes
 *  when the launcher dies however it dies (lib/cli/train.ts then stops the process as on SIGTERM). */
export const LAUNCHER_PIPE = "CONTROLNET_TS_LAUNCHER_PIPE";

export { DistributedError } from "./collective.js";

export interface DataParallel {
  readonly rank: number;
  readonly worldSize: number;
  readonly isMainProcess: boolean;
  /** Sums in place over all processes. */
  allReduceSum(values: Float32Array): Promise<void>;
  /** Seconds spent in all-reduces so far. */
  readonly reduceSeconds: number;
  /** Makes pending and later reductions fail at once (this process is stopping on an error). */
  abort(message: string): void;
}

export interface ProcessEnv {
  rank: number;
  worldSize: number;
  localRank: number;
  addresses: string[];
  /** The launch's id (12 hex digits, CONTROLNET_TS_LAUNCH_ID), "0" where none was given. */
  launchId: string;
}

/** Reads the launcher's variables; null for a plain single-process run. Inconsistent values are a clear error. */
export function processEnv(env: NodeJS.ProcessEnv = process.env): ProcessEnv | null {
  if (env.WORLD_SIZE === undefined) return null;
  const int = (name: string, v: string | undefined) => {
    const n = Number(v);
    if (v === undefined || v === "" || !Number.isInteger(n) || n < 0) throw new DistributedError(`${name}=${v ?? "(unset)"} is not a non-negative integer`);
    return n;
  };
  const worldSize = int("WORLD_SIZE", env.WORLD_SIZE);
  if (worldSize < 1) throw new DistributedError("WORLD_SIZE must be at least 1");
  const rank = int("RANK", env.RANK ?? "0");
  if (rank >= worldSize) throw new DistributedError(`RANK=${rank} is outside WORLD_SIZE=${worldSize}`);
  const localRank = int("LOCAL_RANK", env.LOCAL_RANK ?? String(rank));
  let addresses = (env.CONTROLNET_TS_WORKER_HOSTS ?? "").split(",").map((s) => s.trim()).filter(Boolean);
  if (addresses.length === 0 && worldSize > 1) {
    // one machine: MASTER_ADDR:MASTER_PORT + rank, as `controlnet-ts launch` lays them out
    const host = env.MASTER_ADDR ?? "127.0.0.1";
    const port = int("MASTER_PORT", env.MASTER_PORT ?? "29500");
    addresses = Array.from({ length: worldSize }, (_, r) => `${host}:${port + r}`);
  }
  if (worldSize > 1 && addresses.length !== worldSize) {
    throw new DistributedError(`WORLD_SIZE=${worldSize} but CONTROLNET_TS_WORKER_HOSTS lists ${addresses.length} process address(es)`);
  }
  const launchId = /^[0-9a-f]{1,12}$/.test(env.CONTROLNET_TS_LAUNCH_ID ?? "") ? env.CONTROLNET_TS_LAUNCH_ID! : "0";
  return { rank, worldSize, localRank, addresses, launchId };
}

/** Joins the process group described by the environment; null when this is a single-process run. */
export function dataParallelFromEnv(env: NodeJS.ProcessEnv = process.env): DataParallel | null {
  const pe = processEnv(env);
  if (!pe || pe.worldSize === 1) return null;
  const timeout = env.CONTROLNET_TS_COLLECTIVE_TIMEOUT ? Number(env.CONTROLNET_TS_COLLECTIVE_TIMEOUT) : undefined;
  const join = env.CONTROLNET_TS_JOIN_TIMEOUT ? Number(env.CONTROLNET_TS_JOIN_TIMEOUT) : undefined;
  const group = CollectiveGroup.start({
    rank: pe.rank, worldSize: pe.worldSize, addresses: pe.addresses,
    ...(timeout ? { timeoutSeconds: timeout } : {}), ...(join ? { joinTimeoutSeconds: join } : {}),
  });
  return {
    rank: pe.rank,
    worldSize: pe.worldSize,
    isMainProcess: pe.rank === 0,
    allReduceSum: (v) => group.allReduceSum(v),
    get reduceSeconds() { return group.reduceSeconds; },
    abort: (m) => group.abort(m),
  };
}

/** Rows [start, end) of a global batch of `size` rows that process `rank` of `world` trains on (contiguous,
 *  sizes differing by at most one when `size` is not a multiple of `world`). */
export function shardRange(size: number, rank: number, world: number): [number, number] {
  return [Math.floor((rank * size) / world), Math.floor(((rank + 1) * size) / world)];
}

/** This process's rows of a global batch. */
export function shardBatch(batch: Batch, rank: number, world: number): Batch {
  if (world === 1) return batch;
  const [s, e] = shardRange(batch.size, rank, world);
  const row = batch.resolution * batch.resolution * 3;
  return {
    ...batch,
    pixelValues: batch.pixelValues.subarray(s * row, e * row),
    conditioningPixelValues: batch.conditioningPixelValues.subarray(s * row, e * row),
    texts: batch.texts.slice(s, e),
    indices: batch.indices.slice(s, e),
    size: e - s,
  };
}

/** Rows [start, end) of a tensor drawn for the whole global batch (disposes the input when it slices). */
function takeRows<T extends tf.Tensor>(t: T, start: number, end: number): T {
  if (start === 0 && end === t.shape[0]) return t;
  const out = tf.slice(t, start, end - start) as T;
  t.dispose();
  return out;
}

export interface Drawn<T extends tf.Tensor> {
  posterior: T;
  noise: T;
  timesteps: number[];
}

/**
 * This process's part of a micro-step: its rows of the global batch and of the randomness drawn for all of it, and
 * its share of the global batch (what its loss is scaled by, so that the all-reduce's sum is the global mean).
 * A single process gets everything back unchanged, with share 1.
 */
export function takeShard<T extends tf.Tensor>(global: Batch, drawn: Drawn<T>, parallel: DataParallel | null): Drawn<T> & { batch: Batch; share: number } {
  const rank = parallel?.rank ?? 0;
  const world = parallel?.worldSize ?? 1;
  const [s, e] = shardRange(global.size, rank, world);
  return {
    batch: shardBatch(global, rank, world),
    posterior: takeRows(drawn.posterior, s, e),
    noise: takeRows(drawn.noise, s, e),
    timesteps: drawn.timesteps.slice(s, e),
    share: (e - s) / global.size,
  };
}

export interface ReducedStep {
  /** The global batch's mean loss. */
  loss: number;
  /** Some process asked to stop (its interrupt): every process stops at this step boundary. */
  stop: boolean;
}

/**
 * Sums the step's gradients over all processes (each already scaled by its shard's share of the global batch), in
 * one flat host buffer: [gradients by parameter, a presence flag per parameter, weighted loss, stop flag]. The
 * presence flags keep a parameter that got no gradient anywhere without one (as in a single process: no decay, no
 * state step). Device gradients come back as new tensors in `grads`; host gradients (`hostGrads`) are updated in
 * place; a parameter whose gradient only other processes produced is added where this process keeps that kind.
 */
export async function allReduceGradients(
  dp: DataParallel,
  model: { namedParameters(): Iterable<[string, { variable: tf.Variable }]> },
  grads: Map<string, tf.Tensor>,
  hostGrads: Map<string, Float32Array> | undefined,
  weightedLoss: number,
  stop: boolean,
): Promise<ReducedStep> {
  const params = [...model.namedParameters()].filter(([, p]) => p.variable.trainable).map(([n, p]) => [n, p.variable] as const);
  let total = 0;
  const offsets = params.map(([, v]) => { const o = total; total += v.size; return o; });
  const n = params.length;
  const buf = new Float32Array(total + n + 2);
  params.forEach(([name], i) => {
    const g = grads.get(name);
    const h = hostGrads?.get(name);
    if (g) buf.set(g.dataSync() as Float32Array, offsets[i]);
    else if (h) buf.set(h, offsets[i]);
    else return;
    buf[total + i] = 1;
  });
  buf[total + n] = weightedLoss;
  buf[total + n + 1] = stop ? 1 : 0;
  await dp.allReduceSum(buf);
  params.forEach(([name, v], i) => {
    if (buf[total + i] === 0) return;
    const reduced = buf.subarray(offsets[i], offsets[i]! + v.size);
    const h = hostGrads?.get(name);
    if (h) h.set(reduced);
    else if (hostGrads && !grads.has(name)) hostGrads.set(name, Float32Array.from(reduced));
    else {
      grads.get(name)?.dispose();
      grads.set(name, tf.tensor(Float32Array.from(reduced), v.shape));
    }
  });
  return { loss: buf[total + n]!, stop: buf[total + n + 1]! > 0 };
}

/** A non-negative safe integer as `count` 16-bit pieces, lowest first: float32 holds each exactly, so an all-reduce
 *  sum in which one process gives the pieces and the others zeros carries the number exactly. */
export function pieces16(n: number, count: number): number[] {
  return Array.from({ length: count }, (_, k) => Math.floor(n / 2 ** (16 * k)) % 2 ** 16);
}

export function fromPieces16(pieces: ArrayLike<number>): number {
  return Array.from(pieces).reduce((sum, p, k) => sum + p * 2 ** (16 * k), 0);
}

/** What a process starts from, for checkSameStart: its launch, step, run identity and weights (12-hex ids). */
export interface StartState {
  launch: string;
  step: number;
  identity: string;
  weights: string;
}

/**
 * Every process of a group must start from the same state: DDP broadcasts rank 0's weights; here each process
 * resumes from its own view of output_dir, and a machine whose disk lacks the checkpoint (or that was given other
 * flags) started fresh and silently trained other weights beside the others. Each process puts its step and
 * fingerprints (16-bit pieces: float32 holds them exactly) in its own slots of one all-reduce; all compare, all refuse.
 */
export async function checkSameStart(parallel: DataParallel, mine: StartState): Promise<void> {
  const PIECES = 12; // four 48-bit numbers: the launch, the step, and the two 12-hex fingerprints
  const v = new Float32Array(parallel.worldSize * PIECES);
  v.set([parseInt(mine.launch, 16), mine.step, parseInt(mine.identity, 16), parseInt(mine.weights, 16)].flatMap((n) => pieces16(n, 3)), parallel.rank * PIECES);
  await parallel.allReduceSum(v);
  const of = (r: number) => {
    const [launch, step, identity, weights] = [0, 1, 2, 3].map((k) => fromPieces16(v.subarray(r * PIECES + 3 * k, r * PIECES + 3 * k + 3)));
    return { launch, step, identity, weights };
  };
  const first = of(0);
  const diffs: string[] = [];
  for (let r = 1; r < parallel.worldSize; r++) {
    const s = of(r);
    if (s.launch !== first.launch) {
      // (two launches started at once on one port: each passed the port check, and their processes met)
      throw new DistributedError(`process ${r} belongs to another launch than process 0: two launches use the same ports ` +
        "(--main_process_port); give each its own; nothing was trained");
    }
    if (s.step !== first.step) diffs.push(`process ${r} starts at step ${s.step}, process 0 at step ${first.step}`);
    else if (s.identity !== first.identity) diffs.push(`process ${r} was given other training arguments than process 0`);
    else if (s.weights !== first.weights) diffs.push(`process ${r} starts from other ControlNet weights than process 0`);
  }
  if (diffs.length) {
    throw new DistributedError(`the processes do not start from the same state: ${diffs.join("; ")}. Every machine must see the same ` +
      "output_dir (a shared disk, or the checkpoint copied to each) and be given the same flags; nothing was trained");
  }
}
