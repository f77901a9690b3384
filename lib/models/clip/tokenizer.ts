/**
 * CLIP's byte-level BPE tokenizer, loaded from a Stable Diffusion `tokenizer/` folder (vocab.json, merges.txt,
 * tokenizer_config.json, special_tokens_map.json), returning exactly the ids transformers' CLIPTokenizer returns.
 *
 * Two flavours, because transformers changed behaviour between major versions and both are in use:
 * - "tokenizers" (default): transformers 5's CLIPTokenizer (and 4.x's CLIPTokenizerFast), which current diffusers
 *   pipelines and train_controlnet.py use: NFC, whitespace runs → one space, per-character lower case, CLIP's split
 *   regex, then GPT-2's byte-level regex, BPE with a `</w>` end-of-word suffix.
 * - "slow": transformers 4.x's pure-Python CLIPTokenizer without ftfy (SD pipelines before transformers 5): its
 *   BasicTokenizer fallback drops control/format characters, splits CJK ideographs into words, NFC, lower case.
 * Parity with both is proven by tests/text/tokenizer.test.ts against tests/fixtures/tokenizer/cases.json.
 */
import fs from "node:fs";
import path from "node:path";

export type CLIPTokenizerFlavor = "tokenizers" | "slow";

export interface EncodeOptions {
  /** Default: the tokenizer's model_max_length (77 for CLIP). */
  maxLength?: number;
  /** "max_length" (default, as SD pipelines call it), "longest" (only meaningful in encodeBatch) or false. */
  padding?: "max_length" | "longest" | false;
  /** Cut to maxLength (keeping BOS and EOS). Default true. */
  truncation?: boolean;
}

export interface Encoding {
  inputIds: number[];
  /** 1 for real tokens (BOS and EOS included), 0 for padding. */
  attentionMask: number[];
}

/** A special token as tokenizer configs declare it: a string or an AddedToken object. */
type TokenDecl = string | { content: string; normalized?: boolean };

export interface CLIPTokenizerConfig {
  bos_token?: TokenDecl;
  eos_token?: TokenDecl;
  unk_token?: TokenDecl;
  pad_token?: TokenDecl;
  model_max_length?: number;
  added_tokens_decoder?: Record<string, { content: string; normalized?: boolean; special?: boolean }>;
}

export interface CLIPTokenizerOptions {
  flavor?: CLIPTokenizerFlavor;
}

/** transformers' "no limit" model_max_length (int(1e30)) and friends: treat anything this large as unset. */
const HUGE_MAX_LENGTH = 1e12;
const CLIP_MAX_LENGTH = 77;
/** transformers' slow CLIPTokenizer reads at most this many merges (CLIP's own vocabulary size minus bytes). */
const SLOW_MAX_MERGES = 49152 - 256 - 2;

// CLIP's pre-tokenisation regex. `\s` is spelled \p{White_Space}: JS's \s also matches U+FEFF, which Python's
// `regex` and the Rust tokenizers do not treat as whitespace.
const CLIP_PATTERN =
  "<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\p{White_Space}\\p{L}\\p{N}]+";
// GPT-2's regex, which transformers 5's ByteLevel pre-tokenizer (use_regex: true) applies to each CLIP piece.
// It only changes pieces CLIP kept whole though they mix letters and symbols: a literal "<|endoftext|>".
const GPT2_PATTERN =
  "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\p{White_Space}\\p{L}\\p{N}]+|\\p{White_Space}+(?!\\P{White_Space})|\\p{White_Space}+";

/** GPT-2/CLIP's reversible byte → printable character table. */
function bytesToUnicode(): string[] {
  const bs: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) bs.push(b);
  for (let b = 0xa1; b <= 0xac; b++) bs.push(b);
  for (let b = 0xae; b <= 0xff; b++) bs.push(b);
  const table = new Array<string>(256);
  for (const b of bs) table[b] = String.fromCodePoint(b);
  let n = 0;
  for (let b = 0; b < 256; b++) if (table[b] === undefined) table[b] = String.fromCodePoint(256 + n++);
  return table;
}
const BYTE_TO_CHAR = bytesToUnicode();
const CHAR_TO_BYTE = new Map(BYTE_TO_CHAR.map((c, b) => [c, b]));
const utf8 = new TextEncoder();

