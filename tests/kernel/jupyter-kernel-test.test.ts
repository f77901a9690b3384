/**
 * Runs the Python conformance tests (jupyter_kernel_test + nbclient, tests/kernel/*.py) against our kernel,
 * installed as a kernelspec in a temporary prefix. Needs the venv at .venv (`python3 -m venv .venv &&
 * .venv/bin/pip install -r tests/kernel/requirements.txt`): without it the test is skipped locally and FAILS in CI
 * (CI=1), so a CI image without the venv cannot pass silently.
 */
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { it } from "node:test";
import { ROOT } from "./client.js";
import { tempDir } from "../helpers.js";

const PYTHON = path.join(ROOT, ".venv", "bin", "python");
const KERNEL_NAME = "controlnet-ts-test";

it("passes jupyter_kernel_test and nbclient runs, and the tutorial notebooks execute (Python)", { timeout: 1_500_000 }, async (t) => {
  if (!fs.existsSync(PYTHON)) {
    const why = `${PYTHON} is missing: python3 -m venv .venv && .venv/bin/pip install -r tests/kernel/requirements.txt`;
    if (process.env.CI === "1" || process.env.CI === "true") assert.fail(why);
    t.skip(why);
    return;
  }
  const tmp = tempDir("cnts-jkt-");
  const install = spawnSync(process.execPath, [path.join(ROOT, "bin", "controlnet-ts.js"), "kernel", "install", "--prefix", tmp, "--name", KERNEL_NAME], { encoding: "utf8" });
  assert.equal(install.status, 0, install.stderr);
  const spec = JSON.parse(fs.readFileSync(path.join(tmp, "share", "jupyter", "kernels", KERNEL_NAME, "kernel.json"), "utf8"));
  assert.equal(spec.interrupt_mode, "signal");

  const env = {
    ...process.env,
    JUPYTER_PATH: path.join(tmp, "share", "jupyter"),
    JUPYTER_RUNTIME_DIR: path.join(tmp, "runtime"),
    JUPYTER_PLATFORM_DIRS: "1",
    KERNEL_NAME,
    PYTHONDONTWRITEBYTECODE: "1",
  };
  const args = ["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/kernel/test_kernel.py", "tests/kernel/test_notebook.py", "tests/kernel/test_tutorials.py"];
  const { code, output } = await new Promise<{ code: number | null; output: string }>((resolve) => {
    const child = spawn(PYTHON, args, { cwd: ROOT, env, stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    child.stdout.on("data", (d) => (output += d));
    child.stderr.on("data", (d) => (output += d));
    child.on("close", (code) => resolve({ code, output }));
  });
  assert.equal(code, 0, `pytest failed:\n${output}`);
  // Guard against a run where everything was skipped or collected nothing.
  const passed = Number(/(\d+) passed/.exec(output)?.[1] ?? 0);
  assert.ok(passed >= 12, `expected the conformance tests to run, got: ${output.trim().split("\n").pop()}`);
  t.diagnostic(output.trim().split("\n").pop() ?? "");
});
