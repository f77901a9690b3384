"""Reference check (Python is for reference only): diffusers loads data/tiny-sd and samples from it.

    tests/reference/.venv/bin/python data/recipes/check_diffusers.py [data/tiny-sd]
"""
import sys

import torch
from diffusers import ControlNetModel, StableDiffusionPipeline

folder = sys.argv[1] if len(sys.argv) > 1 else "data/tiny-sd"
pipe = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None, requires_safety_checker=False)
print({k: type(v).__name__ for k, v in pipe.components.items() if v is not None})
ids = pipe.tokenizer("red circle with blue background").input_ids
assert ids == [998, 568, 844, 556, 520, 644, 999], ids
img = pipe("red circle with blue background", height=32, width=32, num_inference_steps=4,
           generator=torch.Generator().manual_seed(0), output_type="np").images
assert img.shape == (1, 32, 32, 3), img.shape
cn = ControlNetModel.from_unet(pipe.unet, conditioning_embedding_out_channels=(16, 32, 64))
print("ok: image", img.shape, "controlnet params", sum(p.numel() for p in cn.parameters()))
