/** The launcher's flags, the shard arithmetic and the process environment (no TensorFlow needed). */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { gpuAssignment, launch, LaunchError, parseLaunchArgs, workerThreads } from "../../lib/cli/launch.js";
import { visibleGpus } from "../../lib/engine/native/gpu.js";
import { processEnv, shardRange } from "../../lib/training/distributed.js";
import { tempDir } from "../helpers.js";

test("accelerate launch's flags", () => {
  const o = parseLaunchArgs(["--multi_gpu", "--num_processes=4", "--num_machines", "2", "--machine_rank=1", "--main_process_ip", "10.0.0.1",
    "--main_process_port", "29555", "train_controlnet", "--output_dir=x", "--train_batch_size=2"]);
  assert.ok(o !== "help");
  assert.deepEqual([o.numProcesses, o.numMachines, o.machineRank, o.mainProcessIp, o.mainProcessPort, o.command, o.commandArgs],
    [4, 2, 1, "10.0.0.1", 29555, "train_controlnet", ["--output_dir=x", "--train_batch_size=2"]]);
  assert.equal(parseLaunchArgs(["--help"]), "help");
  // the script's file, as accelerate launch is given it, is our command
  for (const script of ["train_controlnet.py", "examples/controlnet/train_controlnet.py"]) {
    const p = parseLaunchArgs(["--num_processes=2", script, "--seed=1"]);
    assert.ok(p !== "help");
    assert.deepEqual([p.command, p.commandArgs], ["train_controlnet", ["--seed=1"]], script);
  }
  const bad: [string[], RegExp][] = [
    [["--num_processes", "0", "train_controlnet"], /--num_processes expects an integer ≥ 1, got 0/],
    [["--num_processes", "3", "--num_machines", "2", "train_controlnet"], /not divisible by --num_machines 2/],
    [["--num_machines", "2", "--machine_rank", "2", "train_controlnet"], /--machine_rank 2 is outside --num_machines 2/],
    [["--num_processes", "2"], /missing the command to launch/],
    [["--num_processes", "2", "train.py"], /cannot launch "train.py": only train_controlnet/],
    [["--deepspeed_config_file", "x", "train_controlnet"], /unknown launch flag --deepspeed_config_file/],
    [["--main_process_port", "65535", "--num_processes", "2", "train_controlnet"], /ports 65535…65536 do not fit below 65536/],
    [["--main_process_port", "65534", "--num_machines", "2", "--num_processes", "2", "train_controlnet"], /ports 65534…65536 do not fit/],
    [["--mixed_precision", "fp9", "train_controlnet"], /--mixed_precision expects no, fp16 or bf16, got fp9/],
  ];
  for (const [argv, re] of bad) assert.throws(() => parseLaunchArgs(argv), (e: Error) => e instanceof LaunchError && re.test(e.message), argv.join(" "));
  // the last ports fit: ranks listen on main_process_port + rank
  assert.ok(parseLaunchArgs(["--main_process_port", "65534", "--num_processes", "2", "train_controlnet"]) !== "help");
  // accelerate's --mixed_precision reaches the script (which says it trains in float32), unless it has its own
  const mp = (argv: string[]) => (parseLaunchArgs(["--mixed_precision", "fp16", "train_controlnet", ...argv]) as { commandArgs: string[] }).commandArgs;
  assert.deepEqual(mp(["--seed=1"]), ["--seed=1", "--mixed_precision=fp16"]);
  assert.deepEqual(mp(["--mixed_precision", "bf16"]), ["--mixed_precision", "bf16"]);
  assert.deepEqual((parseLaunchArgs(["--mixed_precision=no", "train_controlnet"]) as { commandArgs: string[] }).commandArgs, []);
});

