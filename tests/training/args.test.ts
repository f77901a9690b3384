import { test } from "node:test";
import assert from "node:assert/strict";
import { ArgsError, TRAIN_ARG_SPECS, closeMatches, makeTrainArgs, parseTrainArgs, toArgv, trainArgsHelp } from "../../lib/training/args.js";

const base = ["--pretrained_model_name_or_path", "sd15", "--dataset_name", "fusing/fill50k"];

test("the script's 52 flags with its defaults (plus 4 marked extensions)", () => {
  assert.equal(TRAIN_ARG_SPECS.filter((a) => !a.extension).length, 52);
  assert.deepEqual(TRAIN_ARG_SPECS.filter((a) => a.extension).map((a) => a.name), ["snr_gamma", "offload_optimizer_state", "use_ema", "ema_decay"]);
  const { args, warnings } = parseTrainArgs(base);
  assert.deepEqual(warnings, []);
  const expected: Record<string, unknown> = {
    output_dir: "controlnet-model", resolution: 512, train_batch_size: 4, num_train_epochs: 1, max_train_steps: null,
    checkpointing_steps: 500, checkpoints_total_limit: null, gradient_accumulation_steps: 1, learning_rate: 5e-6,
    lr_scheduler: "constant", lr_warmup_steps: 500, lr_num_cycles: 1, lr_power: 1, adam_beta1: 0.9, adam_beta2: 0.999,
    adam_weight_decay: 1e-2, adam_epsilon: 1e-8, max_grad_norm: 1, logging_dir: "logs", report_to: "tensorboard",
    mixed_precision: null, image_column: "image", conditioning_image_column: "conditioning_image", caption_column: "text",
    proportion_empty_prompts: 0, validation_prompt: null, validation_image: null, num_validation_images: 4,
    validation_steps: 100, tracker_project_name: "train_controlnet", seed: null, gradient_checkpointing: false,
    use_8bit_adam: false, set_grads_to_none: false, enable_xformers_memory_efficient_attention: false, scale_lr: false,
    push_to_hub: false, allow_tf32: false, dataloader_num_workers: 0, snr_gamma: null, offload_optimizer_state: false,
  };
  for (const [k, v] of Object.entries(expected)) assert.deepEqual((args as unknown as Record<string, unknown>)[k], v, k);
  assert.equal(args.pretrained_model_name_or_path, "sd15");
});

test("the README's fill50k command parses verbatim: --flag=value, --flag value, store_true, nargs='+'", () => {
  const argv = [
    "--pretrained_model_name_or_path=stable-diffusion-v1-5/stable-diffusion-v1-5",
    "--output_dir=model_out",
    "--dataset_name=fusing/fill50k",
    "--resolution=512",
    "--learning_rate=1e-5",
    "--validation_image", "./conditioning_image_1.png", "./conditioning_image_2.png",
    "--validation_prompt", "red circle with blue background", "cyan circle with brown floral background",
    "--train_batch_size=1",
    "--gradient_accumulation_steps=4",
    "--gradient_checkpointing",
    "--use_8bit_adam",
    "--enable_xformers_memory_efficient_attention",
    "--set_grads_to_none",
    "--checkpointing_steps", "2",
    "--resume_from_checkpoint", "latest",
    "--seed", "7",
    "--lr_power", "-.5e1",
  ];
  const { args } = parseTrainArgs(argv);
  assert.equal(args.pretrained_model_name_or_path, "stable-diffusion-v1-5/stable-diffusion-v1-5");
  assert.equal(args.learning_rate, 1e-5);
  assert.deepEqual(args.validation_image, ["./conditioning_image_1.png", "./conditioning_image_2.png"]);
  assert.deepEqual(args.validation_prompt, ["red circle with blue background", "cyan circle with brown floral background"]);
  assert.equal(args.train_batch_size, 1);
  assert.equal(args.gradient_accumulation_steps, 4);
  assert.ok(args.gradient_checkpointing && args.use_8bit_adam && args.enable_xformers_memory_efficient_attention && args.set_grads_to_none);
  assert.equal(args.checkpointing_steps, 2);
  assert.equal(args.resume_from_checkpoint, "latest");
  assert.equal(args.seed, 7);
  assert.equal(args.lr_power, -5); // a negative number is a value, as in argparse (a seed of -1 is now out of range)
});

