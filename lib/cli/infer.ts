/** `controlnet-ts infer …`: the seed's inference snippet as a command (base, ControlNet, control image, prompt → PNG). */
import path from "node:path";
import { inferMain, parseInferArgs } from "../pipeline/cli.js";
import { CLIPTokenizer } from "../models/clip/tokenizer.js";
import { hasMarker, verifyCheckpoint } from "../training/checkpoints.js";

export async function main(argv: string[]): Promise<number> {
  const damaged = damagedCheckpoint(argv);
  if (damaged) {
    process.stderr.write(`controlnet-ts infer: ${damaged}\n`);
    return 1;
  }
  return inferMain(argv, { loadTokenizer: (dir: string) => CLIPTokenizer.fromFolder(dir) });
}

/**
 * A ControlNet taken from a training checkpoint (`checkpoint-N` or its `controlnet/`) is checked against the
 * checkpoint's SHA-256s first, as resuming it is: a flipped bit is named, not sampled from.
 */
function damagedCheckpoint(argv: string[]): string | null {
  let dirs: string[];
  try {
    dirs = ((parseInferArgs(argv).controlnet as string[] | undefined) ?? []).map((d) => path.resolve(d));
  } catch {
    return null; // inferMain reports bad arguments
  }
  for (const d of dirs) {
    const checkpoint = [d, path.dirname(d)].find(hasMarker);
    const why = checkpoint && verifyCheckpoint(checkpoint, { checksums: true });
    if (why) return `--controlnet ${d}: the checkpoint ${checkpoint} is damaged (${why}); nothing was generated`;
  }
  return null;
}
