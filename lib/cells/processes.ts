/**
 * `train({ …, processes: N })`: the training cell on N worker processes (`controlnet-ts launch`, TensorFlow's
 * collective all-reduce), while the cell shows their progress and stays interruptible. The cell's in-memory objects
 * become train_controlnet flags (base folder, dataset options, the ControlNet saved to a temporary folder unless a
 * checkpoint already carries the run), progress comes from rank 0's train_log.jsonl, an interrupt is the launcher's
 * Ctrl-C (every process stops at the same step and rank 0 writes a checkpoint), and afterwards the cell's ControlNet
 * holds the trained weights of the last checkpoint — so validate(), save() and the next train() continue from them.
 */
import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { MemorySnapshot } from "../engine/index.js";
import type { ControlNetDataset } from "../data/index.js";
import type { ControlNetModel } from "../models/index.js";
import type { BaseModel } from "../training/base.js";
import { listCheckpoints } from "../training/checkpoints.js";
import { stopSignalOf } from "../training/stop-signals.js";
import type { TrainResult } from "../training/trainer.js";
import { loadModelFolder } from "../io/diffusers.js";
import { TrainingDashboard } from "../../widgets/index.js";
import { abortSignal } from "./display.js";
import { InputError } from "../io/input-error.js";
import type { DatasetCellOptions } from "./helpers.js"; // type only: helpers imports this module's values

/** The dataset() cell's options, kept on its result so worker processes can rebuild the same dataset. */
export const DATASET_CELL_OPTIONS = Symbol.for("controlnet-ts.datasetCellOptions");

export interface ProcessesTrainOptions {
  base: BaseModel;
  controlnet: ControlNetModel;
  dataset: ControlNetDataset;
  until: number;
  processes: number;
  outputDir: string;
  batchSize: number;
  learningRate: number;
  gradientAccumulationSteps: number;
  gradientCheckpointing?: boolean;
  use8bitAdam?: boolean;
  offloadOptimizerState?: boolean;
  attentionChunkSize?: number;
  maxTrainSteps: number;
  lrScheduler: string;
  lrWarmupSteps: number;
  seed: number;
  useEma?: boolean;
  emaDecay?: number;
  checkpointing?: { every: number; totalLimit?: number };
  /** Intra-op threads per process (default: CPUs ÷ processes). */
  threadsPerProcess?: number;
  mainProcessPort?: number;
}

