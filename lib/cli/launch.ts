/**
 * `controlnet-ts launch [--num_processes N] [--num_machines M --machine_rank R --main_process_ip IP
 * --main_process_port P] train_controlnet <its flags>` — `accelerate launch`'s shape for data-parallel training.
 *
 * The launcher starts this machine's processes with accelerate's / torchrun's environment (RANK, WORLD_SIZE,
 * LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT) plus CONTROLNET_TS_WORKER_HOSTS, every process's host:port
 * for TensorFlow's collective runtime (lib/training/distributed.ts). Process r listens on main_process_port + r
 * (one machine) or main_process_port + 1 + r (several: main_process_port is then the machines' rendezvous, where
 * each launcher learns the others' addresses, lib/cli/rendezvous.ts). It watches its processes: when one fails, the
 * others are stopped and one line says which failed and where the last checkpoint is.
 */
import { spawn, type ChildProcess } from "node:child_process";
import dns from "node:dns/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { ArgsError, parseTrainArgs } from "../training/args.js";
import { InputError } from "../io/input-error.js";
import { checkValidationImages } from "../training/validation.js";
import { whenOutputGone } from "./output-gone.js";
import { STOP_EXIT_CODES, stopSignalOf } from "../training/stop-signals.js";
import { listCheckpoints, readTrainingState } from "../training/checkpoints.js";
import { MAX_ENGINE_THREADS } from "../engine/constants.js";
import { collectiveMissingReason } from "../training/collective.js";
import { LAUNCHER_PIPE } from "../training/distributed.js";
import { visibleGpus } from "../engine/native/gpu.js";
import { readInstallStatus } from "../engine/native/install-status.js";
import { newLaunchId, rendezvous } from "./rendezvous.js";

export interface LaunchOptions {
  numProcesses: number;
  numMachines: number;
  machineRank: number;
  mainProcessIp: string;
  mainProcessPort: number;
  /** Intra-op threads per process (CONTROLNET_TS_THREADS), default: this machine's CPUs ÷ its processes. */
  threadsPerProcess: number | null;
  command: string;
  commandArgs: string[];
  /** The command as typed (`train_controlnet.py` for the script's users): how messages and the processes name it. */
  prog?: string;
}

const COMMANDS = new Set(["train_controlnet"]);

export const LAUNCH_HELP = `usage: controlnet-ts launch [--num_processes N] [--num_machines M] [--machine_rank R]
                            [--main_process_ip IP] [--main_process_port P] [--num_cpu_threads_per_process T]
                            [--multi_gpu] [--mixed_precision no|fp16|bf16]
                            train_controlnet <train_controlnet's flags>

Data-parallel training on TensorFlow's collective ops (accelerate launch's flags). --num_processes is the total over
all machines (default 1); each process trains on its shard of every global batch of num_processes × train_batch_size
rows. On several machines run the same command on each with its --machine_rank; --main_process_ip/--main_process_port
(default 29500) are machine 0's address. Ports main_process_port … + num_processes − 1 (+1 on several machines) are used.
--multi_gpu is accepted as accelerate's: with the GPU build each local process gets its own GPU (CUDA_VISIBLE_DEVICES)
whether or not it is given. --mixed_precision goes on to train_controlnet (unless it has its own, which wins), which
trains in float32 and says so: tfjs has no half precision.
`;

export class LaunchError extends Error {}

function intFlag(name: string, v: string | undefined, min: number, max = Infinity): number {
  const n = Number(v);
  if (v === undefined || !/^\d+$/.test(v) || n < min || n > max) {
    throw new LaunchError(`--${name} expects an integer ${max === Infinity ? `≥ ${min}` : `from ${min} to ${max}`}, got ${v ?? "nothing"}`);
  }
  return n;
}

