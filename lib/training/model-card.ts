/**
 * save_model_card of train_controlnet.py: README.md with huggingface_hub's training-card layout (library_name
 * diffusers, the script's tags, license, base_model) and, when validation ran, `image_control.png` plus per pair
 * `images_<i>.png` (the conditioning image then the samples in one row) embedded in it. The code snippet names the hub
 * repo, never a local path. The command line's run (run.ts) and the cells' save() write it.
 */
import fs from "node:fs";
import path from "node:path";
import { stringify as stringifyYaml } from "yaml";
import { writeFileAtomic } from "../io/diffusers.js";
import { encodePng, makeGrid } from "./tensorboard.js";
import type { ValidationResult } from "./validation.js";

/** How the ControlNet was trained, for the card's "Training details". */
export interface CardTraining {
  /** The dataset, as the user named it. */
  data: string;
  steps: number;
  batchSize: number;
  accumulation: number;
  learningRate: number;
  resolution: number;
}

export interface ModelCardInfo {
  /** The hub repo the card's snippet loads from (the pushed repo, or what it would be named). */
  repoId: string;
  /** The base model's hub id or local folder (pretrained_model_name_or_path). */
  baseModel: string;
  validation?: ValidationResult | null;
  /** null: not trained by this tool (a ControlNet saved as it was made or loaded). */
  training: CardTraining | null;
}

/** What marks a card as ours (a README.md without it is the user's and is kept aside). */
const OURS = "Trained with controlnet-ts";

/** A local folder or a hub id? (a model card's snippet must not point at the trainer's disk) */
function isLocalPath(p: string): boolean {
  return fs.existsSync(p) || path.isAbsolute(p) || /^(\.{1,2}\/|~)/.test(p);
}

function trainingLine(t: CardTraining | null): string {
  if (!t) return `${OURS} (TensorFlow.js): saved without training steps of this tool.`;
  return `${OURS} (TensorFlow.js) on ${t.data}: ${t.steps} steps, batch ${t.batchSize} × ${t.accumulation} accumulation, ` +
    `learning rate ${t.learningRate}, resolution ${t.resolution}.`;
}

/** The steps a card of ours says its ControlNet was trained for; null for no card, or one not ours. */
export function cardTrainedSteps(dir: string): number | null {
  const file = path.join(dir, "README.md");
  if (!fs.existsSync(file)) return null;
  const text = fs.readFileSync(file, "utf8");
  if (!text.includes(OURS)) return null;
  const m = new RegExp(`${OURS} \\(TensorFlow\\.js\\) on .*: (\\d+) steps, batch`).exec(text);
  return m ? Number(m[1]) : 0;
}

/** Writes `dir`/README.md and its images; returns what to tell the user about where it went. */
export async function writeModelCard(dir: string, info: ModelCardInfo): Promise<string> {
  return writeCard(dir, info, info.validation ? await cardImages(dir, info.validation) : "");
}

/** The card without validation images (the cells' save(), which stays synchronous). */
export function writeModelCardSync(dir: string, info: Omit<ModelCardInfo, "validation">): string {
  return writeCard(dir, info, "");
}

/** Writes the validation images the card embeds; returns their markdown. */
async function cardImages(dir: string, validation: ValidationResult): Promise<string> {
  let img = "You can find some example images below.\n\n";
  for (const [i, p] of validation.pairs.entries()) {
    const c = p.control;
    // the script saves every pair's conditioning image under the same name: the last one stays
    writeFileAtomic(path.join(dir, "image_control.png"), (await encodePng(c.data, c.width, c.height, 3)).png);
    const row = [c.data, ...p.rgb.map((im) => im.data)];
    const grid = makeGrid(row, c.width, c.height, 3, row.length, 0);
    writeFileAtomic(path.join(dir, `images_${i}.png`), (await encodePng(grid.pixels, grid.width, grid.height, 3)).png);
    img += `prompt: ${p.prompt}\n![images_${i})](./images_${i}.png)\n`;
  }
  return img;
}