function declContent(d: TokenDecl | undefined): string | undefined {
  return d === undefined || d === null ? undefined : typeof d === "string" ? d : d.content;
}

/** The characters BERT's BasicTokenizer treats as Chinese ideographs (it puts spaces around them). */
function isCjkIdeograph(cp: number): boolean {
  return (cp >= 0x4e00 && cp <= 0x9fff) || (cp >= 0x3400 && cp <= 0x4dbf) || (cp >= 0x20000 && cp <= 0x2a6df) ||
    (cp >= 0x2a700 && cp <= 0x2b73f) || (cp >= 0x2b740 && cp <= 0x2b81f) || (cp >= 0x2b820 && cp <= 0x2ceaf) ||
    (cp >= 0xf900 && cp <= 0xfaff) || (cp >= 0x2f800 && cp <= 0x2fa1f);
}

const OTHER = /^\p{C}$/u; // Cc, Cf, Cs, Co, Cn
const SPACE_SEPARATOR = /^\p{Zs}$/u;
const WHITESPACE_RUN = /\p{White_Space}+/u;

/** transformers 4.x BasicTokenizer(do_lower_case, strip_accents=False, do_split_on_punc=False).tokenize, joined. */
function basicTokenizerClean(text: string): string {
  let cleaned = "";
  for (const ch of text) {
    const cp = ch.codePointAt(0)!;
    if (ch === "\t" || ch === "\n" || ch === "\r" || ch === " " || SPACE_SEPARATOR.test(ch)) cleaned += " ";
    else if (cp === 0 || cp === 0xfffd || OTHER.test(ch)) continue;
    else if (isCjkIdeograph(cp)) cleaned += ` ${ch} `;
    else cleaned += ch;
  }
  // Lower-casing per whitespace-separated word, like Python's str.lower (context-sensitive final sigma).
  return cleaned.normalize("NFC").split(WHITESPACE_RUN).filter((w) => w.length > 0).map((w) => w.toLowerCase()).join(" ");
}

/** The tokenizers library's Lowercase normalizer: each code point on its own (no final-sigma context). */
function lowerPerCodePoint(text: string): string {
  let out = "";
  for (const ch of text) out += ch.toLowerCase();
  return out;
}

interface AddedToken {
  content: string;
  id: number;
  /** tokenizers flavour: matched after normalisation (true) or on the raw text (false). */
  normalized: boolean;
}

/** Splits `text` at every occurrence of the given tokens (leftmost, longest first); tokens are returned as such. */
function splitOnTokens(text: string, tokens: AddedToken[]): (string | AddedToken)[] {
  if (!tokens.length || !text) return [text];
  const sorted = [...tokens].sort((a, b) => b.content.length - a.content.length);
  const out: (string | AddedToken)[] = [];
  let start = 0;
  let i = 0;
  while (i < text.length) {
    const hit = sorted.find((t) => text.startsWith(t.content, i));
    if (hit) {
      if (i > start) out.push(text.slice(start, i));
      out.push(hit);
      i += hit.content.length;
      start = i;
    } else i++;
  }
  if (start < text.length) out.push(text.slice(start));
  return out;
}

export class CLIPTokenizer {
  readonly flavor: CLIPTokenizerFlavor;
  readonly modelMaxLength: number;
  readonly bosToken: string;
  readonly eosToken: string;
  readonly unkToken: string;
  readonly padToken: string;
  readonly bosTokenId: number;
  readonly eosTokenId: number;
  readonly unkTokenId: number;
  readonly padTokenId: number;
  private readonly encoder: Map<string, number>;
  private readonly decoder: Map<number, string>;
  private readonly ranks: Map<string, number>;
  private readonly added: AddedToken[];
  private readonly cache = new Map<string, string[]>();

