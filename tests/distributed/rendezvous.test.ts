/** Bad rendezvous is a clear error: a second launch on a port in use, a peer that never joins. */
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { freePorts, skipReason, start, trainFlags, waitFor } from "./helpers.js";
import { tempDir } from "../helpers.js";

const skip = skipReason();

test("a second launch on a busy port is refused clearly, and the first one goes on", { skip }, async () => {
  const tmp = tempDir("dp-busy-");
  const port = await freePorts(2);
  const launch = (out: string, steps: number) => start(["launch", "--num_processes", "2", "--main_process_port", String(port), "train_controlnet",
    ...trainFlags(path.join(tmp, out), [`--max_train_steps=${steps}`, "--train_batch_size=1", "--checkpointing_steps=100"])]);
  // long enough to still hold its ports when the second launch checks them: with 3 steps the native engine's first
  // launch once finished (and freed the port) before the second launcher got there, which then trained (exit 0)
  const first = launch("first", 40);
  await waitFor(() => /Steps: 1\//.test(first.output()) || first.child.exitCode !== null, 240_000, "the first launch's first step");
  const t0 = Date.now();
  const second = await launch("second", 3).done;
  assert.equal(first.child.exitCode, null, "the first launch was still running when the second was refused");
  assert.equal(second.code, 1);
  assert.match(second.stderr, new RegExp(`^launch: error: port ${port} is already in use \\(another training job\\?\\): process 0 cannot listen there; pick another --main_process_port\\n$`));
  assert.ok(Date.now() - t0 < 30_000);
  assert.ok(!fs.existsSync(path.join(tmp, "second")), "nothing was started or written");
  const r = await first.done;
  assert.equal(r.code, 0, r.stderr.slice(-2000));
});

test("a process whose peer never joins (wrong size or unreachable address) stops with a clear error after the join timeout", { skip }, async () => {
  const out = tempDir("dp-join-");
  const port = await freePorts(2);
  const r = await start(["train_controlnet", ...trainFlags(out, ["--max_train_steps=2", "--train_batch_size=1"])], {
    WORLD_SIZE: "2", RANK: "0", CONTROLNET_TS_WORKER_HOSTS: `127.0.0.1:${port},127.0.0.1:${port + 1}`, CONTROLNET_TS_JOIN_TIMEOUT: "6",
  }).done;
  assert.equal(r.code, 1);
  // on the native engine TensorFlow's collective timeout can fire before our join check: both name the cause in one line
  assert.match(r.stderr, new RegExp(`train_controlnet: error: (process 1 \\(127\\.0\\.0\\.1:${port + 1}\\) did not join within 6 s .*same --num_processes and a reachable address|the all-reduce timed out after 6 s .*launched with different sizes)`));
});

test("processes started with different world sizes stop with a clear error naming the mismatch", { skip }, async () => {
  const out = tempDir("dp-size-");
  const port = await freePorts(3);
  const hosts = [0, 1, 2].map((i) => `127.0.0.1:${port + i}`);
  const flags = trainFlags(out, ["--max_train_steps=2", "--train_batch_size=1"]);
  const [r0, r1] = await Promise.all([
    start(["train_controlnet", ...flags], { WORLD_SIZE: "2", RANK: "0", CONTROLNET_TS_WORKER_HOSTS: hosts.slice(0, 2).join(","), CONTROLNET_TS_JOIN_TIMEOUT: "60" }).done,
    start(["train_controlnet", ...flags], { WORLD_SIZE: "3", RANK: "1", CONTROLNET_TS_WORKER_HOSTS: hosts.join(","), CONTROLNET_TS_JOIN_TIMEOUT: "60" }).done,
  ]);
  for (const r of [r0, r1]) {
    assert.equal(r.code, 1);
    assert.match(r.stderr, /train_controlnet: error: the processes were started with different world sizes \(--num_processes \/ WORLD_SIZE\)/);
  }
});

test("processes of two launches that met on one port (started at once: both passed the port check) refuse to train together", { skip }, async () => {
  const out = tempDir("dp-launches-");
  const port = await freePorts(2);
  const hosts = `127.0.0.1:${port},127.0.0.1:${port + 1}`;
  const flags = (dir: string) => trainFlags(path.join(out, dir), ["--max_train_steps=2", "--train_batch_size=1"]);
  const [r0, r1] = await Promise.all([
    start(["train_controlnet", ...flags("a")], { WORLD_SIZE: "2", RANK: "0", CONTROLNET_TS_WORKER_HOSTS: hosts, CONTROLNET_TS_LAUNCH_ID: "aaaaaaaaaaaa" }).done,
    start(["train_controlnet", ...flags("b")], { WORLD_SIZE: "2", RANK: "1", CONTROLNET_TS_WORKER_HOSTS: hosts, CONTROLNET_TS_LAUNCH_ID: "bbbbbbbbbbbb" }).done,
  ]);
  for (const r of [r0, r1]) {
    assert.equal(r.code, 1, r.stderr.slice(-2000));
    assert.match(r.stderr, /train_controlnet: error: process 1 belongs to another launch than process 0: two launches use the same ports \(--main_process_port\); give each its own; nothing was trained/);
  }
  assert.deepEqual(fs.existsSync(path.join(out, "a")) ? fs.readdirSync(path.join(out, "a")).filter((f) => f.startsWith("checkpoint-")) : [], []);
});

test("Ctrl-C of a launch whose processes wait for a machine that never starts ends it within seconds (it waited out the join timeout)", { skip }, async () => {
  const out = tempDir("dp-ctrlc-");
  const port = await freePorts(3);
  const launch = start(["launch", "--num_processes", "2", "--num_machines", "2", "--machine_rank", "0", "--main_process_ip", "127.0.0.1",
    "--main_process_port", String(port), "train_controlnet", ...trainFlags(out, ["--max_train_steps=3", "--train_batch_size=1"])]);
  await waitFor(() => /waiting for machine/.test(launch.output()), 60_000, "machine 0's rendezvous");
  // machine 1's launcher joins, and its processes never start
  const joined = await fetch(`http://127.0.0.1:${port}/join`, { method: "POST", body: JSON.stringify({ machine_rank: 1, num_machines: 2, num_processes: 2 }) });
  assert.equal(joined.status, 200);
  await waitFor(() => /rank 0 pid/.test(launch.output()), 30_000, "machine 0's process");
  await new Promise((r) => setTimeout(r, 3000)); // its process loads and waits for the peer
  const t0 = Date.now();
  launch.child.kill("SIGINT");
  const r = await launch.done;
  assert.ok(Date.now() - t0 < 20_000, `ended ${Date.now() - t0} ms after Ctrl-C`);
  assert.equal(r.code, 130, r.stderr.slice(-2000));
  assert.match(r.stderr, /launch: SIGINT: stopped before training started; nothing was trained\n/);
});

test("one machine, or machine 0 of two, with a --main_process_ip that is not this machine's is refused at once, naming the address", { skip }, async () => {
  const out = tempDir("dp-ip-");
  const port = await freePorts(2);
  const t0 = Date.now();
  // 192.0.2.1: TEST-NET-1 (RFC 5737), never a local address; before, the processes waited the join timeout (300 s)
  const r = await start(["launch", "--num_processes", "2", "--main_process_ip", "192.0.2.1", "--main_process_port", String(port), "train_controlnet",
    ...trainFlags(path.join(out, "o"), ["--max_train_steps=2", "--train_batch_size=1"])]).done;
  assert.equal(r.code, 1);
  assert.match(r.stderr, /^launch: error: --main_process_ip 192\.0\.2\.1 is not an address of this machine: with --num_machines 1 every process runs here/m);
  assert.ok(Date.now() - t0 < 30_000);
  assert.ok(!fs.existsSync(path.join(out, "o")), "nothing was started or written");
  // a name that does not resolve says so (.invalid never resolves: RFC 2606)
  const unknown = await start(["launch", "--num_processes", "2", "--main_process_ip", "nosuchhost.invalid", "--main_process_port", String(port), "train_controlnet",
    ...trainFlags(path.join(out, "o"), ["--max_train_steps=2", "--train_batch_size=1"])]).done;
  assert.equal(unknown.code, 1);
  assert.match(unknown.stderr, /^launch: error: --main_process_ip nosuchhost\.invalid cannot be resolved to an address/m);
  // machine 0 of several serves the rendezvous at --main_process_ip: another machine's address is refused at once too
  const t1 = Date.now();
  const m0 = await start(["launch", "--num_processes", "2", "--num_machines", "2", "--machine_rank", "0", "--main_process_ip", "192.0.2.1",
    "--main_process_port", String(port), "train_controlnet", ...trainFlags(path.join(out, "o"), ["--max_train_steps=2", "--train_batch_size=1"])]).done;
  assert.equal(m0.code, 1);
  assert.match(m0.stderr, /^launch: error: --main_process_ip 192\.0\.2\.1 is not an address of this machine, which is machine 0 \(--machine_rank 0\): give machine 0's own address/m);
  assert.ok(Date.now() - t1 < 30_000);
  assert.ok(!fs.existsSync(path.join(out, "o")), "nothing was started or written");
});
