import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { zipSync } from "fflate";
import { parquetMetadata, parquetSchema } from "hyparquet";
import { createDataset } from "../../lib/data/index.js";
import { ParquetTable, findParquetFiles } from "../../lib/data/sources/parquet.js";
import { ZipArchive } from "../../lib/data/sources/zip.js";
import { ArrowStreamTable, ArrowTable, iterateArrowRows, writeArrowDataset } from "../../lib/data/sources/arrow.js";
import { tableFromIPC, tableToIPC, type Table as ArrowTableOf } from "apache-arrow";
import { SyntheticFill50k } from "../../lib/data/synthetic.js";
import { resolveColumns, TableSource } from "../../lib/data/sources/table.js";
import { parseJsonLines } from "../../lib/data/sources/folder.js";
import { openLocalTable } from "../../lib/data/sources/local.js";
import { pixels, pngRows, tmpDir, writeHfParquet, writeImagefolder, writePromptJson, writeScriptLayout, type FixtureRow } from "./fixtures.js";
import { InputError } from "../../lib/io/input-error.js";

const rowsP = pngRows(12);

/** The source's rows equal the fixture rows (bytes for encoded images). */
async function assertRows(ds: { length: number; source: { get(i: number): Promise<{ image: unknown; conditioning_image: unknown; text: unknown }> } }, rows: FixtureRow[]): Promise<void> {
  assert.equal(ds.length, rows.length);
  for (const i of [0, 5, rows.length - 1]) {
    const r = await ds.source.get(i);
    assert.deepEqual(await pixels(r.image as Uint8Array), await pixels(rows[i]!.image), `row ${i} image`);
    assert.deepEqual(await pixels(r.conditioning_image as Uint8Array), await pixels(rows[i]!.conditioning_image), `row ${i} conditioning`);
    assert.equal(r.text, rows[i]!.text);
  }
}

test("hub parquet shards: HF Image structs {bytes, path}, several shards and row groups, train split only", async () => {
  const rows = await rowsP;
  const dir = tmpDir("pq");
  writeHfParquet(path.join(dir, "data", "train-00000-of-00002.parquet"), rows.slice(0, 7), { rowGroupSize: 3 });
  writeHfParquet(path.join(dir, "data", "train-00001-of-00002.parquet"), rows.slice(7), { rowGroupSize: 2 });
  writeHfParquet(path.join(dir, "data", "test-00000-of-00001.parquet"), rows.slice(0, 2));
  fs.writeFileSync(path.join(dir, "README.md"), "---\ndataset_info: {}\n---\n");
  // the fixture really has the HF shape
  const meta = parquetMetadata(new Uint8Array(fs.readFileSync(path.join(dir, "data", "train-00000-of-00002.parquet"))).buffer);
  const image = parquetSchema(meta).children.find((c) => c.element.name === "image")!;
  assert.deepEqual(image.children.map((c) => c.element.name), ["bytes", "path"]);
  assert.equal(meta.row_groups.length, 3);
  assert.equal(findParquetFiles(dir).length, 2);

  const ds = await createDataset({ dataset_name: dir, resolution: 16 });
  await assertRows(ds, rows);
  assert.deepEqual([...ds.source.columns], ["image", "conditioning_image", "text"]);
  assert.match(ds.description, /parquet/);
  await ds.close();
});

test("parquet: dataset_config_name picks the config folder; resolveHub maps a repo id to a snapshot folder", async () => {
  const rows = await rowsP;
  const dir = tmpDir("pqcfg");
  writeHfParquet(path.join(dir, "default", "train", "0000.parquet"), rows.slice(0, 4));
  writeHfParquet(path.join(dir, "small", "train", "0000.parquet"), rows.slice(4, 6));
  assert.equal(findParquetFiles(dir).length, 2);
  assert.deepEqual(findParquetFiles(dir, "train", "small"), [path.join(dir, "small", "train", "0000.parquet")]);
  const asked: string[] = [];
  const ds = await createDataset({ dataset_name: "fusing/fill50k", dataset_config_name: "small", resolution: 16, resolveHub: async (id) => { asked.push(id); return dir; } });
  assert.deepEqual(asked, ["fusing/fill50k"]);
  assert.equal(ds.length, 2);
  assert.equal((await ds.source.get(1)).text, rows[5]!.text);
  assert.equal(ds.options!.dataset_name, dir); // what a worker loader rebuilds from
  await ds.close();
});