  constructor(vocab: Record<string, number>, merges: [string, string][], config: CLIPTokenizerConfig = {},
    opts: CLIPTokenizerOptions = {}) {
    this.flavor = opts.flavor ?? "tokenizers";
    this.encoder = new Map(Object.entries(vocab));
    this.decoder = new Map([...this.encoder].map(([k, v]) => [v, k]));
    const usable = this.flavor === "slow" ? merges.slice(0, SLOW_MAX_MERGES) : merges;
    this.ranks = new Map();
    // A duplicated merge line keeps its last rank in Python's dict(zip(...)); the Rust BPE keeps the first.
    usable.forEach(([a, b], r) => {
      const key = `${a} ${b}`;
      if (this.flavor === "slow" || !this.ranks.has(key)) this.ranks.set(key, r);
    });

    this.bosToken = declContent(config.bos_token) ?? "<|startoftext|>";
    this.eosToken = declContent(config.eos_token) ?? "<|endoftext|>";
    this.unkToken = declContent(config.unk_token) ?? "<|endoftext|>";
    this.padToken = declContent(config.pad_token) ?? "<|endoftext|>";
    const ml = config.model_max_length;
    this.modelMaxLength = typeof ml === "number" && ml > 0 && ml < HUGE_MAX_LENGTH ? ml : CLIP_MAX_LENGTH;
    this.unkTokenId = this.requireId(this.unkToken, "unk_token");
    this.bosTokenId = this.requireId(this.bosToken, "bos_token");
    this.eosTokenId = this.requireId(this.eosToken, "eos_token");
    this.padTokenId = this.requireId(this.padToken, "pad_token");
    this.added = this.addedTokens(config);
    if (this.flavor === "slow") {
      // The slow CLIPTokenizer maps these two strings to themselves (no "</w>") when its regex yields them
      // (e.g. from "<|ENDOFTEXT|>" after lower-casing); the tokenizers flavour splits them further instead.
      this.cache.set("<|startoftext|>", ["<|startoftext|>"]);
      this.cache.set("<|endoftext|>", ["<|endoftext|>"]);
    }
  }

  /** Loads an SD `tokenizer/` folder (vocab.json + merges.txt, or a transformers 5 tokenizer.json). */
  static fromFolder(dir: string, opts: CLIPTokenizerOptions = {}): CLIPTokenizer {
    const read = (name: string): string | undefined => {
      const p = path.join(dir, name);
      return fs.existsSync(p) ? fs.readFileSync(p, "utf8") : undefined;
    };
    const parse = <T>(name: string): T | undefined => {
      const text = read(name);
      if (text === undefined) return undefined;
      try {
        return JSON.parse(text) as T;
      } catch (e) {
        throw new Error(`CLIPTokenizer: ${path.join(dir, name)} is not valid JSON (${(e as Error).message})`);
      }
    };
    const config: CLIPTokenizerConfig = {
      ...(parse<CLIPTokenizerConfig>("special_tokens_map.json") ?? {}),
      ...(parse<CLIPTokenizerConfig>("tokenizer_config.json") ?? {}),
    };
    let vocab = parse<Record<string, number>>("vocab.json");
    const mergesText = read("merges.txt");
    let merges: [string, string][] | undefined;
    if (mergesText !== undefined) {
      // Like transformers: strip the file, drop its first line (the "#version" header), split each line on spaces.
      merges = mergesText.trim().split("\n").slice(1).map((l) => l.split(/\s+/).filter(Boolean))
        .filter((p): p is [string, string] => p.length === 2);
    }
    if (!vocab || !merges) {
      const tj = parse<{ model?: { vocab?: Record<string, number>; merges?: (string | [string, string])[] } }>("tokenizer.json");
      if (tj?.model?.vocab && tj.model.merges) {
        vocab = tj.model.vocab;
        merges = tj.model.merges.map((m) => (typeof m === "string" ? (m.split(" ") as [string, string]) : m));
      }
    }
    if (!vocab || !merges) {
      throw new Error(`CLIPTokenizer: ${dir} has neither vocab.json + merges.txt nor a tokenizer.json with a BPE model`);
    }
    return new CLIPTokenizer(vocab, merges, config, opts);
  }

