/**
 * Idempotent cell helpers: a helper called again with the same arguments returns its cached result (and says so in
 * one line); different arguments recompute. The cache lives for the kernel process; state that must survive a
 * restart lives on disk (datasets, checkpoints) and is picked up by the helpers themselves.
 */
import { createHash } from "node:crypto";

interface Entry {
  key: string;
  value: unknown;
}
const cache = new Map<string, Entry>();

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
  /** Called with the previous value when it is replaced (e.g. to dispose tensors); awaited. */
  dispose?: (old: unknown) => unknown;
}

/** Runs `compute` unless the helper `name` already ran with the same `args`. */
export async function memo<T>(name: string, args: unknown, compute: () => Promise<T> | T, opts: MemoOptions = {}): Promise<T> {
  const log = opts.log ?? ((l: string) => console.log(l));
  const key = argsKey(args);
  const prev = cache.get(name);
  if (prev && prev.key === key) {
    log(`${name}: same arguments as before — using the cached result.`);
    return prev.value as T;
  }
  if (prev) log(`${name}: arguments changed — recomputing.`);
  const value = await compute();
  if (prev) await opts.dispose?.(prev.value);
  cache.set(name, { key, value });
  return value;
}

/** Forgets one helper's cached result (or all). */
export function forget(name?: string): void {
  if (name) cache.delete(name);
  else cache.clear();
}
