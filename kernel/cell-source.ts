/**
 * What we do to a cell's text before tslab's converter sees it, and how positions come back to the user's text.
 *
 * 1. Shorthand properties `{ base }` become `{ base: base }`. tslab's converter rewrites a reference to an earlier
 *    cell's variable into `exports.base`, which is not valid as a shorthand name, so the printer keeps `base` and the
 *    cell threw ReferenceError after type-checking. The long form means the same (also in destructuring).
 * 2. Every statement gets a leading marker `/*@L<line>:<column>~<nonce>*\/`, and so does every part of an expression that
 *    starts on another line than the marked node around it (an argument, an element, a property, an operand, a
 *    template's `${…}`, an arrow's body, a method's name after its `.`: `cn.train({` … `})` spans many lines,
 *    `.filter(v => …)` may sit on the third line of a chain). The converter emits no source map, but TypeScript keeps
 *    leading comments through both of its emits, so a runtime position in the compiled JavaScript maps back to the cell
 *    line of the last marker before it, and to the column of the failing name nearest to where it sits after that
 *    marker (see cellPosition).
 *
 * 3. `export` before a top-level declaration (`export const x = 1`, as in a module) is blanked out: every top-level
 *    name of a cell is already visible to later cells, and the converter's own export of it collided ("Cannot
 *    redeclare exported variable"). Spaces of the same length keep every position.
 *
 * The rest only insert text, so a position in the rewritten text maps back by subtracting what was inserted before it.
 */
import type * as TS from "typescript";

export interface Rewritten {
  text: string;
  /** Insertions in original offsets, ascending; `from`: where a position inside one points in the user's text
   *  (default `at`). */
  inserts: { at: number; length: number; from?: number }[];
  /** The variable that holds the cell's last expression where the converter cannot find it (see LAST_USING). */
  lastVar?: string;
}

/**
 * A cell with a top-level `using` is emitted inside try/finally (the disposal), where tslab's converter no longer
 * sees its last expression statement as the cell's last statement: the value was lost. Such a cell's last expression
 * is assigned to this variable instead (before the disposal, as `using` would leave it).
 */
const LAST_USING = "tsLastExprUsing";

/** Per process, so that marker-like text in a cell's strings (`"/*@L9:0*\/"`) is never taken for one. */
const NONCE = Math.random().toString(36).slice(2, 8);
const MARKER = new RegExp(`/\\*@L(\\d+):(\\d+)~${NONCE}\\*/`, "g");

