/**
 * Turning values into MIME bundles.
 *
 * An object with a `[Symbol.for("Jupyter.display")]()` method (the convention Deno's kernel uses too) renders as the
 * bundle that method returns; anything else as `text/plain` through util.inspect. Binary values inside a bundle
 * (PNG bytes) are base64-encoded, as the protocol wants for non-JSON MIME types.
 */
import util from "node:util";

export const DISPLAY_SYMBOL = Symbol.for("Jupyter.display");

export type MimeBundle = Record<string, unknown>;

function isBinary(v: unknown): v is Uint8Array | ArrayBuffer {
  return v instanceof Uint8Array || v instanceof ArrayBuffer;
}

const INSPECT_DEPTH = 4;
const INSPECT_MAX_ARRAY = 50;

/**
 * A TensorFlow.js tensor (told by its shape: the kernel does not load tfjs): its own toString, which shows the values
 * (summarised past 20 per axis) instead of the engine's bookkeeping fields. Null for anything else or a disposed one.
 */
function tensorText(value: unknown): string | null {
  if (value === null || typeof value !== "object") return null;
  const t = value as { dataSync?: unknown; shape?: unknown; dtype?: unknown; isDisposed?: unknown; toString: () => string };
  if (typeof t.dataSync !== "function" || !Array.isArray(t.shape) || typeof t.dtype !== "string" || t.isDisposed !== false) return null;
  try {
    return `${t.toString()}\n  (shape [${t.shape.join(", ")}], ${t.dtype})`;
  } catch {
    return null;
  }
}

/** How a value prints in a cell's result: like the Node REPL (strings quoted); a tensor with its values. */
export function plainText(value: unknown): string {
  const tensor = tensorText(value);
  if (tensor !== null) return tensor;
  hideAsyncBookkeeping(value);
  return util.inspect(value, { depth: INSPECT_DEPTH, maxArrayLength: INSPECT_MAX_ARRAY, breakLength: 100 });
}

/**
 * Node's async hooks keep their bookkeeping on the objects they track, as enumerable symbol properties that
 * util.inspect would show: AsyncLocalStorage's store (`[Symbol(kResourceStore)]`, for the kernel the cell's whole
 * request header) on every promise or resource created in a cell, and the promise hooks' `async_id_symbol` and
 * `trigger_async_id_symbol` on promises. They are made non-enumerable (Node reads them by key, so nothing else
 * changes), in the part of `value` that util.inspect shows: a promise prints as `Promise { 3 }`, as in the REPL.
 */
export function hideAsyncBookkeeping(value: unknown): void {
  const seen = new Set<object>();
  let budget = 10_000;
  const visit = (v: unknown, depth: number): void => {
    if (v === null || (typeof v !== "object" && typeof v !== "function") || seen.has(v) || --budget < 0) return;
    seen.add(v);
    if (util.types.isProxy(v)) return; // its traps could run user code
    const promise = util.types.isPromise(v);
    for (const sym of Object.getOwnPropertySymbols(v)) {
      const name = sym.description;
      if (name !== "kResourceStore" && !(promise && (name === "async_id_symbol" || name === "trigger_async_id_symbol"))) continue;
      const d = Object.getOwnPropertyDescriptor(v, sym);
      if (d?.enumerable && d.configurable) Object.defineProperty(v, sym, { ...d, enumerable: false });
    }
    if (depth > INSPECT_DEPTH) return;
    // (through the prototype's methods: a subclass's own iterator could run user code)
    if (util.types.isMap(v)) {
      Map.prototype.forEach.call(v, (item: unknown, key: unknown) => {
        visit(key, depth + 1);
        visit(item, depth + 1);
      });
    } else if (util.types.isSet(v)) {
      Set.prototype.forEach.call(v, (item: unknown) => visit(item, depth + 1));
    }
    if (util.types.isTypedArray(v)) return;
    if (Array.isArray(v)) {
      // the items util.inspect shows (extra properties of an array are left alone)
      for (let i = 0; i < Math.min(v.length, INSPECT_MAX_ARRAY); i++) visitOwn(v, i, depth);
      return;
    }
    for (const key of Reflect.ownKeys(v)) {
      if (--budget < 0) return;
      visitOwn(v, key, depth);
    }
  };
  // getters are not called (util.inspect does not call them either)
  const visitOwn = (v: object, key: PropertyKey, depth: number): void => {
    let d: PropertyDescriptor | undefined;
    try {
      d = Object.getOwnPropertyDescriptor(v, key);
    } catch {
      return; // a module namespace's binding before its initialisation
    }
    if (d && "value" in d) visit(d.value, depth + 1);
  };
  try {
    visit(value, 0);
  } catch {
    // whatever could not be visited prints as it is
  }
}

/** Validates a bundle and makes every entry JSON-ready (bytes → base64). */
export function normalizeBundle(bundle: unknown): MimeBundle {
  if (!bundle || typeof bundle !== "object" || Array.isArray(bundle)) {
    throw new TypeError(`a MIME bundle must be an object of mime type → data, got ${plainText(bundle)}`);
  }
  const out: MimeBundle = {};
  for (const [mime, v] of Object.entries(bundle as Record<string, unknown>)) {
    if (v === undefined) continue;
    // a front end renders text types from a string only (JupyterLab shows nothing, or fails, for a number)
    if (mime.startsWith("text/") && typeof v !== "string") throw new TypeError(`a MIME bundle's "${mime}" must be a string, got ${plainText(v)}`);
    out[mime] = isBinary(v) ? Buffer.from(v instanceof ArrayBuffer ? new Uint8Array(v) : v).toString("base64") : v;
  }
  return out;
}

/** The execute_result bundle for a cell's value (the display method may be async). */
export async function toMimeBundle(value: unknown): Promise<MimeBundle> {
  if (value !== null && (typeof value === "object" || typeof value === "function")) {
    const method = (value as Record<PropertyKey, unknown>)[DISPLAY_SYMBOL];
    if (typeof method === "function") {
      const bundle = normalizeBundle(await method.call(value));
      if (!("text/plain" in bundle)) bundle["text/plain"] = plainText(value);
      return bundle;
    }
  }
  return { "text/plain": plainText(value) };
}
