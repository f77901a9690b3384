#!/usr/bin/env python
"""Golden fixtures for controlnet-ts, produced by the real diffusers / transformers / torch (CPU, fp32).

Regenerate everything (CI never runs this; the outputs under tests/fixtures/ are committed):

    bash tests/reference/setup.sh && tests/reference/.venv/bin/python tests/reference/make_fixtures.py

Options:
    --only NAME[,NAME...]        regenerate only these fixtures (models in sd_tiny are loaded from disk)
    --check-ts-output DIR        load a folder written by our TypeScript code with from_pretrained and
      [--expected FILE]          compare its weights (with FILE: a safetensors dump of what TS had in memory,
      [--atol X]                 PyTorch layout; without it: the raw tensors of the folder's own weight files)
    --check-tensorboard LOGDIR   read TensorBoard event files with the real tensorboard and print their content

Every fixture is a folder tests/fixtures/<name>/ with io.safetensors (named inputs and outputs, PyTorch layout,
float32 unless noted) and meta.json (what each tensor is, which model folders it uses). The model folders are
written by diffusers/transformers save_pretrained. See tests/fixtures/README.md.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

# Versions the fixtures were made with. setup.sh installs exactly these; we refuse to run on others, because
# a different diffusers may change numerics or config keys silently.
PINNED = {
    "torch": "2.15.0",
    "diffusers": "0.42.1",
    "transformers": "5.24.0",
    "tokenizers": "0.23.3",
    "huggingface_hub": "2.4.0",
    "safetensors": "0.8.0",
    "numpy": "2.4.6",
}
# The legacy (pure-Python, "slow") CLIPTokenizer of transformers 4.x, installed by setup.sh with --target.
LEGACY_TRANSFORMERS = "4.57.6"

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
FIX = ROOT / "tests" / "fixtures"
LEGACY_DIR = HERE / ".venv" / "legacy-tokenizer"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def check_versions() -> dict:
    import importlib

    found = {}
    for mod, want in PINNED.items():
        have = importlib.import_module(mod).__version__.split("+")[0]
        found[mod] = have
        if have != want:
            sys.exit(f"make_fixtures: {mod} {have} installed, {want} pinned; run tests/reference/setup.sh")
    try:
        import ftfy  # noqa: F401

        sys.exit("make_fixtures: ftfy is installed; the tokenizer fixtures assume it is not")
    except ImportError:
        pass
    return found


# --------------------------------------------------------------------------------------------------------------
# Shared tiny configurations
# --------------------------------------------------------------------------------------------------------------

# SD1.5's scheduler/scheduler_config.json (PNDM), as the hub file has it (reference §4.4).
SD15_SCHEDULER = {
    "_class_name": "PNDMScheduler",
    "_diffusers_version": "0.6.0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
    "clip_sample": False,
}

# diffusers' classic tiny SD test UNet (block_out_channels (32, 64), norm_num_groups 32, cross-attention 32).
UNET_TINY = dict(
    block_out_channels=(32, 64),
    layers_per_block=2,
    sample_size=32,
    in_channels=4,
    out_channels=4,
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=32,
)

# SD2-style features at small width: linear projections, per-block head counts, 1024-wide text context,
# upcast attention.
UNET_SD2STYLE = dict(
    block_out_channels=(8, 16),
    layers_per_block=2,
    sample_size=32,
    in_channels=4,
    out_channels=4,
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=1024,
    attention_head_dim=[2, 4],
    use_linear_projection=True,
    upcast_attention=True,
    norm_num_groups=4,
)

# diffusers' ControlNet pipeline test VAE (tests/pipelines/controlnet/test_controlnet.py): vae_scale_factor 2.
VAE_TINY = dict(
    block_out_channels=[4, 8],
    in_channels=3,
    out_channels=3,
    down_block_types=["DownEncoderBlock2D"] * 2,
    up_block_types=["UpDecoderBlock2D"] * 2,
    latent_channels=4,
    norm_num_groups=2,
)

# diffusers' tiny CLIP text config (quick_gelu is CLIPTextConfig's default hidden_act, as in SD1.x).
CLIP_TINY = dict(
    bos_token_id=0,
    eos_token_id=2,
    hidden_size=32,
    intermediate_size=37,
    layer_norm_eps=1e-05,
    num_attention_heads=4,
    num_hidden_layers=5,
    pad_token_id=1,
    vocab_size=1000,
    max_position_embeddings=77,
)
# SD2.x-like: gelu, wider, its pipeline uses penultimate-style outputs.
CLIP_SD2 = dict(CLIP_TINY, hidden_size=64, intermediate_size=96, num_attention_heads=4, num_hidden_layers=3,
                hidden_act="gelu", projection_dim=64)

LATENT = 16  # latent side used everywhere (images 32x32: the tiny VAE and ControlNet downsample by 2)
PROMPTS = ["A painting of a squirrel eating a burger", "pale golden rod circle with old lace background"]


# --------------------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------------------

def randn(shape, seed: int, scale: float = 1.0):
    import torch

    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float32) * scale


def rand(shape, seed: int, lo: float = 0.0, hi: float = 1.0):
    import torch

    g = torch.Generator().manual_seed(seed)
    return torch.rand(*shape, generator=g, dtype=torch.float32) * (hi - lo) + lo


def perturb_norms(model, seed: int) -> None:
    """Random affine parameters for every GroupNorm/LayerNorm, so that a swapped or missing norm weight/bias in
    the TS port changes the outputs (their default init, weight 1 and bias 0, would hide it)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.GroupNorm, torch.nn.LayerNorm)) and m.weight is not None:
                m.weight.copy_(1 + 0.1 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))


class Fixture:
    """Collects named tensors for one fixture and writes io.safetensors + meta.json."""

    def __init__(self, name: str, proves: str, models: dict | None = None):
        self.name = name
        self.dir = FIX / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proves = proves
        self.models = models or {}
        self.tensors = {}
        self.docs = {}
        self.extra = {}

    def add(self, name: str, t, role: str, doc: str = "") -> None:
        import torch

        t = t.detach().cpu()
        if t.dtype in (torch.int64, torch.int32, torch.long):
            t = t.to(torch.int64)
        else:
            t = t.to(torch.float32)
        assert name not in self.tensors, name
        self.tensors[name] = t.contiguous()
        self.docs[name] = {"shape": list(t.shape), "dtype": "int64" if t.dtype == torch.int64 else "float32",
                           "role": role, "doc": doc}

    def save(self) -> None:
        from safetensors.torch import save_file

        save_file(self.tensors, str(self.dir / "io.safetensors"), metadata={"fixture": self.name})
        meta = {
            "fixture": self.name,
            "proves": self.proves,
            "generated_by": "tests/reference/make_fixtures.py",
            "versions": PINNED,
            "models": self.models,
            **self.extra,
            "tensors": self.docs,
        }
        (self.dir / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=False) + "\n")
        size = sum(p.stat().st_size for p in self.dir.rglob("*") if p.is_file())
        print(f"[fixtures] {self.name}: {len(self.tensors)} tensors, folder {size / 1e6:.2f} MB")


def write_json(path: Path, obj, compact_depth: int | None = None) -> None:
    """Pretty JSON; below compact_depth every value is written on one line (keeps id lists small and diffable)."""

    def enc(o, depth):
        if compact_depth is not None and depth >= compact_depth or not isinstance(o, (dict, list)) or not o:
            return json.dumps(o, ensure_ascii=False, separators=(",", ":"))
        pad = "  " * (depth + 1)
        if isinstance(o, dict):
            items = [f"{pad}{json.dumps(k, ensure_ascii=False)}: {enc(v, depth + 1)}" for k, v in o.items()]
            return "{\n" + ",\n".join(items) + "\n" + "  " * depth + "}"
        return "[\n" + ",\n".join(pad + enc(v, depth + 1) for v in o) + "\n" + "  " * depth + "]"

    path.write_text(enc(obj, 0) + "\n")


# --------------------------------------------------------------------------------------------------------------
# b. tokenizer: a small CLIP-style byte-level BPE vocabulary, learned here (no real CLIP vocab offline)
# --------------------------------------------------------------------------------------------------------------

