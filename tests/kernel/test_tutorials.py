"""The tutorial notebooks run headless, end to end, through our kernel (nbclient), with no error outputs."""
import glob
import os

import nbformat
from nbclient import NotebookClient

KERNEL_NAME = os.environ.get("KERNEL_NAME", "controlnet-ts")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_tutorial_notebooks_run_end_to_end(tmp_path):
    notebooks = sorted(glob.glob(os.path.join(ROOT, "notebooks", "*.ipynb")))
    assert notebooks, "no tutorial notebooks found"
    for path in notebooks:
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
        out = tmp_path / (os.path.basename(path) + ".executed.ipynb")
        nbformat.write(nb, str(out))
