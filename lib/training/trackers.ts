/**
 * `--report_to`, `--logging_dir` and `--tracker_project_name` as accelerate reads them.
 *
 * accelerate knows a fixed set of trackers (LoggerType) and rejects any other name with "Unsupported logging
 * capability". Of them, controlnet-ts writes TensorBoard only: `tensorboard` and `all` (all available = TensorBoard
 * here) log there; a known tracker we do not have (wandb, comet_ml, …) is still run — logged to TensorBoard, and
 * the warning says exactly that, instead of accelerate's silent skip of a tracker whose package is missing.
 *
 * Layout: accelerate's TensorBoardTracker writes into `<logging_dir>/<project name>` where logging_dir is
 * `Path(output_dir, logging_dir)` — an absolute `--logging_dir` is used as it is.
 */
import path from "node:path";

/** accelerate's LoggerType values. */
export const ACCELERATE_TRACKERS = ["all", "aim", "tensorboard", "wandb", "trackio", "comet_ml", "mlflow", "clearml", "dvclive", "swanlab"] as const;

export interface TrackerPlan {
  /** TensorBoard event files are written. */
  tensorboard: boolean;
  /** What to tell the user when --report_to asks for something we log differently; null when it is as asked. */
  note: string | null;
}

/** Throws accelerate's message for an unknown tracker. */
export function planTrackers(reportTo: string): TrackerPlan {
  if (!(ACCELERATE_TRACKERS as readonly string[]).includes(reportTo)) {
    throw new Error(`Unsupported logging capability: ${reportTo}. Choose between ${ACCELERATE_TRACKERS.join(", ")} (--report_to)`);
  }
  if (reportTo === "tensorboard" || reportTo === "all") return { tensorboard: true, note: null };
  return {
    tensorboard: true,
    note: `--report_to ${reportTo}: controlnet-ts has no ${reportTo} integration, so nothing is sent to ${reportTo}; ` +
      `the run is logged to TensorBoard instead (event files under --logging_dir/--tracker_project_name; view them with ` +
      "`tensorboard --logdir <that folder>`) and to train_log.jsonl.",
  };
}

/** `Path(output_dir, logging_dir)`: an absolute logging_dir stays as it is. */
export function resolveLoggingDir(outputDir: string, loggingDir: string): string {
  return path.isAbsolute(loggingDir) ? loggingDir : path.join(outputDir, loggingDir);
}

/** Where the TensorBoard tracker writes: `<logging_dir>/<tracker_project_name>`. */
export function tensorboardDir(a: { output_dir: string; logging_dir: string; tracker_project_name: string }): string {
  return path.join(resolveLoggingDir(a.output_dir, a.logging_dir), a.tracker_project_name);
}
