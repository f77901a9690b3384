/**
 * A dataset card's `configs:` (README.md's YAML front matter), as `datasets` reads them: which files each config's
 * splits hold. A folder with several configs and none named is refused as `load_dataset` refuses it ("Config name is
 * missing") unless one is marked `default: true`; before, every config's files were concatenated and trained on.
 */
import fs from "node:fs";
import path from "node:path";
import { minimatch } from "minimatch";
import { parse as parseYaml } from "yaml";
import { InputError } from "../../io/input-error.js";

interface CardConfig {
  config_name?: string;
  default?: boolean;
  data_files?: unknown;
}

/** The card's configs, or null when README.md has none (or no front matter). */
export function readCardConfigs(dir: string): CardConfig[] | null {
  const readme = path.join(dir, "README.md");
  if (!fs.existsSync(readme)) return null;
  const m = /^---\r?\n([\s\S]*?)\r?\n---/.exec(fs.readFileSync(readme, "utf8"));
  if (!m) return null;
  let meta: unknown;
  try {
    meta = parseYaml(m[1]!);
  } catch (e) {
    throw new InputError(`${readme}: its YAML front matter does not parse (${(e as Error).message.split("\n")[0]})`);
  }
  const configs = (meta as { configs?: unknown } | null)?.configs;
  return Array.isArray(configs) && configs.length ? (configs as CardConfig[]) : null;
}

/** A config's patterns for `split`: data_files as a string or list (all train), a list of {split, path}, or a map. */
function splitPatterns(dataFiles: unknown, split: string): string[] {
  const list = (v: unknown): string[] => (typeof v === "string" ? [v] : Array.isArray(v) ? v.filter((x): x is string => typeof x === "string") : []);
  if (typeof dataFiles === "string" || (Array.isArray(dataFiles) && dataFiles.every((x) => typeof x === "string"))) return split === "train" ? list(dataFiles) : [];
  if (Array.isArray(dataFiles)) return dataFiles.filter((e) => (e as { split?: unknown })?.split === split).flatMap((e) => list((e as { path?: unknown }).path));
  if (dataFiles && typeof dataFiles === "object") return list((dataFiles as Record<string, unknown>)[split]);
  return [];
}

/**
 * The files (relative to `dir`, matched among `files`) of `split` in the card's config `config` (or its default), or
 * null when the card declares no configs. Throws when the config is not there, or several are and none is chosen.
 */
export function cardConfigFiles(dir: string, files: readonly string[], split: string, config?: string): string[] | null {
  const configs = readCardConfigs(dir);
  if (!configs) return null;
  const names = configs.map((c) => c.config_name ?? "default");
  let chosen: CardConfig | undefined;
  if (config) {
    chosen = configs.find((c) => (c.config_name ?? "default") === config);
    if (!chosen) throw new InputError(`dataset_config_name '${config}' is not a config of ${dir} (its card lists ${names.join(", ")})`);
  } else {
    chosen = configs.find((c) => c.default === true) ?? (configs.length === 1 ? configs[0] : undefined);
    if (!chosen) throw new InputError(`${dir} has several configs (${names.join(", ")}) and none is the default: pick one with --dataset_config_name (as load_dataset asks)`);
  }
  const patterns = splitPatterns(chosen.data_files, split);
  const rel = files.map((f) => path.relative(dir, f).replace(/\\/g, "/"));
  return files.filter((_, i) => patterns.some((p) => minimatch(rel[i]!, p) || minimatch(rel[i]!, `${p.replace(/\/$/, "")}/**`)));
}
