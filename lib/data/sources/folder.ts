/**
 * Tables described by JSON Lines metadata whose image cells are paths:
 * - HF imagefolder: `metadata.jsonl` (or `train.jsonl`) next to the images; `file_name` becomes the `image` column and
 *   `<name>_file_name` becomes `<name>`, as in `datasets`;
 * - fusing/fill50k's loading-script layout: `train.jsonl` + `images.zip` + `conditioning_images.zip` (the paths are
 *   looked up inside the archives, lazily) or the same with the archives extracted;
 * - lllyasviel's `prompt.json` (JSON Lines despite its name) with `source/` and `target/`.
 */
import fs from "node:fs";
import path from "node:path";
import { parse as parseCsvText } from "csv-parse/sync";
import type { Table } from "./table.js";
import { isSafeRelativePath, normalizeEntryName, ZipArchive } from "./zip.js";
import { readDatasetFile } from "./table.js";

/** Parses JSON Lines (or a JSON array) into objects; names the line of a syntax error. */
export function parseJsonLines(text: string, file: string): Record<string, unknown>[] {
  const isRow = (v: unknown) => typeof v === "object" && v !== null && !Array.isArray(v);
  const kind = (v: unknown) => (v === null ? "null" : Array.isArray(v) ? "an array" : typeof v);
  const trimmed = text.trim();
  if (trimmed.startsWith("[")) {
    let all: unknown[];
    try {
      all = JSON.parse(trimmed) as unknown[];
    } catch (e) {
      throw new Error(`${file}: invalid JSON (${(e as Error).message})`);
    }
    const bad = all.findIndex((v) => !isRow(v));
    if (bad >= 0) throw new Error(`${file}: row ${bad + 1} is ${kind(all[bad])}, not an object of columns`);
    return all as Record<string, unknown>[];
  }
  const rows: Record<string, unknown>[] = [];
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim();
    if (!line) continue;
    let row: unknown;
    try {
      row = JSON.parse(line);
    } catch (e) {
      throw new Error(`${file}:${i + 1}: invalid JSON (${(e as Error).message})`);
    }
    if (!isRow(row)) throw new Error(`${file}:${i + 1}: the row is ${kind(row)}, not an object of columns`);
    rows.push(row as Record<string, unknown>);
  }
  return rows;
}

/**
 * Parses imagefolder's metadata.csv (a header row, RFC 4180 quoting) with csv-parse, refusing what pandas — which
 * `datasets` reads it with — refuses: a quote that never closes (it swallowed the rows after it), a row with more
 * fields than the header. A row with fewer fields gets null for the rest, and an empty field null, as pandas' NaN.
 */
export function parseCsv(text: string, file = "metadata.csv"): Record<string, unknown>[] {
  let header: string[] = [];
  let records: Record<string, string>[];
  try {
    records = parseCsvText(text, {
      columns: (names: string[]) => (header = names), bom: true, skip_empty_lines: true, relax_column_count_less: true,
    }) as Record<string, string>[];
  } catch (e) {
    throw new Error(`${file}: ${(e as Error).message}`);
  }
  // an empty field is pandas' NaN too (a missing caption, not an empty one: the script refuses such a row)
  return records.map((r) => Object.fromEntries(header.map((h) => [h, r[h] === undefined || r[h] === "" ? null : r[h]])));
}

export interface JsonlTableOptions {
  /** Rename `file_name` → `image` and `<x>_file_name` → `<x>` (imagefolder metadata). */
  imagefolder?: boolean;
  /** Archives searched (in order) before the file system for path cells. */
  archives?: ZipArchive[];
  defaultColumns?: Table["defaultColumns"];
  kind: string;
  /** Refuse paths that are absolute or climb out of the folder (hub snapshots). */
  strictPaths?: boolean;
  /** More metadata files of the same imagefolder (in sub-folders of the first one's): their rows follow, their paths
   *  taken relative to their own folder, as datasets' imagefolder reads every metadata file of a split. */
  moreMetadata?: string[];
}

export class JsonlTable implements Table {
  readonly columns: string[];
  readonly numRows: number;
  readonly description: string;
  readonly defaultColumns?: Table["defaultColumns"];
  private readonly rows: Record<string, unknown>[];
  private readonly archives: ZipArchive[];
  private readonly rowDirs: string[];
  private readonly rowStarts: number[];
  private readonly strictPaths: boolean;

