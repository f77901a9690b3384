/**
 * `train_controlnet` end to end, from the seed's arguments, in the script's order: the hub repo created first
 * (`--push_to_hub`), base model, ControlNet, dataset, the training loop with TensorBoard (accelerate's layout, with
 * hparams) + JSON-lines logging, validation every `validation_steps` and once more after the last step, the final
 * ControlNet as a diffusers folder with save_model_card's model card and images, and the upload.
 */
import fs from "node:fs";
import path from "node:path";
import { LOCK_NAME } from "./run-lock.js";
import { initEngine, describeEngine, memoryBudget } from "../engine/index.js";
import { createDataset, type ControlNetDataset } from "../data/index.js";
import { createRepo, parseRepoId, uploadFolder, HubError } from "../io/hub.js";
import type { ControlNetModel } from "../models/index.js";
import { ArgsError, type TrainArgs } from "./args.js";
import { checkSaveTarget } from "../io/diffusers.js";
import { loadBaseModel, loadOrCreateControlNet, type BaseModel } from "./base.js";
import { ControlNetTrainer, configFingerprint, weightsFingerprint, type StepReport, type TrainResult } from "./trainer.js";
import { TensorBoardWriter } from "./tensorboard.js";
import { writeModelCard } from "./model-card.js";
import { planTrackers, resolveLoggingDir, tensorboardDir } from "./trackers.js";
import { TRAIN_ARG_SPECS } from "./args.js";
import { assertNoForeignCheckpoints, enclosingCheckpoint, readTrainingState } from "./checkpoints.js";
import { planRun, PlanRefusedError, PLANNED_ATTENTION_CHUNK, XFORMERS_ATTENTION_CHUNK } from "./plan-run.js";
import { checkValidationImages, runValidation, type ValidationResult } from "./validation.js";
import { generationShortfall } from "../pipeline/memory.js";
import { suddenConvergenceStep, type ConvergencePoint } from "../eval/fidelity.js";
import { checkSameStart, dataParallelFromEnv, processEnv, type ProcessEnv } from "./distributed.js";
import { resolveSeed } from "./seed.js";

export interface RunHooks {
  signal?: AbortSignal | null;
  onStep?: (r: StepReport) => void | Promise<void>;
  /** Every process, when its training loop begins: under launch the group has met (checkSameStart), and a stop from
   *  then on is agreed at a step boundary; before it a process may be waiting for a peer that never comes. */
  onTrainingStart?: () => void;
  onValidation?: (v: ValidationResult) => void | Promise<void>;
  log?: (line: string) => void;
  /** The script's `logger.info` lines, in its logging format (default: `log`). The command line writes them to
   *  stderr, where Python's logging.basicConfig does, and the rest (`accelerator.print`'s, ours) to stdout. */
  info?: (line: string) => void;
  /** Stop at this global step (the cells' `until`). */
  until?: number;
}

export interface TrainingSession {
  base: BaseModel;
  controlnet: ControlNetModel;
  dataset: ControlNetDataset;
  trainer: ControlNetTrainer;
  args: TrainArgs;
  /** What resuming said, for after the "Running training" block (where the script prints it). */
  resumeLines: string[];
}

/**
 * `--dataset_name=synthetic-fill50k[:N]` selects the embedded synthetic fill50k (offline; N rows, default 50,000),
 * generated lazily at `--resolution`.
 */
export function syntheticName(name: string | null | undefined): { count: number } | null {
  const m = /^synthetic(?:-fill50k)?(?::(\d+))?$/.exec(name ?? "");
  return m ? { count: m[1] ? Number(m[1]) : 50_000 } : null;
}

function refuseFileAsOutputDir(dir: string): void {
  if (fs.existsSync(dir) && !fs.statSync(dir).isDirectory()) throw new Error(`--output_dir ${dir} exists and is not a folder; nothing was trained`);
}