export function parseLaunchArgs(argv: string[]): LaunchOptions | "help" {
  const o: LaunchOptions = {
    numProcesses: 1, numMachines: 1, machineRank: 0, mainProcessIp: "127.0.0.1", mainProcessPort: 29500,
    threadsPerProcess: null, command: "", commandArgs: [],
  };
  let mixedPrecision: string | null = null;
  let i = 0;
  for (; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "-h" || a === "--help") return "help";
    if (!a.startsWith("--")) break;
    const eq = a.indexOf("=");
    const name = (eq >= 0 ? a.slice(2, eq) : a.slice(2)).replace(/-/g, "_");
    // accelerate's device switches: with the GPU build each local process gets its own GPU anyway (gpuAssignment)
    if (name === "multi_gpu" || name === "use_cpu") continue;
    const value = eq >= 0 ? a.slice(eq + 1) : argv[++i];
    switch (name) {
      case "num_processes": o.numProcesses = intFlag(name, value, 1); break;
      case "num_machines": o.numMachines = intFlag(name, value, 1); break;
      case "machine_rank": o.machineRank = intFlag(name, value, 0); break;
      case "main_process_ip": if (!value) throw new LaunchError("--main_process_ip expects an address"); o.mainProcessIp = value; break;
      case "main_process_port": o.mainProcessPort = intFlag(name, value, 1); break;
      case "num_cpu_threads_per_process": o.threadsPerProcess = intFlag(name, value, 1, MAX_ENGINE_THREADS); break;
      case "mixed_precision":
        if (!["no", "fp16", "bf16"].includes(value ?? "")) throw new LaunchError(`--mixed_precision expects no, fp16 or bf16, got ${value ?? "nothing"}`);
        mixedPrecision = value!;
        break;
      default: throw new LaunchError(`unknown launch flag --${name} (controlnet-ts launch --help lists them; for accelerate launch's other flags — --config_file, --gpu_ids, … — run controlnet-ts accelerate launch, which maps them)`);
    }
  }
  o.command = scriptCommand(argv[i] ?? "");
  o.prog = path.basename(argv[i] ?? "");
  o.commandArgs = argv.slice(i + 1);
  // accelerate hands its --mixed_precision to the script unless the script has its own (which wins); the script then
  // says that it trains in float32 (tfjs has no half precision)
  if (mixedPrecision && mixedPrecision !== "no" && !o.commandArgs.some((a) => a === "--mixed_precision" || a.startsWith("--mixed_precision="))) {
    o.commandArgs.push(`--mixed_precision=${mixedPrecision}`);
  }
  if (!COMMANDS.has(o.command)) {
    throw new LaunchError(o.command ? `cannot launch ${JSON.stringify(o.command)}: only train_controlnet runs data-parallel` : "missing the command to launch (train_controlnet …)");
  }
  if (o.machineRank >= o.numMachines) throw new LaunchError(`--machine_rank ${o.machineRank} is outside --num_machines ${o.numMachines}`);
  if (o.numProcesses % o.numMachines !== 0) {
    throw new LaunchError(`--num_processes ${o.numProcesses} (the total) is not divisible by --num_machines ${o.numMachines}`);
  }
  // the processes listen on main_process_port + rank, after machine 0's rendezvous port when there are several machines
  const last = o.mainProcessPort + o.numProcesses - 1 + (o.numMachines > 1 ? 1 : 0);
  if (last > 65535) throw new LaunchError(`ports ${o.mainProcessPort}…${last} do not fit below 65536`);
  return o;
}

/**
 * Each process's CONTROLNET_TS_THREADS: --num_cpu_threads_per_process, else an exported CONTROLNET_TS_THREADS (as
 * accelerate's flag wins over OMP_NUM_THREADS, which is its default), else this machine's CPUs ÷ its processes.
 */
export function workerThreads(flag: number | null, exported: string | undefined, cpus: number, perMachine: number): string {
  if (flag !== null) return String(flag);
  return exported || String(Math.max(1, Math.floor(cpus / perMachine)));
}

/** The script's file as accelerate is given it (`train_controlnet.py`, `examples/controlnet/train_controlnet.py`) → our command. */
export function scriptCommand(arg: string): string {
  return /^train_controlnet(\.py)?$/.test(path.basename(arg)) ? "train_controlnet" : arg;
}