test("argparse details: last occurrence wins, unique prefixes, Python int/float syntax", () => {
  const { args } = parseTrainArgs([...base, "--resolution", "256", "--resolution=64", "--learning_r", "2e-4", "--max_train_steps", "1_000", "--adam_eps=1E-6", "--validation_prompt=a", "--validation_image", "x.png"]);
  assert.equal(args.resolution, 64);
  assert.equal(args.learning_rate, 2e-4);
  assert.equal(args.max_train_steps, 1000);
  assert.equal(args.adam_epsilon, 1e-6);
  assert.deepEqual(args.validation_prompt, ["a"]);
  assert.throws(() => parseTrainArgs([...base, "--lr", "1"]), /ambiguous option: --lr could match --lr_scheduler, --lr_warmup_steps, --lr_num_cycles, --lr_power/);
  assert.throws(() => parseTrainArgs([...base, "--resolution", "5.0"]), /invalid int value: '5.0'/);
  assert.throws(() => parseTrainArgs([...base, "--learning_rate", "fast"]), /invalid float value: 'fast'/);
  assert.throws(() => parseTrainArgs([...base, "--resolution"]), /--resolution: expected one argument/);
  assert.throws(() => parseTrainArgs([...base, "--validation_prompt", "--validation_image", "x"]), /expected at least one argument/);
  assert.throws(() => parseTrainArgs([...base, "--use_8bit_adam=yes"]), /ignored explicit argument 'yes'/);
  assert.throws(() => parseTrainArgs([...base, "stray"]), /unrecognized arguments: stray/);
  // a dash-led value with a space that names no flag is a value, as argparse's _parse_optional decides
  assert.deepEqual(parseTrainArgs([...base, "--validation_prompt", "-a red circle", "- blue", "--validation_image", "x.png"]).args.validation_prompt, ["-a red circle", "- blue"]);
  assert.throws(() => parseTrainArgs([...base, "--seed=3 x"]), /argument --seed: invalid int value: '3 x'/, "a flag before '=' is a flag, spaces after it or not");
  assert.throws(() => parseTrainArgs([...base, "--validation_prompt", "-x"]), /expected at least one argument/, "no space: a flag, as argparse");
});

