/**
 * Hugging Face hub access: download model/dataset repos (or the files of them we need) into a local cache, resolve
 * `org/name` or a local path to a folder, and upload a folder. All network traffic goes through `@huggingface/hub`
 * (`modelInfo`/`datasetInfo`, `listFiles`, `downloadFile`, `createRepo`, `uploadFiles`); this module adds the cache,
 * file selection, offline mode, integrity checks and error messages.
 *
 * Cache layout — the same as Python huggingface_hub's, so `scanCacheDir` and Python read it, and the default cache
 * is Python's own (below), so what huggingface_hub/diffusers already downloaded is reused and vice versa:
 *   <cache>/<models|datasets>--<org>--<name>/
 *     refs/<revision>            the commit sha a branch/tag resolved to (last time we were online)
 *     blobs/<etag>               file contents (etag = sha256 for LFS files, else the git blob id)
 *     snapshots/<sha>/<path>     relative symlink to the blob (a copy where symlinks are not allowed)
 *     .trees/<sha>.json          our addition: the file listing of that commit, so a commit revision whose files
 *                                are all cached needs no request at all, and offline mode can tell a missing file
 *                                from one the repo does not have (Python's tools ignore it).
 * Blobs that Python's shared Xet store (`<cache>/blobs/xx/<hash>`) made symlinks are read through the symlink.
 * Cache directory: option `cacheDir`, else $CONTROLNET_TS_HUB_CACHE, else huggingface_hub's constants.HF_HUB_CACHE:
 * $HF_HUB_CACHE, else $HUGGINGFACE_HUB_CACHE, else $HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub
 * (~/.cache/huggingface/hub), with `~` and `$VAR` expanded as Python does. Blobs are written to a temporary name,
 * checked (size, sha256 of LFS files), fsynced and renamed, so an interrupted download never leaves a corrupt file
 * in the cache (and a Python process sharing the cache never sees a partial blob).
 *
 * Token: option `token`, else $HF_TOKEN (or $HUGGING_FACE_HUB_TOKEN), else the token file `hf auth login` /
 * `huggingface-cli login` saved — found as huggingface_hub finds it: $HF_TOKEN_PATH, else $HF_HOME/token, else
 * $XDG_CACHE_HOME/huggingface/token (~/.cache/huggingface/token). It is sent only as an Authorization header by the
 * hub client; it is never logged, never written to disk, and scrubbed from every error message we raise.
 * Offline: option `offline` or $HF_HUB_OFFLINE=1 — only the cache is used; a miss names the repo and file.
 */
import { createHash } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";
import * as hub from "@huggingface/hub";
import { addVariant, holdTemp, writeFileDurable, writerGone } from "./diffusers.js";
import { InputError } from "./input-error.js";
import { makeDirs } from "./dirs.js";

export type HubRepoType = "model" | "dataset";

export interface HubOptions {
  /** Access token; default $HF_TOKEN / $HUGGING_FACE_HUB_TOKEN. */
  token?: string;
  /** Hub base URL; default $HF_ENDPOINT or https://huggingface.co. */
  hubUrl?: string;
  /** Cache directory (see the module comment for the default). */
  cacheDir?: string;
  /** Branch, tag or commit sha; default "main". */
  revision?: string;
  /** Use only the cache; default $HF_HUB_OFFLINE. */
  offline?: boolean;
  /** Repo type when the id has no `datasets/` prefix; default "model". */
  repoType?: HubRepoType;
  /** Replaces global fetch (tests, proxies). */
  fetch?: typeof fetch;
  /** Called as file bytes arrive. */
  onProgress?: (p: DownloadProgress) => void;
  /** Receives the one line saying the cache was used because the hub answered with an error, or that a download
   *  resumes after its connection dropped (default console.warn). */
  warn?: (line: string) => void;
}

export interface DownloadProgress {
  repo: string;
  file: string;
  loaded: number;
  total: number;
}

export interface SnapshotOptions extends HubOptions {
  /** fnmatch-style patterns (`*` also matches `/`; a trailing `/` means the whole folder); default: every file. */
  allowPatterns?: string[];
  ignorePatterns?: string[];
}

/** A hub failure with a message fit to show a user (never containing the token). */
/** The hub could not give what was asked (a repo or file not there, offline, refused): the caller's input or
 *  the network, never a bug to locate — one line, as every InputError. */
export class HubError extends InputError {
  readonly status?: number;
  readonly repo: string;
  readonly file?: string;
  constructor(message: string, repo: string, opts: { status?: number; file?: string } = {}) {
    super(message);
    this.name = "HubError";
    this.repo = repo;
    this.status = opts.status;
    this.file = opts.file;
  }
}

export interface HubRepoRef {
  type: HubRepoType;
  name: string;
  /** "org/name" or "datasets/org/name", for messages. */
  label: string;
}

interface RepoFile {
  path: string;
  size: number;
  etag: string;
  /** sha256 of the content, known for LFS files. */
  sha256?: string;
}

const COMMIT_RE = /^[0-9a-f]{40}$/;
const NAME_PART = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

