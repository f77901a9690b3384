/** `controlnet-ts train_controlnet --flags…`: the seed's command line, verbatim flags. */
import { ArgsError, parseTrainArgs, trainArgsHelp } from "../training/args.js";
import { trainControlNet } from "../training/run.js";
import { NonFiniteLossError } from "../training/trainer.js";
import { HubError } from "../io/hub.js";
import { DistributedError } from "../training/distributed.js";

function formatEta(seconds: number): string {
  if (!Number.isFinite(seconds)) return "?";
  const s = Math.round(seconds);
  return `${Math.floor(s / 3600)}:${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}:${String(s % 60).padStart(2, "0")}`;
}

export async function main(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseTrainArgs(argv);
  } catch (e) {
    if (e instanceof ArgsError) {
      process.stderr.write(`train_controlnet: error: ${e.message}\n`);
      return 2;
    }
    throw e;
  }
  if (parsed.help) {
    process.stdout.write(trainArgsHelp());
    return 0;
  }
  for (const w of parsed.warnings) process.stderr.write(`warning: ${w}\n`);
  // Ctrl-C stops at the next step boundary and writes a checkpoint; a second Ctrl-C exits at once.
  const ac = new AbortController();
  const onSigint = () => {
    if (ac.signal.aborted) process.exit(130);
    process.stderr.write("\ninterrupt: stopping at the next step boundary (Ctrl-C again to quit now)\n");
    ac.abort();
  };
  process.on("SIGINT", onSigint);
  const tty = process.stderr.isTTY;
  let rate = 0;
  try {
    await trainControlNet(parsed.args, {
      signal: ac.signal,
      onStep: (r) => {
        rate = rate ? 0.8 * rate + 0.2 / r.seconds : 1 / r.seconds;
        const line = `Steps: ${r.step}/${r.maxSteps} loss=${r.loss.toFixed(4)} lr=${r.lr.toExponential(2)} ${rate.toFixed(2)} it/s ETA ${formatEta((r.maxSteps - r.step) / rate)}`;
        process.stderr.write(tty ? `\r${line}\x1b[K` : `${line}\n`);
      },
      log: (l) => process.stdout.write(`${tty ? "\n" : ""}${l}\n`),
    });
    return ac.signal.aborted ? 130 : 0;
  } catch (e) {
    if (e instanceof NonFiniteLossError) {
      process.stderr.write(`\n${e.message}\n`);
      return 1;
    }
    if (e instanceof DistributedError) {
      process.stderr.write(`\ntrain_controlnet: error: ${e.message}\n`);
      return 1;
    }
    if (e instanceof HubError) {
      // the push comes after the final save: say that nothing is lost (HubError messages never hold the token)
      process.stderr.write(`\n--push_to_hub failed: ${e.message}\nThe trained ControlNet is saved in ${parsed.args.output_dir}; upload that folder again (huggingface-cli upload, or the pushToHub() cell) once the hub problem is fixed.\n`);
      return 1;
    }
    throw e;
  } finally {
    process.off("SIGINT", onSigint);
  }
}
