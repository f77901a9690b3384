/** Rate limiting: bursts coalesce, the final state always arrives, time comes from an injected clock. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { Throttle } from "../../widgets/throttle.js";
import { ProgressBar } from "../../widgets/progress-bar.js";
import { FakeClock, installFakeBridge } from "./fakes.js";

test("Throttle: first request goes at once, a burst collapses into one trailing send", () => {
  const clock = new FakeClock();
  let sends = 0;
  const t = new Throttle(() => sends++, 4, clock); // every 250 ms at most
  t.request();
  assert.equal(sends, 1);
  for (let i = 0; i < 100; i++) {
    clock.advance(1);
    t.request();
  }
  assert.equal(sends, 1, "nothing more inside the interval");
  assert.equal(clock.pending, 1, "one trailing send scheduled");
  clock.advance(250);
  assert.equal(sends, 2);
  assert.equal(t.hasPending, false);
  clock.advance(1000);
  assert.equal(sends, 2, "no sends without requests");
  t.request();
  assert.equal(sends, 3, "after a quiet period a request goes at once");
});

test("Throttle: flush sends a pending request now; cancel drops it; rate 0 disables limiting", () => {
  const clock = new FakeClock();
  let sends = 0;
  const t = new Throttle(() => sends++, 2, clock);
  t.request();
  t.request();
  assert.equal(sends, 1);
  t.flush();
  assert.equal(sends, 2);
  assert.equal(clock.pending, 0);
  t.flush();
  assert.equal(sends, 2, "flush with nothing pending sends nothing");
  t.request();
  t.cancel();
  clock.advance(10_000);
  assert.equal(sends, 2);
  const free = new Throttle(() => sends++, 0, clock);
  for (let i = 0; i < 5; i++) free.request();
  assert.equal(sends, 7);
});

test("100 rapid widget updates send few redraws, and the last one carries the final state", () => {
  const fake = installFakeBridge();
  try {
    const clock = new FakeClock();
    const bar = new ProgressBar({ total: 1000, description: "fast" }, { clock, maxUpdatesPerSecond: 5 });
    bar.show();
    // 100 updates over 1 s of fake time (10 ms apart), never reaching total.
    for (let s = 1; s <= 100; s++) {
      clock.advance(10);
      bar.update({ step: s, loss: 1 / s });
    }
    const before = fake.calls.length;
    assert.ok(before - 1 <= 6, `at most ~5/s: ${before - 1} updates`);
    assert.ok(before - 1 >= 4, `but some updates went out: ${before - 1}`);
    clock.advance(1000); // the trailing redraw fires
    const last = fake.calls[fake.calls.length - 1]!;
    assert.equal(last.opts?.update, true);
    assert.equal(last.opts?.displayId, bar.displayId);
    assert.match(String(last.bundle["text/plain"]), / 100\/1000 /);
    assert.match(String(last.bundle["text/plain"]), /loss=0\.01\b/);
    // Every redraw targets the same display.
    assert.ok(fake.calls.every((c) => c.opts?.displayId === bar.displayId));
    assert.equal(fake.calls[0]!.opts?.update, undefined, "show() is display_data, not an update");
  } finally {
    fake.uninstall();
  }
});

test("an update reaching total is sent at once, without waiting for the interval", () => {
  const fake = installFakeBridge();
  try {
    const clock = new FakeClock();
    const bar = new ProgressBar({ total: 10 }, { clock, maxUpdatesPerSecond: 1 });
    bar.show();
    for (let s = 1; s <= 10; s++) bar.update({ step: s });
    const last = fake.calls[fake.calls.length - 1]!;
    assert.match(String(last.bundle["text/plain"]), /100%.* 10\/10 /);
    assert.equal(clock.pending, 0, "nothing left pending");
    assert.equal(bar.value.status, "done");
  } finally {
    fake.uninstall();
  }
});

test("updates before show() send nothing; show() draws the latest state", () => {
  const fake = installFakeBridge();
  try {
    const clock = new FakeClock();
    const bar = new ProgressBar({ total: 5 }, { clock });
    bar.update({ step: 3 });
    clock.advance(5000);
    assert.equal(fake.calls.length, 0);
    bar.show();
    assert.equal(fake.calls.length, 1);
    assert.match(String(fake.calls[0]!.bundle["text/plain"]), / 3\/5 /);
  } finally {
    fake.uninstall();
  }
});
