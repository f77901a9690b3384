#!/usr/bin/env bash
# Screenshot of the tutorial notebook, executed through our kernel, open in a real JupyterLab page in headless
# Chromium: shows the widgets (progress bar, loss plot, memory meter, image grid, tables) as JupyterLab renders them.
#
#   scripts/jupyterlab-screenshot.sh [out.png]      (default: docs/jupyterlab-tutorial.png)
#
# Environment: CHROMIUM (default /usr/bin/chromium, or chromium/google-chrome on PATH), LAB_VENV (default .venv-lab),
# NOTEBOOK (default train_controlnet.ipynb, in notebooks/), KEEP_TMP=1 keeps the temporary folder for inspection.
# The notebook's own variables pass through to its kernel: CONTROLNET_TS_TUTORIAL_STEPS=4 is the tutorial's CI budget
# (~2 min here); its default, 800 steps, shows the control learned (~6 min on the native engine, see README).
#
# Nothing global is touched: JupyterLab (pinned) lives in its own venv, the kernelspec is installed into a temporary
# prefix, every Jupyter config/data/runtime dir points into the temporary folder, and the notebook runs as a temporary
# copy in a notebooks/ folder (its ../data and ../tests are symlinks to the repo), so outputs/ is not written into the repo.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

JUPYTERLAB_VERSION=4.6.6
PLAYWRIGHT_VERSION=1.65.2
OUT=${1:-docs/jupyterlab-tutorial.png}
NOTEBOOK=${NOTEBOOK:-train_controlnet.ipynb}
LAB_VENV=${LAB_VENV:-.venv-lab}
CHROMIUM=${CHROMIUM:-$(command -v chromium || command -v chromium-browser || command -v google-chrome || echo /usr/bin/chromium)}
case $OUT in /*) ;; *) OUT="$ROOT/$OUT" ;; esac

log() { printf '[jupyterlab-screenshot] %s\n' "$*" >&2; }
[ -x "$CHROMIUM" ] || { log "no Chromium at $CHROMIUM: install one (Debian: apt-get install chromium) or set CHROMIUM"; exit 1; }

# 1. JupyterLab (+ nbclient to execute, playwright's Python API to drive the system Chromium) in a separate venv.
installed() { "$LAB_VENV/bin/python" -c 'import importlib.metadata as m, sys; print(m.version(sys.argv[1]))' "$1" 2>/dev/null; }
if [ "$(installed jupyterlab)" != "$JUPYTERLAB_VERSION" ] || [ "$(installed playwright)" != "$PLAYWRIGHT_VERSION" ] \
   || [ -z "$(installed nbclient)" ]; then
  log "creating $LAB_VENV (jupyterlab==$JUPYTERLAB_VERSION, playwright==$PLAYWRIGHT_VERSION)"
  python3 -m venv "$LAB_VENV"
  "$LAB_VENV/bin/pip" install --quiet --disable-pip-version-check \
    "jupyterlab==$JUPYTERLAB_VERSION" "playwright==$PLAYWRIGHT_VERSION" nbclient nbformat
fi
# The repo's package.json says "type": "module"; JupyterLab's bundled yarn.js (CommonJS) would inherit that from the
# nearest package.json above it and fail noisily on every `jupyter lab` start. A stub package.json stops the lookup.
[ -f "$LAB_VENV/package.json" ] || echo '{"type": "commonjs"}' > "$LAB_VENV/package.json"
PY="$LAB_VENV/bin/python"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/jupyterlab-screenshot.XXXXXX")
LAB_PID=""
cleanup() {
  if [ -n "$LAB_PID" ] && kill -0 "$LAB_PID" 2>/dev/null; then
    kill "$LAB_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$LAB_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$LAB_PID" 2>/dev/null || true
  fi
  if [ "${KEEP_TMP:-0}" = 1 ]; then log "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

export JUPYTER_CONFIG_DIR="$TMP/jupyter/config" JUPYTER_DATA_DIR="$TMP/jupyter/data"
export JUPYTER_RUNTIME_DIR="$TMP/jupyter/runtime" JUPYTER_PATH="$TMP/prefix/share/jupyter"
export JUPYTER_PLATFORM_DIRS=1 IPYTHONDIR="$TMP/ipython"
mkdir -p "$JUPYTER_CONFIG_DIR" "$JUPYTER_DATA_DIR" "$JUPYTER_RUNTIME_DIR"
# No "get notified about Jupyter news?" toast over the page.
SETTINGS="$JUPYTER_CONFIG_DIR/lab/user-settings/@jupyterlab/apputils-extension"
mkdir -p "$SETTINGS"
echo '{"fetchNews": "false", "checkForUpdates": false}' > "$SETTINGS/notification.jupyterlab-settings"
# Every cell attached with its real height (JupyterLab's default "contentVisibility" skips laying out offscreen cells),
# so the page can be measured and sized to the tutorial's end below.
mkdir -p "$JUPYTER_CONFIG_DIR/lab/user-settings/@jupyterlab/notebook-extension"
echo '{"windowingMode": "none"}' > "$JUPYTER_CONFIG_DIR/lab/user-settings/@jupyterlab/notebook-extension/tracker.jupyterlab-settings"

# 2. Our kernelspec, into the temporary prefix only.
node bin/controlnet-ts.js kernel install --prefix "$TMP/prefix" >&2

# 3. A copy of notebooks/ beside symlinks to data/ and tests/ (the notebook reads ../data and ../tests).
WORK="$TMP/work"
mkdir -p "$WORK/notebooks"
cp "notebooks/$NOTEBOOK" "$WORK/notebooks/"
ln -s "$ROOT/data" "$WORK/data"
ln -s "$ROOT/tests" "$WORK/tests"

log "executing notebooks/$NOTEBOOK through the controlnet-ts kernel"
start=$SECONDS
"$PY" - "$WORK/notebooks/$NOTEBOOK" <<'EOF'
import os, sys
import nbformat
from nbclient import NotebookClient
from nbformat.sign import NotebookNotary

path = sys.argv[1]
nb = nbformat.read(path, as_version=4)
NotebookClient(nb, kernel_name="controlnet-ts", timeout=900, startup_timeout=180, iopub_timeout=10,
               resources={"metadata": {"path": os.path.dirname(path)}}).execute()
errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
if errors:
    sys.exit(f"{os.path.basename(path)}: {errors[0].ename}: {errors[0].evalue}")
nbformat.write(nb, path)
# Trusted, as a notebook you just ran yourself is: JupyterLab then renders its HTML/SVG outputs unsanitized.
NotebookNotary().sign(nb)
EOF
log "executed in $((SECONDS - start)) s"

# 4. JupyterLab on a free local port, no token, no browser, rooted at the temporary work folder.
PORT=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
ROOT_FLAG=()
[ "$(id -u)" = 0 ] && ROOT_FLAG=(--allow-root)  # containers often run as root
"$LAB_VENV/bin/jupyter-lab" --no-browser "${ROOT_FLAG[@]}" --ip=127.0.0.1 --port="$PORT" --ServerApp.port_retries=0 \
  --IdentityProvider.token= --ServerApp.password= --ServerApp.root_dir="$WORK" \
  --LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate --LabApp.expose_app_in_browser=True \
  >"$TMP/lab.log" 2>&1 &
LAB_PID=$!
URL="http://127.0.0.1:$PORT"
for _ in $(seq 120); do
  if "$PY" -c "import urllib.request, sys; urllib.request.urlopen(sys.argv[1], timeout=2)" "$URL/api/status" 2>/dev/null; then
    break
  fi
  kill -0 "$LAB_PID" 2>/dev/null || { cat "$TMP/lab.log" >&2; log "jupyter lab exited"; exit 1; }
  sleep 0.5
done
"$PY" -c "import urllib.request, sys; urllib.request.urlopen(sys.argv[1], timeout=5)" "$URL/api/status" \
  || { cat "$TMP/lab.log" >&2; log "jupyter lab did not answer at $URL"; exit 1; }
log "JupyterLab $JUPYTERLAB_VERSION is up at $URL"

# 5. Headless Chromium (the system one) driven by playwright: open the notebook, wait for its rendered outputs and for
#    our kernel to report Idle, collapse the file browser, scroll the heading of the training section (the first code
#    cell calling cn.train: dashboard, fidelity after training, inference grid, save) to the top, make the window just
#    tall enough to hold everything from there to the last cell, and take the screenshot.
mkdir -p "$(dirname "$OUT")"
"$PY" - "$CHROMIUM" "$URL/lab/tree/notebooks/$NOTEBOOK?reset" "$OUT" "$TMP/page.html" <<'EOF'
import sys
from playwright.sync_api import sync_playwright

chromium, url, out, dump = sys.argv[1:5]
with sync_playwright() as p:
    browser = p.chromium.launch(executable_path=chromium, headless=True,
                                args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
    page = browser.new_page(viewport={"width": 1400, "height": 2400})
    try:
        page.goto(url, wait_until="domcontentloaded", timeout=120_000)
        page.wait_for_selector(".jp-NotebookPanel .jp-OutputArea-output", timeout=180_000)
        # The status bar reads "TypeScript (controlnet-ts) | Idle" once our kernel is up for the opened notebook.
        page.wait_for_function(
            "() => /\\|\\s*Idle/.test(document.querySelector('#jp-main-statusbar')?.textContent || '')",
            timeout=180_000)
        page.evaluate("""() => {
          const app = window.jupyterapp;  // exposed by --LabApp.expose_app_in_browser
          if (!app.shell.leftCollapsed) app.commands.execute('application:toggle-left-area');
        }""")
        page.wait_for_timeout(500)
        # Returns the window height that holds the training section's heading through the end of the last cell.
        scroll_to_end = """() => {
          const cells = [...document.querySelectorAll('.jp-NotebookPanel .jp-Cell')];
          const train = cells.findIndex(c => c.classList.contains('jp-CodeCell') && c.textContent.includes('cn.train('));
          let i = train;
          while (i > 0 && !cells[i].querySelector('h1, h2')) i--;
          const at = cells[Math.max(i, 0)], last = cells[cells.length - 1];
          at.scrollIntoView({ block: 'start' });
          // Menu, toolbar and heading above; the status bar below the notebook's scroller.
          const scroller = at.closest('.jp-WindowedPanel-outer') || document.scrollingElement;
          const below = window.innerHeight - scroller.getBoundingClientRect().bottom;
          return Math.ceil(last.getBoundingClientRect().bottom + below + 24);
        }"""
        height = page.evaluate(scroll_to_end)
        page.set_viewport_size({"width": 1400, "height": min(max(height, 800), 8000)})
        page.wait_for_timeout(1000)
        page.evaluate(scroll_to_end)
        page.wait_for_timeout(1500)
        page.screenshot(path=out)
    except Exception:
        page.screenshot(path=out + ".failed.png")
        open(dump, "w").write(page.content())
        print(f"failed: what the page showed is in {out}.failed.png, its DOM in {dump} (KEEP_TMP=1 keeps it)",
              file=sys.stderr)
        raise
    finally:
        browser.close()
EOF
log "wrote $OUT ($(stat -c %s "$OUT") bytes) in $SECONDS s"