test("parquet: the card's configs as datasets reads them (default, or refused when unnamed), split keywords (training/testing), metadata.parquet not data", async () => {
  const rows = await rowsP;
  const dir = tmpDir("pqcard");
  writeHfParquet(path.join(dir, "cfgA", "train-00000-of-00001.parquet"), rows.slice(0, 4));
  writeHfParquet(path.join(dir, "cfgB", "train-00000-of-00001.parquet"), rows.slice(4, 10));
  const card = (defaultA: boolean) => fs.writeFileSync(path.join(dir, "README.md"), `---\nconfigs:\n- config_name: cfgA\n  data_files:\n  - split: train\n    path: cfgA/train-*\n${defaultA ? "  default: true\n" : ""}- config_name: cfgB\n  data_files: cfgB/*.parquet\n---\n# a dataset\n`);
  card(true);
  // (all configs were concatenated: 10 rows)
  assert.equal((await createDataset({ dataset_name: dir, resolution: 16 })).length, 4, "the default config");
  assert.equal((await createDataset({ dataset_name: dir, dataset_config_name: "cfgB", resolution: 16 })).length, 6);
  await assert.rejects(createDataset({ dataset_name: dir, dataset_config_name: "cfgC", resolution: 16 }), /dataset_config_name 'cfgC' is not a config of .* \(its card lists cfgA, cfgB\)/);
  card(false);
  await assert.rejects(createDataset({ dataset_name: dir, resolution: 16 }), /has several configs \(cfgA, cfgB\) and none is the default: pick one with --dataset_config_name/);

  const splits = tmpDir("pqsplit");
  writeHfParquet(path.join(splits, "training.parquet"), rows.slice(0, 4));
  writeHfParquet(path.join(splits, "testing.parquet"), rows.slice(4, 7));
  // (both were trained on: 7 rows)
  assert.deepEqual(findParquetFiles(splits), [path.join(splits, "training.parquet")]);
  fs.rmSync(path.join(splits, "training.parquet"));
  assert.throws(() => findParquetFiles(splits), /has no 'train' split: its parquet files are named after other splits \(testing\.parquet\)/);
  const meta = tmpDir("pqmeta");
  writeHfParquet(path.join(meta, "metadata.parquet"), rows.slice(0, 2));
  assert.deepEqual(findParquetFiles(meta), [], "an imagefolder's metadata.parquet is not the data");
});

test("parquet and arrow cells holding a path and no bytes (cast_column(Image()) of local files, imagefolder cache shards) are read from disk", async () => {
  const rows = (await rowsP).slice(0, 6);
  const dir = tmpDir("pqpath");
  const abs = tmpDir("pqpath-abs");
  // absolute paths as datasets stores them, and relative ones (beside the shard)
  writeHfParquet(path.join(dir, "train.parquet"), rows, { pathOnly: (kind, i) => (kind === "image" ? path.join(abs, `${i}.png`) : `cond/${i}.png`) });
  const ds = await createDataset({ train_data_dir: dir, resolution: 16 });
  // (every row was skipped: "holds a path but this source cannot open files")
  await assertRows(ds, rows);
  await ds.close();
  // --dataset_name (a hub snapshot, or a folder given as one): relative paths inside it, absolute ones refused
  const { openLocalTable } = await import("../../lib/data/sources/local.js");
  const strict = await openLocalTable(dir, { strictPaths: true });
  assert.ok((await strict.openFile!("cond/0.png", "conditioning_image", 0)).length > 0);
  await assert.rejects(strict.openFile!(path.join(abs, "0.png"), "image", 0), /refused path .* \(absolute or outside the dataset\)/);
});