BPE_CORPUS = """
a painting of a squirrel eating a burger. a photo of a cat sitting on a red chair, high quality, detailed.
pale golden rod circle with old lace background. dark slate blue square on light goldenrod yellow background.
medium sea green triangle with lavender blush border. dodger blue ellipse, misty rose, papaya whip, peach puff.
cornflower blue, dark olive green, forest green, lime green, yellow green, olive drab, lawn green, chartreuse.
alice blue, antique white, aqua marine, azure, beige, bisque, black, blanched almond, blue violet, brown, burly wood,
cadet blue, chocolate, coral, corn silk, crimson, cyan, dark cyan, dark grey, dark khaki, dark magenta, dark orange,
dark orchid, dark red, dark salmon, dark sea green, dark turquoise, dark violet, deep pink, deep sky blue, dim gray,
fire brick, floral white, gainsboro, ghost white, gold, gray, green, honeydew, hot pink, indian red, indigo, ivory,
khaki, lavender, lemon chiffon, light blue, light coral, light cyan, light green, light pink, light salmon,
light sky blue, light steel blue, linen, magenta, maroon, medium blue, medium orchid, medium purple, midnight blue,
mint cream, moccasin, navajo white, navy, orange red, orchid, pale green, pale turquoise, pale violet red, peru,
pink, plum, powder blue, purple, rosy brown, royal blue, saddle brown, salmon, sandy brown, sea shell, sienna,
silver, sky blue, slate gray, snow, spring green, steel blue, tan, teal, thistle, tomato, turquoise, violet, wheat,
white smoke, yellow. the quick brown fox jumps over the lazy dog. it's a beautiful day; we're going to the park and
they've seen the mountains. i'm sure you'll like it, he'd say. a house in the forest at night, with the moon, stars
and a river. portrait of a woman with long hair, oil painting, trending on art station, 4k, 8k, ultra realistic.
a dog and a cat playing in the garden with flowers. landscape with trees, clouds, sky, sun, sunset, mountains.
a futuristic city skyline at dusk, neon lights reflecting on wet streets, cinematic lighting, wide angle lens.
an astronaut riding a horse on mars, digital art, highly detailed, sharp focus, vibrant colors, concept art.
a bowl of fruit on a wooden table: apples, oranges, bananas, grapes and strawberries, still life photography.
"""


def bytes_to_unicode() -> dict:
    """CLIP/GPT-2's reversible byte -> printable-unicode-char table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def learn_bpe(text: str, vocab_size: int) -> tuple[dict, list]:
    """A plain BPE learner over CLIP-style pre-tokenised words. Vocabulary order follows CLIP's:
    256 byte symbols, the same 256 with '</w>', one entry per merge, then <|startoftext|>, <|endoftext|>."""
    import collections

    import regex

    b2u = bytes_to_unicode()
    pat = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""", regex.IGNORECASE)
    words = collections.Counter()
    for piece in pat.findall(" ".join(text.lower().split())):
        sym = "".join(b2u[b] for b in piece.encode("utf-8"))
        words[tuple(sym[:-1]) + (sym[-1] + "</w>",)] += 1

    base = list(b2u.values())
    vocab = base + [v + "</w>" for v in base]
    known = set(vocab)
    merges = []
    n_merges = vocab_size - len(vocab) - 2
    banned = set()
    while len(merges) < n_merges:
        pairs = collections.Counter()
        for w, c in words.items():
            for a, b in zip(w, w[1:]):
                if (a, b) not in banned:
                    pairs[(a, b)] += c
        if not pairs:
            break
        # deterministic: highest count, then lexicographically smallest pair
        best = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))[0]
        joined = best[0] + best[1]
        if joined in known:  # a different split already produced this string: keep vocab entries unique
            banned.add(best)
            continue
        merges.append(best)
        vocab.append(joined)
        known.add(joined)
        new_words = collections.Counter()
        for w, c in words.items():
            out, i = [], 0
            while i < len(w):
                if i < len(w) - 1 and (w[i], w[i + 1]) == best:
                    out.append(joined)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            new_words[tuple(out)] += c
        words = new_words
    assert len(merges) == n_merges, f"corpus too small: {len(merges)} merges"
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return {tok: i for i, tok in enumerate(vocab)}, merges


def _added(content: str) -> dict:
    return {"__type": "AddedToken", "content": content, "lstrip": False, "normalized": True, "rstrip": False,
            "single_word": False}


