import { test } from "node:test";
import assert from "node:assert/strict";
import { SyntheticFill50k, syntheticTruth } from "../../lib/data/synthetic.js";
import { CSS_COLORS, lookupColor, parseFillPrompt } from "../../lib/data/colors.js";
import { staleValidationImages, renderValidationImages, VALIDATION_PROMPTS, writeValidationImages } from "../../lib/data/validation.js";
import { decodeRgb } from "../../lib/data/image.js";
import { hashInts, Prng, permutation } from "../../lib/data/prng.js";
import type { RawImage } from "../../lib/data/types.js";
import { tmpDir } from "./fixtures.js";
import fs from "node:fs";
import path from "node:path";

const px = (img: RawImage, x: number, y: number): number[] => {
  const o = (y * img.width + x) * 3;
  return [img.data[o]!, img.data[o + 1]!, img.data[o + 2]!];
};

test("colour table: 148 CSS names with fill50k's spaced spellings", () => {
  assert.equal(CSS_COLORS.length, 148);
  const names = new Set(CSS_COLORS.map((c) => c.name));
  for (const n of ["pale golden rod", "old lace", "light sea green", "dark slate gray", "burly wood", "orange", "floral white", "light golden rod yellow", "medium aqua marine"]) {
    assert.ok(names.has(n), n);
  }
  assert.deepEqual(lookupColor("pale golden rod")!.rgb, [238, 232, 170]);
  assert.deepEqual(lookupColor("PaleGoldenrod")!.rgb, [238, 232, 170]); // CSS keyword, any case
  assert.deepEqual(lookupColor("dark slate grey")!.rgb, [47, 79, 79]);
  assert.equal(lookupColor("brown floral"), undefined);
});

test("parseFillPrompt: names → rgb, unknown colour → null, other text → null", () => {
  const p = parseFillPrompt("pale golden rod circle with old lace background")!;
  assert.deepEqual(p.fill!.rgb, [238, 232, 170]);
  assert.deepEqual(p.background!.rgb, [253, 245, 230]);
  const v = parseFillPrompt(VALIDATION_PROMPTS[1])!;
  assert.deepEqual(v.fill!.rgb, [0, 255, 255]);
  assert.equal(v.background, null);
  assert.equal(v.backgroundText, "brown floral");
  assert.equal(parseFillPrompt(""), null);
  assert.equal(parseFillPrompt("a photo of a cat"), null);
});

test("synthetic rows: ground truth matches the pixels, prompts parse back", () => {
  for (const size of [64, 512]) {
    const ds = new SyntheticFill50k({ count: 40, seed: 3, resolution: size });
    for (let i = 0; i < (size === 512 ? 6 : 40); i++) {
      const r = ds.row(i);
      const t = r.truth;
      const img = r.image as RawImage;
      const cond = r.conditioning_image as RawImage;
      assert.equal(img.width, size);
      assert.equal(cond.height, size);
      assert.equal(r.text, `${t.fillColor.name} circle with ${t.bgColor.name} background`);
      const parsed = parseFillPrompt(r.text)!;
      assert.deepEqual(parsed.fill!.rgb, t.fillColor.rgb);
      assert.deepEqual(parsed.background!.rgb, t.bgColor.rgb);
      assert.notDeepEqual(t.fillColor.rgb, t.bgColor.rgb);
      const cx = Math.floor(t.cx);
      const cy = Math.floor(t.cy);
      // target: centre = fill, corners = background
      assert.deepEqual(px(img, cx, cy), t.fillColor.rgb, `row ${i} centre`);
      for (const [x, y] of [[0, 0], [size - 1, 0], [0, size - 1], [size - 1, size - 1]] as const) assert.deepEqual(px(img, x, y), t.bgColor.rgb, `row ${i} corner`);
      // conditioning: black inside and in the corners, bright on the circle
      assert.deepEqual(px(cond, cx, cy), [0, 0, 0]);
      assert.deepEqual(px(cond, 0, 0), [0, 0, 0]);
      for (let k = 0; k < 8; k++) {
        const a = (k / 8) * 2 * Math.PI;
        const x = Math.floor(t.cx + t.r * Math.cos(a));
        const y = Math.floor(t.cy + t.r * Math.sin(a));
        assert.ok(px(cond, x, y)[0]! > 100, `row ${i}: outline pixel at angle ${k} is ${px(cond, x, y)}`);
        // and just outside the outline it is black again
        const xo = Math.floor(t.cx + (t.r + t.lineWidth + 2) * Math.cos(a));
        const yo = Math.floor(t.cy + (t.r + t.lineWidth + 2) * Math.sin(a));
        if (xo >= 0 && yo >= 0 && xo < size && yo < size) assert.deepEqual(px(cond, xo, yo), [0, 0, 0]);
      }
      // the outline is where the filled circle's edge is: pixels of the ring are neither fully fill nor far outside
      const ringX = Math.floor(t.cx + t.r - 3);
      assert.deepEqual(px(img, ringX, cy), t.fillColor.rgb);
    }
  }
});

