/**
 * Idempotent cell helpers: a helper called again with the same arguments returns its cached result (and says so in
 * one line); different arguments recompute. The cache lives for the kernel process; state that must survive a
 * restart lives on disk (datasets, checkpoints) and is picked up by the helpers themselves.
 */
import { createHash } from "node:crypto";
import { currentCellId } from "./display.js";

interface Entry {
  key: string;
  value: unknown;
}
/** helper name → notebook cell → that cell's last result. The cell is the client's id for it (currentCellId); "" for
 *  calls from a client that names no cell, or from no kernel. */
const cache = new Map<string, Map<string, Entry>>();

/** A stable key for plain-data arguments (objects by sorted keys; class instances by identity tag). */
export function argsKey(args: unknown): string {
  const ids = new WeakMap<object, number>();
  let next = 0;
  const norm = (v: unknown): unknown => {
    if (v === null || typeof v !== "object") return typeof v === "function" ? `fn:${(v as Function).name}` : v;
    if (Array.isArray(v)) return v.map(norm);
    const proto = Object.getPrototypeOf(v);
    if (proto !== Object.prototype && proto !== null) {
      if (!ids.has(v)) ids.set(v, identityOf(v) ?? next++);
      return `obj:${proto.constructor?.name}:${ids.get(v)}`;
    }
    return Object.fromEntries(Object.keys(v).sort().map((k) => [k, norm((v as Record<string, unknown>)[k])]));
  };
  return createHash("sha256").update(JSON.stringify(norm(args)) ?? "undefined").digest("hex").slice(0, 16);
}

const objectIds = new WeakMap<object, number>();
let objectCounter = 1_000_000;
function identityOf(o: object): number {
  if (!objectIds.has(o)) objectIds.set(o, objectCounter++);
  return objectIds.get(o)!;
}

export interface MemoOptions {
  /** Where the one-line "cached"/"recomputing" note goes (default console.log). */
  log?: (line: string) => void;
  /** Called with a cell's previous value when that cell runs again with other arguments (e.g. to dispose tensors);
   *  awaited. Never called for a value another cell's variable may hold. */
  dispose?: (old: unknown) => unknown;
}

/**
 * Runs `compute` unless the helper `name` already ran with the same `args` (in any cell: two cells asking for the same
 * thing share it). A cell run again with other arguments replaces — and disposes — its own earlier result, as
 * re-running a cell replaces its variable. Another cell's result is never disposed: where the client does not say
 * which cell runs (nbclient, jupyter console, a script), a call with other arguments may be another cell's, so the
 * earlier result stays usable (and is freed by the user, or with the kernel).
 */
export async function memo<T>(name: string, args: unknown, compute: () => Promise<T> | T, opts: MemoOptions = {}): Promise<T> {
  const log = opts.log ?? ((l: string) => console.log(l));
  const key = argsKey(args);
  const cellId = currentCellId();
  const cell = cellId ?? "";
  let cells = cache.get(name);
  if (!cells) cache.set(name, (cells = new Map()));
  const same = [...cells.values()].find((e) => e.key === key);
  if (same) {
    log(`${name}: same arguments as before — using the cached result.`);
    cells.set(cell, same);
    return same.value as T;
  }
  const prev = cellId === null ? undefined : cells.get(cell);
  if (prev) log(`${name}: arguments changed — recomputing.`);
  const value = await compute();
  cells.set(cell, { key, value });
  if (prev && ![...cells.values()].some((e) => e.value === prev.value)) await opts.dispose?.(prev.value);
  return value;
}

/** Forgets one helper's cached results (or all). */
export function forget(name?: string): void {
  if (name) cache.delete(name);
  else cache.clear();
}
