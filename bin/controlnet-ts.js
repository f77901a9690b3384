#!/usr/bin/env node
// controlnet-ts <subcommand> [args]: the package's command line.
//
// Each subcommand is one line in COMMANDS: a module (path from the package root, no extension) exporting
// `main(args: string[]): Promise<number | undefined>` (an exit code, or undefined to keep running, as a kernel does).
// In a source checkout the module's .ts file runs through tsx (registered here for import AND require, so kernel
// cells can require the library's .ts sources too); an installed package runs the built dist/<module>.js.
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const COMMANDS = {
  kernel: { module: "kernel/cli", summary: "install or run the Jupyter kernel (controlnet-ts kernel --help)" },
  train_controlnet: { module: "lib/cli/train", summary: "train a ControlNet with train_controlnet.py's flags (--help lists them)" },
  infer: { module: "lib/cli/infer", summary: "base model + ControlNet + control image + prompt → PNG (--help)" },
  accelerate: { module: "lib/cli/accelerate", summary: "accelerate launch [flags] train_controlnet.py … / accelerate config: the seed's commands, mapped" },
  launch: { module: "lib/cli/launch", summary: "data-parallel training on several processes/machines, accelerate launch's flags (--help)" },
};

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

function usage() {
  const width = Math.max(...Object.keys(COMMANDS).map((k) => k.length));
  const lines = Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(width)}  ${c.summary}`);
  return `usage: controlnet-ts <command> [args]\n\ncommands:\n${lines.join("\n")}\n`;
}

async function load(module) {
  const source = path.join(root, `${module}.ts`);
  if (fs.existsSync(source)) {
    const [{ register: registerEsm }, { register: registerCjs }] = await Promise.all([import("tsx/esm/api"), import("tsx/cjs/api")]);
    registerEsm();
    registerCjs();
    return import(pathToFileURL(source).href);
  }
  return import(pathToFileURL(path.join(root, "dist", `${module}.js`)).href);
}

const [given, ...args] = process.argv.slice(2);
// `controlnet-ts train_controlnet.py …` (or a path to it), as users of the script type it, is train_controlnet
const command = given !== undefined && /(^|[\\/])train_controlnet\.py$/.test(given) ? "train_controlnet" : given;
if (command === undefined || command === "--help" || command === "-h" || command === "help") {
  process.stdout.write(usage());
  process.exitCode = command === undefined ? 2 : 0;
} else if (!Object.hasOwn(COMMANDS, command)) {
  process.stderr.write(`controlnet-ts: unknown command ${JSON.stringify(command)}\n\n${usage()}`);
  process.exitCode = 2;
} else {
  const mod = await load(COMMANDS[command].module);
  // named as typed: `train_controlnet.py: error: …`, as argparse names the script
  const code = await mod.main(args, command !== given ? { prog: path.basename(given) } : {});
  if (typeof code === "number") process.exitCode = code;
}
