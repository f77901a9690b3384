/**
 * Which training run a ControlNet belongs to. A run folder (the trainer's output_dir) holds the checkpoints of ONE
 * model; `controlnet_run.json` in it names that model by how it was made (from_unet of a base with a seed, or a
 * pretrained source), so the name is the same after a kernel restart, when the cell builds an equal model again.
 *
 * The rules (`train()` applies them, and says in one line whenever the folder is not the one asked for):
 *   - the folder asked for is empty, or holds this model's run → train there (resuming its latest checkpoint);
 *   - it holds another model's run (or checkpoints nobody named) → this model gets its own folder, the first of
 *     `<dir>-2`, `<dir>-3`, … that is free or already its own; another model's checkpoint is never loaded.
 */
import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import type { ControlNetModel } from "../models/index.js";
import { listCheckpoints } from "../training/checkpoints.js";
import { makeDirs } from "../io/dirs.js";

export const RUN_FILE = "controlnet_run.json";

/** How a model was made, as recorded in its run folder. */
export interface ModelIdentity {
  /** Stable across kernel restarts: equal models made by equal cells have equal keys. */
  key: string;
  /** For people: "from_unet of data/tiny-sd, seed 1". */
  label: string;
}

const identities = new WeakMap<ControlNetModel, ModelIdentity>();
const runDirs = new WeakMap<ControlNetModel, string>();

/** Called by the controlnet() cell with what made the model. */
export function nameModel(model: ControlNetModel, origin: { base: string; seed: number; embedding?: number[] } | { pretrained: string }): void {
  const emb = "embedding" in origin && origin.embedding ? `, conditioning embedding [${origin.embedding.join(", ")}]` : "";
  const label = "pretrained" in origin ? `pretrained ${origin.pretrained}` : `from_unet of ${origin.base}, seed ${origin.seed}${emb}`;
  const key = "pretrained" in origin ? `pretrained:${origin.pretrained}`
    : `from_unet:${path.resolve(origin.base)}:seed=${origin.seed}${"embedding" in origin && origin.embedding ? `:embedding=${origin.embedding.join(",")}` : ""}`;
  identities.set(model, { key, label });
}

/** The model's identity; a model not made by the controlnet() cell is named by a hash of its weights when first seen. */
export function identityOf(model: ControlNetModel): ModelIdentity {
  let id = identities.get(model);
  if (!id) {
    const h = createHash("sha256");
    if (model.materialized) {
      for (const [name, p] of model.namedParameters()) {
        h.update(name);
        h.update(new Uint8Array((p.variable.dataSync() as Float32Array).buffer));
      }
    }
    const digest = h.digest("hex").slice(0, 16);
    id = { key: `weights:${digest}`, label: `a ControlNet with weights ${digest}` };
    identities.set(model, id);
  }
  return id;
}

/** True when the model's weights were freed (a newer controlnet() cell replaced it). */
export function isDisposed(model: ControlNetModel): boolean {
  return !model.materialized;
}

/** The run folder this model last trained in (validate()'s default output folder), if any. */
export function runDirOf(model: ControlNetModel): string | undefined {
  return runDirs.get(model);
}

interface RunRecord {
  model: string;
  label: string;
}

function readRun(dir: string): RunRecord | null {
  const file = path.join(dir, RUN_FILE);
  if (!fs.existsSync(file)) return null;
  try {
    return JSON.parse(fs.readFileSync(file, "utf8")) as RunRecord;
  } catch {
    return null;
  }
}

function describe(dir: string): string {
  const run = readRun(dir);
  const last = fs.existsSync(dir) ? listCheckpoints(dir).at(-1) : undefined;
  const at = last ? ` at step ${last.step}` : "";
  return run ? `the run of ${run.label}${at}` : `checkpoints of an unnamed run${at}`;
}

export interface RunChoice {
  dir: string;
  /** One line for the cell's output when the folder differs from the one asked for (else null). */
  note: string | null;
}

/** Picks the run folder for `model` starting from `asked` (see the rules above) and records the model there. */
export function chooseRunDir(model: ControlNetModel, asked: string): RunChoice {
  const id = identityOf(model);
  const belongs = (dir: string): "mine" | "free" | "other" => {
    const run = readRun(dir);
    if (run) return run.model === id.key ? "mine" : "other";
    return fs.existsSync(dir) && listCheckpoints(dir).length > 0 ? "other" : "free";
  };
  let dir = asked;
  for (let n = 2; belongs(dir) === "other"; n++) dir = `${asked}-${n}`;
  makeDirs(dir);
  if (!readRun(dir)) fs.writeFileSync(path.join(dir, RUN_FILE), JSON.stringify({ model: id.key, label: id.label }, null, 2) + "\n");
  runDirs.set(model, dir);
  const note = dir === asked ? null
    : `train: ${asked} holds ${describe(asked)}; this ControlNet (${id.label}) is its own run in ${dir}` +
      ` (to continue the other, train the model that made it; to start this one over, delete ${dir}).`;
  return { dir, note };
}