function envFlag(name: string): boolean {
  return /^(1|true|yes|on)$/i.test(process.env[name] ?? "");
}

export function isHubOffline(opts: { offline?: boolean } = {}): boolean {
  return opts.offline ?? envFlag("HF_HUB_OFFLINE");
}

/** Python's os.path.expanduser for the leading `~`. */
function expandUser(p: string): string {
  return p === "~" || p.startsWith("~/") ? path.join(os.homedir(), p.slice(1)) : p;
}

/** Python's posixpath.expandvars: `$NAME` / `${NAME}` of set variables replaced, others left as written. */
function expandVars(p: string): string {
  return p.includes("$")
    ? p.replace(/\$(\w+|\{[^}]*\})/g, (m, name: string) => process.env[name.startsWith("{") ? name.slice(1, -1) : name] ?? m)
    : p;
}

/** huggingface_hub's constants.HF_HOME: $HF_HOME, else $XDG_CACHE_HOME/huggingface, else ~/.cache/huggingface. */
export function hfHome(): string {
  return expandVars(expandUser(process.env.HF_HOME ?? path.join(process.env.XDG_CACHE_HOME ?? path.join(os.homedir(), ".cache"), "huggingface")));
}

/**
 * The hub cache folder: the option, $CONTROLNET_TS_HUB_CACHE, else huggingface_hub's constants.HF_HUB_CACHE
 * ($HF_HUB_CACHE, else the legacy $HUGGINGFACE_HUB_CACHE, else $HF_HOME/hub), so the models and datasets Python
 * downloaded are reused.
 */
export function hubCacheDir(opts: { cacheDir?: string } = {}): string {
  const python = process.env.HF_HUB_CACHE ?? process.env.HUGGINGFACE_HUB_CACHE;
  return path.resolve(
    opts.cacheDir ?? process.env.CONTROLNET_TS_HUB_CACHE ?? (python !== undefined ? expandVars(expandUser(python)) : path.join(hfHome(), "hub")),
  );
}

/** Where huggingface_hub keeps the login token (constants.HF_TOKEN_PATH). */
export function hfTokenPath(): string {
  return expandVars(expandUser(process.env.HF_TOKEN_PATH ?? path.join(hfHome(), "token")));
}

