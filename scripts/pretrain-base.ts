/**
 * `npm run pretrain-base [-- --out data/tiny-sd --seed 1234 --vae-steps N --unet-steps N --vae-init DIR --unet-init DIR]`: trains the tiny Stable
 * Diffusion of data/tiny-sd with data/recipes/tiny-sd.ts (see its model card for the measured time).
 */
import { scriptArgs } from "./_cli.js";
import { initEngine, describeEngine } from "../lib/engine/index.js";
import { pretrainTinySd, TINY_SD_RECIPE } from "../data/recipes/tiny-sd.js";

const USAGE = `usage: npm run pretrain-base -- [options]

  Trains the tiny Stable Diffusion of data/tiny-sd with data/recipes/tiny-sd.ts (hours of CPU; its model card gives
  the measured time). Options override the recipe's values:

  --out DIR (default data/tiny-sd), --seed N, --budget-minutes M, --save-every N,
  --vae-steps N, --vae-lr LR, --vae-loss mse|l1+mse, --vae-share S, --vae-train …, --vae-anchor …, --vae DIR, --vae-init DIR,
  --unet-steps N, --unet-lr LR, --unet-batch N, --unet-init DIR, --pool-size N,
  --train-text-encoder, --text-encoder-init DIR
  -h, --help: print this and exit`;

const values = scriptArgs(USAGE, {
    out: { type: "string", default: "data/tiny-sd" },
    seed: { type: "string" },
    "vae-steps": { type: "string" },
    "unet-steps": { type: "string" },
    "pool-size": { type: "string" },
    "unet-lr": { type: "string" },
    "unet-batch": { type: "string" },
    "budget-minutes": { type: "string" },
    "vae-share": { type: "string" },
    vae: { type: "string" },
    "vae-init": { type: "string" },
    "unet-init": { type: "string" },
    "vae-loss": { type: "string" },
    "vae-lr": { type: "string" },
    "vae-train": { type: "string" },
    "vae-anchor": { type: "string" },
    "save-every": { type: "string" },
    "train-text-encoder": { type: "boolean", default: false },
    "text-encoder-init": { type: "string" },
});
const num = (v: string | undefined, d: number) => (v === undefined ? d : Number(v));
const vaeLoss = values["vae-loss"] ?? TINY_SD_RECIPE.vaeLoss;
if (vaeLoss !== "mse" && vaeLoss !== "l1+mse") throw new Error(`--vae-loss must be "mse" or "l1+mse" (got "${vaeLoss}")`);
const vaeTrain = values["vae-train"] ?? "all";
if (vaeTrain !== "all" && vaeTrain !== "decoder") throw new Error(`--vae-train must be "all" or "decoder" (got "${vaeTrain}")`);
const info = await initEngine();
console.log(describeEngine(info));
await pretrainTinySd({
  ...TINY_SD_RECIPE,
  outDir: values.out!,
  seed: num(values.seed, TINY_SD_RECIPE.seed),
  vaeSteps: num(values["vae-steps"], TINY_SD_RECIPE.vaeSteps),
  unetSteps: num(values["unet-steps"], TINY_SD_RECIPE.unetSteps),
  poolSize: num(values["pool-size"], TINY_SD_RECIPE.poolSize),
  unetLr: num(values["unet-lr"], TINY_SD_RECIPE.unetLr),
  unetBatch: num(values["unet-batch"], TINY_SD_RECIPE.unetBatch),
  vaeShare: num(values["vae-share"], 0.3),
  vaeDir: values.vae ?? null,
  vaeInitDir: values["vae-init"] ?? null,
  unetInitDir: values["unet-init"] ?? null,
  vaeLoss,
  vaeTrain,
  vaeAnchor: values["vae-anchor"] === undefined ? undefined : Number(values["vae-anchor"]),
  trainTextEncoder: values["train-text-encoder"],
  textEncoderInitDir: values["text-encoder-init"] ?? null,
  saveEvery: values["save-every"] === undefined ? null : Number(values["save-every"]),
  vaeLr: num(values["vae-lr"], TINY_SD_RECIPE.vaeLr),
  budgetSeconds: values["budget-minutes"] === undefined ? null : Number(values["budget-minutes"]) * 60,
});