test("parquet: row-group cache stays within its budget; missing column lists the columns", async () => {
  const rows = await rowsP;
  const dir = tmpDir("pq2");
  const file = path.join(dir, "train.parquet");
  writeHfParquet(file, rows, { rowGroupSize: 2 });
  const t = await ParquetTable.open([file], { cacheBytes: 1 }); // budget below one group: keeps only the newest
  for (let i = 0; i < rows.length; i++) await t.readCells(i, ["text"]);
  assert.equal((t as unknown as { groups: { cache: { size: number } } }).groups.cache.size, 1);
  await assert.rejects(createDataset({ dataset_name: file, caption_column: "prompt" }), /'prompt'.*columns are: image, conditioning_image, text/);
  await assert.rejects(createDataset({ dataset_name: file, image_column: "target" }), /image_column.*image, conditioning_image, text/);
  // null column → positional fallback, as in train_controlnet.py: image = column 0, caption = 1, conditioning = 2
  assert.deepEqual(resolveColumns({ columns: ["a", "b", "c"] }, { image_column: null, caption_column: null, conditioning_image_column: null }), { image: "a", caption: "b", conditioning_image: "c" });
  assert.throws(() => resolveColumns({ columns: ["a"] }, { conditioning_image_column: null, image_column: "a", caption_column: "a" }), /no column 2/);
  // the command line always passes the script's default names: on prompt.json's layout they mean its own columns
  const layout = { columns: ["source", "target", "prompt"], defaultColumns: { image: "target", conditioning_image: "source", caption: "prompt" } };
  assert.deepEqual(resolveColumns(layout, { image_column: "image", caption_column: "text", conditioning_image_column: "conditioning_image" }),
    { image: "target", caption: "prompt", conditioning_image: "source" });
  assert.deepEqual(resolveColumns(layout, { image_column: "source", caption_column: "prompt", conditioning_image_column: "target" }),
    { image: "source", caption: "prompt", conditioning_image: "target" }, "names given are kept");
});

test("loading-script layout: train.jsonl + images.zip + conditioning_images.zip, read lazily; unsafe entries refused", async () => {
  const rows = await rowsP;
  const dir = tmpDir("zip");
  const warnings: string[] = [];
  writeScriptLayout(dir, rows, { "../evil.png": new Uint8Array(rows[0]!.image), "/abs.png": new Uint8Array(rows[0]!.image) });
  const ds = await createDataset({ dataset_name: dir, resolution: 16, warn: (m) => warnings.push(m) });
  await assertRows(ds, rows);
  assert.equal(warnings.length, 1);
  assert.match(warnings[0]!, /refused 2 archive entries.*\.\.\/evil\.png/);
  await ds.close();

  const zip = await ZipArchive.open(path.join(dir, "images.zip"));
  assert.deepEqual(zip.refused.sort(), ["../evil.png", "/abs.png"]);
  assert.equal(zip.has("images/3.png"), true);
  await assert.rejects(zip.read("../evil.png"), /refused/);
  assert.equal(zip.lookup("3.png"), "images/3.png");
  assert.equal(zip.lookup("fill50k/images/3.png"), "images/3.png");
  assert.equal(zip.lookup("images/99.png"), undefined);
  await zip.close();

  // a metadata row pointing outside the archive is refused, not read from disk
  const evilDir = tmpDir("zip2");
  writeScriptLayout(evilDir, rows.slice(0, 2));
  fs.appendFileSync(path.join(evilDir, "train.jsonl"), JSON.stringify({ text: "x", image: "../../etc/passwd", conditioning_image: "conditioning_images/0.png" }) + "\n");
  const ds2 = await createDataset({ dataset_name: evilDir, resolution: 16 });
  await assert.rejects(ds2.source.get(2), /refused path/);
  await ds2.close();
});

