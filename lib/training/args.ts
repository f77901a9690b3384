/**
 * The command line of `train_controlnet`: train_controlnet.py's argparse set, verbatim — the same 52 flag names,
 * types, defaults, `--flag value` and `--flag=value`, store_true flags, nargs="+" for the validation lists,
 * argparse's unique-prefix abbreviations, the last occurrence winning — plus the script's validation rules.
 * Extensions, marked as such in the help: `--snr_gamma` (from the seed's Flax script),
 * `--offload_optimizer_state` (the DeepSpeed ZeRO-2 CPU-offload recipe of the README, as an optimizer option) and
 * `--use_ema` / `--ema_decay` (train_text_to_image.py's weight averaging).
 *
 * Unknown flags are an error naming the closest known ones. Flags whose PyTorch meaning cannot carry over to
 * TensorFlow.js (mixed precision, TF32) are accepted with an honest warning; `--report_to` follows accelerate
 * (lib/training/trackers.ts: unknown trackers refused, wandb/comet_ml logged to TensorBoard and said so).
 */

import { checkProportionEmptyPrompts } from "../data/loader.js";
import { InputError } from "../io/input-error.js";
import { LR_SCHEDULERS } from "./lr-schedulers.js";
import { planTrackers } from "./trackers.js";

type ArgType = "str" | "int" | "float" | "bool";

export interface ArgSpec {
  name: string;
  type: ArgType;
  default: string | number | boolean | null;
  help: string;
  required?: boolean;
  nargs?: "+";
  choices?: readonly string[];
  /** A float flag whose default the script writes as an int (`default=0`): argparse keeps that default an int, and
   *  the hparams show `0`, not `0.0`. */
  intDefault?: boolean;
  /** Not in train_controlnet.py. */
  extension?: boolean;
}

export interface TrainArgs {
  pretrained_model_name_or_path: string;
  controlnet_model_name_or_path: string | null;
  revision: string | null;
  variant: string | null;
  tokenizer_name: string | null;
  output_dir: string;
  cache_dir: string | null;
  seed: number | null;
  resolution: number;
  train_batch_size: number;
  num_train_epochs: number;
  max_train_steps: number | null;
  checkpointing_steps: number;
  checkpoints_total_limit: number | null;
  resume_from_checkpoint: string | null;
  gradient_accumulation_steps: number;
  gradient_checkpointing: boolean;
  learning_rate: number;
  scale_lr: boolean;
  lr_scheduler: string;
  lr_warmup_steps: number;
  lr_num_cycles: number;
  lr_power: number;
  use_8bit_adam: boolean;
  dataloader_num_workers: number;
  adam_beta1: number;
  adam_beta2: number;
  adam_weight_decay: number;
  adam_epsilon: number;
  max_grad_norm: number;
  push_to_hub: boolean;
  hub_token: string | null;
  hub_model_id: string | null;
  logging_dir: string;
  allow_tf32: boolean;
  report_to: string;
  mixed_precision: "no" | "fp16" | "bf16" | null;
  enable_xformers_memory_efficient_attention: boolean;
  set_grads_to_none: boolean;
  dataset_name: string | null;
  dataset_config_name: string | null;
  train_data_dir: string | null;
  image_column: string;
  conditioning_image_column: string;
  caption_column: string;
  max_train_samples: number | null;
  proportion_empty_prompts: number;
  validation_prompt: string[] | null;
  validation_image: string[] | null;
  num_validation_images: number;
  validation_steps: number;
  tracker_project_name: string;
  // extensions
  snr_gamma: number | null;
  offload_optimizer_state: boolean;
  use_ema: boolean;
  ema_decay: number;
}

const s = (name: string, def: string | null, help: string, extra: Partial<ArgSpec> = {}): ArgSpec => ({ name, type: "str", default: def, help, ...extra });
const i = (name: string, def: number | null, help: string, extra: Partial<ArgSpec> = {}): ArgSpec => ({ name, type: "int", default: def, help, ...extra });
const f = (name: string, def: number | null, help: string, extra: Partial<ArgSpec> = {}): ArgSpec => ({ name, type: "float", default: def, help, ...extra });
const b = (name: string, help: string, extra: Partial<ArgSpec> = {}): ArgSpec => ({ name, type: "bool", default: false, help, ...extra });

