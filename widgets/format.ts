/** Escaping and number formatting shared by the widgets' HTML, SVG and text renderings. */

const ESCAPES: Record<string, string> = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };

/** Escapes text for HTML/XML content and attribute values (prompts are user text: `<script>` must stay text). */
export function escapeHtml(s: unknown): string {
  return String(s).replace(/[&<>"']/g, (c) => ESCAPES[c]!);
}

const BASE64_RE = /^[A-Za-z0-9+/]*={0,2}$/;

/** Base64 of bytes, or the string itself when it is base64 (whitespace removed). Any other string is refused: it
 *  would go into an HTML attribute (`src="data:…"`) as it is. */
export function toBase64(data: Uint8Array | string): string {
  if (typeof data !== "string") return Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString("base64");
  const s = data.replace(/\s+/g, "");
  if (!BASE64_RE.test(s) || s.length % 4 === 1) {
    throw new Error(`an image given as a string must be base64 (got ${JSON.stringify(data.length > 40 ? data.slice(0, 40) + "…" : data)}); pass the bytes, or base64 of them`);
  }
  return s;
}

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB"];

/** 1536 → "1.5 KiB"; null/undefined → "n/a". */
export function formatBytes(n: number | null | undefined): string {
  if (n === null || n === undefined || !Number.isFinite(n)) return "n/a";
  let v = Math.abs(n);
  let u = 0;
  while (v >= 1024 && u < UNITS.length - 1) {
    v /= 1024;
    u++;
  }
  const s = u === 0 ? String(Math.round(v)) : v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2);
  return `${n < 0 ? "-" : ""}${s} ${UNITS[u]}`;
}

/** Seconds → tqdm's "MM:SS" or "H:MM:SS"; unknown → "?". */
export function formatDuration(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds) || seconds < 0) return "?";
  const t = Math.round(seconds);
  const h = Math.floor(t / 3600);
  const m = Math.floor((t % 3600) / 60);
  const s = t % 60;
  const mm = String(m).padStart(2, "0");
  const ss = String(s).padStart(2, "0");
  return h > 0 ? `${h}:${mm}:${ss}` : `${mm}:${ss}`;
}

/** A short, readable number: 0.1234 → "0.1234", 1e-5 → "1e-5", 12345.6 → "1.235e+4". */
export function formatNumber(x: number | null | undefined, digits = 4): string {
  if (x === null || x === undefined) return "n/a";
  if (!Number.isFinite(x)) return String(x);
  if (x === 0) return "0";
  const a = Math.abs(x);
  if (a >= 1e-3 && a < 1e4) return String(Number(x.toPrecision(digits)));
  return x.toExponential(Math.max(0, digits - 2)).replace(/\.?0+e/, "e");
}
