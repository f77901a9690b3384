/** The training dashboard as the trainer drives it, through a fake kernel bridge and a fake clock. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { TrainingDashboard } from "../../widgets/dashboard.js";
import { PLOTLY_MIME } from "../../widgets/loss-plot.js";
import { JUPYTER_DISPLAY } from "../../lib/cells/display.js";
import { FakeClock, installFakeBridge, captureStdout, checkXml, tinyPng } from "./fakes.js";
import type { DisplayCall } from "./fakes.js";

const GiB = 1024 ** 3;

function byId(calls: DisplayCall[]): Map<string, DisplayCall[]> {
  const m = new Map<string, DisplayCall[]>();
  for (const c of calls) {
    const id = c.opts?.displayId;
    assert.ok(id, "every dashboard output has a display id");
    m.set(id, [...(m.get(id) ?? []), c]);
  }
  return m;
}

test("dashboard: four parts, each its own display id; a fast loop is rate-limited; the last step is sent at once", () => {
  const fake = installFakeBridge();
  try {
    const clock = new FakeClock();
    const dash = new TrainingDashboard({ total: 200, predictedPeakBytes: 1.2 * GiB, clock });
    dash.show();
    assert.equal(fake.calls.length, 3, "progress, loss plot, memory (the grid waits for images)");
    assert.ok(fake.calls.every((c) => !c.opts?.update));
    const ids = new Set(fake.calls.map((c) => c.opts!.displayId));
    assert.equal(ids.size, 3);

    for (let step = 1; step <= 200; step++) {
      clock.advance(5); // 200 it/s
      dash.onStep({ step, loss: 1 / step, lr: 1e-5, memory: { backend: "wasm", liveBytes: step * 1e6, heapBytes: GiB, heapLimitBytes: 4 * GiB } });
      if (step === 100) {
        dash.onValidation({ images: [[tinyPng(4, 4), tinyPng(4, 4, [0, 255, 0])]], prompts: ["red circle <b>"], conditioning: [tinyPng(4, 4, [0, 0, 255])], fidelity: [0.5, 0.7] });
      }
    }
    const groups = byId(fake.calls);
    assert.equal(groups.size, 4, "the validation grid appeared with its first images");
    const progress = groups.get(dash.progress.displayId)!;
    // 1 s of fake time at ≤ 4 redraws/s, plus show and the final flush.
    assert.ok(progress.length <= 8, `progress redraws: ${progress.length}`);
    const last = progress.at(-1)!;
    assert.equal(last.opts!.update, true);
    assert.match(String(last.bundle["text/plain"]), /100%.* 200\/200 /);
    assert.equal(clock.pending, 0, "the last step flushed every part");

    const plot = groups.get(dash.loss.displayId)!.at(-1)!.bundle;
    const fig = plot[PLOTLY_MIME] as { data: { name: string; x: number[]; y: number[] }[] };
    const raw = fig.data.find((t) => t.name === "loss (raw)")!;
    assert.equal(raw.x.length, 200, "every step reaches the plot even though few redraws went out");
    assert.deepEqual(fig.data.find((t) => t.name === "fidelity")!.y, [0.6]);
    assert.deepEqual(fig.data.find((t) => t.name === "fidelity")!.x, [100]);

    const mem = String(groups.get(dash.memory.displayId)!.at(-1)!.bundle["text/plain"]);
    assert.match(mem, /live tensors 191 MiB/);
    assert.match(mem, /peak \(predicted\) 1\.20 GiB/);
    assert.match(mem, /peak \(measured\) 191 MiB/);

    const grid = groups.get(dash.validation.displayId)!;
    assert.equal(grid[0]!.opts!.update, undefined, "first shown, not updated");
    const html = String(grid.at(-1)!.bundle["text/html"]);
    assert.ok(html.includes("red circle &lt;b&gt;"));
    assert.equal((html.match(/<img /g) ?? []).length, 3, "conditioning + 2 samples");
    assert.match(html, /validation at step 100, fidelity 0\.600/);
    assert.match(html, />conditioning</);
  } finally {
    fake.uninstall();
  }
});

test("dashboard: finish() marks the status and flushes; as a value it renders one combined bundle", () => {
  const fake = installFakeBridge();
  try {
    const clock = new FakeClock();
    const dash = new TrainingDashboard({ total: 1000, clock });
    dash.show();
    for (let step = 1; step <= 30; step++) {
      clock.advance(1);
      dash.onStep({ step, loss: 0.5 });
    }
    const pendingBefore = clock.pending;
    assert.ok(pendingBefore > 0, "redraws are waiting for their interval");
    dash.finish("stopped");
    assert.equal(clock.pending, 0);
    const progress = fake.calls.filter((c) => c.opts?.displayId === dash.progress.displayId).at(-1)!;
    assert.match(String(progress.bundle["text/plain"]), / 30\/1000 .*\(stopped\)$/);

    const b = dash[JUPYTER_DISPLAY]();
    assert.deepEqual(Object.keys(b).sort(), ["text/html", "text/plain"]);
    const html = String(b["text/html"]);
    checkXml(html);
    assert.match(html, /<img src="data:image\/svg\+xml;base64,/);
    const svg = Buffer.from(/data:image\/svg\+xml;base64,([^"]+)"/.exec(html)![1]!, "base64").toString();
    checkXml(svg);
    assert.match(String(b["text/plain"]), /30\/1000[\s\S]*loss: 30 points[\s\S]*memory/);
  } finally {
    fake.uninstall();
  }
});

test("dashboard without a kernel: text lines on stdout", () => {
  const clock = new FakeClock();
  const out = captureStdout(() => {
    const dash = new TrainingDashboard({ total: 3, clock, description: "cli" });
    dash.show();
    for (let step = 1; step <= 3; step++) {
      clock.advance(1000);
      dash.onStep({ step, loss: 0.25 });
    }
  });
  assert.match(out, /^cli:   0%\|/m);
  assert.match(out, /^cli: 100%\|█{20}\| 3\/3 .*loss=0\.25\]$/m);
  assert.match(out, /^training\n {2}loss: 3 points/m);
});

test("dashboard resumed at a step: history is plotted, rate and ETA count from the resume point", () => {
  const fake = installFakeBridge();
  try {
    const clock = new FakeClock();
    const history = Array.from({ length: 300 }, (_, i) => ({ step: i + 1, loss: 0.3, lr: 1e-5 }));
    const dash = new TrainingDashboard({ total: 600, initialStep: 300, history, clock }).show();
    for (let step = 301; step <= 310; step++) {
      clock.advance(500);
      dash.onStep({ step, loss: 0.2 });
    }
    dash.flush();
    assert.equal(dash.progress.rate, 2, "2 it/s measured from step 300, not from 0");
    assert.equal(dash.progress.eta, 145);
    const fig = fake.calls.filter((c) => c.opts?.displayId === dash.loss.displayId).at(-1)!.bundle[PLOTLY_MIME] as { data: { name: string; x: number[] }[] };
    assert.equal(fig.data.find((t) => t.name === "loss (raw)")!.x.length, 310);
  } finally {
    fake.uninstall();
  }
});

test("without a kernel, the plot and memory print only when flushed; the progress line prints live", () => {
  const clock = new FakeClock();
  let dash!: TrainingDashboard;
  const during = captureStdout(() => {
    dash = new TrainingDashboard({ total: 100, clock, description: "quiet" }).show();
    for (let step = 1; step <= 20; step++) {
      clock.advance(1000);
      dash.onStep({ step, loss: 0.1, memory: { liveBytes: 1000 } });
    }
  });
  assert.equal((during.match(/^memory/gm) ?? []).length, 1, "memory printed once, by show()");
  assert.equal((during.match(/^training/gm) ?? []).length, 1, "the plot printed once, by show()");
  assert.ok((during.match(/^quiet: /gm) ?? []).length >= 10, "progress lines keep coming");
  const end = captureStdout(() => dash.finish());
  assert.match(end, /^training\n {2}loss: 20 points/m);
  assert.match(end, /^memory: live tensors 1000 B/m);
  assert.equal(captureStdout(() => dash.flush()), "", "nothing left to print");
});
