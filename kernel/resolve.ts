/**
 * How a cell's `import * as cn from "controlnet-ts"` finds the package, wherever the notebook lives.
 *
 * The kernel always serves the copy of the package it belongs to (as tslab serves `tslab`), so a notebook needs no
 * node_modules of its own. Two resolvers need teaching:
 *
 * - At run time, tslab turns imports into `require()`. We hook Node's CJS resolution for the package name and its
 *   exported subpaths: in a source checkout the `.ts` source behind each `exports` entry (`./dist/lib/index.js` →
 *   `lib/index.ts`, loaded through tsx's require hook, which the bin registers), else the built `dist/` file.
 * - At type-check time, tslab's converter (Node10 resolution, which ignores `exports` and cannot see a
 *   package's reference to itself) looks in `<cwd>/node_modules/controlnet-ts`. We answer those lookups with small
 *   virtual declaration files that re-export the package's real declarations. In a source checkout these are
 *   generated once with the project's own TypeScript (`--emitDeclarationOnly --noCheck`, seconds) into a cache and
 *   regenerated when a source file is newer; the library's sources are therefore never type-checked under tslab's
 *   looser settings, and a problem in them cannot block a cell.
 */
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import fs from "node:fs";
import Module from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { log } from "./log.js";

export interface PackageInfo {
  root: string;
  name: string;
  version: string;
  /** exported subpath ("." or "./widgets") → runtime entry (absolute). */
  entries: Map<string, { source?: string; built: string; types?: string }>;
  /** True when the TypeScript sources are here (a git checkout), false for an installed build. */
  fromSource: boolean;
}

type ExportTarget = string | { types?: string; default?: string; require?: string; node?: string; import?: string };

function packageRootOf(fromFile: string): string {
  let dir = path.dirname(fromFile);
  while (!fs.existsSync(path.join(dir, "package.json"))) {
    const up = path.dirname(dir);
    if (up === dir) throw new Error(`no package.json above ${fromFile}`);
    dir = up;
  }
  return dir;
}

