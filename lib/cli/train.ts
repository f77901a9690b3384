/** `controlnet-ts train_controlnet --flags…`: the seed's command line, verbatim flags. */
import { ArgsError, parseTrainArgs, trainArgsHelp } from "../training/args.js";
import { HubRepoError, HubUploadError, trainControlNet } from "../training/run.js";
import { ForeignCheckpointError } from "../training/checkpoints.js";
import { NonFiniteLossError, RunMismatchError } from "../training/trainer.js";
import { HubError } from "../io/hub.js";
import { DistributedError, LAUNCHER_PIPE } from "../training/distributed.js";
import { describeError } from "../io/describe-error.js";
import { whenOutputGone } from "./output-gone.js";
import { STOP_EXIT_CODES, type StopSignal } from "../training/stop-signals.js";
import { InputError } from "../io/input-error.js";

function formatEta(seconds: number): string {
  if (!Number.isFinite(seconds)) return "?";
  const s = Math.round(seconds);
  return `${Math.floor(s / 3600)}:${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}:${String(s % 60).padStart(2, "0")}`;
}

/** `prog`: the command as the user typed it — `train_controlnet.py` for users of the script, as argparse names it. */
export async function main(argv: string[], opts: { prog?: string } = {}): Promise<number> {
  const prog = opts.prog ?? "train_controlnet";
  let parsed;
  try {
    parsed = parseTrainArgs(argv);
  } catch (e) {
    if (e instanceof ArgsError) {
      process.stderr.write(`${prog}: error: ${e.message}\n`);
      return 2;
    }
    throw e;
  }
  if (parsed.help) {
    process.stdout.write(trainArgsHelp(prog));
    return 0;
  }
  // under launch, rank 0 says them for the group (each process parses the same flags)
  if (!process.env.RANK || process.env.RANK === "0") for (const w of parsed.warnings) process.stderr.write(`warning: ${w}\n`);
  // Ctrl-C stops at the next step boundary and writes a checkpoint; a second Ctrl-C exits at once. SIGTERM (a
  // scheduler's or a container's stop, `timeout`, the launcher stopping a job) does the same: no trained step lost.
  // A repeat within a second is the same stop: `timeout` signals the process and then its group, and npm/npx
  // forward a terminal's Ctrl-C that the process also gets itself; quitting on those would throw the steps away.
  const ac = new AbortController();
  // SIGHUP: the terminal closed (ssh dropped) — a stop like the others, not a lost run
  let stoppedBy: StopSignal = "SIGINT";
  let stopAt = 0;
  // `why`: what happened when no signal came (the output went away), said instead of the signal it stands for
  const underLaunch = process.env[LAUNCHER_PIPE] === "stdin";
  // under launch: the group met and the training loop began (a stop is then agreed at a step boundary)
  let started = false;
  const onSignal = (sig: StopSignal, why?: string) => {
    if (ac.signal.aborted) {
      if (Date.now() - stopAt < 1000) return;
      process.stderr.write(`\n${sig}: quitting now; the steps since the last checkpoint are not saved\n`);
      quitNow(sig, underLaunch);
    }
    if (underLaunch && !started) {
      // nothing trained yet, and the process may be waiting for a peer that never joins (up to the join timeout):
      // nothing to keep, so it ends now (the launcher says so for the group)
      quitNow(sig, true);
    }
    stoppedBy = sig;
    stopAt = Date.now();
    // under launch, rank 0 says it for the group (every process stops at the same boundary)
    if (!process.env.RANK || process.env.RANK === "0") {
      write(process.stderr, why ? `\n${why}: stopping at the next step boundary\n`
        : `\n${sig === "SIGINT" ? "interrupt" : sig}: stopping at the next step boundary (${sig === "SIGINT" ? "Ctrl-C" : sig} again, a second later, to quit now)\n`);
    }
    ac.abort();
  };
  // (each by name: Node calls a listener with the signal's name and number, and the number read as `why`)
  const onSigint = () => onSignal("SIGINT");
  const onSigterm = () => onSignal("SIGTERM");
  const onSighup = () => onSignal("SIGHUP");
  process.on("SIGINT", onSigint);
  process.on("SIGTERM", onSigterm);
  process.on("SIGHUP", onSighup);
  // output that can no longer be written (a pipe's reader gone, a closed terminal) is a closed terminal's stop; what
  // is still said (the checkpoint kept) goes to the stream that still works
  const output = whenOutputGone((why) => {
    if (!ac.signal.aborted) onSignal("SIGHUP", `the output was closed (${why}: a pipe's reader exited, or the terminal closed)`);
  });
  const write = output.write;
  if (underLaunch) watchLauncher(() => started, () => onSignal("SIGTERM"));
  const tty = process.stderr.isTTY;
  let rate = 0;
  try {
    await trainControlNet(parsed.args, {
      signal: ac.signal,
      onTrainingStart: () => { started = true; },
      onStep: (r) => {
        rate = rate ? 0.8 * rate + 0.2 / r.seconds : 1 / r.seconds;
        const line = `Steps: ${r.step}/${r.maxSteps} loss=${r.loss.toFixed(4)} lr=${r.lr.toExponential(2)} ${rate.toFixed(2)} it/s ETA ${formatEta((r.maxSteps - r.step) / rate)}`;
        write(process.stderr, tty ? `\r${line}\x1b[K` : `${line}\n`);
      },
      log: (l) => write(process.stdout, `${tty ? "\n" : ""}${l}\n`),
      // the script's logger lines: Python's logging writes to stderr
      info: (l) => write(process.stderr, `${tty ? "\n" : ""}${l}\n`),
    });
    return ac.signal.aborted ? STOP_EXIT_CODES[stoppedBy] : 0;
  } catch (e) {
    if (e instanceof NonFiniteLossError) {
      process.stderr.write(`\n${e.message}\n`);
      return 1;
    }
    if (e instanceof HubRepoError) {
      process.stderr.write(`${prog}: error: --push_to_hub: ${e.message} Training did not start.\n`);
      return 1;
    }
    if (e instanceof ForeignCheckpointError) {
      process.stderr.write(`${prog}: error: ${e.message}\n`);
      return 2;
    }
    if (e instanceof DistributedError) {
      process.stderr.write(`\n${prog}: error: ${e.message}\n`);
      return 1;
    }
    if (e instanceof HubUploadError) {
      // the push comes after the final save: say that nothing is lost (HubError messages never hold the token)
      process.stderr.write(`\n--push_to_hub failed: ${e.message}\nThe trained ControlNet is saved in ${parsed.args.output_dir}; once the hub problem is fixed, push what this run would have pushed (not its checkpoints, logs or validation rounds) with:\n  ${e.retry}\n`);
      return 1;
    }
    // arguments refused (also: they do not match the checkpoints in output_dir): argparse's exit code
    if (e instanceof ArgsError || e instanceof RunMismatchError) {
      process.stderr.write(`\n${prog}: error: ${e.message}\n`);
      return 2;
    }
    // anything else: one line naming the problem (a checkpoint, if steps were taken, was already reported); the
    // stack only on request
    const what = e instanceof HubError ? `could not fetch from the hub (${e.repo}): ${e.message}` : describeError(e);
    process.stderr.write(`\n${prog}: ${what}\n`);
    if (process.env.CONTROLNET_TS_DEBUG) process.stderr.write(`${(e as Error)?.stack ?? e}\n`);
    // an InputError's message is the whole story (what was asked, what to do); where it happened matters for others
    else if (!(e instanceof InputError)) process.stderr.write("(set CONTROLNET_TS_DEBUG=1 to see where it happened)\n");
    return 1;
  } finally {
    output.stop();
    process.off("SIGINT", onSigint);
    process.off("SIGTERM", onSigterm);
    process.off("SIGHUP", onSighup);
  }
}

