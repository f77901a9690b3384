/**
 * `controlnet-ts infer …`: the seed README's inference snippet from the command line.
 *
 *   controlnet-ts infer --base ./sd15 --controlnet ./model_out --image ./conditioning_image_1.png \
 *     --prompt "pale golden rod circle with old lace background" --output ./output.png
 *
 * Flags accept snake_case or kebab-case, `--flag value` or `--flag=value`; --controlnet, --image and
 * --controlnet_conditioning_scale repeat for several ControlNets.
 */
import { describeEngine, initEngine } from "../engine/index.js";
import { describeError } from "../io/describe-error.js";
import { parseSchedulerName, SCHEDULER_NAMES } from "../schedulers/index.js";
import { generate, type GenerateOptions } from "./generate.js";
import { CONTROL_MODES, parseControlMode } from "./guidance.js";

interface FlagSpec {
  name: string;
  kind: "string" | "number" | "int" | "bool" | "list" | "numlist";
  help: string;
  aliases?: string[];
}

const FLAGS: FlagSpec[] = [
  { name: "base", kind: "string", help: "base Stable Diffusion pipeline folder or hub id", aliases: ["pretrained_model_name_or_path"] },
  { name: "controlnet", kind: "list", help: "ControlNet folder (repeat for several; default: the base's controlnet/)", aliases: ["controlnet_model_name_or_path"] },
  { name: "image", kind: "list", help: "control image (repeat: one per ControlNet)", aliases: ["control_image", "validation_image"] },
  { name: "prompt", kind: "list", help: "text prompt (repeat for a batch: one image per prompt and --num_images)", aliases: ["validation_prompt"] },
  { name: "negative_prompt", kind: "list", help: "negative prompt (default empty; repeat: one per --prompt)" },
  { name: "steps", kind: "int", help: "denoising steps (default 20)", aliases: ["num_inference_steps"] },
  { name: "scheduler", kind: "string", help: `${SCHEDULER_NAMES.join(" | ")} (default unipc)` },
  { name: "guidance_scale", kind: "number", help: "classifier-free guidance scale (default 7.5)" },
  { name: "seed", kind: "int", help: "seed of our generator (default 0; not torch's RNG)" },
  { name: "num_images", kind: "int", help: "images per prompt (default 1)", aliases: ["num_images_per_prompt", "num_validation_images"] },
  { name: "height", kind: "int", help: "output height (default: the control image's, floored to a multiple of the VAE scale factor: 8 for Stable Diffusion)" },
  { name: "width", kind: "int", help: "output width (default: the control image's, floored to a multiple of the VAE scale factor: 8 for Stable Diffusion)" },
  { name: "controlnet_conditioning_scale", kind: "numlist", help: "ControlNet residual scale (repeat or comma-separate per ControlNet; default 1)" },
  { name: "guess_mode", kind: "bool", help: "guess mode: ControlNet on the conditional batch only" },
  { name: "control_mode", kind: "string", help: `${CONTROL_MODES.join(" | ")}: ControlNet on both halves of the guidance batch (default), or on the conditional half only` },
  { name: "control_guidance_start", kind: "numlist", help: "fraction of steps before ControlNet starts (default 0)" },
  { name: "control_guidance_end", kind: "numlist", help: "fraction of steps after which ControlNet stops (default 1)" },
  { name: "eta", kind: "number", help: "DDIM eta (default 0)" },
  { name: "clip_skip", kind: "int", help: "use the text encoder's output this many layers before the last" },
  { name: "output", kind: "string", help: "output PNG (default ./output.png; several images → output-0.png, …)" },
  { name: "variant", kind: "string", help: "weight variant of the base's models, e.g. fp16" },
  { name: "controlnet_variant", kind: "string", help: "weight variant of the ControlNet(s) (default: none, as ControlNetModel.from_pretrained)" },
  { name: "revision", kind: "string", help: "branch, tag or commit of a hub --base (a hub ControlNet is taken at its main)" },
  { name: "cache_dir", kind: "string", help: "hub cache folder (default: huggingface_hub's, $HF_HUB_CACHE)" },
  { name: "backend", kind: "string", help: "tfjs backend: node-gpu | node | wasm | cpu (default: best available)" },
  { name: "help", kind: "bool", help: "show this help", aliases: ["h"] },
];

export function inferUsage(): string {
  const lines = FLAGS.map((f) => `  --${f.name}${f.kind === "bool" ? "" : " <value>"}`.padEnd(42) + f.help);
  return `usage: controlnet-ts infer --base <dir> --controlnet <dir> --image <png> --prompt <text> [options]\n\n${lines.join("\n")}\n`;
}

export type InferArgs = Record<string, string | number | boolean | string[] | number[] | undefined>;

