/** The kernelspec installer and the controlnet-ts command line, run as a user would (through the bin). */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { describe, it } from "node:test";
import { main, parseFlags, UsageError } from "../../kernel/cli.js";
import { ROOT } from "./client.js";
import { tempDir } from "../helpers.js";

async function captureStderr<T>(fn: () => Promise<T>): Promise<{ code: T; stderr: string }> {
  const write = process.stderr.write;
  let stderr = "";
  process.stderr.write = ((chunk: string | Uint8Array) => ((stderr += chunk.toString()), true)) as typeof process.stderr.write;
  try {
    return { code: await fn(), stderr };
  } finally {
    process.stderr.write = write;
  }
}

const BIN = path.join(ROOT, "bin", "controlnet-ts.js");

function cli(args: string[], env: Record<string, string> = {}) {
  return spawnSync(process.execPath, [BIN, ...args], { encoding: "utf8", env: { ...process.env, ...env } });
}

describe("controlnet-ts kernel install", () => {
  it("--prefix writes kernel.json (absolute node + bin, signal interrupts, env) and both logos", () => {
    const tmp = tempDir("cnts-install-");
    const r = cli(["kernel", "install", "--prefix", tmp, "--name", "cn-test", "--env", "FOO=bar=baz"]);
    assert.equal(r.status, 0, r.stderr);
    const dir = path.join(tmp, "share", "jupyter", "kernels", "cn-test");
    const spec = JSON.parse(fs.readFileSync(path.join(dir, "kernel.json"), "utf8"));
    assert.deepEqual(spec.argv, [process.execPath, BIN, "kernel", "run", "--connection-file", "{connection_file}"]);
    assert.ok(path.isAbsolute(spec.argv[0]) && path.isAbsolute(spec.argv[1]));
    assert.equal(spec.display_name, "TypeScript (controlnet-ts)");
    assert.equal(spec.language, "typescript");
    assert.equal(spec.interrupt_mode, "signal");
    assert.equal(spec.env.FOO, "bar=baz");
    for (const size of [32, 64]) {
      const png = fs.readFileSync(path.join(dir, `logo-${size}x${size}.png`));
      assert.equal(png.subarray(1, 4).toString(), "PNG");
      assert.equal(png.readUInt32BE(16), size, "width");
      assert.equal(png.readUInt32BE(20), size, "height");
    }
  });

  it("--user installs into the Jupyter data dir; --sys-prefix uses the active venv", () => {
    const tmp = tempDir("cnts-install-");
    assert.equal(cli(["kernel", "install", "--user"], { JUPYTER_DATA_DIR: path.join(tmp, "data") }).status, 0);
    assert.ok(fs.existsSync(path.join(tmp, "data", "kernels", "controlnet-ts", "kernel.json")));
    assert.equal(cli(["kernel", "install", "--sys-prefix"], { VIRTUAL_ENV: path.join(tmp, "venv") }).status, 0);
    assert.ok(fs.existsSync(path.join(tmp, "venv", "share", "jupyter", "kernels", "controlnet-ts", "kernel.json")));
  });

  it("--sys-prefix outside a venv, or a prefix it cannot write, is one line, not a stack trace", () => {
    const noEnv = cli(["kernel", "install", "--sys-prefix"], { VIRTUAL_ENV: "", CONDA_PREFIX: "" });
    assert.equal(noEnv.status, 1, noEnv.stderr);
    assert.equal(noEnv.stderr, "controlnet-ts kernel install: --sys-prefix needs an active virtualenv or conda env (VIRTUAL_ENV / CONDA_PREFIX); use --prefix <dir> instead; nothing was installed\n");
    const tmp = tempDir("cnts-install-");
    const file = path.join(tmp, "a-file");
    fs.writeFileSync(file, "");
    const bad = cli(["kernel", "install", "--prefix", file]);
    assert.equal(bad.status, 1);
    assert.match(bad.stderr, /^controlnet-ts kernel install: .*a-file.*; nothing was installed\n$/);
    assert.doesNotMatch(bad.stderr, /\n\s+at /);
    // a folder that cannot be made (under /proc, where Node's recursive mkdir spins forever): fails at once
    if (fs.existsSync("/proc/self")) {
      const t0 = Date.now();
      const proc = spawnSync(process.execPath, [BIN, "kernel", "install", "--prefix", "/proc/nope"], { encoding: "utf8", timeout: 20_000 });
      assert.equal(proc.error, undefined, `still running after ${Date.now() - t0} ms`);
      assert.equal(proc.status, 1, proc.stderr);
      assert.match(proc.stderr, /^controlnet-ts kernel install: .*\/proc\/nope.*; nothing was installed\n$/);
    }
  });

  it("unknown commands, subcommands and flags fail with usage (through the bin)", () => {
    for (const args of [["nope"], ["kernel", "install", "--bogus"]]) {
      const r = cli(args);
      assert.equal(r.status, 2, `${args.join(" ")}: ${r.stdout}${r.stderr}`);
      assert.match(r.stderr, /usage:\s+controlnet-ts/, args.join(" "));
    }
    const help = cli(["--help"]);
    assert.equal(help.status, 0);
    assert.match(help.stdout, /kernel/);
    // each kernel subcommand's --help is the kernel's usage, exit 0, nothing installed
    for (const args of [["kernel", "install", "--help"], ["kernel", "install", "--prefix", "/nonexistent/x", "-h"], ["kernel", "run", "--help"]]) {
      const r = cli(args);
      assert.equal(r.status, 0, `${args.join(" ")}: ${r.stderr}`);
      assert.match(r.stdout, /^usage:\n  controlnet-ts kernel install/, args.join(" "));
      assert.equal(r.stderr, "");
    }
    assert.ok(!fs.existsSync("/nonexistent/x"));
    // the script's own file name (or a path to it) is train_controlnet, as its users type it
    // …and named so, as argparse names the script: in the usage and in its errors (the whole token of a bad flag)
    for (const script of ["train_controlnet.py", "examples/controlnet/train_controlnet.py"]) {
      const r = cli([script, "--help"]);
      assert.equal(r.status, 0, `${script}: ${r.stderr}`);
      assert.match(r.stdout, /^usage: train_controlnet\.py --pretrained_model_name_or_path/, script);
      const bad = cli([script, "--pretrained_model_name_or_path=x", "--dataset_name=y", "--foo=1"]);
      assert.equal(bad.status, 2);
      assert.match(bad.stderr, /^train_controlnet\.py: error: unrecognized arguments: --foo=1/, script);
    }
    assert.match(cli(["train_controlnet", "--help"]).stdout, /^usage: train_controlnet --pretrained_model_name_or_path/);
  });

  it("kernel subcommand argument errors, in-process", async () => {
    const cases = [
      [["nope"], /unknown kernel subcommand "nope"/],
      [["install", "--user", "--prefix", "/tmp/x"], /choose one of --user, --prefix, --sys-prefix/],
      [["install", "--name"], /--name needs a value/],
      [["install", "--user=yes"], /--user takes no value/],
      [["install", "--env", "NOEQUALS"], /--env expects KEY=VALUE/],
      [["install", "stray"], /unexpected argument "stray"/],
      [["run"], /kernel run needs --connection-file/],
    ] as const;
    for (const [args, expected] of cases) {
      const { code, stderr } = await captureStderr(() => main([...args]));
      assert.equal(code, 2, args.join(" "));
      assert.match(stderr, expected);
      assert.match(stderr, /usage:/);
    }
    assert.deepEqual(parseFlags(["--prefix=/a", "--env", "A=1", "--env=B=2", "--user"], { prefix: "string", env: "multi", user: "boolean" }), {
      prefix: "/a",
      env: ["A=1", "B=2"],
      user: true,
    });
    assert.throws(() => parseFlags(["--name", "--user"], { name: "string", user: "boolean" }), UsageError);
  });
});