def write_tokenizer_folder(dst: Path, vocab: dict, merges: list, pad_token: str) -> None:
    """The files of SD's tokenizer/ folder, in the form the hub files have (transformers 4.x era)."""
    dst.mkdir(parents=True, exist_ok=True)
    (dst / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False) + "\n")
    (dst / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    special = {k: {kk: vv for kk, vv in _added(v).items() if kk != "__type"}
               for k, v in (("bos_token", "<|startoftext|>"), ("eos_token", "<|endoftext|>"),
                            ("unk_token", "<|endoftext|>"))}
    special["pad_token"] = pad_token
    write_json(dst / "special_tokens_map.json", special)
    write_json(dst / "tokenizer_config.json", {
        "add_prefix_space": False,
        "bos_token": _added("<|startoftext|>"),
        "do_lower_case": True,
        "eos_token": _added("<|endoftext|>"),
        "errors": "replace",
        "model_max_length": 77,
        "pad_token": pad_token,
        "tokenizer_class": "CLIPTokenizer",
        "unk_token": _added("<|endoftext|>"),
    })


TRICKY_STRINGS = [
    "A painting of a squirrel eating a burger",
    "pale golden rod circle with old lace background",
    "",
    "   ",
    "Hello,   WORLD!!  How's it going? I'm fine; they're here & we've got 3.14159 apples.",
    "MiXeD CaSe WoRdS: ThE QuIcK BrOwN FoX",
    "apostrophes: it's don't we're you've I'm we'll he'd 'quoted' O'Neil’s IT'S THEY'RE",
    "punctuation!!! ... ?!? (parens) [brackets] {braces} @#$%^&*_+=~`|\\/<>;:\"",
    "digits 0123456789 2024-11-26 1,000,000 3.5mm ½ ² ③ ٣",
    "café naïve résumé Ångström — déjà vu, crème brûlée",
    "e\u0301 combining acute vs \u00e9 precomposed, A\u030a",
    "emoji 🐿️🍔 and 👩‍👩‍👧 family 🇯🇵 flag ❤️ heart",
    "中文字符 日本語のテキスト 한국어 텍스트 東京tokyo",
    "Tabs\tand\nnewlines\r\nand\u00a0nbsp\u2003em-space  double  spaces",
    "zero\u200bwidth and soft\u00adhyphen and bom\ufeffmark",
    "control\u0000chars\u0007bell\u001bescape and \ufffd replacement",
    "line\u2028separator\u2029paragraph",
    "ΣΊΣΥΦΟΣ ΟΔΟΣ İstanbul STRASSE Straße ẞ ﬁ ligature",
    "مرحبا بالعالم שלום עולם สวัสดีครับ नमस्ते",
    "<|startoftext|>literal special<|endoftext|> tokens <|ENDOFTEXT|>",
    "wait!what!is!this!pad!token!",
    "supercalifragilisticexpialidocious pneumonoultramicroscopic",
    " ".join(["a"] * 75),
    " ".join(["a"] * 76),
    "a photo of " + ", ".join(["dark slate blue", "medium sea green", "peach puff", "alice blue"] * 12),
    " ".join(f"word{i}" for i in range(60)),
]


def _tokenize_all(tok, strings: list) -> list:
    out = []
    for s in strings:
        padded = tok(s, padding="max_length", max_length=77, truncation=True)
        plain = tok(s)
        out.append({
            "text": s,
            "input_ids": list(padded["input_ids"]),
            "attention_mask": list(padded["attention_mask"]),
            "input_ids_unpadded": list(plain["input_ids"]),
            "tokens": tok.tokenize(s),
        })
    return out


_LEGACY_SNIPPET = r"""
import json, sys
import transformers
from transformers import CLIPTokenizer
req = json.load(sys.stdin)
res = {"transformers": transformers.__version__}
if req.get("resave"):
    src, dst = req["resave"]
    CLIPTokenizer.from_pretrained(src).save_pretrained(dst)
    json.dump(res, sys.stdout)
    sys.exit(0)
for key, folder in req["folders"].items():
    tok = CLIPTokenizer.from_pretrained(folder)
    assert type(tok).__module__.endswith("tokenization_clip"), type(tok)
    assert getattr(tok, "fix_text", "x") is None, "ftfy must not be installed"
    cases = []
    for s in req["strings"]:
        p = tok(s, padding="max_length", max_length=77, truncation=True)
        cases.append({"text": s, "input_ids": p["input_ids"], "attention_mask": p["attention_mask"],
                      "input_ids_unpadded": tok(s)["input_ids"], "tokens": tok.tokenize(s)})
    res[key] = cases
    b = tok(req["batch"], padding="longest")
    res[key + "_batch_longest"] = {"input_ids": b["input_ids"], "attention_mask": b["attention_mask"]}
json.dump(res, sys.stdout)
"""


def make_tokenizer() -> None:
    from transformers import CLIPTokenizer

    vocab, merges = learn_bpe(BPE_CORPUS, 1000)
    dst = FIX / "tokenizer"
    if dst.exists():
        shutil.rmtree(dst)
    write_tokenizer_folder(dst / "tokenizer", vocab, merges, pad_token="<|endoftext|>")
    write_tokenizer_folder(dst / "tokenizer_sd2", vocab, merges, pad_token="!")
    env = dict(os.environ, PYTHONPATH=str(LEGACY_DIR))

    def legacy(req: dict) -> dict:
        proc = subprocess.run([sys.executable, "-c", _LEGACY_SNIPPET], input=json.dumps(req), capture_output=True,
                              text=True, env=env)
        if proc.returncode != 0:
            sys.exit("legacy tokenizer run failed:\n" + proc.stderr[-3000:])
        out = json.loads(proc.stdout)
        assert out.pop("transformers") == LEGACY_TRANSFORMERS
        return out

    # The SD1 folder re-saved by transformers 4.x save_pretrained: its tokenizer_config.json then carries an
    # added_tokens_decoder, as many re-saved hub copies do.
    legacy({"resave": [str(dst / "tokenizer"), str(dst / "tokenizer_resaved")]})
    folders = {"sd1": str(dst / "tokenizer"), "sd2": str(dst / "tokenizer_sd2"),
               "sd1_resaved": str(dst / "tokenizer_resaved")}
    batch = TRICKY_STRINGS[:6]

    results = {}
    cur = {}
    for key, folder in folders.items():
        tok = CLIPTokenizer.from_pretrained(folder)
        cur[key] = _tokenize_all(tok, TRICKY_STRINGS)
        b = tok(batch, padding="longest")
        cur[key + "_batch_longest"] = {"input_ids": b["input_ids"], "attention_mask": b["attention_mask"]}
    results["transformers5"] = cur

    results["legacy_slow"] = legacy({"folders": folders, "strings": TRICKY_STRINGS, "batch": batch})

    write_json(dst / "cases.json", {
        "about": "Expected CLIPTokenizer ids for tricky strings. 'transformers5': transformers "
                 f"{PINNED['transformers']} CLIPTokenizer (tokenizers-backed; what the pinned diffusers pipeline and "
                 f"train_controlnet.py use). 'legacy_slow': transformers {LEGACY_TRANSFORMERS}'s pure-Python "
                 "CLIPTokenizer without ftfy (BasicTokenizer clean-up: control chars dropped, CJK ideographs split, "
                 "NFC, lower case). 'sd1' folder pads with <|endoftext|>, 'sd2' with '!'; 'sd1_resaved' is 'sd1' re-saved by "
                 "transformers 4.x (tokenizer_config.json with added_tokens_decoder). input_ids/attention_mask: "
                 "padding='max_length', max_length=77, truncation=True; input_ids_unpadded: no padding, no "
                 "truncation; *_batch_longest: the first 6 strings with padding='longest'.",
        "folders": {"sd1": "tokenizer", "sd2": "tokenizer_sd2", "sd1_resaved": "tokenizer_resaved"},
        "ftfy_installed": False,
        "versions": {"transformers5": PINNED["transformers"], "legacy_slow": LEGACY_TRANSFORMERS},
        "batch_strings": batch,
        "results": results,
    }, compact_depth=4)
    n_diff = sum(a["input_ids"] != b["input_ids"]
                 for a, b in zip(results["transformers5"]["sd1"], results["legacy_slow"]["sd1"]))
    print(f"[fixtures] tokenizer: vocab {len(vocab)}, merges {len(merges)}, {len(TRICKY_STRINGS)} strings; "
          f"transformers5 and legacy differ on {n_diff}")


# --------------------------------------------------------------------------------------------------------------
# sd_tiny: the tiny StableDiffusionControlNetPipeline folder every model fixture loads its weights from
# --------------------------------------------------------------------------------------------------------------

def reinit_zero_convs(controlnet, seed: int) -> None:
    """ControlNet's zero convolutions (and the zero-initialised conv_out of the conditioning embedding) would make
    every residual exactly zero and most gradients vanish; give them small random values instead."""
    import torch

    g = torch.Generator().manual_seed(seed)
    mods = list(controlnet.controlnet_down_blocks) + [controlnet.controlnet_mid_block,
                                                     controlnet.controlnet_cond_embedding.conv_out]
    with torch.no_grad():
        for m in mods:
            m.weight.copy_(0.1 * torch.randn(m.weight.shape, generator=g))
            m.bias.copy_(0.05 * torch.randn(m.bias.shape, generator=g))


def make_sd_tiny() -> None:
    import torch
    from diffusers import (AutoencoderKL, ControlNetModel, PNDMScheduler, StableDiffusionControlNetPipeline,
                           UNet2DConditionModel)
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    dst = FIX / "sd_tiny"
    if dst.exists():
        shutil.rmtree(dst)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**UNET_TINY)
    perturb_norms(unet, 100)
    torch.manual_seed(1)
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32))
    reinit_zero_convs(controlnet, 101)
    torch.manual_seed(2)
    vae = AutoencoderKL(**VAE_TINY)
    perturb_norms(vae, 102)
    torch.manual_seed(3)
    text_encoder = CLIPTextModel(CLIPTextConfig(**CLIP_TINY))
    perturb_norms(text_encoder, 103)
    tokenizer = CLIPTokenizer.from_pretrained(FIX / "tokenizer" / "tokenizer")
    scheduler = PNDMScheduler.from_config(SD15_SCHEDULER)
    pipe = StableDiffusionControlNetPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                             controlnet=controlnet, scheduler=scheduler, safety_checker=None,
                                             feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(dst, safe_serialization=True)
    # SD's tokenizer/ folder holds vocab.json + merges.txt + the two small configs (what hub SD1.5 has); replace
    # whatever transformers 5 wrote (a tokenizer.json) with exactly those files, then prove it still loads.
    to_hub_style_text_encoder(dst / "text_encoder")
    shutil.rmtree(dst / "tokenizer")
    shutil.copytree(FIX / "tokenizer" / "tokenizer", dst / "tokenizer")
    again = StableDiffusionControlNetPipeline.from_pretrained(dst)
    ids = again.tokenizer(PROMPTS, padding="max_length", max_length=77, truncation=True).input_ids
    assert ids == tokenizer(PROMPTS, padding="max_length", max_length=77, truncation=True).input_ids
    for a, b in zip(again.unet.state_dict().values(), unet.state_dict().values()):
        assert torch.equal(a, b)
    for (ka, a), (kb, b) in zip(again.text_encoder.state_dict().items(), text_encoder.state_dict().items()):
        assert ka == kb and torch.equal(a, b), ka
    write_json(dst / "README.json", {
        "about": "Tiny StableDiffusionControlNetPipeline saved by diffusers save_pretrained (random weights, "
                 "seeded; every norm's weight/bias perturbed; ControlNet zero convs re-initialised to small random "
                 "values). scheduler/ is SD1.5's PNDM config; use from_config to get DDPM/UniPC/DDIM/Euler.",
        "unet": UNET_TINY, "controlnet": "ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32))",
        "vae": VAE_TINY, "text_encoder": CLIP_TINY, "tokenizer": "tests/fixtures/tokenizer/tokenizer (learned BPE)",
        "params": {k: sum(p.numel() for p in m.parameters()) for k, m in
                   (("unet", unet), ("controlnet", controlnet), ("vae", vae), ("text_encoder", text_encoder))},
        "versions": PINNED,
    })
    size = sum(p.stat().st_size for p in dst.rglob("*") if p.is_file())
    print(f"[fixtures] sd_tiny: folder {size / 1e6:.2f} MB")


