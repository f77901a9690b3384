/** Issue 25 #8: zip entries are held to their declared size, their CRC-32 and (for images) an image signature. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import zlib from "node:zlib";
import { Deflate } from "fflate";
import { ZipArchive, MAX_ENTRY_BYTES } from "../../lib/data/sources/zip.js";
import { encodePng } from "../../lib/data/image.js";
import { tempDir } from "../helpers.js";

interface RawEntry { name: string; method: 0 | 8; data: Uint8Array; size: number; crc: number }

/** A zip written by hand, so entries can declare what they like. */
function writeZip(file: string, entries: RawEntry[]): void {
  const parts: Buffer[] = [];
  const central: Buffer[] = [];
  let offset = 0;
  for (const e of entries) {
    const name = Buffer.from(e.name);
    const lh = Buffer.alloc(30);
    lh.writeUInt32LE(0x04034b50, 0); lh.writeUInt16LE(20, 4); lh.writeUInt16LE(e.method, 8);
    lh.writeUInt32LE(e.crc >>> 0, 14); lh.writeUInt32LE(e.data.length, 18); lh.writeUInt32LE(e.size, 22); lh.writeUInt16LE(name.length, 26);
    const cd = Buffer.alloc(46);
    cd.writeUInt32LE(0x02014b50, 0); cd.writeUInt16LE(20, 4); cd.writeUInt16LE(20, 6); cd.writeUInt16LE(e.method, 10);
    cd.writeUInt32LE(e.crc >>> 0, 16); cd.writeUInt32LE(e.data.length, 20); cd.writeUInt32LE(e.size, 24); cd.writeUInt16LE(name.length, 28);
    cd.writeUInt32LE(offset, 42);
    parts.push(lh, name, Buffer.from(e.data));
    central.push(cd, name);
    offset += 30 + name.length + e.data.length;
  }
  const cdBuf = Buffer.concat(central);
  const eocd = Buffer.alloc(22);
  eocd.writeUInt32LE(0x06054b50, 0); eocd.writeUInt16LE(entries.length, 8); eocd.writeUInt16LE(entries.length, 10);
  eocd.writeUInt32LE(cdBuf.length, 12); eocd.writeUInt32LE(offset, 16);
  fs.writeFileSync(file, Buffer.concat([...parts, cdBuf, eocd]));
}

/** `size` zero bytes deflated and their CRC, streamed (fflate's synchronous Deflate, 1 MiB at a time) so the test
 *  itself never holds them. */
function zeroBomb(size: number, head: Uint8Array = new Uint8Array(0)): { data: Uint8Array; crc: number } {
  const chunk = new Uint8Array(1 << 20);
  const out: Uint8Array[] = [];
  const d = new Deflate({ level: 9 }, (c) => out.push(c.slice()));
  // the file starts with `head` (a signature, a header) and zeros follow
  let crc = zlib.crc32(head);
  d.push(head, false);
  for (let left = size - head.length; left > 0; left -= chunk.length) {
    const c = left >= chunk.length ? chunk : chunk.subarray(0, left);
    crc = zlib.crc32(c, crc);
    d.push(c, left <= chunk.length);
  }
  return { data: Buffer.concat(out), crc: crc >>> 0 };
}

const tmp = () => tempDir("zip-bomb-");

test("#8: four 400 MB zero entries in a small zip are refused as images with the reader's RSS under 100 MB", () => {
  const dir = tmp();
  const bomb = zeroBomb(400_000_000);
  const file = path.join(dir, "bomb.zip");
  writeZip(file, [0, 1, 2, 3].map((i) => ({ name: `images/${i}.png`, method: 8, data: bomb.data, size: 400_000_000, crc: bomb.crc })));
  assert.ok(fs.statSync(file).size < 4_000_000, `bomb is ${fs.statSync(file).size} bytes`);
  // a fresh process reads them, so its peak RSS is the reader's
  const script = `
    import { ZipArchive } from ${JSON.stringify(path.resolve(import.meta.dirname, "../../lib/data/sources/zip.ts"))};
    const z = await ZipArchive.open(${JSON.stringify(file)});
    const errors = [];
    for (let i = 0; i < 4; i++) await z.read("images/" + i + ".png", { image: true }).catch((e) => errors.push(e.message));
    await z.close();
    console.log(JSON.stringify({ errors, maxRssMB: process.resourceUsage().maxRSS / 1024 }));`;
  const r = spawnSync(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], { encoding: "utf8", cwd: path.resolve(import.meta.dirname, "../..") });
  assert.equal(r.status, 0, r.stderr);
  const { errors, maxRssMB } = JSON.parse(r.stdout.trim().split("\n").at(-1)!) as { errors: string[]; maxRssMB: number };
  assert.equal(errors.length, 4);
  for (const e of errors) assert.match(e, /is not an image; refused after its first/);
  assert.ok(maxRssMB < 100, `peak RSS ${maxRssMB.toFixed(0)} MB`);
});

