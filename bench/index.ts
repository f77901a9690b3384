/**
 * `npm run bench -- <name> [args]`: runs bench/<name>.ts's `run(args)`, which prints progress lines and returns one
 * JSON-able result; the last line printed is that JSON object (every bench follows this habit).
 */
import path from "node:path";
import fs from "node:fs";

const [name, ...args] = process.argv.slice(2);
const here = import.meta.dirname;
const available = fs.readdirSync(here).filter((f) => f.endsWith(".ts") && f !== "index.ts").map((f) => f.slice(0, -3)).sort();
if (!name || !available.includes(name)) {
  console.error(`usage: npm run bench -- <${available.join("|")}> [args]${name ? `\nunknown bench '${name}'` : ""}`);
  process.exit(2);
}
const mod = (await import(path.join(here, `${name}.ts`))) as { run(args: string[]): Promise<unknown> };
const result = await mod.run(args);
console.log(JSON.stringify(result));
