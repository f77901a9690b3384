/**
 * Packages whose `exports` answer only the `import` condition, for cells.
 *
 * Cells are compiled to CommonJS, so `import x from "pkg"` and `await import("pkg")` run as `require("pkg")`. Node
 * (≥ 20.19) loads an ES module through require, but resolves the specifier with the `require` condition: a package
 * that maps its entry only under `import` (`"exports": { "import": "./index.js" }`) then fails with
 * ERR_PACKAGE_PATH_NOT_EXPORTED although the cell asked for it with `import`. The type-checker's Node10 resolution
 * ignores `exports` and misses such a package too. Both fall back here to what the cell's `import` means: the
 * package's `exports` under the `import` and `node` conditions (resolved by resolve.exports, as Node's ESM loader
 * would) and TypeScript's Bundler resolution, which reads `exports` with the `import` and `types` conditions.
 * Packages that resolve already are never touched.
 */
import fs from "node:fs";
import { isBuiltin } from "node:module";
import path from "node:path";
import { exports as resolveExports } from "resolve.exports";
import type * as TS from "typescript";

/** `pkg/sub/path` → ["pkg", "./sub/path"]; `@scope/pkg` → ["@scope/pkg", "."]; null for a relative or absolute id. */
function splitSpecifier(id: string): [string, string] | null {
  if (id.startsWith(".") || path.isAbsolute(id) || id.startsWith("node:")) return null;
  const parts = id.split("/");
  const n = id.startsWith("@") ? 2 : 1;
  if (parts.length < n || parts.slice(0, n).some((p) => p === "")) return null;
  const rest = parts.slice(n).join("/");
  return [parts.slice(0, n).join("/"), rest ? `./${rest}` : "."];
}

/** The file `import id` loads from one of `lookupPaths` (node_modules folders, nearest first), or null. */
export function importConditionTarget(id: string, lookupPaths: readonly string[]): string | null {
  const split = splitSpecifier(id);
  if (!split) return null;
  const [name, subpath] = split;
  for (const dir of lookupPaths) {
    const pkgDir = path.join(dir, name);
    let pkg: unknown;
    try {
      pkg = JSON.parse(fs.readFileSync(path.join(pkgDir, "package.json"), "utf8"));
    } catch {
      continue;
    }
    try {
      const found = resolveExports(pkg, subpath, { require: false });
      return found?.[0] ? path.join(pkgDir, found[0]) : null;
    } catch {
      return null; // the nearest package does not export this subpath under `import` either
    }
  }
  return null;
}

/**
 * Wraps a cell's require: a package whose exports have no `require` entry is loaded from its `import` entry.
 * Every other outcome (found, not installed, a syntax error inside the package) is Node's own.
 */
export function requireWithImportCondition(req: NodeJS.Require, id: string): unknown {
  try {
    return req(id);
  } catch (e) {
    if ((e as { code?: string })?.code !== "ERR_PACKAGE_PATH_NOT_EXPORTED") throw e;
    const target = importConditionTarget(id, req.resolve.paths(id) ?? []);
    if (!target) throw e;
    return req(target);
  }
}

type ResolveLiterals = NonNullable<TS.CompilerHost["resolveModuleNameLiterals"]>;

/**
 * The cell compiler's module resolution: tslab's (Node10, which ignores `exports`), and for a name it cannot
 * resolve, Bundler resolution as for an `import` (`exports` under `import` and `types`).
 */
export function nodeThenImportResolution(ts: typeof TS, host: TS.ModuleResolutionHost): ResolveLiterals {
  // The compiler asks again for every file at every cell, so answers are kept: all of them for the installed
  // packages' own files and for Node's built-in modules (declared ambiently by @types/node, so never "found"); for
  // the cells' files only what was found, so a package that the user installs after a failed import is found by the
  // next cell.
  const known = new Map<string, TS.ResolvedModuleWithFailedLookupLocations>();
  return (literals, containingFile, redirected, options) => {
    const asImport: TS.CompilerOptions = { ...options, moduleResolution: ts.ModuleResolutionKind.Bundler };
    const dir = containingFile.slice(0, containingFile.lastIndexOf("/") + 1);
    const keepMisses = dir.includes("/node_modules/");
    return literals.map((lit) => {
      const key = `${dir}\0${lit.text}`;
      const kept = known.get(key);
      if (kept) return kept;
      let r = ts.resolveModuleName(lit.text, containingFile, options, host, undefined, redirected);
      if (!r.resolvedModule && !isBuiltin(lit.text)) {
        const bundler = ts.resolveModuleName(lit.text, containingFile, asImport, host, undefined, redirected, ts.ModuleKind.ESNext);
        if (bundler.resolvedModule) r = bundler;
      }
      if (r.resolvedModule || keepMisses || isBuiltin(lit.text)) known.set(key, r);
      return r;
    });
  };
}
