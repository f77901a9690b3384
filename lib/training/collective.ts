/**
 * TensorFlow's collective ops for data-parallel training, through our addon (native/collective/collective.cc, built
 * by scripts/native/build-collective.mjs into .native/collective/). The all-reduce is TF's CollectiveReduceV2 over
 * its gRPC runtime — what MultiWorkerMirroredStrategy runs — and failures are handled the way that strategy does:
 * while a reduction waits, every peer's health is checked (TFE_CollectiveOpsCheckPeerHealth); a peer that stops
 * answering aborts the collectives (TFE_AbortCollectiveOps), so no process waits forever; the op's own timeout is
 * the last line of defence against a peer that is alive but stuck.
 */
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { nativeDir } from "../engine/native/install-status.js";

interface CollectiveAddon {
  init(o: { rank: number; worldSize: number; addresses: string[]; intraOpThreads?: number; interOpThreads?: number }): void;
  allReduce(values: Float32Array, o: { mean?: boolean; timeoutSeconds?: number }): Promise<void>;
  checkPeerHealth(task: number, timeoutMs: number): Promise<void>;
  abort(message: string): void;
  tensorflowVersion: string;
}

export const BUILD_COLLECTIVE_COMMAND = "node scripts/native/build-collective.mjs";

/** Where the addon is: CONTROLNET_TS_COLLECTIVE_ADDON, else .native/collective/collective.node. */
export function collectiveAddonPath(): string {
  const env = process.env.CONTROLNET_TS_COLLECTIVE_ADDON;
  return env ? path.resolve(env) : path.join(nativeDir(), "collective", "collective.node");
}

/** Why multi-process training is unavailable here (one line with the fix), or null when the addon is built. */
export function collectiveMissingReason(): string | null {
  const p = collectiveAddonPath();
  if (fs.existsSync(p)) return null;
  return `the collective-ops addon is not built (${p} is missing): npm run install-native builds it with the native engine (${BUILD_COLLECTIVE_COMMAND} builds it alone where TensorFlow's C library is installed)`;
}

let addon: CollectiveAddon | null = null;

function loadAddon(): CollectiveAddon {
  if (addon) return addon;
  const missing = collectiveMissingReason();
  if (missing) throw new DistributedError(missing);
  process.env.TF_CPP_MIN_LOG_LEVEL ??= "3"; // TF's own log lines; we report failures ourselves, in one line
  try {
    addon = createRequire(import.meta.url)(collectiveAddonPath()) as CollectiveAddon;
  } catch (err) {
    throw new DistributedError(`the collective-ops addon failed to load (${firstLine(err)}); rebuild it with ${BUILD_COLLECTIVE_COMMAND}`);
  }
  return addon;
}

/** A failure of the process group: one line that says which process and what to do. */
export class DistributedError extends Error {}

function firstLine(err: unknown): string {
  return (err instanceof Error ? err.message : String(err)).split("\n")[0]!.trim();
}

export interface CollectiveOptions {
  rank: number;
  worldSize: number;
  /** host:port of every process, by rank (TF's cluster spec, job "worker"). */
  addresses: string[];
  /** Longest wait in one reduction while every peer still answers (TF's timeout_seconds). Default 1800. */
  timeoutSeconds?: number;
  /** How long the first reduction waits for the other processes to start. Default 300 s. */
  joinTimeoutSeconds?: number;
  /** Peer health check period while a reduction waits. Default 2 s. */
  healthIntervalMs?: number;
}

/** Floats per collective: one 256 MB reduction ran at a fifth of the throughput of 64 MB ones here (gRPC over
 *  loopback, TF 2.21), so big gradients go in 64 MB pieces. */
const PIECE = 16 * 1024 * 1024;

export class CollectiveGroup {
  /** Seconds spent inside reductions (waiting included), for the bench's all-reduce share. */
  reduceSeconds = 0;
  private joined = false;
  private failure: string | null = null;

  private constructor(private readonly a: CollectiveAddon, readonly o: Required<CollectiveOptions>) {}

