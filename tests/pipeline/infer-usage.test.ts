import assert from "node:assert/strict";
import { test } from "node:test";
import { inferUsage } from "../../lib/pipeline/cli.js";

test("infer --help: the default size is floored to the VAE scale factor (diffusers' image processor), not a fixed 8", () => {
  const text = inferUsage();
  for (const d of ["height", "width"]) {
    assert.match(text, new RegExp(`^ {2}--${d} <value> +output ${d} \\(default: the control image's, floored to a multiple of the VAE scale factor: 8 for Stable Diffusion\\)$`, "m"));
  }
  assert.doesNotMatch(text, /floored to a multiple of 8/);
  assert.match(text, /\n$/);
});
