/**
 * Every file-backed source is a table (rows × named columns) plus a way to open the files that string cells name.
 * TableSource picks the three columns train_controlnet.py uses and turns cells into rows: image cells may be encoded
 * bytes, HF Image structs `{bytes, path}`, or paths.
 */
import fs from "node:fs";
import path from "node:path";
import { isSafeRelativePath, normalizeEntryName } from "./zip.js";
import { BadRowError, isRawImage, type ColumnOptions, type DataSource, type DatasetRow, type ImageValue } from "../types.js";

export interface Table {
  readonly columns: readonly string[];
  readonly numRows: number;
  readonly description: string;
  /** Columns to use when the user keeps the defaults and the default names do not exist (prompt.json layouts). */
  readonly defaultColumns?: { image: string; conditioning_image: string; caption: string };
  /** The cells of one row, in the order of `columns`. */
  readCells(row: number, columns: readonly string[]): Promise<unknown[]>;
  /** The bytes of a file a cell of `column` in `row` names (relative to the dataset). Rejects if missing or refused. */
  openFile?(path: string, column: string, row: number): Promise<Uint8Array>;
  close?(): Promise<void>;
}

/** A file a dataset's cell names: relative to `baseDir`; with `strictPaths` (hub snapshots) only inside it. */
export async function readDatasetFile(p: string, baseDir: string, strictPaths: boolean): Promise<Uint8Array> {
  const name = normalizeEntryName(p);
  if (strictPaths && !isSafeRelativePath(name)) throw new Error(`refused path ${p} (absolute or outside the dataset)`);
  const full = path.resolve(baseDir, name);
  try {
    return await fs.promises.readFile(full);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new Error(code === "ENOENT" ? `missing file ${full}` : `cannot read ${full}: ${(e as Error).message}`);
  }
}

/**
 * Gives a Parquet or Arrow table the files its path cells name: HF Image structs with a path and no bytes, as
 * `Dataset.cast_column("image", Image())` of local files and imagefolder's cache shards store them (every such row was
 * skipped). Absolute paths are read as written, relative ones against `baseDir`; hub snapshots (strictPaths) only
 * inside it.
 */
export function withDatasetFiles<T extends Table>(table: T, baseDir: string, strictPaths: boolean): T {
  if (!table.openFile) (table as Table).openFile = (p) => readDatasetFile(p, baseDir, strictPaths);
  return table;
}

export interface ResolvedColumns {
  image: string;
  conditioning_image: string;
  caption: string;
}

/**
 * train_controlnet.py's column choice: the given name (an error listing the columns when absent), or when the option
 * is null, the column at position 0 / 2 / 1.
 */
export function resolveColumns(table: Pick<Table, "columns" | "defaultColumns">, opts: ColumnOptions): ResolvedColumns {
  const cols = table.columns;
  const pick = (flag: string, given: string | null | undefined, dflt: string, position: number, layoutDefault?: string): string => {
    if (given === null) {
      const c = cols[position];
      if (c === undefined) throw new Error(`\`--${flag}\` is unset and the dataset has no column ${position}; its columns are: ${cols.join(", ")}`);
      return c;
    }
    // the script's default name (the command line always passes it) where the dataset lacks it: the layout's own
    // column (prompt.json's target / source / prompt), as data/README.md describes
    const name = given === undefined || given === dflt ? (cols.includes(dflt) || !layoutDefault ? dflt : layoutDefault) : given;
    if (!cols.includes(name)) {
      throw new Error(`\`--${flag}\` value '${name}' is not a column of the dataset; its columns are: ${cols.join(", ")}`);
    }
    return name;
  };
  const d = table.defaultColumns;
  return {
    image: pick("image_column", opts.image_column, "image", 0, d?.image),
    caption: pick("caption_column", opts.caption_column, "text", 1, d?.caption),
    conditioning_image: pick("conditioning_image_column", opts.conditioning_image_column, "conditioning_image", 2, d?.conditioning_image),
  };
}

/** Describes a cell for messages: the path when it has one. */
function cellPath(cell: unknown): string | undefined {
  if (typeof cell === "string") return cell;
  if (cell && typeof cell === "object" && "path" in cell && typeof (cell as { path: unknown }).path === "string") return (cell as { path: string }).path;
  return undefined;
}

/** An image cell → image bytes or pixels. */
async function cellToImage(table: Table, cell: unknown, index: number, column: string): Promise<ImageValue> {
  if (cell instanceof Uint8Array || isRawImage(cell)) return cell;
  if (cell && typeof cell === "object" && "bytes" in cell) {
    const b = (cell as { bytes: unknown }).bytes;
    if (b instanceof Uint8Array && b.length > 0) return b;
  }
  const path = cellPath(cell);
  if (path !== undefined && path !== "") {
    if (!table.openFile) throw new BadRowError(index, path, `column '${column}' holds a path but this source cannot open files`);
    try {
      return await table.openFile(path, column, index);
    } catch (e) {
      throw new BadRowError(index, path, (e as Error).message);
    }
  }
  throw new BadRowError(index, `row ${index}`, `column '${column}' holds no image (${cell === null || cell === undefined ? "null" : typeof cell})`);
}

