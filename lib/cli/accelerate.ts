/**
 * `controlnet-ts accelerate launch [accelerate flags] train_controlnet.py <script flags>` and
 * `controlnet-ts accelerate config [default]`: the seed README's commands, mapped onto `train_controlnet`.
 *
 * launch: the script's flags pass through unchanged; of accelerate's own flags and config file, what has a meaning
 * here is applied — mixed_precision no/fp16/bf16 (the script's own flag wins, as in accelerate; accelerate's fp8 is
 * not one of the script's choices and is noted as having no effect), DeepSpeed's optimizer offload
 * (→ --offload_optimizer_state) and gradient_accumulation_steps, num_cpu_threads_per_process (→ engine threads) — and
 * every other setting is named in one note saying it has no effect. More than one process (num_processes is the total
 * over all machines, as accelerate's) runs through `controlnet-ts launch` (lib/cli/launch.ts: TensorFlow's collectives).
 *
 * config / config default: accelerate's write_basic_config (mixed_precision no/fp16/bf16: train_controlnet.py's
 * choices) — a JSON config written once (never overwritten) — in
 * controlnet-ts' own cache folder, so Python accelerate's file is never touched; launch reads `--config_file`, else
 * that file, else accelerate's default config if the user has one.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { main as trainMain } from "./train.js";
import { launch, scriptCommand, type LaunchOptions } from "./launch.js";
import { makeDirs } from "../io/dirs.js";
import { visibleGpus } from "../engine/native/gpu.js";

/** One process on this machine (accelerate's defaults for the rendezvous). */
const SINGLE: LaunchPlan["processes"] = { numProcesses: 1, numMachines: 1, machineRank: 0, mainProcessIp: "127.0.0.1", mainProcessPort: 29500 };

type Config = Record<string, unknown>;

/** accelerate launch's flags that take a value / take none: every flag of launch_command_parser (accelerate 1.x,
 *  accelerate/commands/launch.py), so a real accelerate flag is named as having no effect, never "unrecognized". */