/** The token huggingface_hub's get_token() would use: the option, the environment, then the login token file. */
export function hubToken(opts: { token?: string } = {}): string | undefined {
  const t = opts.token ?? process.env.HF_TOKEN ?? process.env.HUGGING_FACE_HUB_TOKEN;
  if (t?.trim()) return t.trim();
  const file = hfTokenPath();
  let saved: string;
  try {
    saved = fs.readFileSync(file, "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined; // not logged in
    throw new HubError(`Cannot read the Hugging Face token file ${file} (${(e as NodeJS.ErrnoException).code}); fix its permissions or set HF_TOKEN`, "");
  }
  return saved.trim() || undefined;
}

function hubBaseUrl(opts: { hubUrl?: string }): string {
  return (opts.hubUrl ?? process.env.HF_ENDPOINT ?? hub.HUB_URL).replace(/\/+$/, "");
}

/** Parses `org/name`, `name` or `datasets/org/name`; names are checked because they become cache folder names. */
export function parseRepoId(id: string, repoType: HubRepoType = "model"): HubRepoRef {
  let type = repoType;
  let name = id;
  if (id.startsWith("datasets/")) { type = "dataset"; name = id.slice("datasets/".length); }
  else if (id.startsWith("models/")) { type = "model"; name = id.slice("models/".length); }
  // a path that does not exist reaches here as a "repo id": say what the user meant
  if (/^(\/|\.{1,2}\/|~)/.test(id) || id.includes("\\")) throw new InputError(`"${id}" is not an existing local folder (and a hub repo id is org/name)`);
  const parts = name.split("/");
  if (parts.length < 1 || parts.length > 2 || !parts.every((p) => NAME_PART.test(p) && !p.includes("--") && !p.includes("..") && p.length <= 96)) {
    throw new InputError(`"${id}" is not a hub repo id (expected org/name${type === "dataset" ? " or datasets/org/name" : ""})`);
  }
  return { type, name, label: type === "dataset" ? `datasets/${name}` : name };
}

function checkRevision(revision: string): void {
  if (!revision || revision.startsWith("/") || revision.split("/").some((p) => p === "" || p === "." || p === "..") || revision.includes("\\")) {
    throw new Error(`Invalid hub revision "${revision}"`);
  }
}

/** Rejects listing paths that would escape the snapshot folder (the listing comes from the server). */
function checkRepoPath(p: string, repo: string): void {
  if (!p || p.startsWith("/") || p.includes("\\") || p.split("/").some((s) => s === "" || s === "." || s === "..")) {
    throw new HubError(`Hub repo ${repo} lists an unsafe file path ${JSON.stringify(p)}; refusing to download it`, repo);
  }
}

function repoDir(cache: string, r: HubRepoRef): string {
  return path.join(cache, `${r.type}s--${r.name.split("/").join("--")}`);
}

/** Python's fnmatch rule for hub patterns, on top of the hub client's own `*` matcher. */
function matches(p: string, patterns: string[]): boolean {
  return patterns.some((pat) => hub.globMatch(pat.endsWith("/") ? `${pat}*` : pat, p));
}

function scrub(text: string, token: string | undefined): string {
  return token ? text.split(token).join("hf_***") : text;
}

/** Turns any failure of a hub call into a HubError that says what to do, without the token. */
function explain(e: unknown, ctx: { repo: HubRepoRef; revision: string; file?: string; token?: string; hubUrl: string; upload?: boolean }): HubError {
  if (e instanceof HubError) return e;
  const what = ctx.file ? `file "${ctx.file}" of hub ${ctx.repo.type} repo ${ctx.repo.label} (revision ${ctx.revision})` : `hub ${ctx.repo.type} repo ${ctx.repo.label} (revision ${ctx.revision})`;
  const detail = scrub(e instanceof Error ? e.message : String(e), ctx.token);
  const status = e instanceof hub.HubApiError ? e.statusCode : undefined;
  let msg: string;
  if (status === 401) {
    msg = ctx.token
      ? `Cannot access ${what}: the hub rejected the token (HTTP 401). Check that HF_TOKEN is valid and can read this repo, and that the repo id is right.`
      : `Cannot access ${what}: authentication required (HTTP 401). The repo may be private or gated, or may not exist; set HF_TOKEN (or pass token) if you have access.`;
  } else if (status === 403) {
    msg = `Access to ${what} is forbidden (HTTP 403): the repo is gated (accept its conditions on the hub website) or the token lacks read permission.`;
  } else if (status === 404) {
    msg = `Not found on the hub (HTTP 404): ${what}. Check the repo id, the revision${ctx.file ? " and the file name" : ""}.`;
  } else if (status !== undefined) {
    msg = `Hub request for ${what} failed with HTTP ${status}.`;
  } else if (/access token must start with/.test(detail)) {
    msg = `The hub token (HF_TOKEN or token option) is not a Hugging Face access token: it must start with "hf_".`;
  } else if (ctx.file) {
    msg = `Download of ${what} from ${ctx.hubUrl} failed: ${detail}`;
    return new HubError(msg, ctx.repo.label, { file: ctx.file });
  } else {
    // (the cache helps a download, never a repo creation or an upload)
    msg = `Cannot reach the hub at ${ctx.hubUrl} for ${what}: ${detail}.` +
      (isHubOffline() || ctx.upload ? "" : " Set HF_HUB_OFFLINE=1 to use only the local cache.");
    return new HubError(msg, ctx.repo.label, { file: ctx.file });
  }
  return new HubError(`${msg} (${detail})`, ctx.repo.label, { status, file: ctx.file });
}

function isNetworkFailure(e: unknown): boolean {
  return !(e instanceof hub.HubApiError) && !(e instanceof HubError) && e instanceof Error && /fetch failed|ECONNREFUSED|ENOTFOUND|EAI_AGAIN|ETIMEDOUT|ECONNRESET/i.test(`${e.message} ${(e as { cause?: Error }).cause?.message ?? ""}`);
}

interface Ctx {
  repo: HubRepoRef;
  /** The id as the caller gave it (a mistyped local path reads as one). */
  typed: string;
  revision: string;
  token?: string;
  hubUrl: string;
  cache: string;
  dir: string;
  offline: boolean;
  fetch?: typeof fetch;
  onProgress?: (p: DownloadProgress) => void;
  warn: (line: string) => void;
}

function makeCtx(repoId: string, opts: HubOptions): Ctx {
  const repo = parseRepoId(repoId, opts.repoType);
  const revision = opts.revision ?? "main";
  checkRevision(revision);
  const cache = hubCacheDir(opts);
  return {
    repo, typed: repoId, revision, token: hubToken(opts), hubUrl: hubBaseUrl(opts), cache, dir: repoDir(cache, repo),
    offline: isHubOffline(opts), fetch: opts.fetch, onProgress: opts.onProgress, warn: opts.warn ?? console.warn,
  };
}

function clientParams(ctx: Ctx) {
  return { hubUrl: ctx.hubUrl, fetch: ctx.fetch, ...(ctx.token ? { accessToken: ctx.token } : {}) };
}

function readTree(ctx: Ctx, sha: string): RepoFile[] | undefined {
  try {
    return JSON.parse(fs.readFileSync(path.join(ctx.dir, ".trees", `${sha}.json`), "utf8")) as RepoFile[];
  } catch {
    return undefined;
  }
}

function writeAtomic(file: string, text: string): void {
  makeDirs(path.dirname(file));
  const tmp = `${file}.tmp-${process.pid}-${Math.random().toString(36).slice(2)}`;
  writeFileDurable(tmp, text);
  fs.renameSync(tmp, file);
}

/** Files present in a cached snapshot folder (used offline when no listing was saved, e.g. a Python-made cache). */
function walkSnapshot(root: string): RepoFile[] {
  const out: RepoFile[] = [];
  const walk = (rel: string) => {
    for (const e of fs.readdirSync(path.join(root, rel), { withFileTypes: true })) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) walk(r);
      else out.push({ path: r, size: -1, etag: "" });
    }
  };
  if (fs.existsSync(root)) walk("");
  return out;
}

