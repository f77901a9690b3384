/**
 * An error in what the caller asked for (an option out of range, a path that is not there, a run that is someone
 * else's): its message is the whole story, naming the problem and what was kept. Front ends show it as that one line —
 * the command line prints the message, the kernel leaves the library's own stack frames out (the cell's stay) — where
 * any other error keeps its frames, since those point at a bug.
 */
export class InputError extends Error {
  /** Duck-typed by front ends that must not import the library (the kernel). */
  readonly inputError = true;
  override name = "InputError";
}