/** Builds everything a run needs (no training yet). */
export async function createSession(args: TrainArgs, log: (l: string) => void = console.log, info: (l: string) => void = log): Promise<TrainingSession> {
  // under `controlnet-ts launch`: join the process group first, so a busy port or bad address fails before loading
  const parallel = dataParallelFromEnv();
  if (parallel && !parallel.isMainProcess) log = info = () => {};
  refuseFileAsOutputDir(args.output_dir);
  // a checkpoint's files are checksummed: a run writing its ControlNet there would ruin that checkpoint
  const checkpoint = enclosingCheckpoint(args.output_dir);
  if (checkpoint) {
    throw new ArgsError(`--output_dir ${args.output_dir} is ${path.resolve(args.output_dir) === checkpoint ? "" : "inside "}the training checkpoint ${checkpoint}, ` +
      "whose files are checksummed: writing there would make it unusable. Use a folder of its own; nothing was trained");
  }
  // the final save would refuse a folder holding another model (a base's unet/): say so before training, not after
  checkSaveTarget(args.output_dir, "ControlNetModel");
  // an unset --seed is drawn (or the resumed checkpoint's) once here, then passed on as if given
  const seed = await resolveSeed(args, log, parallel);
  args = { ...args, seed };
  const validationSizes = args.validation_image ? await checkValidationImages(args.validation_image) : [];
  // the rounds' images go to output_dir/validation: a file in its place would stop the run at the first round
  const validationDir = path.join(args.output_dir, "validation");
  if (args.validation_image && fs.existsSync(validationDir) && !fs.statSync(validationDir).isDirectory()) {
    throw new Error(`${validationDir} is a file: validation writes its images in a folder of that name; move it away. Nothing was trained`);
  }
  const engine = await initEngine({ allowTf32: args.allow_tf32 });
  log(describeEngine(engine));
  info(loggerInfo(acceleratorState(engine.backend, processEnv())));
  // --revision is the base model's (the script passes it to the base's components only)
  const hub = { cacheDir: args.cache_dir ?? undefined };
  const base = await loadBaseModel(args.pretrained_model_name_or_path, { ...hub, revision: args.revision ?? undefined, variant: args.variant ?? undefined, tokenizerName: args.tokenizer_name });
  info(loggerInfo(args.controlnet_model_name_or_path ? "Loading existing controlnet weights" : "Initializing controlnet weights from unet"));
  const controlnet = await loadOrCreateControlNet(base, args.controlnet_model_name_or_path, { ...hub, seed });
  // before the dataset, the trainer and step 1: does this run fit the engine's memory? (issue 25 #7)
  let attentionChunk = args.enable_xformers_memory_efficient_attention ? XFORMERS_ATTENTION_CHUNK : 0;
  // the engine's budget: the wasm heap, the GPU's memory on node-gpu, host memory on native CPU
  const budget = process.env.CONTROLNET_TS_IGNORE_PLAN ? null : memoryBudget();
  if (budget === null) log("memory plan: skipped (CONTROLNET_TS_IGNORE_PLAN)");
  else {
    const plan = planRun(args, {
      unet: base.unet.config, vae: base.vae.config, textEncoder: base.textEncoder.config,
      controlnet: { conditioning_embedding_out_channels: controlnet.config.conditioning_embedding_out_channels, conditioning_channels: controlnet.config.conditioning_channels },
      seqLen: base.tokenizer.modelMaxLength,
    }, budget, engine.backend === "wasm");
    log(plan.message);
    refuseValidationBeyond(budget, validationSizes, base, args.num_validation_images);
    if (plan.applied.enable_xformers_memory_efficient_attention && !args.enable_xformers_memory_efficient_attention) attentionChunk = PLANNED_ATTENTION_CHUNK;
    args = { ...args, ...plan.applied };
  }
  const synthetic = syntheticName(args.dataset_name);
  const dataset = await createDataset({
    ...(synthetic ? { synthetic: { count: synthetic.count, seed } } : { dataset_name: args.dataset_name ?? undefined, dataset_config_name: args.dataset_config_name ?? undefined }),
    train_data_dir: synthetic ? undefined : args.train_data_dir ?? undefined,
    image_column: args.image_column, conditioning_image_column: args.conditioning_image_column, caption_column: args.caption_column,
    max_train_samples: args.max_train_samples, resolution: args.resolution, seed,
    proportion_empty_prompts: args.proportion_empty_prompts, hub,
  });
  log(`dataset: ${dataset.description}`);
  if (parallel) log(`data-parallel: ${parallel.worldSize} processes × batch ${args.train_batch_size} (TensorFlow collective all-reduce)`);
  const maxLen = base.tokenizer.modelMaxLength;
  const resumeLines: string[] = [];
  let trainer: ControlNetTrainer;
  try {
    trainer = new ControlNetTrainer({
      unet: base.unet, controlnet, vae: base.vae, textEncoder: base.textEncoder, noiseScheduler: base.noiseScheduler,
      tokenize: (texts) => base.tokenizer.tokenize(texts, maxLen),
    }, dataset, {
      ...args,
      seed,
      attention_chunk_size: attentionChunk,
      // another starting ControlNet is another run (its checkpoints are not this one's to resume or to delete)
      init_weights: initWeightsIdentity(args, controlnet),
      logging_dir: resolveLoggingDir(args.output_dir, args.logging_dir),
    }, parallel, (l) => resumeLines.push(l));
  } catch (e) {
    // what resuming said before it failed (a warning about the checkpoint's arguments) explains the failure
    for (const l of resumeLines) log(l);
    throw e;
  }
  // under launch: every process resumed (or not) on its own; all must start where rank 0 does
  if (parallel) {
    await checkSameStart(parallel, { launch: processEnv()?.launchId ?? "0", step: trainer.globalStep, identity: configFingerprint(trainer.runIdentity), weights: weightsFingerprint(controlnet) });
  }
  return { base, controlnet, dataset, trainer, args, resumeLines };
}