/** The commit sha and file listing for ctx.revision: from the cache when possible or required, else from the hub. */
async function resolveSnapshot(ctx: Ctx): Promise<{ sha: string; files: RepoFile[]; fromCache: boolean }> {
  const cached = (): { sha: string; files: RepoFile[] } | undefined => {
    let sha = ctx.revision;
    if (!COMMIT_RE.test(sha)) {
      try { sha = fs.readFileSync(path.join(ctx.dir, "refs", ctx.revision), "utf8").trim(); } catch { return undefined; }
    }
    const files = readTree(ctx, sha) ?? walkSnapshot(path.join(ctx.dir, "snapshots", sha));
    return files.length || fs.existsSync(path.join(ctx.dir, "snapshots", sha)) ? { sha, files } : undefined;
  };
  const missMessage = (why: string) =>
    `${why}: hub ${ctx.repo.type} repo ${ctx.repo.label} (revision ${ctx.revision}) is not in the cache at ${ctx.cache}. ` +
    `Download it once while online${ctx.offline ? " (unset HF_HUB_OFFLINE)" : ""}, or pass a local folder ` +
    // (a mistyped local path reads as a hub id: say that it is not a folder either)
    `(there is none at ${path.resolve(ctx.typed)}).`;

  if (ctx.offline) {
    const c = cached();
    if (!c) throw new HubError(missMessage("Offline mode (HF_HUB_OFFLINE)"), ctx.repo.label);
    return { ...c, fromCache: true };
  }
  // A commit never changes: when its listing is cached there is nothing to ask the hub.
  if (COMMIT_RE.test(ctx.revision)) {
    const files = readTree(ctx, ctx.revision);
    if (files) return { sha: ctx.revision, files, fromCache: true };
  }
  try {
    const info = ctx.repo.type === "dataset"
      ? await hub.datasetInfo({ name: ctx.repo.name, revision: ctx.revision, additionalFields: ["sha"], ...clientParams(ctx) })
      : await hub.modelInfo({ name: ctx.repo.name, revision: ctx.revision, additionalFields: ["sha"], ...clientParams(ctx) });
    const sha = (info as { sha?: string }).sha;
    if (!sha || !COMMIT_RE.test(sha)) throw new HubError(`Hub answered without a commit sha for ${ctx.repo.label} (revision ${ctx.revision})`, ctx.repo.label);
    if (sha !== ctx.revision) writeAtomic(path.join(ctx.dir, "refs", ctx.revision), sha);
    let files = readTree(ctx, sha);
    if (!files) {
      files = [];
      for await (const e of hub.listFiles({ repo: { type: ctx.repo.type, name: ctx.repo.name }, recursive: true, revision: sha, ...clientParams(ctx) })) {
        if (e.type !== "file") continue;
        checkRepoPath(e.path, ctx.repo.label);
        const etag = e.lfs?.oid ?? e.xetHash ?? e.oid;
        if (!etag || !/^[0-9a-f]{6,128}$/i.test(etag)) throw new HubError(`Hub listing of ${ctx.repo.label} has no usable id for ${e.path}`, ctx.repo.label);
        files.push({ path: e.path, size: e.size, etag, ...(e.lfs?.oid ? { sha256: e.lfs.oid } : {}) });
      }
      writeAtomic(path.join(ctx.dir, ".trees", `${sha}.json`), JSON.stringify(files));
    }
    return { sha, files, fromCache: false };
  } catch (e) {
    // Like huggingface_hub: when the hub cannot be reached at all, fall back to what is cached.
    if (isNetworkFailure(e)) {
      const c = cached();
      if (c) return { ...c, fromCache: true };
      throw new HubError(missMessage(`Cannot reach the hub at ${ctx.hubUrl} (${scrub((e as Error).message, ctx.token)})`), ctx.repo.label);
    }
    // …and when it answers with an error (down: 5xx; a token it no longer takes: 401/403), as snapshot_download does —
    // but not for a 404 (a revision or repo that is not there: huggingface_hub raises RevisionNotFoundError), saying so
    const status = e instanceof hub.HubApiError ? e.statusCode : undefined;
    const c = status !== undefined && status !== 404 ? cached() : undefined;
    if (c) {
      ctx.warn(`warning: ${explain(e, ctx).message} Using the cached snapshot ${c.sha.slice(0, 12)} of ${ctx.repo.label} instead.`);
      return { ...c, fromCache: true };
    }
    throw explain(e, ctx);
  }
}