/** A PNG's signature and IHDR for a w×h RGBA image (8 bits), then optionally an IDAT chunk header of `idat` bytes. */
function pngHead(w: number, h: number, idat?: number): Uint8Array {
  const ihdr = Buffer.alloc(25);
  ihdr.writeUInt32BE(13, 0); ihdr.write("IHDR", 4); ihdr.writeUInt32BE(w, 8); ihdr.writeUInt32BE(h, 12);
  ihdr[16] = 8; ihdr[17] = 6;
  ihdr.writeUInt32BE(zlib.crc32(ihdr.subarray(4, 21)) >>> 0, 21);
  const parts = [Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), ihdr];
  if (idat !== undefined) {
    const c = Buffer.alloc(8);
    c.writeUInt32BE(idat, 0); c.write("IDAT", 4);
    parts.push(c);
  }
  return Buffer.concat(parts);
}

test("#8: bombs that start like a PNG are refused from its header and chunks, adding under 50 MB to the reader's RSS", () => {
  const dir = tmp();
  const size = 400_000_000;
  const bombs = [
    { head: pngHead(64, 64).subarray(0, 8), why: /not a well-formed image \(it is a PNG signature without its IHDR header\)/ },
    { head: pngHead(64, 64), why: /declares 400000000 bytes, more than a 64×64 PNG can hold/ },
    // a header that allows the size (16000² RGBA is ~1 GB raw): the image data must then be a zlib stream
    { head: pngHead(16000, 16000, size - 100), why: /its PNG image data at byte 41 is not a zlib stream/ },
  ];
  const file = path.join(dir, "png-bombs.zip");
  writeZip(file, bombs.map((b, i) => ({ name: `images/${i}.png`, method: 8 as const, size, ...zeroBomb(size, b.head) })));
  assert.ok(fs.statSync(file).size < 4_000_000, `bombs are ${fs.statSync(file).size} bytes`);
  const script = `
    import { ZipArchive } from ${JSON.stringify(path.resolve(import.meta.dirname, "../../lib/data/sources/zip.ts"))};
    const z = await ZipArchive.open(${JSON.stringify(file)});
    const baseMB = process.resourceUsage().maxRSS / 1024;
    const errors = [];
    for (let i = 0; i < ${bombs.length}; i++) await z.read("images/" + i + ".png", { image: true }).then(() => errors.push("read"), (e) => errors.push(e.message));
    await z.close();
    console.log(JSON.stringify({ errors, maxRssMB: process.resourceUsage().maxRSS / 1024, baseMB }));`;
  const r = spawnSync(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], { encoding: "utf8", cwd: path.resolve(import.meta.dirname, "../..") });
  assert.equal(r.status, 0, r.stderr);
  const { errors, maxRssMB, baseMB } = JSON.parse(r.stdout.trim().split("\n").at(-1)!) as { errors: string[]; maxRssMB: number; baseMB: number };
  bombs.forEach((b, i) => assert.match(errors[i]!, b.why));
  // what the reads add to the reader's peak (node + tsx alone is ~75–100 MB, depending on the machine's load): any
  // bomb inflated would add its 400 MB
  assert.ok(maxRssMB - baseMB < 50, `the reads raised the peak RSS from ${baseMB.toFixed(0)} to ${maxRssMB.toFixed(0)} MB`);
});

test("#8: declared sizes and CRC-32 are enforced: oversized, under-declared, over-declared and bit-flipped entries are refused", async () => {
  const dir = tmp();
  const png = await encodePng({ data: new Uint8Array(64 * 64 * 3).map((_, i) => (i * 7) % 256), width: 64, height: 64, channels: 3 });
  const deflated = zlib.deflateRawSync(png);
  const crc = zlib.crc32(png) >>> 0;
  const flipped = Buffer.from(png);
  flipped[flipped.length >> 1]! ^= 0x10;
  const file = path.join(dir, "lies.zip");
  writeZip(file, [
    { name: "ok.png", method: 8, data: deflated, size: png.length, crc },
    { name: "stored.png", method: 0, data: png, size: png.length, crc },
    { name: "huge.png", method: 8, data: deflated, size: MAX_ENTRY_BYTES + 1, crc },
    { name: "under.png", method: 8, data: deflated, size: png.length - 100, crc },
    { name: "over.png", method: 8, data: deflated, size: png.length + 100, crc },
    { name: "flipped.png", method: 0, data: flipped, size: png.length, crc },
    { name: "flipped-deflated.png", method: 8, data: zlib.deflateRawSync(flipped), size: png.length, crc },
  ]);
  const z = await ZipArchive.open(file);
  assert.deepEqual(Buffer.from(await z.read("ok.png", { image: true })), Buffer.from(png));
  assert.deepEqual(Buffer.from(await z.read("stored.png", { image: true })), Buffer.from(png));
  await assert.rejects(z.read("huge.png"), /huge\.png declares \d+ bytes, more than an image within the pixel limit/);
  await assert.rejects(z.read("under.png"), /under\.png inflates past its declared/);
  await assert.rejects(z.read("over.png"), /over\.png inflates to \d+ bytes but declares/);
  await assert.rejects(z.read("flipped.png"), /flipped\.png fails its CRC-32 check/);
  await assert.rejects(z.read("flipped-deflated.png"), /flipped-deflated\.png fails its CRC-32 check/);
  await z.close();
});

