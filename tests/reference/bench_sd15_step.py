"""diffusers side of `npm run bench -- sd15-step` (reference tooling only; never imported by the product or tests).

argv[1] is a JSON config {unet, resolution, threads, steps}. Builds the SD1.5-config UNet (random weights), ControlNetModel.from_unet,
gradient checkpointing on both (as ours), AdamW (lr 1e-5, wd 1e-2); runs `steps` ControlNet training steps at batch 1
(train_controlnet.py's math: latents and text embeddings given, ε target, MSE, clip 1.0, zero_grad(set_to_none));
prints one JSON line: versions, threads, seconds per step, peak RSS of the process (ru_maxrss) and RSS after building.
"""
import json
import resource
import sys
import time

import torch
import torch.nn.functional as F
import diffusers
from diffusers import ControlNetModel, DDPMScheduler, UNet2DConditionModel

cfg = json.loads(sys.argv[1])
torch.set_num_threads(int(cfg["threads"]))
torch.manual_seed(0)
R = int(cfg["resolution"])
L = R // 8
unet = UNet2DConditionModel(**cfg["unet"])
cn = ControlNetModel.from_unet(unet)
unet.requires_grad_(False)
unet.enable_gradient_checkpointing()
cn.enable_gradient_checkpointing()
cn.train()
opt = torch.optim.AdamW(cn.parameters(), lr=1e-5, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8)
sched = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)
latents = torch.randn(1, 4, L, L)
ehs = torch.randn(1, 77, unet.config.cross_attention_dim)
cond = torch.rand(1, 3, R, R)


def rss():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmRSS:"))


built_rss = rss()
seconds = []
loss = None
for i in range(int(cfg.get("steps", 1))):
    t0 = time.perf_counter()
    noise = torch.randn_like(latents)
    t = torch.tensor([500])
    noisy = sched.add_noise(latents, noise, t)
    down, mid = cn(noisy, t, encoder_hidden_states=ehs, controlnet_cond=cond, return_dict=False)
    pred = unet(noisy, t, encoder_hidden_states=ehs, down_block_additional_residuals=down,
                mid_block_additional_residual=mid).sample
    loss = F.mse_loss(pred.float(), noise.float(), reduction="mean")
    loss.backward()
    torch.nn.utils.clip_grad_norm_(cn.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    seconds.append(time.perf_counter() - t0)
    print(f"[sd15 diffusers] step {i + 1}: {seconds[-1]:.1f} s", file=sys.stderr, flush=True)
print(json.dumps({"torch": torch.__version__, "diffusers": diffusers.__version__, "threads": torch.get_num_threads(),
                  "unet_params": sum(p.numel() for p in unet.parameters()), "controlnet_params": sum(p.numel() for p in cn.parameters()),
                  "seconds": seconds, "loss": float(loss), "rss_built_bytes": built_rss,
                  "rss_peak_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}), flush=True)