/**
 * One GPU per local process, as accelerate and torchrun give them (LOCAL_RANK → its device): the CUDA_VISIBLE_DEVICES
 * of each local rank, round-robin over the visible GPUs when there are more processes than GPUs (they then share a
 * device: TensorFlow grows its memory as needed). Null where no GPU is used: the CPU build, or no GPU.
 */
export function gpuAssignment(perMachine: number, gpus: string[], gpuBuild: boolean): string[] | null {
  if (!gpuBuild || gpus.length === 0) return null;
  return Array.from({ length: perMachine }, (_, l) => gpus[l % gpus.length]!);
}

/** Refuses a busy port before any process starts (TF would also refuse it, after loading). */
async function checkPortFree(port: number, host = "0.0.0.0"): Promise<string | null> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once("error", (e: NodeJS.ErrnoException) => resolve(e.code === "EADDRINUSE" ? `port ${port} is already in use (another training job?)` : `cannot listen on port ${port}: ${e.message}`));
    s.listen({ port, host, exclusive: true }, () => s.close(() => resolve(null)));
  });
}

/**
 * TensorFlow's two start-up lines, written before its logging is set up (so TF_CPP_MIN_LOG_LEVEL does not hold them
 * back): rank 0 shows them once, as a single process does; the other ranks' copies are dropped.
 */
const TF_STARTUP_LINE = /^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR|I0000 .*\] oneDNN custom operations are on\b.*)$/;

function forward(stream: NodeJS.ReadableStream, out: NodeJS.WriteStream, prefix: string, muted: () => boolean): void {
  let rest = "";
  stream.setEncoding("utf8");
  stream.on("data", (chunk: string) => {
    const lines = (rest + chunk).split("\n");
    rest = lines.pop()!;
    if (muted()) return;
    // (the other ranks' blank lines — a terminal's line breaks before a message — would read "[rank 1] " alone)
    for (const l of lines) if (!(prefix && (TF_STARTUP_LINE.test(l) || l.trim() === ""))) out.write(`${prefix}${l}\n`);
  });
  stream.on("end", () => { if (rest && !muted()) out.write(`${prefix}${rest}\n`); });
}

export interface LaunchResult {
  code: number;
  /** The one-line summary of a failure (also written to stderr). */
  error?: string;
}

