/**
 * When stdout or stderr can no longer be written — EPIPE: the reader of a pipe exited (`… | grep -m1`, a notebook
 * kernel that ran the command died); EIO: the terminal closed — Node emits an 'error' event on the stream, and an
 * unhandled one crashes the process: a training run died mid-run, its steps since the last checkpoint lost (and the
 * launcher, crashing, killed its workers). Instead such errors are swallowed from then on and `gone` is called once,
 * so the caller stops as a closed terminal's SIGHUP does: at a step boundary, with a checkpoint.
 */
export function whenOutputGone(gone: (why: string) => void, streams: NodeJS.WritableStream[] = [process.stdout, process.stderr]): () => void {
  let called = false;
  const onError = (e: NodeJS.ErrnoException) => {
    if (called) return;
    called = true;
    gone(e.code ?? e.message);
  };
  for (const s of streams) if (typeof s.on === "function") s.on("error", onError); // (a test's writer may have no events)
  return () => {
    // the swallowing stays (a late write must not crash a process that is ending); only `gone` is not called again
    called = true;
  };
}