function cellToText(cell: unknown, index: number, column: string): string | string[] {
  if (typeof cell === "string") return cell;
  // a caption stored as plain BYTE_ARRAY (no UTF8 annotation) comes back as bytes with utf8:false
  if (cell instanceof Uint8Array) return new TextDecoder().decode(cell);
  // (an empty list: the script's random.choice raises, so it is a bad row too, not an empty prompt)
  if (Array.isArray(cell) && cell.length && cell.every((c) => typeof c === "string")) return cell as string[];
  if (cell && typeof cell === "object" && typeof (cell as { toArray?: unknown }).toArray === "function") {
    const arr = Array.from((cell as { toArray(): Iterable<unknown> }).toArray());
    if (arr.length && arr.every((c) => typeof c === "string")) return arr as string[];
  }
  // train_controlnet.py raises here; we skip the row instead of stopping the epoch (and say so)
  const what = Array.isArray(cell) ? "an empty list" : cell === null || cell === undefined ? "nothing" : typeof cell;
  throw new BadRowError(index, `row ${index}`, `caption column '${column}' should contain either strings or lists of strings, got ${what}`);
}

/** A table seen as a DataSource of {image, conditioning_image, text} rows. */
export class TableSource implements DataSource {
  readonly columnsUsed: ResolvedColumns;

  constructor(readonly table: Table, opts: ColumnOptions = {}) {
    this.columnsUsed = resolveColumns(table, opts);
  }

  get length(): number {
    return this.table.numRows;
  }
  get columns(): readonly string[] {
    return this.table.columns;
  }
  get description(): string {
    return this.table.description;
  }

  async get(index: number): Promise<DatasetRow> {
    if (!Number.isInteger(index) || index < 0 || index >= this.length) throw new RangeError(`row ${index} out of range [0, ${this.length})`);
    const c = this.columnsUsed;
    const [img, cond, text] = await this.table.readCells(index, [c.image, c.conditioning_image, c.caption]);
    const [image, conditioning_image] = await Promise.all([
      cellToImage(this.table, img, index, c.image),
      cellToImage(this.table, cond, index, c.conditioning_image),
    ]);
    const origin = [cellPath(img), cellPath(cond)].filter((x) => x).join(" + ") || `${this.table.description} row ${index}`;
    return { image, conditioning_image, text: cellToText(text, index, c.caption), origin };
  }

  async close(): Promise<void> {
    await this.table.close?.();
  }
}

/** A subset of another source (max_train_samples), by a list of indices. */
export class SubsetSource implements DataSource {
  constructor(readonly inner: DataSource, readonly indices: ArrayLike<number>) {}
  get length(): number {
    return this.indices.length;
  }
  get columns(): readonly string[] {
    return this.inner.columns;
  }
  get description(): string {
    return `${this.inner.description}, ${this.indices.length} of ${this.inner.length} rows`;
  }
  get(index: number): Promise<DatasetRow> {
    if (!Number.isInteger(index) || index < 0 || index >= this.indices.length) return Promise.reject(new RangeError(`row ${index} out of range [0, ${this.indices.length})`));
    return this.inner.get(this.indices[index]!);
  }
  async close(): Promise<void> {
    await this.inner.close?.();
  }
}

/** Several tables with the same columns, one after the other (dataset shards). */
export class ConcatTable implements Table {
  readonly columns: readonly string[];
  readonly numRows: number;
  readonly description: string;
  private readonly starts: number[] = [0];

  constructor(readonly parts: Table[], description?: string) {
    if (!parts.length) throw new Error("no shards");
    this.columns = parts[0]!.columns;
    for (const p of parts.slice(1)) {
      const missing = this.columns.filter((c) => !p.columns.includes(c));
      if (missing.length) throw new Error(`${p.description}: lacks columns ${missing.join(", ")}`);
    }
    for (const p of parts) this.starts.push(this.starts[this.starts.length - 1]! + p.numRows);
    this.numRows = this.starts[this.starts.length - 1]!;
    this.description = description ?? `${parts.length} shards (${this.numRows} rows): ${parts[0]!.description}, …`;
  }

  readCells(row: number, columns: readonly string[]): Promise<unknown[]> {
    let k = 0;
    while (row >= this.starts[k + 1]!) k++;
    return this.parts[k]!.readCells(row - this.starts[k]!, columns);
  }

  async close(): Promise<void> {
    await Promise.all(this.parts.map((p) => p.close?.()));
  }
}
