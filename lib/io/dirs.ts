/**
 * `mkdir -p`, one level at a time. Node 20's `fs.mkdirSync(dir, { recursive: true })` never returns for a path under
 * a pseudo-filesystem that answers ENOENT for a child (`/proc/x`, `/sys/x`): libuv retries the parent, which exists,
 * and the child again, for ever — inside one synchronous call, so not even an interrupt stops it (a notebook's
 * `save("/proc/x")` hung its kernel). Making each missing level with a plain mkdir fails at once with that ENOENT.
 */
import fs from "node:fs";
import path from "node:path";

export function makeDirs(dir: string): void {
  const missing: string[] = [];
  let d = path.resolve(dir);
  for (let up = path.dirname(d); !fs.existsSync(d) && up !== d; d = up, up = path.dirname(d)) missing.push(d);
  if (!missing.length && !fs.statSync(d).isDirectory()) {
    throw Object.assign(new Error(`EEXIST: file already exists, mkdir '${dir}'`), { code: "EEXIST", path: dir });
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
