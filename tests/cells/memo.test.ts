import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import { memo, forget, argsKey } from "../../lib/cells/memo.js";
import { writeBasicConfig } from "../../lib/cells/config.js";
import { JUPYTER_DISPLAY } from "../../lib/cells/display.js";
import { tempDir } from "../helpers.js";

test("same arguments → cached (one line says so); the same cell with different ones → recomputed, the old value disposed", async () => {
  const { installFakeBridge } = await import("../widgets/fakes.js");
  const fake = installFakeBridge();
  fake.cell = "cell-1"; // one cell run again and again
  forget();
  const lines: string[] = [];
  const disposed: unknown[] = [];
  let calls = 0;
  const run = (args: unknown) => memo("dataset", args, () => ({ n: ++calls }), { log: (l) => lines.push(l), dispose: (o) => disposed.push(o) });
  const a = await run({ resolution: 64, name: "x" });
  const b = await run({ name: "x", resolution: 64 }); // key order does not matter
  assert.equal(a, b);
  assert.equal(calls, 1);
  assert.match(lines[0]!, /same arguments as before/);
  const c = await run({ name: "x", resolution: 32 });
  assert.equal(calls, 2);
  assert.notEqual(c, a);
  assert.match(lines[1]!, /arguments changed — recomputing/);
  assert.deepEqual(disposed, [a]);
  fake.uninstall();
  forget();
  assert.notEqual(argsKey({ a: 1 }), argsKey({ a: 2 }));
  class Model {}
  const m1 = new Model();
  assert.equal(argsKey({ from: m1 }), argsKey({ from: m1 }));
  assert.notEqual(argsKey({ from: m1 }), argsKey({ from: new Model() }));
});

test("one result per notebook cell: another cell's result is never disposed; a client that names no cell frees nothing", async () => {
  const { installFakeBridge } = await import("../widgets/fakes.js");
  const fake = installFakeBridge();
  try {
    forget();
    const disposed: unknown[] = [];
    const lines: string[] = [];
    let calls = 0;
    const run = (args: unknown) => memo("controlnet", args, () => ({ n: ++calls }), { log: (l) => lines.push(l), dispose: (o) => disposed.push(o) });
    fake.cell = "cell-a";
    const a = await run({ seed: 1 });
    fake.cell = "cell-b";
    const b = await run({ seed: 2 }); // a second model in another cell: both live
    assert.deepEqual(disposed, []);
    assert.deepEqual(lines, [], "a first call in a cell is no change");
    assert.equal(await run({ seed: 1 }), a, "the same arguments in any cell: the same object");
    assert.equal(calls, 2);
    fake.cell = "cell-a";
    const a2 = await run({ seed: 3 }); // cell a re-run with other arguments: a is still cell b's, so kept
    assert.deepEqual(disposed, []);
    fake.cell = "cell-b";
    await run({ seed: 4 }); // cell b re-run: a is nobody's now, b was never another cell's
    assert.deepEqual(disposed, [a]);
    assert.match(lines.at(-1)!, /arguments changed — recomputing/);
    fake.cell = "cell-a";
    await run({ seed: 5 });
    assert.deepEqual(disposed, [a, a2]);
    assert.notEqual(b, a);
    // no cell id: a call with other arguments may be another cell's, so nothing is disposed
    fake.cell = null;
    disposed.length = 0;
    await run({ seed: 6 });
    await run({ seed: 7 });
    assert.deepEqual(disposed, []);
  } finally {
    fake.uninstall();
    forget();
  }
});

test("writeBasicConfig writes the engine, memory budget and output dirs, and renders a table", async () => {
  const dir = tempDir("cfg-");
  // the engine under test (CONTROLNET_TS_BACKEND, set by the test runner; auto selection's reasons: tests/engine/select)
  const cfg = await writeBasicConfig({ outputDir: dir });
  const engine = process.env.CONTROLNET_TS_BACKEND || "wasm";
  assert.equal(cfg.engine, engine);
  const onDisk = JSON.parse(fs.readFileSync(cfg.configFile, "utf8"));
  assert.equal(onDisk.engine, engine);
  assert.equal(onDisk.outputDir, dir);
  const bundle = (cfg as unknown as Record<symbol, () => Record<string, string>>)[JUPYTER_DISPLAY]!();
  if (engine === "wasm") {
    assert.equal(cfg.deviceMemoryBytes, 4 * 1024 ** 3);
    assert.match(bundle["text/html"]!, /<table>.*wasm.*4\.0 GiB \(wasm32 heap/s);
  } else if (engine === "node") {
    assert.equal(cfg.deviceMemoryBytes, null);
    assert.match(bundle["text/plain"]!, /device memory\s+no device limit: tensors live in host memory/);
  }
  assert.match(bundle["text/plain"]!, new RegExp(`^engine\\s+${engine} \\(tfjs 4\\.22\\.0`, "m"));
});
