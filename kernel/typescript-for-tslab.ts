/**
 * The project's pinned TypeScript (5.9) as the compiler of tslab's converter.
 *
 * tslab@1.0.22 requires `@tslab/typescript-for-tslab`, a 5.0.4 fork of TypeScript whose only differences the
 * converter relies on are five exported helpers; everything else it calls is TypeScript's public or (in 5.x)
 * exported-internal API. This module gives the converter the real `typescript` package plus those five helpers,
 * written against 5.9 the way the fork writes them against 5.0 (TypeScriptForTslab, `src/services` and
 * `src/compiler/program.ts`), and installs it in Node's module cache under the fork's resolved path, so tslab's
 * unmodified `dist/converter.js` loads it instead of the fork. Cells are then type-checked and emitted by the same
 * TypeScript as the rest of the project (`satisfies`, `using`, `const` type parameters, …).
 */
import Module, { createRequire } from "node:module";
import type * as TS from "typescript";
import { nodeThenImportResolution } from "./import-condition.js";

type Ts = typeof TS;
/** Internals of TypeScript's bundle that the helpers use (exported by typescript.js, absent from its .d.ts). */
interface TsInternals {
  getTouchingPropertyName(sf: TS.SourceFile, pos: number): TS.Node;
  getContainingObjectLiteralElement(node: TS.Node): TS.ObjectLiteralElementLike | undefined;
  getPropertySymbolsFromContextualType(node: TS.ObjectLiteralElementLike, checker: TS.TypeChecker, type: TS.Type, unionOk: boolean): readonly TS.Symbol[];
  isLabelName(node: TS.Node): boolean;
  isTagName(node: TS.Node): boolean;
  isConstTypeReference(node: TS.Node): boolean;
  isInComment(sf: TS.SourceFile, pos: number): unknown;
  isImportMeta(node: TS.Node): boolean;
  typeToDisplayParts(checker: TS.TypeChecker, type: TS.Type, enclosing?: TS.Node): TS.SymbolDisplayPart[];
  getContainerNode(node: TS.Node): TS.Node | undefined;
  createTextSpanFromNode(node: TS.Node, sf: TS.SourceFile): TS.TextSpan;
  getEffectiveTypeRoots(options: TS.CompilerOptions, host: { directoryExists?(p: string): boolean; getCurrentDirectory?(): string }): string[] | undefined;
  sortAndDeduplicateDiagnostics<T extends TS.Diagnostic>(d: T[]): readonly T[];
  nullTransformationContext: TS.TransformationContext;
  SymbolDisplay: {
    getSymbolDisplayPartsDocumentationAndSymbolKind(checker: TS.TypeChecker, symbol: TS.Symbol, sf: TS.SourceFile, enclosing: TS.Node | undefined, location: TS.Node): {
      symbolKind: string; displayParts: TS.SymbolDisplayPart[]; documentation: TS.SymbolDisplayPart[]; tags: TS.JSDocTagInfo[] | undefined;
    };
    getSymbolModifiers(checker: TS.TypeChecker, symbol: TS.Symbol): string;
  };
  Completions: Record<string, unknown> & { getCompletionsAtPosition(...args: unknown[]): unknown };
}

const requireHere = createRequire(import.meta.url);
const tslabRequire = createRequire(requireHere.resolve("tslab/package.json"));
const FORK = "@tslab/typescript-for-tslab";

let installed: Ts | null = null;

/** The cell text tslab's converter is compiling (the engine sets it around convert()). */
let cellText: string | null = null;

/** Runs `convert` with `text` known as the cell being compiled (see unescapeExportSuffix). */
export function compilingCell<T>(text: string, convert: () => T): T {
  cellText = text;
  try {
    return convert();
  } finally {
    cellText = null;
  }
}

/**
 * tslab's converter compiles a cell a second time with `export {<its locals>}` appended, naming the locals by the keys
 * of TypeScript's symbol table — escaped names, in which `__x` is `___x` — so any cell that declared a name starting
 * with `__` failed: "Cannot find name '___x'". Where the compiler host reads the cell's file, the names of that
 * appended line (and only of that line: the text after the cell's own) are unescaped.
 */
