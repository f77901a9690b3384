/** The kernel's declaration cache when checkouts (git worktrees) share one node_modules through a link. */
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { test } from "node:test";
import { cacheDir, ensureDeclarations, readPackage } from "../../kernel/resolve.js";
import { ROOT } from "./client.js";
import { tempDir } from "../helpers.js";

const FIXTURE = path.join(ROOT, "tests", "kernel", "fixtures", "selfpkg");

test("two checkouts sharing node_modules keep each other's declarations", async () => {
  const tmp = tempDir("cnts-decl-");
  const shared = path.join(tmp, "shared_node_modules");
  fs.mkdirSync(shared);
  fs.symlinkSync(fs.realpathSync(path.join(ROOT, "node_modules", "typescript")), path.join(shared, "typescript"));
  const checkouts = ["a", "b"].map((name) => {
    const root = path.join(tmp, name);
    fs.mkdirSync(root);
    for (const f of ["package.json", "tsconfig.json", "lib", "widgets"]) fs.cpSync(path.join(FIXTURE, f), path.join(root, f), { recursive: true });
    fs.symlinkSync(shared, path.join(root, "node_modules"));
    return readPackage(root);
  });
  const [a, b] = checkouts as [ReturnType<typeof readPackage>, ReturnType<typeof readPackage>];
  assert.notEqual(fs.realpathSync(cacheDir(a)), fs.realpathSync(cacheDir(b)), "one cache folder per checkout");
  const declA = await ensureDeclarations(a);
  const fileA = [...declA.values()].find((v) => v)! + ".d.ts";
  assert.ok(fs.existsSync(fileA), fileA);
  const made = fs.statSync(fileA).mtimeMs;
  const declB = await ensureDeclarations(b);
  assert.ok([...declB.values()].some((v) => v && fs.existsSync(v + ".d.ts")));
  assert.ok(fs.existsSync(fileA), "b's start did not delete a's declarations");
  await ensureDeclarations(a);
  assert.equal(fs.statSync(fileA).mtimeMs, made, "a's next start reuses them");
});
