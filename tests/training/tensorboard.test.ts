import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { crc32c } from "@aws-crypto/crc32c";
import {
  JsonlLogger,
  TensorBoardWriter,
  decodeEvent,
  encodePng,
  findEventFiles,
  frameRecord,
  makeGrid,
  decodeHparamsSessionStart,
  toYaml,
  maskedCrc32c,
  readEvents,
  readJsonl,
} from "../../lib/training/tensorboard.js";
import { tempDir } from "../helpers.js";

const tmpDir = () => tempDir("cnts-tb-");

test("crc32c check value and TensorFlow's mask", () => {
  assert.equal(crc32c(Buffer.from("123456789")) >>> 0, 0xe3069283);
  const c = 0xe3069283;
  assert.equal(maskedCrc32c(Buffer.from("123456789")), ((((c >>> 15) | (c << 17)) >>> 0) + 0xa282ead8) % 2 ** 32);
});

test("record framing: u64 length, masked CRC of the length, data, masked CRC of the data", () => {
  const data = Buffer.from("hello event");
  const rec = frameRecord(data);
  assert.equal(rec.length, 8 + 4 + data.length + 4);
  const dv = new DataView(rec.buffer);
  assert.equal(Number(dv.getBigUint64(0, true)), data.length);
  assert.equal(dv.getUint32(8, true), maskedCrc32c(rec.subarray(0, 8)));
  assert.equal(dv.getUint32(12 + data.length, true), maskedCrc32c(data));
});

test("Event protobuf bytes for a scalar are exactly the hand-encoded ones", () => {
  const dir = tmpDir();
  const w = new TensorBoardWriter(dir);
  w.addScalar("loss", 0.5, 3, 1.25);
  w.close();
  const buf = fs.readFileSync(w.path);
  // skip the file_version record
  const firstLen = Number(buf.readBigUInt64LE(0));
  const off = 12 + firstLen + 4;
  const len = Number(buf.readBigUInt64LE(off));
  const data = buf.subarray(off + 12, off + 12 + len);
  // wall_time: 09 + f64le(1.25); step: 10 03; summary: 2a L { value: 0a L' { tag: 0a 04 "loss"; simple_value: 15 f32le(0.5) } }
  const f64 = Buffer.alloc(8);
  f64.writeDoubleLE(1.25);
  const f32 = Buffer.alloc(4);
  f32.writeFloatLE(0.5);
  const value = Buffer.concat([Buffer.from([0x0a, 4]), Buffer.from("loss"), Buffer.from([0x15]), f32]);
  const summary = Buffer.concat([Buffer.from([0x0a, value.length]), value]);
  const want = Buffer.concat([Buffer.from([0x09]), f64, Buffer.from([0x10, 3, 0x2a, summary.length]), summary]);
  assert.deepEqual(Buffer.from(data), want);
});