test("#8 as a user meets it: a fill50k-layout folder (train.jsonl + zips) with bombs in images.zip — the loader refuses the batch in one line, adding under 50 MB RSS; the CLI says it in one line, no stack", async () => {
  const dir = tmp();
  const size = 400_000_000;
  const png = await encodePng({ data: new Uint8Array(32 * 32 * 3).fill(128), width: 32, height: 32, channels: 3 });
  const good = { method: 8 as const, data: zlib.deflateRawSync(png), size: png.length, crc: zlib.crc32(png) >>> 0 };
  const rows = [0, 1, 2, 3].map((i) => ({ text: `circle ${i}`, image: `images/${i}.png`, conditioning_image: `conditioning_images/${i}.png` }));
  fs.writeFileSync(path.join(dir, "train.jsonl"), rows.map((r) => JSON.stringify(r)).join("\n") + "\n");
  // every target image is a 400 MB bomb behind a valid 64×64 PNG header
  const bomb = zeroBomb(size, pngHead(64, 64));
  writeZip(path.join(dir, "images.zip"), rows.map((r) => ({ name: r.image, method: 8, data: bomb.data, size, crc: bomb.crc })));
  writeZip(path.join(dir, "conditioning_images.zip"), rows.map((r) => ({ name: r.conditioning_image, ...good })));
  const script = `
    import { createDataset } from ${JSON.stringify(path.resolve(import.meta.dirname, "../../lib/data/index.ts"))};
    const ds = await createDataset({ train_data_dir: ${JSON.stringify(dir)}, resolution: 32, seed: 0 });
    const baseMB = process.resourceUsage().maxRSS / 1024;
    const loader = ds.loader({ batchSize: 2 });
    let error = "";
    await loader.next().then(() => (error = "read"), (e) => (error = e.message));
    await loader.close?.();
    console.log(JSON.stringify({ error, rows: ds.length, maxRssMB: process.resourceUsage().maxRSS / 1024, baseMB }));`;
  const r = spawnSync(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], { encoding: "utf8", cwd: path.resolve(import.meta.dirname, "../..") });
  assert.equal(r.status, 0, r.stderr);
  const { error, rows: n, maxRssMB, baseMB } = JSON.parse(r.stdout.trim().split("\n").at(-1)!) as { error: string; rows: number; maxRssMB: number; baseMB: number };
  assert.equal(n, 4);
  assert.match(error, /no usable row in .*\(4 skipped; the first: .*images\/\d\.png.*declares 400000000 bytes, more than a 64×64 PNG can hold/);
  assert.ok(maxRssMB - baseMB < 50, `reading the batch raised the peak RSS from ${baseMB.toFixed(0)} to ${maxRssMB.toFixed(0)} MB`);

  // the command line: one line naming the entry, no stack, nothing written as a trained model
  const out = path.join(dir, "out");
  const cli = spawnSync(process.execPath, [path.resolve(import.meta.dirname, "../../bin/controlnet-ts.js"), "train_controlnet",
    `--pretrained_model_name_or_path=${path.resolve(import.meta.dirname, "../fixtures/sd_tiny")}`, `--train_data_dir=${dir}`,
    "--resolution=32", "--train_batch_size=2", "--max_train_steps=1", "--seed=1", `--output_dir=${out}`], { encoding: "utf8" });
  assert.equal(cli.status, 1, cli.stderr.slice(-2000));
  assert.match(cli.stderr, /^train_controlnet: .*declares 400000000 bytes, more than a 64×64 PNG can hold/m);
  assert.doesNotMatch(cli.stderr, /\n\s+at /, "no stack trace");
  assert.ok(!fs.existsSync(path.join(out, "diffusion_pytorch_model.safetensors")));
});
