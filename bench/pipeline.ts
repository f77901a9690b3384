/**
 * `npm run bench -- pipeline [--images N] [--steps S] [--no-torch]`
 *
 * Seconds per image of StableDiffusionControlNetPipeline at the bench-mid config (shared/reference/bench-configs.md:
 * the bench-mid UNet and its from_unet ControlNet, text embeddings 77×64, latents 32×32 → 256×256 images, control
 * image 256×256) with UniPC (from the SD1.5 PNDM scheduler config, like the training validation), 20 steps,
 * guidance 7.5 (so the networks run on a batch of 2), VAE decode included. bench-mid names no VAE; we use an
 * SD-shaped VAE narrowed to block_out_channels (32, 64, 128, 128) (8× upsampling, 4 latent channels). Prompt
 * embeddings are given (no tokenizer/text encoder), identically on both sides.
 *
 * When tests/reference/.venv exists, diffusers' own StableDiffusionControlNetPipeline runs the same config in a
 * persistent Python process with the same thread count; images alternate (ours, theirs, ours, …) so both see the
 * same machine load. Reported: median seconds per image after one warm-up image each, and the ratio.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import readline from "node:readline";
import { spawn } from "node:child_process";
import { initEngine, tf } from "../lib/engine/index.js";
import { AutoencoderKL, ControlNetModel, UNet2DConditionModel } from "../lib/models/index.js";
import { schedulerFromConfig } from "../lib/schedulers/index.js";
import { StableDiffusionControlNetPipeline } from "../lib/pipeline/index.js";
import { BENCH_MID_UNET } from "./models.js";
import { noVenv, parseOptions, REFERENCE_VENV_HELP, referencePython, median, type BenchUsage } from "./_cli.js";

export const BENCH_MID_VAE = {
  block_out_channels: [32, 64, 128, 128],
  down_block_types: ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
  up_block_types: ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"],
  in_channels: 3,
  out_channels: 3,
  latent_channels: 4,
  layers_per_block: 2,
  norm_num_groups: 32,
  sample_size: 256,
};

/** SD1.5's scheduler config (the validation pipelines build UniPC from it, as train_controlnet's validation does). */
export const SD15_SCHEDULER = {
  _class_name: "PNDMScheduler", beta_end: 0.012, beta_schedule: "scaled_linear", beta_start: 0.00085,
  num_train_timesteps: 1000, set_alpha_to_one: false, skip_prk_steps: true, steps_offset: 1, trained_betas: null, clip_sample: false,
};


export const usage: BenchUsage = {
  summary: "seconds per image of the bench-mid ControlNet pipeline (UniPC, guidance 7.5, 256 px, VAE decode), ours beside diffusers' pipeline on PyTorch CPU",
  options: [
    { flag: "--images", value: "N", default: 3, help: "measured images after one warm-up image" },
    { flag: "--steps", value: "S", default: 20, help: "UniPC steps per image" },
    { flag: "--no-torch", help: "skip the diffusers reference" },
  ],
  env: [REFERENCE_VENV_HELP, "CONTROLNET_TS_BACKEND, CONTROLNET_TS_THREADS: the engine and its threads"],
};

const TORCH_SCRIPT = String.raw`
import json, sys, time, torch
from diffusers import UNet2DConditionModel, ControlNetModel, AutoencoderKL, PNDMScheduler, UniPCMultistepScheduler
from diffusers import StableDiffusionControlNetPipeline
unet_cfg, vae_cfg, sched_cfg = json.loads(sys.argv[1]), json.loads(sys.argv[2]), json.loads(sys.argv[3])
steps, threads = int(sys.argv[4]), int(sys.argv[5])
torch.set_num_threads(threads); torch.manual_seed(0)
unet = UNet2DConditionModel(**unet_cfg); cn = ControlNetModel.from_unet(unet); vae = AutoencoderKL(**vae_cfg)
sched = UniPCMultistepScheduler.from_config(PNDMScheduler.from_config(sched_cfg).config)
pipe = StableDiffusionControlNetPipeline(vae=vae, text_encoder=None, tokenizer=None, unet=unet, controlnet=cn,
    scheduler=sched, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
pipe.set_progress_bar_config(disable=True)
pos = torch.randn(1, 77, 64); neg = torch.randn(1, 77, 64); cond = torch.rand(1, 3, 256, 256)
g = torch.Generator().manual_seed(0)
print(json.dumps({"ready": True, "torch": torch.__version__, "diffusers": __import__("diffusers").__version__}), flush=True)
for line in sys.stdin:
    t0 = time.perf_counter()
    with torch.no_grad():
        img = pipe(prompt_embeds=pos, negative_prompt_embeds=neg, image=cond, num_inference_steps=steps,
                   guidance_scale=7.5, generator=g, output_type="np").images
    print(json.dumps({"seconds": time.perf_counter() - t0, "shape": list(img.shape)}), flush=True)
`;