/**
 * The starting ControlNet in the run's identity: the UNet's copy, or a fingerprint of the pretrained weights. Starting
 * from the controlnet/ folder of the very checkpoint being resumed (the notebook's train({ processes }) passes it, so
 * the workers build the cell's architecture, e.g. other conditioning_embedding_out_channels; the resume then loads
 * those weights anyway) is that run going on: it keeps the checkpoint's record.
 */
function initWeightsIdentity(args: TrainArgs, controlnet: ControlNetModel): string | undefined {
  if (!args.controlnet_model_name_or_path) return "unet";
  const from = path.resolve(args.controlnet_model_name_or_path);
  const resume = args.resume_from_checkpoint;
  if (resume && resume !== "latest" && path.basename(from) === "controlnet") {
    // the checkpoint as the script looks it up: its name inside output_dir, then the path as given
    const named = [path.join(args.output_dir, path.basename(resume)), resume].find((p) => fs.existsSync(p));
    if (named && path.resolve(named) === path.dirname(from)) {
      // (none recorded: a notebook's in-process run, whose identity is its model object)
      const recorded = (readTrainingState(named).run as { init_weights?: unknown } | undefined)?.init_weights;
      return typeof recorded === "string" ? recorded : undefined;
    }
  }
  return `pretrained ${weightsFingerprint(controlnet)}`;
}

/** A validation image whose round cannot fit the engine's memory is refused before training, naming it. */
function refuseValidationBeyond(budget: number, sizes: { image: string; width: number; height: number }[], base: BaseModel, images: number): void {
  const m = {
    vaeScaleFactor: base.vae.scaleFactor, unetChannels: base.unet.config.block_out_channels[0]!,
    vaeChannels: base.vae.config.block_out_channels[0]!, unetBatch: 2 * images, // the round's guidance batch
  };
  for (const { image, width, height } of sizes) {
    const shortfall = generationShortfall(width, height, m, budget);
    if (shortfall) {
      throw new PlanRefusedError(`validation image ${image} is ${width}×${height}: validation generates at the image's own size (as the script) ` +
        `and ${shortfall} there. Give a smaller conditioning image (e.g. of the training --resolution) or fewer --num_validation_images. Nothing was trained.`);
    }
  }
}