/** In the script's order. */
export const TRAIN_ARG_SPECS: readonly ArgSpec[] = [
  s("pretrained_model_name_or_path", null, "Path to pretrained model or model identifier from huggingface.co/models.", { required: true }),
  s("controlnet_model_name_or_path", null, "Path to pretrained controlnet model or model identifier from huggingface.co/models. If not specified controlnet weights are initialized from unet."),
  s("revision", null, "Revision of pretrained model identifier from huggingface.co/models."),
  s("variant", null, "Variant of the model files of the pretrained model identifier from huggingface.co/models, 'e.g.' fp16"),
  s("tokenizer_name", null, "Pretrained tokenizer name or path if not the same as model_name"),
  s("output_dir", "controlnet-model", "The output directory where the model predictions and checkpoints will be written."),
  s("cache_dir", null, "The directory where the downloaded models and datasets will be stored."),
  i("seed", null, "A seed for reproducible training. Unset: a random seed, printed (a resumed run continues its checkpoint's)."),
  i("resolution", 512, "The resolution for input images, all the images in the train/validation dataset will be resized to this resolution"),
  i("train_batch_size", 4, "Batch size (per device) for the training dataloader."),
  i("num_train_epochs", 1, ""),
  i("max_train_steps", null, "Total number of training steps to perform.  If provided, overrides num_train_epochs."),
  i("checkpointing_steps", 500, "Save a checkpoint of the training state every X updates. Checkpoints can be used for resuming training via `--resume_from_checkpoint`."),
  i("checkpoints_total_limit", null, "Max number of checkpoints to store."),
  s("resume_from_checkpoint", null, 'Whether training should be resumed from a previous checkpoint. Use a path saved by `--checkpointing_steps`, or `"latest"` to automatically select the last available checkpoint.'),
  i("gradient_accumulation_steps", 1, "Number of updates steps to accumulate before performing a backward/update pass."),
  b("gradient_checkpointing", "Whether or not to use gradient checkpointing to save memory at the expense of slower backward pass."),
  f("learning_rate", 5e-6, "Initial learning rate (after the potential warmup period) to use."),
  b("scale_lr", "Scale the learning rate by the number of GPUs, gradient accumulation steps, and batch size."),
  s("lr_scheduler", "constant", 'The scheduler type to use. Choose between ["linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup"]'),
  i("lr_warmup_steps", 500, "Number of steps for the warmup in the lr scheduler."),
  i("lr_num_cycles", 1, "Number of hard resets of the lr in cosine_with_restarts scheduler."),
  f("lr_power", 1.0, "Power factor of the polynomial scheduler."),
  b("use_8bit_adam", "Whether or not to use 8-bit Adam (block-wise 8-bit optimizer states, as bitsandbytes)."),
  i("dataloader_num_workers", 0, "Number of subprocesses to use for data loading. 0 means that the data will be loaded in the main process. (controlnet-ts: rows are decoded in this process by a prefetching loader; the value only sets how far it reads ahead.)"),
  f("adam_beta1", 0.9, "The beta1 parameter for the Adam optimizer."),
  f("adam_beta2", 0.999, "The beta2 parameter for the Adam optimizer."),
  f("adam_weight_decay", 1e-2, "Weight decay to use."),
  f("adam_epsilon", 1e-8, "Epsilon value for the Adam optimizer"),
  f("max_grad_norm", 1.0, "Max gradient norm."),
  b("push_to_hub", "Whether or not to push the model to the Hub."),
  s("hub_token", null, "The token to use to push to the Model Hub."),
  s("hub_model_id", null, "The name of the repository to keep in sync with the local `output_dir`."),
  s("logging_dir", "logs", "TensorBoard log directory, under output_dir."),
  b("allow_tf32", "Whether or not to allow TF32 on Ampere GPUs (the native GPU engine; others compute plain float32)."),
  s("report_to", "tensorboard", 'The integration to report the results and logs to. The script\'s choices are accepted (`"tensorboard"` (default), `"wandb"`, `"comet_ml"`, `"all"`, …); controlnet-ts logs to TensorBoard (and train_log.jsonl) only, and says so for the others.'),
  s("mixed_precision", null, "Whether to use mixed precision. Choose between fp16 and bf16 (bfloat16). (TensorFlow.js computes in float32 only: accepted with a warning.)", { choices: ["no", "fp16", "bf16"] }),
  b("enable_xformers_memory_efficient_attention", "Whether or not to use memory-efficient attention (xformers in the original; our chunked attention here)."),
  b("set_grads_to_none", "Save more memory by freeing gradients as soon as they are applied instead of keeping them."),
  s("dataset_name", null, "The name of the Dataset (from the HuggingFace hub) to train on, or a path pointing to a local copy of a dataset."),
  s("dataset_config_name", null, "The config of the Dataset, leave as None if there's only one config."),
  s("train_data_dir", null, "A folder containing the training data (imagefolder with a metadata.jsonl). Ignored if `dataset_name` is specified."),
  s("image_column", "image", "The column of the dataset containing the target image."),
  s("conditioning_image_column", "conditioning_image", "The column of the dataset containing the controlnet conditioning image."),
  s("caption_column", "text", "The column of the dataset containing a caption or a list of captions."),
  i("max_train_samples", null, "For debugging purposes or quicker training, truncate the number of training examples to this value if set."),
  f("proportion_empty_prompts", 0, "Proportion of image prompts to be replaced with empty strings. Defaults to 0 (no prompt replacement).", { intDefault: true }),
  s("validation_prompt", null, "A set of prompts evaluated every `--validation_steps` and logged to `--report_to`. Provide either a matching number of `--validation_image`s, a single `--validation_image` to be used with all prompts, or a single prompt that will be used with all `--validation_image`s.", { nargs: "+" }),
  s("validation_image", null, "A set of paths to the controlnet conditioning image be evaluated every `--validation_steps` and logged to `--report_to`.", { nargs: "+" }),
  i("num_validation_images", 4, "Number of images to be generated for each `--validation_image`, `--validation_prompt` pair"),
  i("validation_steps", 100, "Run validation every X steps."),
  s("tracker_project_name", "train_controlnet", "The `project_name` argument passed to Accelerator.init_trackers."),
  f("snr_gamma", null, "Min-SNR weighting gamma (recommended 5.0); from the seed's Flax script.", { extension: true }),
  b("offload_optimizer_state", "Keep the optimizer state in host memory and update there (the DeepSpeed ZeRO-2 CPU-offload analogue).", { extension: true }),
  b("use_ema", "Keep an exponential moving average of the ControlNet's weights and save it (train_text_to_image.py's --use_ema).", { extension: true }),
  f("ema_decay", 0.9999, "The moving average's ceiling decay (diffusers EMAModel's decay; early updates use (1+k)/(10+k)).", { extension: true }),
];

