/**
 * One training run per output_dir at a time. Two runs started side by side in one folder each believed it saved its
 * result while the other's checkpoints, final weights and log lines replaced or interleaved with its own. The run that
 * writes (rank 0) holds `output_dir/.controlnet-ts.lock` (created exclusively, holding its host and pid) until it
 * closes or its process exits; another trainer of the same process shares it. A lock whose process is gone on this
 * host (a crash, `kill -9`), or that was left half-written, is taken over; one held by a live process, or by another
 * host (a shared folder), refuses the second run in one line.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { ArgsError } from "./args.js";

export const LOCK_NAME = ".controlnet-ts.lock";

interface LockRecord {
  host: string;
  pid: number;
  started: string;
}

/** Locks this process holds, with how many trainers of this process hold each (a notebook's trainer resuming the
 *  run of one it replaced, tests): the folder is one process's, and that process orders its own trainers. */
const held = new Map<string, number>();

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM"; // exists, owned by someone else
  }
}

/** A lock file that does not parse this long after it was made was left half-written (a kill between its create
 *  and its write, a full disk), not one being written now. */
const TORN_AFTER_MS = 10_000;

function readLock(file: string): LockRecord | "torn" | null {
  try {
    return JSON.parse(fs.readFileSync(file, "utf8")) as LockRecord;
  } catch {
    try {
      return Date.now() - fs.statSync(file).mtimeMs > TORN_AFTER_MS ? "torn" : null;
    } catch {
      return null; // gone meanwhile: the next attempt creates it
    }
  }
}

/** Takes the lock of `outputDir` (which exists) for this process; returns its release. Throws ArgsError when held. */
export function lockRun(outputDir: string): () => void {
  const file = path.join(path.resolve(outputDir), LOCK_NAME);
  const me: LockRecord = { host: os.hostname(), pid: process.pid, started: new Date().toISOString() };
  for (let attempt = 0; !held.has(file); attempt++) {
    try {
      fs.writeFileSync(file, JSON.stringify(me), { flag: "wx" });
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
      const read = readLock(file);
      const other = read === "torn" ? null : read;
      // our own pid in a lock we do not hold: an earlier process that had it (a container restarted)
      const stale = read === "torn" || (other && other.host === me.host && (other.pid === process.pid || !alive(other.pid)));
      if (!stale || attempt > 0) throw locked(outputDir, other);
      fs.rmSync(file, { force: true }); // its process is gone: take it over (once; a racing taker wins or we refuse)
    }
  }
  const first = !held.has(file);
  held.set(file, (held.get(file) ?? 0) + 1);
  const removeNow = () => {
    held.delete(file);
    fs.rmSync(file, { force: true });
  };
  if (first) process.once("exit", removeNow);
  let released = false;
  return () => {
    if (released || !held.has(file)) return;
    released = true;
    const left = held.get(file)! - 1;
    if (left > 0) return void held.set(file, left);
    process.off("exit", removeNow);
    removeNow();
  };
}

function locked(outputDir: string, by: LockRecord | null): ArgsError {
  const who = by ? `pid ${by.pid} on ${by.host}, since ${by.started}` : "a process that is starting";
  return new ArgsError(`another training run (${who}) is writing to ${outputDir}; nothing was changed. ` +
    `Wait for it, stop it, or use another --output_dir (if no such run exists any more, remove ${path.join(outputDir, LOCK_NAME)}).`);
}
