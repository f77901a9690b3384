import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import sharp from "sharp";
import { centerCropOffsets, checkResolution, conditioningImageTransform, imageTransform, resizeCenterCrop, resizedSize } from "../../lib/data/transforms.js";
import { decodeRgb } from "../../lib/data/image.js";

/** A w×h RGB image whose left half is red and right half blue, with a green top row marker. */
function halves(w: number, h: number): Uint8Array {
  const d = new Uint8Array(w * h * 3);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
    const o = (y * w + x) * 3;
    if (x < w / 2) d[o] = 255; else d[o + 2] = 255;
  }
  return d;
}

test("resolution must be divisible by 8", () => {
  assert.throws(() => checkResolution(100), /divisible by 8/);
  assert.throws(() => checkResolution(0), /divisible by 8/);
  checkResolution(64);
});

test("torchvision Resize(int) / CenterCrop geometry", () => {
  assert.deepEqual(resizedSize(640, 480, 256), { width: 341, height: 256 }); // int(256*640/480) = 341
  assert.deepEqual(resizedSize(480, 640, 256), { width: 256, height: 341 });
  assert.deepEqual(resizedSize(300, 300, 64), { width: 64, height: 64 });
  assert.deepEqual(centerCropOffsets(341, 256, 256), { left: 42, top: 0 }); // round(42.5) = 42 (half to even)
  assert.deepEqual(centerCropOffsets(343, 256, 256), { left: 44, top: 0 }); // round(43.5) = 44
});

test("resize short side + centre crop, image → [-1, 1], conditioning → [0, 1], NHWC", async () => {
  const png = await sharp(halves(96, 48), { raw: { width: 96, height: 48, channels: 3 } }).png().toBuffer();
  const px = await resizeCenterCrop(png, 32);
  assert.equal(px.width, 32);
  assert.equal(px.height, 32);
  // 96×48 → 64×32 → crop 16..48: left half of the crop red, right half blue
  assert.deepEqual([...px.data.subarray(0, 3)], [255, 0, 0]);
  const last = (32 * 32 - 1) * 3;
  assert.deepEqual([...px.data.subarray(last, last + 3)], [0, 0, 255]);
  const img = await imageTransform(png, 32);
  const cond = await conditioningImageTransform(png, 32);
  assert.equal(img.length, 32 * 32 * 3);
  assert.equal(img[0], 1); // red channel 255 → 1
  assert.equal(img[1], -1); // green 0 → -1
  assert.equal(cond[0], 1);
  assert.equal(cond[1], 0);
  let min = Infinity, max = -Infinity;
  for (const v of img) { min = Math.min(min, v); max = Math.max(max, v); }
  assert.ok(min >= -1 && max <= 1);
  // upscaling works too
  const up = await resizeCenterCrop(png, 128);
  assert.equal(up.width, 128);
});

test("grayscale, RGBA and 16-bit images become RGB 8-bit", async () => {
  const w = 16, h = 16;
  const gray = await sharp(new Uint8Array(w * h).fill(77), { raw: { width: w, height: h, channels: 1 } }).png().toBuffer();
  const g = await decodeRgb(gray);
  assert.equal(g.channels, 3);
  assert.deepEqual([...g.data.subarray(0, 6)], [77, 77, 77, 77, 77, 77]);
  const rgba = await sharp(new Uint8Array(w * h * 4).fill(200), { raw: { width: w, height: h, channels: 4 } }).png().toBuffer();
  assert.equal((await sharp(rgba).metadata()).channels, 4);
  const a = await decodeRgb(rgba);
  assert.equal(a.data.length, w * h * 3);
  assert.equal(a.data[0], 200);
  const rgb8 = halves(w, h);
  const png16 = await sharp(rgb8, { raw: { width: w, height: h, channels: 3 } }).toColourspace("rgb16").png().toBuffer();
  assert.equal((await sharp(png16).metadata()).depth, "ushort");
  const d16 = await decodeRgb(png16);
  assert.deepEqual(d16.data, rgb8);
  const t = await resizeCenterCrop(png16, 8);
  assert.equal(t.data.length, 8 * 8 * 3);
  // 2-channel gray+alpha
  const la = await sharp(new Uint8Array(w * h * 2).fill(90), { raw: { width: w, height: h, channels: 2 } }).png().toBuffer();
  assert.equal((await decodeRgb(la)).data[2], 90);
});