const SPEC_BY_NAME = new Map(TRAIN_ARG_SPECS.map((a) => [a.name, a]));

export class ArgsError extends InputError {
  override name = "ArgsError";
}

export interface ParsedTrainArgs {
  args: TrainArgs;
  /** Honest notes on flags that cannot mean in TensorFlow.js what they mean in PyTorch. */
  warnings: string[];
  /** True when --help/-h was given: print `trainArgsHelp()` and exit. */
  help: boolean;
}

/** Python's int(): optional sign, digits, single underscores between digits, surrounding whitespace. */
function parseInt_(v: string, flag: string): number {
  const t = v.trim();
  if (!/^[+-]?\d+(_\d+)*$/.test(t)) throw new ArgsError(`argument --${flag}: invalid int value: '${v}'`);
  const n = Number(t.replace(/_/g, ""));
  if (!Number.isSafeInteger(n)) throw new ArgsError(`argument --${flag}: int value out of range: '${v}'`);
  return n;
}

/** Python's float(): decimal / exponent forms, inf, nan. */
function parseFloat_(v: string, flag: string): number {
  const t = v.trim().replace(/(\d)_(?=\d)/g, "$1");
  if (/^[+-]?(inf|infinity)$/i.test(t)) return t.startsWith("-") ? -Infinity : Infinity;
  if (/^[+-]?nan$/i.test(t)) return NaN;
  if (!/^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(t)) throw new ArgsError(`argument --${flag}: invalid float value: '${v}'`);
  return Number(t);
}

