/**
 * The Node-API headers (node_api.h) our native addons compile against: the running Node's own include folder, the
 * system's, or the node-api-headers package (a dependency). Shared by install.mjs and build-collective.mjs.
 */
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";

/** The folder holding node_api.h, or null. */
export function nodeApiIncludeDir() {
  const candidates = [path.resolve(path.dirname(process.execPath), "..", "include", "node"), "/usr/include/node", "/usr/local/include/node"];
  try {
    candidates.push(path.join(path.dirname(createRequire(import.meta.url).resolve("node-api-headers/package.json")), "include"));
  } catch {
    // the package is a dependency; a Node install's own headers are preferred when present
  }
  return candidates.find((d) => fs.existsSync(path.join(d, "node_api.h"))) ?? null;
}
