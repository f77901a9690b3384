/**
 * Two machines, simulated on loopback: two launchers with --num_machines 2 find each other through machine 0's
 * rendezvous and train as one group of 2 processes, equal to 1 process with the same global batch. A launcher started
 * with other sizes is refused by name.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { listCheckpoints } from "../../lib/training/checkpoints.js";
import { freePorts, maxWeightDiff, skipReason, start, trainFlags, waitFor } from "./helpers.js";
import { tempDir } from "../helpers.js";

const skip = skipReason();

test("2 machines × 1 process (rendezvous on machine 0) = 1 process × batch 2", { skip }, async () => {
  const tmp = tempDir("dp-machines-");
  const port = await freePorts(3);
  const steps = ["--max_train_steps=2", "--checkpointing_steps=100"];
  const machine = (rank: number) => start(["launch", "--num_processes", "2", "--num_machines", "2", "--machine_rank", String(rank),
    "--main_process_ip", "127.0.0.1", "--main_process_port", String(port), "train_controlnet",
    ...trainFlags(path.join(tmp, "two"), [...steps, "--train_batch_size=1"])]);
  const m1 = machine(1); // the other machine may start first: it waits for machine 0's rendezvous
  await new Promise((r) => setTimeout(r, 1500));
  const m0 = machine(0);
  const [r0, r1] = await Promise.all([m0.done, m1.done]);
  assert.equal(r0.code, 0, r0.stderr.slice(-2000));
  assert.equal(r1.code, 0, r1.stderr.slice(-2000));
  assert.match(r0.stderr, new RegExp(`rank 0 pid \\d+ \\(TensorFlow collective ops on 127\\.0\\.0\\.1:${port + 1}, 127\\.0\\.0\\.1:${port + 2}\\)`));
  assert.match(r1.stderr, /rank 1 pid/);
  // while they gather, each launcher says what it waits for (it printed nothing until every machine had joined)
  assert.match(r0.stderr, new RegExp(`^launch: waiting for machine\\(s\\) 1 at 127\\.0\\.0\\.1:${port} \\(up to 300 s\\): run the same command there with --machine_rank 1$`, "m"));
  assert.match(r0.stderr, /^launch: machine 1 joined from 127\.0\.0\.1$/m);
  assert.match(r1.stderr, new RegExp(`^launch: joining machine 0 at 127\\.0\\.0\\.1:${port} \\(waiting up to 300 s for it\\)$`, "m"));
  const one = await start(["train_controlnet", ...trainFlags(path.join(tmp, "one"), [...steps, "--train_batch_size=2"])]).done;
  assert.equal(one.code, 0, one.stderr.slice(-2000));
  const d = maxWeightDiff(path.join(tmp, "one"), path.join(tmp, "two")).max;
  assert.ok(d <= 1e-5, `2-machine weights differ by ${d}`);
});

test("a machine launched with another --num_processes is refused by machine 0's rendezvous", { skip }, async () => {
  const tmp = tempDir("dp-machines-bad-");
  const port = await freePorts(4);
  const flags = trainFlags(path.join(tmp, "out"), ["--max_train_steps=1", "--train_batch_size=1"]);
  const common = ["--num_machines", "2", "--main_process_ip", "127.0.0.1", "--main_process_port", String(port)];
  const m0 = start(["launch", "--num_processes", "2", ...common, "--machine_rank", "0", "train_controlnet", ...flags], { CONTROLNET_TS_RENDEZVOUS_TIMEOUT: "20" });
  const r1 = await start(["launch", "--num_processes", "4", ...common, "--machine_rank", "1", "train_controlnet", ...flags]).done;
  assert.equal(r1.code, 1);
  assert.match(r1.stderr, /launch: error: machine 0 refused machine 1: it was launched with --num_machines 2 --num_processes 4, machine 0 with 2 \/ 2/);
  const r0 = await m0.done;
  assert.equal(r0.code, 1);
  // machine 0 said so at once too (it waits on for a machine launched right), and names the timeout's variable
  assert.match(r0.stderr, /launch: refused a machine from 127\.0\.0\.1: it was launched with --num_machines 2 --num_processes 4, machine 0 with 2 \/ 2; still waiting \(up to 20 s\) for the others/);
  assert.match(r0.stderr, /launch: error: machine\(s\) 1 did not join the rendezvous at 127\.0\.0\.1:\d+ within 20 s \(CONTROLNET_TS_RENDEZVOUS_TIMEOUT\)/);
});

test("kill -9 of machine 1's worker: both launchers stop with one error; machine 0's names the last checkpoint, machine 1's defers to it", { skip }, async () => {
  const tmp = tempDir("dp-machines-kill-");
  const out = path.join(tmp, "out");
  const port = await freePorts(3);
  const machine = (rank: number) => start(["launch", "--num_processes", "2", "--num_machines", "2", "--machine_rank", String(rank),
    "--main_process_ip", "127.0.0.1", "--main_process_port", String(port), "train_controlnet",
    ...trainFlags(out, ["--max_train_steps=40", "--checkpointing_steps=2", "--train_batch_size=1"])]);
  const m0 = machine(0);
  const m1 = machine(1);
  await waitFor(() => listCheckpoints(out).length > 0 || m0.child.exitCode !== null, 240_000, "the first checkpoint");
  const pid = Number(/rank 1 pid (\d+)/.exec(m1.output())?.[1]);
  assert.ok(pid > 0, m1.output());
  process.kill(pid, "SIGKILL");
  const [r0, r1] = await Promise.all([m0.done, m1.done]);
  assert.equal(r1.code, 1);
  // machine 1 sees the same folder here, but on real machines it is another disk or a moment behind rank 0's writes
  assert.match(r1.stderr, /launch: error: .*killed by SIGKILL.*Machine 0's launcher names the last checkpoint; relaunch every machine with --resume_from_checkpoint=latest/);
  assert.doesNotMatch(r1.stderr, /The last checkpoint is/);
  assert.equal(r0.code, 1);
  const last = listCheckpoints(out).at(-1)!;
  assert.match(r0.stderr, new RegExp(`The last checkpoint is ${last.path.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}: relaunch`));
});

test("machines that would start from different states (machine 1's disk lacks the checkpoint) are refused before any step", { skip }, async () => {
  const tmp = tempDir("dp-machines-state-");
  const port = await freePorts(3);
  // machine 0's output_dir holds checkpoint-2 of a run of global batch 2; machine 1's own disk holds nothing
  const first = await start(["train_controlnet", ...trainFlags(path.join(tmp, "m0"), ["--max_train_steps=2", "--checkpointing_steps=2", "--train_batch_size=2"])]).done;
  assert.equal(first.code, 0, first.stderr.slice(-2000));
  const machine = (rank: number) => start(["launch", "--num_processes", "2", "--num_machines", "2", "--machine_rank", String(rank),
    "--main_process_ip", "127.0.0.1", "--main_process_port", String(port), "train_controlnet",
    ...trainFlags(path.join(tmp, `m${rank}`), ["--max_train_steps=3", "--checkpointing_steps=100", "--train_batch_size=1", "--resume_from_checkpoint=latest"])]);
  const [r0, r1] = await Promise.all([machine(0).done, machine(1).done]);
  for (const r of [r0, r1]) {
    assert.equal(r.code, 1, r.stderr.slice(-2000));
    assert.match(r.stdout + r.stderr, /the processes do not start from the same state: process 1 starts at step 0, process 0 at step 2\. Every machine must see the same output_dir/);
    assert.doesNotMatch(r.stdout + r.stderr, /Steps: 3\//, "no step was trained");
  }
  assert.deepEqual(listCheckpoints(path.join(tmp, "m0")).map((c) => c.step), [2], "machine 0's run is as it was");
});
