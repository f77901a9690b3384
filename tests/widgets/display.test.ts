/** The library's display bridge: our kernel's global, stock tslab, and the plain-text fallback. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import {
  display, updateDisplay, clearOutput, abortSignal, newDisplayId, toMimeBundle, displayChannel, JUPYTER_DISPLAY,
} from "../../lib/cells/display.js";
import { installFakeBridge, captureStdout } from "./fakes.js";

test("without a bridge: text/plain goes to stdout, abortSignal is null, clearOutput is a no-op", () => {
  assert.equal(displayChannel(), "text");
  const out = captureStdout(() => {
    display({ "text/plain": "hello plain", "text/html": "<b>hello</b>" });
    display(42);
    display({ "text/html": "<p>only <i>html</i></p>" });
    updateDisplay("abc", { "text/plain": "updated line" });
    clearOutput();
  });
  assert.equal(out, "hello plain\n42\nonly html\nupdated line\n");
  assert.equal(abortSignal(), null);
});

test("kernel bridge: bundles, objects with Jupyter.display and plain values reach display()", () => {
  const fake = installFakeBridge();
  try {
    assert.equal(displayChannel(), "kernel");
    display({ "text/plain": "x", "application/json": { a: 1 } }, { metadata: { "application/json": { expanded: true } } });
    display({ [JUPYTER_DISPLAY]: () => ({ "text/plain": "custom" }) });
    display({ notAMime: 1 });
    display("a string");
    assert.deepEqual(fake.calls[0], { bundle: { "text/plain": "x", "application/json": { a: 1 } }, opts: { metadata: { "application/json": { expanded: true } } } });
    assert.deepEqual(fake.calls[1]!.bundle, { "text/plain": "custom" });
    assert.deepEqual(fake.calls[2]!.bundle, { "text/plain": "{ notAMime: 1 }" });
    assert.deepEqual(fake.calls[3]!.bundle, { "text/plain": "a string" });
  } finally {
    fake.uninstall();
  }
  assert.equal(displayChannel(), "text");
});

test("kernel bridge: display ids, updates, bytes as base64, clearOutput and the abort signal", () => {
  const fake = installFakeBridge();
  try {
    const id = newDisplayId();
    assert.match(id, /^[0-9a-f]{16}$/);
    assert.notEqual(newDisplayId(), id);
    display({ "text/plain": "v1", "image/png": new Uint8Array([1, 2, 3, 250]) }, { displayId: id });
    updateDisplay(id, { "text/plain": "v2" });
    assert.deepEqual(fake.calls[0], { bundle: { "text/plain": "v1", "image/png": "AQID+g==" }, opts: { displayId: id } });
    assert.deepEqual(fake.calls[1], { bundle: { "text/plain": "v2" }, opts: { displayId: id, update: true } });
    assert.throws(() => display("x", { update: true }), /displayId/);
    clearOutput(true);
    assert.deepEqual(fake.clears, [true]);
    const sig = abortSignal();
    assert.ok(sig && !sig.aborted);
    fake.controller.abort();
    assert.equal(sig.aborted, true);
  } finally {
    fake.uninstall();
  }
});

test("toMimeBundle: Jupyter.display objects, bundles, inspect for the rest", () => {
  assert.equal(JUPYTER_DISPLAY, Symbol.for("Jupyter.display"), "the kernel's convention, a registered symbol");
  assert.deepEqual(toMimeBundle({ "text/html": "<b>x</b>" }), { "text/html": "<b>x</b>" });
  assert.deepEqual(toMimeBundle([1, 2]), { "text/plain": "[ 1, 2 ]" });
  assert.deepEqual(toMimeBundle(null), { "text/plain": "null" });
  assert.deepEqual(toMimeBundle(new Uint8Array([1])), { "text/plain": "Uint8Array(1) [ 1 ]" });
});

test("stock tslab: whole bundles through the kernel's jupyter module found in the require cache", () => {
  const req = createRequire(import.meta.url);
  const sent: [unknown, boolean][] = [];
  const fakeFile = "/opt/elsewhere/node_modules/tslab/dist/jupyter.js";
  const idle = { lastWriteDisplayData: null }; // another tslab copy that is not the running kernel
  const live = { lastWriteDisplayData: (msg: unknown, update: boolean) => sent.push([msg, update]) };
  req.cache["/other/node_modules/tslab/dist/jupyter.js"] = { exports: idle } as NodeJS.Module;
  req.cache[fakeFile] = { exports: live } as NodeJS.Module;
  const g = globalThis as Record<string, unknown>;
  g.__tslab__ = { require: () => assert.fail("the public API is not needed when the jupyter module is found") };
  try {
    assert.equal(displayChannel(), "tslab");
    display({ "text/plain": "t", "text/html": "<i>t</i>" }, { displayId: "d1" });
    updateDisplay("d1", { "text/plain": "t2" });
    assert.deepEqual(sent, [
      [{ data: { "text/plain": "t", "text/html": "<i>t</i>" }, metadata: {}, transient: { display_id: "d1" } }, false],
      [{ data: { "text/plain": "t2" }, metadata: {}, transient: { display_id: "d1" } }, true],
    ]);
    // Under tslab the abort signal comes from SIGINT (tslab's own interrupt does not stop async work).
    const sig = abortSignal();
    assert.ok(sig && !sig.aborted);
    assert.equal(abortSignal(), sig);
    process.emit("SIGINT", "SIGINT");
    assert.equal(sig.aborted, true);
    const next = abortSignal();
    assert.ok(next && !next.aborted && next !== sig);
    process.removeAllListeners("SIGINT");
  } finally {
    delete g.__tslab__;
    delete req.cache[fakeFile];
    delete req.cache["/other/node_modules/tslab/dist/jupyter.js"];
  }
});

test("stock tslab without its jupyter module: tslab's public API, richest single MIME type, one display per id", () => {
  const sent: { id: string | null; mime: string; value: unknown }[] = [];
  const mk = (id: string | null) => ({ raw: (mime: string, value: unknown) => sent.push({ id, mime, value }) });
  let n = 0;
  const pub = { display: mk(null), newDisplay: () => mk(`tslab-${++n}`) };
  const g = globalThis as Record<string, unknown>;
  g.__tslab__ = { require: (name: string) => (name === "tslab" ? pub : assert.fail(name)) };
  try {
    display({ "text/plain": "p", "image/svg+xml": "<svg/>", "text/html": "<b>h</b>" });
    display({ "text/plain": "p", "image/svg+xml": "<svg/>" }, { displayId: "a" });
    updateDisplay("a", { "text/plain": "q" });
    display({ "text/plain": "r" }, { displayId: "b" });
    assert.deepEqual(sent, [
      { id: null, mime: "text/html", value: "<b>h</b>" },
      { id: "tslab-1", mime: "image/svg+xml", value: "<svg/>" },
      { id: "tslab-1", mime: "text/plain", value: "q" },
      { id: "tslab-2", mime: "text/plain", value: "r" },
    ]);
  } finally {
    delete g.__tslab__;
  }
});
