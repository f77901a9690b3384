/**
 * Scheduler configs the way diffusers' `ConfigMixin.from_config` reads them: keys are diffusers' snake_case names
 * (so a config round-trips to `scheduler_config.json`), keys the class does not know are ignored (a PNDM file's
 * `skip_prk_steps` loads into UniPC), missing keys take the class defaults, keys listed in `_use_default_values`
 * are dropped so the target class's own defaults apply, and `_`-prefixed bookkeeping keys are skipped.
 */
import fs from "node:fs";
import path from "node:path";

export type JsonConfig = Record<string, unknown>;

export interface ExtractedConfig<C> {
  config: C;
  /** Keys present in the source config that this class does not use. */
  ignored: string[];
  /** Keys this class uses that the source did not set (defaults applied). */
  defaulted: string[];
}

/** Merges `source` (+ `overrides`, which win) onto `defaults`, with from_config's rules. */
export function extractInitConfig<C extends object>(
  className: string,
  defaults: C,
  source: JsonConfig,
  overrides: Partial<C> = {},
): ExtractedConfig<C> {
  const useDefaults = new Set(Array.isArray(source._use_default_values) ? (source._use_default_values as string[]) : []);
  const out: Record<string, unknown> = { ...(defaults as Record<string, unknown>) };
  const known = new Set(Object.keys(defaults));
  const ignored: string[] = [];
  const set = new Set<string>();
  for (const [k, v] of Object.entries(source)) {
    if (k.startsWith("_") || useDefaults.has(k)) continue;
    if (!known.has(k)) {
      ignored.push(k);
      continue;
    }
    out[k] = v;
    set.add(k);
  }
  for (const [k, v] of Object.entries(overrides as Record<string, unknown>)) {
    if (v === undefined) continue;
    if (!known.has(k)) throw new Error(`${className}: unknown config option '${k}'`);
    out[k] = v;
    set.add(k);
  }
  for (const k of set) checkType(className, k, out[k], (defaults as Record<string, unknown>)[k]);
  const defaulted = [...known].filter((k) => !set.has(k));
  return { config: out as C, ignored, defaulted };
}

function checkType(className: string, key: string, value: unknown, def: unknown): void {
  if (def === null || def === undefined) return; // nullable option: anything JSON goes (checked where used)
  const want = Array.isArray(def) ? "array" : typeof def;
  const got = value === null ? "null" : Array.isArray(value) ? "array" : typeof value;
  if (want !== got) {
    throw new Error(`${className}: config option '${key}' should be ${want}, got ${got} (${JSON.stringify(value)})`);
  }
}

/**
 * Reads a scheduler config: a `scheduler_config.json` file, a folder holding one, or a pipeline folder with a
 * `scheduler/` subfolder.
 */
export function readSchedulerConfig(location: string): JsonConfig {
  const candidates = [location, path.join(location, "scheduler_config.json"), path.join(location, "scheduler", "scheduler_config.json")];
  for (const c of candidates) {
    if (fs.existsSync(c) && fs.statSync(c).isFile()) {
      const parsed: unknown = JSON.parse(fs.readFileSync(c, "utf8"));
      if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
        throw new Error(`${c}: a scheduler config must be a JSON object`);
      }
      return parsed as JsonConfig;
    }
  }
  throw new Error(`No scheduler_config.json at ${location} (looked for ${candidates.slice(1).join(", ")})`);
}