/** Makes snapshots/<sha>/<file> exist, downloading the blob if needed; returns its path. */
async function ensureFile(ctx: Ctx, sha: string, f: RepoFile): Promise<string> {
  const pointer = path.join(ctx.dir, "snapshots", sha, ...f.path.split("/"));
  if (fs.existsSync(pointer)) return pointer;
  if (ctx.offline || !f.etag) {
    throw new HubError(
      `Offline mode (HF_HUB_OFFLINE): file "${f.path}" of hub ${ctx.repo.type} repo ${ctx.repo.label} (revision ${ctx.revision}) is not in the cache at ${ctx.cache}.`,
      ctx.repo.label, { file: f.path },
    );
  }
  const blob = path.join(ctx.dir, "blobs", f.etag);
  if (!fs.existsSync(blob)) await downloadBlob(ctx, sha, f, blob);
  makeDirs(path.dirname(pointer));
  const tmp = `${pointer}.tmp-${process.pid}`;
  fs.rmSync(tmp, { force: true });
  try {
    fs.symlinkSync(path.relative(path.dirname(pointer), blob), tmp);
  } catch {
    fs.copyFileSync(blob, tmp);
  }
  fs.renameSync(tmp, pointer);
  return pointer;
}

/** Attempts at one file whose connection drops mid-way, each resuming where the bytes on disk end (huggingface_hub's
 *  http_get: 5, a second apart). */
const DOWNLOAD_ATTEMPTS = 5;
const RETRY_DELAY_MS = 1000;

/** This machine's name as part of a file name (a cache shared between machines: only this one's files are judged). */
const HOST = os.hostname().replace(/[^A-Za-z0-9_]/g, "_").slice(0, 64) || "host";

/** A connection that ended before the file did (not an HTTP answer, which says why in its status). */
class CutShort extends Error {}
function isDropped(e: unknown): boolean {
  if (e instanceof CutShort || isNetworkFailure(e)) return true;
  const text = e instanceof Error ? `${e.message} ${(e as { cause?: Error }).cause?.message ?? ""}` : String(e);
  return !(e instanceof HubError) && !(e instanceof hub.HubApiError) && /terminated|other side closed|socket|EPIPE|aborted/i.test(text);
}

/**
 * The blob's temporary file, `blobs/<etag>.<host>-<pid>-<random>.incomplete` (huggingface_hub's scan_cache_dir and
 * `hf cache prune` see `*.incomplete` files), holding what a process of this machine that is gone (a kill -9, a
 * dropped connection it gave up on) downloaded of the same blob, if one did: the largest such file is taken over by a
 * rename (of two processes, one gets it) and resumed; the others are removed. (This process's own: those it is not
 * writing any more.)
 */
function claimIncomplete(blobPath: string): { tmp: string; release: () => void } {
  const tmp = `${blobPath}.${HOST}-${process.pid}-${Math.random().toString(36).slice(2, 10)}.incomplete`;
  const dir = path.dirname(blobPath);
  const own = new RegExp(`^${path.basename(blobPath)}\\.${HOST}-(\\d+)-[a-z0-9]+\\.incomplete$`);
  const left: { file: string; size: number }[] = [];
  for (const name of fs.readdirSync(dir)) {
    const m = own.exec(name);
    if (!m || !writerGone(Number(m[1]), path.join(dir, name))) continue;
    try {
      left.push({ file: path.join(dir, name), size: fs.statSync(path.join(dir, name)).size });
    } catch { /* another process took it */ }
  }
  const release = holdTemp(tmp);
  left.sort((a, b) => b.size - a.size);
  let claimed = false;
  for (const l of left) {
    try {
      if (!claimed) {
        fs.renameSync(l.file, tmp);
        claimed = true;
      } else fs.rmSync(l.file);
    } catch { /* another process took it */ }
  }
  return { tmp, release };
}

