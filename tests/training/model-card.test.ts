/** The model card's images follow the card: an earlier card's images that the new card does not embed go with it. */
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { writeModelCard } from "../../lib/training/model-card.js";
import type { ValidationResult } from "../../lib/training/validation.js";
import { tempDir } from "../helpers.js";

const rgb = (v: number) => ({ data: new Uint8Array(8 * 8 * 3).fill(v), width: 8, height: 8, channels: 3 as const });
const validation = (pairs: number): ValidationResult => ({
  step: 2, fidelity: null, seconds: 0,
  pairs: Array.from({ length: pairs }, (_, i) => ({ image: `c${i}.png`, prompt: `prompt ${i}`, control: rgb(10 * i), samples: [], rgb: [rgb(200)], files: [], fidelity: null })),
});
const card = { repoId: "alice/cn", baseModel: "org/base", training: { data: "d", steps: 2, batchSize: 1, accumulation: 1, learningRate: 1e-5, resolution: 8 } };
const pngs = (dir: string) => fs.readdirSync(dir).filter((f) => f.endsWith(".png")).sort();

test("a later card drops the images of an earlier card of ours that it does not embed; a user's files stay", async () => {
  const dir = tempDir("card-");
  await writeModelCard(dir, { ...card, validation: validation(2) });
  assert.deepEqual(pngs(dir), ["image_control.png", "images_0.png", "images_1.png"]);
  await writeModelCard(dir, { ...card, validation: validation(1) });
  assert.deepEqual(pngs(dir), ["image_control.png", "images_0.png"]);
  await writeModelCard(dir, { ...card, validation: null }); // a run without validation: no images, none left behind
  assert.deepEqual(pngs(dir), []);
  // a README.md of the user's (not our card) names nothing of ours: their images_0.png stays
  fs.writeFileSync(path.join(dir, "README.md"), "# notes\n![a](./images_0.png)\n");
  fs.writeFileSync(path.join(dir, "images_0.png"), "the user's");
  await writeModelCard(dir, { ...card, validation: null });
  assert.equal(fs.readFileSync(path.join(dir, "images_0.png"), "utf8"), "the user's");
  assert.ok(fs.existsSync(path.join(dir, "README.md.orig")));
});

test("the card's metadata is YAML as huggingface_hub dumps it: a base path with ': ' or ' #' is quoted and reads back whole", async () => {
  const { parse } = await import("yaml");
  const dir = tempDir("card-yaml-");
  for (const baseModel of ["/data/my: base #1", "yes", "org/base"]) {
    await writeModelCard(dir, { ...card, baseModel, validation: null });
    const text = fs.readFileSync(path.join(dir, "README.md"), "utf8");
    const meta = parse(text.split("---\n")[1]!, { version: "1.1" }) as Record<string, unknown>;
    assert.equal(meta.base_model, baseModel);
    assert.equal(meta.library_name, "diffusers");
  }
  // a local base: the snippet names its folder, not the training machine's path, and uses what it imports
  await writeModelCard(dir, { ...card, baseModel: "/data/my: base #1", validation: null });
  const text = fs.readFileSync(path.join(dir, "README.md"), "utf8");
  assert.match(text, /StableDiffusionControlNetPipeline\.from_pretrained\("path\/to\/my: base #1", controlnet=controlnet\)/);
  assert.match(text, /UniPCMultistepScheduler\.from_config/);
});
