/**
 * The npm scripts' options (`npm run demo -- …`, `npm run pretrain-base -- …`): node:util's parseArgs, plus `-h` /
 * `--help`, which prints the script's usage and runs nothing, and one line (not a stack trace) for an unknown or
 * malformed option.
 */
import { parseArgs, type ParseArgsConfig } from "node:util";

type Options = NonNullable<ParseArgsConfig["options"]>;

type Values<O extends Options> = ReturnType<typeof parseArgs<{ args: string[]; options: O; strict: true; allowPositionals: false }>>["values"];

/** `-h` / `--help` among the arguments: prints `usage` and exits (for scripts that take positional arguments). */
export function exitOnHelp(usage: string, args = process.argv.slice(2)): void {
  if (args.includes("--help") || args.includes("-h")) {
    console.log(usage);
    process.exit(0);
  }
}

export function scriptArgs<const O extends Options>(usage: string, options: O): Values<O> {
  const args = process.argv.slice(2);
  exitOnHelp(usage, args);
  try {
    return parseArgs({ args, options, strict: true, allowPositionals: false }).values;
  } catch (e) {
    // parseArgs' first sentence names the option ("Unknown option '--stpes'"); the rest is about positionals
    console.error(`${(e as Error).message.split(". ")[0]} (--help lists the options)`);
    process.exit(2);
  }
}
