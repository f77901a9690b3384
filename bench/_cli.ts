/**
 * What the benches share (not a bench itself: bench/index.ts skips files whose name starts with `_`): each bench
 * exports a `usage` (what it measures, its options with their defaults) that `npm run bench -- <name> --help` prints
 * without running anything, and reads its options through `parseOptions(...)`, which takes the defaults from that same
 * `usage`, so the help and the behaviour cannot disagree. Also: where the diffusers reference venv is.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

export interface BenchOption {
  /** The flag, e.g. "--steps". */
  flag: string;
  /** Its value's placeholder, e.g. "N"; absent for a switch (present or not). */
  value?: string;
  /** The default: a number or a string is what `parseOptions().num/str` return when the flag is absent; a description
   *  (e.g. "by resolution") is only shown. */
  default?: number | string;
  help: string;
}

export interface BenchUsage {
  /** One line: what the bench measures. */
  summary: string;
  /** Positional arguments, e.g. "[config ...]". */
  positional?: string;
  options: BenchOption[];
  /** Environment variables it reads, as "NAME: what". */
  env?: string[];
  /** Further lines (what the positional arguments can be, …). */
  notes?: string[];
}

export const wantsHelp = (args: string[]) => args.includes("--help") || args.includes("-h");

export function formatUsage(name: string, u: BenchUsage): string {
  const rows: [string, string][] = u.options.map((o) => [
    `${o.flag}${o.value ? ` ${o.value}` : ""}`,
    `${o.help}${o.default !== undefined ? ` (default ${o.default})` : ""}`,
  ]);
  rows.push(["-h, --help", "print this and exit"]);
  const w = Math.max(...rows.map(([l]) => l.length));
  return [
    `usage: npm run bench -- ${name}${u.positional ? ` ${u.positional}` : ""} [options]`,
    "",
    `  ${u.summary}`,
    "",
    "options:",
    ...rows.map(([l, r]) => `  ${l.padEnd(w)}  ${r}`),
    ...(u.env?.length ? ["", "environment:", ...u.env.map((e) => `  ${e}`)] : []),
    ...(u.notes?.length ? ["", ...u.notes] : []),
    "",
    "Progress lines first; the last line printed is one JSON object with the results.",
  ].join("\n");
}

/** The bench's options from `args`, absent ones from `usage`'s defaults; a missing or non-numeric value throws. */
export function parseOptions(bench: string, args: string[], usage: BenchUsage) {
  const spec = (flag: string) => {
    const o = usage.options.find((x) => x.flag === flag);
    if (!o) throw new Error(`bench ${bench}: ${flag} is not in its usage`);
    return o;
  };
  const value = (flag: string): string | number | undefined => {
    const o = spec(flag);
    const i = args.lastIndexOf(flag);
    if (i < 0) return o.default;
    const v = args[i + 1];
    if (v === undefined || v.startsWith("--")) throw new Error(`bench ${bench}: ${flag} needs a value (${o.value ?? "?"})`);
    return v;
  };
  return {
    /** True when the flag was given. */
    has(flag: string): boolean {
      spec(flag);
      return args.includes(flag);
    },
    num(flag: string): number {
      const v = value(flag);
      const n = Number(v);
      if (v === undefined || v === "" || !Number.isFinite(n)) throw new Error(`bench ${bench}: ${flag} needs a number, got '${v ?? ""}'`);
      return n;
    },
    str(flag: string): string {
      const v = value(flag);
      if (v === undefined) throw new Error(`bench ${bench}: ${flag} has no default`);
      return String(v);
    },
  };
}

const root = path.resolve(import.meta.dirname, "..");

/** Where the diffusers reference venv is: $CONTROLNET_TS_REFERENCE_VENV, else tests/reference/.venv. */
export const REFERENCE_VENV_ENV = "CONTROLNET_TS_REFERENCE_VENV";
export const REFERENCE_VENV_HELP = `${REFERENCE_VENV_ENV}: the diffusers reference venv (default tests/reference/.venv, made by bash tests/reference/setup.sh); the reference is marked missing when it has no bin/python`;

export function referencePython(): string {
  const venv = process.env[REFERENCE_VENV_ENV] || path.join(root, "tests/reference/.venv");
  return path.join(path.resolve(root, venv), "bin", "python");
}

export const noVenv = (py: string) => `reference missing: no venv at ${py} (bash tests/reference/setup.sh, or set ${REFERENCE_VENV_ENV})`;

/**
 * This machine's CPU as a comparison of speeds depends on it: the model name, /proc/cpuinfo's family and model numbers,
 * and the vector extensions kernels dispatch on (torch runs AVX-512 kernels where they exist; our fused kernels are
 * AVX2 + FMA). Figures from two machines are not one comparison.
 */
export function cpuDescription(): string {
  let info = "";
  try {
    info = fs.readFileSync("/proc/cpuinfo", "utf8").split("\n\n")[0] ?? "";
  } catch { /* not Linux */ }
  const field = (name: string) => new RegExp(`^${name}\\s*:\\s*(.*)$`, "m").exec(info)?.[1]?.trim();
  const flags = new Set((field("flags") ?? "").split(/\s+/));
  const isa = ["avx2", "fma", "avx512f", "amx_tile"].filter((f) => flags.has(f)).join(" ");
  const model = field("model");
  return `${field("model name") ?? os.cpus()[0]?.model ?? "unknown CPU"}${model ? ` (family ${field("cpu family")} model ${model}${isa ? `; ${isa}` : ""})` : ""}, ${os.availableParallelism()} CPUs`;
}

/** The median as the benches report it: the upper middle of an even count. */
export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}