test("loading-script layout with bare names in each archive: each column reads its own archive (the target was the conditioning image); a name in two unrelated archives is refused", async () => {
  const rows = await rowsP;
  const dir = tmpDir("zipbare");
  // the script joins each column's name to its own extracted folder: "0.png" is images.zip's for `image`
  fs.writeFileSync(path.join(dir, "train.jsonl"), rows.slice(0, 6).map((r, i) => JSON.stringify({ text: r.text, image: `${i}.png`, conditioning_image: `${i}.png` })).join("\n") + "\n");
  fs.writeFileSync(path.join(dir, "images.zip"), zipSync(Object.fromEntries(rows.slice(0, 6).map((r, i) => [`${i}.png`, new Uint8Array(r.image)]))));
  fs.writeFileSync(path.join(dir, "conditioning_images.zip"), zipSync(Object.fromEntries(rows.slice(0, 6).map((r, i) => [`${i}.png`, new Uint8Array(r.conditioning_image)]))));
  const ds = await createDataset({ dataset_name: dir, resolution: 16 });
  await assertRows(ds, rows.slice(0, 6));
  await ds.close();
  // archives not named after the columns, both holding "0.png": not guessed
  fs.renameSync(path.join(dir, "images.zip"), path.join(dir, "a.zip"));
  fs.renameSync(path.join(dir, "conditioning_images.zip"), path.join(dir, "b.zip"));
  const ds2 = await createDataset({ dataset_name: dir, resolution: 16 });
  await assert.rejects(ds2.source.get(0), /0\.png is in a\.zip and b\.zip: which one holds column 'image' is not clear/);
  await ds2.close();
});

test("zip reader: stored and deflated entries, not-a-zip error", async () => {
  const dir = tmpDir("zip3");
  const data = new Uint8Array(5000).map((_, i) => i % 251);
  fs.writeFileSync(path.join(dir, "a.zip"), zipSync({ "x/stored.bin": [data, { level: 0 }], "deflated.bin": [data, { level: 9 }] }));
  const z = await ZipArchive.open(path.join(dir, "a.zip"));
  assert.deepEqual(await z.read("x/stored.bin"), data);
  assert.deepEqual(await z.read("./deflated.bin"), data);
  assert.equal(z.lookup("stored.bin"), "x/stored.bin");
  await z.close();
  fs.writeFileSync(path.join(dir, "b.zip"), "nope");
  await assert.rejects(ZipArchive.open(path.join(dir, "b.zip")), /not a readable zip/);
});

test("imagefolder with metadata.jsonl: file_name → image, conditioning paths as strings", async () => {
  const rows = await rowsP;
  const dir = tmpDir("imf");
  writeImagefolder(dir, rows);
  const ds = await createDataset({ train_data_dir: dir, resolution: 16 });
  assert.deepEqual([...ds.source.columns], ["image", "conditioning_image", "text"]);
  await assertRows(ds, rows);
});

test("the dataset's fingerprint follows its content, not its place: a moved folder keeps it, another caption changes it", async () => {
  const rows = await rowsP;
  const dir = tmpDir("fp");
  writeImagefolder(dir, rows);
  const fp = (await createDataset({ train_data_dir: dir, resolution: 16 })).fingerprint;
  assert.match(fp ?? "", /^[0-9a-f]{12}$/);
  const moved = tmpDir("fp-moved");
  fs.cpSync(dir, moved, { recursive: true });
  assert.equal((await createDataset({ train_data_dir: moved, resolution: 16 })).fingerprint, fp, "the same rows elsewhere");
  // the last row is always among the sampled ones
  writeImagefolder(moved, rows.map((r, i) => (i === rows.length - 1 ? { ...r, text: `${r.text}, at dusk` } : r)));
  assert.notEqual((await createDataset({ train_data_dir: moved, resolution: 16 })).fingerprint, fp, "a caption changed");
  // the worker loader's copy of the dataset skips the sampling
  assert.equal((await createDataset({ train_data_dir: dir, resolution: 16 }, { fingerprint: false })).fingerprint, undefined);
});

