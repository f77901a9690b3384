/** Loading one of our optional plain N-API addons (native/host-memory, native/signals) installed beside the engine. */
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";

/** `<nativeDir>/<name>/<name>.node` loaded, or one line saying why it is not there. */
export function loadAddon<T>(nativeDir: string, name: string): { addon: T } | { missing: string } {
  const file = path.join(nativeDir, name, `${name}.node`);
  if (!fs.existsSync(file)) return { missing: `the ${name} addon is not installed` };
  try {
    return { addon: createRequire(import.meta.url)(file) as T };
  } catch (err) {
    return { missing: `the ${name} addon failed to load: ${(err instanceof Error ? err.message : String(err)).split("\n")[0]}` };
  }
}
