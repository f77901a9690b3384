/**
 * Where the native engine lives and what its installer (scripts/native/install.mjs) recorded. The installer writes
 * `<package>/.native/status.json` on every run: what was built, or why nothing was and the one command that adds it.
 */
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

export interface NativeInstallStatus {
  ok: boolean;
  /** "cpu": tensorflow-cpu's library; "gpu": tensorflow[and-cuda]'s, which falls back to the CPU without a GPU. */
  flavour?: "cpu" | "gpu";
  tensorflow?: string;
  tfjsNode?: string;
  /** Why the native engine is not installed (when !ok). */
  reason?: string;
  /** The command that installs it. */
  fix?: string;
}

export const INSTALL_NATIVE_COMMAND = "npm run install-native";

/** The package root: the nearest folder above this module whose package.json names controlnet-ts. */
export function packageRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pj = path.join(dir, "package.json");
    if (fs.existsSync(pj) && JSON.parse(fs.readFileSync(pj, "utf8")).name === "controlnet-ts") return dir;
    const up = path.dirname(dir);
    if (up === dir) throw new Error("controlnet-ts: cannot find the package root above lib/engine");
    dir = up;
  }
}

/** `.native/` in the package root; CONTROLNET_TS_NATIVE_DIR points elsewhere (the installer's smoke test uses it). */
export function nativeDir(): string {
  return process.env.CONTROLNET_TS_NATIVE_DIR ? path.resolve(process.env.CONTROLNET_TS_NATIVE_DIR) : path.join(packageRoot(), ".native");
}

export function readInstallStatus(dir = nativeDir()): NativeInstallStatus | null {
  try {
    return JSON.parse(fs.readFileSync(path.join(dir, "status.json"), "utf8")) as NativeInstallStatus;
  } catch {
    return null;
  }
}
