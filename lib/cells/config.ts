/**
 * writeBasicConfig(): the `accelerate config default` / `write_basic_config()` moment. Initialises the engine,
 * records what runs and why better engines do not, the device memory budget (GPU memory, or the 4 GiB wasm heap)
 * and host memory, and where outputs go; writes it as JSON and shows it as a table.
 */
import fs from "node:fs";
import path from "node:path";
import { hostMemoryLimit, initEngine, type EngineOptions } from "../engine/index.js";
import { JUPYTER_DISPLAY } from "./display.js";
import { makeDirs } from "../io/dirs.js";

export interface BasicConfig {
  engine: string;
  tfjsVersion: string;
  threads: number;
  unavailable: { backend: string; reason: string }[];
  deviceMemoryBytes: number | null;
  hostMemoryBytes: number;
  outputDir: string;
  configFile: string;
  mixedPrecision: "no";
  note: string;
}

const escapeHtml = (s: string) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const gib = (b: number | null) => (b == null ? "n/a" : `${(b / 1024 ** 3).toFixed(1)} GiB`);

export interface WriteBasicConfigOptions extends EngineOptions {
  /** Default ./outputs. */
  outputDir?: string;
  /** Default <outputDir>/controlnet-ts-config.json. */
  configFile?: string;
}

/**
 * The returned object renders as a table in Jupyter (a `Symbol.for("Jupyter.display")` method, kept out of the type so
 * notebook cells can export the value without naming the symbol).
 */
export async function writeBasicConfig(opts: WriteBasicConfigOptions = {}): Promise<BasicConfig> {
  const info = await initEngine(opts);
  const outputDir = path.resolve(opts.outputDir ?? "outputs");
  const configFile = path.resolve(opts.configFile ?? path.join(outputDir, "controlnet-ts-config.json"));
  const cfg: BasicConfig = {
    engine: info.backend,
    tfjsVersion: info.tfjsVersion,
    threads: info.threads,
    unavailable: info.unavailable,
    deviceMemoryBytes: info.deviceMemoryLimit,
    hostMemoryBytes: hostMemoryLimit(),
    outputDir,
    configFile,
    mixedPrecision: "no",
    note: "tfjs has no fp16/bf16: training runs in fp32; memory savings come from gradient checkpointing, chunked attention, 8-bit Adam and offload.",
  };
  makeDirs(path.dirname(configFile));
  fs.writeFileSync(configFile, JSON.stringify(cfg, null, 2) + "\n");
  const rows: [string, string][] = [
    ["engine", `${cfg.engine} (tfjs ${cfg.tfjsVersion}, ${cfg.threads} thread(s))`],
    ...cfg.unavailable.map((u): [string, string] => [`${u.backend} unavailable`, u.reason]),
    ["device memory", deviceMemoryText(cfg)],
    ["host memory", gib(cfg.hostMemoryBytes)],
    ["mixed precision", "no (fp32 only in tfjs)"],
    ["output dir", cfg.outputDir],
    ["config file", cfg.configFile],
  ];
  Object.defineProperty(cfg, JUPYTER_DISPLAY, {
    enumerable: false,
    value: () => ({
      "text/plain": rows.map(([k, v]) => `${k.padEnd(22)} ${v}`).join("\n"),
      "text/html": `<table>${rows.map(([k, v]) => `<tr><th style="text-align:left">${escapeHtml(k)}</th><td style="text-align:left">${escapeHtml(v)}</td></tr>`).join("")}</table>`,
    }),
  });
  return cfg;
}

/** What bounds the tensors on each engine: wasm32's heap, the GPU's memory, or (native CPU) the host's. */
function deviceMemoryText(cfg: BasicConfig): string {
  if (cfg.engine === "wasm" && cfg.deviceMemoryBytes) return `${gib(cfg.deviceMemoryBytes)} (wasm32 heap; never shrinks)`;
  if (cfg.engine === "node-gpu") return cfg.deviceMemoryBytes ? `${gib(cfg.deviceMemoryBytes)} (GPU)` : "GPU memory (nvidia-smi unavailable)";
  if (cfg.engine === "node") return "no device limit: tensors live in host memory";
  return "host memory (cpu backend)";
}
