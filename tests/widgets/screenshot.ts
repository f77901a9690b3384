/**
 * Renders the widgets' bundles (as a training run would leave them) into one static HTML page, the way a notebook
 * front end shows them (each output's richest MIME type it can render: HTML, then SVG, then PNG, then text), and
 * screenshots it with headless Chromium (Debian's `chromium`).
 *
 *   node --import tsx tests/widgets/screenshot.ts [out.png]      (default: widgets/docs/widgets.png)
 *
 * Needs /usr/bin/chromium (`apt-get install -y chromium`) or CHROMIUM=/path/to/chrome.
 */
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import sharp from "sharp";
import { TrainingDashboard, ImageGrid } from "../../widgets/index.js";
import type { MimeBundle } from "../../widgets/index.js";
import { tempDir } from "../helpers.js";

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), "..", "..");
const out = path.resolve(process.argv[2] ?? path.join(root, "widgets", "docs", "widgets.png"));
const GiB = 1024 ** 3;

/** A fill50k-like image: a filled circle on a background (or its outline, for the conditioning image). */
async function circle(fill: string, bg: string, outline = false, size = 128): Promise<Uint8Array> {
  const c = outline
    ? `<circle cx="64" cy="60" r="34" fill="none" stroke="white" stroke-width="3"/>`
    : `<circle cx="64" cy="60" r="34" fill="${fill}"/>`;
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="128" height="128"><rect width="128" height="128" fill="${outline ? "black" : bg}"/>${c}</svg>`;
  return new Uint8Array(await sharp(Buffer.from(svg)).resize(size, size).png().toBuffer());
}

/** What a notebook would show for one output: the richest type it renders natively. */
function render(b: MimeBundle): string {
  if (typeof b["text/html"] === "string") return b["text/html"];
  if (typeof b["image/svg+xml"] === "string") return `<img src="data:image/svg+xml;base64,${Buffer.from(b["image/svg+xml"]).toString("base64")}"/>`;
  if (typeof b["image/png"] === "string") return `<img src="data:image/png;base64,${b["image/png"]}"/>`;
  const esc = String(b["text/plain"] ?? "").replace(/[&<>]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;" })[c]!);
  return `<pre>${esc}</pre>`;
}

// A simulated run: 300 steps, a noisy decaying loss, warm-up then constant lr, validation every 100 steps.
let t = 0;
const clock = { now: () => t, setTimeout: () => 0, clearTimeout: () => {} };
const dash = new TrainingDashboard({ total: 300, predictedPeakBytes: 2.1 * GiB, clock, description: "train_controlnet" });
let seed = 7;
const rand = () => ((seed = (seed * 16807) % 2147483647) / 2147483647);
for (let step = 1; step <= 240; step++) {
  t += 850;
  const loss = 0.08 + 0.25 * Math.exp(-step / 60) + 0.04 * (rand() - 0.5);
  const lr = 1e-5 * Math.min(1, step / 50);
  const live = 1.6 * GiB + 0.25 * GiB * rand();
  dash.onStep({ step, loss, lr, memory: { backend: "wasm", liveTensors: 1412, liveBytes: live, heapBytes: 2.5 * GiB, heapLimitBytes: 4 * GiB, rssBytes: 3.1 * GiB, gpuBytes: null } });
  if (step % 100 === 0) {
    dash.onValidation({
      step,
      conditioning: [await circle("", "", true), await circle("", "", true)],
      images: [[await circle("#d22", "#22c"), await circle("#c33", "#33b")], [await circle("#0cc", "#8b5a2b"), await circle("#1bb", "#7a4a1b")]],
      prompts: ["red circle with blue background", `cyan circle with brown floral background <script>alert(1)</script>`],
      fidelity: step === 100 ? [0.41, 0.37] : [0.63, 0.58],
    });
  }
}
dash.flush();

const dataset = new ImageGrid({
  title: "dataset: fusing/fill50k (first 3 rows)",
  thumbWidth: 96,
  rows: [
    { images: [await circle("", "", true), await circle("#ee8", "#f5deb3")], labels: ["conditioning", "target"], caption: "pale golden rod circle with old lace background" },
    { images: [await circle("", "", true), await circle("#800080", "#ffc0cb")], labels: ["conditioning", "target"], caption: "purple circle with pink background" },
    { images: [await circle("", "", true), await circle("#2e8b57", "#f0f8ff")], labels: ["conditioning", "target"], caption: "sea green circle with alice blue background" },
  ],
});

const outputs = [dash.progress.bundle(), dash.loss.bundle(), dash.memory.bundle(), dash.validation.bundle(), dataset.bundle()];
const html = `<!doctype html><html><head><meta charset="utf-8"><title>controlnet-ts widgets</title></head>
<body style="margin:16px;font-family:sans-serif;background:#fff;width:900px">
<div style="font:13px monospace;color:#555;margin-bottom:8px">[4]: await cn.train({ until: 300, ... })</div>
${outputs.map((b) => `<div class="output" style="border-left:3px solid #e0e0e0;padding:4px 8px;margin:6px 0">${render(b)}</div>`).join("\n")}
</body></html>`;

const dir = tempDir("cnts-shot-");
const page = path.join(dir, "widgets.html");
fs.writeFileSync(page, html);
fs.mkdirSync(path.dirname(out), { recursive: true });
const chrome = process.env.CHROMIUM ?? "/usr/bin/chromium";
const r = spawnSync(chrome, [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
  "--disable-component-update", "--disable-sync", "--hide-scrollbars", `--user-data-dir=${path.join(dir, "profile")}`,
  "--window-size=940,1620", `--screenshot=${out}`, `file://${page}`,
], { encoding: "utf8", timeout: 120_000 });
if (r.status !== 0 || !fs.existsSync(out)) {
  process.stderr.write(`chromium failed (${r.status}): ${r.stderr}\n`);
  process.exit(1);
}
fs.copyFileSync(page, out.replace(/\.png$/, ".html"));
const meta = await sharp(out).metadata();
process.stdout.write(`wrote ${out} (${meta.width}x${meta.height}) and ${out.replace(/\.png$/, ".html")}\n`);
