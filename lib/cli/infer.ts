/** `controlnet-ts infer …`: the seed's inference snippet as a command (base, ControlNet, control image, prompt → PNG). */
import { inferMain } from "../pipeline/cli.js";
import { CLIPTokenizer } from "../models/clip/tokenizer.js";

export async function main(argv: string[]): Promise<number> {
  return inferMain(argv, { loadTokenizer: (dir: string) => CLIPTokenizer.fromFolder(dir) });
}
