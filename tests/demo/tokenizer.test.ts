import { test } from "node:test";
import assert from "node:assert/strict";
import { CLIPTokenizer } from "../../lib/models/clip/tokenizer.js";
import { DEFAULT_TINY_SD } from "../../lib/demo/tiny-sd.js";
import { CSS_COLORS } from "../../lib/data/index.js";
import path from "node:path";

const tok = CLIPTokenizer.fromFolder(path.join(DEFAULT_TINY_SD, "tokenizer"));

test("tiny-sd tokenizer gives transformers' ids for a fill50k prompt", () => {
  // transformers 5.24 CLIPTokenizer on this vocab (tests/fixtures/tokenizer/cases.json)
  const ids = tok.tokenize(["pale golden rod circle with old lace background"], 77)[0]!;
  assert.deepEqual(ids.slice(0, 12), [998, 596, 921, 710, 844, 556, 567, 323, 964, 644, 999, 999]);
  assert.equal(ids.length, 77);
  assert.ok(ids.slice(10).every((i) => i === 999));
});

test("every CSS colour name tokenizes, and distinct names give distinct ids", () => {
  const seen = new Map<string, string>();
  for (const c of CSS_COLORS) {
    const ids = tok.encode(c.name, { padding: false }).inputIds.slice(1, -1); // without BOS/EOS
    assert.ok(ids.length >= 1 && ids.length <= 8, c.name);
    const key = ids.join(",");
    const prev = seen.get(key);
    assert.ok(prev === undefined || prev === c.name, `${c.name} and ${prev} share ids`);
    seen.set(key, c.name);
  }
  // truncation keeps bos and eos
  const long = tok.tokenize([Array(100).fill("red").join(" ")], 77)[0]!;
  assert.equal(long.length, 77);
  assert.equal(long[0], tok.bosTokenId);
  assert.equal(long[76], tok.eosTokenId);
});
