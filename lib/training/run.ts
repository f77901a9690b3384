/**
 * `train_controlnet` end to end, from the seed's arguments: base model, ControlNet, dataset, the training loop with
 * TensorBoard + JSON-lines logging, validation every `validation_steps`, the final ControlNet as a diffusers folder with
 * a model card, and `--push_to_hub`. Shared by the CLI and the notebook cells.
 */
import fs from "node:fs";
import path from "node:path";
import { initEngine, describeEngine } from "../engine/index.js";
import { createDataset, type ControlNetDataset } from "../data/index.js";
import { uploadFolder } from "../io/hub.js";
import type { ControlNetModel } from "../models/index.js";
import type { TrainArgs } from "./args.js";
import { loadBaseModel, loadOrCreateControlNet, type BaseModel } from "./base.js";
import { ControlNetTrainer, type StepReport, type TrainResult } from "./trainer.js";
import { TensorBoardWriter } from "./tensorboard.js";
import { runValidation, type ValidationResult } from "./validation.js";
import { suddenConvergenceStep, type ConvergencePoint } from "../eval/fidelity.js";

export interface RunHooks {
  signal?: AbortSignal | null;
  onStep?: (r: StepReport) => void | Promise<void>;
  onValidation?: (v: ValidationResult) => void | Promise<void>;
  log?: (line: string) => void;
  /** Stop at this global step (the cells' `until`). */
  until?: number;
}

export interface TrainingSession {
  base: BaseModel;
  controlnet: ControlNetModel;
  dataset: ControlNetDataset;
  trainer: ControlNetTrainer;
  args: TrainArgs;
}

/**
 * `--dataset_name=synthetic-fill50k[:N]` selects the embedded synthetic fill50k (offline; N rows, default 50,000),
 * generated lazily at `--resolution`.
 */
export function syntheticName(name: string | null | undefined): { count: number } | null {
  const m = /^synthetic(?:-fill50k)?(?::(\d+))?$/.exec(name ?? "");
  return m ? { count: m[1] ? Number(m[1]) : 50_000 } : null;
}

/** Builds everything a run needs (no training yet). */
export async function createSession(args: TrainArgs, log: (l: string) => void = console.log): Promise<TrainingSession> {
  const engine = await initEngine({ allowTf32: args.allow_tf32 });
  log(describeEngine(engine));
  const hub = { revision: args.revision ?? undefined, cacheDir: args.cache_dir ?? undefined };
  const base = await loadBaseModel(args.pretrained_model_name_or_path, { ...hub, variant: args.variant ?? undefined, tokenizerName: args.tokenizer_name });
  const controlnet = await loadOrCreateControlNet(base, args.controlnet_model_name_or_path, { ...hub, seed: args.seed ?? 1 });
  const synthetic = syntheticName(args.dataset_name);
  const dataset = await createDataset({
    ...(synthetic ? { synthetic: { count: synthetic.count, seed: args.seed ?? 0 } } : { dataset_name: args.dataset_name ?? undefined }),
    train_data_dir: synthetic ? undefined : args.train_data_dir ?? undefined,
    image_column: args.image_column, conditioning_image_column: args.conditioning_image_column, caption_column: args.caption_column,
    max_train_samples: args.max_train_samples, resolution: args.resolution, seed: args.seed,
    proportion_empty_prompts: args.proportion_empty_prompts, hub,
  });
  log(`dataset: ${dataset.description}`);
  const maxLen = base.tokenizer.modelMaxLength;
  const trainer = new ControlNetTrainer({
    unet: base.unet, controlnet, vae: base.vae, textEncoder: base.textEncoder, noiseScheduler: base.noiseScheduler,
    tokenize: (texts) => base.tokenizer.tokenize(texts, maxLen),
  }, dataset, {
    ...args,
    seed: args.seed,
    attention_chunk_size: args.enable_xformers_memory_efficient_attention ? 1024 : 0,
    logging_dir: path.join(args.output_dir, args.logging_dir),
  });
  return { base, controlnet, dataset, trainer, args };
}

