/**
 * `mkdir -p`, one level at a time. Node 20's `fs.mkdirSync(dir, { recursive: true })` never returns for a path under
 * a pseudo-filesystem that answers ENOENT for a child (`/proc/x`, `/sys/x`): libuv retries the parent, which exists,
 * and the child again, for ever — inside one synchronous call, so not even an interrupt stops it (a notebook's
 * `save("/proc/x")` hung its kernel). Making each missing level with a plain mkdir fails at once with that ENOENT.
 */
import fs from "node:fs";
import path from "node:path";
import { InputError } from "./input-error.js";

export function makeDirs(dir: string): void {
  const missing: string[] = [];
  let d = path.resolve(dir);
  for (let up = path.dirname(d); !fs.existsSync(d) && up !== d; d = up, up = path.dirname(d)) missing.push(d);
  // a file where the folder (or one above it) should be: one line naming it, with the code and path Node would give
  if (!fs.statSync(d).isDirectory()) {
    if (!missing.length) throw Object.assign(new InputError(`${dir} is a file, not a folder`), { code: "EEXIST", path: dir, syscall: "mkdir" });
    throw Object.assign(new InputError(`cannot make the folder ${dir}: ${d} is a file`), { code: "ENOTDIR", path: d, syscall: "mkdir" });
  }
  for (const m of missing.reverse()) {
    try {
      fs.mkdirSync(m);
    } catch (e) {
      // made meanwhile by another process (two ranks making the same folder) is what was asked
      if ((e as NodeJS.ErrnoException).code !== "EEXIST" || !fs.statSync(m).isDirectory()) throw e;
    }
  }
}