test("imagefolder with metadata.csv (quoted captions with commas)", async () => {
  const rows = await rowsP;
  const dir = tmpDir("csv");
  writeImagefolder(dir, rows.slice(0, 3));
  fs.rmSync(path.join(dir, "metadata.jsonl"));
  const csv = ["file_name,conditioning_image,text", ...rows.slice(0, 3).map((r, i) => `${i}.png,conditioning/${i}.png,"${r.text}, with ""quotes"""`)].join("\r\n");
  fs.writeFileSync(path.join(dir, "metadata.csv"), csv + "\r\n");
  const ds = await createDataset({ train_data_dir: dir, resolution: 16 });
  assert.equal(ds.length, 3);
  const r = await ds.source.get(2);
  assert.equal(r.text, `${rows[2]!.text}, with "quotes"`);
  assert.deepEqual(await pixels(r.conditioning_image as Uint8Array), await pixels(rows[2]!.conditioning_image));
  // refused as pandas refuses them: a quote that never closes (it swallowed the rows after it), a row too long
  const broken = ["file_name,conditioning_image,text", `0.png,conditioning/0.png,"unterminated`, "1.png,conditioning/1.png,ok"].join("\n");
  fs.writeFileSync(path.join(dir, "metadata.csv"), broken + "\n");
  await assert.rejects(createDataset({ train_data_dir: dir, resolution: 16 }), /metadata\.csv: Quote Not Closed/);
  fs.writeFileSync(path.join(dir, "metadata.csv"), "file_name,conditioning_image,text\n0.png,conditioning/0.png,a,extra\n");
  await assert.rejects(createDataset({ train_data_dir: dir, resolution: 16 }), /metadata\.csv: Invalid Record Length: columns length is 3, got 4 on line 2/);
});

test("metadata.jsonl rows that are not objects are named by line (they failed as 'Cannot convert undefined or null to object')", () => {
  assert.throws(() => parseJsonLines('{"a":1}\nnull\n', "m.jsonl"), /^Error: m\.jsonl:2: the row is null, not an object of columns$/);
  assert.throws(() => parseJsonLines('{"a":1}\n42\n', "m.jsonl"), /m\.jsonl:2: the row is number/);
  assert.throws(() => parseJsonLines("[1,2]", "m.json"), /m\.json: row 1 is number, not an object of columns/);
  assert.throws(() => parseJsonLines("[{", "m.json"), /m\.json: invalid JSON/);
  assert.deepEqual(parseJsonLines('{"a":1}\n\n{"a":2}\n', "m.jsonl"), [{ a: 1 }, { a: 2 }]);
});

test("lllyasviel prompt.json with source/ and target/", async () => {
  const rows = await rowsP;
  const dir = tmpDir("ll");
  writePromptJson(dir, rows);
  const ds = await createDataset({ train_data_dir: dir, resolution: 16 });
  assert.deepEqual([...ds.source.columns], ["source", "target", "prompt"]);
  await assertRows(ds, rows); // target → image, source → conditioning_image, prompt → text
  const explicit = await createDataset({ train_data_dir: dir, image_column: "target", conditioning_image_column: "source", caption_column: "prompt" });
  assert.equal((await explicit.source.get(2)).text, rows[2]!.text);
});

test("previewGrid: conditioning | target per row, as one PNG", async () => {
  const ds = await createDataset({ name: undefined, synthetic: { count: 5, seed: 1 }, resolution: 32 });
  const g = await ds.previewGrid({ rows: 3, size: 32 });
  const meta = await (await import("sharp")).default(g.png).metadata();
  assert.equal(meta.width, 2 * 32 + 4);
  assert.equal(meta.height, 3 * 32 + 2 * 4);
  assert.deepEqual(g.indices, [0, 1, 2]);
  assert.equal(g.texts[1], (ds.source as SyntheticFill50k).row(1).text);
});

test("max_train_samples keeps a seeded subset", async () => {
  const a = await createDataset({ synthetic: { count: 100 }, max_train_samples: 10, seed: 4, resolution: 16 });
  const b = await createDataset({ synthetic: { count: 100 }, max_train_samples: 10, seed: 4, resolution: 16 });
  const c = await createDataset({ synthetic: { count: 100 }, max_train_samples: 10, seed: 5, resolution: 16 });
  assert.equal(a.length, 10);
  const texts = async (d: typeof a) => Promise.all(Array.from({ length: 10 }, async (_, i) => (await d.source.get(i)).text));
  assert.deepEqual(await texts(a), await texts(b));
  assert.notDeepEqual(await texts(a), await texts(c));
  const warnings: string[] = [];
  const all = await createDataset({ synthetic: { count: 5 }, max_train_samples: 50, resolution: 16, warn: (w) => warnings.push(w) });
  assert.equal(all.length, 5);
  assert.deepEqual(warnings, ["max_train_samples 50 is more than the dataset's 5 rows: all 5 are kept (shuffled)"]);
  // a worker loader rebuilds the dataset from its options: the same rows, without the warning again
  assert.equal(all.options?.max_train_samples, 5);
});

