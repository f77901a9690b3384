/**
 * The kernel's own diagnostics. They go to the process's real stderr (the terminal or the Jupyter server log),
 * captured here before the kernel redirects process.stdout/stderr into cell output.
 */
const write = process.stderr.write.bind(process.stderr);

export function log(message: string): void {
  write(`[controlnet-ts kernel] ${message}\n`);
}

/** The unredirected stdout/stderr writers, for output that belongs to no cell. */
export const rawStdout = process.stdout.write.bind(process.stdout);
export const rawStderr = write;
