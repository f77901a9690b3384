#!/usr/bin/env bash
# Proof that model folders written by our TypeScript code open in Python diffusers/transformers with identical
# weights: TS saves (tests/reference/ts_save_models.ts), Python loads with from_pretrained and compares every
# tensor exactly (make_fixtures.py --check-ts-output). Needs the reference venv (bash tests/reference/setup.sh).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PY="$ROOT/tests/reference/.venv/bin/python"
OUT="${1:-$(mktemp -d)}"
cd "$ROOT"
npx tsx tests/reference/ts_save_models.ts "$OUT"
status=0
for m in unet controlnet vae text_encoder; do
  if HF_HUB_DISABLE_PROGRESS_BARS=1 "$PY" tests/reference/make_fixtures.py --check-ts-output "$OUT/$m" \
      --expected "$OUT/$m.expected.safetensors" > "$OUT/$m.report.json" 2> "$OUT/$m.stderr"; then
    echo "[roundtrip] $m: OK ($("$PY" -c "import json,sys; c=json.load(open(sys.argv[1]))['components']['model']; print(c['class'], c['n_compared'], 'tensors,', c['n_parameters'], 'parameters, max abs diff', c['max_abs_diff'])" "$OUT/$m.report.json"))"
  else
    echo "[roundtrip] $m: FAILED"; cat "$OUT/$m.report.json"; tail -5 "$OUT/$m.stderr"; status=1
  fi
done
# The UNet went fixture -> TS -> disk: its weights must still equal the original fixture file exactly.
if HF_HUB_DISABLE_PROGRESS_BARS=1 "$PY" tests/reference/make_fixtures.py --check-ts-output "$OUT/unet" \
    --expected tests/fixtures/sd_tiny/unet/diffusion_pytorch_model.safetensors > "$OUT/unet.vs-fixture.json" 2>/dev/null; then
  echo "[roundtrip] unet re-saved by TS equals tests/fixtures/sd_tiny/unet: OK"
else
  echo "[roundtrip] unet re-saved by TS differs from the fixture: FAILED"; cat "$OUT/unet.vs-fixture.json"; status=1
fi
exit $status
