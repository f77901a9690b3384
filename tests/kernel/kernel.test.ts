/**
 * The kernel over the wire: one kernel process (serving the fixture package as "controlnet-ts") driven through
 * ZeroMQ like a frontend would. Covers execution, errors, rich results, the display bridge, output attribution,
 * stdin, comms with binary buffers, interrupts (cooperative, synchronous, abandoned), signatures, heartbeat and
 * shutdown/restart.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import * as zmq from "zeromq";
import { Signer, type Message } from "../../kernel/wire.js";
import { KernelClient, ofType, ROOT, streamText } from "./client.js";

const FIXTURE = path.join(ROOT, "tests", "kernel", "fixtures", "selfpkg");
// Cells reach the bridge through a variable.
const B = "kb";

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function errorOf(iopub: Message[]): Record<string, any> {
  const errs = ofType(iopub, "error");
  assert.equal(errs.length, 1, `expected one error message, got ${JSON.stringify(iopub.map((m) => m.header.msg_type))}`);
  return errs[0]!;
}

function resultText(iopub: Message[]): string | undefined {
  return ofType(iopub, "execute_result")[0]?.data?.["text/plain"];
}

describe("kernel", () => {
  let k: KernelClient;

  before(async () => {
    k = await KernelClient.start({ env: { CONTROLNET_TS_PACKAGE_ROOT: FIXTURE, CONTROLNET_TS_INTERRUPT_GRACE_MS: "1500" } });
    const setup = await k.execute(`const kb = (globalThis as any)[Symbol.for("controlnet-ts.kernel")];`);
    assert.equal(setup.reply.content.status, "ok");
  });

  after(async () => {
    await k?.close();
  });

  it("answers kernel_info with status and the real TypeScript version", async () => {
    const r = await k.reply(k.send("shell", "kernel_info_request", {}));
    const c = r.content as Record<string, any>;
    assert.equal(c.status, "ok");
    assert.equal(c.protocol_version, "5.3");
    assert.equal(c.language_info.name, "typescript");
    // JupyterLab 4 finds its TypeScript mode by this name (a MIME type it does not know gave plain text)
    assert.equal(c.language_info.codemirror_mode, "typescript");
    // the project's pinned TypeScript compiles cells (not the 5.0 fork tslab depends on)
    const { createRequire } = await import("node:module");
    const pinned = createRequire(import.meta.url)("typescript/package.json") as { version: string };
    assert.equal(c.language_info.version, pinned.version);
    assert.match(pinned.version, /^5\.9\./);
  });

  it("executes: execute_input, stdout, execute_result, counts, busy/idle", async () => {
    const a = await k.execute('console.log("hello, world"); let x: number = 20; x + 1');
    assert.equal(a.reply.content.status, "ok");
    assert.deepEqual(a.iopub.map((m) => m.header.msg_type)[0], "status");
    assert.equal(ofType(a.iopub, "status")[0]!.execution_state, "busy");
    assert.equal(ofType(a.iopub, "execute_input")[0]!.code, 'console.log("hello, world"); let x: number = 20; x + 1');
    assert.equal(streamText(a.iopub, "stdout"), "hello, world\n");
    assert.equal(resultText(a.iopub), "21");
    const b = await k.execute("x * 2");
    assert.equal(resultText(b.iopub), "40");
    assert.equal(b.reply.content.execution_count, (a.reply.content.execution_count as number) + 1);
    assert.equal(ofType(b.iopub, "execute_result")[0]!.execution_count, b.reply.content.execution_count);
    const silentId = k.send("shell", "execute_request", { code: "x * 3", silent: true, store_history: false });
    const silent = await k.reply(silentId);
    assert.equal(silent.content.status, "ok");
    assert.equal(silent.content.execution_count, b.reply.content.execution_count, "silent runs do not count");
    const silentIopub = await k.idle(silentId);
    assert.deepEqual(silentIopub.map((m) => m.header.msg_type), ["status", "status"], "silent runs publish no input or result");
    const c = await k.execute('console.error("oops")');
    assert.equal(streamText(c.iopub, "stderr"), "oops\n");
    assert.equal(ofType(c.iopub, "execute_result").length, 0, "no result for a statement");
  });

  it("user_expressions: each evaluated after the cell into a display bundle or its error; `_` stays the cell's; none after an error", async () => {
    const r = await k.execute("const ue = { n: 6 }; ue.n * 7", { user_expressions: { double: "ue.n * 2", html: "({ [Symbol.for('Jupyter.display')]: () => ({ 'text/html': '<b>hi</b>' }) })", bad: "(ue as any).missing.deeper", typo: "ue.nn", none: "undefined" } });
    assert.equal(r.reply.content.status, "ok");
    const ue = r.reply.content.user_expressions as Record<string, any>;
    assert.deepEqual(ue.double, { status: "ok", data: { "text/plain": "12" }, metadata: {} });
    assert.equal(ue.html.status, "ok");
    assert.equal(ue.html.data["text/html"], "<b>hi</b>");
    assert.equal(ue.bad.status, "error");
    assert.equal(ue.bad.ename, "TypeError");
    assert.match(ue.bad.evalue, /deeper/);
    assert.equal(ue.typo.ename, "CompileError", "type-checked as a cell is");
    assert.match(ue.typo.evalue, /Property 'nn' does not exist/);
    assert.deepEqual(ue.none, { status: "ok", data: { "text/plain": "undefined" }, metadata: {} });
    assert.equal(resultText(r.iopub), "42", "the cell's own result is published, the expressions' are not");
    assert.equal(ofType(r.iopub, "execute_result").length, 1);
    assert.equal(resultText((await k.execute("_")).iopub), "42", "`_` is the cell's result, not an expression's");
    const failed = await k.execute("throw new Error('no')", { user_expressions: { n: "ue.n" } });
    assert.equal(failed.reply.content.status, "error");
    assert.equal(failed.reply.content.user_expressions, undefined, "an error reply carries no user_expressions");
  });

  it("reports runtime and compile errors with ename/evalue/traceback", async () => {
    const r = await k.execute('function f() { throw new RangeError("boom"); }\nf()');
    assert.equal(r.reply.content.status, "error");
    assert.equal(r.reply.content.ename, "RangeError");
    const e = errorOf(r.iopub);
    assert.equal(e.ename, "RangeError");
    assert.equal(e.evalue, "boom");
    assert.ok(e.traceback[0].startsWith("RangeError: boom"), e.traceback.join("\n"));
    assert.ok(e.traceback.some((l: string) => /at f /.test(l)), "the user's frame is kept");
    assert.ok(!e.traceback.some((l: string) => /node:|tslab[\\/]dist|[\\/]kernel[\\/]/.test(l)), e.traceback.join("\n"));

    const t = await k.execute("const s: string = 5");
    const te = errorOf(t.iopub);
    assert.equal(te.ename, "CompileError");
    assert.match(te.evalue, /1:7 - Type 'number' is not assignable to type 'string'/);

    const a = await k.execute("await Promise.reject(new TypeError('async boom'))");
    assert.equal(errorOf(a.iopub).ename, "TypeError");

    const n = await k.execute('throw "plain"');
    assert.equal(errorOf(n.iopub).evalue, "'plain'");
    assert.match((errorOf(n.iopub).traceback as string[]).join("\n"), /a string was thrown, which carries no stack/);
  });

  it("aborts queued executions after an error (stop_on_error), not with stop_on_error false", async () => {
    const ids = [
      k.send("shell", "execute_request", { code: "await new Promise(r => setTimeout(r, 200)); throw new Error('first')", stop_on_error: true }),
      k.send("shell", "execute_request", { code: "1 + 1" }),
    ];
    assert.equal((await k.reply(ids[0]!)).content.status, "error");
    assert.equal((await k.reply(ids[1]!)).content.status, "aborted");
    const ids2 = [
      k.send("shell", "execute_request", { code: "await new Promise(r => setTimeout(r, 200)); throw new Error('second')", stop_on_error: false }),
      k.send("shell", "execute_request", { code: "2 + 2" }),
    ];
    assert.equal((await k.reply(ids2[0]!)).content.status, "error");
    assert.equal((await k.reply(ids2[1]!)).content.status, "ok");
  });

  it("renders Symbol.for('Jupyter.display') objects as rich execute_result", async () => {
    const r = await k.execute(
      '({ [Symbol.for("Jupyter.display")]() { return { "text/html": "<b>hi</b>", "image/png": new Uint8Array([137, 80, 78, 71]) }; } })',
    );
    const data = ofType(r.iopub, "execute_result")[0]!.data;
    assert.equal(data["text/html"], "<b>hi</b>");
    assert.equal(data["image/png"], Buffer.from([137, 80, 78, 71]).toString("base64"));
    assert.ok(typeof data["text/plain"] === "string", "a text/plain fallback is added");
  });

  it("display bridge: display_data, update_display_data by id, clear_output, tslab's display API", async () => {
    const r = await k.execute(
      `${B}.display({ "text/plain": "v1", "application/json": { a: 1 } }, { displayId: "d1", metadata: { "application/json": { expanded: true } } });\n` +
        `${B}.display({ "text/plain": "v2" }, { displayId: "d1", update: true });\n` +
        `${B}.clearOutput(true);\n` +
        `import * as tslab from "tslab"; tslab.display.html("<i>t</i>");`,
    );
    assert.equal(r.reply.content.status, "ok", JSON.stringify(r.iopub.filter((m) => m.header.msg_type === "error").map((m) => m.content)));
    const types = r.iopub.map((m) => m.header.msg_type).filter((t) => t !== "status");
    assert.deepEqual(types, ["execute_input", "display_data", "update_display_data", "clear_output", "display_data"]);
    const [d1, d2] = r.iopub.filter((m) => /display_data/.test(m.header.msg_type)).map((m) => m.content as Record<string, any>);
    assert.deepEqual(d1!.data, { "text/plain": "v1", "application/json": { a: 1 } });
    assert.deepEqual(d1!.metadata, { "application/json": { expanded: true } });
    assert.equal(d1!.transient.display_id, "d1");
    assert.equal(d2!.transient.display_id, "d1");
    assert.equal(ofType(r.iopub, "clear_output")[0]!.wait, true);
    assert.equal(ofType(r.iopub, "display_data")[1]!.data["text/html"], "<i>t</i>");
  });

  it("attributes async output to the cell that started it, even after that cell finished", async () => {
    const a = await k.execute(`setTimeout(() => { console.log("late A"); ${B}.display({ "text/plain": "late display" }); }, 400); "A done"`);
    const b = await k.execute(`await new Promise(r => setTimeout(r, 800)); console.log("B")`);
    await k.waitFor(() => streamText(k.iopubFor(a.id), "stdout").includes("late A"), 5000);
    assert.equal(streamText(k.iopubFor(b.id), "stdout"), "B\n");
    assert.equal(ofType(k.iopubFor(a.id), "display_data")[0]!.data["text/plain"], "late display");
    assert.equal(ofType(b.iopub, "display_data").length, 0);
  });

  it("reports unhandled rejections on the owning cell's stderr and stays alive", async () => {
    const a = await k.execute(`Promise.reject(new Error("nobody awaited me")); "sent"`);
    await k.waitFor(() => streamText(k.iopubFor(a.id), "stderr").includes("nobody awaited me"), 5000);
    assert.match(streamText(k.iopubFor(a.id), "stderr"), /Unhandled promise rejection/);
    const t = await k.execute(`setTimeout(() => { throw new Error("thrown in a timer"); }, 10); "ok"`);
    await k.waitFor(() => streamText(k.iopubFor(t.id), "stderr").includes("thrown in a timer"), 5000);
    assert.equal(resultText((await k.execute("1 + 2")).iopub), "3");
  });

  it("stdin: input_request goes to the frontend and input_reply resolves it", async () => {
    const id = k.send("shell", "execute_request", { code: `const answer = await ${B}.input("Name? "); answer.toUpperCase()`, allow_stdin: true });
    const req = await k.waitFor(() => k.stdinLog.find((m) => m.parent_header.msg_id === id), 15000);
    assert.equal(req.header.msg_type, "input_request");
    assert.deepEqual(req.content, { prompt: "Name? ", password: false });
    k.send("stdin", "input_reply", { value: "ada", status: "ok" });
    await k.reply(id);
    assert.equal(resultText(await k.idle(id)), "'ADA'");
    const denied = await k.execute(`await ${B}.input("x")`, { allow_stdin: false });
    assert.equal(errorOf(denied.iopub).ename, "StdinNotImplementedError");
  });

  it("stdin: two inputs at once are asked one after the other; one its cell left unanswered does not block the next", async () => {
    const answer = (req: Message, value: string) => k.send("stdin", "input_reply", { value, status: "ok" }, { parent: req.header });
    const asked = (id: string, n: number) => k.waitFor(() => { const r = k.stdinLog.filter((m) => m.parent_header.msg_id === id); return r.length >= n ? r : undefined; }, 15000);
    // the globals input() and prompt(), as IPython's input() / Deno's prompt()
    const both = k.send("shell", "execute_request", { code: `(await Promise.all([input("a? "), prompt("b?", "dflt")])).join("+")`, allow_stdin: true });
    const [a] = await asked(both, 1);
    await sleep(300);
    assert.equal(k.stdinLog.filter((m) => m.parent_header.msg_id === both).length, 1, "the second waits for the first's answer");
    answer(a!, "one");
    const [, b] = await asked(both, 2);
    assert.deepEqual(b!.content, { prompt: "b? [dflt] ", password: false });
    answer(b!, "");
    assert.equal(resultText(await k.idle(both)), "'one+dflt'");
    // a cell that stopped waiting (its own timeout) and ended: the request is cancelled, the next input is asked
    const gaveUp = await k.execute(`await Promise.race([input("x? "), new Promise((_, no) => setTimeout(() => no(new Error("gave up waiting")), 300))])`, { allow_stdin: true });
    assert.match(errorOf(gaveUp.iopub).evalue, /gave up waiting/);
    const next = k.send("shell", "execute_request", { code: `await input("y? ")`, allow_stdin: true });
    const [y] = await asked(next, 1);
    assert.deepEqual(y!.content, { prompt: "y? ", password: false });
    answer(y!, "yes");
    assert.equal(resultText(await k.idle(next)), "'yes'");
  });

  it("output of synchronous code streams while it runs (the IOPub thread sends it; it came all at once at the end)", async () => {
    // a line before a long synchronous block, then a loop that prints
    const busy = (ms: number) => `{ const t = Date.now(); while (Date.now() - t < ${ms}) {} }`;
    const id = k.send("shell", "execute_request", { code: `console.log("loading"); ${busy(1500)}\nfor (let i = 0; i < 3; i++) { console.log("step", i); ${busy(400)} }` });
    await k.waitFor(() => streamText(k.iopubFor(id), "stdout").includes("loading"), 30_000);
    const loadingAt = Date.now();
    await k.waitFor(() => streamText(k.iopubFor(id), "stdout").includes("step 0"), 30_000);
    const stepAt = Date.now();
    await k.idle(id);
    const idleAt = Date.now();
    assert.ok(idleAt - loadingAt >= 1500, `the line before the block arrived ${idleAt - loadingAt} ms before idle`);
    assert.ok(idleAt - stepAt >= 500, `the loop's first line arrived ${idleAt - stepAt} ms before idle`);
    assert.equal(streamText(k.iopubFor(id), "stdout"), "loading\n" + [0, 1, 2].map((i) => `step ${i}\n`).join(""));
  });

  it("what finishes just after the cell's code (an async display method, beforeIdle work) comes before its idle", async () => {
    const r = await k.execute(
      `display({ [Symbol.for("Jupyter.display")]: async () => { await new Promise((res) => setTimeout(res, 200)); return { "text/html": "<b>late</b>" }; } });\n` +
        `${B}.beforeIdle(() => new Promise<void>((res) => setTimeout(() => { console.log("after the code"); res(); }, 200)));\n"done"`,
    );
    assert.equal(ofType(r.iopub, "display_data")[0]?.data?.["text/html"], "<b>late</b>");
    assert.match(streamText(r.iopub, "stdout"), /after the code/);
    assert.equal(resultText(r.iopub), "'done'");
  });

  it("comms: kernel-opened echo with binary buffers, comm_info, frontend-opened targets, unknown targets closed", async () => {
    const r = await k.execute(
      `const c = ${B}.openComm("test.echo", { hello: 1 });\n` +
        `c.onMsg((d: any, bufs: Buffer[]) => c.send({ echo: d, sizes: bufs.map(b => b.length) }, bufs.map(b => new Uint8Array(b).reverse())));\n` +
        `let closedWith: any = null; c.onClose((d: any) => { closedWith = d; });\n` +
        `${B}.registerCommTarget("test.target", (comm: any, data: any) => comm.send({ got: data }));\n` +
        "c.id",
    );
    const open = ofType(r.iopub, "comm_open")[0]!;
    assert.equal(open.target_name, "test.echo");
    assert.deepEqual(open.data, { hello: 1 });
    assert.equal(resultText(r.iopub), `'${open.comm_id}'`);

    const info = await k.reply(k.send("shell", "comm_info_request", { target_name: "test.echo" }));
    assert.equal(info.header.msg_type, "comm_info_reply");
    assert.deepEqual((info.content as any).comms, { [open.comm_id]: { target_name: "test.echo" } });

    const msgId = k.send("shell", "comm_msg", { comm_id: open.comm_id, data: { ping: 2 } }, { buffers: [Buffer.from([1, 2, 3]), Buffer.from([9])] });
    const echo = await k.waitFor(() => k.iopubLog.find((m) => m.header.msg_type === "comm_msg" && (m.content as any).comm_id === open.comm_id));
    assert.deepEqual((echo.content as any).data, { echo: { ping: 2 }, sizes: [3, 1] });
    assert.deepEqual(echo.buffers.map((b) => [...b]), [[3, 2, 1], [9]]);
    assert.equal(echo.parent_header.msg_id, r.id, "comm output belongs to the cell that opened the comm");
    await k.idle(msgId);

    const fid = "frontend-comm-1";
    k.send("shell", "comm_open", { comm_id: fid, target_name: "test.target", data: { x: 5 } });
    const got = await k.waitFor(() => k.iopubLog.find((m) => m.header.msg_type === "comm_msg" && (m.content as any).comm_id === fid));
    assert.deepEqual((got.content as any).data, { got: { x: 5 } });

    const uid = k.send("shell", "comm_open", { comm_id: "nobody-1", target_name: "no.such.target", data: {} });
    await k.idle(uid);
    assert.ok(k.iopubFor(uid).some((m) => m.header.msg_type === "comm_close" && (m.content as any).comm_id === "nobody-1"));

    const cid = k.send("shell", "comm_close", { comm_id: open.comm_id, data: { bye: true } });
    await k.idle(cid);
    assert.equal(resultText((await k.execute("JSON.stringify(closedWith)")).iopub), `'{"bye":true}'`);
  });

  it("imports the package as `controlnet-ts` (ESM TypeScript via require), with its types", async () => {
    const r = await k.execute(`import * as cn from "controlnet-ts";\ncn.fixtureName`);
    assert.equal(resultText(r.iopub), "'selfpkg'", JSON.stringify(ofType(r.iopub, "error")));
    const typed = await k.execute(`const wrong: number = cn.fixtureName`);
    assert.match(errorOf(typed.iopub).evalue, /Type 'string' is not assignable to type 'number'/);
    const w = await k.execute(`import { badge } from "controlnet-ts/widgets";\nbadge("hi")`);
    assert.equal(ofType(w.iopub, "execute_result")[0]!.data["text/html"], "<b>hi</b>");
  });

  it("interrupt (SIGINT) stops a training loop at the next step; state intact; next cell runs", async (t) => {
    await k.execute(`const run = new cn.Run();`);
    const stepMs = 100;
    const id = k.send("shell", "execute_request", { code: `await run.train({ until: 100000, stepMs: ${stepMs} })` });
    await k.waitFor(() => k.iopubFor(id).filter((m) => m.header.msg_type === "update_display_data").length >= 3, 20000);
    // Requests are answered while the cell trains, and the kernel is shown busy again afterwards.
    const cid = k.send("shell", "complete_request", { code: "run.st", cursor_pos: 6 });
    const completion = await k.reply(cid, 5000);
    assert.ok((completion.content as any).matches.includes("step"));
    assert.equal(k.hasReply(id), false, "the training cell is still running");
    await k.idle(cid);
    await k.waitFor(() => {
      const statuses = k.iopubLog.filter((m) => m.header.msg_type === "status");
      const lastIdle = statuses.findLastIndex((m) => m.parent_header.msg_id === cid);
      return statuses.slice(lastIdle + 1).some((m) => m.parent_header.msg_id === id && (m.content as any).execution_state === "busy");
    }, 5000);
    const t0 = Date.now();
    k.proc.kill("SIGINT");
    const reply = await k.reply(id);
    const took = Date.now() - t0;
    assert.equal(reply.content.status, "error");
    assert.equal(reply.content.ename, "KeyboardInterrupt");
    assert.ok(took < stepMs + 700, `stopped after ${took} ms (one step is ${stepMs} ms)`);
    t.diagnostic(`interrupt → KeyboardInterrupt reply in ${took} ms (step ${stepMs} ms)`);
    const s1 = Number(resultText((await k.execute("run.step")).iopub));
    assert.ok(s1 >= 3, `progress kept: step ${s1}`);
    await sleep(3 * stepMs);
    const s2 = Number(resultText((await k.execute("run.step")).iopub));
    assert.equal(s2, s1, "the loop really stopped");
    assert.equal(resultText((await k.execute("run.stoppedEarly")).iopub), "true");
    // Training resumes from the kept state.
    const more = await k.execute(`await run.train({ until: run.step + 2, stepMs: 10 })`);
    assert.equal(resultText(more.iopub), String(s1 + 2));
  });

  it("interrupt_request (control) does the same; a loop ignoring the signal is abandoned after the grace period", async () => {
    const id = k.send("shell", "execute_request", { code: `await run.train({ until: 100000, stepMs: 50 })` });
    await k.waitFor(() => k.iopubFor(id).some((m) => m.header.msg_type === "update_display_data"), 20000);
    const ir = await k.reply(k.send("control", "interrupt_request", {}));
    assert.equal(ir.header.msg_type, "interrupt_reply");
    assert.equal((await k.reply(id)).content.ename, "KeyboardInterrupt");

    // a cell that asked for its abort signal (so might stop cooperatively) and then ignores it
    const hung = await k.started(`${B}.abortSignal(); await new Promise(() => {})`);
    await sleep(100);
    const t0 = Date.now();
    k.send("control", "interrupt_request", {});
    const r = await k.reply(hung);
    assert.equal(r.content.ename, "KeyboardInterrupt");
    assert.ok(Date.now() - t0 >= 1000, "waited for the grace period first");
    assert.equal(resultText((await k.execute("x")).iopub), "20", "state from before is intact");
  });

  it("SIGINT breaks a synchronous infinite loop; heartbeat answers while it runs", async () => {
    const id = await k.started(`let spins = 0; while (true) { spins++; }`);
    await sleep(300);
    const hb = new zmq.Request({ linger: 0, receiveTimeout: 3000 });
    hb.connect(`tcp://127.0.0.1:${k.connection.hb_port}`);
    const t0 = Date.now();
    await hb.send("ping");
    const [pong] = await hb.receive();
    assert.equal(pong!.toString(), "ping");
    assert.ok(Date.now() - t0 < 2000, "heartbeat is not blocked by the busy main thread");
    hb.close();
    k.proc.kill("SIGINT");
    const r = await k.reply(id, 10000);
    assert.equal(r.content.ename, "KeyboardInterrupt");
    assert.equal(resultText((await k.execute("x + 1")).iopub), "21");
  });

  it("complete, inspect, is_complete, history", async () => {
    const code = "const greeting = 'hi'; greeting.toUpp";
    const c = (await k.reply(k.send("shell", "complete_request", { code, cursor_pos: code.length }))).content as Record<string, any>;
    assert.equal(c.status, "ok");
    assert.ok(c.matches.includes("toUpperCase"), JSON.stringify(c.matches));
    assert.equal(c.cursor_start, code.length - "toUpp".length);
    assert.equal(c.cursor_end, code.length);
    // Code points, not UTF-16 units: an emoji before the cursor counts once.
    const emoji = "const s = '😀'; s.len";
    const ce = (await k.reply(k.send("shell", "complete_request", { code: emoji, cursor_pos: [...emoji].length }))).content as Record<string, any>;
    assert.equal(ce.cursor_start, [...emoji].length - 3);
    assert.ok(ce.matches.includes("length"));

    // inside `import { … } from "m"` and inside a module name
    const complete = async (code: string, at = code.length) => (await k.reply(k.send("shell", "complete_request", { code, cursor_pos: at }))).content as Record<string, any>;
    const named = await complete("import { rea } from 'fs'", "import { rea".length);
    assert.ok(named.matches.includes("readFileSync"), JSON.stringify(named));
    assert.equal(named.cursor_start, "import { ".length);
    for (const [code, want] of [["import * as q from 'node:f", "node:fs"], ["const r = require('node:pa", "node:path"]] as const) {
      const c = await complete(code);
      assert.ok(c.matches.includes(want), `${code}: ${JSON.stringify(c)}`);
      // the replacement covers what was typed of the name: accepting it gives 'node:fs', not 'node:fnode:fs'
      const accepted = code.slice(0, c.cursor_start) + want + code.slice(c.cursor_end);
      assert.ok(accepted.endsWith(`'${want}`), `${code} → ${accepted}`);
    }

    // a property name inside an element access's string: the object's keys, replacing what was typed
    const access = "const o = { alpha: 1, beta: 2 }; o['al";
    const el = await complete(access);
    assert.deepEqual(el.matches, ["alpha", "beta"]);
    assert.equal(access.slice(el.cursor_start, el.cursor_end), "al");

    const i = (await k.reply(k.send("shell", "inspect_request", { code: "Math.max", cursor_pos: 7, detail_level: 0 }))).content as Record<string, any>;
    assert.equal(i.found, true);
    assert.match(i.data["text/plain"], /max\(\.\.\.values: number\[\]\): number/);

    const inc = (await k.reply(k.send("shell", "is_complete_request", { code: "function f() {" }))).content as Record<string, any>;
    assert.equal(inc.status, "incomplete");
    const com = (await k.reply(k.send("shell", "is_complete_request", { code: "1 + 1" }))).content as Record<string, any>;
    assert.equal(com.status, "complete");
    const last = await k.execute("'history probe'");
    const count = last.reply.content.execution_count as number;
    const h = await k.reply(k.send("shell", "history_request", { output: true, raw: true, hist_access_type: "tail", n: 1 }));
    assert.equal(h.header.msg_type, "history_reply");
    assert.deepEqual((h.content as any).history, [[1, count, ["'history probe'", "'history probe'"]]]);
    const s = await k.reply(k.send("shell", "history_request", { output: false, raw: true, hist_access_type: "search", pattern: "*history pr?be*", unique: true }));
    assert.deepEqual((s.content as any).history, [[1, count, "'history probe'"]]);
  });

  it("rejects unsigned and badly signed messages (and logs them)", async () => {
    const bad = k.send("shell", "execute_request", { code: "globalThis.pwned = 1" }, { signer: new Signer("wrong key") });
    const [id, ...rest] = ["<IDS|MSG>", "", JSON.stringify({ msg_id: "unsigned-1", msg_type: "execute_request", session: "s", username: "u", date: "", version: "5.3" }), "{}", "{}", JSON.stringify({ code: "globalThis.pwned = 2" })];
    k.sendFrames("shell", [id, ...rest].map((s) => Buffer.from(s!)));
    await sleep(1500);
    assert.equal(k.hasReply(bad), false);
    assert.equal(k.hasReply("unsigned-1"), false);
    assert.equal(resultText((await k.execute("(globalThis as any).pwned ?? 'untouched'")).iopub), "'untouched'");
    const log = k.stderrText.join("");
    assert.match(log, /rejected a message: bad signature/);
    assert.match(log, /rejected a message: unsigned message/);
  });

  it("shutdown_request while a synchronous loop holds the main thread: the loop is stopped and the kernel ends (it ran on until killed)", async () => {
    const busy = await KernelClient.start({ env: { CONTROLNET_TS_PACKAGE_ROOT: FIXTURE } });
    const id = busy.send("shell", "execute_request", { code: "while (true) {}" });
    await busy.waitFor(() => busy.iopubFor(id).some((m) => m.header.msg_type === "execute_input"), 30_000);
    await sleep(300);
    const t0 = Date.now();
    await busy.reply(busy.send("control", "shutdown_request", { restart: false }), 10_000);
    const code = await Promise.race([busy.exited, sleep(10_000).then(() => "still running")]);
    assert.equal(code, 0, busy.stderrText.join("").slice(-2000));
    assert.ok(Date.now() - t0 < 5000, `ended ${Date.now() - t0} ms after the request`);
    await busy.close();
  });

  it("shutdown_request echoes restart and ends the process, after its onShutdown work; a fresh kernel starts clean", async () => {
    const mark = path.join(os.tmpdir(), `cnts-shutdown-${process.pid}.txt`);
    fs.rmSync(mark, { force: true });
    await k.execute(`${B}.onShutdown(async () => { await new Promise((r) => setTimeout(r, 300)); require("node:fs").writeFileSync(${JSON.stringify(mark)}, "saved"); })`);
    const id = k.send("control", "shutdown_request", { restart: true });
    const r = await k.reply(id);
    assert.equal(r.header.msg_type, "shutdown_reply");
    assert.deepEqual(r.content, { status: "ok", restart: true });
    const code = await Promise.race([k.exited, sleep(10000).then(() => "still running")]);
    assert.equal(code, 0, `exit ${code}, signal ${k.exitSignal}: ${k.stderrText.join("").slice(-3000)}`);
    assert.equal(fs.readFileSync(mark, "utf8"), "saved");
    fs.rmSync(mark);

    // The fresh kernel's "Jupyter server" is a stand-in process: when it dies, the kernel must end by itself.
    const parent = spawn("sleep", ["120"], { stdio: "ignore" });
    const fresh = await KernelClient.start({ env: { CONTROLNET_TS_PACKAGE_ROOT: FIXTURE, JPY_PARENT_PID: String(parent.pid) } });
    try {
      const e = await fresh.execute("x");
      assert.match(errorOf(e.iopub).evalue, /Cannot find name 'x'/);
      assert.equal(resultText((await fresh.execute("1 + 1")).iopub), "2");
      parent.kill("SIGKILL");
      const code = await Promise.race([fresh.exited, sleep(10000).then(() => "still running")]);
      assert.equal(code, 0, `the kernel ends when its parent is gone (exit ${code}, signal ${fresh.exitSignal}): ${fresh.stderrText.join("").slice(-3000)}`);
      assert.match(fresh.stderrText.join(""), /parent process \d+ is gone/);
    } finally {
      parent.kill("SIGKILL");
      await fresh.close();
    }
  });
});

it("start and shut down, repeatedly (shutdown_request, SIGTERM): every kernel ends cleanly, never `terminate called … Napi::Error`", async () => {
  // seen 1 time in 13 before the heartbeat thread ended by itself instead of being cut off at exit
  for (let i = 0; i < 8; i++) {
    const k = await KernelClient.start({ env: { CONTROLNET_TS_PACKAGE_ROOT: FIXTURE } });
    assert.equal(resultText((await k.execute("1 + 1")).iopub), "2");
    if (i % 2 === 1) k.proc.kill("SIGTERM");
    await k.close();
    const out = k.stderrText.join("");
    assert.doesNotMatch(out, /terminate called|Napi::Error|Aborted|core dumped/, `kernel ${i}: ${out.slice(-2000)}`);
    assert.ok(!["SIGABRT", "SIGSEGV", "SIGBUS", "SIGKILL"].includes(k.proc.signalCode ?? ""), `kernel ${i} died of ${k.proc.signalCode}: ${out.slice(-2000)}`);
    if (i % 2 === 0) assert.equal(k.exitCode, 0, `kernel ${i} (shutdown_request) exit ${k.exitCode}`);
  }
});