/** A persistent diffusers process: `next()` generates one image and resolves its seconds. */
async function startTorch(steps: number, threads: number): Promise<{ info: Record<string, unknown>; next(): Promise<number>; close(): void } | { error: string }> {
  const py = referencePython();
  if (!fs.existsSync(py)) return { error: noVenv(py) };
  const script = path.join(os.tmpdir(), `controlnet-ts-bench-pipeline-${process.pid}.py`);
  fs.writeFileSync(script, TORCH_SCRIPT);
  const child = spawn(py, [script, JSON.stringify(BENCH_MID_UNET), JSON.stringify(BENCH_MID_VAE), JSON.stringify(SD15_SCHEDULER), String(steps), String(threads)], {
    env: { ...process.env, OMP_NUM_THREADS: String(threads), HF_HUB_OFFLINE: "1" },
    stdio: ["pipe", "pipe", "pipe"],
  });
  let stderr = "";
  child.stderr.on("data", (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  const lines = readline.createInterface({ input: child.stdout });
  const waiting: ((l: string | null) => void)[] = [];
  lines.on("line", (l) => waiting.shift()?.(l));
  child.on("exit", () => { while (waiting.length) waiting.shift()!(null); });
  const nextLine = () => new Promise<string | null>((r) => waiting.push(r));
  const first = await nextLine();
  fs.rmSync(script, { force: true });
  if (!first?.startsWith("{")) {
    child.kill();
    return { error: `diffusers pipeline failed to start: ${stderr.trim().split("\n").slice(-3).join(" | ")}` };
  }
  return {
    info: JSON.parse(first) as Record<string, unknown>,
    async next() {
      child.stdin.write("go\n");
      const l = await nextLine();
      if (!l?.startsWith("{")) throw new Error(`diffusers pipeline failed: ${stderr.trim().split("\n").slice(-3).join(" | ")}`);
      return (JSON.parse(l) as { seconds: number }).seconds;
    },
    close() {
      child.stdin.end();
    },
  };
}

export async function run(args: string[]): Promise<object> {
  const o = parseOptions("pipeline", args, usage);
  const images = Math.max(1, o.num("--images"));
  const steps = o.num("--steps");
  const info = await initEngine();
  console.log(`[bench pipeline] bench-mid ControlNet pipeline, UniPC ${steps} steps, guidance 7.5, 256×256, ${info.backend} ${info.threads} thread(s)`);
  const unet = new UNet2DConditionModel(BENCH_MID_UNET, { seed: 1, trainable: false });
  const pipe = new StableDiffusionControlNetPipeline({
    unet,
    controlnet: ControlNetModel.fromUnet(unet, { seed: 2 }),
    vae: new AutoencoderKL(BENCH_MID_VAE, { seed: 3, trainable: false }),
    scheduler: schedulerFromConfig("unipc", SD15_SCHEDULER),
  });
  const pos = tf.randomNormal([1, 77, 64], 0, 1, "float32", 1) as tf.Tensor3D;
  const neg = tf.randomNormal([1, 77, 64], 0, 1, "float32", 2) as tf.Tensor3D;
  const cond = tf.randomUniform([1, 256, 256, 3], 0, 1, "float32", 3) as tf.Tensor4D;
  const oursOnce = async (i: number) => {
    const out = await pipe.call({ promptEmbeds: pos, negativePromptEmbeds: neg, image: cond, numInferenceSteps: steps, guidanceScale: 7.5, seed: i + 1, outputType: "tensor" });
    out.pixels!.dispose();
    return out.seconds;
  };

  let torch: Awaited<ReturnType<typeof startTorch>> = { error: "skipped (--no-torch)" };
  if (!o.has("--no-torch")) {
    torch = await startTorch(steps, info.threads);
    console.log(`[bench pipeline] diffusers: ${"error" in torch ? torch.error : JSON.stringify(torch.info)}`);
  }
  const hasTorch = !("error" in torch);
  const ours: number[] = [];
  const theirs: number[] = [];
  for (let i = 0; i <= images; i++) {
    const a = await oursOnce(i);
    const b = hasTorch ? await (torch as { next(): Promise<number> }).next() : NaN;
    const tag = i === 0 ? "warm-up" : `image ${i}/${images}`;
    console.log(`[bench pipeline] ${tag}: ours ${a.toFixed(2)} s${hasTorch ? `, diffusers ${b.toFixed(2)} s` : ""}`);
    if (i > 0) {
      ours.push(a);
      if (hasTorch) theirs.push(b);
    }
  }
  if (hasTorch) (torch as { close(): void }).close();
  tf.dispose([pos, neg, cond]);
  const oursS = +median(ours).toFixed(3);
  const theirsS = hasTorch ? +median(theirs).toFixed(3) : null;
  return {
    bench: "pipeline",
    config: "bench-mid",
    scheduler: "UniPCMultistepScheduler (from SD1.5 PNDM config)",
    steps,
    guidance_scale: 7.5,
    size: [256, 256],
    vae_block_out_channels: BENCH_MID_VAE.block_out_channels,
    engine: { backend: info.backend, threads: info.threads },
    images,
    ours_seconds_per_image: oursS,
    diffusers_seconds_per_image: theirsS,
    diffusers: hasTorch ? (torch as { info: Record<string, unknown> }).info : torch,
    ratio_ours_over_diffusers: theirsS ? +(oursS / theirsS).toFixed(2) : null,
    load_average: os.loadavg().map((x) => +x.toFixed(1)),
  };
}
