/**
 * The control image sized as diffusers' control image processor sizes it: PIL's LANCZOS resize, pixel for pixel
 * (fixtures: tests/reference/make_fixtures.py --only images). libvips' lanczos3 put an enlarged image's edges about
 * half an output pixel off (up to 121 levels on the seed's 512 → 768).
 */
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { test } from "node:test";
import { decodeRgb } from "../../lib/data/image.js";
import { prepareControlImage } from "../../lib/pipeline/image.js";

const DIR = path.join(import.meta.dirname, "../fixtures/images");

test("control images enlarged, shrunk, or resized along one axis equal PIL's LANCZOS resize", async () => {
  for (const [name, w, h] of [["small-24x16", 48, 32], ["small-16x16", 40, 24], ["small-100x60", 64, 40], ["small-100x60", 100, 24]] as const) {
    const prepared = await prepareControlImage(path.join(DIR, `${name}.png`), { multiple: 8, width: w, height: h });
    assert.deepEqual(prepared.tensor.shape, [1, h, w, 3]);
    const ours = await prepared.tensor.data();
    prepared.tensor.dispose();
    const pil = await decodeRgb(new Uint8Array(fs.readFileSync(path.join(DIR, `${name}-lanczos-${w}x${h}.png`))));
    let max = 0;
    for (let i = 0; i < pil.data.length; i++) max = Math.max(max, Math.abs(Math.round(ours[i]! * 255) - pil.data[i]!));
    assert.equal(max, 0, `${name} → ${w}×${h}: max difference from PIL ${max}`);
  }
});