/**
 * Batches per epoch (each process's, as accelerate's prepared dataloader counts them) and the epochs max_train_steps
 * spans (the script recomputes num_train_epochs).
 */
function epochMath(s: TrainingSession): { batches: number; epochs: number } {
  const batches = Math.ceil(s.dataset.length / s.trainer.globalBatch);
  const updates = Math.ceil(batches / s.args.gradient_accumulation_steps);
  return { batches, epochs: Math.ceil(s.trainer.maxSteps / updates) };
}

/**
 * A line the script writes with `logger.info`: its `logging.basicConfig` format ("%(asctime)s - %(levelname)s -
 * %(name)s - %(message)s", datefmt "%m/%d/%Y %H:%M:%S", local time), so logs of both read and grep alike. The lines
 * it prints with `accelerator.print` (resuming) and tqdm stay bare, as there.
 */
export function loggerInfo(message: string, now = new Date()): string {
  const p = (n: number) => String(n).padStart(2, "0");
  const time = `${p(now.getMonth() + 1)}/${p(now.getDate())}/${now.getFullYear()} ${p(now.getHours())}:${p(now.getMinutes())}:${p(now.getSeconds())}`;
  return `${time} - INFO - __main__ - ${message}`;
}

/**
 * The script's first line, `logger.info(accelerator.state)`: accelerate's AcceleratorState as it prints it (multi-line,
 * ending in a blank line). The mixed precision is what runs — "no": TensorFlow.js computes in float32 (the
 * --mixed_precision warning says so) — and several processes are TensorFlow's collective ops, not torch's backend.
 */
export function acceleratorState(backend: string, pe: ProcessEnv | null): string {
  const gpu = backend === "node-gpu";
  const many = pe !== null && pe.worldSize > 1;
  const kind = many ? (gpu ? "MULTI_GPU" : "MULTI_CPU") : "NO";
  return [
    `Distributed environment: ${kind}${many ? "  Backend: TensorFlow collective ops (gRPC)" : ""}`,
    `Num processes: ${pe?.worldSize ?? 1}`,
    `Process index: ${pe?.rank ?? 0}`,
    `Local process index: ${pe?.localRank ?? 0}`,
    `Device: ${gpu ? "cuda:0" : "cpu"}`,
    "",
    "Mixed precision type: no",
    "",
  ].join("\n");
}

/** The script's "***** Running training *****" block. */
export function runningTrainingLines(s: TrainingSession): string[] {
  const a = s.args;
  const { batches, epochs } = epochMath(s);
  return [
    "***** Running training *****",
    `  Num examples = ${s.dataset.length}`,
    `  Num batches each epoch = ${batches}`,
    `  Num Epochs = ${epochs}`,
    `  Instantaneous batch size per device = ${a.train_batch_size}`,
    `  Total train batch size (w. parallel, distributed & accumulation) = ${s.trainer.globalBatch * a.gradient_accumulation_steps}`,
    `  Gradient Accumulation steps = ${a.gradient_accumulation_steps}`,
    `  Total optimization steps = ${s.trainer.maxSteps}`,
  ];
}

/**
 * accelerator.init_trackers(tracker_project_name, config=vars(args)): a TensorBoard writer in
 * `<logging_dir>/<tracker_project_name>` with the run's arguments as hparams (the validation lists left out as the
 * script does, since TensorBoard cannot hold lists; the hub token never). null when no tracker logs.
 */
