/**
 * Kernelspec installer, no Python needed: writes `kernels/<name>/kernel.json` and the logos into a Jupyter data
 * directory, exactly where `jupyter kernelspec install` would put them.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

export interface InstallOptions {
  /** Where: the user's Jupyter data dir (default), `<prefix>/share/jupyter`, or the active venv/conda env. */
  location?: { kind: "user" } | { kind: "prefix"; prefix: string } | { kind: "sys-prefix" };
  name?: string;
  displayName?: string;
  /** Extra environment for the kernel process. */
  env?: Record<string, string>;
}

export interface KernelSpec {
  argv: string[];
  display_name: string;
  language: string;
  interrupt_mode: "signal" | "message";
  env: Record<string, string>;
  metadata: Record<string, unknown>;
}

export const DEFAULT_KERNEL_NAME = "controlnet-ts";
export const DEFAULT_DISPLAY_NAME = "TypeScript (controlnet-ts)";

const here = path.dirname(fileURLToPath(import.meta.url));
/** The package's CLI entry (bin/controlnet-ts.js), from kernel/ or from dist/kernel/. */
function binPath(): string {
  for (const up of ["..", "../.."]) {
    const p = path.resolve(here, up, "bin", "controlnet-ts.js");
    if (fs.existsSync(p)) return p;
  }
  throw new Error("bin/controlnet-ts.js not found next to the kernel");
}

/** kernel/assets, also when running from dist/kernel/ (tsc does not copy the PNGs). */
function assetsDir(): string {
  const candidates = [path.join(here, "assets"), path.resolve(here, "..", "..", "kernel", "assets")];
  return candidates.find((d) => fs.existsSync(d)) ?? candidates[0]!;
}

/** The user-level Jupyter data directory, as jupyter_core computes it. */
export function userDataDir(): string {
  if (process.env.JUPYTER_DATA_DIR) return process.env.JUPYTER_DATA_DIR;
  const home = os.homedir();
  if (process.platform === "darwin") return path.join(home, "Library", "Jupyter");
  if (process.platform === "win32") return path.join(process.env.APPDATA ?? path.join(home, "AppData", "Roaming"), "jupyter");
  return path.join(process.env.XDG_DATA_HOME || path.join(home, ".local", "share"), "jupyter");
}

export function kernelsDir(location: InstallOptions["location"] = { kind: "user" }): string {
  switch (location.kind) {
    case "user":
      return path.join(userDataDir(), "kernels");
    case "prefix":
      return path.join(path.resolve(location.prefix), "share", "jupyter", "kernels");
    case "sys-prefix": {
      const prefix = process.env.VIRTUAL_ENV || process.env.CONDA_PREFIX;
      if (!prefix) throw new Error("--sys-prefix needs an active virtualenv or conda env (VIRTUAL_ENV / CONDA_PREFIX); use --prefix <dir> instead");
      return path.join(prefix, "share", "jupyter", "kernels");
    }
  }
}

export function kernelSpec(opts: Pick<InstallOptions, "displayName" | "env"> = {}): KernelSpec {
  return {
    argv: [process.execPath, binPath(), "kernel", "run", "--connection-file", "{connection_file}"],
    display_name: opts.displayName ?? DEFAULT_DISPLAY_NAME,
    language: "typescript",
    interrupt_mode: "signal",
    // Quietens TensorFlow's own logging on the native engine (lib/engine/native sets the same default).
    env: { TF_CPP_MIN_LOG_LEVEL: "2", ...opts.env },
    metadata: { debugger: false },
  };
}

/**
 * mkdir -p, one level at a time: Node's recursive mkdirSync spins forever on some paths it cannot create (under
 * /proc), where this fails at once with the first level's error.
 */
function makeDir(dir: string): void {
  const missing: string[] = [];
  for (let d = path.resolve(dir); !fs.existsSync(d) && d !== path.dirname(d); d = path.dirname(d)) missing.unshift(d);
  for (const d of missing) {
    try {
      fs.mkdirSync(d);
    } catch (e) {
      // made meanwhile by someone else: fine if it is a folder
      if ((e as NodeJS.ErrnoException).code !== "EEXIST" || !fs.statSync(d).isDirectory()) throw e;
    }
  }
}

/** Installs (or overwrites) the kernelspec; returns its directory. */
export function installKernel(opts: InstallOptions = {}): string {
  const name = opts.name ?? DEFAULT_KERNEL_NAME;
  if (!/^[a-zA-Z0-9._-]+$/.test(name)) throw new Error(`invalid kernel name ${JSON.stringify(name)}: use letters, digits, . _ -`);
  const dir = path.join(kernelsDir(opts.location), name.toLowerCase());
  makeDir(dir);
  fs.writeFileSync(path.join(dir, "kernel.json"), JSON.stringify(kernelSpec(opts), null, 2) + "\n");
  for (const size of ["32x32", "64x64"]) {
    fs.copyFileSync(path.join(assetsDir(), `logo-${size}.png`), path.join(dir, `logo-${size}.png`));
  }
  return dir;
}