function levenshtein(a: string, b: string): number {
  const d = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let x = 1; x <= a.length; x++) {
    let prev = d[0]!;
    d[0] = x;
    for (let y = 1; y <= b.length; y++) {
      const tmp = d[y]!;
      d[y] = Math.min(d[y]! + 1, d[y - 1]! + 1, prev + (a[x - 1] === b[y - 1] ? 0 : 1));
      prev = tmp;
    }
  }
  return d[b.length]!;
}

/** The known flags closest to an unknown one (edit distance, or sharing a word), best first. */
export function closeMatches(flag: string, n = 3): string[] {
  const name = flag.replace(/^-+/, "").split("=")[0]!.toLowerCase().replace(/-/g, "_");
  const words = new Set(name.split("_").filter((w) => w.length > 2));
  return TRAIN_ARG_SPECS.map((a) => {
    const dist = levenshtein(name, a.name);
    const shared = a.name.split("_").filter((w) => words.has(w)).length;
    return { name: a.name, score: dist / Math.max(name.length, a.name.length) - 0.25 * shared };
  })
    .filter((c) => c.score < 0.45)
    .sort((x, y) => x.score - y.score)
    .slice(0, n)
    .map((c) => `--${c.name}`);
}

function isNegativeNumber(tok: string): boolean {
  return /^-\d+$|^-\d*\.\d+([eE][+-]?\d+)?$|^-\d+\.?\d*[eE][+-]?\d+$/.test(tok);
}

/** Whether argparse takes `tok` as a flag (its _parse_optional): a dash-led token is a value when it is a negative
 *  number, or when it holds a space and names no flag (`--validation_prompt "-a red circle"`). */
function isOptionToken(tok: string): boolean {
  if (!tok.startsWith("-") || tok === "-" || isNegativeNumber(tok)) return false;
  if (!tok.includes(" ")) return true;
  const name = tok.replace(/^--?/, "").split("=")[0]!;
  return name.length > 0 && TRAIN_ARG_SPECS.some((a) => a.name.startsWith(name));
}

/** Exact flag name, or argparse's unique-prefix abbreviation. */
function lookup(flag: string, token = `--${flag}`): ArgSpec {
  const exact = SPEC_BY_NAME.get(flag);
  if (exact) return exact;
  const prefixed = TRAIN_ARG_SPECS.filter((a) => a.name.startsWith(flag));
  if (prefixed.length === 1 && flag.length > 0) return prefixed[0]!;
  if (prefixed.length > 1) {
    throw new ArgsError(`ambiguous option: --${flag} could match ${prefixed.map((a) => `--${a.name}`).join(", ")}`);
  }
  const close = closeMatches(flag);
  throw new ArgsError(`unrecognized arguments: ${token}` + (close.length ? ` (did you mean ${close.join(", ")}?)` : "") + ". Run with --help for the list.");
}

function defaults(): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const a of TRAIN_ARG_SPECS) out[a.name] = a.default;
  return out;
}

