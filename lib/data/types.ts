/** Shared shapes of the data pipeline: rows as sources produce them, and the source interface. */

/** Decoded pixels, row-major, interleaved channels, 8 bits per sample. */
export interface RawImage {
  data: Uint8Array;
  width: number;
  height: number;
  channels: 1 | 2 | 3 | 4;
}

/** An image as a source hands it over: encoded file bytes (PNG, JPEG, WebP, …; a Buffer is a Uint8Array) or raw pixels. */
export type ImageValue = Uint8Array | RawImage;

export function isRawImage(v: unknown): v is RawImage {
  return typeof v === "object" && v !== null && !(v instanceof Uint8Array) && "data" in v && "width" in v && "height" in v && "channels" in v;
}

/** One training example, with diffusers' column names. */
export interface DatasetRow {
  image: ImageValue;
  conditioning_image: ImageValue;
  /** A caption, or several (one is drawn each time the row is used, like train_controlnet.py). */
  text: string | string[];
  /** Where the images came from (file names, archive entries), for error messages. */
  origin?: string;
}

/** A random-access dataset. `get` may reject for a bad row (missing file, unreadable cell); loaders skip those. */
export interface DataSource {
  readonly length: number;
  /** The columns of the underlying table (for listings and error messages). */
  readonly columns: readonly string[];
  /** A short human description: the kind of source and where it lives. */
  readonly description: string;
  get(index: number): Promise<DatasetRow>;
  close?(): Promise<void>;
}

/** A row that cannot be used; carries the file(s) to name in the one warning the loader prints. */
export class BadRowError extends Error {
  constructor(readonly index: number, readonly file: string, readonly reason: string) {
    super(`row ${index} (${file}): ${reason}`);
    this.name = "BadRowError";
  }
}

/** Column choice shared by every table source, with train_controlnet.py's names and defaults. */
export interface ColumnOptions {
  /** Target image column; default "image"; null → the first column (diffusers' fallback). */
  image_column?: string | null;
  /** Conditioning image column; default "conditioning_image"; null → the third column. */
  conditioning_image_column?: string | null;
  /** Caption column; default "text"; null → the second column. */
  caption_column?: string | null;
}
