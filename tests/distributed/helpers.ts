/** Shared by the data-parallel tests: runs `controlnet-ts launch` / `train_controlnet` on the tiny fixture pipeline. */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { nativeDir } from "../../lib/engine/native/install-status.js";
import { collectiveAddonPath, collectiveMissingReason } from "../../lib/training/collective.js";
import { loadModelFolder } from "../../lib/io/diffusers.js";

export const root = path.resolve(import.meta.dirname, "../..");
export const bin = path.join(root, "bin", "controlnet-ts.js");

let checked: string | false | null = null;

/**
 * The tests need TensorFlow's collective ops. Where TensorFlow's libraries are installed (.native/tensorflow) but the
 * addon is not built yet, it is built here (a build failure fails the tests); only without TensorFlow's libraries
 * are they skipped, saying so.
 */
export function skipReason(): string | false {
  if (checked !== null) return checked;
  let missing = collectiveMissingReason();
  const tfDir = path.join(nativeDir(), "tensorflow");
  if (missing && !process.env.CONTROLNET_TS_COLLECTIVE_ADDON && fs.existsSync(path.join(tfDir, "lib", "libtensorflow_cc.so.2"))) {
    const r = spawnSync(process.execPath, [path.join(root, "scripts/native/build-collective.mjs"), "--include", path.join(tfDir, "include"),
      "--lib", path.join(tfDir, "lib"), "--out", collectiveAddonPath()], { encoding: "utf8" });
    if (r.status !== 0) throw new Error(`TensorFlow is installed in ${tfDir} but the collective addon does not build:\n${r.stderr}`);
    missing = collectiveMissingReason();
  }
  checked = missing ? `skipped: ${missing}` : false;
  if (checked) process.stdout.write(`tests/distributed: ${checked}\n`);
  return checked;
}

export const env = { ...process.env, CONTROLNET_TS_THREADS: "1", TF_CPP_MIN_LOG_LEVEL: "3" };

export function trainFlags(out: string, extra: string[] = []): string[] {
  return [
    "--pretrained_model_name_or_path", path.join(root, "tests/fixtures/sd_tiny"), `--output_dir=${out}`,
    "--dataset_name=synthetic-fill50k:16", "--resolution=32", "--learning_rate=1e-4", "--seed=1", ...extra,
  ];
}

export interface Run { code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string; child: ChildProcess }

/** Spawns the CLI; `done` settles when it exits. */
export function start(args: string[], extraEnv: Record<string, string> = {}): { child: ChildProcess; done: Promise<Run>; output: () => string } {
  const child = spawn(process.execPath, [bin, ...args], { cwd: root, env: { ...env, ...extraEnv }, stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout!.on("data", (d) => (stdout += d));
  child.stderr!.on("data", (d) => (stderr += d));
  const done = new Promise<Run>((resolve) => child.on("exit", (code, signal) => resolve({ code, signal, stdout, stderr, child })));
  return { child, done, output: () => stdout + stderr };
}

export async function waitFor(cond: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function free(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once("error", () => resolve(false));
    s.listen({ port, host: "0.0.0.0", exclusive: true }, () => s.close(() => resolve(true)));
  });
}

/** A base port with `count` free ports after it (random, so parallel test files and other jobs do not collide). */
export async function freePorts(count: number): Promise<number> {
  for (;;) {
    const base = 20000 + Math.floor(Math.random() * 20000);
    let ok = true;
    for (let i = 0; i < count && ok; i++) ok = await free(base + i);
    if (ok) return base;
  }
}

/** Largest absolute difference between two saved ControlNets' weights. */
export function maxWeightDiff(dirA: string, dirB: string): { max: number; tensors: number } {
  const a = loadModelFolder(dirA).tensors;
  const b = loadModelFolder(dirB).tensors;
  if (a.size !== b.size) throw new Error(`${dirA} has ${a.size} tensors, ${dirB} ${b.size}`);
  let max = 0;
  for (const [k, t] of a) {
    const x = t.data, y = b.get(k)!.data;
    for (let i = 0; i < x.length; i++) max = Math.max(max, Math.abs(x[i]! - y[i]!));
  }
  return { max, tensors: a.size };
}
