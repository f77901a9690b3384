/**
 * Names every cell sees without an import, as in IPython and Deno's kernel: `display(value)` shows any value as
 * rich output now (not only as the cell's last expression), `html` / `md` tagged templates make HTML and Markdown
 * output, `input()` / `prompt()` ask the user for a line (stdin input_request), `_` is the last result (kept by the
 * engine). They reach the frontend through the display bridge.
 */
import { BRIDGE_SYMBOL, type KernelBridge } from "./bridge.js";
import { DISPLAY_SYMBOL, normalizeBundle, plainText } from "./display.js";

export interface DisplayCallOptions {
  /** Treat `value` as a ready MIME bundle ({ "text/html": ..., ... }). */
  raw?: boolean;
  displayId?: string;
  update?: boolean;
  metadata?: Record<string, unknown>;
}

function bridge(): KernelBridge | undefined {
  return (globalThis as Record<symbol, KernelBridge | undefined>)[BRIDGE_SYMBOL];
}

/** Shows `value` as display_data, at once (after the awaited bundle when its display method is async). */
export function display(value: unknown, opts: DisplayCallOptions = {}): void {
  const send = (bundle: Record<string, unknown>) => {
    const b = bridge();
    if (b) b.display(bundle, { displayId: opts.displayId, update: opts.update, metadata: opts.metadata });
    else process.stdout.write(`${String(bundle["text/plain"] ?? "")}\n`);
  };
  if (opts.raw) return send(normalizeBundle(value));
  const method = value !== null && (typeof value === "object" || typeof value === "function")
    ? (value as Record<PropertyKey, unknown>)[DISPLAY_SYMBOL] : undefined;
  if (typeof method !== "function") return send({ "text/plain": plainText(value) });
  const r: unknown = method.call(value);
  const finish = (raw: unknown) => {
    const bundle = normalizeBundle(raw);
    if (!("text/plain" in bundle)) bundle["text/plain"] = plainText(value);
    send(bundle);
  };
  if (!(r instanceof Promise)) return finish(r);
  // output of an async display method still belongs to the calling cell (the kernel's AsyncLocalStorage), and the
  // cell's reply waits for it: a headless run stops listening at idle
  const shown = r.then(finish, (e: unknown) => void process.stderr.write(`display(): ${(e as Error)?.message ?? e}\n`));
  bridge()?.beforeIdle?.(() => shown);
}

function template(strings: TemplateStringsArray, values: unknown[]): string {
  return strings.reduce((s, part, i) => s + part + (i < values.length ? String(values[i]) : ""), "");
}

/** html`<b>${x}</b>`: an object that renders as text/html (Deno's `html`). */
export function html(strings: TemplateStringsArray, ...values: unknown[]): { readonly html: string } {
  const text = template(strings, values);
  return { html: text, [DISPLAY_SYMBOL]: () => ({ "text/html": text, "text/plain": text }) } as { readonly html: string };
}

/** md`# ${title}`: an object that renders as text/markdown (Deno's `md`). */
export function md(strings: TemplateStringsArray, ...values: unknown[]): { readonly markdown: string } {
  const text = template(strings, values);
  return { markdown: text, [DISPLAY_SYMBOL]: () => ({ "text/markdown": text, "text/plain": text }) } as { readonly markdown: string };
}

function ask(prompt: string, password: boolean): Promise<string> {
  const b = bridge();
  return b ? b.input(prompt, { password }) : Promise.reject(new Error("input() needs the kernel (its stdin channel)"));
}

/** A line from the user (IPython's `input()`; awaited: the kernel's thread must stay free to receive the answer). */
export function input(prompt = "", opts: { password?: boolean } = {}): Promise<string> {
  return ask(prompt, !!opts.password);
}

/** The browser's / Deno's `prompt(message, default)`, awaited: the answer, or `defaultValue` when it is empty. */
export async function prompt(message = "", defaultValue?: string): Promise<string> {
  const answer = await ask(defaultValue ? `${message} [${defaultValue}] ` : `${message} `, false);
  return answer === "" ? (defaultValue ?? answer) : answer;
}

/** The values and the declarations the cell compiler sees for them. */
export const cellGlobals = {
  values: { display, html, md, input, prompt },
  declarations: [
    "declare function display(value: unknown, options?: { raw?: boolean; displayId?: string; update?: boolean; metadata?: Record<string, unknown> }): void;",
    "declare function html(strings: TemplateStringsArray, ...values: unknown[]): { readonly html: string };",
    "declare function md(strings: TemplateStringsArray, ...values: unknown[]): { readonly markdown: string };",
    "declare function input(prompt?: string, options?: { password?: boolean }): Promise<string>;",
    "declare function prompt(message?: string, defaultValue?: string): Promise<string>;",
  ].join("\n"),
};