/** Reads the package this kernel belongs to (overridable for tests with CONTROLNET_TS_PACKAGE_ROOT). */
export function readPackage(root = process.env.CONTROLNET_TS_PACKAGE_ROOT || packageRootOf(fileURLToPath(import.meta.url))): PackageInfo {
  const pkg = JSON.parse(fs.readFileSync(path.join(root, "package.json"), "utf8")) as {
    name: string;
    version: string;
    exports?: Record<string, ExportTarget>;
  };
  const entries = new Map<string, { source?: string; built: string; types?: string }>();
  let fromSource = false;
  for (const [sub, target] of Object.entries(pkg.exports ?? {})) {
    const t = typeof target === "string" ? { default: target } : target;
    const built = t.require ?? t.node ?? t.default ?? t.import;
    if (!built || !/\.[cm]?js$/.test(built)) continue; // e.g. "./package.json": resolved normally
    const srcRel = built.replace(/^\.\/dist\//, "./").replace(/\.([cm]?)js$/, ".$1ts");
    const source = srcRel !== built && fs.existsSync(path.join(root, srcRel)) ? path.join(root, srcRel) : undefined;
    if (source) fromSource = true;
    entries.set(sub, { source, built: path.join(root, built), types: t.types ? path.join(root, t.types) : undefined });
  }
  return { root, name: pkg.name, version: pkg.version, entries, fromSource };
}

/** The entry file a `require(request)` of the package should load, or null when `request` is not ours. */
export function runtimeEntry(pkg: PackageInfo, request: string): string | null {
  if (request !== pkg.name && !request.startsWith(pkg.name + "/")) return null;
  const sub = request === pkg.name ? "." : "./" + request.slice(pkg.name.length + 1);
  const e = pkg.entries.get(sub);
  if (!e) return null;
  if (e.source) return e.source;
  return e.built;
}

let hooked = false;

/** Makes `require("<name>")` and `require("<name>/<subpath>")` load this package from anywhere. Idempotent. */
export function installRuntimeResolution(pkg: PackageInfo): void {
  if (hooked) return;
  hooked = true;
  const M = Module as unknown as { _resolveFilename: (request: string, ...rest: unknown[]) => string };
  const original = M._resolveFilename;
  M._resolveFilename = function (this: unknown, request: string, ...rest: unknown[]): string {
    const mapped = typeof request === "string" ? runtimeEntry(pkg, request) : null;
    return mapped ?? original.call(this, request, ...rest);
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Declarations for the type checker.

function newestMtime(dir: string): number {
  let newest = 0;
  if (!fs.existsSync(dir)) return 0;
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) newest = Math.max(newest, newestMtime(p));
    else if (e.name.endsWith(".ts") && !e.name.endsWith(".test.ts")) newest = Math.max(newest, fs.statSync(p).mtimeMs);
  }
  return newest;
}

/**
 * The declaration cache of this checkout. One folder per checkout (named by a hash of its real path): checkouts (git
 * worktrees) that share one node_modules through a link each keep their own declarations, instead of deleting each
 * other's as stale and regenerating them at every kernel start.
 */
export function cacheDir(pkg: PackageInfo): string {
  const checkout = createHash("sha256").update(fs.realpathSync(pkg.root)).digest("hex").slice(0, 12);
  // (not under the older layout's "types/", whose clean-up removed every folder but its own)
  const preferred = path.join(pkg.root, "node_modules", ".cache", "controlnet-ts-kernel", "checkouts", checkout);
  try {
    fs.mkdirSync(preferred, { recursive: true });
    fs.accessSync(preferred, fs.constants.W_OK);
    return preferred;
  } catch {
    const dir = path.join(fs.realpathSync(process.env.TMPDIR || "/tmp"), `controlnet-ts-kernel-types-${process.getuid?.() ?? 0}`, checkout);
    fs.mkdirSync(dir, { recursive: true });
    return dir;
  }
}

/**
 * Ensures declaration files for every exported entry exist; resolves to subpath → absolute declaration path
 * (without the `.d.ts` extension), or null entries when they could not be produced.
 *
 * Each source state (newest mtime + entry list) gets its own folder, written under a temporary name and renamed
 * into place, so two kernels starting at once never see each other's half-written output.
 */
export async function ensureDeclarations(pkg: PackageInfo): Promise<Map<string, string | null>> {
  const out = new Map<string, string | null>();
  if (!pkg.fromSource) {
    for (const [sub, e] of pkg.entries) out.set(sub, e.types ? e.types.replace(/\.d\.[cm]?ts$/, "") : null);
    return out;
  }
  const cache = cacheDir(pkg);
  const sources = [...pkg.entries.values()].map((e) => e.source).filter((s): s is string => !!s);
  const topDirs = [...new Set(sources.map((s) => path.relative(pkg.root, s).split(path.sep)[0]!))];
  const state = JSON.stringify({ newest: Math.max(...topDirs.map((d) => newestMtime(path.join(pkg.root, d)))), sources });
  const key = createHash("sha256").update(state).digest("hex").slice(0, 16);
  const dir = path.join(cache, key);
  if (!fs.existsSync(dir)) {
    const t0 = Date.now();
    const tmp = fs.mkdtempSync(path.join(cache, `${key}.tmp-`));
    const ok = await emitDeclarations(pkg, sources, tmp);
    try {
      if (ok) fs.renameSync(tmp, dir);
    } catch {
      // another kernel got there first
    }
    fs.rmSync(tmp, { recursive: true, force: true });
    log(`declarations for ${pkg.name} ${ok ? "generated" : "FAILED"} in ${Date.now() - t0} ms (${dir})`);
    for (const old of fs.readdirSync(cache)) {
      if (old !== key && !old.includes(".tmp-")) fs.rmSync(path.join(cache, old), { recursive: true, force: true });
    }
  }
  for (const [sub, e] of pkg.entries) {
    if (!e.source) continue;
    const rel = path.relative(pkg.root, e.source).replace(/\.[cm]?ts$/, "");
    out.set(sub, fs.existsSync(path.join(dir, rel + ".d.ts")) ? path.join(dir, rel) : null);
  }
  return out;
}

function emitDeclarations(pkg: PackageInfo, sources: string[], outDir: string): Promise<boolean> {
  const tsconfig = path.join(outDir, "tsconfig.json");
  fs.writeFileSync(
    tsconfig,
    JSON.stringify({
      extends: path.join(pkg.root, "tsconfig.json"),
      compilerOptions: {
        declaration: true,
        emitDeclarationOnly: true,
        noCheck: true,
        noEmit: false,
        sourceMap: false,
        declarationMap: false,
        incremental: false,
        rootDir: pkg.root,
        outDir,
      },
      include: [],
      files: sources,
    }),
  );
  let tsc: string;
  try {
    tsc = Module.createRequire(path.join(pkg.root, "package.json")).resolve("typescript/bin/tsc");
  } catch {
    log("typescript is not installed next to the package: cells see it as `any`");
    return Promise.resolve(false);
  }
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [tsc, "-p", tsconfig], { stdio: ["ignore", "pipe", "pipe"] });
    let text = "";
    child.stdout.on("data", (d) => (text += d));
    child.stderr.on("data", (d) => (text += d));
    child.on("error", () => resolve(false));
    // With noCheck only syntax errors are reported; declarations are still written for the rest.
    child.on("close", (code) => {
      if (code !== 0) log(`tsc --emitDeclarationOnly exited ${code}: ${text.slice(0, 2000)}`);
      resolve(sources.some((s) => fs.existsSync(path.join(outDir, path.relative(pkg.root, s).replace(/\.[cm]?ts$/, ".d.ts")))));
    });
  });
}

/**
 * The virtual `node_modules/<name>` folder the cell compiler sees: path → file content. Each exported subpath is a
 * one-line re-export of the real declarations; a missing declaration degrades to `any` instead of failing the cell.
 */
export function virtualTypeFiles(pkg: PackageInfo, cwd: string, decls: Map<string, string | null>): Map<string, string> {
  const base = path.join(cwd, "node_modules", pkg.name);
  const files = new Map<string, string>();
  files.set(path.join(base, "package.json"), JSON.stringify({ name: pkg.name, version: pkg.version, types: "index.d.ts" }));
  for (const [sub, decl] of decls) {
    const file = sub === "." ? path.join(base, "index.d.ts") : path.join(base, sub.slice(2) + ".d.ts");
    files.set(
      file,
      decl
        ? `export * from ${JSON.stringify(decl.split(path.sep).join("/"))};\n`
        : `declare const untyped: any;\nexport = untyped;\n`,
    );
  }
  return files;
}