/** Parses argv (without the node/script entries) like the script's argparse parser, then validates. */
export function parseTrainArgs(argv: readonly string[]): ParsedTrainArgs {
  if (argv.includes("--help") || argv.includes("-h")) return { args: defaults() as unknown as TrainArgs, warnings: [], help: true };
  const out = defaults();
  const given = new Set<string>();
  const unknown: string[] = [];
  for (let k = 0; k < argv.length; k++) {
    const tok = argv[k]!;
    if (tok === "--") {
      unknown.push(...argv.slice(k + 1));
      break;
    }
    if (!tok.startsWith("--") || !isOptionToken(tok)) {
      unknown.push(tok);
      continue;
    }
    const eq = tok.indexOf("=");
    const flag = eq >= 0 ? tok.slice(2, eq) : tok.slice(2);
    const inline = eq >= 0 ? tok.slice(eq + 1) : null;
    const spec = lookup(flag, tok);
    given.add(spec.name);
    if (spec.type === "bool") {
      if (inline !== null) throw new ArgsError(`argument --${spec.name}: ignored explicit argument '${inline}'`);
      out[spec.name] = true;
      continue;
    }
    const values: string[] = [];
    if (inline !== null) values.push(inline);
    else if (spec.nargs === "+") {
      while (k + 1 < argv.length && !isOptionToken(argv[k + 1]!)) values.push(argv[++k]!);
      if (values.length === 0) throw new ArgsError(`argument --${spec.name}: expected at least one argument`);
    } else {
      if (k + 1 >= argv.length || isOptionToken(argv[k + 1]!)) throw new ArgsError(`argument --${spec.name}: expected one argument`);
      values.push(argv[++k]!);
    }
    const conv = values.map((v) => (spec.type === "int" ? parseInt_(v, spec.name) : spec.type === "float" ? parseFloat_(v, spec.name) : v));
    if (spec.choices) {
      for (const v of conv) {
        if (!spec.choices.includes(String(v))) {
          throw new ArgsError(`argument --${spec.name}: invalid choice: '${v}' (choose from ${spec.choices.map((c) => `'${c}'`).join(", ")})`);
        }
      }
    }
    out[spec.name] = spec.nargs === "+" ? conv : conv[0]; // the last occurrence wins, as argparse's store action
  }
  if (unknown.length) throw new ArgsError(`unrecognized arguments: ${unknown.join(" ")}`);
  const missing = TRAIN_ARG_SPECS.filter((a) => a.required && !given.has(a.name));
  if (missing.length) throw new ArgsError(`the following arguments are required: ${missing.map((a) => `--${a.name}`).join(", ")}`);
  const args = out as unknown as TrainArgs;
  return { args, warnings: validateTrainArgs(args), help: false };
}

/** A full TrainArgs from the defaults and some overrides (notebook use); validated like the CLI. */
export function makeTrainArgs(overrides: Partial<TrainArgs> & Pick<TrainArgs, "pretrained_model_name_or_path">): ParsedTrainArgs {
  for (const k of Object.keys(overrides)) {
    if (!SPEC_BY_NAME.has(k)) {
      const close = closeMatches(k);
      throw new ArgsError(`unknown training option '${k}'` + (close.length ? ` (did you mean ${close.map((c) => c.slice(2)).join(", ")}?)` : ""));
    }
  }
  const args = { ...defaults(), ...overrides } as unknown as TrainArgs;
  return { args, warnings: validateTrainArgs(args), help: false };
}

export const MIXED_PRECISION_WARNING = (mode: string): string =>
  `--mixed_precision ${mode}: TensorFlow.js has no float16/bfloat16 compute (no half-precision dtype, no autocast), ` +
  `so training runs entirely in float32: the frozen UNet, VAE and text encoder stay float32 and take twice the memory they ` +
  `would in PyTorch ${mode}. To reduce memory use --gradient_checkpointing, --use_8bit_adam, --set_grads_to_none, ` +
  `--enable_xformers_memory_efficient_attention and --offload_optimizer_state instead. Half-precision weight files ` +
  `(--variant fp16) are still read (converted to float32 on load).`;

