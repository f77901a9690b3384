/** What each widget's MIME bundle holds: keys, escaping, valid SVG, plotly's figure shape, text fallbacks. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { ImageGrid, pngSize } from "../../widgets/image-grid.js";
import { MemoryMeter } from "../../widgets/memory-meter.js";
import { ProgressBar } from "../../widgets/progress-bar.js";
import { LossPlot, PLOTLY_MIME, smooth, downsample } from "../../widgets/loss-plot.js";
import { niceTicks, renderLineChart, tickLabels } from "../../widgets/svg-chart.js";
import { escapeHtml, formatBytes, formatDuration, formatNumber } from "../../widgets/format.js";
import type { MemorySnapshot } from "../../lib/engine/memory.js";
import { FakeClock, checkXml, tinyPng } from "./fakes.js";

const GiB = 1024 ** 3;
const EVIL = `<script>alert("x")</script> & 'quotes'`;

test("formatting helpers", () => {
  assert.equal(escapeHtml(EVIL), "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;quotes&#39;");
  assert.equal(formatBytes(512), "512 B");
  assert.equal(formatBytes(1536), "1.50 KiB");
  assert.equal(formatBytes(4 * GiB), "4.00 GiB");
  assert.equal(formatBytes(null), "n/a");
  assert.equal(formatDuration(75), "01:15");
  assert.equal(formatDuration(3725), "1:02:05");
  assert.equal(formatDuration(null), "?");
  assert.equal(formatNumber(0.123456), "0.1235");
  assert.equal(formatNumber(1e-5, 3), "1e-5");
  assert.equal(formatNumber(NaN), "NaN");
  assert.deepEqual(niceTicks(0, 1), [0, 0.2, 0.4, 0.6, 0.8, 1]);
  assert.deepEqual(niceTicks(3, 97, 4), [20, 40, 60, 80]);
  // A range below float resolution (a constant loss after smoothing) once looped forever.
  assert.ok(niceTicks(0.49999999999999994, 0.5).length <= 13);
  const flat = new LossPlot();
  for (let s = 1; s <= 30; s++) flat.add(s, { loss: 0.5 });
  checkXml(flat.svg());
});

test("ImageGrid: images as data URIs, captions HTML-escaped, text/plain lists the captions", () => {
  const red = tinyPng(8, 4, [255, 0, 0]);
  const blue = tinyPng(8, 4, [0, 0, 255]);
  assert.deepEqual(pngSize(red), { width: 8, height: 4 });
  const grid = new ImageGrid({
    title: "validation <step 3>",
    rows: [
      { images: [red, blue], caption: EVIL, labels: ["conditioning", "sample"] },
      { images: [Buffer.from(blue).toString("base64")], caption: "cyan circle with brown floral background" },
    ],
  });
  const b = grid.bundle();
  assert.deepEqual(Object.keys(b).sort(), ["text/html", "text/plain"]);
  const html = String(b["text/html"]);
  assert.ok(!html.includes("<script>"), "a prompt must not inject markup");
  assert.ok(html.includes("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;quotes&#39;"));
  assert.ok(html.includes("validation &lt;step 3&gt;"));
  const imgs = [...html.matchAll(/<img src="data:image\/png;base64,([^"]+)"/g)].map((m) => m[1]);
  assert.deepEqual(imgs, [Buffer.from(red).toString("base64"), Buffer.from(blue).toString("base64"), Buffer.from(blue).toString("base64")]);
  assert.match(html, /width="192" height="96"/, "aspect ratio from the PNG header");
  assert.match(html, /image-rendering:pixelated/, "tiny images are upscaled with hard pixels");
  assert.deepEqual(checkXml(html).filter((n) => n === "img").length, 3);
  const text = String(b["text/plain"]);
  assert.match(text, /2 rows, 3 images/);
  assert.ok(text.includes(EVIL), "text/plain carries the caption as is (it is not markup)");
  assert.ok(text.includes("cyan circle with brown floral background"));
  assert.ok(text.includes("[conditioning | sample]"));
});

test("ImageGrid: a single PNG also goes as image/png; fromImages gives one caption per image", () => {
  const png = tinyPng(2, 2);
  const one = ImageGrid.fromImages([png], ["a <b>"]).bundle();
  assert.equal(one["image/png"], Buffer.from(png).toString("base64"));
  assert.ok(String(one["text/html"]).includes("a &lt;b&gt;"));
  const jpeg = new ImageGrid({ rows: [{ images: [{ data: "AAAA", mime: "image/jpeg", width: 4, height: 2 }] }] }).bundle();
  assert.equal(jpeg["image/png"], undefined);
  assert.match(String(jpeg["text/html"]), /data:image\/jpeg;base64,AAAA"/);
  const empty = new ImageGrid().bundle();
  assert.match(String(empty["text/html"]), /no images yet/);
  assert.match(String(empty["text/plain"]), /0 rows, 0 images/);
});

test("MemoryMeter: a memoryInfo() snapshot renders; GPU null shows n/a; predicted beside measured", () => {
  const snap: MemorySnapshot = {
    backend: "wasm", liveTensors: 532, liveBytes: 1.5 * GiB, heapBytes: 2 * GiB, heapLimitBytes: 4 * GiB, rssBytes: 3 * GiB, gpuBytes: null, gpuLimitBytes: null,
  };
  const m = new MemoryMeter({ predictedPeakBytes: 2.5 * GiB });
  m.update(snap);
  m.update({ ...snap, liveBytes: 0.5 * GiB });
  assert.equal(m.measuredPeak, 1.5 * GiB, "peak tracked from the live bytes seen");
  const b = m.bundle();
  assert.deepEqual(Object.keys(b).sort(), ["text/html", "text/plain"]);
  const text = String(b["text/plain"]);
  assert.match(text, /memory \[wasm\]/);
  assert.match(text, /live tensors 512 MiB \/ 4\.00 GiB \(13%\) \(532 tensors\)/);
  assert.match(text, /wasm heap 2\.00 GiB \/ 4\.00 GiB \(50%\)/);
  assert.match(text, /GPU n\/a/);
  assert.match(text, /process RSS 3\.00 GiB/);
  assert.match(text, /peak \(measured\) 1\.50 GiB/);
  assert.match(text, /peak \(predicted\) 2\.50 GiB/);
  const html = String(b["text/html"]);
  checkXml(html);
  assert.match(html, /GPU<\/td><td[^>]*><\/td><td[^>]*>n\/a</);
  assert.match(html, /width:50\.0%/, "heap bar half full");
  // A given measured peak wins over the tracked one; a GPU engine shows its numbers.
  m.update({ measuredPeakBytes: 2 * GiB, gpuBytes: 6 * GiB, gpuLimitBytes: 8 * GiB });
  assert.equal(m.measuredPeak, 2 * GiB);
  assert.match(m.toString(), /GPU 6\.00 GiB \/ 8\.00 GiB \(75%\)/);
  assert.equal(m.budget, 8 * GiB);
});

test("ProgressBar: tqdm-like text with rate and ETA, HTML bar", () => {
  const clock = new FakeClock();
  const bar = new ProgressBar({ total: 100, description: "train" }, { clock });
  for (let s = 1; s <= 45; s++) {
    clock.advance(250);
    bar.update({ step: s, loss: 0.123, lr: 1e-5 });
  }
  const text = bar.text();
  assert.match(text, /^train:  45%\|█{9} {11}\| 45\/100 \[00:11<00:14, 4\.00it\/s, loss=0\.123, lr=1e-5\]$/);
  const html = String(bar.bundle()["text/html"]);
  checkXml(html);
  assert.match(html, /width:45\.0%/);
  bar.update({ step: 47 });
  assert.match(bar.text(), /^train:  47%\|█{9}▍ {10}\| 47\/100 /, "partial cells in eighths");
  bar.update({ step: 45 });
  assert.ok(html.includes("45/100 [00:11&lt;00:14, 4 it/s] · loss=0.123 · lr=1e-5"), html);
  bar.update({ itPerSec: 0.5 });
  assert.match(bar.text(), /2\.00s\/it/);
  bar.update({ status: "stopped" });
  assert.match(bar.text(), /\(stopped\)$/);
  assert.match(String(bar.bundle()["text/html"]), /#fb8c00/);
});

test("LossPlot: plotly figure, SVG fallback and text summary in one bundle; several series in panels", () => {
  const plot = new LossPlot({ title: "run <1>" });
  for (let s = 1; s <= 50; s++) plot.add(s, { loss: 1 / s, lr: 1e-5 * (1 - s / 100) });
  plot.add(25, { fidelity: 0.4 });
  plot.add(50, { fidelity: 0.7 });
  plot.add(51, { loss: NaN });
  const b = plot.bundle();
  assert.deepEqual(Object.keys(b).sort(), ["image/svg+xml", PLOTLY_MIME, "text/plain"].sort());

  const fig = b[PLOTLY_MIME] as { data: Record<string, unknown>[]; layout: Record<string, unknown> };
  assert.ok(Array.isArray(fig.data) && typeof fig.layout === "object");
  assert.deepEqual(fig.data.map((t) => t.name), ["loss (raw)", "loss", "lr", "fidelity"]);
  assert.deepEqual(fig.data.map((t) => t.yaxis), ["y", "y", "y2", "y3"]);
  for (const t of fig.data) {
    assert.equal(t.type, "scatter");
    assert.equal((t.x as unknown[]).length, (t.y as unknown[]).length);
  }
  assert.equal((fig.data[0]!.y as unknown[]).at(-1), null, "NaN becomes null (a gap), which JSON can carry");
  assert.equal(fig.data[3]!.mode, "lines+markers");
  assert.deepEqual(fig.data[3]!.y, [0.4, 0.7]);
  assert.deepEqual((fig.layout.yaxis as { title: { text: string } }).title.text, "loss");
  assert.deepEqual((fig.layout.yaxis2 as { title: { text: string } }).title.text, "learning rate");
  assert.equal((fig.layout.xaxis as { anchor: string }).anchor, "y3", "the shared x axis sits under the bottom panel");
  assert.deepEqual(JSON.parse(JSON.stringify(fig)), fig, "the figure survives JSON");

  const svg = String(b["image/svg+xml"]);
  assert.match(svg, /^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
  const names = checkXml(svg);
  assert.equal(names.filter((n) => n === "path").length, 4, "raw + smoothed loss, lr, fidelity");
  assert.equal(names.filter((n) => n === "circle").length, 2, "fidelity markers");
  assert.ok(svg.includes("run &lt;1&gt;"));
  assert.ok(!svg.includes("NaN"));

  const text = String(b["text/plain"]);
  assert.match(text, /loss: 51 points, last NaN at 51, min 0\.02, max 1/);
  assert.match(text, /fidelity: 2 points, last 0\.7 at 50/);
});

test("LossPlot: long series are averaged into maxPoints buckets; smoothing is a debiased EMA", () => {
  const plot = new LossPlot({ maxPoints: 100 });
  plot.defineSeries("loss", { smoothing: 0 });
  for (let s = 0; s < 10_000; s++) plot.add(s, { loss: s % 2 });
  const fig = plot.plotly();
  assert.equal(fig.data.length, 1);
  assert.equal((fig.data[0]!.x as number[]).length, 100);
  assert.equal((fig.data[0]!.x as number[]).at(-1), 9999);
  const ys = fig.data[0]!.y as number[];
  assert.ok(ys.slice(0, -1).every((v) => Math.abs(v - 0.5) < 0.02), "buckets average the alternating values");
  assert.deepEqual(downsample([1, 2], [3, 4], 10), { x: [1, 2], y: [3, 4] });
  const sm = smooth([1, 1, 1], 0.9);
  assert.ok(sm.every((v) => Math.abs(v - 1) < 1e-12), "debiasing keeps a constant series constant");
  const sm2 = smooth([0, 10], 0.5);
  assert.equal(sm2[1], (0.5 * 0.5 * 0 + 0.5 * 10) / (1 - 0.25));
  assert.match(new LossPlot().svg(), /no data yet/);
  assert.match(new LossPlot().text(), /no data yet/);
});

test("HTML uses only inline styles JupyterLab's sanitizer keeps (untrusted notebooks render the same)", async () => {
  // Properties JupyterLab's apputils Sanitizer allows in style attributes (the subset widgets may use).
  const allowed = new Set([
    "background", "background-color", "border", "border-bottom", "border-collapse", "border-radius", "color", "display", "font-family",
    "font-size", "font-weight", "height", "margin", "margin-bottom", "margin-left", "margin-right", "margin-top",
    "max-width", "overflow", "padding", "text-align", "vertical-align", "width",
  ]);
  const enhancement = new Set(["image-rendering"]); // dropped when sanitized, and nothing breaks without it
  const { TrainingDashboard } = await import("../../widgets/dashboard.js");
  const clock = new FakeClock();
  const dash = new TrainingDashboard({ total: 10, predictedPeakBytes: GiB, clock });
  dash.onStep({ step: 5, loss: 0.2, lr: 1e-5, memory: { liveBytes: GiB / 2, heapBytes: GiB, heapLimitBytes: 4 * GiB, rssBytes: GiB } });
  dash.onValidation({ images: [tinyPng(4, 4)], prompts: ["p"], conditioning: [tinyPng(4, 4)], fidelity: 0.5 });
  const { Table } = await import("../../widgets/table.js");
  const table = new Table({ title: "t", columns: ["a"], rows: [[1]], highlight: [0], note: "n" });
  const html = [dash.progress, dash.memory, dash.validation, table].map((w) => String(w.bundle()["text/html"])).join("");
  const used = new Set<string>();
  for (const m of html.matchAll(/style="([^"]*)"/g)) {
    for (const decl of m[1]!.split(";").filter((d) => d.trim())) used.add(decl.split(":")[0]!.trim());
  }
  assert.ok(used.size > 5);
  const rejected = [...used].filter((p) => !allowed.has(p) && !enhancement.has(p));
  assert.deepEqual(rejected, [], `properties the sanitizer would strip: ${rejected.join(", ")}`);
});

test("Table: aligned text with the highlighted row marked, escaped HTML", async () => {
  const { Table } = await import("../../widgets/table.js");
  const t = new Table({
    title: "memory tiers",
    columns: ["options", "peak", "fits"],
    rows: [["none", "38 GB", false], ["checkpointing + <8-bit Adam>", "16 GB", true], ["all", 8, null]],
    highlight: [1],
    note: "budget: 4 GiB & more",
  });
  assert.equal(t.text(), [
    "memory tiers",
    "  options                       peak   fits",
    "  ----------------------------  -----  -----",
    "  none                          38 GB  false",
    "> checkpointing + <8-bit Adam>  16 GB  true",
    "  all                           8",
    "budget: 4 GiB & more",
  ].join("\n"));
  const html = String(t.bundle()["text/html"]);
  checkXml(html);
  assert.ok(html.includes("checkpointing + &lt;8-bit Adam&gt;"));
  assert.ok(html.includes("budget: 4 GiB &amp; more"));
  assert.equal((html.match(/background-color:#fff3c4/g) ?? []).length, 3, "the highlighted row's three cells");
  const kv = Table.fromRecord({ engine: "wasm", threads: 2 });
  assert.equal(kv.text(), "  engine   wasm\n  threads  2");
});

test("chart ticks: neighbouring labels differ, whole-number axes get no fractional ticks", () => {
  // 1.05e-4 and 1.1e-4 both printed "1.1e-4" at 3 digits
  const lr = niceTicks(1.0e-4, 1.2e-4, 4);
  assert.ok(lr.includes(1.05e-4) && lr.includes(1.1e-4), JSON.stringify(lr));
  const labels = tickLabels(lr);
  assert.equal(new Set(labels).size, labels.length, labels.join(" "));
  assert.ok(labels.includes("1.05e-4") && labels.includes("1.1e-4"), labels.join(" "));
  assert.deepEqual(niceTicks(1, 3, 6, 1), [1, 2, 3]);
  const plot = new LossPlot();
  plot.add(1, { loss: 0.3 }).add(2, { loss: 0.2 }).add(3, { loss: 0.1 });
  const svg = plot.svg();
  const xLabels = [...svg.matchAll(/text-anchor="middle" fill="#444">([^<]+)</g)].map((m) => m[1]);
  assert.deepEqual(xLabels, ["1", "2", "3"], "steps 1..3: no 1.5 or 2.5");
  const yLabels = [...svg.matchAll(/text-anchor="end" dominant-baseline="middle" fill="#444">([^<]+)</g)].map((m) => m[1]!);
  assert.equal(new Set(yLabels).size, yLabels.length, yLabels.join(" "));
  const layout = plot.plotly().layout as { xaxis: { dtick?: number } };
  assert.equal(layout.xaxis.dtick, 1);
  // a long run's steps stay plain numbers (they printed 8000, 1e+4, 1.2e+4)
  const long = new LossPlot();
  for (let step = 1; step <= 15000; step += 500) long.add(step, { loss: 1 / step });
  const longX = [...long.svg().matchAll(/text-anchor="middle" fill="#444">([^<]+)</g)].map((m) => m[1]!);
  assert.ok(longX.length >= 3 && longX.every((l) => /^\d+$/.test(l)), longX.join(" "));
  assert.ok(longX.includes("10000"), longX.join(" "));
  // fractional x keeps fractional ticks
  const frac = renderLineChart([{ title: "y", lines: [{ name: "a", x: [0, 0.5, 1], y: [1, 2, 3], color: "#000" }] }]);
  assert.match(frac, /fill="#444">0\.[1-9]</, "fractional x keeps its fractional ticks");
});

test("ImageGrid: every image has alt text naming what it is and its caption", () => {
  const grid = new ImageGrid({ rows: [{ images: [tinyPng(2, 2), tinyPng(2, 2)], labels: ["conditioning", "target"], caption: "red circle" }, { images: [tinyPng(2, 2)] }] });
  const alts = [...grid.html().matchAll(/alt="([^"]*)"/g)].map((m) => m[1]);
  assert.deepEqual(alts, ["conditioning: red circle", "target: red circle", "image"]);
});
