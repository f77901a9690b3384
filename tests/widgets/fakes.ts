/** Test doubles for the widgets: a kernel bridge that records calls, and a clock driven by hand. */
import { deflateSync } from "node:zlib";
import type { Clock } from "../../widgets/throttle.js";

export interface DisplayCall {
  bundle: Record<string, unknown>;
  opts: { displayId?: string; update?: boolean; metadata?: Record<string, unknown> } | undefined;
}

const KEY = Symbol.for("controlnet-ts.kernel");

export interface FakeBridge {
  calls: DisplayCall[];
  clears: boolean[];
  controller: AbortController;
  /** The cell the bridge says is running (a client's cellId); null as from a client that names none. */
  cell: string | null;
  uninstall(): void;
}

/** Installs a recording bridge on globalThis (as our kernel would) until uninstall(). */
export function installFakeBridge(): FakeBridge {
  const g = globalThis as Record<symbol, unknown>;
  const prev = g[KEY];
  const fake: FakeBridge = {
    calls: [],
    clears: [],
    controller: new AbortController(),
    cell: null,
    uninstall: () => {
      if (prev === undefined) delete g[KEY];
      else g[KEY] = prev;
    },
  };
  g[KEY] = {
    display: (bundle: Record<string, unknown>, opts?: DisplayCall["opts"]) => fake.calls.push({ bundle, opts }),
    clearOutput: (wait?: boolean) => fake.clears.push(!!wait),
    abortSignal: () => fake.controller.signal,
    cellId: () => fake.cell,
  };
  return fake;
}

/** A clock whose time moves only through advance(), firing due timers in order. */
export class FakeClock implements Clock {
  t = 0;
  private timers = new Map<number, { at: number; fn: () => void }>();
  private next = 1;

  now(): number {
    return this.t;
  }
  setTimeout(fn: () => void, ms: number): unknown {
    const id = this.next++;
    this.timers.set(id, { at: this.t + ms, fn });
    return id;
  }
  clearTimeout(h: unknown): void {
    this.timers.delete(h as number);
  }
  get pending(): number {
    return this.timers.size;
  }
  advance(ms: number): void {
    const end = this.t + ms;
    for (;;) {
      let due: [number, { at: number; fn: () => void }] | null = null;
      for (const e of this.timers) if (e[1].at <= end && (!due || e[1].at < due[1].at)) due = e;
      if (!due) break;
      this.timers.delete(due[0]);
      this.t = Math.max(this.t, due[1].at);
      due[1].fn();
    }
    this.t = end;
  }
}

/** Captures what is written to stdout while `fn` runs (synchronously). */
export function captureStdout(fn: () => void): string {
  const orig = process.stdout.write.bind(process.stdout);
  let out = "";
  (process.stdout as { write: unknown }).write = (chunk: string | Uint8Array) => {
    out += typeof chunk === "string" ? chunk : Buffer.from(chunk).toString();
    return true;
  };
  try {
    fn();
  } finally {
    (process.stdout as { write: unknown }).write = orig;
  }
  return out;
}

/** A valid w×h RGB PNG of one colour, made without an image library. */
export function tinyPng(w: number, h: number, rgb: [number, number, number] = [255, 0, 0]): Uint8Array {
  const crcTable = Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  const crc = (b: Buffer) => {
    let c = 0xffffffff;
    for (const x of b) c = crcTable[(c ^ x) & 0xff]! ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  };
  const chunk = (type: string, data: Buffer) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const td = Buffer.concat([Buffer.from(type, "ascii"), data]);
    const c = Buffer.alloc(4);
    c.writeUInt32BE(crc(td));
    return Buffer.concat([len, td, c]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(w, 0);
  ihdr.writeUInt32BE(h, 4);
  ihdr.set([8, 2, 0, 0, 0], 8);
  const raw = Buffer.alloc(h * (1 + 3 * w));
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) raw.set(rgb, y * (1 + 3 * w) + 1 + 3 * x);
  const idat = deflateSync(raw);
  return new Uint8Array(Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk("IHDR", ihdr), chunk("IDAT", idat), chunk("IEND", Buffer.alloc(0))]));
}

/**
 * A strict-enough XML well-formedness check for the SVG/HTML the widgets write: every tag closes in order,
 * attributes are quoted, text holds no raw `<` and only known entities. Returns the element names in order.
 */
export function checkXml(src: string): string[] {
  const names: string[] = [];
  const stack: string[] = [];
  const entity = /&(amp|lt|gt|quot|#39|apos|#\d+);/y;
  let i = 0;
  const text = (s: string, where: number) => {
    for (let k = 0; k < s.length; k++) {
      if (s[k] === "<") throw new Error(`raw '<' at ${where + k}`);
      if (s[k] === "&") {
        entity.lastIndex = k;
        if (!entity.test(s)) throw new Error(`bad entity at ${where + k}: ${s.slice(k, k + 10)}`);
      }
    }
  };
  while (i < src.length) {
    const lt = src.indexOf("<", i);
    if (lt < 0) {
      text(src.slice(i), i);
      break;
    }
    text(src.slice(i, lt), i);
    const gt = src.indexOf(">", lt);
    if (gt < 0) throw new Error(`unclosed tag at ${lt}`);
    const tag = src.slice(lt + 1, gt);
    if (tag.startsWith("/")) {
      const name = tag.slice(1).trim();
      const open = stack.pop();
      if (open !== name) throw new Error(`</${name}> closes <${open}> at ${lt}`);
    } else {
      const selfClosing = tag.endsWith("/");
      const m = /^([a-zA-Z][\w:-]*)((?:\s+[\w:-]+="[^"<]*")*)\s*\/?$/.exec(tag);
      if (!m) throw new Error(`malformed tag at ${lt}: <${tag.slice(0, 80)}>`);
      for (const a of m[2]!.matchAll(/="([^"]*)"/g)) text(a[1]!, lt);
      names.push(m[1]!);
      if (!selfClosing) stack.push(m[1]!);
    }
    i = gt + 1;
  }
  if (stack.length) throw new Error(`unclosed elements: ${stack.join(", ")}`);
  return names;
}