def to_hub_style_text_encoder(folder: Path) -> None:
    """transformers 5 saves CLIPTextModel keys without the 'text_model.' prefix; the hub SD text encoders (saved
    by transformers 4.x) have it. Rewrite the file in the hub form (transformers 5 loads both)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    f = folder / "model.safetensors"
    with safe_open(str(f), "pt") as h:
        tensors = {("text_model." + k if not k.startswith("text_model.") else k): h.get_tensor(k) for k in h.keys()}
        meta = h.metadata()
    save_file(tensors, str(f), metadata=meta)


def load_sd_tiny(name: str):
    """One component of sd_tiny, loaded with from_pretrained (this also checks that the folder loads)."""
    import diffusers
    import transformers

    sub = FIX / "sd_tiny" / name
    cfg = json.loads((sub / "config.json").read_text())
    if "_class_name" in cfg:
        model = getattr(diffusers, cfg["_class_name"]).from_pretrained(sub)
    else:
        model = getattr(transformers, cfg["architectures"][0]).from_pretrained(sub)
    model.eval()
    return model


def tokenize(prompts: list) -> "torch.Tensor":
    import torch
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(FIX / "sd_tiny" / "tokenizer")
    ids = tok(prompts, padding="max_length", max_length=77, truncation=True).input_ids
    return torch.tensor(ids, dtype=torch.int64)


# --------------------------------------------------------------------------------------------------------------
# a. clip_text_tiny
# --------------------------------------------------------------------------------------------------------------

def make_clip_text_tiny() -> None:
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel

    fx = Fixture("clip_text_tiny", "CLIPTextModel forward: last_hidden_state, every hidden state, pooler_output, "
                 "for quick_gelu (SD1.x), gelu, and a wider SD2-like gelu config.",
                 models={"quick_gelu": "../sd_tiny/text_encoder", "gelu": "text_encoder_gelu",
                         "sd2": "text_encoder_sd2"})
    torch.manual_seed(4)
    gelu = CLIPTextModel(CLIPTextConfig(**dict(CLIP_TINY, hidden_act="gelu")))
    perturb_norms(gelu, 104)
    torch.manual_seed(5)
    sd2 = CLIPTextModel(CLIPTextConfig(**CLIP_SD2))
    perturb_norms(sd2, 105)
    for sub, m in (("text_encoder_gelu", gelu), ("text_encoder_sd2", sd2)):
        if (fx.dir / sub).exists():
            shutil.rmtree(fx.dir / sub)
        m.save_pretrained(fx.dir / sub, safe_serialization=True)

    ids = tokenize(PROMPTS[:1])
    # second row: SD2-style padding (pad id 0, "!"), which moves argmax-based pooling; EOS = 999
    row = [998] + list(range(1, 40)) + [999] + [0] * 36
    ids = torch.cat([ids, torch.tensor([row], dtype=torch.int64)])
    fx.add("input_ids", ids, "input", "row 0: PROMPTS[0] tokenised (pad <|endoftext|>); row 1: synthetic, padded "
                                      "with id 0 as SD2's '!' padding does")
    models = {"quick_gelu": load_sd_tiny("text_encoder"),
              "gelu": CLIPTextModel.from_pretrained(fx.dir / "text_encoder_gelu").eval(),
              "sd2": CLIPTextModel.from_pretrained(fx.dir / "text_encoder_sd2").eval()}
    with torch.no_grad():
        for key, m in models.items():
            out = m(input_ids=ids, output_hidden_states=True)
            fx.add(f"{key}.last_hidden_state", out.last_hidden_state, "output",
                   "after final_layer_norm (what SD1.x feeds the UNet)")
            fx.add(f"{key}.pooler_output", out.pooler_output, "output",
                   "last_hidden_state at argmax(input_ids) (legacy eos_token_id 2 path)")
            for i, h in enumerate(out.hidden_states):
                fx.add(f"{key}.hidden_states.{i}", h, "output",
                       "0: embeddings; i: output of encoder layer i (before final_layer_norm)")
            fx.add(f"{key}.penultimate_normed", getattr(m, "text_model", m).final_layer_norm(out.hidden_states[-2]), "output",
                   "final_layer_norm(hidden_states[-2]): diffusers' clip_skip=1 prompt embeds")
    fx.save()


# --------------------------------------------------------------------------------------------------------------
# c, d. UNet2DConditionModel
# --------------------------------------------------------------------------------------------------------------

def _unet_cases(fx: Fixture, unet, ehs_shape: tuple, seed: int) -> None:
    import torch

    b = 2
    sample = randn((b, 4, LATENT, LATENT), seed)
    timestep = torch.tensor([10.0, 981.0])
    ehs = randn((b,) + ehs_shape, seed + 1)
    fx.add("sample", sample, "input")
    fx.add("timestep", timestep, "input", "one timestep per batch row")
    fx.add("encoder_hidden_states", ehs, "input")
    with torch.no_grad():
        fx.add("out", unet(sample, timestep, encoder_hidden_states=ehs).sample, "output",
               "unet(sample, timestep, encoder_hidden_states).sample")
        # residual shapes: exactly those a ControlNet of this UNet produces (capture the skip tuple via hooks
        # would be fragile; run a from_unet ControlNet once just for shapes)
        from diffusers import ControlNetModel

        cn = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32))
        cond = torch.zeros(b, 3, LATENT * 2, LATENT * 2)
        down, mid = cn(sample, timestep, encoder_hidden_states=ehs, controlnet_cond=cond, return_dict=False)
        res = [randn(d.shape, seed + 10 + i, 0.5) for i, d in enumerate(down)]
        mres = randn(mid.shape, seed + 9, 0.5)
        for i, r in enumerate(res):
            fx.add(f"down_block_additional_residuals.{i}", r, "input")
        fx.add("mid_block_additional_residual", mres, "input")
        fx.add("out_with_residuals", unet(sample, timestep, encoder_hidden_states=ehs,
                                          down_block_additional_residuals=res,
                                          mid_block_additional_residual=mres).sample, "output",
               "unet(..., down_block_additional_residuals, mid_block_additional_residual).sample")
        scalar_t = unet(sample, torch.tensor(500.0), encoder_hidden_states=ehs).sample
        fx.add("out_t500_scalar", scalar_t, "output", "unet with a 0-d timestep tensor 500 (broadcast to the batch)")


def make_unet_tiny() -> None:
    fx = Fixture("unet_tiny", "UNet2DConditionModel forward (diffusers' tiny SD test config, 32/64 channels), "
                 "plain and with ControlNet-style additional residuals.", models={"unet": "../sd_tiny/unet"})
    _unet_cases(fx, load_sd_tiny("unet"), (77, 32), 200)
    fx.save()


def make_unet_sd2style() -> None:
    import torch
    from diffusers import UNet2DConditionModel

    fx = Fixture("unet_sd2style", "UNet2DConditionModel with SD2.x features: use_linear_projection, "
                 "attention_head_dim list [2, 4], cross_attention_dim 1024, upcast_attention.",
                 models={"unet": "unet"})
    torch.manual_seed(6)
    unet = UNet2DConditionModel(**UNET_SD2STYLE)
    perturb_norms(unet, 106)
    if (fx.dir / "unet").exists():
        shutil.rmtree(fx.dir / "unet")
    unet.save_pretrained(fx.dir / "unet", safe_serialization=True)
    unet = UNet2DConditionModel.from_pretrained(fx.dir / "unet").eval()
    _unet_cases(fx, unet, (16, 1024), 300)
    fx.save()


# --------------------------------------------------------------------------------------------------------------
# e. controlnet_tiny
# --------------------------------------------------------------------------------------------------------------

def make_controlnet_tiny() -> None:
    import torch

    fx = Fixture("controlnet_tiny", "ControlNetModel forward (from_unet of the tiny UNet, zero convs re-initialised): "
                 "residuals at conditioning_scale 1, guess_mode with scale 0.5, bgr channel order; the UNet fed with them; "
                 "gradient of a fixed scalar loss w.r.t. every ControlNet parameter.",
                 models={"controlnet": "../sd_tiny/controlnet", "unet": "../sd_tiny/unet"})
    cn = load_sd_tiny("controlnet")
    unet = load_sd_tiny("unet")
    b = 2
    sample = randn((b, 4, LATENT, LATENT), 400)
    timestep = torch.tensor([10.0, 981.0])
    ehs = randn((b, 77, 32), 401)
    cond = rand((b, 3, LATENT * 2, LATENT * 2), 402)
    fx.add("sample", sample, "input")
    fx.add("timestep", timestep, "input")
    fx.add("encoder_hidden_states", ehs, "input")
    fx.add("controlnet_cond", cond, "input", "conditioning image in [0, 1], RGB, NCHW, 2x the latent size")

    def run(prefix, doc, **kw):
        with torch.no_grad():
            down, mid = cn(sample, timestep, encoder_hidden_states=ehs, controlnet_cond=cond, return_dict=False, **kw)
        for i, d in enumerate(down):
            fx.add(f"{prefix}.down_block_res_samples.{i}", d, "output", doc)
        fx.add(f"{prefix}.mid_block_res_sample", mid, "output", doc)
        return down, mid

    down, mid = run("scale1", "controlnet(sample, timestep, ehs, controlnet_cond), conditioning_scale 1.0")
    run("guess_scale0.5", "guess_mode=True, conditioning_scale 0.5 (residual i scaled by "
        "0.5 * logspace(-1, 0, n+1)[i], mid by 0.5)", guess_mode=True, conditioning_scale=0.5)
    cn.register_to_config(controlnet_conditioning_channel_order="bgr")
    run("bgr", "same weights with config controlnet_conditioning_channel_order='bgr' (input is flipped to BGR)")
    cn.register_to_config(controlnet_conditioning_channel_order="rgb")
    with torch.no_grad():
        fx.add("unet_out", unet(sample, timestep, encoder_hidden_states=ehs, down_block_additional_residuals=down,
                                mid_block_additional_residual=mid).sample, "output",
               "unet(sample, timestep, ehs, scale1 residuals).sample")

    # gradient of loss = sum(unet_out * loss_weight) w.r.t. every ControlNet parameter (UNet frozen)
    weight = randn((b, 4, LATENT, LATENT), 403)
    fx.add("loss_weight", weight, "input", "fixed random tensor: loss = sum(unet_out * loss_weight)")
    unet.requires_grad_(False)
    cn.train()
    cn.zero_grad(set_to_none=True)
    down, mid = cn(sample, timestep, encoder_hidden_states=ehs, controlnet_cond=cond, return_dict=False)
    out = unet(sample, timestep, encoder_hidden_states=ehs, down_block_additional_residuals=down,
               mid_block_additional_residual=mid).sample
    loss = (out * weight).sum()
    loss.backward()
    fx.add("loss", loss.detach().reshape(()), "output", "the scalar loss")
    n = 0
    for name, p in cn.named_parameters():
        assert p.grad is not None, name
        fx.add(f"grad.{name}", p.grad, "output", "d loss / d parameter, PyTorch layout")
        n += 1
    fx.extra["n_parameters_with_grad"] = n
    fx.save()


# --------------------------------------------------------------------------------------------------------------
# f. vae_tiny
# --------------------------------------------------------------------------------------------------------------

def make_vae_tiny() -> None:
    import torch

    fx = Fixture("vae_tiny", "AutoencoderKL (diffusers' ControlNet pipeline test config) encode -> posterior "
                 "mean/logvar/sample, decode.", models={"vae": "../sd_tiny/vae"})
    vae = load_sd_tiny("vae")
    image = rand((2, 3, LATENT * 2, LATENT * 2), 500, -1.0, 1.0)
    fx.add("image", image, "input", "in [-1, 1]")
    with torch.no_grad():
        dist = vae.encode(image).latent_dist
        fx.add("posterior.mean", dist.mean, "output")
        fx.add("posterior.logvar", dist.logvar, "output", "clamped to [-30, 20] as diffusers does")
        fx.add("posterior.std", dist.std, "output", "exp(0.5 * logvar)")
        noise = randn(dist.mean.shape, 501)
        fx.add("posterior_noise", noise, "input", "the standard normal draw latent_dist.sample() uses")
        sample = dist.sample(generator=torch.Generator().manual_seed(501))
        assert torch.equal(sample, dist.mean + dist.std * noise)
        fx.add("posterior.sample", sample, "output", "mean + std * posterior_noise")
        latents = randn((2, 4, LATENT, LATENT), 502)
        fx.add("latents", latents, "input", "unscaled latents (divide by scaling_factor first in a pipeline)")
        fx.add("decoded", vae.decode(latents).sample, "output", "vae.decode(latents).sample, about [-1, 1]")
    fx.extra["scaling_factor"] = vae.config.scaling_factor
    fx.save()


# --------------------------------------------------------------------------------------------------------------
# g. schedulers
# --------------------------------------------------------------------------------------------------------------

SCHED_VARIANTS = {
    "default": {},
    "leading": {"timestep_spacing": "leading"},
    "trailing": {"timestep_spacing": "trailing"},
    "linspace": {"timestep_spacing": "linspace"},
    "vpred": {"prediction_type": "v_prediction"},
}


def _jsonable(cfg) -> dict:
    out = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dict(cfg).items()}
    if "_use_default_values" in out:  # built from a set: sort it so regenerating gives the same file
        out["_use_default_values"] = sorted(out["_use_default_values"])
    return out


def make_schedulers() -> None:
    import torch
    import diffusers
    import diffusers.schedulers.scheduling_ddpm as ddpm_mod

    fx = Fixture("schedulers", "Schedulers created from SD1.5's PNDM scheduler_config via from_config: "
                 "set_timesteps(20) and a 20-step trajectory stepping fixed model outputs; timestep_spacing and "
                 "v_prediction variants; DDPM add_noise and get_velocity.")
    steps, shape = 20, (2, 4, 4, 4)
    model_outputs = randn((steps,) + shape, 600)
    fx.add("model_outputs", model_outputs, "input", "model output fed to step k (same for every scheduler)")
    init = randn(shape, 601)
    fx.add("initial_noise", init, "input", "samples[0] = initial_noise * init_noise_sigma")
    configs = {}
    for cls in ("DDPMScheduler", "DDIMScheduler", "UniPCMultistepScheduler", "EulerDiscreteScheduler"):
        for var, over in SCHED_VARIANTS.items():
            key = f"{cls}.{var}"
            s = getattr(diffusers, cls).from_config(SD15_SCHEDULER, **over)
            configs[key] = _jsonable(s.config)
            s.set_timesteps(steps)
            fx.add(f"{key}.timesteps", s.timesteps.to(torch.float32), "output",
                   "set_timesteps(20).timesteps (integers except Euler)")
            if hasattr(s, "sigmas") and cls == "EulerDiscreteScheduler":
                fx.add(f"{key}.sigmas", s.sigmas, "output", "sigmas after set_timesteps (21 values, last 0)")
            fx.add(f"{key}.init_noise_sigma", torch.tensor(float(s.init_noise_sigma)), "output")
            sample = init * s.init_noise_sigma
            samples, scaled, pred_x0, vnoise = [sample], [], [], []
            for k, t in enumerate(s.timesteps):
                x_in = s.scale_model_input(sample, t)
                scaled.append(x_in)
                noise = randn(shape, 700 + k) if int(t) > 0 else torch.zeros(shape)
                vnoise.append(noise)
                orig = ddpm_mod.randn_tensor
                ddpm_mod.randn_tensor = lambda *a, _n=noise, **kw: _n.clone()  # DDPM's variance noise = ours
                try:
                    out = s.step(model_outputs[k], t, sample)
                finally:
                    ddpm_mod.randn_tensor = orig
                if getattr(out, "pred_original_sample", None) is not None:
                    pred_x0.append(out.pred_original_sample)
                sample = out.prev_sample
                samples.append(sample)
            fx.add(f"{key}.samples", torch.stack(samples), "output",
                   "samples[0] initial; samples[k+1] = step(model_outputs[k], timesteps[k], samples[k]).prev_sample")
            if cls == "EulerDiscreteScheduler":
                fx.add(f"{key}.scaled_model_inputs", torch.stack(scaled), "output",
                       "scale_model_input(samples[k], timesteps[k]) (identity for the others)")
            if pred_x0:
                fx.add(f"{key}.pred_original_samples", torch.stack(pred_x0), "output")
            if cls == "DDPMScheduler":
                fx.add(f"{key}.variance_noise", torch.stack(vnoise), "input",
                       "standard normal noise DDPM's step k adds (zeros at t=0)")
    fx.extra["configs"] = configs
    fx.extra["sd15_scheduler_config"] = SD15_SCHEDULER

    ddpm = diffusers.DDPMScheduler.from_config(SD15_SCHEDULER)
    fx.add("alphas_cumprod", ddpm.alphas_cumprod, "output", "DDPMScheduler(SD1.5 config).alphas_cumprod")
    x0 = randn((3, 4, 4, 4), 610)
    eps = randn((3, 4, 4, 4), 611)
    ts = torch.tensor([0, 500, 999], dtype=torch.int64)
    fx.add("add_noise.original_samples", x0, "input")
    fx.add("add_noise.noise", eps, "input")
    fx.add("add_noise.timesteps", ts, "input", "int64")
    fx.add("add_noise.noisy_samples", ddpm.add_noise(x0, eps, ts), "output")
    fx.add("get_velocity.velocity", ddpm.get_velocity(x0, eps, ts), "output",
           "get_velocity(original_samples, noise, timesteps)")
    fx.save()



# --------------------------------------------------------------------------------------------------------------
# h. pipeline_tiny
# --------------------------------------------------------------------------------------------------------------

def make_pipeline_tiny() -> None:
    import numpy as np
    import torch
    from diffusers import StableDiffusionControlNetPipeline, UniPCMultistepScheduler
    from PIL import Image

    fx = Fixture("pipeline_tiny", "StableDiffusionControlNetPipeline (sd_tiny, UniPC from the SD1.5 PNDM config as "
                 "the seed's validation does), 3 steps from given latents: guidance 1.0, 6.0, guess mode.",
                 models={"pipeline": "../sd_tiny"})
    pipe = StableDiffusionControlNetPipeline.from_pretrained(FIX / "sd_tiny")
    pipe.scheduler = UniPCMultistepScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    rng = np.random.default_rng(800)
    # a smooth-ish control image (random blocks upsampled), so it resembles an edge/colour map more than noise
    blocks = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    control = np.kron(blocks, np.ones((4, 4, 1), dtype=np.uint8))
    Image.fromarray(control).save(fx.dir / "control.png")
    control_img = Image.open(fx.dir / "control.png").convert("RGB")
    fx.add("control_image", torch.from_numpy(np.asarray(control_img).copy()).permute(2, 0, 1)[None].float() / 255,
           "input", "control.png as float in [0, 1], NCHW (what the pipeline feeds the ControlNet, before CFG dup)")
    latents = randn((1, 4, LATENT, LATENT), 801)
    fx.add("latents", latents, "input", "initial latents passed as latents= (UniPC init_noise_sigma is 1)")
    prompt = PROMPTS[0]
    with torch.no_grad():
        pe, ne = pipe.encode_prompt(prompt, "cpu", 1, True, negative_prompt=None)
    fx.add("prompt_embeds", pe, "output", f"encode_prompt({prompt!r})")
    fx.add("negative_prompt_embeds", ne, "output", "encode_prompt of the empty negative prompt")
    cases = {"g1": dict(guidance_scale=1.0), "g6": dict(guidance_scale=6.0),
             "guess": dict(guidance_scale=6.0, guess_mode=True)}
    for case, kw in cases.items():
        steps = []

        def cb(p, i, t, kwargs, _steps=steps):
            _steps.append(kwargs["latents"].clone())
            return kwargs

        out = pipe(prompt, image=control_img, num_inference_steps=3, latents=latents.clone(), output_type="np",
                   generator=torch.Generator().manual_seed(0), callback_on_step_end=cb, **kw)
        img = torch.from_numpy(np.asarray(out.images)).permute(0, 3, 1, 2)
        fx.add(f"{case}.image", img, "output", f"pipeline(..., {kw}) output_type='np', transposed to NCHW, [0, 1]")
        fx.add(f"{case}.latents_per_step", torch.stack(steps), "output", "latents after each scheduler step")
        fx.add(f"{case}.timesteps", pipe.scheduler.timesteps.to(torch.float32), "output")
    fx.extra["prompt"] = prompt
    fx.extra["negative_prompt"] = None
    fx.extra["num_inference_steps"] = 3
    fx.extra["cases"] = cases
    fx.extra["scheduler_config"] = _jsonable(pipe.scheduler.config)
    fx.save()


# --------------------------------------------------------------------------------------------------------------
# i. train_step
# --------------------------------------------------------------------------------------------------------------

TRAIN = dict(learning_rate=1e-3, adam_beta1=0.9, adam_beta2=0.999, adam_weight_decay=1e-2, adam_epsilon=1e-8,
             max_grad_norm=1.0)  # train_controlnet.py defaults except learning_rate (5e-6 there; 1e-3 moves weights)


def make_train_step() -> None:
    import torch
    import torch.nn.functional as F
    from diffusers import DDPMScheduler

    fx = Fixture("train_step", "One optimiser step of diffusers' train_controlnet.py loop (epsilon target, MSE, "
                 "AdamW): batch 2 in one step (max_grad_norm 1.0, not reached), and the same batch as 2 "
                 "accumulated micro-batches of 1 (gradient_accumulation_steps 2, max_grad_norm 0.5: clipping active).",
                 models={"base": "../sd_tiny", "controlnet_initial": "../sd_tiny/controlnet",
                         "controlnet_after_step": "controlnet_step1",
                         "controlnet_after_accum2": "controlnet_accum2"})
    vae, text_encoder, unet = load_sd_tiny("vae"), load_sd_tiny("text_encoder"), load_sd_tiny("unet")
    for m in (vae, text_encoder, unet):
        m.requires_grad_(False)
    noise_scheduler = DDPMScheduler.from_pretrained(FIX / "sd_tiny", subfolder="scheduler")
    pixel_values = rand((2, 3, LATENT * 2, LATENT * 2), 900, -1.0, 1.0)
    cond = rand((2, 3, LATENT * 2, LATENT * 2), 901)
    input_ids = tokenize(PROMPTS)
    posterior_noise = randn((2, 4, LATENT, LATENT), 902)
    noise = randn((2, 4, LATENT, LATENT), 903)
    timesteps = torch.tensor([17, 803], dtype=torch.int64)
    fx.add("pixel_values", pixel_values, "input", "target images in [-1, 1]")
    fx.add("conditioning_pixel_values", cond, "input", "control images in [0, 1]")
    fx.add("input_ids", input_ids, "input", "PROMPTS tokenised (int64)")
    fx.add("posterior_noise", posterior_noise, "input",
           "standard normal draw of latent_dist.sample(): latents = (mean + std * posterior_noise) * scaling_factor")
    fx.add("noise", noise, "input", "the epsilon added by noise_scheduler.add_noise (and the target)")
    fx.add("timesteps", timesteps, "input", "int64")

    def run(micro: list, accum: int, tag: str, record: bool, max_grad_norm: float):
        controlnet = load_sd_tiny("controlnet")
        controlnet.train()
        opt = torch.optim.AdamW(controlnet.parameters(), lr=TRAIN["learning_rate"],
                                betas=(TRAIN["adam_beta1"], TRAIN["adam_beta2"]),
                                weight_decay=TRAIN["adam_weight_decay"], eps=TRAIN["adam_epsilon"])
        losses = []
        for idx in micro:
            dist = vae.encode(pixel_values[idx]).latent_dist
            latents = (dist.mean + dist.std * posterior_noise[idx]) * vae.config.scaling_factor
            noisy = noise_scheduler.add_noise(latents.float(), noise[idx].float(), timesteps[idx])
            ehs = text_encoder(input_ids[idx], return_dict=False)[0]
            down, mid = controlnet(noisy, timesteps[idx], encoder_hidden_states=ehs, controlnet_cond=cond[idx],
                                   return_dict=False)
            pred = unet(noisy, timesteps[idx], encoder_hidden_states=ehs, down_block_additional_residuals=down,
                        mid_block_additional_residual=mid, return_dict=False)[0]
            loss = F.mse_loss(pred.float(), noise[idx].float(), reduction="mean")
            (loss / accum).backward()  # accelerator.backward divides by gradient_accumulation_steps
            losses.append(loss.detach())
            if record:
                fx.add("latents", latents, "output", "scaled posterior sample")
                fx.add("noisy_latents", noisy, "output")
                fx.add("encoder_hidden_states", ehs, "output")
                fx.add("model_pred", pred, "output", "UNet output with the ControlNet residuals")
        grad_norm = torch.nn.utils.clip_grad_norm_(controlnet.parameters(), max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        for i, l in enumerate(losses):
            fx.add(f"{tag}.loss.{i}", l.reshape(()), "output", "MSE of micro-batch i (before dividing by accum)")
        fx.add(f"{tag}.grad_norm", grad_norm.reshape(()), "output", "total L2 norm before clipping")
        out = fx.dir / ("controlnet_" + tag)
        if out.exists():
            shutil.rmtree(out)
        controlnet.save_pretrained(out, safe_serialization=True)
        return float(grad_norm)

    # The total gradient norm here is about 0.7: step1 (max_grad_norm 1.0, the script's default) leaves it
    # unclipped, accum2 uses 0.5 so that clipping really scales the gradients.
    g1 = run([slice(0, 2)], 1, "step1", True, TRAIN["max_grad_norm"])
    g2 = run([slice(0, 1), slice(1, 2)], 2, "accum2", False, 0.5)
    fx.extra["hyperparameters"] = dict(TRAIN, lr_scheduler="constant", prediction_type="epsilon",
                                       gradient_accumulation_steps={"step1": 1, "accum2": 2},
                                       max_grad_norm={"step1": TRAIN["max_grad_norm"], "accum2": 0.5})
    fx.extra["grad_norms"] = {"step1": g1, "accum2": g2}
    fx.save()


# --------------------------------------------------------------------------------------------------------------
# sd_shapes: tensor names and shapes of the real SD1.5 / SD2.1 components (built on the meta device, no weights)
# --------------------------------------------------------------------------------------------------------------

SD15_UNET = dict(act_fn="silu", attention_head_dim=8, block_out_channels=[320, 640, 1280, 1280],
                 center_input_sample=False, cross_attention_dim=768,
                 down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"], downsample_padding=1,
                 flip_sin_to_cos=True, freq_shift=0, in_channels=4, layers_per_block=2, mid_block_scale_factor=1,
                 norm_eps=1e-05, norm_num_groups=32, out_channels=4, sample_size=64,
                 up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3)
SD21_UNET = dict(SD15_UNET, attention_head_dim=[5, 10, 20, 20], cross_attention_dim=1024, use_linear_projection=True,
                 upcast_attention=True, sample_size=96)
SD_VAE = dict(act_fn="silu", block_out_channels=[128, 256, 512, 512], down_block_types=["DownEncoderBlock2D"] * 4,
              in_channels=3, latent_channels=4, layers_per_block=2, norm_num_groups=32, out_channels=3,
              sample_size=512, up_block_types=["UpDecoderBlock2D"] * 4)
SD15_CLIP = dict(attention_dropout=0.0, bos_token_id=0, dropout=0.0, eos_token_id=2, hidden_act="quick_gelu",
                 hidden_size=768, initializer_factor=1.0, initializer_range=0.02, intermediate_size=3072,
                 layer_norm_eps=1e-05, max_position_embeddings=77, num_attention_heads=12, num_hidden_layers=12,
                 pad_token_id=1, projection_dim=768, vocab_size=49408)
SD21_CLIP = dict(SD15_CLIP, hidden_act="gelu", hidden_size=1024, intermediate_size=4096, num_attention_heads=16,
                 num_hidden_layers=23, projection_dim=512)


def _write_keys(path: Path, state: dict, prefix: str = "") -> dict:
    """The format of shared/reference/sd15-controlnet-keys.txt: a totals line, then `name [shape]` sorted."""
    n = sum(int(t.numel()) for t in state.values())
    lines = [f"num_tensors {len(state)} num_params {n} fp32_bytes {4 * n} fp16_bytes {2 * n}"]
    lines += [f"{prefix}{k} {list(t.shape)}".replace(", ", ", ") for k, t in sorted(state.items())]
    path.write_text("\n".join(lines) + "\n")
    return {"tensors": len(state), "params": n}


def make_sd_shapes() -> None:
    import torch
    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    dst = FIX / "sd_shapes"
    dst.mkdir(parents=True, exist_ok=True)
    summary = {}
    with torch.device("meta"):
        for tag, ucfg, ccfg in (("sd15", SD15_UNET, SD15_CLIP), ("sd21", SD21_UNET, SD21_CLIP)):
            unet = UNet2DConditionModel(**ucfg)
            cn = ControlNetModel.from_unet(unet)
            te = CLIPTextModel(CLIPTextConfig(**ccfg))
            summary[f"{tag}-unet"] = _write_keys(dst / f"{tag}-unet-keys.txt", unet.state_dict())
            summary[f"{tag}-controlnet"] = _write_keys(dst / f"{tag}-controlnet-keys.txt", cn.state_dict())
            # hub checkpoints name the text encoder's tensors with the 'text_model.' prefix (transformers 4.x)
            st = {k if k.startswith("text_model.") else "text_model." + k: v for k, v in te.state_dict().items()
                  if not k.endswith("position_ids")}
            summary[f"{tag}-text_encoder"] = _write_keys(dst / f"{tag}-text_encoder-keys.txt", st)
        summary["sd-vae"] = _write_keys(dst / "sd-vae-keys.txt", AutoencoderKL(**SD_VAE).state_dict())
    # the path tests/models/shape-only.test.ts falls back to when shared/reference is absent (CI)
    shutil.copyfile(dst / "sd15-controlnet-keys.txt", FIX / "sd15-controlnet-keys.txt")
    write_json(dst / "README.json", {
        "about": "Tensor names and shapes of the real SD1.5 and SD2.1 (768-v) components, built by diffusers/"
                 "transformers on the meta device (no weights). ControlNets are ControlNetModel.from_unet(unet) "
                 "with default conditioning_embedding_out_channels (16, 32, 96, 256). Text encoder names carry the "
                 "hub checkpoints' 'text_model.' prefix.",
        "configs": {"sd15-unet": SD15_UNET, "sd21-unet": SD21_UNET, "sd-vae": SD_VAE, "sd15-text_encoder": SD15_CLIP,
                    "sd21-text_encoder": SD21_CLIP},
        "summary": summary, "versions": PINNED,
    }, compact_depth=3)
    print(f"[fixtures] sd_shapes: {summary}")


# --------------------------------------------------------------------------------------------------------------
# numpy_rng: np.random.default_rng(seed).permutation(n), what datasets' Dataset.shuffle(seed) draws
# --------------------------------------------------------------------------------------------------------------

NUMPY_RNG_SEEDS = [0, 1, 42, 123456789, 2**32 - 1, 2**32, 2**40 + 7, 2**53 - 1]
NUMPY_RNG_SIZES = [1, 2, 8, 1000, 70000]


def make_numpy_rng() -> None:
    """train_controlnet.py's --max_train_samples is dataset.shuffle(seed=args.seed).select(range(n)); datasets'
    shuffle is `np.random.default_rng(seed).permutation(len(self))`. Every layer is recorded so a mismatch says
    where: SeedSequence.generate_state(4, uint64) (PCG64's seed words), the first raw 64-bit draws, and for each
    (seed, n) the permutation (whole up to 1000 rows, else its first 64 entries) plus the sha256 of the whole one
    as little-endian uint32."""
    import hashlib

    import numpy as np

    dst = FIX / "numpy_rng"
    dst.mkdir(parents=True, exist_ok=True)
    seeds = []
    for seed in NUMPY_RNG_SEEDS:
        words = np.random.SeedSequence(seed).generate_state(4, np.uint64)
        raw = np.random.PCG64(seed).random_raw(6)
        seeds.append({"seed": str(seed), "generate_state_u64": [str(int(w)) for w in words],
                      "random_raw": [str(int(r)) for r in raw]})
    cases = []
    for seed in NUMPY_RNG_SEEDS:
        for n in NUMPY_RNG_SIZES:
            perm = np.random.default_rng(seed).permutation(n)
            whole = n <= 1000
            cases.append({"seed": str(seed), "n": n, "whole": whole,
                          "permutation": [int(x) for x in (perm if whole else perm[:64])],
                          "sha256_u32le": hashlib.sha256(perm.astype("<u4").tobytes()).hexdigest()})
    write_json(dst / "cases.json", {
        "about": "np.random.default_rng(seed).permutation(n) (PCG64 seeded through SeedSequence), which HF datasets' "
                 "Dataset.shuffle(seed=seed) uses for its indices; seeds are decimal strings (some exceed 2^53 "
                 "as uint64 words). 'permutation' is the whole permutation when 'whole', else its first 64 entries; "
                 "'sha256_u32le' hashes the whole one as little-endian uint32. 'seeds': per seed, "
                 "SeedSequence(seed).generate_state(4, np.uint64) and PCG64(seed).random_raw(6).",
        "generated_by": "tests/reference/make_fixtures.py --only numpy_rng",
        "versions": {"numpy": np.__version__},
        "seeds": seeds,
        "cases": cases,
    }, compact_depth=3)
    print(f"[fixtures] numpy_rng: {len(cases)} permutations, {len(seeds)} seeds")


def make_images() -> None:
    """Images decoded as the script's data path decodes them. cmyk.jpg: a CMYK JPEG (print files, some segmentation
    maps) of pure-colour regions; cmyk-pil-rgb.png: PIL's Image.open(...).convert("RGB") of it, the naive
    R = (255 - K)(255 - C)/255 with no colour profile, which libvips' profile conversion does not give."""
    from PIL import Image, ImageDraw

    dst = FIX / "images"
    dst.mkdir(parents=True, exist_ok=True)
    im = Image.new("RGB", (32, 32), (0, 0, 255))
    d = ImageDraw.Draw(im)
    d.rectangle([0, 0, 15, 7], fill=(255, 255, 0))
    d.rectangle([16, 0, 31, 7], fill=(0, 255, 0))
    d.ellipse([8, 10, 24, 26], fill=(255, 0, 0))
    d.rectangle([0, 28, 31, 31], fill=(128, 64, 200))
    im.convert("CMYK").save(dst / "cmyk.jpg", quality=95)
    Image.open(dst / "cmyk.jpg").convert("RGB").save(dst / "cmyk-pil-rgb.png")
    # train_controlnet's Resize(resolution, BILINEAR) + CenterCrop on images smaller than the resolution (enlarged):
    # torchvision resizes a PIL image with Image.resize and crops at int(round((size - crop) / 2))
    import numpy as np

    rng = np.random.default_rng(5)
    for w, h, res in [(24, 16, 32), (100, 60, 64), (16, 16, 32)]:
        px = rng.integers(0, 256, (h, w, 3), dtype=np.uint8) if w != h else np.repeat(np.tile(np.arange(0, 256, 16, dtype=np.uint8), (h, 1))[..., None], 3, 2)
        src = Image.fromarray(px)
        src.save(dst / f"small-{w}x{h}.png")
        short, long_ = (w, h) if w <= h else (h, w)
        size = (res, int(res * long_ / short)) if w <= h else (int(res * long_ / short), res)
        big = src.resize(size, Image.BILINEAR)
        left, top = int(round((big.width - res) / 2.0)), int(round((big.height - res) / 2.0))
        big.crop((left, top, left + res, top + res)).save(dst / f"small-{w}x{h}-to-{res}.png")
    # diffusers' control image processor: Image.resize((w, h), LANCZOS), enlarging and shrinking, both axes or one
    for name, size in [("small-24x16", (48, 32)), ("small-16x16", (40, 24)), ("small-100x60", (64, 40)), ("small-100x60", (100, 24))]:
        Image.open(dst / f"{name}.png").resize(size, Image.LANCZOS).save(dst / f"{name}-lanczos-{size[0]}x{size[1]}.png")
    print("[fixtures] images: cmyk.jpg, cmyk-pil-rgb.png, small-*.png (bilinear crops, lanczos)")

