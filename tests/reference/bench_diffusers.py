"""diffusers side of `npm run bench -- compare` (reference tooling only; never imported by the product or tests).

A persistent process: argv[1] is a JSON config {unet, vae, batch, resolution, seq, threads, val_steps}. It builds
the bench-mid UNet (random weights), ControlNetModel.from_unet, AdamW (lr 1e-5, wd 1e-2), a DDPM noise scheduler
and a UniPC validation pipeline, prints one JSON "ready" line (versions, FLOPs of one training step counted by
torch.utils.flop_counter), then answers stdin lines:
  train -> one ControlNet training step (train_controlnet.py's math, latents given), {"seconds", "loss"}
  image -> one validation image (guidance 7.5, val_steps UniPC steps), {"seconds"}
  mem   -> {"rss_peak_delta": ru_maxrss growth over the process' first training step}
"""
import json
import resource
import sys
import time

import torch
import torch.nn.functional as F
import diffusers
from diffusers import (AutoencoderKL, ControlNetModel, DDPMScheduler, PNDMScheduler, StableDiffusionControlNetPipeline,
                       UNet2DConditionModel, UniPCMultistepScheduler)

SD15_SCHED = dict(beta_end=0.012, beta_schedule="scaled_linear", beta_start=0.00085, num_train_timesteps=1000,
                  set_alpha_to_one=False, skip_prk_steps=True, steps_offset=1, clip_sample=False)

cfg = json.loads(sys.argv[1])
torch.set_num_threads(int(cfg["threads"]))
torch.manual_seed(0)
B, R, S = int(cfg["batch"]), int(cfg["resolution"]), int(cfg.get("seq", 77))
L = R // 8
unet = UNet2DConditionModel(**cfg["unet"])
cn = ControlNetModel.from_unet(unet)
vae = AutoencoderKL(**cfg["vae"])
unet.requires_grad_(False)
vae.requires_grad_(False)
cn.train()
opt = torch.optim.AdamW(cn.parameters(), lr=1e-5, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8)
noise_sched = DDPMScheduler(**{k: v for k, v in SD15_SCHED.items() if k in ("beta_end", "beta_schedule", "beta_start", "num_train_timesteps")})
D = unet.config.cross_attention_dim
latents = torch.randn(B, 4, L, L)
ehs = torch.randn(B, S, D)
cond = torch.rand(B, 3, R, R)


def train_step():
    noise = torch.randn_like(latents)
    t = torch.randint(0, noise_sched.config.num_train_timesteps, (B,)).long()
    noisy = noise_sched.add_noise(latents, noise, t)
    down, mid = cn(noisy, t, encoder_hidden_states=ehs, controlnet_cond=cond, return_dict=False)
    pred = unet(noisy, t, encoder_hidden_states=ehs, down_block_additional_residuals=down,
                mid_block_additional_residual=mid).sample
    loss = F.mse_loss(pred.float(), noise.float(), reduction="mean")
    loss.backward()
    torch.nn.utils.clip_grad_norm_(cn.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return float(loss)


pipe = StableDiffusionControlNetPipeline(vae=vae, text_encoder=None, tokenizer=None, unet=unet, controlnet=cn,
                                         scheduler=UniPCMultistepScheduler.from_config(PNDMScheduler.from_config(SD15_SCHED).config),
                                         safety_checker=None, feature_extractor=None, requires_safety_checker=False)
pipe.set_progress_bar_config(disable=True)
pos = torch.randn(1, S, D)
neg = torch.randn(1, S, D)
vcond = torch.rand(1, 3, R, R)
gen = torch.Generator().manual_seed(0)

rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
flops = None
try:  # the first training step, counted (conv/matmul FLOPs of forward + backward as autograd runs them)
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as fc:
        train_step()
    flops = fc.get_total_flops()
except Exception:  # older torch: no counter; the step still serves as warm-up
    train_step()
rss_delta = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss_before
print(json.dumps({"ready": True, "torch": torch.__version__, "diffusers": diffusers.__version__,
                  "threads": torch.get_num_threads(), "step_flops": flops,
                  # the vector ISA torch's own kernels dispatch to (AVX2 or AVX512): it moves the comparison
                  "cpu_capability": torch.backends.cpu.get_cpu_capability()}), flush=True)
for line in sys.stdin:
    cmd = line.strip()
    if cmd == "train":
        t0 = time.perf_counter()
        loss = train_step()
        print(json.dumps({"seconds": time.perf_counter() - t0, "loss": loss}), flush=True)
    elif cmd == "image":
        t0 = time.perf_counter()
        with torch.no_grad():
            pipe(prompt_embeds=pos, negative_prompt_embeds=neg, image=vcond, num_inference_steps=int(cfg["val_steps"]),
                 guidance_scale=7.5, generator=gen, output_type="np")
        print(json.dumps({"seconds": time.perf_counter() - t0}), flush=True)
    elif cmd == "mem":
        print(json.dumps({"rss_peak_delta": rss_delta}), flush=True)
    else:
        print(json.dumps({"error": f"unknown command {cmd!r}"}), flush=True)