export function initTrackers(s: TrainingSession): TensorBoardWriter | null {
  const a = s.args;
  if (!s.trainer.isMainProcess || !planTrackers(a.report_to).tensorboard) return null; // rank 0 alone logs
  const tb = new TensorBoardWriter(tensorboardDir(a));
  const config: Record<string, string | number | boolean | null> = {};
  for (const spec of TRAIN_ARG_SPECS) {
    if (spec.name === "validation_prompt" || spec.name === "validation_image" || spec.name === "hub_token") continue;
    config[spec.name] = (a as unknown as Record<string, string | number | boolean | null>)[spec.name] ?? null;
  }
  // the values the script has by then: max_train_steps filled in, num_train_epochs recomputed, lr scaled
  config.max_train_steps = s.trainer.maxSteps;
  config.num_train_epochs = epochMath(s).epochs;
  config.learning_rate = s.trainer.opts.learning_rate;
  // float flags print as floats (1.0), except at an int default the script keeps as written (`default=0` → 0)
  const floats = TRAIN_ARG_SPECS.filter((x) => x.type === "float" && !(x.intDefault && config[x.name] === x.default));
  tb.addHparams(config, { floats: new Set(floats.map((x) => x.name)) });
  return tb;
}

/** log_validation's TensorBoard part: per pair, tag = the prompt, the conditioning image then the samples. */
async function logValidation(tb: TensorBoardWriter | null, v: ValidationResult): Promise<void> {
  if (!tb) return;
  for (const p of v.pairs) {
    const c = p.control;
    await tb.addImages(p.prompt, [c.data, ...p.rgb.map((im) => im.data)], c.width, c.height, 3, v.step); // the pipeline returns RGB
  }
}

function validationOptions(s: TrainingSession, step: number, signal?: AbortSignal | null, final = false) {
  const a = s.args;
  // generated at each conditioning image's own size, as the script's pipeline call (no height/width) does
  return {
    images: a.validation_image!, prompts: a.validation_prompt!, numImages: a.num_validation_images, seed: a.seed ?? undefined, step,
    dir: path.join(a.output_dir, "validation"), signal: signal ?? undefined, final,
  };
}

/** Trains a session (continuing where it is) with logging and validation. `tb`: the tracker (default: opened and
 *  closed here). */
