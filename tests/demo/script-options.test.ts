/** `npm run demo -- …` / `npm run pretrain-base -- …`: --help prints the options and runs nothing; a mistyped option is
 *  one line naming it (parseArgs threw with a stack trace). */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import path from "node:path";

const root = path.resolve(import.meta.dirname, "../..");
const script = (name: string, args: string[]) =>
  spawnSync(process.execPath, ["--import", "tsx", path.join(root, "scripts", `${name}.ts`), ...args], { cwd: root, encoding: "utf8", timeout: 120_000 });

test("demo and pretrain-base: --help lists the options and trains nothing; an unknown option is one line, exit 2", () => {
  for (const [name, flag] of [["demo", "--steps N"], ["pretrain-base", "--unet-steps N"]] as const) {
    const help = script(name, ["--help"]);
    assert.equal(help.status, 0, help.stderr);
    assert.match(help.stdout, new RegExp(`^usage: npm run ${name} -- \\[options\\]`));
    assert.ok(help.stdout.includes(flag), help.stdout);
    assert.doesNotMatch(help.stdout, /engine|step 1/i, "ran something");
    const typo = script(name, ["--stpes", "3"]);
    assert.equal(typo.status, 2);
    assert.equal(typo.stderr, "Unknown option '--stpes' (--help lists the options)\n");
  }
});
