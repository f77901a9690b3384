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

/** How a value prints in a cell's result: like the Node REPL (strings quoted). */
export function plainText(value: unknown): string {
  return util.inspect(value, { depth: 4, maxArrayLength: 50, breakLength: 100 });
}

/** Validates a bundle and makes every entry JSON-ready (bytes → base64). */
export function normalizeBundle(bundle: unknown): MimeBundle {
  if (!bundle || typeof bundle !== "object" || Array.isArray(bundle)) {
    throw new TypeError(`a MIME bundle must be an object of mime type → data, got ${plainText(bundle)}`);
  }
  const out: MimeBundle = {};
  for (const [mime, v] of Object.entries(bundle as Record<string, unknown>)) {
    if (v === undefined) continue;
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