const VALUE_FLAGS = new Set([
  "config_file", "mixed_precision", "num_processes", "num_machines", "num_cpu_threads_per_process", "dynamo_backend",
  "dynamo_mode", "gpu_ids", "machine_rank", "main_process_ip", "main_process_port", "t", "tee", "log_dir", "role",
  "rdzv_backend", "rdzv_conf", "max_restarts", "monitor_interval", "vm", "env", "main_training_function",
  "deepspeed_config_file", "zero_stage", "offload_optimizer_device", "offload_param_device",
  "offload_optimizer_nvme_path", "offload_param_nvme_path", "gradient_accumulation_steps", "gradient_clipping",
  "zero3_init_flag", "zero3_save_16bit_model", "deepspeed_hostfile", "deepspeed_exclusion_filter",
  "deepspeed_inclusion_filter", "deepspeed_multinode_launcher", "deepspeed_moe_layer_cls_names", "fsdp_version",
  "fsdp_offload_params", "fsdp_min_num_params", "fsdp_sharding_strategy", "fsdp_reshard_after_forward",
  "fsdp_auto_wrap_policy", "fsdp_transformer_layer_cls_to_wrap", "fsdp_backward_prefetch", "fsdp_state_dict_type",
  "fsdp_forward_prefetch", "fsdp_use_orig_params", "fsdp_cpu_ram_efficient_loading", "fsdp_sync_module_states",
  "fsdp_activation_checkpointing", "megatron_lm_tp_degree", "megatron_lm_use_custom_fsdp",
  "megatron_lm_no_load_optim", "megatron_lm_eod_mask_loss", "megatron_lm_overlap_cpu_optimizer_d2h_h2d",
  "megatron_lm_no_save_optim", "megatron_lm_optimizer_cpu_offload", "megatron_lm_use_precision_aware_optimizer",
  "megatron_lm_decoder_last_pipeline_num_layers", "megatron_lm_pp_degree", "megatron_lm_num_micro_batches",
  "megatron_lm_sequence_parallelism", "megatron_lm_recompute_activations", "megatron_lm_use_distributed_optimizer",
  "megatron_lm_gradient_clipping", "megatron_lm_recompute_granularity", "megatron_lm_recompute_method",
  "megatron_lm_recompute_num_layers", "megatron_lm_attention_backend", "megatron_lm_expert_model_parallel_size",
  "megatron_lm_context_parallel_size", "megatron_lm_attention_dropout", "megatron_lm_hidden_dropout",
  "megatron_lm_attention_softmax_in_fp32", "megatron_lm_expert_tensor_parallel_size",
  "megatron_lm_calculate_per_token_loss", "megatron_lm_use_rotary_position_embeddings", "fp8_backend", "fp8_margin",
  "fp8_interval", "fp8_format", "fp8_amax_history_len", "fp8_amax_compute_algo", "fp8_override_linear_precision",
  "fp8_opt_level", "fp8_enable_fsdp_float8_all_gather", "fp8_pad_inner_dim", "aws_access_key_id",
  "aws_secret_access_key", "mpirun_hostfile", "parallelism_config_dp_replicate_size",
  "parallelism_config_dp_shard_size", "parallelism_config_tp_size", "parallelism_config_cp_size",
  "parallelism_config_cp_backend", "parallelism_config_cp_comm_strategy", "parallelism_config_sp_size",
  "parallelism_config_sp_backend", "parallelism_config_sp_seq_length",
  "parallelism_config_sp_seq_length_is_variable", "parallelism_config_sp_attn_implementation",
]);
const BOOL_FLAGS = new Set([
  "quiet", "q", "cpu", "multi_gpu", "tpu", "enable_cpu_affinity", "dynamo_use_fullgraph", "dynamo_use_dynamic",
  "dynamo_use_regional_compilation", "use_deepspeed", "use_fsdp", "use_parallelism_config", "use_megatron_lm",
  "same_network", "m", "module", "no_python", "tpu_cluster", "no_tpu_cluster", "tpu_use_sudo", "downcast_bf16",
  "fp8_use_autocast_during_eval", "debug",
]);
/** accelerate launch's integer / float flags (argparse `type=int` / `float`): anything else is refused, as accelerate does. */
const INT_FLAGS = new Set([
  "num_processes", "num_machines", "num_cpu_threads_per_process", "machine_rank", "main_process_port",
  "max_restarts", "zero_stage", "gradient_accumulation_steps", "fsdp_min_num_params", "megatron_lm_tp_degree",
  "megatron_lm_decoder_last_pipeline_num_layers", "megatron_lm_pp_degree", "megatron_lm_num_micro_batches",
  "megatron_lm_recompute_num_layers", "megatron_lm_expert_model_parallel_size", "megatron_lm_context_parallel_size",
  "megatron_lm_expert_tensor_parallel_size", "fp8_margin", "fp8_interval", "fp8_amax_history_len",
  "parallelism_config_dp_replicate_size", "parallelism_config_dp_shard_size", "parallelism_config_tp_size",
  "parallelism_config_cp_size", "parallelism_config_sp_size",
]);
const FLOAT_FLAGS = new Set(["monitor_interval", "gradient_clipping", "megatron_lm_gradient_clipping", "megatron_lm_attention_dropout", "megatron_lm_hidden_dropout"]);
/** accelerate's mixed_precision choices; train_controlnet.py's are these without fp8. */
const MP_CHOICES = ["no", "fp16", "bf16", "fp8"];
const SCRIPT_MP_CHOICES = ["no", "fp16", "bf16"];
const quoteList = (xs: readonly string[]) => xs.map((x) => `'${x}'`).join(", ");
const isInt = (v: unknown) => (typeof v === "number" && Number.isInteger(v)) || (typeof v === "string" && /^\s*[+-]?\d+\s*$/.test(v));
/** Python's float(): decimal or exponent notation, inf / nan. */
const isFloat = (v: string) => /^\s*[+-]?((\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?|inf(inity)?|nan)\s*$/i.test(v);
/** A flag's value as argparse takes it: the next token, unless that is missing or another flag (not a negative number). */
const takesValue = (v: string | undefined) => v !== undefined && v !== "" && !(v.startsWith("-") && !/^-\d/.test(v));
/** What launch applies; everything else is reported as having no effect. */
const APPLIED = new Set(["config_file", "num_processes", "mixed_precision", "num_cpu_threads_per_process", "gradient_accumulation_steps", "offload_optimizer_device", "use_deepspeed", "multi_gpu", "num_machines", "machine_rank", "main_process_ip", "main_process_port", "quiet", "q", "debug", "gpu_ids", "cpu"]);

function cacheHome(): string {
  return process.env.XDG_CACHE_HOME ?? path.join(os.homedir(), ".cache");
}

/** controlnet-ts' default accelerate config (JSON, like write_basic_config's file). */
export function defaultConfigFile(): string {
  return path.join(cacheHome(), "controlnet-ts", "accelerate", "default_config.yaml");
}

/** Python accelerate's default config file ($HF_HOME/accelerate/default_config.yaml). */
function accelerateConfigFile(): string {
  return path.join(process.env.HF_HOME ?? path.join(cacheHome(), "huggingface"), "accelerate", "default_config.yaml");
}

function scalar(v: string): unknown {
  const t = v.trim().replace(/^(['"])(.*)\1$/, "$2");
  if (/^(true|false)$/i.test(t)) return t.toLowerCase() === "true";
  if (/^(null|~|)$/.test(t)) return null;
  if (/^[+-]?\d+(\.\d+)?$/.test(t)) return Number(t);
  return t;
}

/**
 * An accelerate config file: JSON (write_basic_config's) or the YAML `accelerate config` writes — flat `key: value`
 * lines with one indented level (deepspeed_config, fsdp_config). No YAML library is a dependency of this package, and
 * accelerate's files use no more of YAML than that; anything else in them is ignored.
 */
export function readAccelerateConfig(file: string): Config {
  const text = fs.readFileSync(file, "utf8");
  try {
    return JSON.parse(text) as Config;
  } catch {
    /* YAML */
  }
  const out: Config = {};
  let section: Config | null = null;
  for (const line of text.split(/\r?\n/)) {
    if (!line.trim() || line.trimStart().startsWith("#")) continue;
    const m = /^(\s*)([A-Za-z0-9_]+):\s*(.*)$/.exec(line);
    if (!m) continue;
    if (m[1]!.length === 0) {
      section = null;
      if (m[3] === "") out[m[2]!] = section = {};
      else out[m[2]!] = scalar(m[3]!);
    } else if (section) section[m[2]!] = scalar(m[3]!);
  }
  return out;
}

export interface LaunchPlan {
  /** `--help` / `-h` among accelerate's flags: print LAUNCH_USAGE, run nothing. */
  help?: boolean;
  /** The train_controlnet argv. */
  argv: string[];
  /** The script as given (`train_controlnet.py`): how its messages name it. */
  prog?: string;
  /** Engine threads (num_cpu_threads_per_process), or null. */
  threads: number | null;
  /** CUDA_VISIBLE_DEVICES for the run (--gpu_ids, --cpu: as accelerate sets it), or null to leave it. */
  visibleDevices?: string | null;
  /** What was mapped and what has no effect. */
  notes: string[];
  /** A reason not to run (exit 2). */
  error: string | null;
  /** accelerate's process layout, for `controlnet-ts launch` when more than one process. */
  processes: Pick<LaunchOptions, "numProcesses" | "numMachines" | "machineRank" | "mainProcessIp" | "mainProcessPort">;
}

/** An accelerate config's settings that launch does not apply and that ask for something (not their defaults). */
function configNoEffect(config: Config, file: string | undefined): string[] {
  const asks = (v: unknown): boolean => {
    if (v === undefined || v === null || v === false || v === "") return false;
    if (typeof v === "string") return !/^(no|none|false)$/i.test(v);
    if (typeof v === "object") return Object.values(v as Config).some(asks);
    return true;
  };
  const out: string[] = [];
  const dt = config.distributed_type;
  if (typeof dt === "string" && !["NO", "MULTI_CPU", "MULTI_GPU", "DEEPSPEED"].includes(dt)) out.push(`distributed_type ${dt}`);
  for (const key of ["downcast_bf16", "enable_cpu_affinity", "fsdp_config", "megatron_lm_config", "dynamo_config", "fp8_config", "parallelism_config", "ipex_config", "mpirun_config"]) {
    if (asks(config[key])) out.push(typeof config[key] === "object" ? `${key} (${Object.keys(config[key] as Config).join(", ")})` : `${key} ${String(config[key])}`);
  }
  const dsFile = (config.deepspeed_config as Config | undefined)?.deepspeed_config_file;
  if (asks(dsFile)) out.push(`deepspeed_config_file ${String(dsFile)} (not read)`);
  return out.map((o) => `${o} in ${path.basename(file ?? "the config")}`);
}

/** Maps `accelerate launch` arguments onto train_controlnet's (no side effects; `main` applies it). */
export function planLaunch(argv: readonly string[]): LaunchPlan {
  const flags: Config = {};
  /** Each flag as the user wrote it (`-m`, `--multi-gpu`), for the messages. */
  const written = new Map<string, string>();
  let k = 0;
  const fail = (error: string): LaunchPlan => ({ argv: [], threads: null, notes: [], error, processes: SINGLE });
  for (; k < argv.length; k++) {
    const tok = argv[k]!;
    if (!tok.startsWith("-")) break;
    const eq = tok.indexOf("=");
    const spelled = eq >= 0 ? tok.slice(0, eq) : tok;
    const name = spelled.replace(/^-+/, "").replace(/-/g, "_");
    // argparse: a single dash takes a one-letter flag (-h, -m, -q), two dashes a long one
    const shapeOk = spelled.startsWith("--") ? name.length > 1 : name.length === 1;
    if (shapeOk && (name === "help" || name === "h")) {
      return { argv: [], threads: null, notes: [], error: null, processes: SINGLE, help: true };
    } else if (shapeOk && BOOL_FLAGS.has(name)) {
      flags[name] = true;
      written.set(name, spelled);
    } else if (shapeOk && VALUE_FLAGS.has(name)) {
      const v = eq >= 0 ? tok.slice(eq + 1) : argv[k + 1];
      if (!takesValue(v)) return fail(`accelerate launch: argument ${spelled}: expected one argument`);
      if (eq < 0) k++;
      if (INT_FLAGS.has(name) && !isInt(v)) return fail(`accelerate launch: argument ${spelled}: invalid int value: '${v}'`);
      if (FLOAT_FLAGS.has(name) && !isFloat(v!)) return fail(`accelerate launch: argument ${spelled}: invalid float value: '${v}'`);
      if (name === "mixed_precision" && !MP_CHOICES.includes(v!)) {
        return fail(`accelerate launch: argument ${spelled}: invalid choice: '${v}' (choose from ${quoteList(MP_CHOICES)})`);
      }
      flags[name] = name === "config_file" ? v : scalar(v!);
      written.set(name, spelled);
    } else {
      return fail(`accelerate launch: unrecognized argument ${tok} (controlnet-ts maps accelerate launch's own flags; put train_controlnet.py before the script's flags)`);
    }
  }
  const script = argv[k];
  if (script === undefined) return fail("accelerate launch: the script is missing: controlnet-ts accelerate launch [accelerate flags] train_controlnet.py [script flags]");
  if (scriptCommand(script) !== "train_controlnet") {
    return fail(`accelerate launch: controlnet-ts runs diffusers' examples/controlnet/train_controlnet.py only, not ${script}`);
  }
  const scriptArgs = argv.slice(k + 1);

  const configFile = (flags.config_file as string | undefined) ?? [defaultConfigFile(), accelerateConfigFile()].find((f) => fs.existsSync(f));
  let config: Config = {};
  if (configFile) {
    if (!fs.existsSync(configFile)) return fail(`accelerate launch: --config_file ${configFile} does not exist`);
    config = readAccelerateConfig(configFile);
  }
  // the config's integers, checked as accelerate's dataclasses would (a NaN process count would run one process silently)
  for (const [key, v] of [...["num_processes", "num_machines", "machine_rank", "main_process_port"].map((n) => [n, config[n]] as const),
    ["deepspeed_config.gradient_accumulation_steps", (config.deepspeed_config as Config | undefined)?.gradient_accumulation_steps] as const]) {
    if (v !== undefined && v !== null && !isInt(v)) return fail(`accelerate launch: ${key} in ${configFile} should be an integer, not '${String(v)}'`);
  }
  const ds = (config.deepspeed_config ?? {}) as Config;
  const pick = (flag: string, fromConfig: unknown) => (flags[flag] !== undefined ? flags[flag] : fromConfig);
  // the GPUs, as accelerate chooses them: CUDA_VISIBLE_DEVICES (each launched process then takes its own of them)
  const gpuIds = pick("gpu_ids", config.gpu_ids);
  const cpu = flags.cpu === true || config.use_cpu === true;
  const visibleDevices = cpu ? "-1" : typeof gpuIds === "string" && gpuIds !== "all" && gpuIds !== "" ? gpuIds : null;
  const gpuCount = visibleDevices === "-1" ? 0 : visibleDevices ? visibleDevices.split(",").length : visibleGpus().length;
  const processes: LaunchPlan["processes"] = {
    // --multi_gpu alone: one process per GPU it may use, as accelerate takes torch.cuda.device_count() (2 without GPUs)
    numProcesses: Number(pick("num_processes", config.num_processes ?? (flags.multi_gpu ? Math.max(2, gpuCount) : 1))),
    numMachines: Number(pick("num_machines", config.num_machines ?? 1)),
    machineRank: Number(pick("machine_rank", config.machine_rank ?? 0)),
    mainProcessIp: String(pick("main_process_ip", config.main_process_ip ?? SINGLE.mainProcessIp)),
    mainProcessPort: Number(pick("main_process_port", config.main_process_port ?? SINGLE.mainProcessPort)),
  };

  // accelerate's own sanity checks (_validate_launch_command), and a process layout that can run
  if (["multi_gpu", "cpu", "tpu", "use_deepspeed", "use_fsdp"].filter((f) => flags[f] === true).length > 1) {
    return fail("accelerate launch: You can only use one of `--cpu`, `--multi_gpu`, `--tpu`, `--use_deepspeed`, `--use_fsdp` at a time.");
  }
  if (flags.multi_gpu === true && flags.num_processes !== undefined && Number(flags.num_processes) < 2) {
    return fail("accelerate launch: You need to use at least 2 processes to use `--multi_gpu`.");
  }
  for (const [what, n] of [["num_processes", processes.numProcesses], ["num_machines", processes.numMachines]] as const) {
    if (!(n >= 1)) return fail(`accelerate launch: ${what} must be at least 1, not ${n}`);
  }

  const notes: string[] = [];
  const out = [...scriptArgs];
  const has = (name: string) => scriptArgs.some((a) => a === `--${name}` || a.startsWith(`--${name}=`));
  const mp = pick("mixed_precision", config.mixed_precision);
  if (typeof mp === "string" && mp !== "no" && !has("mixed_precision")) {
    if (mp === "fp8") {
      // accelerate's choice, not train_controlnet.py's: forwarding it would blame a --mixed_precision the user never typed
      notes.push("mixed_precision fp8 has no effect in controlnet-ts (TensorFlow.js has no fp8 or fp16 dtype; training runs in float32), not forwarded");
    } else if (SCRIPT_MP_CHOICES.includes(mp)) {
      out.push(`--mixed_precision=${mp}`);
      notes.push(`mixed_precision ${mp} → --mixed_precision=${mp}`);
    } else {
      return fail(`accelerate launch: mixed_precision '${mp}' in ${configFile} is not one of ${quoteList(MP_CHOICES)}`);
    }
  }
  const deepspeed = flags.use_deepspeed === true || config.distributed_type === "DEEPSPEED";
  const offload = pick("offload_optimizer_device", ds.offload_optimizer_device);
  if (deepspeed && (offload === "cpu" || offload === "nvme") && !has("offload_optimizer_state")) {
    out.push("--offload_optimizer_state");
    notes.push(`DeepSpeed offload_optimizer_device ${offload} → --offload_optimizer_state (optimizer state and update in host memory)`);
  }
  const accum = pick("gradient_accumulation_steps", deepspeed ? ds.gradient_accumulation_steps : undefined);
  if (accum !== undefined && accum !== null && !has("gradient_accumulation_steps")) {
    out.push(`--gradient_accumulation_steps=${accum}`);
    notes.push(`gradient_accumulation_steps ${accum} → --gradient_accumulation_steps=${accum}`);
  }
  const threads = flags.num_cpu_threads_per_process !== undefined ? Number(flags.num_cpu_threads_per_process) : null;
  if (threads !== null) notes.push(`num_cpu_threads_per_process ${threads} → engine threads (CONTROLNET_TS_THREADS)`);
  if (visibleDevices !== null) notes.push(`${cpu ? "cpu" : `gpu_ids ${gpuIds}`} → CUDA_VISIBLE_DEVICES=${visibleDevices}`);
  const ignored = [
    ...Object.keys(flags).filter((f) => !APPLIED.has(f)).map((f) => written.get(f) ?? `--${f}`),
    ...(deepspeed ? ["DeepSpeed ZeRO stage / parameter offload (the frozen weights are streamed by the planner instead)"] : []),
    // (a DeepSpeed setting: accelerate reads it only with DeepSpeed on)
    ...(!deepspeed && flags.offload_optimizer_device !== undefined ? ["--offload_optimizer_device without --use_deepspeed"] : []),
    ...configNoEffect(config, configFile),
  ];
  if (ignored.length) notes.push(`no effect in controlnet-ts: ${ignored.join(", ")}`);
  if (processes.numProcesses > 1 || processes.numMachines > 1) {
    notes.push(`num_processes ${processes.numProcesses} on ${processes.numMachines} machine(s) → controlnet-ts launch (TensorFlow's collectives)`);
  }
  if (configFile) notes.unshift(`accelerate config: ${configFile}`);
  return { argv: out, threads, visibleDevices, notes, error: null, processes, prog: path.basename(script) };
}

/** write_basic_config: writes the default config once (an existing file is kept, as accelerate does). */
export function writeBasicConfig(opts: { mixedPrecision?: string; saveLocation?: string } = {}): { file: string; written: boolean } {
  const file = opts.saveLocation ?? defaultConfigFile();
  const mp = (opts.mixedPrecision ?? "no").toLowerCase();
  // not accelerate's fp8: train_controlnet.py's --mixed_precision has no such choice (and TensorFlow.js no fp8 dtype)
  if (!SCRIPT_MP_CHOICES.includes(mp)) {
    throw new Error(`\`mixed_precision\` should be one of ${quoteList(SCRIPT_MP_CHOICES)} (train_controlnet.py's choices). Received '${mp}'`);
  }
  if (fs.existsSync(file)) return { file, written: false };
  makeDirs(path.dirname(file));
  const config = { compute_environment: "LOCAL_MACHINE", debug: false, distributed_type: "NO", mixed_precision: mp, num_processes: 1, use_cpu: false };
  fs.writeFileSync(file, JSON.stringify(config, null, 2) + "\n");
  return { file, written: true };
}

const CONFIG_USAGE = `usage: controlnet-ts accelerate config [default] [--config_file PATH] [--mixed_precision no|fp16|bf16]

accelerate's write_basic_config: writes a JSON config once (an existing file is kept) to --config_file, else
${defaultConfigFile()} (Python accelerate's own file is left alone). There is nothing to ask: controlnet-ts runs on
the engine it finds; several processes or machines are accelerate launch's --num_processes / --num_machines.
`;

const LAUNCH_USAGE = `usage: controlnet-ts accelerate launch [accelerate flags] train_controlnet.py [train_controlnet flags]

Runs train_controlnet with the script's flags unchanged. Of accelerate's own flags and config file (--config_file,
else ${defaultConfigFile()}, else accelerate's default_config.yaml):
  --mixed_precision no|fp16|bf16   → the script's --mixed_precision (its own flag wins); fp8 has no effect
                                     (TensorFlow.js has no fp8 or fp16 dtype: training runs in float32)
  --num_processes N, --num_machines N, --machine_rank N, --main_process_ip IP, --main_process_port N, --multi_gpu
                                   → more than one process runs through controlnet-ts launch (TensorFlow's collectives)
  --num_cpu_threads_per_process N  → engine threads (CONTROLNET_TS_THREADS)
  --gpu_ids 0,1 / --cpu (use_cpu)  → CUDA_VISIBLE_DEVICES=0,1 / -1, as accelerate sets it (each process its own GPU)
  --gradient_accumulation_steps N, a DeepSpeed config's gradient_accumulation_steps
                                   → the script's --gradient_accumulation_steps
  --use_deepspeed --offload_optimizer_device cpu|nvme, or a DeepSpeed config with offload_optimizer_device cpu|nvme
                                   → --offload_optimizer_state
Every other flag of accelerate launch (FSDP, Megatron-LM, fp8, dynamo, TPU, torchrun's, …) and config setting is
accepted and named as having no effect.
`;

const USAGE = `usage: controlnet-ts accelerate launch [accelerate flags] train_controlnet.py [train_controlnet flags]
       controlnet-ts accelerate config [default] [--config_file PATH] [--mixed_precision no|fp16|bf16]
`;

/** `accelerate config [default]`'s flags: the values, or an error (argparse's messages), or "help". */
function parseConfigArgs(args: readonly string[]): { values: Record<string, string> } | { error: string } | "help" {
  const values: Record<string, string> = {};
  for (let i = 0; i < args.length; i++) {
    const tok = args[i]!;
    if (tok === "--help" || tok === "-h") return "help";
    const eq = tok.indexOf("=");
    const spelled = eq >= 0 ? tok.slice(0, eq) : tok;
    const name = spelled.replace(/^--/, "").replace(/-/g, "_");
    if (!spelled.startsWith("--") || !["config_file", "mixed_precision"].includes(name)) {
      return { error: `accelerate config: unrecognized argument ${tok} (${USAGE.split("\n")[1]!.trim()})` };
    }
    const v = eq >= 0 ? tok.slice(eq + 1) : args[i + 1];
    if (!takesValue(v)) return { error: `accelerate config: argument ${spelled}: expected one argument` };
    if (eq < 0) i++;
    values[name] = v!;
  }
  return { values };
}

export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (command === "launch") {
    const plan = planLaunch(rest);
    if (plan.help) {
      process.stdout.write(LAUNCH_USAGE);
      return 0;
    }
    if (plan.error) {
      process.stderr.write(`controlnet-ts: error: ${plan.error}\n`);
      return 2;
    }
    for (const n of plan.notes) process.stderr.write(`accelerate launch: ${n}\n`);
    // (before the engine starts and before launch reads the visible GPUs)
    if (plan.visibleDevices) process.env.CUDA_VISIBLE_DEVICES = plan.visibleDevices;
    const p = plan.processes;
    if (p.numProcesses > 1 || p.numMachines > 1) {
      return (await launch({ ...p, threadsPerProcess: plan.threads, command: "train_controlnet", prog: plan.prog, commandArgs: plan.argv })).code;
    }
    if (plan.threads !== null) process.env.CONTROLNET_TS_THREADS = String(plan.threads); // the launch flag is the explicit ask
    return trainMain(plan.argv, { prog: plan.prog });
  }
  if (command === "config") {
    // `accelerate config` asks about the machine; controlnet-ts has one answer (the engine it finds; processes and
    // machines are launch's flags)
    const interactive = rest[0] !== "default";
    const parsed = parseConfigArgs(interactive ? rest : rest.slice(1));
    if (parsed === "help") {
      process.stdout.write(CONFIG_USAGE);
      return 0;
    }
    if ("error" in parsed) {
      process.stderr.write(`controlnet-ts: error: ${parsed.error}\n`);
      return 2;
    }
    try {
      const r = writeBasicConfig({ mixedPrecision: parsed.values.mixed_precision, saveLocation: parsed.values.config_file });
      if (interactive) process.stdout.write("controlnet-ts runs on the engine it finds, so there is nothing to ask: writing the default configuration (several processes or machines: pass --num_processes / --num_machines to accelerate launch or controlnet-ts launch).\n");
      process.stdout.write(r.written
        ? `accelerate configuration saved at ${r.file}\n`
        : `Configuration already exists at ${r.file}, will not override. Pass a different --config_file.\n`);
      return 0;
    } catch (e) {
      process.stderr.write(`controlnet-ts: error: ${(e as Error).message}\n`);
      return 2;
    }
  }
  // accelerate_cli.py: no command prints the help and exits 1 (`if not hasattr(args, "func"): parser.print_help();
  // exit(1)`); -h/--help prints it and exits 0; another word is argparse's error (stderr, exit 2)
  if (command === undefined || command === "--help" || command === "-h") {
    process.stdout.write(USAGE);
    return command === undefined ? 1 : 0;
  }
  process.stderr.write(`${USAGE}controlnet-ts: error: accelerate: unknown command ${JSON.stringify(command)} (controlnet-ts has accelerate launch and accelerate config)\n`);
  return 2;
}