/** The script's checks (parse_args and the start of main), throwing its messages; returns warnings. */
export function validateTrainArgs(a: TrainArgs): string[] {
  if (!a.pretrained_model_name_or_path) throw new ArgsError("the following arguments are required: --pretrained_model_name_or_path");
  if (a.dataset_name == null && a.train_data_dir == null) throw new ArgsError("Specify either `--dataset_name` or `--train_data_dir`");
  if (!a.output_dir?.trim()) throw new ArgsError("--output_dir is empty: name the folder for the model and its checkpoints");
  try {
    checkProportionEmptyPrompts(a.proportion_empty_prompts);
  } catch (e) {
    throw new ArgsError((e as Error).message);
  }
  if (a.validation_prompt != null && a.validation_image == null) throw new ArgsError("`--validation_image` must be set if `--validation_prompt` is set");
  if (a.validation_prompt == null && a.validation_image != null) throw new ArgsError("`--validation_prompt` must be set if `--validation_image` is set");
  if (
    a.validation_image != null &&
    a.validation_prompt != null &&
    a.validation_image.length !== 1 &&
    a.validation_prompt.length !== 1 &&
    a.validation_image.length !== a.validation_prompt.length
  ) {
    throw new ArgsError("Must provide either 1 `--validation_image`, 1 `--validation_prompt`, or the same number of `--validation_prompt`s and `--validation_image`s");
  }
  if (a.report_to === "wandb" && a.hub_token != null) {
    throw new ArgsError("You cannot use both --report_to=wandb and --hub_token due to a security risk of exposing your token. Please use `hf auth login` to authenticate with the Hub.");
  }
  // Checks the script leaves to later failures (get_scheduler, the dataloader, range errors); made early and clear.
  checkLrScheduler(a.lr_scheduler, "--lr_scheduler");
  validateTrainingNumbers(a, (k) => `--${k}`);
  if (a.mixed_precision != null && !["no", "fp16", "bf16"].includes(a.mixed_precision)) {
    throw new ArgsError(`argument --mixed_precision: invalid choice: '${a.mixed_precision}' (choose from 'no', 'fp16', 'bf16')`);
  }

  const warnings: string[] = [];
  if (a.mixed_precision === "fp16" || a.mixed_precision === "bf16") warnings.push(MIXED_PRECISION_WARNING(a.mixed_precision));
  if (a.allow_tf32) warnings.push("--allow_tf32 acts on the native GPU engine only (node-gpu: TF32 matmuls/convolutions on Ampere and newer); wasm, cpu and the native CPU engine compute plain float32.");
  const trackers = (() => {
    try {
      return planTrackers(a.report_to);
    } catch (e) {
      throw new ArgsError((e as Error).message);
    }
  })();
  if (trackers.note) warnings.push(trackers.note);
  if (a.dataloader_num_workers > 0) warnings.push(`--dataloader_num_workers ${a.dataloader_num_workers}: data is decoded by a prefetching loader in this process; the value only sets how far it reads ahead.`);
  return warnings;
}

/** Larger batches fit no device (the loader alone would hold 2^20 images); the check turns a RangeError deep in the
 *  loader into a clear message. The same bound holds for the micro-batches of one step (an accumulation of 1e11 would
 *  run for ever on any dataset size that fills it). */
export const MAX_TRAIN_BATCH_SIZE = 2 ** 20;

/** One scheduler name check for the command line and the cells (`label`: the option as the caller names it). */
export function checkLrScheduler(name: string, label: string): void {
  if (!(LR_SCHEDULERS as readonly string[]).includes(name)) {
    throw new ArgsError(`${label} '${name}' is not a valid scheduler; choose from ${LR_SCHEDULERS.join(", ")}`);
  }
}

/**
 * The numeric options' ranges, checked wherever a run is configured — the CLI (validateTrainArgs) and the trainer
 * itself, so notebook cells and library callers get the same refusals. Where PyTorch raises (AdamW's lr, betas, eps,
 * weight decay) its bounds are used; elsewhere the values the script would silently misuse (NaN clipping, 0 epochs,
 * 0 cycles, negative workers) are refused. Options absent from `o` are skipped. `flag` names an option in messages.
 */