/** train_controlnet's flags for what the cell holds in memory; a cell setting the CLI cannot express is an error. */
export function processFlags(o: ProcessesTrainOptions, controlnetDir: string | null, resumeFrom: string | null): string[] {
  const ds = (o.dataset as unknown as Record<symbol, DatasetCellOptions | undefined>)[DATASET_CELL_OPTIONS];
  if (!ds) throw new Error("train({ processes }): the dataset must come from the dataset() cell (its options are what the worker processes load)");
  const dsSeed = ds.synthetic ? ds.synthetic.seed ?? 0 : ds.seed;
  if (dsSeed !== undefined && dsSeed !== o.seed) {
    throw new Error(`train({ processes }): the dataset's seed (${dsSeed}) must equal the training seed (${o.seed}): train_controlnet builds its dataset with --seed`);
  }
  const f: string[] = [
    `--pretrained_model_name_or_path=${o.base.dir}`, `--output_dir=${o.outputDir}`, `--resolution=${o.dataset.resolution}`,
    `--train_batch_size=${o.batchSize}`, `--learning_rate=${o.learningRate}`, `--gradient_accumulation_steps=${o.gradientAccumulationSteps}`,
    `--max_train_steps=${o.maxTrainSteps}`, `--lr_scheduler=${o.lrScheduler}`, `--lr_warmup_steps=${o.lrWarmupSteps}`, `--seed=${o.seed}`,
    `--checkpointing_steps=${o.checkpointing?.every ?? 500}`, `--resume_from_checkpoint=${resumeFrom ?? "latest"}`,
  ];
  if (ds.synthetic) f.push(`--dataset_name=synthetic-fill50k:${ds.synthetic.count ?? 50_000}`);
  if (ds.name) f.push(`--dataset_name=${ds.name}`);
  if (ds.trainDataDir) f.push(`--train_data_dir=${ds.trainDataDir}`);
  if (ds.maxTrainSamples !== undefined) f.push(`--max_train_samples=${ds.maxTrainSamples}`);
  if (ds.imageColumn) f.push(`--image_column=${ds.imageColumn}`);
  if (ds.conditioningImageColumn) f.push(`--conditioning_image_column=${ds.conditioningImageColumn}`);
  if (ds.captionColumn) f.push(`--caption_column=${ds.captionColumn}`);
  if (ds.proportionEmptyPrompts !== undefined) f.push(`--proportion_empty_prompts=${ds.proportionEmptyPrompts}`);
  if (controlnetDir) f.push(`--controlnet_model_name_or_path=${controlnetDir}`);
  if (o.checkpointing?.totalLimit !== undefined) f.push(`--checkpoints_total_limit=${o.checkpointing.totalLimit}`);
  if (o.gradientCheckpointing) f.push("--gradient_checkpointing");
  if (o.use8bitAdam) f.push("--use_8bit_adam");
  if (o.offloadOptimizerState) f.push("--offload_optimizer_state");
  if (o.useEma) f.push("--use_ema", ...(o.emaDecay !== undefined ? [`--ema_decay=${o.emaDecay}`] : []));
  if (o.attentionChunkSize) {
    if (o.attentionChunkSize !== 1024) throw new Error(`train({ processes }): attentionChunkSize ${o.attentionChunkSize} has no train_controlnet flag (--enable_xformers_memory_efficient_attention is 1024)`);
    f.push("--enable_xformers_memory_efficient_attention");
  }
  return f;
}

