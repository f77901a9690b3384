/** One line for an error, for the command lines' messages: file-system errors say what happened to which path in
 *  words, TensorFlow's errors their first line (engineErrorLine). */
import fs from "node:fs";
import path from "node:path";
import { engineErrorLine } from "../engine/index.js";

export function describeError(e: unknown): string {
  const err = e as NodeJS.ErrnoException;
  if (!(err instanceof Error)) return String(e);
  const at = err.path ? ` ${err.path}` : "";
  switch (err.code) {
    case "ENOSPC": return `no space left on the device while writing${at || " (see the path below)"}: ${err.message}`;
    case "EROFS": return `cannot write${at}: the file system is read-only`;
    case "EACCES": case "EPERM": return `cannot write${at}: permission denied`;
    case "EEXIST": return `${at.trim() || "a path"} already exists and is not what was expected (a file where a folder belongs?)`;
    case "ENOTDIR": return `${at.trim() || "a path"}: a file is in the way of a folder`;
    case "EISDIR": return `${at.trim() || "a path"}: a folder is where a file should be`;
    case "ENOENT": {
      // node's recursive mkdir reports ENOENT on a read-only file system: say what the nearest existing folder is
      if (err.syscall === "mkdir" && err.path) {
        let dir = path.dirname(err.path);
        while (!fs.existsSync(dir) && path.dirname(dir) !== dir) dir = path.dirname(dir);
        try {
          fs.accessSync(dir, fs.constants.W_OK);
        } catch (w) {
          const code = (w as NodeJS.ErrnoException).code;
          return `cannot write ${err.path}: ${dir} is ${code === "EROFS" ? "on a read-only file system" : "not writable (permission denied)"}`;
        }
      }
      return `${at.trim() || "a file"} does not exist (${err.syscall ?? "open"})`;
    }
    default: return engineErrorLine(err.message) ?? err.message.split("\n")[0]!;
  }
}
