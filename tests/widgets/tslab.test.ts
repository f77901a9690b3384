/**
 * The display bridge under stock tslab for real: tslab 1.0.22's own compiler and executor run a TypeScript cell in
 * this process (as its kernel would), and the widgets' whole bundles must reach tslab's jupyter module writer with
 * their display ids. Costs ~10-15 s, nearly all of it tslab loading the TypeScript compiler.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import path from "node:path";

const req = createRequire(import.meta.url);
const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), "..", "..");

interface Executor {
  execute(src: string): Promise<boolean>;
  close(): void;
}

test("stock tslab: a cell's widget shows and updates with its whole MIME bundle", async () => {
  const jupyter = req("tslab/dist/jupyter.js") as { lastWriteDisplayData: unknown };
  const { createConverter } = req("tslab/dist/converter.js") as { createConverter(o: object): { close(): void } };
  const { createExecutor } = req("tslab/dist/executor.js") as {
    createExecutor(root: string, convs: object, console: { log(...a: unknown[]): void; error(...a: unknown[]): void }): Executor;
  };
  const sent: { msg: { data: Record<string, unknown>; transient: { display_id?: string } }; update: boolean }[] = [];
  // What tslab's kernel does before each execute_request.
  jupyter.lastWriteDisplayData = (msg: (typeof sent)[number]["msg"], update: boolean) => sent.push({ msg, update });
  const node = createConverter({ isJS: false, isBrowser: false });
  const errors: unknown[] = [];
  const logs: unknown[] = [];
  const executor = createExecutor(root, { node, browser: node, close: () => node.close() }, {
    log: (...a) => logs.push(a[0]),
    error: (...a) => errors.push(a),
  });
  try {
    const ok = await executor.execute(`
      const w = require("${root}/widgets/index.ts");
      const bar = new w.ProgressBar({ total: 4, description: "tslab" }).show();
      for (let s = 1; s <= 4; s++) bar.update({ step: s, loss: 0.5 });
      w.displayChannel()`);
    assert.deepEqual(errors, []);
    assert.equal(ok, true);
    assert.deepEqual(logs, ["tslab"], "the bridge recognised the tslab kernel");
    assert.ok(sent.length >= 2, `display + final update: ${sent.length}`);
    const ids = new Set(sent.map((s) => s.msg.transient.display_id));
    assert.equal(ids.size, 1, "one display id throughout");
    assert.equal(sent[0]!.update, false);
    const last = sent.at(-1)!;
    assert.equal(last.update, true);
    assert.deepEqual(Object.keys(last.msg.data).sort(), ["text/html", "text/plain"], "a whole bundle, not one MIME type");
    assert.match(String(last.msg.data["text/plain"]), /^tslab: 100%.* 4\/4 /);
  } finally {
    executor.close();
    node.close();
  }
});
