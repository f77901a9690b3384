/**
 * `controlnet-ts kernel <install|run>`: the kernel's command line (dispatched to by bin/controlnet-ts.js).
 */
import { DEFAULT_DISPLAY_NAME, DEFAULT_KERNEL_NAME, installKernel, type InstallOptions } from "./install.js";

export const USAGE = `usage:
  controlnet-ts kernel install [--user | --prefix <dir> | --sys-prefix] [--name <name>] [--display-name <text>] [--env KEY=VALUE ...]
      Writes the Jupyter kernelspec kernels/<name>/kernel.json (+ logos). Default: --user, name "${DEFAULT_KERNEL_NAME}",
      display name "${DEFAULT_DISPLAY_NAME}".
  controlnet-ts kernel run --connection-file <file>
      Runs the kernel (this is what Jupyter starts, from kernel.json).`;

export class UsageError extends Error {
  override name = "UsageError";
}

/** Parses `--flag value` / `--flag=value` / boolean flags; unknown flags are an error. */
export function parseFlags(args: string[], spec: Record<string, "string" | "boolean" | "multi">): Record<string, string | boolean | string[]> {
  const out: Record<string, string | boolean | string[]> = {};
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (!arg.startsWith("--")) throw new UsageError(`unexpected argument ${JSON.stringify(arg)}`);
    const eq = arg.indexOf("=");
    const name = eq > 0 ? arg.slice(2, eq) : arg.slice(2);
    const kind = spec[name];
    if (!kind) throw new UsageError(`unknown option --${name}`);
    if (kind === "boolean") {
      if (eq > 0) throw new UsageError(`--${name} takes no value`);
      out[name] = true;
      continue;
    }
    let value: string | undefined = eq > 0 ? arg.slice(eq + 1) : args[++i];
    if (value === undefined || (eq < 0 && value.startsWith("--"))) throw new UsageError(`--${name} needs a value`);
    if (kind === "multi") out[name] = [...((out[name] as string[] | undefined) ?? []), value];
    else out[name] = value;
  }
  return out;
}

async function install(args: string[]): Promise<void> {
  const f = parseFlags(args, { user: "boolean", prefix: "string", "sys-prefix": "boolean", name: "string", "display-name": "string", env: "multi" });
  const chosen = ["user", "prefix", "sys-prefix"].filter((k) => f[k] !== undefined);
  if (chosen.length > 1) throw new UsageError(`choose one of --user, --prefix, --sys-prefix (got ${chosen.map((c) => "--" + c).join(", ")})`);
  const location: InstallOptions["location"] =
    f.prefix !== undefined ? { kind: "prefix", prefix: f.prefix as string } : f["sys-prefix"] ? { kind: "sys-prefix" } : { kind: "user" };
  const env: Record<string, string> = {};
  for (const kv of (f.env as string[] | undefined) ?? []) {
    const eq = kv.indexOf("=");
    if (eq <= 0) throw new UsageError(`--env expects KEY=VALUE, got ${JSON.stringify(kv)}`);
    env[kv.slice(0, eq)] = kv.slice(eq + 1);
  }
  const dir = installKernel({ location, name: f.name as string | undefined, displayName: f["display-name"] as string | undefined, env });
  process.stdout.write(`Installed kernelspec ${JSON.stringify((f.name as string | undefined) ?? DEFAULT_KERNEL_NAME)} in ${dir}\n`);
}

async function run(args: string[]): Promise<void> {
  const f = parseFlags(args, { "connection-file": "string" });
  if (!f["connection-file"]) throw new UsageError("kernel run needs --connection-file <file>");
  const { runKernel } = await import("./main.js");
  await runKernel(f["connection-file"] as string);
}

/** Entry point used by the bin: returns the exit code (undefined while the kernel keeps running). */
export async function main(args: string[]): Promise<number | undefined> {
  const [sub, ...rest] = args;
  try {
    // `kernel install --help` / `kernel run -h` ask for the usage, as the bare `kernel --help` does
    if (sub !== undefined && rest.some((a) => a === "--help" || a === "-h")) {
      process.stdout.write(USAGE + "\n");
      return 0;
    }
    if (sub === "install") await install(rest);
    else if (sub === "run") await run(rest);
    else if (sub === undefined || sub === "--help" || sub === "-h" || sub === "help") {
      process.stdout.write(USAGE + "\n");
      return sub === undefined ? 2 : 0;
    } else throw new UsageError(`unknown kernel subcommand ${JSON.stringify(sub)}`);
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`controlnet-ts kernel: ${e.message}\n\n${USAGE}\n`);
      return 2;
    }
    // install's own failures (no venv for --sys-prefix, a folder it may not write) are one line, not a stack trace
    if (sub === "install" && e instanceof Error) {
      process.stderr.write(`controlnet-ts kernel install: ${e.message}; nothing was installed\n`);
      return 1;
    }
    throw e;
  }
  return sub === "install" ? 0 : undefined;
}
