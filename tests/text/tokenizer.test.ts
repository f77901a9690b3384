/**
 * CLIPTokenizer parity: ids equal to transformers' CLIPTokenizer (both the transformers 5 tokenizers-backed one and
 * the 4.x pure-Python one without ftfy) on the tricky strings of tests/fixtures/tokenizer/cases.json, for an
 * SD1.x folder (pads with <|endoftext|>) and an SD2.x folder (pads with "!").
 */
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { describe, it } from "node:test";
import { CLIPTokenizer, type CLIPTokenizerFlavor } from "../../lib/models/clip/tokenizer.js";
import { tempDir } from "../helpers.js";

const FIX = path.join(import.meta.dirname, "..", "fixtures", "tokenizer");

interface Case {
  text: string;
  input_ids: number[];
  attention_mask: number[];
  input_ids_unpadded: number[];
  tokens: string[];
}
interface Cases {
  folders: Record<string, string>;
  batch_strings: string[];
  results: Record<string, Record<string, Case[] | { input_ids: number[][]; attention_mask: number[][] }>>;
}
const cases = JSON.parse(fs.readFileSync(path.join(FIX, "cases.json"), "utf8")) as Cases;

const FLAVORS: Record<string, CLIPTokenizerFlavor> = { transformers5: "tokenizers", legacy_slow: "slow" };

for (const [resultKey, flavor] of Object.entries(FLAVORS)) {
  for (const [folderKey, folder] of Object.entries(cases.folders)) {
    describe(`CLIPTokenizer ${flavor} flavour, ${folderKey} folder (vs ${resultKey})`, () => {
      const tok = CLIPTokenizer.fromFolder(path.join(FIX, folder), { flavor });
      const expected = cases.results[resultKey]![folderKey] as Case[];

      it("has the expected cases", () => assert.ok(expected.length >= 20));

      for (const [i, c] of expected.entries()) {
        it(`string ${i}: ${JSON.stringify(c.text).slice(0, 60)}`, () => {
          assert.deepEqual(tok.tokens(c.text), c.tokens, "BPE pieces");
          const enc = tok.encode(c.text); // padding max_length, max_length 77, truncation: SD's call
          assert.deepEqual(enc.inputIds, c.input_ids, "padded ids");
          assert.deepEqual(enc.attentionMask, c.attention_mask, "attention mask");
          assert.deepEqual(tok.encode(c.text, { padding: false, truncation: false }).inputIds, c.input_ids_unpadded, "unpadded ids");
        });
      }

      it("encodeBatch with padding 'longest' equals transformers", () => {
        const exp = cases.results[resultKey]![`${folderKey}_batch_longest`] as { input_ids: number[][]; attention_mask: number[][] };
        const got = tok.encodeBatch(cases.batch_strings, { padding: "longest" });
        assert.deepEqual(got.map((e) => e.inputIds), exp.input_ids);
        assert.deepEqual(got.map((e) => e.attentionMask), exp.attention_mask);
      });
    });
  }
}

describe("CLIPTokenizer API", () => {
  const tok = CLIPTokenizer.fromFolder(path.join(FIX, "tokenizer"));
  const sd2 = CLIPTokenizer.fromFolder(path.join(FIX, "tokenizer_sd2"));

  it("reads special tokens and max length from the folder's configs", () => {
    assert.equal(tok.modelMaxLength, 77);
    assert.equal(tok.vocabSize, 1000);
    assert.equal(tok.bosTokenId, 998);
    assert.equal(tok.eosTokenId, 999);
    assert.equal(tok.padTokenId, 999); // SD1.x pads with <|endoftext|>
    assert.equal(sd2.padToken, "!");
    assert.equal(sd2.padTokenId, 0); // SD2.x pads with "!"
  });

  it("truncatedPart() is what diffusers' encode_prompt warns was cut (batch_decode of ids[max-1:-1]: transformers 5.24 on 80 words)", () => {
    const words = Array.from({ length: 80 }, (_, i) => ["red", "circle", "with", "blue", "background"][i % 5]).join(" ");
    assert.equal(tok.truncatedPart(words), "red circle with blue background");
    assert.equal(tok.truncatedPart("red circle"), null);
    assert.equal(tok.truncatedPart(Array(75).fill("red").join(" ")), null); // 75 + BOS + EOS fit exactly
  });

  it("tokenize() gives padded, truncated id rows of the requested length (the pipeline's TokenizerLike)", () => {
    const rows = tok.tokenize(["a cat", "x ".repeat(200)], 10);
    assert.equal(rows.length, 2);
    for (const r of rows) assert.equal(r.length, 10);
    assert.equal(rows[0]![0], 998);
    assert.equal(rows[1]![9], 999); // truncation keeps EOS last
  });

  it("decode inverts encode for plain lower-case text", () => {
    const text = "pale golden rod circle with old lace background";
    assert.equal(tok.decode(tok.encode(text).inputIds), text);
    assert.equal(tok.decode(tok.encode("café ✓").inputIds), "café ✓");
  });

  it("loads a transformers 5 tokenizer.json when vocab.json/merges.txt are absent", () => {
    const dir = tempDir("clip-tok-");
    const vocab = JSON.parse(fs.readFileSync(path.join(FIX, "tokenizer", "vocab.json"), "utf8")) as Record<string, number>;
    const merges = fs.readFileSync(path.join(FIX, "tokenizer", "merges.txt"), "utf8").trim().split("\n").slice(1);
    fs.writeFileSync(path.join(dir, "tokenizer.json"), JSON.stringify({ model: { type: "BPE", vocab, merges } }));
    fs.copyFileSync(path.join(FIX, "tokenizer", "tokenizer_config.json"), path.join(dir, "tokenizer_config.json"));
    const t2 = CLIPTokenizer.fromFolder(dir);
    const s = "A painting of a squirrel eating a burger";
    assert.deepEqual(t2.encode(s), tok.encode(s));
  });

  it("a folder without a vocabulary gives a clear error", () => {
    const dir = tempDir("clip-tok-");
    assert.throws(() => CLIPTokenizer.fromFolder(dir), /neither vocab\.json \+ merges\.txt nor a tokenizer\.json/);
  });
});
