/**
 * The widgets through our real kernel, over the wire: a cell imports "controlnet-ts/widgets", shows a progress bar
 * and drives it; the frontend side must see one display_data and rate-limited update_display_data messages with
 * the same display id, the final state last, updates from a later cell routed by that id, and a widget as a cell's
 * value rendered as a rich execute_result. (~15-30 s: the kernel loads tslab's compiler.)
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { KernelClient, ofType } from "../kernel/client.js";

describe("widgets through the controlnet-ts kernel", () => {
  let k: KernelClient;

  before(async () => {
    k = await KernelClient.start();
  });

  after(async () => {
    await k?.close();
  });

  it("show → display_data with an id; updates → update_display_data with the same id, final state last", async () => {
    const r = await k.execute(
      `import { ProgressBar, displayChannel, abortSignal } from "controlnet-ts/widgets";
const bar = new ProgressBar({ total: 40, description: "e2e" }, { maxUpdatesPerSecond: 10 }).show();
for (let s = 1; s <= 40; s++) { bar.update({ step: s, loss: 1 / s }); await new Promise((res) => setTimeout(res, 5)); }
const sig = abortSignal();
[displayChannel(), sig !== null && !sig.aborted].join(",")`,
      { timeoutMs: 120_000 },
    );
    assert.equal(r.reply.content.status, "ok", JSON.stringify(ofType(r.iopub, "error")));
    assert.equal(ofType(r.iopub, "execute_result")[0]?.data?.["text/plain"], "'kernel,true'");
    const shown = ofType(r.iopub, "display_data");
    assert.equal(shown.length, 1);
    const id = shown[0]!.transient?.display_id;
    assert.match(String(id), /^[0-9a-f]{16}$/);
    assert.deepEqual(Object.keys(shown[0]!.data).sort(), ["text/html", "text/plain"]);
    const updates = ofType(r.iopub, "update_display_data");
    assert.ok(updates.length >= 1, "updates arrived");
    assert.ok(updates.length < 40, `rate-limited: ${updates.length} updates for 40 steps`);
    assert.ok(updates.every((u) => u.transient?.display_id === id));
    assert.match(String(updates.at(-1)!.data["text/plain"]), /^e2e: 100%.* 40\/40 .*loss=0\.025\]$/);
  });

  it("a redraw the rate limit held back goes out before the cell's idle (a saved notebook keeps the final state without flush())", async () => {
    const r = await k.execute(`const bar2 = new ProgressBar({ total: 100 }).show(); for (let i = 1; i <= 60; i++) bar2.update({ step: i });`);
    assert.equal(r.reply.content.status, "ok");
    const updates = ofType(r.iopub, "update_display_data");
    assert.ok(updates.length >= 1 && updates.length < 60, `${updates.length} updates`);
    assert.match(String(updates.at(-1)!.data["text/plain"]), / 60\/100 /);
  });

  it("a later cell updates the same display; a widget as the cell's value is a rich execute_result", async () => {
    const r = await k.execute(`bar.update({ status: "stopped" }); bar`, { timeoutMs: 60_000 });
    assert.equal(r.reply.content.status, "ok");
    const first = await k.execute("bar.displayId");
    const id = String(ofType(first.iopub, "execute_result")[0]!.data["text/plain"]).replace(/'/g, "");
    const up = ofType(r.iopub, "update_display_data");
    assert.equal(up.length, 1);
    assert.equal(up[0]!.transient?.display_id, id);
    assert.match(String(up[0]!.data["text/plain"]), /\(stopped\)$/);
    const res = ofType(r.iopub, "execute_result")[0]!;
    assert.match(String(res.data["text/html"]), /class="cnts-progress"/);
  });
});