async function downloadBlob(ctx: Ctx, sha: string, f: RepoFile, blobPath: string): Promise<void> {
  const ectx = { ...ctx, file: f.path };
  makeDirs(path.dirname(blobPath));
  const { tmp, release } = claimIncomplete(blobPath);
  let fh: fs.promises.FileHandle | undefined;
  let loaded = 0;
  try {
    const blob = await hub.downloadFile({ repo: { type: ctx.repo.type, name: ctx.repo.name }, path: f.path, revision: sha, ...clientParams(ctx) });
    if (!blob) throw new HubError(`Not found on the hub (HTTP 404): file "${f.path}" of ${ctx.repo.label} (revision ${ctx.revision})`, ctx.repo.label, { status: 404, file: f.path });
    const total = f.size >= 0 ? f.size : blob.size;
    const hash = f.sha256 ? createHash("sha256") : undefined;
    fh = await fs.promises.open(tmp, "a+");
    // what an earlier process left (claimIncomplete) counts, unless it is longer than the file
    if ((await fh.stat()).size > total) await fh.truncate(0);
    for await (const chunk of fh.createReadStream({ start: 0, autoClose: false }) as AsyncIterable<Buffer>) {
      hash?.update(chunk);
      loaded += chunk.length;
    }
    for (let attempt = 1; ; attempt++) {
      try {
        for await (const chunk of (loaded ? blob.slice(loaded) : blob).stream() as unknown as AsyncIterable<Uint8Array>) {
          await fh.write(chunk);
          hash?.update(chunk);
          loaded += chunk.length;
          ctx.onProgress?.({ repo: ctx.repo.label, file: f.path, loaded, total });
        }
        if (loaded < total) throw new CutShort(`the connection ended after ${loaded} of ${total} bytes`);
        break;
      } catch (e) {
        if (attempt >= DOWNLOAD_ATTEMPTS || !isDropped(e)) throw e;
        ctx.warn(`warning: the download of "${f.path}" from ${ctx.repo.label} stopped at ${loaded} of ${total} bytes ` +
          `(${scrub(e instanceof Error ? e.message : String(e), ctx.token)}); resuming there (attempt ${attempt + 1} of ${DOWNLOAD_ATTEMPTS})`);
        await new Promise((r) => setTimeout(r, RETRY_DELAY_MS));
      }
    }
    await fh.sync();
    await fh.close();
    fh = undefined;
    if (loaded !== total) {
      throw new HubError(`Download of "${f.path}" from ${ctx.repo.label} is longer than the hub lists: got ${loaded} of ${total} bytes`, ctx.repo.label, { file: f.path });
    }
    if (hash && hash.digest("hex") !== f.sha256) {
      throw new HubError(`Download of "${f.path}" from ${ctx.repo.label} is corrupt: its sha256 differs from the hub's`, ctx.repo.label, { file: f.path });
    }
    fs.renameSync(tmp, blobPath);
  } catch (e) {
    await fh?.close().catch(() => undefined);
    if (isDropped(e) && loaded > 0) {
      // kept, as huggingface_hub keeps its .incomplete file: the next run resumes from it
      throw new HubError(`Download of file "${f.path}" of hub ${ctx.repo.type} repo ${ctx.repo.label} from ${ctx.hubUrl} failed: ` +
        `the transfer stopped early ${DOWNLOAD_ATTEMPTS} times (${scrub(e instanceof Error ? e.message : String(e), ctx.token)}); ` +
        `the ${loaded} of ${f.size >= 0 ? f.size : "?"} bytes received are kept in the cache and the next run resumes from them.`, ctx.repo.label, { file: f.path });
    }
    fs.rmSync(tmp, { force: true });
    throw explain(e, ectx);
  } finally {
    release();
  }
}

/**
 * Downloads a repo at a revision (every file, or those matching the patterns) into the cache and returns the
 * snapshot folder. Files already cached are not downloaded again.
 */
export async function snapshotDownload(repo: string, opts: SnapshotOptions = {}): Promise<string> {
  const ctx = makeCtx(repo, opts);
  const { sha, files } = await resolveSnapshot(ctx);
  const selected = files.filter((f) => (!opts.allowPatterns || matches(f.path, opts.allowPatterns)) && !(opts.ignorePatterns && matches(f.path, opts.ignorePatterns)));
  if (opts.allowPatterns && selected.length === 0) {
    throw new HubError(`No file of hub repo ${ctx.repo.label} (revision ${ctx.revision}) matches ${opts.allowPatterns.join(", ")}`, ctx.repo.label);
  }
  for (const f of selected) await ensureFile(ctx, sha, f);
  const dir = path.join(ctx.dir, "snapshots", sha);
  makeDirs(dir);
  return dir;
}

/** Downloads one file of a repo into the cache and returns its local path. */
export async function hubDownload(repo: string, file: string, opts: HubOptions = {}): Promise<string> {
  const ctx = makeCtx(repo, opts);
  const { sha, files } = await resolveSnapshot(ctx);
  const f = files.find((x) => x.path === file);
  if (!f) {
    throw new HubError(
      ctx.offline
        ? `Offline mode (HF_HUB_OFFLINE): file "${file}" of hub ${ctx.repo.type} repo ${ctx.repo.label} (revision ${ctx.revision}) is not in the cache at ${ctx.cache}.`
        : `Hub ${ctx.repo.type} repo ${ctx.repo.label} (revision ${ctx.revision}) has no file "${file}"`,
      ctx.repo.label, { file },
    );
  }
  return ensureFile(ctx, sha, f);
}

export interface ResolveModelOptions extends HubOptions {
  /** Weights variant, e.g. "fp16" (falls back to the plain weights per folder where the variant is absent). */
  variant?: string;
  /** A folder inside the repo holding the model, e.g. "controlnet". */
  subfolder?: string;
  /** Pipeline components to fetch; default every component except safety_checker and feature_extractor. */
  components?: string[];
  /** Download exactly these patterns instead of the automatic selection. */
  allowPatterns?: string[];
}

const SKIPPED_COMPONENTS = new Set(["safety_checker", "feature_extractor"]);
const CONFIG_FILE = /\.(json|txt|model)$/;

function weightFileRe(variant?: string): RegExp {
  const v = variant ? `\\.${variant.replace(/[^A-Za-z0-9_-]/g, "")}` : "";
  return new RegExp(`^(diffusion_pytorch_model|model)${v}(-\\d{5}-of-\\d{5})?\\.safetensors$`);
}

