/** makeDirs: mkdir -p that fails at once under a pseudo-filesystem, where Node 20's recursive mkdirSync loops for ever. */
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { makeDirs } from "../../lib/io/dirs.js";
import { tempDir } from "../helpers.js";

test("makeDirs makes every missing level, accepts an existing folder, refuses a file in the way", () => {
  const dir = tempDir("dirs-");
  const deep = path.join(dir, "a", "b", "c");
  makeDirs(deep);
  assert.ok(fs.statSync(deep).isDirectory());
  makeDirs(deep);
  fs.writeFileSync(path.join(dir, "f"), "");
  // one line naming the file (a cell shows the message as it is), with Node's code and path for the command lines
  assert.throws(() => makeDirs(path.join(dir, "f")), (e: NodeJS.ErrnoException) =>
    e.code === "EEXIST" && e.path === path.join(dir, "f") && e.message === `${path.join(dir, "f")} is a file, not a folder`);
  assert.throws(() => makeDirs(path.join(dir, "f", "g", "h")), (e: NodeJS.ErrnoException) =>
    e.code === "ENOTDIR" && e.path === path.join(dir, "f") && e.message === `cannot make the folder ${path.join(dir, "f", "g", "h")}: ${path.join(dir, "f")} is a file`);
});

test("a folder under /proc is refused at once (Node 20's mkdirSync(recursive) never returned there)", { skip: !fs.existsSync("/proc/self") && "no procfs here" }, () => {
  const t0 = performance.now();
  assert.throws(() => makeDirs("/proc/controlnet-ts-no-such/x"), (e: NodeJS.ErrnoException) => e.code === "ENOENT");
  assert.ok(performance.now() - t0 < 1000);
});