export function rewriteCell(ts: typeof TS, cell: string): Rewritten {
  const code = withoutExportModifiers(ts, cell);
  // a cell that is one object literal, `{ a: 1 }`, is that object (as in the Node REPL and Deno), not a block with a
  // label: it is parsed in parentheses, which are inserted, and positions in the parse are `shift` after the cell's
  const wrap = isObjectLiteralCell(ts, code);
  const shift = wrap ? 1 : 0;
  const sf = ts.createSourceFile("cell.ts", wrap ? `(${code})` : code, ts.ScriptTarget.Latest, true, ts.ScriptKind.TS);
  const edits: { at: number; text: string; from?: number }[] = [];
  const marked = new Set<number>();
  // lines as the user sees them and the excerpts count them: split at "\n" only (TypeScript also breaks lines at
  // U+2028/U+2029, which may sit in a string)
  const lineStarts = [0];
  for (let i = code.indexOf("\n"); i >= 0; i = code.indexOf("\n", i + 1)) lineStarts.push(i + 1);
  const lineOf = (pos: number) => {
    let lo = 0;
    for (let hi = lineStarts.length - 1; lo < hi;) {
      const mid = (lo + hi + 1) >> 1;
      if (lineStarts[mid]! <= pos) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  };
  /** Marks `node`; returns the line its marker (or the enclosing one) stands for. */
  const mark = (node: TS.Node): number => {
    const at = Math.max(0, node.getStart(sf) - shift);
    const line = lineOf(at);
    if (!marked.has(at)) {
      marked.add(at);
      // after a `/` (`)/xs.length` with the divisor on a later line) a marker would open a `//` comment
      edits.push({ at, text: `${code[at - 1] === "/" ? " " : ""}/*@L${line + 1}:${at - lineStarts[line]!}~${NONCE}*/` });
    }
    return line;
  };
  // `markedLine`: the line of the innermost marked node around `node`
  const visit = (node: TS.Node, markedLine: number): void => {
    let line = markedLine;
    if (isStatement(ts, node)) line = mark(node);
    else if (isExpressionPart(ts, node) && lineOf(Math.max(0, node.getStart(sf) - shift)) !== markedLine) line = mark(node);
    // a chain's `.name` on its own line (`[…]\n  .map(…)\n  .map(…)`): V8 places the call there, after the markers of
    // the lines before it; a marker after the dot (one before it would split `a\n  .b`) keeps that frame's line
    if (ts.isPropertyAccessExpression(node) && lineOf(node.name.getStart(sf) - shift) !== lineOf(Math.max(0, node.getStart(sf) - shift))) mark(node.name);
    // (an error about the inserted name, "Cannot find name 'x'", points at the name the user wrote)
    if (ts.isShorthandPropertyAssignment(node)) edits.push({ at: node.name.end - shift, text: `: ${node.name.text}`, from: node.name.getStart(sf) - shift });
    ts.forEachChild(node, (child) => visit(child, line));
  };
  ts.forEachChild(sf, (child) => visit(child, -1));
  if (wrap) edits.push({ at: 0, text: "(" }, { at: code.length, text: ")" });
  const last = sf.statements.at(-1);
  const usesUsing = sf.statements.some((st) => ts.isVariableStatement(st) && (st.declarationList.flags & ts.NodeFlags.Using) !== 0);
  const lastVar = usesUsing && last && ts.isExpressionStatement(last) ? LAST_USING : undefined;
  if (lastVar) edits.push({ at: last!.getStart(sf) - shift, text: `const ${lastVar} = (` }, { at: (last as TS.ExpressionStatement).expression.end - shift, text: ")" });
  // (stable: the statement's marker stays before the parenthesis at 0, and before the assignment)
  edits.sort((a, b) => a.at - b.at);
  const text = applyEdits(code, edits);
  return { text, inserts: edits.map((e) => ({ at: e.at, length: e.text.length, from: e.from })), ...(lastVar ? { lastVar } : {}) };
}

/** Whether the cell is one object literal (`{ a: 1 }`, `{}`): it starts with `{`, does not end with `;` (the Node
 *  REPL's test), and in parentheses it is exactly one expression statement holding an object literal. */
function isObjectLiteralCell(ts: typeof TS, code: string): boolean {
  const t = code.trim();
  if (!t.startsWith("{") || t.endsWith(";")) return false;
  const sf = ts.createSourceFile("cell.ts", `(${code})`, ts.ScriptTarget.Latest, true, ts.ScriptKind.TS);
  if ((sf as unknown as { parseDiagnostics: unknown[] }).parseDiagnostics.length) return false;
  const [only, ...rest] = sf.statements;
  return !rest.length && !!only && ts.isExpressionStatement(only) && ts.isParenthesizedExpression(only.expression) &&
    ts.isObjectLiteralExpression(only.expression.expression);
}

/** `cell` with the `export` keyword of its top-level declarations replaced by spaces (not `export default`, which
 *  names no declaration a later cell could use). */
function withoutExportModifiers(ts: typeof TS, cell: string): string {
  if (!/\bexport\b/.test(cell)) return cell;
  const sf = ts.createSourceFile("cell.ts", cell, ts.ScriptTarget.Latest, true, ts.ScriptKind.TS);
  let text = cell;
  for (const st of sf.statements) {
    const mods = ts.canHaveModifiers(st) ? ts.getModifiers(st) ?? [] : [];
    if (mods.some((m) => m.kind === ts.SyntaxKind.DefaultKeyword)) continue;
    for (const m of mods) {
      if (m.kind !== ts.SyntaxKind.ExportKeyword) continue;
      const at = m.getStart(sf);
      text = text.slice(0, at) + " ".repeat(m.end - at) + text.slice(m.end);
    }
  }
  return text;
}

function isStatement(ts: typeof TS, node: TS.Node): boolean {
  const k = node.kind;
  if (k === ts.SyntaxKind.Block || k === ts.SyntaxKind.EmptyStatement) return false;
  return (k >= ts.SyntaxKind.FirstStatement && k <= ts.SyntaxKind.LastStatement) ||
    k === ts.SyntaxKind.FunctionDeclaration || k === ts.SyntaxKind.ClassDeclaration;
}

/**
 * A node a marker may lead: an argument, an array element, an object member, an operand or branch of an expression.
 * Only these: a comment before a type, a parameter or a `.name` would be dropped or misplaced by the emit, and one
 * before a property access would split `a\n  .b` (harmless, but it maps nothing more).
 */
function isExpressionPart(ts: typeof TS, node: TS.Node): boolean {
  const p = node.parent;
  if (!p) return false;
  if (ts.isCallExpression(p) || ts.isNewExpression(p)) return (p.arguments ?? []).some((a: TS.Node) => a === node);
  if (ts.isArrayLiteralExpression(p)) return true;
  if (ts.isObjectLiteralExpression(p)) return true;
  if (ts.isBinaryExpression(p)) return node === p.left || node === p.right;
  if (ts.isConditionalExpression(p)) return node !== p.questionToken && node !== p.colonToken;
  if (ts.isTemplateSpan(p)) return node === p.expression;
  if (ts.isParenthesizedExpression(p) || ts.isAwaitExpression(p)) return true;
  if (ts.isPropertyAssignment(p) || ts.isVariableDeclaration(p)) return node === p.initializer;
  if (ts.isArrowFunction(p)) return node === p.body && !ts.isBlock(node);
  // a default parameter value, a class field's initialiser, an index, a `case` value
  if (ts.isParameter(p) || ts.isPropertyDeclaration(p)) return node === p.initializer;
  if (ts.isElementAccessExpression(p)) return node === p.argumentExpression;
  if (ts.isCaseClause(p)) return node === p.expression;
  return false;
}

/** An offset in the rewritten text → the offset in the user's text. */
export function originalOffset(r: Rewritten, offset: number): number {
  let shift = 0;
  for (const ins of r.inserts) {
    if (ins.at + shift + ins.length > offset) {
      // inside an insertion: the position it was inserted at
      if (ins.at + shift <= offset) return ins.from ?? ins.at;
      break;
    }
    shift += ins.length;
  }
  return offset - shift;
}

/** 0-based line and character → offset (and back) in `text`. */
export function offsetOf(text: string, line: number, character: number): number {
  let off = 0;
  for (let l = 0; l < line; l++) {
    const nl = text.indexOf("\n", off);
    if (nl < 0) return text.length;
    off = nl + 1;
  }
  return Math.min(off + character, text.length);
}
export function lineColOf(text: string, offset: number): { line: number; column: number } {
  const before = text.slice(0, offset);
  const line = before.split("\n").length - 1;
  return { line, column: offset - (before.lastIndexOf("\n") + 1) };
}

/**
 * The cell position of a runtime position (1-based line and column, as in stack frames) in the compiled JavaScript
 * `js` of `cell`: the line of the last marker before it; the column where the token found there appears in that line
 * (tslab writes earlier cells' variables as `exports.x`) — of its occurrences from the marker's column on, the one
 * nearest to the marker's column plus the distance from the marker in `js` (the emit changes spacing and drops
 * types, so that distance is only a hint) — else the line's first character.
 */
export function cellPosition(js: string, cell: string, line: number, column: number): { line: number; column: number } | null {
  const off = offsetOf(js, line - 1, column - 1);
  let found: RegExpExecArray | null = null;
  MARKER.lastIndex = 0;
  for (let m = MARKER.exec(js); m && m.index <= off; m = MARKER.exec(js)) found = m;
  if (!found) return null;
  const cellLine = Number(found[1]);
  const markerCol = Number(found[2]);
  const src = cell.split("\n")[cellLine - 1] ?? "";
  const token = /^[\w$]+(?:\.[\w$]+)*/.exec(js.slice(off).replace(/^exports\./, ""))?.[0];
  let col = -1;
  if (token) {
    const emitted = withoutCopies(js.slice(found.index + found[0].length, off)).replace(/exports\./g, "").split(GUARD_OPEN).join("").split(GUARD_STATEMENT).join("");
    const hint = markerCol + emitted.length;
    const re = new RegExp(`(?<![\\w$])${token.replace(/[.$]/g, "\\$&")}(?![\\w$])`, "g");
    const at = [...src.matchAll(re)].map((m) => m.index!);
    const after = at.filter((c) => c >= markerCol);
    const candidates = after.length ? after : at;
    for (const c of candidates) if (col < 0 || Math.abs(c - hint) < Math.abs(col - hint)) col = c;
  }
  if (col < 0) col = src.search(/\S|$/);
  return { line: cellLine, column: col + 1 };
}

/** `js` without the copies globalizeTopLevelVariables inserts: `let a = 1; exports.a = a; let b = 2; exports.b = b;`
 *  is `let a = 1, b = 2` again (for the distance from a marker, cellPosition). */
function withoutCopies(js: string): string {
  return js.replace(/;(?: exports\.([\w$]+) = \1;)+ (?:let|const|var)(?![\w$])/g, ",").replace(/(?: exports\.([\w$]+) = \1;)+/g, "");
}

/**
 * A short excerpt of the cell around a 1-based line (the line before it and the line), with a caret under the
 * column (and a run of carets for a span), as IPython and Deno show them.
 */
export function excerpt(cell: string, line: number, column: number, length = 1): string[] {
  const lines = cell.split("\n");
  const width = String(Math.min(lines.length, line)).length;
  const out: string[] = [];
  for (let l = Math.max(1, line - 1); l <= Math.min(lines.length, line); l++) {
    out.push(`${l === line ? ">" : " "} ${String(l).padStart(width)} | ${lines[l - 1]}`);
  }
  out.push(`  ${" ".repeat(width)} | ${" ".repeat(Math.max(0, column - 1))}${"^".repeat(Math.max(1, length))}`);
  return out;
}

/**
 * Jupyter's is_complete: "incomplete" when the parser stops at the end of the text wanting more (an open bracket,
 * an unterminated template literal), "invalid" when it fails before the end, else "complete".
 */
export function checkComplete(ts: typeof TS, code: string): { status: "complete" | "incomplete" | "invalid" } {
  if (/(^|\n)\s*\n\s*$/.test(code)) return { status: "complete" }; // two blank lines: the user wants it run
  const sf = ts.createSourceFile("cell.ts", code, ts.ScriptTarget.Latest, false, ts.ScriptKind.TS);
  const diags = (sf as unknown as { parseDiagnostics?: TS.DiagnosticWithLocation[] }).parseDiagnostics ?? [];
  if (!diags.length) return { status: "complete" };
  const end = code.trimEnd().length;
  const atEnd = diags.some((d) => {
    const msg = typeof d.messageText === "string" ? d.messageText : d.messageText.messageText;
    return (d.start >= end && / expected\.$/.test(msg)) || /^Unterminated template literal|^'\*\/' expected/.test(msg);
  });
  return { status: atEnd ? "incomplete" : "invalid" };
}

/** The global that the guard calls below reach (tslab-engine.ts sets it). */
export const RESUME_GUARD = "__controlnet_ts_resume__";
/** `await x` → `OPEN await x CLOSE`. Self-contained: a cell function sent elsewhere as text (`fn.toString()` into a
 *  Worker, a vm context, `new Function`) runs there without the guard instead of failing on an unknown name. */
const GUARD_OPEN = `(globalThis.${RESUME_GUARD} ?? ((v) => v))(`;
const GUARD_CLOSE = ")";
const GUARD_STATEMENT = `globalThis.${RESUME_GUARD}?.();`;

/**
 * The points where a cell's compiled JavaScript resumes after waiting, each made to call the guard first, which throws
 * if the cell was abandoned by an interrupt (tslab-engine.ts): `await x` becomes `guard(await x)`, the body of a
 * `for await` loop and every `catch` block start with `guard();` (a loop that catches errors and retries must not go
 * on either). Only text is inserted, never a line break: positions in stack frames still map back by lines
 * (cellPosition). `from`: where the cell's own code starts in `js` (the wrapper's code before it is left as it is).
 */
export function guardResumes(ts: typeof TS, js: string, from = 0): string {
  const sf = ts.createSourceFile("cell.js", js, ts.ScriptTarget.Latest, true, ts.ScriptKind.JS);
  // at one offset: closing text first (it ends an earlier node), then opening text, outer before inner
  const CLOSE_CALL = 0, CLOSE_BLOCK = 1, OPEN_BLOCK = 2, STATEMENT = 3, OPEN_CALL = 4;
  const edits: { at: number; rank: number; text: string }[] = [];
  const add = (at: number, rank: number, text: string) => {
    if (at >= from) edits.push({ at, rank, text });
  };
  const atBlockStart = (block: TS.Block) => add(block.getStart(sf) + 1, STATEMENT, GUARD_STATEMENT);
  const visit = (node: TS.Node): void => {
    if (ts.isAwaitExpression(node)) {
      add(node.getStart(sf), OPEN_CALL, GUARD_OPEN);
      add(node.getEnd(), CLOSE_CALL, GUARD_CLOSE);
    } else if (ts.isForOfStatement(node) && node.awaitModifier) {
      if (ts.isBlock(node.statement)) atBlockStart(node.statement);
      else {
        add(node.statement.getStart(sf), OPEN_BLOCK, `{${GUARD_STATEMENT} `);
        add(node.statement.getEnd(), CLOSE_BLOCK, "}");
      }
    } else if (ts.isCatchClause(node)) {
      atBlockStart(node.block);
    }
    ts.forEachChild(node, visit);
  };
  visit(sf);
  edits.sort((a, b) => a.at - b.at || a.rank - b.rank);
  return applyEdits(js, edits);
}

/**
 * tslab's emitted cell keeps a top-level `let` / `var` as a local of the cell, copied to `exports.x` by the cell's own
 * assignments, while later cells read and assign `exports.x`: a function of the cell went on seeing its local, so
 * `let lr = 1; function f() { return lr; }`, then in a later cell `lr = 2; f()`, gave 1 (IPython, the Node REPL and
 * Deno give 2). Here every reference to such a variable becomes `exports.x`, as later cells' are (found by
 * TypeScript's own name resolution on the emitted JavaScript, so a shadowing local or parameter keeps its name). The
 * declaration only gives the first value, copied to `exports.x` right after its declarator (`let a = 1, b = a + 1`
 * becomes `let a = 1; exports.a = a; let b = exports.a + 1; exports.b = b;`); inside its own declarator a name is still
 * the local being initialised (`let [m = 1, n = m] = []`). Only text is inserted, never a line break (positions in
 * stack frames map back by lines).
 *
 * A `const`, `function` or `class` a later cell declares again (a re-run or edited cell) is the same case:
 * `function g()` in cell 1 called by cell 1's `f`, then a new `g` in cell 2, left `f()` calling the old one. Their
 * references become `exports.x` too, so the newest declaration is what every cell's functions see, as in IPython. A
 * function needs no copy (the emitted code sets `exports.g = g` at the top of the cell, where the declaration is
 * hoisted to), nor a class (the emitted code copies it right after it); a const is copied after its declarator as a
 * let is. Inside its own body a function or class keeps its own name, as in JavaScript (a function's text may be sent
 * to a worker).
 */
export function globalizeTopLevelVariables(ts: typeof TS, js: string): string {
  const file = "/cell.js";
  const sf = ts.createSourceFile(file, js, ts.ScriptTarget.Latest, true, ts.ScriptKind.JS);
  // the names the converter makes visible to later cells: it assigns `exports.x` for each
  const exported = new Set<string>();
  const collect = (node: TS.Node): void => {
    if (ts.isPropertyAccessExpression(node) && ts.isIdentifier(node.expression) && node.expression.text === "exports") exported.add(node.name.text);
    ts.forEachChild(node, collect);
  };
  collect(sf);
  const names = (name: TS.BindingName, into: TS.Identifier[]): TS.Identifier[] => {
    if (ts.isIdentifier(name)) into.push(name);
    else for (const el of name.elements) if (!ts.isOmittedExpression(el)) names(el.name, into);
    return into;
  };
  const declared = new Map<TS.VariableDeclaration, TS.Identifier[]>();
  // the names of the cell's function and class declarations
  const namedDeclarations: TS.Identifier[] = [];
  const edits: { at: number; end: number; text: string }[] = [];
  const scanner = ts.createScanner(ts.ScriptTarget.Latest, true, ts.LanguageVariant.Standard, js);
  for (const st of sf.statements) {
    if ((ts.isFunctionDeclaration(st) && st.body || ts.isClassDeclaration(st)) && st.name && exported.has(st.name.text)) namedDeclarations.push(st.name);
    if (!ts.isVariableStatement(st)) continue;
    // (the flags overlap: AwaitUsing is Const | Using)
    const kind = st.declarationList.flags & ts.NodeFlags.BlockScoped;
    if (kind === ts.NodeFlags.Using || kind === ts.NodeFlags.AwaitUsing) continue;
    const keyword = kind === ts.NodeFlags.Const ? "const" : kind === ts.NodeFlags.Let ? "let" : "var";
    const list = st.declarationList.declarations;
    list.forEach((d, i) => {
      const ids = names(d.name, []).filter((id) => exported.has(id.text));
      if (ids.length) declared.set(d, ids);
      // `var k;` again keeps k's value; `let k;` is undefined, as tslab's `exports.k = void 0` already made it
      const copy = keyword === "var" && !d.initializer ? "" : ids.map((id) => ` exports.${id.text} = ${id.text};`).join("");
      if (i === list.length - 1) {
        if (copy) edits.push({ at: st.getEnd(), end: st.getEnd(), text: copy });
        return;
      }
      if (!copy) return;
      // the comma token after this declarator (the scanner skips comments, which may hold commas) ends a statement
      scanner.resetTokenState(d.getEnd());
      while (scanner.scan() !== ts.SyntaxKind.CommaToken);
      edits.push({ at: scanner.getTokenStart(), end: scanner.getTokenEnd(), text: `;${copy} ${keyword}` });
    });
  }
  if (!declared.size && !namedDeclarations.length) return js;

  // a program of this one file, without lib or imports: only its names are resolved
  const host: TS.CompilerHost = {
    getSourceFile: (f) => (f === file ? sf : undefined),
    getDefaultLibFileName: () => "/lib.d.ts",
    writeFile: () => {},
    getCurrentDirectory: () => "/",
    getCanonicalFileName: (f) => f,
    useCaseSensitiveFileNames: () => true,
    getNewLine: () => "\n",
    fileExists: (f) => f === file,
    readFile: (f) => (f === file ? js : undefined),
  };
  const checker = ts.createProgram([file], { allowJs: true, noLib: true, noResolve: true, types: [] }, host).getTypeChecker();
  const symbolsOf = new Map<TS.VariableDeclaration, Set<TS.Symbol>>();
  const globals = new Set<TS.Symbol>();
  const declarations = new Set<TS.Identifier>();
  const globalNames = new Set<string>();
  const addGlobal = (id: TS.Identifier): TS.Symbol | undefined => {
    const s = checker.getSymbolAtLocation(id);
    if (s) globals.add(s);
    declarations.add(id);
    globalNames.add(id.text);
    return s;
  };
  for (const [d, ids] of declared) {
    const own = new Set<TS.Symbol>();
    for (const id of ids) {
      const s = addGlobal(id);
      if (s) own.add(s);
    }
    symbolsOf.set(d, own);
  }
  namedDeclarations.forEach(addGlobal);
  // `local`: the symbols that are still the declarator's locals here (inside it, outside any function it holds)
  // the emitted code's own copies, `exports.g = g;` (a function's, hoisted to the top of the cell, must copy its local)
  const isCopy = (id: TS.Identifier): boolean => ts.isBinaryExpression(id.parent) && id.parent.right === id &&
    id.parent.operatorToken.kind === ts.SyntaxKind.EqualsToken && ts.isPropertyAccessExpression(id.parent.left) &&
    ts.isIdentifier(id.parent.left.expression) && id.parent.left.expression.text === "exports" && id.parent.left.name.text === id.text;
  // The converter copies by name: `let q = 1; { let q = 2; }` also got `exports.q = q;` after the inner declaration,
  // so the cell's later `q` (and every later cell's) read 2, and a top-level const changed value. A copy of a
  // block-scoped declaration that is not one of the cell's own statements is dropped (a `var` in a block is the
  // cell's: its copy stays).
  const isInnerCopy = (node: TS.Node): boolean => {
    if (!ts.isExpressionStatement(node) || node.parent === sf || !ts.isBinaryExpression(node.expression)) return false;
    const right = node.expression.right;
    if (!ts.isIdentifier(right) || !isCopy(right)) return false;
    const d = checker.getSymbolAtLocation(right)?.valueDeclaration;
    if (!d) return false;
    const blockScoped = ts.isClassDeclaration(d) ||
      ts.isVariableDeclaration(d) && ts.isVariableDeclarationList(d.parent) && (d.parent.flags & ts.NodeFlags.BlockScoped) !== 0;
    const statement = ts.isVariableDeclaration(d) ? d.parent.parent : d;
    return blockScoped && statement.parent !== sf;
  };
  // `self`: the function or class whose body this is, which keeps its own name (a function's text may run elsewhere,
  // in a worker or a vm context, where a recursion through `exports` would not resolve; inside a class body its name
  // is its own binding, set before the copy to `exports` after the class)
  const visit = (node: TS.Node, local: Set<TS.Symbol> | null, self: TS.Symbol | null): void => {
    if (isInnerCopy(node)) {
      edits.push({ at: node.getStart(sf), end: node.getEnd(), text: "" });
      return;
    }
    // (a declaration's own name stays: `var v = 1; { var v = 2; }` declares the same v again, and the converter's copy
    // after it carries the value to `exports.v`)
    const declarationName = ts.isIdentifier(node) && (ts.isVariableDeclaration(node.parent) || ts.isBindingElement(node.parent)) && node.parent.name === node;
    if (ts.isIdentifier(node) && globalNames.has(node.text) && !declarations.has(node) && !isCopy(node) && !declarationName) {
      const shorthand = ts.isShorthandPropertyAssignment(node.parent) && node.parent.name === node;
      const s = shorthand ? checker.getShorthandAssignmentValueSymbol(node.parent) : checker.getSymbolAtLocation(node);
      if (s && globals.has(s) && !local?.has(s) && s !== self) edits.push({ at: node.getStart(sf), end: node.getEnd(), text: shorthand ? `${node.text}: exports.${node.text}` : `exports.${node.text}` });
    }
    const inner = ts.isVariableDeclaration(node) && symbolsOf.has(node) ? symbolsOf.get(node)!
      : ts.isFunctionLike(node) || ts.isClassLike(node) ? null : local;
    const innerSelf = (ts.isFunctionDeclaration(node) || ts.isClassDeclaration(node)) && node.name && declarations.has(node.name)
      ? checker.getSymbolAtLocation(node.name) ?? null : self;
    ts.forEachChild(node, (child) => visit(child, inner, innerSelf));
  };
  visit(sf, null, null);
  edits.sort((a, b) => a.at - b.at);
  return applyEdits(js, edits);
}

/** `text` with each edit's `text` put at `at`, in place of what runs up to `end` (default: inserted, nothing replaced).
 *  The edits are in order and do not overlap. */
function applyEdits(text: string, edits: readonly { at: number; end?: number; text: string }[]): string {
  let out = "";
  let last = 0;
  for (const e of edits) {
    out += text.slice(last, e.at) + e.text;
    last = e.end ?? e.at;
  }
  return out + text.slice(last);
}