test("arrow cache: write a dataset, read it back at random with a bounded batch cache, and as a stream", async () => {
  const dir = tmpDir("arrow");
  const file = path.join(dir, "fill.arrow");
  const src = new SyntheticFill50k({ count: 23, seed: 2, resolution: 16 });
  const progress: number[] = [];
  const { rows } = await writeArrowDataset(src, file, { batchSize: 5, onProgress: (n) => progress.push(n) });
  assert.equal(rows, 23);
  assert.deepEqual(progress, [5, 10, 15, 20, 23]);
  const t = await ArrowTable.open(file, { cacheBatches: 2 });
  assert.equal(t.numRows, 23);
  const s = new TableSource(t);
  for (const i of [22, 0, 13, 7, 21, 3]) {
    const r = await s.get(i);
    assert.equal(r.text, src.row(i).text);
    assert.deepEqual(await pixels(r.image as Uint8Array), (src.row(i).image as { data: Uint8Array }).data);
    assert.ok(t.cache.size <= 2, `cache holds ${t.cache.size} batches`);
  }
  await s.close();
  let n = 0;
  for await (const row of iterateArrowRows(file, ["text"])) {
    assert.equal(row.text, src.row(n).text);
    n++;
  }
  assert.equal(n, 23);
  const ds = await createDataset({ arrow: file, resolution: 16 });
  assert.equal(ds.length, 23);
  await ds.close();
  // openLocalTable finds a lone .arrow file in a folder
  assert.equal((await openLocalTable(dir)).numRows, 23);
  assert.equal(fs.readdirSync(dir).filter((f) => f.includes("tmp")).length, 0);
});

/** `count` synthetic rows as an Arrow table (written by our cache writer in batches of 4, read back). */
async function syntheticArrowTable(dir: string, count: number, seed: number): Promise<{ src: SyntheticFill50k; table: ArrowTableOf }> {
  const src = new SyntheticFill50k({ count, seed, resolution: 16 });
  const asFile = path.join(dir, "tmp.arrow");
  await writeArrowDataset(src, asFile, { batchSize: 4 });
  const table = tableFromIPC(fs.readFileSync(asFile));
  fs.rmSync(asFile);
  return { src, table };
}

test("arrow streams (datasets' cache and save_to_disk format): indexed once, read at random", async () => {
  const dir = tmpDir("arrows");
  const { src, table } = await syntheticArrowTable(dir, 17, 4);
  assert.equal(table.batches.length, 5);
  // HF writes IPC streams; two shards of the same table like save_to_disk's data-0000x-of-00002.arrow
  const save = path.join(dir, "saved");
  fs.mkdirSync(save);
  fs.writeFileSync(path.join(save, "data-00000-of-00002.arrow"), tableToIPC(table, "stream"));
  fs.writeFileSync(path.join(save, "data-00001-of-00002.arrow"), tableToIPC(table.slice(0, 6), "stream"));
  fs.writeFileSync(path.join(save, "state.json"), JSON.stringify({ _data_files: [{ filename: "data-00000-of-00002.arrow" }, { filename: "data-00001-of-00002.arrow" }] }));

  const one = await ArrowStreamTable.open(path.join(save, "data-00000-of-00002.arrow"), { cacheBatches: 1 });
  assert.equal(one.numRows, 17);
  const s1 = new TableSource(one);
  for (const i of [16, 0, 9, 4]) {
    const r = await s1.get(i);
    assert.equal(r.text, src.row(i).text);
    assert.deepEqual(await pixels(r.image as Uint8Array), (src.row(i).image as { data: Uint8Array }).data);
    assert.equal(one.cache.size, 1);
  }
  await s1.close();
  const ds = await createDataset({ train_data_dir: save, resolution: 16 });
  assert.equal(ds.length, 17 + 6);
  assert.equal((await ds.source.get(17 + 5)).text, src.row(5).text);
  await ds.close();
  const dsFile = await createDataset({ arrow: path.join(save, "data-00001-of-00002.arrow"), resolution: 16 });
  assert.equal(dsFile.length, 6);
  await dsFile.close();
  fs.writeFileSync(path.join(dir, "junk.arrow"), "not arrow at all");
  await assert.rejects(createDataset({ arrow: path.join(dir, "junk.arrow") }), /junk\.arrow/);
});