test("writer → reader round trip: file name, file_version, scalars, images (PNG), CRCs verified", async () => {
  const dir = tmpDir();
  const w = new TensorBoardWriter(path.join(dir, "logs"), { now: new Date(1_700_000_000_000) });
  assert.equal(path.basename(w.path), `events.out.tfevents.1700000000.${os.hostname()}.${process.pid}.0`);
  w.addScalars({ loss: 0.125, lr: 1e-5 }, 1);
  w.addScalar("loss", 0.0625, 2);
  w.addScalar("loss", 0.03125, 2 ** 40); // int64 steps beyond 32 bits
  const px = new Uint8Array(4 * 3 * 3).map((_, i) => (i * 37) % 256);
  await w.addImages("red circle", [px, px.map((v) => 255 - v)], 4, 3, 3, 2);
  w.close();
  assert.deepEqual(findEventFiles(dir), [w.path]);
  const evs = readEvents(w.path);
  assert.equal(evs[0]!.fileVersion, "brain.Event:2");
  assert.deepEqual(evs[1]!.values.map((v) => [v.tag, v.simpleValue]), [["loss", 0.125], ["lr", Math.fround(1e-5)]]);
  assert.equal(evs[1]!.step, 1);
  assert.equal(evs[2]!.values[0]!.simpleValue, 0.0625);
  assert.equal(evs[3]!.step, 2 ** 40);
  const img = evs[4]!.values[0]!;
  assert.equal(img.tag, "red circle");
  // torch.utils.tensorboard's make_grid: 2 images of 4x3 side by side, no padding → 8 × 3
  assert.deepEqual([img.image!.width, img.image!.height, img.image!.colorspace], [8, 3, 3]);
  assert.deepEqual(Array.from(img.image!.encoded.subarray(0, 8)), [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  const sharp = (await import("sharp")).default;
  const { data, info } = await sharp(Buffer.from(img.image!.encoded)).raw().toBuffer({ resolveWithObject: true });
  assert.deepEqual([info.width, info.height, info.channels], [8, 3, 3]);
  const grid = makeGrid([px, px.map((v) => 255 - v)], 4, 3, 3, 8, 0);
  assert.deepEqual(new Uint8Array(data), grid.pixels);
  // pixel (0,0) of the grid is the first image's (0,0); (x=4,y=0) the second's
  assert.deepEqual(Array.from(grid.pixels.subarray(0, 3)), Array.from(px.subarray(0, 3)));
  assert.deepEqual(Array.from(grid.pixels.subarray(4 * 3, 4 * 3 + 3)), Array.from(px.subarray(0, 3)).map((v) => 255 - v));
  // torchvision's make_grid (the demo's grids) pads: 2 px around each cell → (2·(4+2)+2) × (3+2+2)
  const padded = makeGrid([px, px], 4, 3, 3);
  assert.deepEqual([padded.width, padded.height], [14, 7]);
  // a flipped bit anywhere is caught
  const bytes = fs.readFileSync(w.path);
  bytes[bytes.length - 20] ^= 1;
  fs.writeFileSync(w.path, bytes);
  assert.throws(() => readEvents(w.path), /CRC mismatch/);
});

test("encodePng round trip and decodeEvent of a hand-made event", async () => {
  const px = Uint8Array.from({ length: 2 * 2 }, (_, i) => i * 60);
  const png = await encodePng(px, 2, 2, 1);
  const sharp = (await import("sharp")).default;
  const back = await sharp(Buffer.from(png.png)).raw().toBuffer({ resolveWithObject: true });
  // sharp may expand grey to RGB on decode: every channel carries the grey value
  const grey = Uint8Array.from({ length: 4 }, (_, i) => back.data[i * back.info.channels]!);
  assert.deepEqual(grey, px);
  assert.equal(png.channels, 1);
  assert.deepEqual(decodeEvent(Uint8Array.from([0x10, 0x07])), { wallTime: 0, step: 7, values: [] });
});

test("JSON-lines log: one object per line, a partial last line is ignored", () => {
  const dir = tmpDir();
  const log = new JsonlLogger(path.join(dir, "sub", "train.jsonl"));
  log.log({ step: 1, loss: 0.5, lr: 1e-5 });
  log.log({ step: 2, loss: 0.25, lr: 1e-5 });
  fs.appendFileSync(log.path, '{"step": 3, "lo');
  const rows = readJsonl(log.path);
  assert.deepEqual(rows.map((r) => [r.step, r.loss]), [[1, 0.5], [2, 0.25]]);
  assert.equal(typeof rows[0]!.time, "number");
  assert.deepEqual(readJsonl(path.join(dir, "missing.jsonl")), []);
});

test("hparams as accelerate stores them: the plugin's three summaries in <logdir>/<time>/ (decoded back), hparams.yml as PyYAML writes it", () => {
  const dir = tmpDir();
  const w = new TensorBoardWriter(dir);
  const hpDir = w.addHparams({ learning_rate: 1e-5, seed: 1, use_ema: false, cache_dir: null, report_to: "tensorboard", max_grad_norm: 1, hub_model_id: "true" },
    { floats: new Set(["learning_rate", "max_grad_norm"]), wallTime: 1_700_000_000.5 });
  w.close();
  assert.equal(hpDir, path.join(dir, "1700000000.5"));
  const [file] = findEventFiles(hpDir);
  const values = readEvents(file!).flatMap((e) => e.values);
  assert.deepEqual(values.map((v) => [v.tag, v.plugin?.name]), [
    ["_hparams_/experiment", "hparams"], ["_hparams_/session_start_info", "hparams"], ["_hparams_/session_end_info", "hparams"],
  ]);
  // None is skipped; a bool is a number (Python's bool is an int), as torch's add_hparams
  assert.deepEqual(decodeHparamsSessionStart(values[1]!.plugin!.content), { learning_rate: 1e-5, seed: 1, use_ema: 0, report_to: "tensorboard", max_grad_norm: 1, hub_model_id: "true" });
  assert.equal(fs.readFileSync(path.join(hpDir, "hparams.yml"), "utf8"),
    'cache_dir: null\nhub_model_id: "true"\nlearning_rate: 1.0e-05\nmax_grad_norm: 1.0\nreport_to: tensorboard\nseed: 1\nuse_ema: false\n');
  assert.equal(toYaml({ a: 1e16, b: 0.0001, c: 2.5e-7, d: "/tmp/x", e: "a: b" }, new Set(["a", "b", "c"])), 'a: 1.0e+16\nb: 0.0001\nc: 2.5e-07\nd: /tmp/x\ne: "a: b"\n');
});
