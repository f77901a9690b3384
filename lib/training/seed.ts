/**
 * `--seed` left unset. train_controlnet.py then never calls set_seed: each run draws its own randomness. Here the seed
 * is drawn once (crypto), printed so the run can be repeated with `--seed`, and used everywhere a seed goes (the
 * ControlNet's initialisation, max_train_samples' shuffle, the data order, noise, validation), exactly as if it had
 * been passed. A resumed run (`--resume_from_checkpoint`) continues with its checkpoint's seed, recorded in the run
 * identity of training_state.json, so a stopped-and-resumed run ends as the uninterrupted one would have.
 */
import crypto from "node:crypto";
import path from "node:path";
import { listCheckpoints, readTrainingState, resolveResume } from "./checkpoints.js";
import { fromPieces16, pieces16, type DataParallel } from "./distributed.js";

export interface SeedArgs {
  seed: number | null;
  output_dir: string;
  resume_from_checkpoint: string | null;
}

/** The checkpoint `--resume_from_checkpoint` would continue, and its recorded seed (null when none is recorded). */
function checkpointSeed(a: SeedArgs): { name: string; seed: number | null } | null {
  const r = resolveResume(a.output_dir, a.resume_from_checkpoint);
  if (!r.checkpoint) return null;
  const run = readTrainingState(r.checkpoint.path).run as { seed?: unknown } | undefined;
  const seed = run?.seed;
  return { name: path.basename(r.checkpoint.path), seed: Number.isSafeInteger(seed) && (seed as number) >= 0 ? (seed as number) : null };
}

/**
 * A new run with a random seed beside the checkpoints of a run that recorded its seed: the same command run again
 * (after a crash, say) would be another run in that folder, whose checkpoints the total limit and a later "latest"
 * would mix up with these (the trainer refuses that too, naming the seeds, which the user never chose: say it plainly).
 */
function refuseNewRunBeside(dir: string): void {
  const last = listCheckpoints(dir).at(-1);
  const recorded = last ? (readTrainingState(last.path).run as { seed?: unknown } | undefined)?.seed : undefined;
  if (!last || recorded === undefined) return;
  throw new Error(`${dir} holds a run's checkpoints (the latest is ${path.basename(last.path)}); nothing was changed. ` +
    "--seed is not set, so this would start another run (with a random seed) beside them. " +
    `To continue that run: --resume_from_checkpoint latest (it takes the checkpoint's seed). To start over here: remove ${path.join(dir, "checkpoint-*")} first. Or use another output_dir.`);
}

/** Rank 0's choice, for every process of a data-parallel group (one all-reduce: the others add zeros). */
async function broadcastFromRank0(seed: number, parallel: DataParallel): Promise<number> {
  // four 16-bit pieces cover any seed (safe integers are below 2^53)
  const v = new Float32Array(parallel.isMainProcess ? pieces16(seed, 4) : [0, 0, 0, 0]);
  await parallel.allReduceSum(v);
  return fromPieces16(v);
}

/**
 * The run's seed: `--seed` when given; else the resumed checkpoint's; else a fresh random one. Says which in one line
 * (`log`; rank 0's under data parallelism, whose choice every process takes).
 */
export async function resolveSeed(a: SeedArgs, log: (line: string) => void, parallel: DataParallel | null = null): Promise<number> {
  if (a.seed !== null) return a.seed;
  let seed = 0;
  if (!parallel || parallel.isMainProcess) {
    const ck = a.resume_from_checkpoint ? checkpointSeed(a) : null;
    if (ck?.seed != null) {
      seed = ck.seed;
      log(`--seed not set: resuming with ${ck.name}'s seed ${seed} (the run's own)`);
    } else {
      if (!a.resume_from_checkpoint) refuseNewRunBeside(a.output_dir);
      seed = crypto.randomInt(2 ** 32);
      log(ck ? `--seed not set and ${ck.name} records no usable seed: using seed ${seed} (pass --seed ${seed} to repeat this run)`
        : `--seed not set: using seed ${seed} (pass --seed ${seed} to repeat this run)`);
    }
  }
  return parallel ? broadcastFromRank0(seed, parallel) : seed;
}