test("a folder of HF cache shards: the split's .arrow files by datasets' keywords; only other splits' is refused, not read as train", async () => {
  const dir = tmpDir("hf-cache");
  const { src, table } = await syntheticArrowTable(dir, 9, 2);
  fs.writeFileSync(path.join(dir, "fill50k-train-00000-of-00002.arrow"), tableToIPC(table.slice(0, 5), "stream"));
  fs.writeFileSync(path.join(dir, "fill50k-train-00001-of-00002.arrow"), tableToIPC(table.slice(5), "stream"));
  fs.writeFileSync(path.join(dir, "fill50k-test.arrow"), tableToIPC(table.slice(0, 2), "stream"));
  const train = await createDataset({ train_data_dir: dir, resolution: 16 });
  assert.equal(train.length, 9);
  assert.equal((await train.source.get(6)).text, src.row(6).text);
  await train.close();
  const testOnly = tmpDir("hf-cache-test");
  fs.copyFileSync(path.join(dir, "fill50k-test.arrow"), path.join(testOnly, "fill50k-test.arrow"));
  await assert.rejects(createDataset({ train_data_dir: testOnly, resolution: 16 }), (e: Error) => e instanceof InputError && /no 'train' split.*fill50k-test\.arrow/.test(e.message));
});

test("unknown folder layout and missing path are clear errors", async () => {
  const dir = tmpDir("empty");
  fs.writeFileSync(path.join(dir, "notes.txt"), "hi");
  await assert.rejects(createDataset({ train_data_dir: dir }), /no dataset layout recognised.*notes\.txt/);
  await assert.rejects(createDataset({ train_data_dir: path.join(dir, "nope") }), /not found/);
  await assert.rejects(createDataset({}), /dataset name/);
  await assert.rejects(createDataset({ synthetic: true, resolution: 100 }), /divisible by 8/);
});

test("captions the script refuses are bad rows, said so: an empty list, an empty CSV field (pandas' NaN), null", async () => {
  const { parseCsv } = await import("../../lib/data/sources/folder.js");
  assert.deepEqual(parseCsv("file_name,text\na.png,\nb.png,hi\n"), [{ file_name: "a.png", text: null }, { file_name: "b.png", text: "hi" }]);
  const rows = (await rowsP).slice(0, 3);
  const dir = tmpDir("captions");
  writeScriptLayout(dir, rows);
  const lines = fs.readFileSync(path.join(dir, "train.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l));
  lines[0].text = [];
  lines[1].text = null;
  fs.writeFileSync(path.join(dir, "train.jsonl"), lines.map((l) => JSON.stringify(l)).join("\n") + "\n");
  const ds = await createDataset({ dataset_name: dir, resolution: 16 });
  await assert.rejects(ds.source.get(0), /caption column 'text' should contain either strings or lists of strings, got an empty list/);
  await assert.rejects(ds.source.get(1), /got nothing/);
  assert.equal((await ds.source.get(2)).text, rows[2]!.text);
  await ds.close();
});

test("imagefolder: every metadata file of the split at any depth, each naming its images from its own folder (a nested one's rows were dropped)", async () => {
  const rows = (await rowsP).slice(0, 6);
  const dir = tmpDir("imgnested");
  writeImagefolder(dir, rows.slice(0, 3));
  writeImagefolder(path.join(dir, "more"), rows.slice(3, 6));
  const ds = await createDataset({ train_data_dir: dir, resolution: 16 });
  await assertRows(ds, rows);
  assert.match(ds.description, /\+ 1 more metadata file/);
  await ds.close();
  // only in train/p0 and train/p1 (the folder was refused), beside a test split
  const split = tmpDir("imgsplit");
  writeImagefolder(path.join(split, "train", "p0"), rows.slice(0, 2));
  writeImagefolder(path.join(split, "train", "p1"), rows.slice(2, 6));
  writeImagefolder(path.join(split, "test"), rows.slice(0, 1));
  const ds2 = await createDataset({ dataset_name: split, resolution: 16 });
  await assertRows(ds2, rows);
  await ds2.close();
});
