"""jupyter_kernel_test conformance run against our kernel (started by jupyter_client from its kernelspec).

Run through tests/kernel/jupyter-kernel-test.test.ts, which installs the kernelspec into a temporary prefix and
points JUPYTER_PATH at it; KERNEL_NAME names the installed spec.
"""
import os
import unittest

import jupyter_kernel_test as jkt

BRIDGE = '(globalThis as any)[Symbol.for("controlnet-ts.kernel")]'


class ControlnetTsKernelTests(jkt.KernelTests):
    kernel_name = os.environ.get("KERNEL_NAME", "controlnet-ts")
    language_name = "typescript"
    file_extension = ".ts"

    code_hello_world = 'console.log("hello, world")'
    code_stderr = 'console.error("oops")'

    completion_samples = [
        {"text": "Math.ma", "matches": {"max"}},
        {"text": "const greeting = 'hi'; greeting.toUpp", "matches": {"toUpperCase"}},
    ]
    complete_code_samples = ["1 + 1", "const a = 1;", "function f() { return 1; }"]
    incomplete_code_samples = ["function f() {", "const xs = [1,", "if (true) {"]

    code_generate_error = 'throw new Error("boom")'
    code_execute_result = [
        {"code": "6 * 7", "result": "42"},
        {"code": '"con" + "trol"', "result": "'control'"},
        {"code": "[1, 2, 3].map((x) => x * 2)", "result": "[ 2, 4, 6 ]"},
    ]
    code_display_data = [
        {"code": BRIDGE + '.display({ "text/html": "<b>hi</b>", "text/plain": "hi" })', "mime": "text/html"},
        {"code": 'import * as tslab from "tslab";\ntslab.display.png(new Uint8Array([137, 80, 78, 71]))', "mime": "image/png"},
    ]
    code_inspect_sample = "Math.max"
    code_clear_output = BRIDGE + ".clearOutput()"
    # In-memory history of this kernel process.
    supported_history_operations = ("tail", "range", "search")
    code_history_pattern = '"con"*'


if __name__ == "__main__":
    unittest.main()
