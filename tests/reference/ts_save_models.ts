/**
 * Writes model folders with OUR TypeScript code for tests/reference/check_roundtrip.sh: the sd_tiny UNet, VAE and
 * text encoder loaded and re-saved, and a fresh ControlNetModel.fromUnet (its random conditioning embedding and
 * zero convs exist only in TS), each next to `expected.safetensors`, the state dict TS had in memory (PyTorch
 * layout). Python then opens every folder with from_pretrained and compares (make_fixtures.py --check-ts-output).
 *
 *   npx tsx tests/reference/ts_save_models.ts <outDir>
 */
import fs from "node:fs";
import path from "node:path";
import { initEngine } from "../../lib/engine/index.js";
import { writeSafetensors } from "../../lib/io/safetensors.js";
import { AutoencoderKL, CLIPTextModel, ControlNetModel, UNet2DConditionModel } from "../../lib/models/index.js";

const out = process.argv[2];
if (!out) throw new Error("usage: ts_save_models.ts <outDir>");
const SD = path.join(import.meta.dirname, "..", "fixtures", "sd_tiny");

await initEngine({ backend: process.env.CONTROLNET_TS_BACKEND ?? "wasm" });
const unet = UNet2DConditionModel.fromPretrained(path.join(SD, "unet"));
const models = {
  unet,
  controlnet: ControlNetModel.fromUnet(unet, { conditioningEmbeddingOutChannels: [16, 32], seed: 7 }),
  vae: AutoencoderKL.fromPretrained(path.join(SD, "vae")),
  text_encoder: CLIPTextModel.fromPretrained(path.join(SD, "text_encoder")),
};
for (const [name, model] of Object.entries(models)) {
  const dir = path.join(out, name);
  fs.rmSync(dir, { recursive: true, force: true });
  model.savePretrained(dir);
  writeSafetensors(path.join(out, `${name}.expected.safetensors`), model.stateDict());
  console.log(`saved ${dir}`);
}