export async function trainInProcesses(o: ProcessesTrainOptions): Promise<TrainResult> {
  const latest = listCheckpoints(o.outputDir).at(-1);
  const start = latest?.step ?? 0;
  if (start >= o.until) {
    console.log(`train: already at step ${start} (until ${o.until}) — nothing to do. Raise \`until\` to continue.`);
    return { globalStep: start, maxSteps: o.maxTrainSteps, stopped: "until", lastLoss: null };
  }
  // a fresh run starts from the cell's ControlNet; a resumed one from its checkpoint. Its weights go in the run's own
  // folder (hidden, as diffusers ignores it), not /tmp: a kernel killed meanwhile leaves no orphan to pile up there
  // (an SD1.5 ControlNet is 1.4 GB), and the next launch in the folder removes it
  const initFolder = path.join(o.outputDir, ".controlnet-ts-init");
  fs.rmSync(initFolder, { recursive: true, force: true });
  const initDir = start === 0 ? initFolder : null;
  if (initDir) o.controlnet.savePretrained(initDir);
  const bin = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "bin", "controlnet-ts.js");
  const launchArgs = ["launch", "--num_processes", String(o.processes), "--main_process_port", String(o.mainProcessPort ?? 29500),
    ...(o.threadsPerProcess ? ["--num_cpu_threads_per_process", String(o.threadsPerProcess)] : []),
    // the folder is this model's run (runs.ts): its checkpoint is named, so changed options continue it (with a warning)
    // (a resumed run is built from its checkpoint's ControlNet: the cell's architecture, which no flag expresses)
    "train_controlnet", ...processFlags(o, initDir ?? path.join(latest!.path, "controlnet"), latest?.path ?? null)];
  const logFile = path.join(o.outputDir, "logs", "train_log.jsonl");
  const seen = fs.existsSync(logFile) ? fs.readFileSync(logFile, "utf8").length : 0;
  const dashboard = new TrainingDashboard({ total: o.until, initialStep: start, description: `train (${o.processes} processes)` }).show();
  const child = spawn(process.execPath, [bin, ...launchArgs], {
    env: { ...process.env, CONTROLNET_TS_UNTIL: String(o.until) }, stdio: ["ignore", "pipe", "pipe"],
  });
  let stderr = "";
  child.stderr!.on("data", (d) => (stderr = (stderr + d).slice(-20_000)));
  child.stdout!.resume();
  const signal = abortSignal();
  const onAbort = () => child.kill("SIGINT"); // the launcher stops every process at one step and checkpoints
  signal?.addEventListener("abort", onAbort, { once: true });
  let offset = seen;
  let lastLoss: number | null = null;
  let step = start;
  const poll = () => {
    if (!fs.existsSync(logFile)) return;
    const text = fs.readFileSync(logFile, "utf8");
    const end = text.lastIndexOf("\n") + 1;
    for (const line of text.slice(offset, end).split("\n").filter(Boolean)) {
      const r = JSON.parse(line) as { step: number; loss: number; lr: number; seconds: number; memory?: MemorySnapshot };
      step = r.step;
      lastLoss = r.loss;
      // the memory of rank 0 (which logs), not the kernel's, which only watches
      const memory = r.memory && { ...r.memory, backend: `${r.memory.backend}, process 0 of ${o.processes}` };
      dashboard.onStep({ step: r.step, total: o.until, loss: r.loss, lr: r.lr, itPerSec: 1 / r.seconds, ...(memory ? { memory } : {}) });
    }
    offset = Math.max(offset, end);
  };
  const timer = setInterval(poll, 500);
  const code = await new Promise<number | null>((resolve) => child.on("exit", (c) => resolve(c)));
  clearInterval(timer);
  signal?.removeEventListener("abort", onAbort);
  poll();
  if (initDir) fs.rmSync(initDir, { recursive: true, force: true });
  const last = listCheckpoints(o.outputDir).at(-1);
  // the cell's ControlNet continues from what the processes trained (the last checkpoint), as the in-process cell
  if (last && last.step > start) o.controlnet.loadState(loadModelFolder(path.join(last.path, "controlnet")).tensors, { strict: true });
  // a stop (the interrupt, a scheduler's SIGTERM to a worker, the output gone): the group stopped at a step boundary
  const interrupted = stopSignalOf(code) !== undefined;
  if (code !== 0 && !interrupted) {
    dashboard.finish("error");
    // (one line: the workers' own reason is in it, flags named as this cell names them; this module's frames would
    // say nothing more)
    throw new InputError(`train({ processes: ${o.processes} }) failed: ${failureLine(stderr, code).replace("--main_process_port", "mainProcessPort")}`);
  }
  dashboard.finish(interrupted ? "stopped" : "done");
  if (interrupted) {
    console.log(last && last.step > start
      ? `train: stopped at step ${last.step}; checkpoint written to ${last.path}. Run the cell again to continue.`
      : "train: stopped before the first step; nothing was trained. Run the cell again to start.");
  }
  return { globalStep: last?.step ?? step, maxSteps: o.maxTrainSteps, stopped: interrupted ? "interrupted" : step >= o.maxTrainSteps ? "finished" : "until", lastLoss };
}

/**
 * The reason a launch failed, from its stderr: the first worker's own one-line error (`[rank r] train_controlnet:
 * …`), which says why, then the launcher's summary (which process exited, the checkpoint to resume).
 */
export function failureLine(stderr: string, code: number | null): string {
  const lines = stderr.split("\n").map((l) => l.trim()).filter(Boolean);
  // rank 0's lines come unprefixed, the others' as `[rank r] …`
  const worker = lines.find((l) => /^(\[rank \d+\] )?train_controlnet(\.py)?: /.test(l))?.replace(/^\[rank \d+\] /, "");
  const launcher = lines.filter((l) => /^launch: error:/.test(l)).at(-1);
  const parts = [worker, launcher].filter((l): l is string => !!l);
  return parts.length ? parts.join(" — ") : lines.at(-1) ?? `exit code ${code}`;
}
