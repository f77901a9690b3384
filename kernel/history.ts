/**
 * In-memory execution history for history_request (tail, range, search), per kernel process. Frontends use it for
 * "previous input" navigation; nothing is persisted across kernel restarts.
 */

type Entry = { line: number; input: string; output: string | null };
export type HistoryItem = [number, number, string] | [number, number, [string, string | null]];

export interface HistoryQuery {
  hist_access_type?: string;
  output?: boolean;
  session?: number;
  start?: number;
  stop?: number | null;
  n?: number | null;
  pattern?: string;
  unique?: boolean;
}

/** IPython's glob patterns: `*` any run, `?` one character, everything else literal. */
function globToRegExp(glob: string): RegExp {
  const body = glob.replace(/[.+^${}()|[\]\\]/g, "\\$&").replace(/\*/g, "[\\s\\S]*").replace(/\?/g, "[\\s\\S]");
  return new RegExp(`^${body}$`);
}

export class History {
  /** This kernel's session number (IPython numbers sessions from 1; 0 means "the current one" in requests). */
  readonly session = 1;
  private readonly entries: Entry[] = [];

  record(line: number, input: string): void {
    this.entries.push({ line, input, output: null });
  }

  setOutput(line: number, text: string): void {
    const e = this.entries.findLast((x) => x.line === line);
    if (e) e.output = text;
  }

  query(q: HistoryQuery): HistoryItem[] {
    let found: Entry[];
    switch (q.hist_access_type) {
      case "tail":
        found = this.entries.slice(-Math.max(0, q.n ?? 10));
        break;
      case "range": {
        if (q.session !== undefined && q.session !== 0 && q.session !== this.session) return [];
        const start = q.start ?? 0;
        const stop = q.stop ?? Infinity;
        found = this.entries.filter((e) => e.line >= start && e.line < stop);
        break;
      }
      case "search": {
        const re = globToRegExp(q.pattern ?? "*");
        found = this.entries.filter((e) => re.test(e.input));
        if (q.unique) found = found.filter((e, i) => !found.slice(i + 1).some((later) => later.input === e.input));
        if (q.n) found = found.slice(-q.n);
        break;
      }
      default:
        return [];
    }
    return found.map((e) => (q.output ? [this.session, e.line, [e.input, e.output]] : [this.session, e.line, e.input]));
  }
}
