#!/usr/bin/env bash
# Creates tests/reference/.venv with the PINNED Python stack used to generate the golden fixtures.
# Python is reference tooling only: the product and CI never need it (fixtures are committed).
#
#   bash tests/reference/setup.sh && tests/reference/.venv/bin/python tests/reference/make_fixtures.py
#
# torch: the CPU-only index (download.pytorch.org) is tried first; when it is unreachable, plain PyPI is used,
# whose linux wheel also pulls the CUDA runtime packages (a few GB, once). Only the CPU is ever used.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$HERE/.venv"
PY="${PYTHON:-python3}"

# Keep these in sync with PINNED in make_fixtures.py (it refuses to run on other versions).
TORCH="torch==2.15.0"
PINS=(
  "diffusers==0.42.1"
  "transformers==5.24.0"
  "tokenizers==0.23.3"
  "huggingface-hub==2.4.0"
  "regex==2026.11.19"
  "safetensors==0.8.0"
  "numpy==2.4.6"
  "pillow==13.0.0"
  "tensorboard==2.21.0"
)

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip

start=$(date +%s)
if curl -s -o /dev/null -m 15 -w '%{http_code}' https://download.pytorch.org/whl/cpu/torch/ | grep -q '^200$'; then
  echo "[setup] installing $TORCH from the CPU-only index"
  "$VENV/bin/pip" install "$TORCH" --index-url https://download.pytorch.org/whl/cpu
else
  echo "[setup] download.pytorch.org unreachable; installing $TORCH from PyPI (pulls CUDA runtime wheels)"
  "$VENV/bin/pip" install "$TORCH"
fi
echo "[setup] torch install took $(( $(date +%s) - start )) s"
"$VENV/bin/pip" install "${PINS[@]}"
# Legacy tokenizer: transformers 4.x's pure-Python ("slow") CLIPTokenizer, which SD pipelines used before
# transformers 5 made CLIPTokenizer a tokenizers-backed class. It cannot share the venv with diffusers 0.42
# (huggingface-hub <1.0 vs >=1.32), so it lives in its own --target folder and is only imported, by a
# subprocess, for the tokenizer fixture.
LEGACY="$VENV/legacy-tokenizer"
if [ ! -d "$LEGACY/transformers" ]; then
  "$VENV/bin/pip" install --no-deps --target "$LEGACY" \
    "transformers==4.57.6" "huggingface-hub==0.36.2" "tokenizers==0.22.2"
fi
# ftfy is deliberately NOT installed: transformers' CLIPTokenizer then uses its BasicTokenizer-style
# fallback clean-up (whitespace + lower case), which is the behaviour our TS tokenizer reproduces.
if "$VENV/bin/python" -c "import ftfy" 2>/dev/null; then
  echo "[setup] ERROR: ftfy is installed in the venv; uninstall it (fixtures assume no ftfy)" >&2
  exit 1
fi
echo "[setup] done: $("$VENV/bin/python" -c 'import torch, diffusers, transformers; print("torch", torch.__version__, "diffusers", diffusers.__version__, "transformers", transformers.__version__)')"
