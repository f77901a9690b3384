/**
 * Which files of a dataset folder hold a split, by datasets' keywords (data_files.py): a file or folder named after
 * train / training is the train split's, test / testing / eval / evaluation the test split's, and so on. Files named
 * after no split are one split, which datasets takes as train.
 */
import fs from "node:fs";
import path from "node:path";
import { InputError } from "../../io/input-error.js";

const SPLIT_KEYWORDS: Record<string, string[]> = {
  train: ["train", "training"],
  validation: ["validation", "valid", "dev", "val"],
  test: ["test", "testing", "eval", "evaluation"],
};

function namedAfter(dir: string, file: string, words: string[]): boolean {
  return new RegExp(`(^|[/_. 0-9-])(${words.join("|")})([/_. 0-9-]|$)`).test(path.relative(dir, file).replace(/\\/g, "/"));
}

/** `files` (under `dir`) of `split`; all of them when none is named after a split; refused when only other splits
 *  are there (the script's dataset["train"] fails). `what` names the files in the message. */
export function filesOfSplit(dir: string, files: string[], split: string, what: string): string[] {
  const inSplit = files.filter((f) => namedAfter(dir, f, SPLIT_KEYWORDS[split] ?? [split]));
  if (inSplit.length) return inSplit;
  const others = files.filter((f) => namedAfter(dir, f, Object.values(SPLIT_KEYWORDS).flat()));
  if (others.length) {
    throw new InputError(`${dir} has no '${split}' split: its ${what} are named after other splits (${others.slice(0, 3).map((f) => path.relative(dir, f)).join(", ")})`);
  }
  return files;
}

/** The files under `dir` (recursively, hidden ones left out) whose name `keep` accepts, sorted. */
export function filesUnder(dir: string, keep: (name: string) => boolean): string[] {
  const all: string[] = [];
  const walk = (d: string): void => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      if (e.name.startsWith(".")) continue;
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (keep(e.name)) all.push(p);
    }
  };
  walk(dir);
  return all.sort();
}