# --------------------------------------------------------------------------------------------------------------
# --check-ts-output / --check-tensorboard
# --------------------------------------------------------------------------------------------------------------

def _load_folder(folder: Path):
    """from_pretrained on a diffusers model folder, a transformers model folder or a pipeline folder.
    Returns {prefix: (model, loading_info)}."""
    import diffusers
    import transformers

    if (folder / "model_index.json").exists():
        pipe = diffusers.DiffusionPipeline.from_pretrained(folder)
        return {name: (comp, None) for name, comp in pipe.components.items() if hasattr(comp, "state_dict")}
    cfg = json.loads((folder / "config.json").read_text())
    if "_class_name" in cfg:
        model, info = getattr(diffusers, cfg["_class_name"]).from_pretrained(folder, output_loading_info=True)
    else:
        model, info = getattr(transformers, cfg["architectures"][0]).from_pretrained(folder, output_loading_info=True)
    return {"": (model, info)}


def _raw_weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def check_ts_output(folder: Path, expected: str | None, atol: float) -> int:
    """Exit code 0 when the folder loads with from_pretrained with no missing/unexpected keys and its weights equal
    the expected tensors (names may carry the text encoder's optional 'text_model.' prefix)."""
    import torch
    from safetensors.torch import load_file

    problems, report = [], {"folder": str(folder), "components": {}}
    loaded = _load_folder(folder)
    for prefix, (model, info) in loaded.items():
        comp = {"class": type(model).__name__}
        if info:
            for k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"):
                v = list(info.get(k, []) or [])
                comp[k] = [str(x) for x in v]
                if v:
                    problems.append(f"{prefix or 'model'}: {k}: {v[:5]}")
        if expected:
            exp = load_file(expected)
            if prefix:
                exp = {k[len(prefix) + 1:]: v for k, v in exp.items() if k.startswith(prefix + ".")}
        else:
            exp = _raw_weights(folder / prefix if prefix else folder)
        norm = lambda k: k[len("text_model."):] if k.startswith("text_model.") else k  # noqa: E731
        state = {norm(k): v for k, v in model.state_dict().items()}
        exp = {norm(k): v for k, v in exp.items()}
        missing = sorted(set(exp) - set(state))
        extra = sorted(k for k in set(state) - set(exp) if not k.endswith("position_ids"))
        if missing:
            problems.append(f"{prefix or 'model'}: expected tensors absent from the loaded model: {missing[:5]}")
        if extra:
            problems.append(f"{prefix or 'model'}: loaded tensors not in the expected set: {extra[:5]}")
        worst = 0.0
        for k in sorted(set(exp) & set(state)):
            a, b = state[k].float(), exp[k].float()
            if a.shape != b.shape:
                problems.append(f"{prefix or 'model'}: {k}: shape {list(a.shape)} vs expected {list(b.shape)}")
                continue
            d = float((a - b).abs().max()) if a.numel() else 0.0
            worst = max(worst, d)
            if d > atol:
                problems.append(f"{prefix or 'model'}: {k}: max abs diff {d:g} > {atol:g}")
        comp.update(n_tensors=len(state), n_compared=len(set(exp) & set(state)), max_abs_diff=worst,
                    n_parameters=int(sum(v.numel() for v in state.values())))
        report["components"][prefix or "model"] = comp
    report["ok"] = not problems
    report["problems"] = problems[:50]
    print(json.dumps(report, indent=1))
    return 0 if not problems else 1