function writeCard(dir: string, info: Omit<ModelCardInfo, "validation">, img: string): string {
  const { repoId, baseModel } = info;
  // a local base is named by its folder: the path on the training machine means nothing where the card is read
  const base = isLocalPath(baseModel) ? `path/to/${path.basename(path.resolve(baseModel))}` : baseModel;
  const baseLine = `pipe = StableDiffusionControlNetPipeline.from_pretrained(${JSON.stringify(base)}, controlnet=controlnet)` +
    (base === baseModel ? "" : "  # the local base model it was trained with") +
    "\npipe.scheduler = UniPCMultistepScheduler.from_config(pipe.scheduler.config)";
  const card = [
    "---",
    // as huggingface_hub's yaml.dump writes it: quoted where YAML would read the value otherwise (`: `, ` #`, `yes`)
    stringifyYaml({ base_model: baseModel }, { singleQuote: true, version: "1.1" }).trimEnd(),
    "library_name: diffusers",
    "license: creativeml-openrail-m",
    // inference before tags, as save_model_card's card comes out: ModelCard.from_template re-reads the rendered
    // metadata, so `inference` is in place before populate_model_card sets the tags (checked with huggingface_hub
    // 2.4; a ModelCardData dumped directly would put tags first)
    "inference: true",
    "tags:",
    ...["stable-diffusion", "stable-diffusion-diffusers", "text-to-image", "diffusers", "controlnet", "diffusers-training"].map((t) => `- ${t}`),
    "---",
    "",
    "<!-- This model card has been generated automatically according to the information the training script had access to. You",
    "should probably proofread and complete it, then remove this comment. -->",
    "",
    "",
    `# controlnet-${repoId}`,
    "",
    `These are controlnet weights trained on ${baseModel} with new type of conditioning.`,
    // the script's model_description ends "{img_str}\n" and the template adds a blank line after it
    img,
    "",
    "",
    "## Intended uses & limitations",
    "",
    "#### How to use",
    "",
    "```python",
    "from diffusers import ControlNetModel, StableDiffusionControlNetPipeline, UniPCMultistepScheduler",
    "",
    `controlnet = ControlNetModel.from_pretrained("${repoId}")`,
    baseLine,
    "```",
    "",
    "#### Limitations and bias",
    "",
    "[TODO: provide examples of latent issues and potential remediations]",
    "",
    "## Training details",
    "",
    trainingLine(info.training),
    "",
  ].join("\n");
  const file = path.join(dir, "README.md");
  const earlier = fs.existsSync(file) && fs.statSync(file).isFile() ? fs.readFileSync(file, "utf8") : "";
  const kept = keepForeignReadme(file);
  writeFileAtomic(file, card);
  // the images an earlier card of ours embedded and this one does not describe another run: they go with it
  // (a later run without validation left images_0.png beside a card that no longer shows it, and pushed it)
  if (earlier.includes(OURS)) {
    const now = new Set(cardImageFiles(card));
    for (const f of cardImageFiles(earlier)) if (!now.has(f)) fs.rmSync(path.join(dir, f), { force: true });
  }
  return kept ? `${file} (the README.md that was there, not a model card of ours, is kept as ${path.basename(kept)})` : file;
}

/** The image files a card of ours embeds: its images_<i>.png, and the image_control.png written with them. */
function cardImageFiles(card: string): string[] {
  const grids = [...card.matchAll(/\]\(\.\/(images_\d+\.png)\)/g)].map((m) => m[1]!);
  return grids.length ? [...grids, "image_control.png"] : [];
}

/** A README.md in output_dir that is not a card this tool wrote (it says "Trained with controlnet-ts") is the user's:
 *  it is moved to README.md.orig (or .orig-2, …) before the card takes its place. Returns where it went, or null. */
function keepForeignReadme(file: string): string | null {
  if (fs.existsSync(file) && !fs.statSync(file).isFile()) throw new Error(`${file} is not a file (a folder?): the card cannot take its place`);
  // (an empty one holds nothing to keep)
  if (!fs.existsSync(file) || fs.statSync(file).size === 0 || fs.readFileSync(file, "utf8").includes(OURS)) return null;
  let to = `${file}.orig`;
  for (let n = 2; fs.existsSync(to); n++) to = `${file}.orig-${n}`;
  fs.renameSync(file, to);
  return to;
}

