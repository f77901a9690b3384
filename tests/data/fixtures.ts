/** Fixtures the data tests build themselves: small synthetic rows written as parquet, zips, folders. */
import fs from "node:fs";
import path from "node:path";
import sharp from "sharp";
import { zipSync } from "fflate";
import { parquetWriteBuffer } from "hyparquet-writer";
import { SyntheticFill50k } from "../../lib/data/synthetic.js";
import { encodePng } from "../../lib/data/image.js";
import type { RawImage } from "../../lib/data/types.js";
import { tempDir } from "../helpers.js";

export function tmpDir(name: string): string {
  return tempDir(`cn-data-${name}-`);
}

export interface FixtureRow {
  image: Buffer;
  conditioning_image: Buffer;
  text: string;
}

/** n synthetic rows as PNG bytes (small images keep the tests fast). */
export async function pngRows(n: number, size = 32, seed = 7): Promise<FixtureRow[]> {
  const s = new SyntheticFill50k({ count: n, seed, resolution: size });
  const out: FixtureRow[] = [];
  for (let i = 0; i < n; i++) {
    const r = s.row(i);
    out.push({ image: await encodePng(r.image as RawImage), conditioning_image: await encodePng(r.conditioning_image as RawImage), text: r.text });
  }
  return out;
}

/** An HF-style parquet shard: image/conditioning_image as struct{bytes: binary, path: utf8}, text utf8. */
export function writeHfParquet(file: string, rows: FixtureRow[], opts: { rowGroupSize?: number; extraColumn?: boolean;
  /** Cells with a path and no bytes (Dataset.cast_column(Image()) of local files): each image is written to disk at
   *  path(kind, i) (relative ones beside the shard) and only its path is stored. */
  pathOnly?: (kind: string, i: number) => string } = {}): void {
  const img = (b: Buffer, i: number, kind: string) => {
    if (!opts.pathOnly) return { bytes: new Uint8Array(b), path: `${kind}_${i}.png` };
    const p = opts.pathOnly(kind, i);
    const full = path.resolve(path.dirname(file), p);
    fs.mkdirSync(path.dirname(full), { recursive: true });
    fs.writeFileSync(full, b);
    return { bytes: null, path: p };
  };
  const columnData = [
    { name: "image", data: rows.map((r, i) => img(r.image, i, "image")) },
    { name: "conditioning_image", data: rows.map((r, i) => img(r.conditioning_image, i, "cond")) },
    { name: "text", data: rows.map((r) => r.text) },
  ];
  const schema = [
    { name: "root", num_children: 3 },
    { name: "image", repetition_type: "OPTIONAL" as const, num_children: 2 },
    { name: "bytes", type: "BYTE_ARRAY" as const, repetition_type: "OPTIONAL" as const },
    { name: "path", type: "BYTE_ARRAY" as const, converted_type: "UTF8" as const, repetition_type: "OPTIONAL" as const },
    { name: "conditioning_image", repetition_type: "OPTIONAL" as const, num_children: 2 },
    { name: "bytes", type: "BYTE_ARRAY" as const, repetition_type: "OPTIONAL" as const },
    { name: "path", type: "BYTE_ARRAY" as const, converted_type: "UTF8" as const, repetition_type: "OPTIONAL" as const },
    { name: "text", type: "BYTE_ARRAY" as const, converted_type: "UTF8" as const, repetition_type: "OPTIONAL" as const },
  ];
  const features = { image: { _type: "Image" }, conditioning_image: { _type: "Image" }, text: { dtype: "string", _type: "Value" } };
  const buf = parquetWriteBuffer({
    columnData, schema, rowGroupSize: opts.rowGroupSize ?? 100,
    kvMetadata: [{ key: "huggingface", value: JSON.stringify({ info: { features } }) }],
  });
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, new Uint8Array(buf));
}

/** fusing/fill50k's loading-script layout: train.jsonl + images.zip + conditioning_images.zip. */
export function writeScriptLayout(dir: string, rows: FixtureRow[], extraEntries: Record<string, Uint8Array> = {}): void {
  fs.mkdirSync(dir, { recursive: true });
  const images: Record<string, Uint8Array> = {};
  const conds: Record<string, Uint8Array> = {};
  const lines: string[] = [];
  rows.forEach((r, i) => {
    images[`images/${i}.png`] = new Uint8Array(r.image);
    conds[`conditioning_images/${i}.png`] = new Uint8Array(r.conditioning_image);
    lines.push(JSON.stringify({ text: r.text, image: `images/${i}.png`, conditioning_image: `conditioning_images/${i}.png` }));
  });
  fs.writeFileSync(path.join(dir, "train.jsonl"), lines.join("\n") + "\n");
  fs.writeFileSync(path.join(dir, "images.zip"), zipSync({ ...images, ...extraEntries }));
  fs.writeFileSync(path.join(dir, "conditioning_images.zip"), zipSync(conds, { level: 0 }));
}

/** HF imagefolder: images next to metadata.jsonl, file_name + conditioning_image path + text. */
export function writeImagefolder(dir: string, rows: FixtureRow[]): void {
  fs.mkdirSync(path.join(dir, "conditioning"), { recursive: true });
  const lines: string[] = [];
  rows.forEach((r, i) => {
    fs.writeFileSync(path.join(dir, `${i}.png`), r.image);
    fs.writeFileSync(path.join(dir, "conditioning", `${i}.png`), r.conditioning_image);
    lines.push(JSON.stringify({ file_name: `${i}.png`, conditioning_image: `conditioning/${i}.png`, text: r.text }));
  });
  fs.writeFileSync(path.join(dir, "metadata.jsonl"), lines.join("\n"));
}

/** lllyasviel's layout: prompt.json (JSON Lines) + source/ + target/. */
export function writePromptJson(dir: string, rows: FixtureRow[]): void {
  fs.mkdirSync(path.join(dir, "source"), { recursive: true });
  fs.mkdirSync(path.join(dir, "target"), { recursive: true });
  const lines: string[] = [];
  rows.forEach((r, i) => {
    fs.writeFileSync(path.join(dir, "source", `${i}.png`), r.conditioning_image);
    fs.writeFileSync(path.join(dir, "target", `${i}.png`), r.image);
    lines.push(JSON.stringify({ source: `source/${i}.png`, target: `target/${i}.png`, prompt: r.text }));
  });
  fs.writeFileSync(path.join(dir, "prompt.json"), lines.join("\n") + "\n");
}

/** Decoded RGB pixels of PNG bytes. */
export async function pixels(png: Uint8Array): Promise<Uint8Array> {
  return new Uint8Array(await sharp(png).removeAlpha().raw().toBuffer());
}
