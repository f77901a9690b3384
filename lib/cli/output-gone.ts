/**
 * When stdout or stderr can no longer be written — EPIPE: the reader of a pipe exited (`… | grep -m1`, a notebook
 * kernel that ran the command died); EIO: the terminal closed — Node emits an 'error' event on the stream, and an
 * unhandled one crashes the process: a training run died mid-run, its steps since the last checkpoint lost (and the
 * launcher, crashing, killed its workers). Instead such errors are swallowed from then on and `gone` is called once,
 * so the caller stops as a closed terminal's SIGHUP does: at a step boundary, with a checkpoint.
 */
export interface OutputWatch {
  /** `gone` is not called again; the swallowing stays (a late write must not crash a process that is ending). */
  stop(): void;
  /** Writes to `preferred`, or to the other watched stream once `preferred` is gone (what is still said — the
   *  checkpoint kept — reaches whoever still reads), or nowhere when both are. */
  write(preferred: NodeJS.WritableStream, text: string): void;
}

export function whenOutputGone(gone: (why: string) => void, streams: NodeJS.WritableStream[] = [process.stdout, process.stderr]): OutputWatch {
  let called = false;
  const dead = new Set<NodeJS.WritableStream>();
  for (const s of streams) {
    if (typeof s.on !== "function") continue; // (a test's writer may have no events)
    s.on("error", (e: NodeJS.ErrnoException) => {
      dead.add(s);
      if (called) return;
      called = true;
      gone(e.code ?? e.message);
    });
  }
  return {
    stop: () => { called = true; },
    write: (preferred, text) => {
      const to = dead.has(preferred) ? streams.find((s) => !dead.has(s)) : preferred;
      to?.write(text);
    },
  };
}
