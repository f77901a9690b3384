import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import sharp from "sharp";
import { createDataset, DataLoader, type Batch, type BatchLoader } from "../../lib/data/index.js";
import { SyntheticFill50k } from "../../lib/data/synthetic.js";
import type { DataSource, DatasetRow } from "../../lib/data/types.js";
import { pngRows, tmpDir, writeImagefolder } from "./fixtures.js";

async function take(l: BatchLoader, n: number): Promise<Batch[]> {
  const out: Batch[] = [];
  for (let i = 0; i < n; i++) out.push(await l.next());
  return out;
}

test("batches: NHWC float32, ranges, texts, indices; one epoch visits every row once", async () => {
  const ds = await createDataset({ synthetic: { count: 10, seed: 1 }, resolution: 16 });
  const l = ds.loader({ batchSize: 4 });
  assert.equal(l.batchesPerEpoch, 3);
  const bs = await take(l, 3);
  assert.deepEqual(bs.map((b) => b.size), [4, 4, 2]); // no drop_last, like train_controlnet.py
  assert.equal(bs[0]!.pixelValues.length, 4 * 16 * 16 * 3);
  assert.equal(bs[2]!.conditioningPixelValues.length, 2 * 16 * 16 * 3);
  assert.deepEqual(bs.flatMap((b) => b.indices).sort((a, b) => a - b), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  const src = ds.source as SyntheticFill50k;
  const b0 = bs[0]!;
  assert.equal(b0.texts[1], src.row(b0.indices[1]!).text);
  // pixel (0,0) of sample 1: background colour mapped to [-1, 1]; conditioning black → 0
  const bg = src.truth(b0.indices[1]!).bgColor.rgb;
  const o = 16 * 16 * 3;
  assert.ok(Math.abs(b0.pixelValues[o]! - (bg[0] / 127.5 - 1)) < 1e-6);
  assert.equal(b0.conditioningPixelValues[o], 0);
  for (const v of b0.conditioningPixelValues) assert.ok(v >= 0 && v <= 1);
  assert.deepEqual(l.position, { epoch: 0, index: 10 });
  const next = await l.next();
  assert.equal(next.epoch, 1);
  assert.notDeepEqual(next.indices, bs[0]!.indices); // a new permutation each epoch
  await l.close();
  const ordered = ds.loader({ batchSize: 4, shuffle: false, dropLast: true });
  const ob = await take(ordered, 3);
  assert.deepEqual(ob.map((b) => b.indices), [[0, 1, 2, 3], [4, 5, 6, 7], [0, 1, 2, 3]]);
  await ordered.close();
});

test("shuffling is seeded; resuming from a stored position gives the same batches", async () => {
  const ds = await createDataset({ synthetic: { count: 13, seed: 2 }, resolution: 8, proportion_empty_prompts: 0.3 });
  const a = ds.loader({ batchSize: 3, seed: 9, prefetch: 3 });
  const all = await take(a, 12); // crosses epochs (5 batches per epoch)
  await a.close();
  const again = ds.loader({ batchSize: 3, seed: 9 });
  assert.deepEqual((await take(again, 12)).map((b) => [b.indices, b.texts]), all.map((b) => [b.indices, b.texts]));
  await again.close();
  const other = ds.loader({ batchSize: 3, seed: 10 });
  assert.notDeepEqual((await take(other, 5)).map((b) => b.indices), all.slice(0, 5).map((b) => b.indices));
  await other.close();
  for (const k of [3, 5, 7]) {
    const resumed = ds.loader({ batchSize: 3, seed: 9, start: all[k - 1]!.next });
    const rest = await take(resumed, 12 - k);
    await resumed.close();
    assert.deepEqual(rest.map((b) => b.indices), all.slice(k).map((b) => b.indices), `resume after ${k}`);
    assert.deepEqual(rest.map((b) => b.texts), all.slice(k).map((b) => b.texts));
    assert.deepEqual(rest[0]!.pixelValues, all[k]!.pixelValues);
  }
  // a position saved on more rows than this dataset has (a checkpoint continued on fewer rows, as asked): that
  // epoch's rest is empty, the next epoch begins, with one warning (it was "invalid start position")
  const fewer = await createDataset({ synthetic: { count: 4, seed: 2 }, resolution: 8 });
  const warnings: string[] = [];
  const past = fewer.loader({ batchSize: 3, seed: 9, start: { epoch: 2, index: 7 }, warn: (m) => warnings.push(m) });
  const first = (await take(past, 1))[0]!;
  await past.close();
  const fresh = fewer.loader({ batchSize: 3, seed: 9, start: { epoch: 3, index: 0 } });
  assert.deepEqual(first.indices, (await take(fresh, 1))[0]!.indices, "epoch 3's first batch");
  await fresh.close();
  assert.deepEqual(warnings, ["the saved data position (epoch 2, row 7) is past the 4 rows of this dataset: continuing at the start of epoch 3"]);
  assert.throws(() => fewer.loader({ batchSize: 3, start: { epoch: -1, index: 0 } }), /invalid start position/);
});

test("proportion_empty_prompts: about that share dropped, redrawn each time a row is used", async () => {
  const ds = await createDataset({ synthetic: { count: 50, seed: 3 }, resolution: 8, proportion_empty_prompts: 0.5 });
  const l = ds.loader({ batchSize: 50, shuffle: false });
  const [e0, e1] = await take(l, 2);
  await l.close();
  const empty0 = e0!.texts.filter((t) => t === "").length;
  assert.ok(empty0 > 12 && empty0 < 38, `${empty0} of 50 dropped`);
  const differs = e0!.texts.filter((t, i) => (t === "") !== (e1!.texts[i] === "")).length;
  assert.ok(differs > 5, "prompt dropping must be redrawn per use, not fixed per row");
  const none = ds.loader({ batchSize: 50, proportionEmptyPrompts: 0 });
  assert.equal((await none.next()).texts.filter((t) => t === "").length, 0);
  await none.close();
  assert.throws(() => ds.loader({ batchSize: 2, proportionEmptyPrompts: 1.5 }), /range \[0, 1\]/);
});

test("a list of captions: one is drawn per use", async () => {
  const src: DataSource = {
    length: 4, columns: ["image", "conditioning_image", "text"], description: "captions",
    async get(i): Promise<DatasetRow> {
      const img = { data: new Uint8Array(8 * 8 * 3), width: 8, height: 8, channels: 3 as const };
      return { image: img, conditioning_image: img, text: [`a${i}`, `b${i}`] };
    },
  };
  const l = new DataLoader(src, { batchSize: 4, resolution: 8, shuffle: false });
  const texts = (await take(l, 6)).flatMap((b) => b.texts);
  await l.close();
  assert.ok(texts.some((t) => t.startsWith("a")) && texts.some((t) => t.startsWith("b")));
  assert.ok(texts.every((t, k) => t.endsWith(String(k % 4))));
});

test("bad input: corrupt, truncated, missing → skipped with ONE warning naming them; gray/RGBA/16-bit converted", async () => {
  const rows = await pngRows(10, 16);
  const dir = tmpDir("bad");
  writeImagefolder(dir, rows);
  fs.writeFileSync(path.join(dir, "2.png"), "garbage, not a png");
  fs.writeFileSync(path.join(dir, "4.png"), rows[4]!.image.subarray(0, 60));
  fs.rmSync(path.join(dir, "conditioning", "6.png"));
  fs.writeFileSync(path.join(dir, "7.png"), await sharp(rows[7]!.image).grayscale().png().toBuffer());
  fs.writeFileSync(path.join(dir, "8.png"), await sharp(rows[8]!.image).ensureAlpha().png().toBuffer());
  fs.writeFileSync(path.join(dir, "9.png"), await sharp(rows[9]!.image).toColourspace("rgb16").png().toBuffer());
  const warnings: string[] = [];
  const ds = await createDataset({ train_data_dir: dir, resolution: 16, warn: (m) => warnings.push(m) });
  const l = ds.loader({ batchSize: 3, shuffle: false, warn: (m) => warnings.push(m) });
  const epoch0 = await take(l, 3);
  assert.deepEqual(epoch0.map((b) => b.indices), [[0, 1, 3], [5, 7, 8], [9]]);
  assert.ok(warnings.length <= 1); // the warning comes once, when the epoch's last batch has been prepared
  const epoch1 = await take(l, 3);
  assert.deepEqual(epoch1.map((b) => b.indices), [[0, 1, 3], [5, 7, 8], [9]]);
  await l.close();
  assert.equal(warnings.length, 1, warnings.join("\n"));
  assert.match(warnings[0]!, /skipped 3 unusable rows/);
  for (const f of ["2.png", "4.png", "6.png"]) assert.ok(warnings[0]!.includes(f), `${f} named in: ${warnings[0]}`);
  assert.deepEqual(l.skipped.map((s) => s.index).sort(), [2, 4, 6]);
  // gray row: all three channels equal in the batch
  const g = epoch0[1]!.pixelValues.subarray(16 * 16 * 3, 16 * 16 * 3 + 3);
  assert.ok(g[0] === g[1] && g[1] === g[2]);
});

test("a dataset with no usable row fails at the end of the epoch instead of looping", async () => {
  const src: DataSource = {
    length: 3, columns: [], description: "all bad",
    get: async () => ({ image: new Uint8Array([1, 2, 3]), conditioning_image: new Uint8Array([1]), text: "x" }),
  };
  const warnings: string[] = [];
  const l = new DataLoader(src, { batchSize: 2, resolution: 8, warn: (m) => warnings.push(m) });
  await assert.rejects(l.next(), /no usable row/);
  await l.close();
  assert.equal(warnings.length, 1);
});

test("batches are prepared ahead of the consumer", async () => {
  const requested: number[] = [];
  const inner = new SyntheticFill50k({ count: 40, resolution: 8 });
  const src: DataSource = { length: 40, columns: inner.columns, description: "spy", get: (i) => { requested.push(i); return inner.get(i); } };
  const l = new DataLoader(src, { batchSize: 4, resolution: 8, shuffle: false, prefetch: 3 });
  await l.next();
  await new Promise((r) => setTimeout(r, 50));
  // while the trainer works on batch 0, batches 1..3 are already read
  assert.ok(requested.length >= 16, `only ${requested.length} rows requested`);
  assert.ok(requested.includes(15));
  assert.ok(!requested.includes(16 + 4)); // not beyond the queue
  assert.deepEqual(l.position, { epoch: 0, index: 4 });
  await l.close();
  await assert.rejects(l.next(), /closed/);
});

test("worker-thread loader: same batches and positions as the in-thread one, resumable, warnings forwarded", async () => {
  const ds = await createDataset({ synthetic: { count: 11, seed: 5 }, resolution: 16, proportion_empty_prompts: 0.2 });
  const inThread = ds.loader({ batchSize: 4, seed: 3 });
  const want = await take(inThread, 5);
  await inThread.close();
  const w = ds.workerLoader({ batchSize: 4, seed: 3, prefetch: 2 });
  assert.equal(w.batchesPerEpoch, 3);
  const got = await take(w, 5);
  assert.deepEqual(w.position, want[4]!.next);
  await w.close();
  assert.deepEqual(got.map((b) => [b.indices, b.texts, b.next]), want.map((b) => [b.indices, b.texts, b.next]));
  assert.deepEqual(got[3]!.pixelValues, want[3]!.pixelValues);
  assert.deepEqual(got[2]!.conditioningPixelValues, want[2]!.conditioningPixelValues);

  // a folder with a broken image, resumed mid-epoch: skips it, names it once, resumes where the in-thread loader would
  const rows = await pngRows(6, 16);
  const dir = tmpDir("wbad");
  writeImagefolder(dir, rows);
  fs.writeFileSync(path.join(dir, "3.png"), "broken");
  const warnings: string[] = [];
  const bad = await createDataset({ train_data_dir: dir, resolution: 16 });
  const ref = bad.loader({ batchSize: 2, shuffle: false, start: { epoch: 0, index: 2 }, warn: () => undefined });
  const refBatches = await take(ref, 3);
  await ref.close();
  const wl = bad.workerLoader({ batchSize: 2, shuffle: false, start: { epoch: 0, index: 2 }, warn: (m) => warnings.push(m) });
  const wb = await take(wl, 3);
  await wl.close();
  assert.deepEqual(wb.map((b) => b.indices), refBatches.map((b) => b.indices));
  assert.deepEqual(wb[0]!.indices, [2, 4]);
  assert.equal(warnings.length, 1);
  assert.match(warnings[0]!, /3\.png/);
  assert.deepEqual(wl.skipped.map((s) => s.index), [3]);
});
