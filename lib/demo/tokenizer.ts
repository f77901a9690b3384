/**
 * The tiny SD's CLIP tokenizer, read from a diffusers `tokenizer/` folder (vocab.json + merges.txt).
 *
 * A bridge: lib/models/clip/tokenizer.ts (CLIPTokenizer.fromFolder) is the project's full implementation; until it is
 * wired in, this covers what fill50k prompts need — lower-cased words, CLIP's byte-level BPE over ASCII, `</w>` word
 * ends, bos/eos, padding to max_length with the pad token and truncation keeping eos. Checked against transformers'
 * ids for a fill50k prompt in tests/demo.
 */
import fs from "node:fs";
import path from "node:path";
import type { TokenizerLike } from "../pipeline/index.js";

export interface ClipBpe extends TokenizerLike {
  readonly vocab: Map<string, number>;
  readonly bosId: number;
  readonly eosId: number;
  readonly padId: number;
  /** Token ids of one text without bos/eos/padding. */
  encodeWords(text: string): number[];
}

// CLIP's pre-tokenizer pattern (letters, single digits, runs of other non-space characters, common contractions).
const PATTERN = /<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+/gu;

function tokenContent(v: unknown, fallback: string): string {
  if (typeof v === "string") return v;
  if (v && typeof v === "object" && typeof (v as { content?: unknown }).content === "string") return (v as { content: string }).content;
  return fallback;
}

export function loadClipTokenizer(dir: string): ClipBpe {
  const vocabObj = JSON.parse(fs.readFileSync(path.join(dir, "vocab.json"), "utf8")) as Record<string, number>;
  const vocab = new Map(Object.entries(vocabObj));
  const ranks = new Map<string, number>();
  const lines = fs.readFileSync(path.join(dir, "merges.txt"), "utf8").split("\n");
  let rank = 0;
  for (const line of lines) {
    if (!line || line.startsWith("#version")) continue;
    ranks.set(line, rank++);
  }
  const cfgFile = path.join(dir, "tokenizer_config.json");
  const cfg = fs.existsSync(cfgFile) ? (JSON.parse(fs.readFileSync(cfgFile, "utf8")) as Record<string, unknown>) : {};
  const id = (tok: string): number => {
    const v = vocab.get(tok);
    if (v === undefined) throw new Error(`tokenizer ${dir}: '${tok}' is not in vocab.json`);
    return v;
  };
  const bosId = id(tokenContent(cfg.bos_token, "<|startoftext|>"));
  const eosId = id(tokenContent(cfg.eos_token, "<|endoftext|>"));
  const padId = id(tokenContent(cfg.pad_token, "<|endoftext|>"));
  const modelMaxLength = typeof cfg.model_max_length === "number" ? cfg.model_max_length : 77;

  const cache = new Map<string, string[]>();
  const bpe = (word: string): string[] => {
    const hit = cache.get(word);
    if (hit) return hit;
    let parts = [...word];
    parts[parts.length - 1] += "</w>";
    for (;;) {
      let best = -1;
      let bestRank = Infinity;
      for (let i = 0; i + 1 < parts.length; i++) {
        const r = ranks.get(`${parts[i]} ${parts[i + 1]}`);
        if (r !== undefined && r < bestRank) {
          bestRank = r;
          best = i;
        }
      }
      if (best < 0) break;
      // merge every occurrence of the best pair, left to right (as the reference BPE does)
      const a = parts[best]!;
      const b = parts[best + 1]!;
      const next: string[] = [];
      for (let i = 0; i < parts.length; i++) {
        if (i + 1 < parts.length && parts[i] === a && parts[i + 1] === b) {
          next.push(a + b);
          i++;
        } else next.push(parts[i]!);
      }
      parts = next;
    }
    cache.set(word, parts);
    return parts;
  };

  const encodeWords = (text: string): number[] => {
    const clean = text.replace(/\s+/g, " ").trim().toLowerCase();
    const out: number[] = [];
    for (const m of clean.matchAll(PATTERN)) {
      const w = m[0];
      if (/[^\x21-\x7e]/.test(w)) throw new Error(`tokenizer bridge: only printable ASCII is supported (got '${w}')`);
      for (const piece of bpe(w)) out.push(id(piece));
    }
    return out;
  };

  const tokenize = (texts: string[], maxLength = modelMaxLength): number[][] =>
    texts.map((t) => {
      const ids = [bosId, ...encodeWords(t).slice(0, maxLength - 2), eosId];
      while (ids.length < maxLength) ids.push(padId);
      return ids;
    });

  return { vocab, bosId, eosId, padId, modelMaxLength, tokenize, encodeWords };
}