test("corrupt and truncated images reject (the loader turns that into a skipped row)", async () => {
  await assert.rejects(resizeCenterCrop(Buffer.from("not an image at all"), 8));
  const png = await sharp(halves(64, 64), { raw: { width: 64, height: 64, channels: 3 } }).png().toBuffer();
  await assert.rejects(resizeCenterCrop(png.subarray(0, Math.floor(png.length / 2)), 8));
  const jpg = await sharp(halves(64, 64), { raw: { width: 64, height: 64, channels: 3 } }).jpeg().toBuffer();
  await assert.rejects(resizeCenterCrop(jpg.subarray(0, Math.floor(jpg.length / 2)), 8));
});

test("a CMYK JPEG decodes to PIL's convert(\"RGB\") colours (libvips' profile conversion shifted pure red to ~232)", async () => {
  const dir = path.join(import.meta.dirname, "../fixtures/images");
  const ours = await decodeRgb(new Uint8Array(fs.readFileSync(path.join(dir, "cmyk.jpg"))));
  const pil = await decodeRgb(new Uint8Array(fs.readFileSync(path.join(dir, "cmyk-pil-rgb.png"))));
  assert.deepEqual([ours.width, ours.height], [pil.width, pil.height]);
  let max = 0;
  for (let i = 0; i < pil.data.length; i++) max = Math.max(max, Math.abs(ours.data[i]! - pil.data[i]!));
  // (the same DCT decoded by libjpeg-turbo here and libjpeg in PIL: the CMYK samples may differ by a step)
  assert.ok(max <= 2, `max difference from PIL ${max}`);
  // and through the training transform
  const crop = await resizeCenterCrop(new Uint8Array(fs.readFileSync(path.join(dir, "cmyk.jpg"))), 32);
  assert.deepEqual([...crop.data.subarray(0, 3)], [...pil.data.subarray(0, 3)]);
});

test("the EXIF orientation is applied to dataset images and load_image's (datasets, diffusers), not to the script's validation images", async () => {
  // stored 64×32: left red, right blue, green added to the top half; Orientation 6 = shown turned 90° clockwise
  const w = 64, h = 32;
  const px = new Uint8Array(w * h * 3);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) px.set([x < w / 2 ? 255 : 0, y < h / 2 ? 255 : 0, x < w / 2 ? 0 : 255], (y * w + x) * 3);
  const jpeg = new Uint8Array(await sharp(px, { raw: { width: w, height: h, channels: 3 } }).jpeg({ quality: 95 }).withMetadata({ orientation: 6 }).toBuffer());
  const corners = (img: { data: Uint8Array; width: number; height: number }) => [[1, 1], [img.width - 2, 1], [1, img.height - 2], [img.width - 2, img.height - 2]]
    .map(([x, y]) => [...img.data.subarray((y! * img.width + x!) * 3, (y! * img.width + x!) * 3 + 3)].map((v) => (v > 127 ? "1" : "0")).join(""));
  // shown (PIL's exif_transpose): 32×64, corners red / yellow / blue / cyan
  const shown = await decodeRgb(jpeg);
  assert.deepEqual([shown.width, shown.height], [32, 64]);
  assert.deepEqual(corners(shown), ["100", "110", "001", "011"]);
  const crop = await resizeCenterCrop(jpeg, 16);
  assert.deepEqual(corners(crop).map((c) => c), corners(await resizeCenterCrop(await decodeRgb(jpeg), 16)));
  // as stored (the script's Image.open for --validation_image): 64×32, yellow / cyan / red / blue
  const stored = await decodeRgb(jpeg, { orient: false });
  assert.deepEqual([stored.width, stored.height], [64, 32]);
  assert.deepEqual(corners(stored), ["110", "011", "100", "001"]);
});

test("an image smaller than the resolution is enlarged as PIL's bilinear resize (torchvision's Resize on a PIL image), not shifted", async () => {
  const dir = path.join(import.meta.dirname, "../fixtures/images");
  for (const [name, res] of [["small-24x16", 32], ["small-100x60", 64], ["small-16x16", 32]] as const) {
    const ours = await resizeCenterCrop(new Uint8Array(fs.readFileSync(path.join(dir, `${name}.png`))), res);
    const pil = await decodeRgb(new Uint8Array(fs.readFileSync(path.join(dir, `${name}-to-${res}.png`))));
    let max = 0;
    for (let i = 0; i < pil.data.length; i++) max = Math.max(max, Math.abs(ours.data[i]! - pil.data[i]!));
    // (libvips' bilinear: a ramp [0, 0, 9, 17, …] where PIL gives [0, 4, 13, 21, …]; 37 levels apart on average on noise)
    assert.equal(max, 0, `${name} → ${res}: max difference from PIL ${max}`);
  }
});