  get vocabSize(): number {
    return this.encoder.size;
  }

  /** BPE pieces of `text` without BOS/EOS (transformers' `tokenizer.tokenize(text)`). */
  tokens(text: string): string[] {
    const out: string[] = [];
    for (const piece of this.segments(text)) {
      if (typeof piece !== "string") out.push(piece.content);
      else for (const word of this.preTokenize(piece)) out.push(...this.bpe(this.byteEncode(word)));
    }
    return out;
  }

  /** `tokenizer(text, padding="max_length", max_length=77, truncation=True)` by default. */
  encode(text: string, opts: EncodeOptions = {}): Encoding {
    const maxLength = opts.maxLength ?? this.modelMaxLength;
    const truncation = opts.truncation ?? true;
    let ids = this.tokens(text).map((t) => this.encoder.get(t) ?? this.unkTokenId);
    if (truncation && ids.length > maxLength - 2) ids = ids.slice(0, Math.max(0, maxLength - 2));
    const inputIds = [this.bosTokenId, ...ids, this.eosTokenId];
    const enc: Encoding = { inputIds, attentionMask: inputIds.map(() => 1) };
    return (opts.padding ?? "max_length") === "max_length" ? this.pad(enc, maxLength) : enc;
  }

  /** Encodes several texts; padding "longest" pads to the longest of them. */
  encodeBatch(texts: string[], opts: EncodeOptions = {}): Encoding[] {
    const padding = opts.padding ?? "max_length";
    const encs = texts.map((t) => this.encode(t, { ...opts, padding: padding === "max_length" ? "max_length" : false }));
    if (padding !== "longest") return encs;
    const longest = Math.max(0, ...encs.map((e) => e.inputIds.length));
    return encs.map((e) => this.pad(e, longest));
  }

  /** Padded, truncated ids for a batch: the `TokenizerLike` contract of the pipeline and the trainer. */
  tokenize(texts: string[], maxLength: number = this.modelMaxLength): number[][] {
    return texts.map((t) => this.encode(t, { maxLength }).inputIds);
  }

  /** What truncation to `maxLength` cuts off `text` (decoded, as diffusers' encode_prompt shows it), or null. */
  truncatedPart(text: string, maxLength: number = this.modelMaxLength): string | null {
    const ids = this.encode(text, { maxLength, truncation: false, padding: false }).inputIds;
    return ids.length > maxLength ? this.decode(ids.slice(maxLength - 1, -1)) : null;
  }

  /** Ids → text (`</w>` becomes a space); special tokens are dropped unless `skipSpecialTokens` is false. */
  decode(ids: number[], opts: { skipSpecialTokens?: boolean } = {}): string {
    const skip = opts.skipSpecialTokens ?? true;
    const special = new Set([this.bosTokenId, this.eosTokenId, this.padTokenId, this.unkTokenId]);
    const bytes: number[] = [];
    let text = "";
    const flush = () => {
      text += new TextDecoder("utf-8", { fatal: false }).decode(new Uint8Array(bytes));
      bytes.length = 0;
    };
    for (const id of ids) {
      const tok = this.decoder.get(id);
      if (tok === undefined || (skip && special.has(id))) continue;
      if (special.has(id)) {
        flush();
        text += tok;
        continue;
      }
      const word = tok.endsWith("</w>") ? tok.slice(0, -4) : tok;
      for (const ch of word) bytes.push(CHAR_TO_BYTE.get(ch) ?? 0x3f);
      if (word !== tok) bytes.push(0x20);
    }
    flush();
    return text.trim();
  }

  private requireId(token: string, what: string): number {
    const id = this.encoder.get(token);
    if (id === undefined) throw new Error(`CLIPTokenizer: ${what} ${JSON.stringify(token)} is not in the vocabulary`);
    return id;
  }

