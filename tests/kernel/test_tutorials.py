"""The tutorial notebooks run headless, end to end, through our kernel (nbclient), with no error outputs."""
import glob
import os
import shutil

import nbformat
from nbclient import NotebookClient

KERNEL_NAME = os.environ.get("KERNEL_NAME", "controlnet-ts")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_tutorial_notebooks_run_end_to_end(tmp_path, monkeypatch):
    # the training budget of the tutorial: 4 steps check every cell; a person's run trains the default 800
    monkeypatch.setenv("CONTROLNET_TS_TUTORIAL_STEPS", "4")
    # The notebooks run in a copy of their folder, beside links to the data they read (`../data`, `../tests/fixtures`):
    # their outputs (run folders, checkpoints) never mix with a person's run in notebooks/outputs, which the 4-step
    # run would otherwise find ("already at step 800") or leave behind for the person's run to resume.
    work = tmp_path / "repo"
    (work / "notebooks").mkdir(parents=True)
    (work / "tests").mkdir()
    os.symlink(os.path.join(ROOT, "data"), work / "data")
    os.symlink(os.path.join(ROOT, "tests", "fixtures"), work / "tests" / "fixtures")
    notebooks = sorted(glob.glob(os.path.join(ROOT, "notebooks", "*.ipynb")))
    assert notebooks, "no tutorial notebooks found"
    for source in notebooks:
        path = str(work / "notebooks" / os.path.basename(source))
        shutil.copyfile(source, path)
        nb = nbformat.read(path, as_version=4)
        NotebookClient(
            nb, kernel_name=KERNEL_NAME, timeout=900, startup_timeout=180, iopub_timeout=10,
            resources={"metadata": {"path": os.path.dirname(path)}},
        ).execute()
        outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
        errors = [o for o in outputs if o.output_type == "error"]
        assert not errors, f"{os.path.basename(path)}: {errors[0].ename}: {errors[0].evalue}"
        # Every code cell produced something, and the widgets' final states are recorded (display_data bundles).
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(c.outputs for c in code), f"{os.path.basename(path)}: a code cell has no output"
        displays = [o for o in outputs if o.output_type in ("display_data", "execute_result")]
        assert any("text/html" in o.get("data", {}) for o in displays), "no rich outputs recorded"
        if os.path.basename(path) == "train_controlnet.ipynb":
            text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
            # the fidelity before/after is reported, and the validation grids put each prompt under its own images
            assert "control fidelity on 4 held-out outlines after 4 steps" in text, text[-2000:]
            grids = [o["data"]["text/html"] for o in displays if "cnts-image-grid" in o.get("data", {}).get("text/html", "")]
            assert any("before training" in g and g.count("<figcaption") == 4 for g in grids), "no per-row before grid"
            assert not any("validation (step 0)" in g for g in grids)
        out = tmp_path / (os.path.basename(path) + ".executed.ipynb")
        nbformat.write(nb, str(out))