test("GPUs: one per local process (LOCAL_RANK → CUDA_VISIBLE_DEVICES), shared round-robin when fewer; none on the CPU build", () => {
  assert.deepEqual(gpuAssignment(4, ["0", "1", "2", "3"], true), ["0", "1", "2", "3"]);
  assert.deepEqual(gpuAssignment(3, ["0", "1"], true), ["0", "1", "0"]);
  assert.equal(gpuAssignment(2, ["0", "1"], false), null, "the CPU build uses no GPU");
  assert.equal(gpuAssignment(2, [], true), null, "no GPU: the GPU build runs on the CPU");
  // the GPUs the user made visible are the ones handed out, in their order (indexes or UUIDs)
  assert.deepEqual(visibleGpus({ CUDA_VISIBLE_DEVICES: "3,5" }), ["3", "5"]);
  assert.deepEqual(visibleGpus({ CUDA_VISIBLE_DEVICES: "GPU-8a1f,GPU-77c2" }), ["GPU-8a1f", "GPU-77c2"]);
  assert.deepEqual(visibleGpus({ CUDA_VISIBLE_DEVICES: "2,-1,4" }), ["2"], "CUDA stops at -1");
  assert.deepEqual(visibleGpus({ CUDA_VISIBLE_DEVICES: "" }), []);
  assert.deepEqual(gpuAssignment(2, visibleGpus({ CUDA_VISIBLE_DEVICES: "3,5" }), true), ["3", "5"]);
});

test("shards: contiguous rows, all rows once, sizes within one", () => {
  for (const world of [1, 2, 3, 4]) {
    for (const size of [1, 2, 3, 5, 8, 13]) {
      const ranges = Array.from({ length: world }, (_, r) => shardRange(size, r, world));
      assert.equal(ranges[0]![0], 0);
      assert.equal(ranges.at(-1)![1], size);
      for (let r = 1; r < world; r++) assert.equal(ranges[r]![0], ranges[r - 1]![1]);
      const sizes = ranges.map(([s, e]) => e - s);
      assert.ok(Math.max(...sizes) - Math.min(...sizes) <= 1, `${size} rows over ${world}: ${sizes}`);
    }
  }
  assert.deepEqual(shardRange(4, 1, 2), [2, 4]);
});

test("process environment: accelerate's variables, with clear errors", () => {
  assert.equal(processEnv({}), null);
  assert.deepEqual(processEnv({ WORLD_SIZE: "2", RANK: "1", MASTER_ADDR: "10.1.1.1", MASTER_PORT: "29500" }),
    { rank: 1, worldSize: 2, localRank: 1, addresses: ["10.1.1.1:29500", "10.1.1.1:29501"], launchId: "0" });
  assert.equal(processEnv({ WORLD_SIZE: "2", RANK: "1", CONTROLNET_TS_LAUNCH_ID: "0a1b2c3d4e5f" })?.launchId, "0a1b2c3d4e5f");
  assert.deepEqual(processEnv({ WORLD_SIZE: "2", RANK: "0", LOCAL_RANK: "0", CONTROLNET_TS_WORKER_HOSTS: "a:1,b:2" })?.addresses, ["a:1", "b:2"]);
  assert.throws(() => processEnv({ WORLD_SIZE: "2", RANK: "2" }), /RANK=2 is outside WORLD_SIZE=2/);
  assert.throws(() => processEnv({ WORLD_SIZE: "3", RANK: "0", CONTROLNET_TS_WORKER_HOSTS: "a:1,b:2" }), /WORLD_SIZE=3 but CONTROLNET_TS_WORKER_HOSTS lists 2/);
  assert.throws(() => processEnv({ WORLD_SIZE: "two" }), /WORLD_SIZE=two is not a non-negative integer/);
});

test("threads per process: the flag, else an exported CONTROLNET_TS_THREADS, else CPUs ÷ local processes", () => {
  assert.equal(workerThreads(3, "1", 8, 2), "3", "the flag wins over the environment (the environment won)");
  assert.equal(workerThreads(null, "1", 8, 2), "1");
  assert.equal(workerThreads(null, undefined, 8, 2), "4");
  assert.equal(workerThreads(null, "", 2, 4), "1", "at least one");
});

