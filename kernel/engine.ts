/**
 * CellEngine: the one seam between the Jupyter protocol layer and whatever compiles and runs a cell. The kernel only
 * talks to this interface, so tslab's compiler (the current implementation, kernel/tslab-engine.ts) can later be
 * swapped for one with native ESM, a newer TypeScript or tsconfig support without touching the protocol code.
 *
 * All positions are UTF-16 offsets into `code` (JavaScript string indices); the kernel converts to and from the
 * protocol's code-point offsets.
 */

/** What went wrong in a cell, already in the shape of the protocol's `error` content. */
export interface CellError {
  ename: string;
  evalue: string;
  traceback: string[];
  /** The original thrown value, when there was one (not for compile errors). */
  cause?: unknown;
}

export type CellOutcome =
  | { status: "ok"; hasValue: boolean; value?: unknown }
  | { status: "error"; error: CellError };

export interface Completion {
  matches: string[];
  start: number;
  end: number;
}

export interface Inspection {
  found: boolean;
  /** text/plain rendering: signature first, then documentation. */
  text?: string;
}

export interface CompleteCheck {
  status: "complete" | "incomplete" | "invalid" | "unknown";
  indent?: string;
}

export interface ExecuteOptions {
  /** How stack frames and excerpts name this cell ("In[3]"). */
  label?: string;
  /** The cell as the user wrote it, for excerpts, where `code` has a part blanked out (a `%%time` line): the same
   *  length and lines as `code`. */
  shown?: string;
  /** Called when the cell has compiled, before it runs (`%time` reports the run, as IPython, and the compile apart). */
  onCompiled?: () => void;
  /** An evaluation the protocol asked for beside the cell (`user_expressions`): its result does not become `_`. */
  keepLastResult?: boolean;
}

export interface CellEngine {
  /** Engine name and the version of the language implementation that really runs cells (kernel_info). */
  readonly info: { name: string; languageVersion: string };
  /** Compiles and runs one cell. Declarations persist into later cells. Never rejects. */
  execute(code: string, opts?: ExecuteOptions): Promise<CellOutcome>;
  complete(code: string, cursor: number): Completion;
  inspect(code: string, cursor: number): Inspection;
  isComplete(code: string): CompleteCheck;
  /**
   * Stops waiting for the running cell's asynchronous work: its `execute()` settles with an error at once. (The
   * cooperative part of an interrupt, aborting the cell's AbortSignal, is the kernel's job, not the engine's.)
   */
  interrupt(): void;
  /**
   * How the engine tells whether the code running right now belongs to a cell the kernel abandoned (interrupted and
   * no longer waited for). Cell code then stops at its next `await` (see tslab-engine.ts), with an error that
   * isAbandonedError recognises and that the kernel does not report.
   */
  watchAbandoned(check: () => boolean): void;
  /** An error raised outside any cell's execution (a timer's, a late rejection's), with its frames mapped to cells. */
  describeError(e: unknown): CellError;
  close(): void;
}

/** The name `KeyboardInterrupt` is what Jupyter frontends and nbclient recognise as "the user interrupted". */
export const INTERRUPT_ENAME = "KeyboardInterrupt";

const ABANDONED = Symbol.for("controlnet-ts.kernel.abandoned");

/** The error that stops an abandoned cell's code where it resumes (an `await`, a `catch`). */
export function abandonedError(): Error {
  const e = new Error("the cell was interrupted");
  e.name = INTERRUPT_ENAME;
  Object.defineProperty(e, ABANDONED, { value: true });
  return e;
}

/** Whether `e` is the error that stopped an abandoned cell's code: an interrupt the user asked for, not a failure. */
export function isAbandonedError(e: unknown): boolean {
  return typeof e === "object" && e !== null && (e as Record<symbol, unknown>)[ABANDONED] === true;
}