/** Trains a session (continuing where it is) with logging and validation. */
export async function trainSession(s: TrainingSession, hooks: RunHooks = {}): Promise<TrainResult> {
  const { args, trainer } = s;
  const log = hooks.log ?? console.log;
  const tb = args.report_to === "tensorboard" || args.report_to === "all" ? new TensorBoardWriter(path.join(args.output_dir, args.logging_dir)) : null;
  const validation = args.validation_image && args.validation_prompt ? { images: args.validation_image, prompts: args.validation_prompt } : null;
  // fill50k-style validation pairs are scored (lib/eval/fidelity.ts); the step where the score jumps is reported
  const fidelityHistory: ConvergencePoint[] = [];
  let jumpReported = false;
  try {
    return await trainer.train({
      signal: hooks.signal ?? undefined,
      until: hooks.until,
      onStep: async (r) => {
        tb?.addScalars({ loss: r.loss, lr: r.lr }, r.step);
        await hooks.onStep?.(r);
      },
      onCheckpoint: (dir) => log(`Saved state to ${dir}`),
      validationSteps: validation ? args.validation_steps : undefined,
      onValidation: async (step) => {
        const v = await runValidation(s.base, s.controlnet, {
          ...validation!, numImages: args.num_validation_images, seed: args.seed ?? 0, step, resolution: args.resolution,
          dir: path.join(args.output_dir, "validation"), signal: hooks.signal ?? undefined,
        });
        if (tb) {
          for (const [i, p] of v.pairs.entries()) {
            const first = p.rgb[0];
            if (!first) continue;
            await tb.addImages(`validation/${i}: ${p.prompt}`, p.rgb.map((im) => im.data), first.width, first.height, 3, step); // the pipeline returns RGB
          }
        }
        log(`validation at step ${step}: ${v.pairs.length} pair(s) in ${v.seconds.toFixed(1)} s → ${path.join(args.output_dir, "validation")}`);
        if (v.fidelity) {
          tb?.addScalars({ "validation/fidelity_iou": v.fidelity.iou, "validation/fidelity_color": v.fidelity.colorScore }, step);
          log(`control fidelity at step ${step}: IoU ${v.fidelity.iou.toFixed(3)}, colour ${v.fidelity.colorScore.toFixed(3)} (${v.fidelity.count} samples)`);
          fidelityHistory.push({ step, iou: v.fidelity.iou });
          const jump = suddenConvergenceStep(fidelityHistory);
          if (jump !== null && !jumpReported) {
            jumpReported = true;
            log(`control fidelity jumped at step ${jump} (the "sudden convergence": IoU ${fidelityHistory[0]!.iou.toFixed(3)} at step ${fidelityHistory[0]!.step} → ${v.fidelity.iou.toFixed(3)})`);
          }
        }
        await hooks.onValidation?.(v);
      },
    });
  } finally {
    tb?.close();
  }
}

/** Saves the final ControlNet into output_dir with a model card (diffusers' train_controlnet writes README.md). */
export function saveFinal(s: TrainingSession): void {
  s.trainer.saveFinal();
  const a = s.args;
  const card = [
    "---", "license: creativeml-openrail-m", `base_model: ${a.pretrained_model_name_or_path}`,
    "tags:", "- stable-diffusion", "- controlnet", "- diffusers", "- controlnet-ts", "inference: true", "---", "",
    `# controlnet-${path.basename(path.resolve(a.output_dir))}`, "",
    `ControlNet weights trained on ${a.pretrained_model_name_or_path} with controlnet-ts (TensorFlow.js), ` +
      `dataset: ${a.dataset_name ?? a.train_data_dir ?? "synthetic fill50k"}, ${s.trainer.globalStep} steps, ` +
      `batch ${a.train_batch_size}, learning rate ${a.learning_rate}, resolution ${a.resolution}.`,
    "", "Load it in Python:", "", "```python", "from diffusers import ControlNetModel",
    `controlnet = ControlNetModel.from_pretrained("${a.hub_model_id ?? a.output_dir}")`, "```", "",
    ...(fs.existsSync(path.join(a.output_dir, "validation"))
      ? ["Validation images are in `validation/`.", ""] : []),
  ].join("\n");
  fs.writeFileSync(path.join(a.output_dir, "README.md"), card);
}

/** --push_to_hub: uploads output_dir (without checkpoints and logs). The token comes from --hub_token or HF_TOKEN. */
export async function pushToHub(s: TrainingSession, opts: { hubUrl?: string } = {}): Promise<string> {
  const a = s.args;
  const repo = a.hub_model_id ?? path.basename(path.resolve(a.output_dir));
  const { url } = await uploadFolder(repo, a.output_dir, {
    token: a.hub_token ?? undefined, hubUrl: opts.hubUrl, ignorePatterns: ["step_*", "epoch_*", "checkpoint-*", "checkpoint-*/**", `${a.logging_dir}/**`],
    commitMessage: "End of training",
  });
  return url;
}

/** The whole script: train to max_train_steps, save, push. Returns the exit code. */
export async function trainControlNet(args: TrainArgs, hooks: RunHooks = {}): Promise<TrainResult> {
  const log = hooks.log ?? console.log;
  const s = await createSession(args, log);
  try {
    const r = await trainSession(s, hooks);
    if (r.stopped === "interrupted") {
      const dir = await s.trainer.checkpoint();
      log(`Interrupted at step ${r.globalStep}; state saved to ${dir}. Re-run with --resume_from_checkpoint=latest to continue.`);
      return r;
    }
    saveFinal(s);
    log(`Saved the ControlNet to ${args.output_dir}`);
    if (args.push_to_hub) log(`Pushed to ${await pushToHub(s)}`);
    return r;
  } finally {
    await s.trainer.close();
  }
}
