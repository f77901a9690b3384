"""Headless notebook execution through our kernel with nbclient, as CI runs the tutorial notebooks."""
import os
import tempfile

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

KERNEL_NAME = os.environ.get("KERNEL_NAME", "controlnet-ts")


def run(cells, allow_errors=False):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": KERNEL_NAME, "display_name": KERNEL_NAME, "language": "typescript"}
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    with tempfile.TemporaryDirectory() as cwd:
        NotebookClient(
            nb,
            kernel_name=KERNEL_NAME,
            timeout=120,
            startup_timeout=120,
            allow_errors=allow_errors,
            iopub_timeout=4,
            resources={"metadata": {"path": cwd}},
        ).execute()
    nbformat.validate(nb)
    return nb


def test_outputs_and_display_updates_collapse():
    nb = run(
        [
            'console.log("hi")',
            'const kb = (globalThis as any)[Symbol.for("controlnet-ts.kernel")];\n'
            'kb.display({ "text/plain": "step 0" }, { displayId: "progress" });\n'
            "for (let i = 1; i <= 3; i++) {\n"
            "  await new Promise((r) => setTimeout(r, 20));\n"
            '  kb.display({ "text/plain": `step ${i}` }, { displayId: "progress", update: true });\n'
            "}",
            "6 * 7",
            # The real package, through the kernel's self-resolution (source checkout: .ts via tsx + generated
            # declarations), the way the tutorial notebooks import it.
            'import * as widgets from "controlnet-ts/widgets";\nconst bar: string = typeof widgets.ProgressBar;\nbar',
        ]
    )
    hello, progress, result, package = nb.cells
    assert [o["output_type"] for o in hello.outputs] == ["stream"]
    assert hello.outputs[0]["text"] == "hi\n"
    assert [o["output_type"] for o in progress.outputs] == ["display_data"]
    assert progress.outputs[0]["data"]["text/plain"] == "step 3"
    assert result.outputs[0]["output_type"] == "execute_result"
    assert result.outputs[0]["data"]["text/plain"] == "42"
    assert result.execution_count == 3
    assert package.outputs[0]["data"]["text/plain"] == "'function'"


def test_error_cell_fails_the_run_with_its_name():
    with pytest.raises(CellExecutionError) as info:
        run(["const a = 1", 'throw new TypeError("bad input")', "a"])
    assert "TypeError" in str(info.value)
    assert "bad input" in str(info.value)