test("unknown flags → a clear error with the close matches", () => {
  const err = (argv: string[]) => {
    try {
      parseTrainArgs(argv);
    } catch (e) {
      assert.ok(e instanceof ArgsError);
      return (e as Error).message;
    }
    assert.fail("no error");
  };
  assert.match(err([...base, "--learning_rat3=1"]), /unrecognized arguments: --learning_rat3=1 \(did you mean --learning_rate/); // argparse names the whole token
  assert.match(err([...base, "--train-batch-size", "2"]), /did you mean --train_batch_size/);
  assert.match(err([...base, "--use_8bit_adamw"]), /did you mean --use_8bit_adam/);
  assert.match(err([...base, "--zzzzzzzzzzzzzz"]), /unrecognized arguments: --zzzzzzzzzzzzzz\. Run with --help/);
  assert.deepEqual(closeMatches("--gradient_checkpoint")[0], "--gradient_checkpointing");
});

test("the script's validation rules and messages", () => {
  assert.throws(() => parseTrainArgs(["--dataset_name", "x"]), /the following arguments are required: --pretrained_model_name_or_path/);
  assert.throws(() => parseTrainArgs(["--pretrained_model_name_or_path", "m"]), /Specify either `--dataset_name` or `--train_data_dir`/);
  assert.ok(parseTrainArgs(["--pretrained_model_name_or_path", "m", "--train_data_dir", "d"]).args);
  assert.throws(() => parseTrainArgs([...base, "--resolution", "500"]), /must be divisible by 8/);
  assert.throws(() => parseTrainArgs([...base, "--proportion_empty_prompts", "1.5"]), /range \[0, 1\]/);
  assert.throws(() => parseTrainArgs([...base, "--validation_prompt", "a"]), /`--validation_image` must be set/);
  assert.throws(() => parseTrainArgs([...base, "--validation_image", "a.png"]), /`--validation_prompt` must be set/);
  assert.throws(() => parseTrainArgs([...base, "--validation_image", "a", "b", "--validation_prompt", "p", "q", "r"]), /Must provide either 1/);
  // 1 image for 3 prompts and 3 images for 1 prompt are broadcast, as the script allows
  assert.ok(parseTrainArgs([...base, "--validation_image", "a", "--validation_prompt", "p", "q", "r"]).args);
  assert.ok(parseTrainArgs([...base, "--validation_image", "a", "b", "c", "--validation_prompt", "p"]).args);
  assert.throws(() => parseTrainArgs([...base, "--report_to", "wandb", "--hub_token", "hf_x"]), /--report_to=wandb and --hub_token due to a security risk of exposing your token\. Please use `hf auth login` to authenticate with the Hub\.$/);
  assert.throws(() => parseTrainArgs([...base, "--mixed_precision", "fp8"]), /invalid choice: 'fp8' \(choose from 'no', 'fp16', 'bf16'\)/);
  assert.throws(() => parseTrainArgs([...base, "--lr_scheduler", "exponential"]), /not a valid scheduler/);
  assert.throws(() => parseTrainArgs([...base, "--train_batch_size", "0"]), /positive/);
});

test("--mixed_precision fp16/bf16, --allow_tf32, --report_to wandb: accepted with honest warnings; unknown trackers refused", () => {
  for (const mode of ["fp16", "bf16"]) {
    const { args, warnings } = parseTrainArgs([...base, "--mixed_precision", mode]);
    assert.equal(args.mixed_precision, mode);
    assert.equal(warnings.length, 1);
    assert.match(warnings[0]!, new RegExp(`--mixed_precision ${mode}: TensorFlow.js has no float16/bfloat16 compute`));
    assert.match(warnings[0]!, /runs entirely in float32/);
    assert.match(warnings[0]!, /--gradient_checkpointing, --use_8bit_adam/);
  }
  assert.deepEqual(parseTrainArgs([...base, "--mixed_precision", "no"]).warnings, []);
  assert.match(parseTrainArgs([...base, "--allow_tf32"]).warnings[0]!, /acts on the native GPU engine only/);
  // --report_to as accelerate: "all" = every available tracker (TensorBoard here), a known tracker we lack is logged
  // to TensorBoard and the warning says so, an unknown one is refused with accelerate's message
  assert.deepEqual(parseTrainArgs([...base, "--report_to", "all"]).warnings, []);
  for (const t of ["wandb", "comet_ml", "mlflow"]) {
    const w = parseTrainArgs([...base, "--report_to", t]).warnings;
    assert.equal(w.length, 1);
    assert.match(w[0]!, new RegExp(`--report_to ${t}: controlnet-ts has no ${t} integration, so nothing is sent to ${t}; the run is logged to TensorBoard instead`));
  }
  assert.throws(() => parseTrainArgs([...base, "--report_to", "neptune"]), /Unsupported logging capability: neptune\. Choose between all, aim, tensorboard, wandb/);
  // --num_validation_images 0 (only the conditioning images are logged) is accepted, as by the script
  assert.equal(parseTrainArgs([...base, "--num_validation_images", "0"]).args.num_validation_images, 0);
  assert.throws(() => parseTrainArgs([...base, "--num_validation_images", "-1"]), />= 0/);
});

test("help, notebook construction and argv round trip (the token never echoed)", () => {
  const h = parseTrainArgs([...base, "--help"]);
  assert.equal(h.help, true);
  assert.equal(parseTrainArgs(["-h"]).help, true);
  const text = trainArgsHelp();
  for (const a of TRAIN_ARG_SPECS) assert.ok(text.includes(`--${a.name}`), a.name);
  // argparse's -h, --help is the first option, and the text ends with a newline as argparse's print_help
  assert.match(text, /\noptions:\n {2}-h, --help\n {6}show this help message and exit\n {2}--pretrained_model_name_or_path /);
  assert.match(text, /[^\n]\n$/);
  // the help says what --report_to does here, not the script's "Supported platforms are … wandb and comet_ml"
  assert.doesNotMatch(text, /Supported platforms/);
  assert.match(text, /--report_to REPORT_TO\n.*logs to TensorBoard \(and train_log\.jsonl\) only, and says so for the others/);
  const m = makeTrainArgs({ pretrained_model_name_or_path: "m", train_data_dir: "d", resolution: 64, hub_token: "hf_secret" });
  assert.equal(m.args.resolution, 64);
  assert.equal(m.args.learning_rate, 5e-6);
  assert.throws(() => makeTrainArgs({ pretrained_model_name_or_path: "m", train_data_dir: "d", resolutoin: 64 } as never), /unknown training option 'resolutoin' \(did you mean resolution/);
  assert.throws(() => makeTrainArgs({ pretrained_model_name_or_path: "m", train_data_dir: "d", resolution: 63 }), /divisible by 8/);
  const argv = toArgv(m.args);
  assert.ok(!argv.join(" ").includes("hf_secret"));
  const again = parseTrainArgs(argv).args;
  assert.deepEqual({ ...again, hub_token: "hf_secret" }, m.args);
  const full = parseTrainArgs([...base, "--validation_image", "a", "b", "--validation_prompt", "p", "--gradient_checkpointing", "--seed", "3"]).args;
  assert.deepEqual(parseTrainArgs(toArgv(full)).args, full);
});
