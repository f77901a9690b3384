/**
 * `npm run bench -- models [--steps N] [--batch B] [--plain | --chunk C] [--no-torch]`
 *
 * UNet+ControlNet at the bench-mid config (shared/reference/bench-configs.md): forward (ControlNet → residuals →
 * UNet, no gradients) and forward+backward (loss = MSE to a fixed target, gradients for the ControlNet only, UNet
 * frozen) — median ms over N steps after one warm-up. When the reference venv (tests/reference/.venv) exists, the
 * same step runs in diffusers on PyTorch CPU with the same thread count, alternating with ours, and the ratio is
 * reported (Python is reference tooling only; the bench works without it).
 *
 * By default the ControlNet runs with gradient checkpointing and both models with chunked attention (256 queries):
 * without them the forward+backward of batch 4 needs about 4.6 GB of live tensors (≈1.16 GB per sample, measured),
 * more than the 4 GiB wasm heap. `--plain` turns both off (use a smaller --batch on wasm).
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { spawnSync } from "node:child_process";
import { initEngine, tf } from "../lib/engine/index.js";
import { ControlNetModel, UNet2DConditionModel } from "../lib/models/index.js";
import { noVenv, parseOptions, REFERENCE_VENV_HELP, referencePython, median, type BenchUsage } from "./_cli.js";

export const BENCH_MID_UNET = {
  block_out_channels: [32, 64, 128],
  layers_per_block: 2,
  down_block_types: ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
  up_block_types: ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
  cross_attention_dim: 64,
  attention_head_dim: 4,
  norm_num_groups: 32,
  in_channels: 4,
  out_channels: 4,
};
/** Parameter counts bench-configs.md states for diffusers. */
export const BENCH_MID_PARAMS = { unet: 4_473_572, controlnet: 2_514_224 };


export const usage: BenchUsage = {
  summary: "bench-mid UNet+ControlNet forward and forward+backward, median ms, ours beside diffusers on PyTorch CPU",
  options: [
    { flag: "--steps", value: "N", default: 5, help: "measured steps after one warm-up" },
    { flag: "--batch", value: "B", default: 4, help: "batch size" },
    { flag: "--chunk", value: "C", default: 256, help: "attention chunk (queries), 0 for none" },
    { flag: "--plain", help: "no gradient checkpointing and no attention chunking (use a smaller --batch on wasm)" },
    { flag: "--no-torch", help: "skip the PyTorch reference" },
  ],
  env: [REFERENCE_VENV_HELP, "CONTROLNET_TS_BACKEND, CONTROLNET_TS_THREADS: the engine and its threads"],
};

const TORCH_SCRIPT = String.raw`
import json, sys, time, torch
from diffusers import UNet2DConditionModel, ControlNetModel
cfg = json.loads(sys.argv[1]); steps = int(sys.argv[2]); batch = int(sys.argv[3]); threads = int(sys.argv[4])
torch.set_num_threads(threads); torch.manual_seed(0)
unet = UNet2DConditionModel(**cfg); cn = ControlNetModel.from_unet(unet)
unet.requires_grad_(False); cn.train()
sample = torch.randn(batch, 4, 32, 32); ehs = torch.randn(batch, 77, 64); cond = torch.rand(batch, 3, 256, 256)
t = torch.randint(0, 1000, (batch,)); target = torch.randn(batch, 4, 32, 32)
def fwd():
    d, m = cn(sample, t, encoder_hidden_states=ehs, controlnet_cond=cond, return_dict=False)
    return unet(sample, t, encoder_hidden_states=ehs, down_block_additional_residuals=d, mid_block_additional_residual=m).sample
def f():
    with torch.no_grad(): fwd()
def fb():
    cn.zero_grad(set_to_none=True); torch.nn.functional.mse_loss(fwd(), target).backward()
out = {}
for name, fn in (("forward_ms", f), ("forward_backward_ms", fb)):
    fn(); ts = []
    for _ in range(steps):
        t0 = time.perf_counter(); fn(); ts.append((time.perf_counter() - t0) * 1000)
    ts.sort(); out[name] = ts[len(ts) // 2]
out["torch"] = torch.__version__
import diffusers; out["diffusers"] = diffusers.__version__
out["params"] = {"unet": sum(p.numel() for p in unet.parameters()), "controlnet": sum(p.numel() for p in cn.parameters())}
print(json.dumps(out))
`;

function runTorch(steps: number, batch: number, threads: number): Record<string, unknown> | { error: string } {
  const py = referencePython();
  if (!fs.existsSync(py)) return { error: noVenv(py) };
  const script = path.join(os.tmpdir(), `controlnet-ts-bench-models-${process.pid}.py`);
  fs.writeFileSync(script, TORCH_SCRIPT);
  try {
    const r = spawnSync(py, [script, JSON.stringify(BENCH_MID_UNET), String(steps), String(batch), String(threads)], {
      encoding: "utf8",
      env: { ...process.env, OMP_NUM_THREADS: String(threads), HF_HUB_OFFLINE: "1" },
      maxBuffer: 1 << 24,
    });
    const last = r.stdout.trim().split("\n").pop() ?? "";
    if (r.status !== 0 || !last.startsWith("{")) return { error: `pytorch bench failed: ${(r.stderr || r.stdout).trim().split("\n").slice(-3).join(" | ")}` };
    return JSON.parse(last) as Record<string, unknown>;
  } finally {
    fs.rmSync(script, { force: true });
  }
}