function unescapeExportSuffix(content: string): string {
  if (cellText === null) return content;
  const at = content.lastIndexOf("\nexport {");
  if (at < 0 || !content.slice(0, at).endsWith(cellText) || !content.endsWith("}")) return content;
  const names = content.slice(at + "\nexport {".length, -1).split(", ");
  // `__x` unescaped is one of TypeScript's own symbols, no name of the cell's: `declare global { … }` is `__global`
  const own = names.filter((n) => !n.startsWith("__") || n.startsWith("___"));
  return content.slice(0, at) + "\nexport {" + own.map((n) => (n.startsWith("___") ? n.slice(1) : n)).join(", ") + "}";
}

/** The TypeScript tslab's converter runs on (installed on first call; the converter must be loaded after it). */
export function typescriptForTslab(): Ts {
  if (installed) return installed;
  const ts = requireHere("typescript") as Ts;
  const forkPath = tslabRequire.resolve(FORK);
  const m = new Module(forkPath);
  m.filename = forkPath;
  m.loaded = true;
  m.exports = withTslabHelpers(ts);
  requireHere.cache[forkPath] = m;
  installed = m.exports as Ts;
  return installed;
}

function withTslabHelpers(ts: Ts): Ts {
  const t = ts as unknown as Ts & TsInternals;

  // services/services.ts (getQuickInfoAtPosition of the language service, as the fork exports it: no host needed)
  const symbolForQuickInfo = (node: TS.Node, checker: TS.TypeChecker): TS.Symbol | undefined => {
    const object = t.getContainingObjectLiteralElement(node);
    if (object) {
      const contextual = checker.getContextualType(object.parent as TS.ObjectLiteralExpression);
      const props = contextual && t.getPropertySymbolsFromContextualType(object, checker, contextual, false);
      if (props && props.length === 1) return props[0];
    }
    return checker.getSymbolAtLocation(node);
  };
  const nodeForQuickInfo = (node: TS.Node): TS.Node => {
    const p = node.parent;
    if (ts.isNewExpression(p) && node.pos === p.pos) return p.expression;
    if (ts.isNamedTupleMember(p) && node.pos === p.pos) return p;
    if (t.isImportMeta(p) && (p as TS.MetaProperty).name === node) return p;
    return node;
  };
  const shouldGetType = (sf: TS.SourceFile, node: TS.Node, pos: number): boolean => {
    switch (node.kind) {
      case ts.SyntaxKind.Identifier:
        return !t.isLabelName(node) && !t.isTagName(node) && !t.isConstTypeReference(node.parent);
      case ts.SyntaxKind.PropertyAccessExpression:
      case ts.SyntaxKind.QualifiedName:
        return !t.isInComment(sf, pos);
      case ts.SyntaxKind.ThisKeyword:
      case ts.SyntaxKind.ThisType:
      case ts.SyntaxKind.SuperKeyword:
      case ts.SyntaxKind.NamedTupleMember:
        return true;
      case ts.SyntaxKind.MetaProperty:
        return t.isImportMeta(node);
      default:
        return false;
    }
  };
  function getQuickInfoAtPosition(sf: TS.SourceFile, checker: TS.TypeChecker, token: TS.CancellationToken, pos: number): TS.QuickInfo | undefined {
    const touched = t.getTouchingPropertyName(sf, pos);
    if (touched === sf) return undefined;
    const node = nodeForQuickInfo(touched);
    const symbol = symbolForQuickInfo(node, checker);
    const textSpan = t.createTextSpanFromNode(node, sf);
    if (!symbol || checker.isUnknownSymbol(symbol)) {
      const type = shouldGetType(sf, node, pos) ? checker.getTypeAtLocation(node) : undefined;
      return type && {
        kind: ts.ScriptElementKind.unknown, kindModifiers: ts.ScriptElementKindModifier.none, textSpan,
        displayParts: t.typeToDisplayParts(checker, type, t.getContainerNode(node)),
        documentation: type.symbol ? type.symbol.getDocumentationComment(checker) : undefined,
        tags: type.symbol ? type.symbol.getJsDocTags(checker) : undefined,
      };
    }
    const d = t.SymbolDisplay.getSymbolDisplayPartsDocumentationAndSymbolKind(checker, symbol, sf, t.getContainerNode(node), node);
    return {
      kind: d.symbolKind as TS.ScriptElementKind, kindModifiers: t.SymbolDisplay.getSymbolModifiers(checker, symbol), textSpan,
      displayParts: d.displayParts, documentation: d.documentation, tags: d.tags,
    };
  }

  // compiler/program.ts: getPreEmitDiagnostics for some of the program's files
  function getPreEmitDiagnosticsOfFiles(program: TS.Program, files: TS.SourceFile[], token?: TS.CancellationToken): readonly TS.Diagnostic[] {
    const out: TS.Diagnostic[] = [...program.getConfigFileParsingDiagnostics(), ...program.getOptionsDiagnostics(token), ...program.getGlobalDiagnostics(token)];
    const o = program.getCompilerOptions();
    for (const f of files) {
      out.push(...program.getSyntacticDiagnostics(f, token), ...program.getSemanticDiagnostics(f, token));
      if (o.declaration || o.composite) out.push(...program.getDeclarationDiagnostics(f, token));
    }
    return t.sortAndDeduplicateDiagnostics(out);
  }

  const hostOf = (program: TS.Program): TS.LanguageServiceHost => ({
    getCompilationSettings: () => program.getCompilerOptions(),
    getCurrentDirectory: () => program.getCurrentDirectory(),
    getScriptFileNames: () => [...program.getRootFileNames()],
    getScriptVersion: () => "0",
    getScriptSnapshot: (f) => {
      const sf = program.getSourceFile(f);
      return sf ? ts.ScriptSnapshot.fromString(sf.text) : undefined;
    },
    getDefaultLibFileName: (o) => ts.getDefaultLibFilePath(o),
    useCaseSensitiveFileNames: () => ts.sys.useCaseSensitiveFileNames,
    fileExists: (f) => ts.sys.fileExists(f),
    readFile: (f, e) => ts.sys.readFile(f, e),
    readDirectory: (...a) => ts.sys.readDirectory(...a),
    directoryExists: (d) => ts.sys.directoryExists(d),
    getDirectories: (d) => ts.sys.getDirectories(d),
  });

  const Completions = {
    ...t.Completions,
    // the fork's wrapper of the internal getCompletionsAtPosition (no format context). tslab passes `{}` as the
    // language-service host; completions inside `import { … } from "m"` and of module names ask it for the compiler
    // settings and the file system (`host.getCompilationSettings is not a function`), so the program's stand in.
    getCompletionsAtPositionForTslab: (host: object, program: TS.Program, ...rest: unknown[]) =>
      t.Completions.getCompletionsAtPosition({ ...hostOf(program), ...host }, program, ...rest.slice(0, 7), undefined),
  };

  return {
    ...ts,
    Completions,
    getQuickInfoAtPosition,
    getPreEmitDiagnosticsOfFiles,
    getDefaultTypeRoots: (cwd: string, host: { directoryExists?(p: string): boolean }) =>
      t.getEffectiveTypeRoots({}, { directoryExists: host.directoryExists, getCurrentDirectory: () => cwd }),
    getNullTransformationContext: () => t.nullTransformationContext,
    // not one of the fork's helpers: packages exported only under `import` resolve for cells (import-condition.ts)
    createWatchCompilerHost: ((...args: unknown[]) => {
      const host = (ts.createWatchCompilerHost as (...a: unknown[]) => TS.WatchCompilerHost<TS.BuilderProgram>)(...args);
      host.resolveModuleNameLiterals = nodeThenImportResolution(ts, host);
      const readFile = host.readFile.bind(host);
      host.readFile = (file, encoding) => {
        const text = readFile(file, encoding);
        return text !== undefined && /\/__tslab__\.[jt]s$/.test(file) ? unescapeExportSuffix(text) : text;
      };
      return host;
    }) as Ts["createWatchCompilerHost"],
  } as Ts;
}