export async function launch(o: LaunchOptions, io = { stdout: process.stdout, stderr: process.stderr }): Promise<LaunchResult> {
  const fail = (msg: string, code = 1): LaunchResult => {
    io.stderr.write(`launch: error: ${msg}\n`);
    return { code, error: msg };
  };
  let outputDir: string;
  let globalBatch: number;
  try {
    const parsed = parseTrainArgs(o.commandArgs);
    if (parsed.help) return fail(`pass --help to ${o.prog ?? o.command} without launch`, 2);
    outputDir = parsed.args.output_dir;
    globalBatch = parsed.args.train_batch_size * o.numProcesses;
    // every process reads them before its first step: refused here once, not by each process and then again
    if (parsed.args.validation_image) await checkValidationImages(parsed.args.validation_image);
  } catch (e) {
    if (e instanceof InputError) return fail(`${o.prog ?? o.command}: ${e.message}`, e instanceof ArgsError ? 2 : 1);
    throw e;
  }
  if (o.numProcesses > 1) {
    const missing = collectiveMissingReason();
    if (missing) return fail(`${o.numProcesses} processes need TensorFlow's collective ops, but ${missing}`);
  }
  // machine 0 runs rank 0 and the rendezvous, at --main_process_ip: that must be this machine (with one machine, or
  // as machine 0 of several), else the processes would wait for peers at an address nobody serves
  const here = o.numProcesses > 1 && o.machineRank === 0 ? await isThisMachine(o.mainProcessIp) : true;
  if (here === null) return fail(`--main_process_ip ${o.mainProcessIp} cannot be resolved to an address (leave it out for 127.0.0.1)`);
  if (!here) {
    return fail(o.numMachines === 1
      ? `--main_process_ip ${o.mainProcessIp} is not an address of this machine: with --num_machines 1 every process runs here ` +
        "(leave it out for 127.0.0.1; for several machines give --num_machines and --machine_rank)"
      : `--main_process_ip ${o.mainProcessIp} is not an address of this machine, which is machine 0 (--machine_rank 0): ` +
        "give machine 0's own address, the one the other machines reach it at");
  }
  const perMachine = o.numProcesses / o.numMachines;
  const firstRank = o.machineRank * perMachine;
  const base = o.mainProcessPort + (o.numMachines > 1 ? 1 : 0);
  for (let l = 0; l < perMachine && o.numProcesses > 1; l++) {
    const busy = await checkPortFree(base + firstRank + l);
    if (busy) return fail(`${busy}: process ${firstRank + l} cannot listen there; pick another --main_process_port`);
  }
  let hosts: string[];
  // the processes of this launch recognise each other by it (checkSameStart): two launches started at once on one
  // port both pass the port check, and a process of one joined the other's group and trained with it
  let launchId = newLaunchId();
  if (o.numMachines === 1) hosts = Array.from({ length: o.numProcesses }, () => o.mainProcessIp);
  else {
    try {
      const agreed = await rendezvous({ ...o, perMachine, log: (l) => io.stderr.write(`launch: ${l}\n`) });
      hosts = agreed.hosts.flatMap((h) => Array.from({ length: perMachine }, () => h));
      launchId = agreed.launchId;
    } catch (e) {
      return fail((e as Error).message);
    }
  }
  const addresses = hosts.map((h, r) => `${h.includes(":") ? `[${h}]` : h}:${base + r}`);
  const threads = workerThreads(o.threadsPerProcess, process.env.CONTROLNET_TS_THREADS, os.availableParallelism(), perMachine);
  const bin = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "bin", "controlnet-ts.js");
  const forcedCpu = ["node", "wasm", "cpu"].includes(process.env.CONTROLNET_TS_BACKEND ?? "");
  const gpus = gpuAssignment(perMachine, forcedCpu ? [] : visibleGpus(), readInstallStatus()?.flavour === "gpu");
  if (gpus) {
    const shared = perMachine > new Set(gpus).size ? ` (${perMachine} processes on ${new Set(gpus).size} GPU(s): they share)` : "";
    io.stderr.write(`launch: GPUs: ${gpus.map((g, l) => `rank ${firstRank + l} → CUDA_VISIBLE_DEVICES=${g}`).join(", ")}${shared}\n`);
  }
  const children: { rank: number; child: ChildProcess; exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }> }[] = [];
  let stoppedBy: NodeJS.Signals | null = null;
  let failure: string | null = null;
  let failureLine = "";
  let failureCode: number | null = null;
  let interrupted = false;
  let stopping = false;
  const stopOthers = () => {
    stopping = true;
    for (const c of children) if (c.child.exitCode === null && c.child.signalCode === null) c.child.kill("SIGTERM");
    // SIGTERM lets rank 0 finish the checkpoint it writes on the failure (a minute); the others write nothing and are
    // killed sooner if still there (a stopped or stuck process)
    for (const c of children) {
      setTimeout(() => { if (c.child.exitCode === null && c.child.signalCode === null) c.child.kill("SIGKILL"); }, c.rank === 0 ? 60_000 : 10_000).unref();
    }
  };
  for (let l = 0; l < perMachine; l++) {
    const rank = firstRank + l;
    const env = {
      ...process.env,
      RANK: String(rank), WORLD_SIZE: String(o.numProcesses), LOCAL_RANK: String(l), LOCAL_WORLD_SIZE: String(perMachine),
      GROUP_RANK: String(o.machineRank), MASTER_ADDR: o.mainProcessIp, MASTER_PORT: String(o.mainProcessPort),
      CONTROLNET_TS_WORKER_HOSTS: addresses.join(","), CONTROLNET_TS_LAUNCH_ID: launchId,
      CONTROLNET_TS_THREADS: threads,
      TF_CPP_MIN_LOG_LEVEL: process.env.TF_CPP_MIN_LOG_LEVEL ?? "3",
      ...(gpus ? { CUDA_VISIBLE_DEVICES: gpus[l]! } : {}),
    };
    // its own process group: a terminal's Ctrl-C reaches the launcher only, which forwards it once
    // stdin a pipe the launcher never writes: it closes when the launcher dies, however it dies (kill -9 too), and the
    // process then stops as on SIGTERM (train.ts) instead of living on, holding its port, until a timeout
    const child = spawn(process.execPath, [bin, o.prog ?? o.command, ...o.commandArgs], { env: { ...env, [LAUNCHER_PIPE]: "stdin" }, stdio: ["pipe", "pipe", "pipe"], detached: true });
    const prefix = rank === 0 ? "" : `[rank ${rank}] `;
    // once a process failed, the others' output (their view of the same failure) is muted: one clear error
    forward(child.stdout!, io.stdout, prefix, () => stopping);
    forward(child.stderr!, io.stderr, prefix, () => stopping && failure !== `rank ${rank}`);
    const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
      child.on("exit", (code, signal) => {
        // a process stopped by a signal of its own (a scheduler's SIGTERM to one worker) stops the whole group at one
        // step boundary, rank 0 checkpointing (train.ts agrees the stop through the all-reduce): a stop, not a failure
        const stopSignal = stopSignalOf(code);
        if (stopSignal && failure === null && !interrupted) {
          interrupted = true;
          stoppedBy ??= stopSignal;
          io.stderr.write(`launch: process ${rank} (pid ${child.pid}) was stopped (${stopSignal}): every process stops at the same step boundary\n`);
          // (not signalled again: a second signal a second later means "quit now" to them, and rank 0 may be writing
          // the checkpoint; one that never reaches the boundary — still loading, its peer gone — is ended later)
          for (const c of children) {
            setTimeout(() => { if (c.child.exitCode === null && c.child.signalCode === null) c.child.kill("SIGKILL"); }, 300_000).unref();
          }
        }
        if ((code !== 0 || signal) && failure === null && !interrupted) {
          failure = `rank ${rank}`;
          failureCode = code;
          const how = signal ? `was killed by ${signal}` : `exited with code ${code}`;
          failureLine = `process ${rank} (pid ${child.pid}) ${how}; stopped the other process(es)`;
          stopOthers();
        }
        resolve({ code, signal });
      });
    });
    children.push({ rank, child, exit });
  }
  const over = o.numProcesses > 1 ? ` (TensorFlow collective ops on ${addresses.join(", ")})` : "";
  io.stderr.write(`launch: ${perMachine} process(es) of ${o.numProcesses} on this machine: ${children.map((c) => `rank ${c.rank} pid ${c.child.pid}`).join(", ")}${over}\n`);
  let firstSignalAt = 0;
  let quitting = false;
  const onSignal = (sig: NodeJS.Signals) => {
    // every process stops at one step boundary and rank 0 checkpoints (train_controlnet takes SIGINT, SIGTERM and
    // SIGHUP so): the launcher's own terminal closing is a stop like any other, not a lost run. A second one a second
    // later is "quit now", forwarded as such; a process that cannot act on it (its thread held by a collective) is
    // killed a few seconds later
    if (interrupted && firstSignalAt && Date.now() - firstSignalAt >= 1000 && !quitting) {
      quitting = true;
      for (const c of children) setTimeout(() => { if (c.child.exitCode === null && c.child.signalCode === null) c.child.kill("SIGKILL"); }, 5000).unref();
    }
    interrupted = true;
    firstSignalAt ||= Date.now();
    stoppedBy ??= sig;
    for (const c of children) if (c.child.exitCode === null) c.child.kill(sig);
  };
  // the launcher ending while they run (a crash) is a stop for them, at a step boundary with a checkpoint — as its
  // closed pipe is (train.ts) — not a SIGKILL that throws their steps away
  const onExit = () => { for (const c of children) if (c.child.exitCode === null) c.child.kill("SIGTERM"); };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  process.on("SIGHUP", onSignal); // a closed terminal: the processes have their own group and would not get it
  process.on("exit", onExit);
  // the launcher's own output gone (its pipe's reader exited, its terminal closed, the notebook kernel that ran it
  // died): a write must not crash it (the crash SIGKILLed the processes); the job stops as on a closed terminal
  const output = whenOutputGone(() => onSignal("SIGHUP"), [io.stdout, io.stderr]);
  try {
    const results = await Promise.all(children.map((c) => c.exit));
    if (failure) {
      // its arguments refused (exit 2, as argparse): said above; no step of this launch was trained, and resuming
      // with the same arguments would be refused again
      if (failureCode === 2) return fail(`${failureLine}: its arguments were refused (the error above); nothing was trained by this launch`, 2);
      // rank 0 writes the checkpoints (and one on the error) on machine 0: only its launcher can name the last one;
      // another machine's view of output_dir may be another disk, or a moment behind rank 0's last write
      if (o.machineRank !== 0) {
        return fail(`${failureLine}. Machine 0's launcher names the last checkpoint; relaunch every machine with --resume_from_checkpoint=latest to continue.`);
      }
      const ck = listCheckpoints(outputDir).at(-1);
      // the global batch the checkpoint was written with (what a resume must give), else this launch's
      const recorded = (readTrainingState(ck?.path ?? "").run as { train_batch_size?: unknown } | undefined)?.train_batch_size;
      const batch = typeof recorded === "number" ? recorded : globalBatch;
      const resume = ck ? ` The last checkpoint is ${ck.path}: relaunch with --resume_from_checkpoint=latest to continue (any --num_processes with its global batch, num_processes × train_batch_size = ${batch}).` : " No checkpoint was written yet.";
      return fail(`${failureLine}.${resume}`);
    }
    // stopped before the processes could take the signal (still loading): nothing was trained, and no error happened
    // processes that ended by the signal itself: still loading (nothing trained), or told to quit now
    // (any stop signal: a second one may differ from the first — Ctrl-C, then the terminal closing)
    if (stoppedBy && results.some((r) => r.signal !== null && (r.signal in STOP_EXIT_CODES || r.signal === "SIGKILL"))) {
      const ck = listCheckpoints(outputDir).at(-1);
      io.stderr.write(quitting
        ? `launch: ${stoppedBy} again: quit now; the steps since the last checkpoint (${ck ? ck.path : "none was written"}) are not saved\n`
        : `launch: ${stoppedBy}: stopped before training started; nothing was trained\n`);
      return { code: 128 + (os.constants.signals[stoppedBy] ?? 1) };
    }
    const bad = results.find((r) => r.code !== 0);
    return { code: bad ? bad.code ?? 1 : 0 };
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    process.off("SIGHUP", onSignal);
    process.off("exit", onExit);
    output.stop();
  }
}

export async function main(argv: string[]): Promise<number> {
  let o;
  try {
    o = parseLaunchArgs(argv);
  } catch (e) {
    if (e instanceof LaunchError) {
      process.stderr.write(`launch: error: ${e.message}\n`);
      return 2;
    }
    throw e;
  }
  if (o === "help") {
    process.stdout.write(LAUNCH_HELP);
    return 0;
  }
  return (await launch(o)).code;
}

/** Whether `host` (a name or an address) is this machine: loopback, the unspecified address, or an interface's; null when
 *  the name does not resolve. */
async function isThisMachine(host: string): Promise<boolean | null> {
  let addresses: string[];
  try {
    addresses = (await dns.lookup(host, { all: true })).map((a) => a.address);
  } catch {
    return null; // no such name
  }
  const own = new Set(Object.values(os.networkInterfaces()).flatMap((list) => (list ?? []).map((i) => i.address)));
  return addresses.some((a) => a.startsWith("127.") || a === "::1" || a === "0.0.0.0" || a === "::" || own.has(a));
}