export async function run(args: string[]): Promise<object> {
  const o = parseOptions("models", args, usage);
  const steps = Math.max(1, o.num("--steps"));
  const batch = o.num("--batch");
  const plain = o.has("--plain");
  const chunk = plain ? 0 : o.num("--chunk");
  const checkpointing = !plain;
  const info = await initEngine();
  console.log(`[bench models] bench-mid UNet+ControlNet, batch ${batch}, latents 32x32, control 256x256, ${info.backend} ${info.threads} thread(s)` +
    `${checkpointing ? ", gradient checkpointing" : ""}${chunk ? `, attention chunk ${chunk}` : ""}`);
  const unet = new UNet2DConditionModel(BENCH_MID_UNET, { seed: 1, trainable: false });
  const cn = ControlNetModel.fromUnet(unet, { seed: 2 });
  if (checkpointing) cn.enableGradientCheckpointing();
  if (chunk) {
    unet.setAttentionChunkSize(chunk);
    cn.setAttentionChunkSize(chunk);
  }
  const params = { unet: unet.numParameters(), controlnet: cn.numParameters() };
  console.log(`[bench models] params: UNet ${params.unet.toLocaleString()} (diffusers ${BENCH_MID_PARAMS.unet.toLocaleString()}), ControlNet ${params.controlnet.toLocaleString()} (diffusers ${BENCH_MID_PARAMS.controlnet.toLocaleString()})`);
  const sample = tf.randomNormal([batch, 32, 32, 4], 0, 1, "float32", 1) as tf.Tensor4D;
  const ehs = tf.randomNormal([batch, 77, 64], 0, 1, "float32", 2) as tf.Tensor3D;
  const cond = tf.randomUniform([batch, 256, 256, 3], 0, 1, "float32", 3) as tf.Tensor4D;
  const t = Array.from({ length: batch }, (_, i) => (i * 997 + 13) % 1000);
  const target = tf.randomNormal([batch, 32, 32, 4], 0, 1, "float32", 4);
  const predict = () => {
    const r = cn.forward(sample, t, ehs, cond);
    return unet.forward(sample, t, ehs, { downBlockAdditionalResiduals: r.downBlockResSamples, midBlockAdditionalResidual: r.midBlockResSample });
  };
  const fwd = () => tf.tidy(() => void predict().dataSync());
  const vars = cn.trainableVariables();
  const fwdBwd = () => {
    const { value, grads } = tf.variableGrads(() => tf.mean(tf.square(tf.sub(predict(), target))) as tf.Scalar, vars);
    value.dataSync();
    for (const g of Object.values(grads)) g.dataSync();
    tf.dispose([value, ...Object.values(grads)]);
  };
  const measure = (name: string, fn: () => void) => {
    const t0 = performance.now();
    fn();
    console.log(`[bench models] ${name}: warm-up ${(performance.now() - t0).toFixed(0)} ms`);
    const ts: number[] = [];
    for (let i = 0; i < steps; i++) {
      const s = performance.now();
      fn();
      ts.push(performance.now() - s);
      console.log(`[bench models] ${name}: step ${i + 1}/${steps} ${ts.at(-1)!.toFixed(0)} ms`);
    }
    return median(ts);
  };
  const ours = { forward_ms: +measure("forward", fwd).toFixed(1), forward_backward_ms: +measure("forward+backward", fwdBwd).toFixed(1) };
  tf.dispose([sample, ehs, cond, target]);
  unet.dispose();
  cn.dispose();

  let torch: Record<string, unknown> | { error: string } = { error: "skipped (--no-torch)" };
  if (!o.has("--no-torch")) {
    console.log(`[bench models] PyTorch reference, same config, ${info.threads} thread(s)…`);
    torch = runTorch(steps, batch, info.threads);
    console.log(`[bench models] PyTorch: ${JSON.stringify(torch)}`);
  }
  const ratio = (k: "forward_ms" | "forward_backward_ms") =>
    typeof (torch as Record<string, unknown>)[k] === "number" ? +(ours[k] / ((torch as Record<string, number>)[k]!)).toFixed(2) : null;
  return {
    bench: "models",
    config: "bench-mid",
    batch,
    steps,
    engine: { backend: info.backend, threads: info.threads },
    gradient_checkpointing: checkpointing,
    attention_chunk: chunk,
    params,
    ours,
    pytorch: torch,
    ratio_ours_over_pytorch: { forward: ratio("forward_ms"), forward_backward: ratio("forward_backward_ms") },
  };
}