test("build-collective: a missing TensorFlow is one clear line, nothing written", () => {
  const tmp = tempDir("build-collective-");
  const script = path.resolve(import.meta.dirname, "../../scripts/native/build-collective.mjs");
  const r = spawnSync(process.execPath, [script, "--include", path.join(tmp, "none"), "--lib", tmp, "--out", path.join(tmp, "c.node")], { encoding: "utf8" });
  assert.equal(r.status, 1);
  assert.match(r.stderr, /^build-collective: TensorFlow's C API headers are not in .*none \(need tensorflow\/c\/eager\/c_api_experimental\.h; run npm run install-native or pass --include\)\n$/);
  assert.deepEqual(fs.readdirSync(tmp), []);
});

test("a validation image that cannot be read is refused by the launcher once, before any process starts", async () => {
  const dir = tempDir("launch-val-");
  const o = parseLaunchArgs(["--num_processes=2", "train_controlnet", "--pretrained_model_name_or_path=data/tiny-sd", "--dataset_name=synthetic-fill50k", `--output_dir=${path.join(dir, "out")}`,
    "--validation_image", path.join(dir, "missing.png"), "--validation_prompt", "red circle"]);
  assert.ok(o !== "help");
  const err: string[] = [];
  const sink = { write: (s: string) => (err.push(s), true) } as unknown as typeof process.stdout & typeof process.stderr;
  const r = await launch(o, { stdout: sink, stderr: sink });
  assert.equal(r.code, 1, err.join(""));
  assert.deepEqual(err, [`launch: error: train_controlnet: validation image ${path.join(dir, "missing.png")} cannot be read (no such file); nothing was trained\n`]);
  assert.ok(!fs.existsSync(path.join(dir, "out")), "no process started (none made output_dir)");
});

test("each process's accelerator.state line says how many processes run, which one it is, and on what", async () => {
  const { acceleratorState } = await import("../../lib/training/run.js");
  assert.equal(acceleratorState("node", { rank: 1, worldSize: 2, localRank: 1, addresses: [], launchId: "0" }),
    "Distributed environment: MULTI_CPU  Backend: TensorFlow collective ops (gRPC)\nNum processes: 2\nProcess index: 1\nLocal process index: 1\nDevice: cpu\n\nMixed precision type: no\n");
  assert.match(acceleratorState("node-gpu", null), /^Distributed environment: NO\nNum processes: 1\n.*Device: cuda:0\n/s);
});

test("rendezvous: a machine that stops while it waits frees its slot; its relaunch joins, and every machine gets machine 0's launch id", async () => {
  const { rendezvous } = await import("../../lib/cli/rendezvous.js");
  const { freePorts } = await import("./helpers.js");
  const port = await freePorts(1);
  const o = { numMachines: 3, numProcesses: 3, perMachine: 1, mainProcessIp: "127.0.0.1", mainProcessPort: port, timeoutSeconds: 30 };
  const said: string[] = [];
  const machine0 = rendezvous({ ...o, machineRank: 0, log: (l) => said.push(l) });
  await new Promise((r) => setTimeout(r, 300));
  // machine 1 joins and is stopped (Ctrl-C) while it waits for machine 2
  const ac = new AbortController();
  const gone = fetch(`http://127.0.0.1:${port}/join`, { method: "POST", body: JSON.stringify({ machine_rank: 1, num_machines: 3, num_processes: 3 }), signal: ac.signal }).catch(() => "aborted");
  while (!said.some((l) => /machine 1 joined/.test(l))) await new Promise((r) => setTimeout(r, 50));
  ac.abort();
  assert.equal(await gone, "aborted");
  while (!said.some((l) => /machine 1 left before the others joined/.test(l))) await new Promise((r) => setTimeout(r, 50));
  // its relaunch is not "a second machine 1", and machine 2 completes the group
  const [m0, m1, m2] = await Promise.all([machine0, rendezvous({ ...o, machineRank: 1 }), rendezvous({ ...o, machineRank: 2 })]);
  assert.deepEqual(m1, m0);
  assert.deepEqual(m2, m0);
  assert.equal(m0.hosts.length, 3);
  assert.match(m0.launchId, /^[0-9a-f]{12}$/);
});