  /** Starts this process's TF server and joins the group; a busy port or a bad cluster spec throws at once. */
  static start(options: CollectiveOptions): CollectiveGroup {
    const o: Required<CollectiveOptions> = { timeoutSeconds: 1800, joinTimeoutSeconds: 300, healthIntervalMs: 2000, ...options };
    const a = loadAddon();
    const self = o.addresses[o.rank];
    try {
      a.init({ rank: o.rank, worldSize: o.worldSize, addresses: o.addresses });
    } catch (err) {
      const msg = firstLine(err);
      if (/Could not start gRPC server/i.test(msg)) {
        throw new DistributedError(`process ${o.rank} cannot listen on ${self}: the port is in use (another training job?) or the address is not this machine's; pick another --main_process_port`);
      }
      throw new DistributedError(`process ${o.rank}: ${msg}`);
    }
    return new CollectiveGroup(a, o);
  }

  get rank(): number { return this.o.rank; }
  get worldSize(): number { return this.o.worldSize; }

  /** Sums `values` over all processes, in place, in pieces of at most PIECE floats (one collective each, in the same
   *  order on every process). Rejects with a DistributedError naming the failed peer. */
  async allReduceSum(values: Float32Array): Promise<void> {
    for (let i = 0; i < values.length || i === 0; i += PIECE) await this.reducePiece(values.subarray(i, i + PIECE));
  }

  private async reducePiece(values: Float32Array): Promise<void> {
    if (this.failure) throw new DistributedError(this.failure);
    const t0 = performance.now();
    const pending = this.a.allReduce(values, { mean: false, timeoutSeconds: this.joined ? this.o.timeoutSeconds : this.o.joinTimeoutSeconds });
    let done = false;
    const watchdog = this.watch(() => done, t0);
    try {
      await pending;
      this.joined = true;
    } catch (err) {
      done = true;
      void watchdog; // it ends at its next tick (its timer does not keep the process alive)
      if (!this.failure) this.failure = await this.explain(err);
      throw new DistributedError(this.failure);
    } finally {
      done = true;
      this.reduceSeconds += (performance.now() - t0) / 1000;
    }
  }

  /** Peer health checks while a reduction waits; a dead peer aborts the collectives (MWMS's check-health thread). */
  private async watch(isDone: () => boolean, t0: number): Promise<void> {
    while (!isDone()) {
      await new Promise((r) => setTimeout(r, this.o.healthIntervalMs).unref());
      if (isDone()) return;
      for (let p = 0; p < this.o.worldSize; p++) {
        if (p === this.o.rank || isDone()) continue;
        try {
          await this.a.checkPeerHealth(p, Math.max(1000, this.o.healthIntervalMs));
        } catch (err) {
          // before the group first met, a peer that is still loading its model has no server yet: keep waiting
          if (!this.joined && (performance.now() - t0) / 1000 < this.o.joinTimeoutSeconds) continue;
          if (isDone()) return;
          this.failure = this.joined
            ? `process ${p} (${this.o.addresses[p]}) stopped answering (${firstLine(err)}); the collective all-reduce was aborted`
            : this.notJoined(p, err);
          this.a.abort(this.failure);
          return;
        }
      }
    }
  }

  private notJoined(p: number, err: unknown): string {
    return `process ${p} (${this.o.addresses[p]}) did not join within ${this.o.joinTimeoutSeconds} s (${firstLine(err)}): is it started, with the same --num_processes and a reachable address?`;
  }

  /** A failed reduction in one line: which peer is gone, if a quick health check can tell (also on a timeout: TF's
   *  timer can fire before the watchdog's, and "a process is stuck" hid a machine whose process never started). */
  private async explain(err: unknown): Promise<string> {
    const tf = firstLine(err);
    if (/group with size/i.test(tf)) return `the processes were started with different world sizes (--num_processes / WORLD_SIZE): ${tf}`;
    for (let p = 0; p < this.o.worldSize; p++) {
      if (p === this.o.rank) continue;
      try {
        await this.a.checkPeerHealth(p, 1000);
      } catch {
        return this.joined ? `process ${p} (${this.o.addresses[p]}) stopped: the collective all-reduce failed (${tf})` : this.notJoined(p, err);
      }
    }
    if (/timed out|deadline/i.test(tf)) {
      return `the all-reduce timed out after ${this.joined ? this.o.timeoutSeconds : this.o.joinTimeoutSeconds} s (${tf}): a process is stuck or the group was launched with different sizes`;
    }
    return `the collective all-reduce failed: ${tf}`;
  }

  /** Fails any pending and later reduction at once (this process is leaving). */
  abort(message: string): void {
    this.failure ??= message;
    this.a.abort(message);
  }
}