/**
 * A local folder for a model: `nameOrPath` if it exists locally, else the hub repo `org/name` downloaded into the
 * cache. From the hub only what a diffusers/transformers loader reads is fetched: config/tokenizer files
 * (*.json, *.txt) and the safetensors weights of the chosen variant — never pickles, single-file checkpoints
 * (v1-5-pruned.safetensors) or ONNX/Flax copies. For a pipeline repo (model_index.json), only its components'
 * folders. Returns the snapshot folder (joined with `subfolder` if given).
 */
export async function resolveModel(nameOrPath: string, opts: ResolveModelOptions = {}): Promise<string> {
  const local = nameOrPath.startsWith("~/") ? path.join(os.homedir(), nameOrPath.slice(2)) : nameOrPath;
  if (fs.existsSync(local)) return path.resolve(local, opts.subfolder ?? "");
  if (/^(\.{0,2}\/|~)/.test(nameOrPath) || path.isAbsolute(nameOrPath)) throw new InputError(`Local model path not found: ${nameOrPath}`);
  let ctx: Ctx;
  try {
    ctx = makeCtx(nameOrPath, opts);
  } catch {
    throw new InputError(`"${nameOrPath}" is neither an existing local path nor a hub repo id (org/name)`);
  }
  if (opts.subfolder) checkRepoPath(opts.subfolder, ctx.repo.label);
  const { sha, files } = await resolveSnapshot(ctx);
  const snapshot = path.join(ctx.dir, "snapshots", sha);
  const prefix = opts.subfolder ? `${opts.subfolder.replace(/\/+$/, "")}/` : "";
  let selected: RepoFile[];
  if (opts.allowPatterns) {
    selected = files.filter((f) => matches(f.path, opts.allowPatterns!));
  } else {
    const inScope = files.filter((f) => f.path.startsWith(prefix));
    const indexFile = inScope.find((f) => f.path === `${prefix}model_index.json`);
    let folders: Set<string> | undefined;
    if (indexFile) {
      const index = JSON.parse(fs.readFileSync(await ensureFile(ctx, sha, indexFile), "utf8")) as Record<string, unknown>;
      const all = Object.entries(index).filter(([k, v]) => !k.startsWith("_") && Array.isArray(v) && v[1] !== null).map(([k]) => k);
      folders = new Set(opts.components ?? all.filter((c) => !SKIPPED_COMPONENTS.has(c)));
    }
    const keep = (f: RepoFile): boolean => {
      const rel = f.path.slice(prefix.length);
      const parts = rel.split("/");
      if (folders) {
        // Pipeline: root-level json (model_index.json) plus files inside the chosen component folders.
        if (parts.length === 1) return CONFIG_FILE.test(rel) && rel.endsWith(".json");
        if (!folders.has(parts[0]!)) return false;
      }
      return true;
    };
    const candidates = inScope.filter(keep);
    const byFolder = new Map<string, RepoFile[]>();
    for (const f of candidates) {
      const d = path.posix.dirname(f.path);
      if (!byFolder.has(d)) byFolder.set(d, []);
      byFolder.get(d)!.push(f);
    }
    selected = [];
    for (const group of byFolder.values()) {
      const base = (f: RepoFile) => path.posix.basename(f.path);
      selected.push(...group.filter((f) => CONFIG_FILE.test(base(f))));
      let weights = opts.variant ? group.filter((f) => weightFileRe(opts.variant).test(base(f))) : [];
      if (!weights.length) weights = group.filter((f) => weightFileRe().test(base(f)));
      selected.push(...weights);
    }
    if (!selected.some((f) => f.path.endsWith(".safetensors")) && !indexFile) {
      const pickles = inScope.filter((f) => /\.(bin|ckpt|pt|pth)$/.test(f.path)).map((f) => f.path);
      throw new HubError(
        `Hub repo ${ctx.repo.label}${prefix ? `/${prefix}` : ""} (revision ${ctx.revision}) has no safetensors weights ` +
          `(${addVariant("diffusion_pytorch_model.safetensors", opts.variant)} or model.safetensors)` +
          (pickles.length ? `; it only has pickle checkpoints (${pickles.join(", ")}), which controlnet-ts never loads because unpickling runs code — convert them with diffusers' save_pretrained(dir, safe_serialization=True)` : ""),
        ctx.repo.label,
      );
    }
  }
  for (const f of selected) await ensureFile(ctx, sha, f);
  makeDirs(snapshot);
  return path.join(snapshot, prefix);
}

const LOGIN_HINT = "log in with `hf auth login` (or `huggingface-cli login`), set HF_TOKEN, or pass a token (--hub_token on the command line, `token` in code)";

export interface CreateRepoOptions {
  token?: string;
  hubUrl?: string;
  repoType?: HubRepoType;
  private?: boolean;
  fetch?: typeof fetch;
}