export async function trainSession(s: TrainingSession, hooks: RunHooks = {}, tracker?: TensorBoardWriter | null): Promise<TrainResult> {
  const { args, trainer } = s;
  const main = trainer.isMainProcess; // rank 0 alone logs, validates and reports progress
  const log = main ? hooks.log ?? console.log : () => {};
  const info = main ? hooks.info ?? log : () => {};
  const tb = tracker === undefined ? initTrackers(s) : tracker;
  const validation = main && args.validation_image && args.validation_prompt;
  // fill50k-style validation pairs are scored (lib/eval/fidelity.ts); the step where the score jumps is reported
  const fidelityHistory: ConvergencePoint[] = [];
  let jumpReported = false;
  try {
    hooks.onTrainingStart?.();
    return await trainer.train({
      signal: hooks.signal ?? undefined,
      until: hooks.until,
      onStep: async (r) => {
        tb?.addScalars({ loss: r.loss, lr: r.lr }, r.step);
        if (main) await hooks.onStep?.(r);
      },
      onCheckpoint: (dir, _step, removed) => {
        if (removed.length) {
          // upstream's two lines (it counts the checkpoints there before this one: limit − 1 stay)
          // (limit 0 removes them all: as many as exist)
          const existing = Math.max(removed.length, removed.length + (args.checkpoints_total_limit ?? 1) - 1);
          info(loggerInfo(`${existing} checkpoints already exist, removing ${removed.length} checkpoints`));
          info(loggerInfo(`removing checkpoints: ${removed.map((d) => path.basename(d)).join(", ")}`));
        }
        info(loggerInfo(`Saved state to ${dir}`));
      },
      validationSteps: validation ? args.validation_steps : undefined,
      onValidation: async (step) => {
        info(loggerInfo("Running validation... "));
        const v = await runValidation(s.base, s.controlnet, validationOptions(s, step, hooks.signal));
        await logValidation(tb, v);
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
    if (tracker === undefined) tb?.close();
  }
}

/** The run's hub repo id: the created repo's, else what it would be named (hub_model_id or output_dir's name). */
function modelCardRepoId(a: TrainArgs, repoId: string | null): string {
  return repoId ?? a.hub_model_id ?? path.basename(path.resolve(a.output_dir));
}

/** save_model_card's README.md (model-card.ts) for the run's final ControlNet. */
export async function saveModelCard(s: TrainingSession, opts: { repoId?: string | null; validation?: ValidationResult | null } = {}): Promise<string> {
  const a = s.args;
  return writeModelCard(a.output_dir, {
    repoId: modelCardRepoId(a, opts.repoId ?? null), baseModel: a.pretrained_model_name_or_path, validation: opts.validation,
    training: { data: a.dataset_name ?? a.train_data_dir ?? "", steps: s.trainer.globalStep, batchSize: a.train_batch_size,
      accumulation: a.gradient_accumulation_steps, learningRate: a.learning_rate, resolution: a.resolution },
  });
}

/** What a push of a run folder leaves out: the script's `step_*`/`epoch_*`, our checkpoints (optimizer state, GBs),
 *  the validation rounds (the card has its own images), the run lock. */
export const RUN_FOLDER_PUSH_IGNORE = ["step_*", "epoch_*", "checkpoint-*", "checkpoint-*/**", "validation/**", LOCK_NAME];

/** Saves the final ControlNet into output_dir (diffusers' train_controlnet: controlnet.save_pretrained(output_dir)). */
export function saveFinal(s: TrainingSession): void {
  s.trainer.saveFinal();
}

/** --push_to_hub's upload_folder: output_dir (without checkpoints, logs and the validation folder: the card's images are
 * its own) to the repo created at the start. */
export async function pushToHub(s: TrainingSession, repoId: string, opts: { hubUrl?: string } = {}): Promise<string> {
  const a = s.args;
  const { url } = await uploadFolder(repoId, a.output_dir, {
    token: a.hub_token ?? undefined, hubUrl: opts.hubUrl, ignorePatterns: pushIgnorePatterns(a),
    commitMessage: "End of training", createRepo: false,
  });
  return url;
}

/** What the push leaves out of output_dir: RUN_FOLDER_PUSH_IGNORE, and the logging folder where it lies inside. */
function pushIgnorePatterns(a: TrainArgs): string[] {
  const logs = path.relative(path.resolve(a.output_dir), path.resolve(resolveLoggingDir(a.output_dir, a.logging_dir)));
  const ignoreLogs = logs && !logs.startsWith("..") && !path.isAbsolute(logs) ? [`${logs.split(path.sep).join("/")}/**`] : [];
  return [...RUN_FOLDER_PUSH_IGNORE, ...ignoreLogs];
}

/** The huggingface_hub command that pushes what the run would have pushed (for a push that failed). */
export function uploadCommand(repoId: string, a: TrainArgs): string {
  const q = (s: string) => `'${s.replace(/'/g, "'\\''")}'`;
  // (the hf CLI takes one pattern per --exclude)
  return `hf upload ${q(repoId)} ${q(a.output_dir)} . ${pushIgnorePatterns(a).map((p) => `--exclude ${q(p)}`).join(" ")}`;
}

/** --push_to_hub could not create (or reach) the hub repo at the start: nothing was trained or written. */
export class HubRepoError extends Error {
  override name = "HubRepoError";
  constructor(override readonly cause: Error) {
    super(cause.message.endsWith(".") ? cause.message : `${cause.message}.`);
  }
}

/** --push_to_hub's upload at the end failed: the trained ControlNet is saved in output_dir. */
export class HubUploadError extends Error {
  override name = "HubUploadError";
  /** `retry`: the command that pushes the same files once the hub problem is fixed (uploadCommand). */
  constructor(override readonly cause: HubError, readonly retry: string) {
    super(cause.message);
  }
}

/** The whole script: create the hub repo, train to max_train_steps, save, validate a last time, write the card, push. */
export async function trainControlNet(args: TrainArgs, hooks: RunHooks = {}): Promise<TrainResult> {
  let log = hooks.log ?? console.log;
  let info = hooks.info ?? log;
  // the notebook's train({ processes }) sets the cell's `until` for its worker processes (lib/cells/processes.ts)
  const envUntil = Number(process.env.CONTROLNET_TS_UNTIL);
  if (hooks.until === undefined && Number.isInteger(envUntil) && envUntil > 0) hooks = { ...hooks, until: envUntil };
  refuseFileAsOutputDir(args.output_dir);
  // before anything is loaded or written: another tool's checkpoints in output_dir, and the hub repo (rank 0 alone
  // creates it, as the script's main process does; if that fails the launcher stops the other processes)
  assertNoForeignCheckpoints(args.output_dir);
  let repoId: string | null = null;
  if (args.push_to_hub && (processEnv()?.rank ?? 0) === 0) {
    let r: Awaited<ReturnType<typeof createRepo>>;
    try {
      const name = args.hub_model_id ?? path.basename(path.resolve(args.output_dir));
      const what = args.hub_model_id ? "--hub_model_id" : "the repo name taken from --output_dir";
      try {
        // the model repo `name` or `namespace/name`, as create_repo's validate_repo_id (a `datasets/` prefix made a
        // dataset repo, and the upload after training then found no model repo)
        if (parseRepoId(name).name !== name) throw new Error(`"${name}" is not a model repo id: it must be name or namespace/name`);
      } catch (e) {
        throw new HubRepoError(new Error(`${what}: ${(e as Error).message}`));
      }
      r = await createRepo(name, { token: args.hub_token ?? undefined });
    } catch (e) {
      throw e instanceof HubError ? new HubRepoError(e) : e;
    }
    repoId = r.repoId;
    log(`${r.created ? "Created" : "Using the existing"} hub repo ${r.repoId} (uploaded to at the end of training)`);
  }
  const s = await createSession(args, log, info);
  if (!s.trainer.isMainProcess) log = info = () => {}; // rank 0 writes the checkpoint, the final folder and the push
  const tb = initTrackers(s);
  try {
    for (const l of runningTrainingLines(s)) info(loggerInfo(l));
    for (const l of s.resumeLines) log(l);
    if (s.trainer.globalStep === 0 && fs.existsSync(path.join(args.output_dir, "diffusion_pytorch_model.safetensors"))) {
      log(`${args.output_dir} holds a ControlNet an earlier run saved: this run replaces it when it ends (that run's log and validation images are kept aside as *.earlier-N).`);
    }
    if (s.trainer.globalStep > s.trainer.maxSteps) {
      log(`The resumed checkpoint is at step ${s.trainer.globalStep}, beyond --max_train_steps ${s.trainer.maxSteps}: no step to train; its ControlNet is saved as the final one.`);
    }
    let r: TrainResult;
    try {
      r = await trainSession(s, hooks, tb);
    } catch (e) {
      // keep the trained steps: any failure after a step (validation, a hook, the disk) checkpoints first
      // (the checkpoint it writes, if any, becomes the trainer's last)
      await s.trainer.checkpointAfterError(e);
      const last = s.trainer.lastCheckpointPath;
      const step = s.trainer.globalStep;
      if (hooks.signal?.aborted) {
        // Ctrl-C / SIGTERM inside a validation round (which stops at once): an interrupt, not an error
        log(`Interrupted at step ${step}; state saved to ${last}. Re-run with --resume_from_checkpoint=latest to continue.`);
        return { globalStep: step, maxSteps: s.trainer.maxSteps, stopped: "interrupted", lastLoss: null };
      }
      // what is kept, also when no new checkpoint was needed (one of this step exists) or could be written
      if (last && s.trainer.checkpointIsCurrent) {
        log(`Stopped by an error at step ${step}; state saved to ${last}. Re-run with --resume_from_checkpoint=latest to continue.`);
      } else if (last && step > 0) log(`Stopped by an error at step ${step}; the last checkpoint is ${last} (the steps after it are lost).`);
      throw e;
    }
    if (r.stopped === "interrupted") {
      // nothing trained yet: no checkpoint-0 to resume from (it would only be in the way); a checkpoint of this very
      // step (a resumed run stopped at once, or one written at this step) is not written twice
      if (r.globalStep === 0) {
        log("Interrupted before the first step: nothing was trained, nothing saved.");
        return r;
      }
      const dir = s.trainer.checkpointIsCurrent ? s.trainer.lastCheckpointPath : await s.trainer.checkpoint();
      log(`Interrupted at step ${r.globalStep}; state saved to ${dir}. Re-run with --resume_from_checkpoint=latest to continue.`);
      return r;
    }
    if (r.stopped === "until") {
      // stopped before max_train_steps on purpose: keep the state to continue from, not a final folder
      const dir = s.trainer.checkpointIsCurrent ? null : await s.trainer.checkpoint();
      log(`Stopped at step ${r.globalStep} (until)${dir ? `; state saved to ${dir}` : ""}.`);
      return r;
    }
    if (!s.trainer.isMainProcess) return r;
    try {
      saveFinal(s);
    } catch (e) {
      await s.trainer.checkpointAfterError(e);
      // say which steps are kept: a checkpoint of the last step, or the last one before it (later steps lost)
      const last = s.trainer.lastCheckpointPath;
      const step = r.globalStep;
      const kept = last && s.trainer.checkpointIsCurrent ? `the trained state (all ${step} steps) is in ${last}`
        : last ? `the last checkpoint is ${last}; the steps after it (up to ${step}) could not be saved either`
        : `no checkpoint could be written: the ${step} steps are lost`;
      throw new Error(`could not save the final ControlNet in ${args.output_dir}: ${(e as Error).message}; ${kept}`, { cause: e });
    }
    log(`Saved the ControlNet to ${args.output_dir}`);
    // "Run a final round of validation" with the saved weights, at the last step
    let final: ValidationResult | null = null;
    // the ControlNet is saved: a failed or interrupted final validation only leaves the card without its images
    let validationFailure: string | null = null;
    if (args.validation_prompt && args.validation_image) {
      info(loggerInfo("Running validation... "));
      try {
        final = await runValidation(s.base, s.controlnet, validationOptions(s, s.trainer.globalStep, hooks.signal, true));
        await logValidation(tb, final);
        log(`final validation at step ${final.step}: ${final.pairs.length} pair(s) in ${final.seconds.toFixed(1)} s → ${path.join(args.output_dir, "validation")}`);
        await hooks.onValidation?.(final);
      } catch (e) {
        final = null;
        validationFailure = hooks.signal?.aborted ? "interrupted" : `failed (${(e as Error)?.message ?? String(e)})`;
      }
    }
    try {
      log(`Model card: ${await saveModelCard(s, { repoId, validation: final })}`);
    } catch (e) {
      throw new Error(`the ControlNet is saved in ${args.output_dir}, but its model card could not be written (${(e as Error).message})${repoId ? "; not pushed" : ""}`, { cause: e });
    }
    if (validationFailure === "interrupted") {
      log(`Interrupted during the final validation: the ControlNet is saved in ${args.output_dir}, its model card without validation images${repoId ? "; not pushed" : ""}.`);
      return { ...r, stopped: "interrupted" };
    }
    if (repoId) {
      try {
        log(`Pushed to ${await pushToHub(s, repoId)}`);
      } catch (e) {
        throw e instanceof HubError ? new HubUploadError(e, uploadCommand(repoId, args)) : e;
      }
    }
    if (validationFailure) {
      throw new Error(`the final validation ${validationFailure}; the ControlNet is saved in ${args.output_dir}, with its model card (without validation images)${repoId ? ", and pushed" : ""}`);
    }
    return r;
  } finally {
    tb?.close();
    await s.trainer.close();
  }
}