  /** The special tokens split out of the text before BPE, with the `normalized` flag transformers 5 ends up with. */
  private addedTokens(config: CLIPTokenizerConfig): AddedToken[] {
    const byContent = new Map<string, AddedToken>();
    if (config.added_tokens_decoder) {
      for (const [id, t] of Object.entries(config.added_tokens_decoder)) {
        byContent.set(t.content, { content: t.content, id: Number(id), normalized: t.normalized ?? false });
      }
      return [...byContent.values()];
    }
    // Declared by name: a plain string means normalized false; the flag is false if any declaration says so.
    for (const decl of [config.bos_token, config.eos_token, config.unk_token, config.pad_token]) {
      const content = declContent(decl);
      if (content === undefined) continue;
      const normalized = typeof decl === "object" && decl !== null && decl.normalized === true;
      const prev = byContent.get(content);
      byContent.set(content, { content, id: this.requireId(content, "special token"), normalized: (prev?.normalized ?? true) && normalized });
    }
    for (const content of [this.bosToken, this.eosToken, this.unkToken, this.padToken]) {
      if (!byContent.has(content)) byContent.set(content, { content, id: this.requireId(content, "special token"), normalized: false });
    }
    return [...byContent.values()];
  }

  /** Text → special tokens and (normalised, for the tokenizers flavour) text pieces. */
  private segments(text: string): (string | AddedToken)[] {
    if (this.flavor === "slow") return splitOnTokens(text, this.added);
    const raw = this.added.filter((t) => !t.normalized);
    const norm = this.added.filter((t) => t.normalized);
    const out: (string | AddedToken)[] = [];
    for (const seg of splitOnTokens(text, raw)) {
      if (typeof seg !== "string") out.push(seg);
      else out.push(...splitOnTokens(this.normalize(seg), norm));
    }
    return out;
  }

  /** transformers 5's normalizer: NFC, whitespace runs → " ", lower case. */
  private normalize(text: string): string {
    return lowerPerCodePoint(text.normalize("NFC").replace(new RegExp(WHITESPACE_RUN.source, "gu"), " "));
  }

  /** A text piece → the words BPE runs on. */
  private preTokenize(piece: string): string[] {
    if (this.flavor === "slow") return basicTokenizerClean(piece).match(new RegExp(CLIP_PATTERN, "giu")) ?? [];
    const words: string[] = [];
    for (const w of piece.match(new RegExp(CLIP_PATTERN, "gu")) ?? []) words.push(...(w.match(new RegExp(GPT2_PATTERN, "gu")) ?? []));
    return words;
  }

  private byteEncode(word: string): string {
    let s = "";
    for (const b of utf8.encode(word)) s += BYTE_TO_CHAR[b];
    return s;
  }

  /** Byte-level BPE with "</w>" on the last symbol: repeatedly merge the lowest-ranked adjacent pair. */
  private bpe(token: string): string[] {
    const hit = this.cache.get(token);
    if (hit) return hit;
    const chars = Array.from(token);
    let word = [...chars.slice(0, -1), chars[chars.length - 1] + "</w>"];
    while (word.length > 1) {
      let bestRank = Infinity;
      let first = "";
      let second = "";
      for (let i = 0; i + 1 < word.length; i++) {
        const r = this.ranks.get(`${word[i]} ${word[i + 1]}`);
        if (r !== undefined && r < bestRank) {
          bestRank = r;
          first = word[i]!;
          second = word[i + 1]!;
        }
      }
      if (bestRank === Infinity) break;
      const merged: string[] = [];
      for (let i = 0; i < word.length;) {
        if (i + 1 < word.length && word[i] === first && word[i + 1] === second) {
          merged.push(first + second);
          i += 2;
        } else merged.push(word[i++]!);
      }
      word = merged;
    }
    if (this.cache.size < 100_000) this.cache.set(token, word);
    return word;
  }

  private pad(enc: Encoding, length: number): Encoding {
    const n = length - enc.inputIds.length;
    if (n <= 0) return enc;
    return {
      inputIds: [...enc.inputIds, ...new Array<number>(n).fill(this.padTokenId)],
      attentionMask: [...enc.attentionMask, ...new Array<number>(n).fill(0)],
    };
  }
}