export function validateTrainingNumbers(o: Partial<Record<keyof TrainArgs, unknown>>, flag: (k: string) => string = (k) => k): void {
  const bad = (k: string, want: string) => new ArgsError(`${flag(k)} must be ${want}, got ${o[k as keyof TrainArgs]}`);
  const num = (k: keyof TrainArgs): number | null => {
    const v = o[k];
    if (v === undefined || v === null) return null;
    if (typeof v !== "number") throw bad(k, "a number");
    return v;
  };
  const check = (k: keyof TrainArgs, ok: (v: number) => boolean, want: string) => {
    const v = num(k);
    if (v !== null && !ok(v)) throw bad(k, want);
  };
  const int = (lo: number, hi = Number.MAX_SAFE_INTEGER) => (v: number) => Number.isSafeInteger(v) && v >= lo && v <= hi;
  // 0 is PyTorch's (and the script's) to accept: a run that changes nothing, to try a pipeline end to end
  check("learning_rate", (v) => v >= 0 && Number.isFinite(v), ">= 0 and finite (PyTorch's AdamW refuses other values)");
  check("adam_beta1", (v) => v >= 0 && v < 1, "in [0, 1) (PyTorch's AdamW refuses other values)");
  check("adam_beta2", (v) => v >= 0 && v < 1, "in [0, 1) (PyTorch's AdamW refuses other values)");
  check("adam_epsilon", (v) => v >= 0 && Number.isFinite(v), ">= 0 and finite (PyTorch's AdamW refuses other values)");
  check("adam_weight_decay", (v) => v >= 0 && Number.isFinite(v), ">= 0 and finite (PyTorch's AdamW refuses other values)");
  check("max_grad_norm", (v) => v >= 0 && Number.isFinite(v), ">= 0 and finite (0 turns clipping off; NaN, inf or a negative norm would silently do the same)");
  check("resolution", int(8), "a positive integer");
  if (typeof o.resolution === "number" && o.resolution % 8 !== 0) {
    throw new ArgsError(`${flag("resolution")} must be divisible by 8 for consistently sized encoded images between the VAE and the controlnet encoder.`);
  }
  check("train_batch_size", int(1, MAX_TRAIN_BATCH_SIZE), `a positive integer, at most ${MAX_TRAIN_BATCH_SIZE}`);
  check("gradient_accumulation_steps", int(1, MAX_TRAIN_BATCH_SIZE), `a positive integer, at most ${MAX_TRAIN_BATCH_SIZE}`);
  check("checkpointing_steps", int(1), "a positive integer");
  // 0 as the script: every earlier checkpoint is removed before a new one is saved (the newest alone stays)
  check("checkpoints_total_limit", int(0), "an integer >= 0 (or unset: keep every checkpoint)");
  check("validation_steps", int(1), "a positive integer");
  // 0 is the script's way to log only the conditioning images
  check("num_validation_images", int(0), "an integer >= 0");
  check("lr_warmup_steps", int(0), "an integer >= 0");
  check("lr_num_cycles", int(1), "a positive integer");
  check("lr_power", Number.isFinite, "a finite number");
  check("dataloader_num_workers", int(0), "an integer >= 0");
  check("ema_decay", (v) => v >= 0 && v <= 1, "in [0, 1]");
  check("snr_gamma", (v) => v > 0 && Number.isFinite(v), "a positive finite number");
  check("max_train_steps", int(1), "a positive integer");
  check("seed", int(0, 2 ** 32 - 1), "an integer in [0, 4294967295] (numpy's seed range: the script's set_seed refuses others)");
  check("max_train_samples", int(1), "a positive integer (or unset: every row)");
  // the epoch count decides the length only without max_train_steps: 0 epochs would save an untrained ControlNet
  if (o.max_train_steps === undefined || o.max_train_steps === null) check("num_train_epochs", int(1), "a positive integer (or give max_train_steps)");
}

/** The --help text. */
export function trainArgsHelp(prog = "train_controlnet"): string {
  const lines = [
    `usage: ${prog} --pretrained_model_name_or_path PATH (--dataset_name NAME | --train_data_dir DIR) [options]`,
    "",
    "options:",
    // argparse's own entry comes first
    "  -h, --help",
    "      show this help message and exit",
  ];
  for (const a of TRAIN_ARG_SPECS) {
    const meta = a.type === "bool" ? "" : a.nargs === "+" ? ` ${a.name.toUpperCase()} [${a.name.toUpperCase()} ...]` : ` ${a.name.toUpperCase()}`;
    const def = a.type === "bool" || a.default === null ? "" : ` (default: ${a.default})`;
    const tags = [a.required ? "required" : "", a.extension ? "extension" : "", a.choices ? `one of ${a.choices.join("/")}` : ""].filter(Boolean);
    lines.push(`  --${a.name}${meta}`);
    lines.push(`      ${a.help}${def}${tags.length ? ` [${tags.join(", ")}]` : ""}`);
  }
  return `${lines.join("\n")}\n`;
}

/** TrainArgs back to a command line (non-default values only; hub_token never included), for model cards and logs. */
export function toArgv(a: TrainArgs): string[] {
  const out: string[] = [];
  for (const spec of TRAIN_ARG_SPECS) {
    const v = (a as unknown as Record<string, unknown>)[spec.name];
    if (spec.name === "hub_token") continue;
    if (v === spec.default || v === null || v === undefined) continue;
    if (spec.type === "bool") {
      if (v) out.push(`--${spec.name}`);
    } else if (Array.isArray(v)) out.push(`--${spec.name}`, ...v.map(String));
    else out.push(`--${spec.name}=${v}`);
  }
  return out;
}
