/**
 * `npm run bench -- <name> [args]`: runs bench/<name>.ts's `run(args)`, which prints progress lines and returns one
 * JSON-able result; the last line printed is that JSON object (every bench follows this habit; a bench that fails
 * prints `{"bench": <name>, "error": <message>}` last and exits 1).
 * `npm run bench -- <name> --help` prints the bench's `usage` (bench/_cli.ts) and runs nothing;
 * `npm run bench -- --help` lists the benches.
 */
import path from "node:path";
import fs from "node:fs";
import { formatUsage, wantsHelp, type BenchUsage } from "./_cli.js";

type Bench = { run(args: string[]): Promise<unknown>; usage?: BenchUsage };

const [name, ...args] = process.argv.slice(2);
const here = import.meta.dirname;
// files starting with "_" are shared helpers, not benches
const available = fs.readdirSync(here).filter((f) => f.endsWith(".ts") && f !== "index.ts" && !f.startsWith("_")).map((f) => f.slice(0, -3)).sort();
const load = async (n: string) => (await import(path.join(here, `${n}.ts`))) as Bench;
const synopsis = `usage: npm run bench -- <${available.join("|")}> [args]\n       npm run bench -- <name> --help   (the bench's options and defaults)`;

if (!name || wantsHelp([name])) {
  if (!name) {
    console.error(synopsis);
    process.exit(2);
  }
  const w = Math.max(...available.map((n) => n.length));
  const lines = [];
  for (const n of available) lines.push(`  ${n.padEnd(w)}  ${(await load(n)).usage?.summary ?? ""}`);
  console.log(`${synopsis}\n\nbenches:\n${lines.join("\n")}`);
  process.exit(0);
}
if (!available.includes(name)) {
  console.error(`${synopsis}\nunknown bench '${name}'`);
  process.exit(2);
}
const mod = await load(name);
if (wantsHelp(args)) {
  console.log(mod.usage ? formatUsage(name, mod.usage) : `npm run bench -- ${name}: no usage recorded (see the header of bench/${name}.ts)`);
  process.exit(0);
}
let result: unknown;
try {
  result = await mod.run(args);
} catch (e) {
  const err = e instanceof Error ? e : new Error(String(e));
  // a bench's own failure ("bench <name>: …") is one clear line; anything else keeps its stack
  console.error(err.message.startsWith(`bench ${name}`) ? err.message : `bench ${name} failed: ${err.stack ?? err.message}`);
  console.log(JSON.stringify({ bench: name, error: err.message }));
  process.exit(1);
}
console.log(JSON.stringify(result));
