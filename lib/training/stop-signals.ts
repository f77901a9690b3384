/**
 * The signals that ask train_controlnet to stop at the next step boundary with a checkpoint, and the exit code of
 * such a stop (the shell's 128 + signal number): the command line (lib/cli/train.ts) exits with it; its launcher and the
 * notebook's train({ processes }) read it back from a process's exit to tell a requested stop from a failure.
 * SIGHUP is a closed terminal (ssh dropped, the output gone).
 */
export const STOP_EXIT_CODES = { SIGINT: 130, SIGTERM: 143, SIGHUP: 129 } as const;

export type StopSignal = keyof typeof STOP_EXIT_CODES;

/** The stop signal an exit code reports, or undefined for any other exit. */
export function stopSignalOf(code: number | null): StopSignal | undefined {
  return (Object.keys(STOP_EXIT_CODES) as StopSignal[]).find((s) => STOP_EXIT_CODES[s] === code);
}