test("synthetic rows: deterministic, lazy by index, seed-dependent, scale-consistent", async () => {
  const a = new SyntheticFill50k({ count: 1000, seed: 11, resolution: 64 });
  const b = new SyntheticFill50k({ count: 5, seed: 11, resolution: 64 });
  assert.deepEqual(a.row(3), b.row(3)); // row 3 does not depend on count or on rows 0..2
  const other = new SyntheticFill50k({ count: 20, seed: 12, resolution: 64 });
  const same = Array.from({ length: 20 }, (_, i) => other.row(i).text === a.row(i).text).filter(Boolean).length;
  assert.ok(same < 3, `seed 12 repeats ${same} of seed 11's prompts`);
  const big = syntheticTruth(11, 3, 512);
  const small = syntheticTruth(11, 3, 64);
  assert.equal(big.prompt, small.prompt);
  assert.ok(Math.abs(big.cx / 512 - small.cx / 64) < 1e-12);
  // colours are spread over the table
  const used = new Set<string>();
  for (let i = 0; i < 1000; i++) used.add(a.truth(i).fillColor.name);
  assert.ok(used.size > 120, `only ${used.size} fill colours in 1000 rows`);
  // png format decodes to the same pixels
  const pngRow = await new SyntheticFill50k({ count: 5, seed: 11, resolution: 64, format: "png" }).get(3);
  assert.ok(pngRow.image instanceof Uint8Array);
  assert.deepEqual((await decodeRgb(pngRow.image)).data, (b.row(3).image as RawImage).data);
  assert.throws(() => b.row(5), RangeError);
});

test("prng: deterministic, seeds above 2^32 matter, permutation is a permutation", () => {
  const p1 = new Prng(hashInts(1, 2));
  const p2 = new Prng(hashInts(1, 2));
  const xs = Array.from({ length: 5 }, () => p1.next());
  assert.deepEqual(xs, Array.from({ length: 5 }, () => p2.next()));
  assert.notEqual(hashInts(1), hashInts(1 + 2 ** 32));
  const perm = permutation(100, new Prng(5));
  assert.deepEqual([...perm].sort((x, y) => x - y), Array.from({ length: 100 }, (_, i) => i));
  assert.notDeepEqual([...perm], Array.from({ length: 100 }, (_, i) => i));
});

test("validation images in data/ are up to date with the generator", async () => {
  const repoData = path.join(path.dirname(new URL(import.meta.url).pathname), "..", "..", "data");
  assert.deepEqual(await staleValidationImages(repoData), [], "run writeValidationImages('data') from lib/data/validation.ts");
  const [one, two] = renderValidationImages();
  assert.equal(one!.prompt, "red circle with blue background");
  assert.equal(two!.prompt, "cyan circle with brown floral background");
  const disk = await decodeRgb(fs.readFileSync(path.join(repoData, "conditioning_image_1.png")));
  assert.equal(disk.width, 512);
  assert.equal(disk.height, 512);
  // the tiny base's size too, drawn at that size (the outline as thick as the training data's)
  const small = await decodeRgb(fs.readFileSync(path.join(repoData, "conditioning_image_1_32px.png")));
  assert.deepEqual([small.width, small.height], [32, 32]);
  assert.ok(small.data.some((v) => v > 200), "the outline is drawn at 32 px");
  // a stale file is detected
  const dir = tmpDir("val");
  await writeValidationImages(dir);
  assert.deepEqual(await staleValidationImages(dir), []);
  fs.copyFileSync(path.join(dir, "conditioning_image_1.png"), path.join(dir, "conditioning_image_2.png"));
  assert.deepEqual(await staleValidationImages(dir), [path.join(dir, "conditioning_image_2.png")]);
  fs.rmSync(path.join(dir, "conditioning_image_2_32px.png"));
  assert.deepEqual(await staleValidationImages(dir), [path.join(dir, "conditioning_image_2.png"), path.join(dir, "conditioning_image_2_32px.png")]);
  fs.rmSync(dir, { recursive: true });
});

test("column flags name the synthetic fill50k's columns as any dataset's: a wrong name is refused, not ignored", async () => {
  const { createDataset } = await import("../../lib/data/index.js");
  await assert.rejects(createDataset({ synthetic: { count: 4 }, resolution: 16, caption_column: "foo" }),
    /`--caption_column` value 'foo' is not a column of the dataset; its columns are: image, conditioning_image, text/);
  await assert.rejects(createDataset({ synthetic: { count: 4 }, resolution: 16, image_column: "conditioning_image", conditioning_image_column: "image" }),
    /synthetic fill50k's columns are image, conditioning_image and text as they are/);
  const ds = await createDataset({ synthetic: { count: 4 }, resolution: 16, image_column: "image", caption_column: "text" });
  assert.equal(ds.length, 4);
});