/** Parses infer flags; throws with a clear message on unknown flags or bad values. */
export function parseInferArgs(argv: readonly string[]): InferArgs {
  const byName = new Map<string, FlagSpec>();
  for (const f of FLAGS) for (const n of [f.name, ...(f.aliases ?? [])]) byName.set(n, f);
  const out: InferArgs = {};
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (!arg.startsWith("-")) throw new Error(`unexpected argument ${JSON.stringify(arg)} (flags start with --)`);
    const eq = arg.indexOf("=");
    const raw = (eq >= 0 ? arg.slice(0, eq) : arg).replace(/^--?/, "").replace(/-/g, "_");
    const spec = byName.get(raw);
    if (!spec) throw new Error(`unknown flag --${raw}\n\n${inferUsage()}`);
    if (spec.kind === "bool") {
      out[spec.name] = eq >= 0 ? !/^(0|false|no)$/i.test(arg.slice(eq + 1)) : true;
      continue;
    }
    const value = eq >= 0 ? arg.slice(eq + 1) : argv[++i];
    if (value === undefined) throw new Error(`--${spec.name} needs a value`);
    const num = (v: string) => {
      const n = Number(v);
      if (v.trim() === "" || !Number.isFinite(n)) throw new Error(`--${spec.name}: ${JSON.stringify(v)} is not a number`);
      if (spec.kind === "int" && !Number.isInteger(n)) throw new Error(`--${spec.name}: ${v} is not an integer`);
      return n;
    };
    // a one-value flag given twice was the last one silently (a second --seed, a second --output): said instead
    if ((spec.kind === "string" || spec.kind === "number" || spec.kind === "int") && out[spec.name] !== undefined) {
      throw new Error(`--${spec.name} is given twice (${JSON.stringify(out[spec.name])}, ${JSON.stringify(value)}); it takes one value`);
    }
    if (spec.kind === "string") out[spec.name] = value;
    else if (spec.kind === "number" || spec.kind === "int") out[spec.name] = num(value);
    else if (spec.kind === "list") out[spec.name] = [...((out[spec.name] as string[] | undefined) ?? []), value];
    else out[spec.name] = [...((out[spec.name] as number[] | undefined) ?? []), ...value.split(",").map(num)];
  }
  return out;
}

/** The GenerateOptions a parsed command line means. */
export function inferOptions(a: InferArgs): GenerateOptions {
  for (const req of ["base", "image", "prompt"]) {
    if (a[req] === undefined) throw new Error(`--${req} is required\n\n${inferUsage()}`);
  }
  const one = <T>(v: T[] | undefined): T | T[] | undefined => (v === undefined ? undefined : v.length === 1 ? v[0] : v);
  // counts named by their flags here (the pipeline would refuse them by its option names, after loading the models)
  for (const flag of ["steps", "num_images"]) {
    const v = a[flag];
    if (v !== undefined && !((v as number) >= 1)) throw new Error(`--${flag} must be a positive integer, got ${v}`);
  }
  const prompts = (a.prompt as string[]).length;
  const negatives = (a.negative_prompt as string[] | undefined)?.length ?? 0;
  if (negatives > 1 && negatives !== prompts) throw new Error(`--negative_prompt is given ${negatives} times for ${prompts} --prompt(s): give one, or one per prompt`);
  return {
    base: a.base as string,
    controlnet: one(a.controlnet as string[] | undefined),
    image: one(a.image as string[])!,
    prompt: one(a.prompt as string[])!,
    negativePrompt: one(a.negative_prompt as string[] | undefined),
    steps: (a.steps as number | undefined) ?? 20,
    scheduler: a.scheduler === undefined ? "unipc" : parseSchedulerName(a.scheduler as string),
    guidanceScale: a.guidance_scale as number | undefined,
    seed: (a.seed as number | undefined) ?? 0,
    numImagesPerPrompt: a.num_images as number | undefined,
    height: a.height as number | undefined,
    width: a.width as number | undefined,
    controlnetConditioningScale: one(a.controlnet_conditioning_scale as number[] | undefined),
    guessMode: a.guess_mode as boolean | undefined,
    controlMode: a.control_mode === undefined ? undefined : parseControlMode(a.control_mode as string),
    controlGuidanceStart: one(a.control_guidance_start as number[] | undefined),
    controlGuidanceEnd: one(a.control_guidance_end as number[] | undefined),
    eta: a.eta as number | undefined,
    clipSkip: a.clip_skip as number | undefined,
    output: (a.output as string | undefined) ?? "output.png",
    variant: a.variant as string | undefined,
    controlnetVariant: a.controlnet_variant as string | undefined,
    revision: a.revision as string | undefined,
    cacheDir: a.cache_dir as string | undefined,
  };
}

/**
 * CLI entry: returns the exit code (0 ok, 2 usage error, 1 failure). `extra` lets the integrator supply the
 * tokenizer loader (and tests a preloaded pipeline).
 */
export async function inferMain(argv: string[], extra: Partial<GenerateOptions> = {}): Promise<number> {
  let opts: GenerateOptions;
  let args: InferArgs;
  try {
    args = parseInferArgs(argv);
    if (args.help) {
      process.stdout.write(inferUsage());
      return 0;
    }
    opts = { ...inferOptions(args), ...extra };
  } catch (e) {
    process.stderr.write(`controlnet-ts infer: ${(e as Error).message}\n`);
    return 2;
  }
  try {
    const engine = await initEngine(args.backend ? { backend: args.backend as string } : {});
    // the engine and, where a better one is missing, why and the command that adds it (as train_controlnet says)
    process.stderr.write(`${describeEngine(engine)}\n`);
    const tty = process.stderr.isTTY;
    const r = await generate({
      ...opts,
      // one line rewritten in a terminal; a line per step where the output is a file or a pipe
      onStep: (s) => process.stderr.write(tty ? `\rstep ${s.step + 1}/${s.numSteps} (t=${s.timestep})${s.step + 1 === s.numSteps ? "\n" : ""}` : `step ${s.step + 1}/${s.numSteps} (t=${s.timestep})\n`),
    });
    for (const f of r.files) process.stdout.write(`${f}\n`);
    process.stderr.write(`${r.images.length} image(s) ${r.width}×${r.height}, seed ${r.seed}: load ${r.loadSeconds.toFixed(1)} s, generate ${r.seconds.toFixed(1)} s\n`);
    return 0;
  } catch (e) {
    process.stderr.write(`controlnet-ts infer: ${describeError(e)}\n`);
    if (process.env.CONTROLNET_TS_DEBUG) process.stderr.write(`${(e as Error)?.stack ?? e}\n`);
    return 1;
  }
}

/** The bin's subcommand convention (`main(args)`). */
export const main = inferMain;