/**
 * huggingface_hub's `create_repo(repo_id, exist_ok=True)`: a bare `name` goes under the token's user (asked with
 * whoami, as the hub does for a name without namespace); a repo that exists already is fine. Returns the full id.
 * The training script calls it before training, so a missing or rejected token fails in seconds, not after hours.
 */
export async function createRepo(repo: string, opts: CreateRepoOptions = {}): Promise<{ repoId: string; url: string; created: boolean }> {
  const bare = parseRepoId(repo, opts.repoType);
  const token = hubToken(opts);
  const hubUrl = hubBaseUrl(opts);
  if (!token) throw new HubError(`Creating hub repo ${bare.label} needs a token: ${LOGIN_HINT}`, bare.label);
  if (isHubOffline()) throw new HubError(`Creating hub repo ${bare.label} needs the hub, and HF_HUB_OFFLINE is set (unset it to push)`, bare.label);
  const params = { hubUrl, fetch: opts.fetch, accessToken: token };
  let r = bare;
  try {
    if (!bare.name.includes("/")) r = parseRepoId(`${(await hub.whoAmI(params)).name}/${bare.name}`, bare.type);
    try {
      await hub.createRepo({ repo: { type: r.type, name: r.name }, private: opts.private, ...params });
      return { repoId: r.name, url: `${hubUrl}/${r.type === "dataset" ? "datasets/" : ""}${r.name}`, created: true };
    } catch (e) {
      if (!(e instanceof hub.HubApiError && e.statusCode === 409)) throw e; // 409: it exists already (exist_ok)
      return { repoId: r.name, url: `${hubUrl}/${r.type === "dataset" ? "datasets/" : ""}${r.name}`, created: false };
    }
  } catch (e) {
    if (e instanceof hub.HubApiError && e.statusCode === 403) {
      throw new HubError(`The token may not create hub ${r.type} repo ${r.label} (HTTP 403): use a namespace the token's user belongs to, or a token with write access.`, r.label, { status: 403 });
    }
    if (e instanceof hub.HubApiError && e.statusCode === 401) {
      throw new HubError(`The hub rejected the token (HTTP 401) while creating ${r.type} repo ${r.label}; use a valid token with write access: ${LOGIN_HINT}.`, r.label, { status: 401 });
    }
    throw explain(e, { repo: r, revision: "main", token, hubUrl, upload: true });
  }
}

export interface UploadFolderOptions {
  token?: string;
  hubUrl?: string;
  repoType?: HubRepoType;
  /** Branch to commit to; default "main". */
  branch?: string;
  commitMessage?: string;
  /** Files to skip (fnmatch-style, relative paths), e.g. ["checkpoint-*", "step_*", "epoch_*"]. */
  ignorePatterns?: string[];
  /** Create the repo first if needed (default true). */
  createRepo?: boolean;
  private?: boolean;
  fetch?: typeof fetch;
}

/** Uploads every file under `dir` (except ignored and hidden ones) to the repo in one commit; returns the commit. */
export async function uploadFolder(repo: string, dir: string, opts: UploadFolderOptions = {}): Promise<{ commit: string; url: string }> {
  const r = parseRepoId(repo, opts.repoType);
  const token = hubToken(opts);
  const hubUrl = hubBaseUrl(opts);
  const ctx = { repo: r, revision: opts.branch ?? "main", token, hubUrl };
  if (!token) throw new HubError(`Uploading to hub repo ${r.label} needs a token: ${LOGIN_HINT}`, r.label);
  if (r.name.split("/").length !== 2) throw new HubError(`Upload needs a full repo id org/name, got "${repo}"`, r.label);
  const files: { path: string; content: URL }[] = [];
  const walk = (rel: string) => {
    for (const e of fs.readdirSync(path.join(dir, rel), { withFileTypes: true })) {
      const p = rel ? `${rel}/${e.name}` : e.name;
      // Hidden entries are our temp files/folders and VCS data.
      if (e.name.startsWith(".") || (opts.ignorePatterns && matches(p, opts.ignorePatterns))) continue;
      if (e.isDirectory()) walk(p);
      else if (e.isFile()) files.push({ path: p, content: pathToFileURL(path.join(dir, p)) });
    }
  };
  walk("");
  if (!files.length) throw new HubError(`Nothing to upload: ${dir} has no files`, r.label);
  const params = { hubUrl, fetch: opts.fetch, accessToken: token };
  try {
    if (opts.createRepo !== false) {
      try {
        await hub.createRepo({ repo: { type: r.type, name: r.name }, private: opts.private, ...params });
      } catch (e) {
        if (!(e instanceof hub.HubApiError && e.statusCode === 409)) throw e; // 409: it exists already
      }
    }
    const out = await hub.uploadFiles({
      repo: { type: r.type, name: r.name },
      files,
      branch: opts.branch,
      commitTitle: opts.commitMessage ?? `Upload ${files.length} files with controlnet-ts`,
      ...params,
    });
    return { commit: out?.commit.oid ?? "", url: out?.commit.url ?? "" };
  } catch (e) {
    throw explain(e, { ...ctx, upload: true });
  }
}

