/**
 * Image grid: rows of images with a caption each (validation samples and their prompt, a dataset's conditioning |
 * target | prompt). Images travel as base64 data URIs inside the HTML; captions are user text and always escaped.
 */
import type { MimeBundle } from "../lib/cells/display.js";
import { Widget } from "./widget.js";
import type { WidgetOptions } from "./widget.js";
import { escapeHtml, toBase64 } from "./format.js";

/** PNG bytes, a base64 PNG string, or bytes/base64 with their MIME type. */
export type ImageInput = Uint8Array | string | { data: Uint8Array | string; mime?: string; width?: number; height?: number };

export interface ImageGridRow {
  images: ImageInput[];
  /** Shown under the row (the prompt). */
  caption?: string;
  /** One short label per image ("conditioning", "sample 1", ...). */
  labels?: string[];
}

export interface ImageGridState {
  rows: ImageGridRow[];
  title: string;
  /** Display width of each image in CSS pixels. */
  thumbWidth: number;
}

interface Decoded {
  b64: string;
  mime: string;
  width: number | null;
  height: number | null;
}

const PNG_SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

/** Width and height from a PNG's IHDR chunk (bytes 16..24), or null when it is not a PNG. */
export function pngSize(bytes: Uint8Array): { width: number; height: number } | null {
  if (bytes.length < 24 || !PNG_SIGNATURE.every((b, i) => bytes[i] === b)) return null;
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return { width: v.getUint32(16), height: v.getUint32(20) };
}

function decode(img: ImageInput): Decoded {
  const o = typeof img === "string" || img instanceof Uint8Array ? { data: img } : img;
  const bytes = o.data instanceof Uint8Array ? o.data : Buffer.from(o.data, "base64");
  const size = pngSize(bytes);
  return {
    b64: toBase64(o.data),
    mime: "mime" in o && o.mime ? o.mime : "image/png",
    width: ("width" in o ? o.width : undefined) ?? size?.width ?? null,
    height: ("height" in o ? o.height : undefined) ?? size?.height ?? null,
  };
}

/** Alt text that says what the image is: its label and the row's caption ("conditioning: red circle ..."). */
function altText(label: string | undefined, caption: string | undefined, j: number, count: number): string {
  const what = label ?? (count > 1 ? `image ${j + 1} of ${count}` : "image");
  return caption ? `${what}: ${caption}` : what;
}

export class ImageGrid extends Widget<ImageGridState> {
  constructor(init: Partial<ImageGridState> = {}, opts: WidgetOptions = {}) {
    super({ rows: [], title: "", thumbWidth: 192, ...init }, opts, 1);
    // a non-base64 string is refused here, with one clear message, rather than at display time
    for (const r of this.state.rows) for (const img of r.images) decode(img);
  }

  /** A grid of single images, one caption each (e.g. inference results and their prompts). */
  static fromImages(images: ImageInput[], captions: string[] = [], init: Partial<ImageGridState> = {}, opts: WidgetOptions = {}): ImageGrid {
    const rows = images.map((img, i) => (captions[i] !== undefined ? { images: [img], caption: captions[i]! } : { images: [img] }));
    return new ImageGrid({ ...init, rows }, opts);
  }

  get imageCount(): number {
    return this.state.rows.reduce((n, r) => n + r.images.length, 0);
  }

  text(): string {
    const { rows, title } = this.state;
    const head = `${title || "ImageGrid"}: ${rows.length} row${rows.length === 1 ? "" : "s"}, ${this.imageCount} image${this.imageCount === 1 ? "" : "s"}`;
    const lines = rows.map((r, i) => {
      const labels = r.labels?.length ? ` [${r.labels.join(" | ")}]` : "";
      return `  ${i + 1}. ${r.caption ?? "(no caption)"}${labels} (${r.images.length} image${r.images.length === 1 ? "" : "s"})`;
    });
    return [head, ...lines].join("\n");
  }

  html(): string {
    const { rows, title, thumbWidth } = this.state;
    const figs = rows.map((r) => {
      const imgs = r.images.map((img, j) => {
        let d: Decoded;
        try {
          d = decode(img);
        } catch (e) {
          // rows set after construction: show the problem as text, never as markup
          return `<div style="display:inline-block;color:#a00;font-size:11px">${escapeHtml((e as Error).message)}</div>`;
        }
        // Small images (tiny test models) are scaled up with hard pixels rather than blurred.
        const pixelated = d.width !== null && d.width < thumbWidth ? "image-rendering:pixelated;" : "";
        const h = d.width && d.height ? ` height="${Math.round((thumbWidth * d.height) / d.width)}"` : "";
        const label = r.labels?.[j];
        return (
          `<div style="display:inline-block;margin:0 4px 0 0;vertical-align:top;text-align:center">` +
          `<img src="data:${escapeHtml(d.mime)};base64,${d.b64}" width="${thumbWidth}"${h} style="${pixelated}display:block" alt="${escapeHtml(altText(label, r.caption, j, r.images.length))}"/>` +
          (label !== undefined ? `<div style="font-size:11px;color:#666">${escapeHtml(label)}</div>` : "") +
          `</div>`
        );
      });
      const cap = r.caption !== undefined ? `<figcaption style="font-size:12px;max-width:${r.images.length * (thumbWidth + 4)}px;margin-top:2px">${escapeHtml(r.caption)}</figcaption>` : "";
      return `<figure style="display:inline-block;margin:0 12px 10px 0;vertical-align:top">${imgs.join("")}${cap}</figure>`;
    });
    const head = title ? `<div style="font-weight:bold;font-family:monospace;font-size:12px;margin-bottom:4px">${escapeHtml(title)}</div>` : "";
    const body = figs.length ? figs.join("") : `<div style="color:#888;font-size:12px">no images yet</div>`;
    return `<div class="cnts-image-grid">${head}${body}</div>`;
  }

  bundle(): MimeBundle {
    const b: MimeBundle = { "text/plain": this.text(), "text/html": this.html() };
    // A lone PNG also goes as image/png, which non-HTML renderers (nbconvert to PDF/markdown) can still show.
    const only = this.imageCount === 1 ? decode(this.state.rows.find((r) => r.images.length)!.images[0]!) : null;
    if (only && only.mime === "image/png") b["image/png"] = only.b64;
    return b;
  }
}