def check_tensorboard(logdir: Path) -> int:
    """Read event files with tensorboard's own EventAccumulator; print scalars and image summaries as JSON."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    runs = sorted({p.parent for p in logdir.rglob("events.out.tfevents.*")})
    if not runs:
        print(json.dumps({"ok": False, "problems": [f"no events.out.tfevents.* under {logdir}"]}))
        return 1
    report = {"ok": True, "runs": {}}
    for run in runs:
        acc = EventAccumulator(str(run), size_guidance={"scalars": 0, "images": 0})
        acc.Reload()
        tags = acc.Tags()
        report["runs"][str(run.relative_to(logdir))] = {
            "scalars": {t: [[e.step, e.value] for e in acc.Scalars(t)] for t in tags.get("scalars", [])},
            "images": {t: [{"step": e.step, "width": e.width, "height": e.height, "bytes": len(e.encoded_image_string)}
                           for e in acc.Images(t)] for t in tags.get("images", [])},
        }
        if not tags.get("scalars") and not tags.get("images"):
            report["ok"] = False
    print(json.dumps(report, indent=1))
    return 0 if report["ok"] else 1


FIXTURES = {}  # filled at the end of the file: name -> function


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="")
    ap.add_argument("--check-ts-output")
    ap.add_argument("--expected")
    ap.add_argument("--atol", type=float, default=0.0)
    ap.add_argument("--check-tensorboard")
    args = ap.parse_args()
    if args.check_ts_output:
        sys.exit(check_ts_output(Path(args.check_ts_output), args.expected, args.atol))
    if args.check_tensorboard:
        sys.exit(check_tensorboard(Path(args.check_tensorboard)))
    check_versions()
    import torch

    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    names = [n for n in args.only.split(",") if n] or list(FIXTURES)
    for n in names:
        if n not in FIXTURES:
            sys.exit(f"unknown fixture {n}; known: {', '.join(FIXTURES)}")
    for n in names:
        t0 = time.time()
        FIXTURES[n]()
        print(f"[fixtures] {n} done in {time.time() - t0:.1f} s")
    total = sum(p.stat().st_size for p in FIX.rglob("*") if p.is_file())
    print(f"[fixtures] tests/fixtures total {total / 1e6:.2f} MB")


FIXTURES.update({
    "tokenizer": make_tokenizer,
    "sd_tiny": make_sd_tiny,
    "clip_text_tiny": make_clip_text_tiny,
    "unet_tiny": make_unet_tiny,
    "unet_sd2style": make_unet_sd2style,
    "controlnet_tiny": make_controlnet_tiny,
    "vae_tiny": make_vae_tiny,
    "schedulers": make_schedulers,
    "pipeline_tiny": make_pipeline_tiny,
    "train_step": make_train_step,
    "sd_shapes": make_sd_shapes,
    "numpy_rng": make_numpy_rng,
    "images": make_images,
})

if __name__ == "__main__":
    main()