/**
 * Ends the process at once with the signal's exit status. Under launch by the signal itself, its default action:
 * process.exit() joins libuv's thread pool, where a collective waiting for a peer blocks until the join timeout
 * (minutes), and the launcher reads the signal as the stop it forwarded.
 */
function quitNow(sig: StopSignal, underLaunch: boolean): never {
  if (!underLaunch) process.exit(STOP_EXIT_CODES[sig]);
  process.removeAllListeners(sig);
  process.kill(process.pid, sig);
  // (the signal is delivered asynchronously: nothing more of this process may run meanwhile)
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 5000);
  process.kill(process.pid, "SIGKILL");
  throw new Error("unreachable");
}

/**
 * Under `controlnet-ts launch`: stdin is the launcher's pipe. When it closes the launcher is gone (kill -9, a crash):
 * before its training loop began (the group met) there is nothing to keep and the process exits at once (it would
 * otherwise wait out the group's join timeout, holding its port); after it, it stops as on SIGTERM (rank 0
 * checkpoints at the step boundary). Its output has nowhere to go then: write errors (EPIPE) are dropped so they cannot stop the checkpoint.
 */
function watchLauncher(started: () => boolean, stop: () => void): void {
  const gone = () => {
    for (const s of [process.stdout, process.stderr]) s.on("error", () => {});
    // (SIGKILL, not process.exit: exit joins libuv's thread pool, where a collective's join can block for minutes)
    if (!started()) process.kill(process.pid, "SIGKILL");
    stop();
  };
  process.stdin.once("end", gone);
  process.stdin.once("error", gone);
  process.stdin.resume(); // (reads nothing: the launcher never writes)
  (process.stdin as unknown as { unref?: () => void }).unref?.(); // and never keeps the process alive
}