  constructor(readonly metadataFile: string, opts: JsonlTableOptions) {
    let rows: Record<string, unknown>[] = [];
    // each row's paths start at its own metadata file's folder (rowDirs[k] for rows from starts[k])
    this.rowDirs = [];
    this.rowStarts = [];
    for (const file of [metadataFile, ...(opts.moreMetadata ?? [])]) {
      const text = fs.readFileSync(file, "utf8");
      this.rowStarts.push(rows.length);
      this.rowDirs.push(path.dirname(file));
      rows = rows.concat(file.endsWith(".csv") ? parseCsv(text, file) : parseJsonLines(text, file));
    }
    if (opts.imagefolder) {
      rows = rows.map((r) => {
        const o: Record<string, unknown> = {};
        for (const [k, v] of Object.entries(r)) {
          if (k === "file_name") o.image = v;
          else if (k.endsWith("_file_name")) o[k.slice(0, -"_file_name".length)] = v;
          else o[k] = v;
        }
        return o;
      });
    }
    const cols: string[] = [];
    const seen = new Set<string>();
    for (const r of rows) for (const k of Object.keys(r)) if (!seen.has(k)) { seen.add(k); cols.push(k); }
    this.rows = rows;
    this.columns = cols;
    this.numRows = rows.length;
    this.archives = opts.archives ?? [];
    this.strictPaths = opts.strictPaths ?? false;
    this.defaultColumns = opts.defaultColumns;
    const arch = this.archives.length ? ` + ${this.archives.map((a) => path.basename(a.file)).join(" + ")}` : "";
    const more = opts.moreMetadata?.length ? ` + ${opts.moreMetadata.length} more metadata file(s)` : "";
    this.description = `${opts.kind} ${metadataFile}${more}${arch} (${rows.length} rows)`;
  }

  async readCells(row: number, columns: readonly string[]): Promise<unknown[]> {
    const r = this.rows[row]!;
    return columns.map((c) => r[c] ?? null);
  }

  async openFile(p: string, column: string, row: number): Promise<Uint8Array> {
    const name = normalizeEntryName(p);
    if (this.archives.length) {
      if (!isSafeRelativePath(name)) throw new Error(`refused path ${p} (absolute or outside the dataset)`);
      // A column reads its own archive where there is one, as the loading script joins each column's name to its own
      // extracted folder (images.zip for `image`, conditioning_images.zip for `conditioning_image`): a bare "0.png" is
      // in both, and the first archive in name order (conditioning_images.zip) gave every row's target its
      // conditioning image. Elsewhere a name found in two archives is refused rather than guessed.
      const own = this.archives.filter((a) => archiveStem(a.file) === column || archiveStem(a.file) === `${column}s`);
      const search = own.length ? own : this.archives;
      const exact = search.filter((a) => a.has(name));
      // the jsonl may name "images/0.png" while an archive holds "0.png" or "fill50k/images/0.png"
      const hits = exact.length ? exact.map((a) => ({ a, entry: name })) : search.flatMap((a) => {
        const entry = a.lookup(name);
        return entry ? [{ a, entry }] : [];
      });
      if (hits.length > 1) {
        throw new Error(`${p} is in ${hits.map((h) => path.basename(h.a.file)).join(" and ")}: which one holds column '${column}' is not clear ` +
          `(name an archive after the column, e.g. ${column}s.zip, or give the paths with their folder)`);
      }
      if (hits.length === 1) return hits[0]!.a.read(hits[0]!.entry, { image: true });
    }
    let k = this.rowStarts.length - 1;
    while (k > 0 && this.rowStarts[k]! > row) k--;
    return readDatasetFile(p, this.rowDirs[k]!, this.strictPaths);
  }

  async close(): Promise<void> {
    await Promise.all(this.archives.map((a) => a.close()));
  }
}

/** An archive's name without its folder and extension: `conditioning_images` for …/conditioning_images.zip. */
function archiveStem(file: string): string {
  return path.basename(file).replace(/\.(zip|tar|tar\.gz|tgz)$/i, "");
}

/** lllyasviel's layout: prompt.json lines {source, target, prompt}. */
export function promptJsonTable(file: string): JsonlTable {
  return new JsonlTable(file, {
    kind: "prompt.json",
    defaultColumns: { image: "target", conditioning_image: "source", caption: "prompt" },
  });
}

/** The loading-script layout: train.jsonl and any zip archives beside it (images.zip, conditioning_images.zip). */
export async function scriptLayoutTable(jsonl: string, opts: { strictPaths?: boolean; warn?: (m: string) => void } = {}): Promise<JsonlTable> {
  const dir = path.dirname(jsonl);
  const zips = fs.readdirSync(dir).filter((f) => f.toLowerCase().endsWith(".zip")).sort();
  // images.zip before conditioning_images.zip does not matter: names are looked up in each
  const archives: ZipArchive[] = [];
  for (const z of zips) archives.push(await ZipArchive.open(path.join(dir, z)));
  const refused = archives.flatMap((a) => a.refused.map((r) => `${path.basename(a.file)}:${r}`));
  if (refused.length) (opts.warn ?? console.warn)(`refused ${refused.length} archive entr${refused.length === 1 ? "y" : "ies"} with absolute or '..' paths: ${refused.slice(0, 20).join(", ")}${refused.length > 20 ? ", …" : ""}`);
  return new JsonlTable(jsonl, { kind: zips.length ? "jsonl+zip" : "jsonl", archives, strictPaths: opts.strictPaths });
}

/** HF imagefolder metadata. */
export function imagefolderTable(file: string, opts: { strictPaths?: boolean; moreMetadata?: string[] } = {}): JsonlTable {
  return new JsonlTable(file, { kind: "imagefolder", imagefolder: true, strictPaths: opts.strictPaths, moreMetadata: opts.moreMetadata });
}
