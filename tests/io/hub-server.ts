/**
 * A hub-shaped HTTP server on 127.0.0.1 for tests: just the endpoints @huggingface/hub calls for the functions
 * lib/io/hub.ts uses, with the hub's status codes and X-Error-Code headers.
 *
 *   GET  /api/whoami-v2                                          whoAmI (the user of a token added with addUser)
 *   GET  /api/{models|datasets}/{org}/{name}/revision/{rev}      modelInfo / datasetInfo (→ sha)
 *   GET  /api/{models|datasets}/{org}/{name}/tree/{rev}[/{path}] listFiles (recursive)
 *   GET  /[datasets/]{org}/{name}/resolve/{rev}/{path}           downloadFile (a Range: bytes=0-0 probe, then the body)
 *   POST /api/repos/create                                       createRepo
 *   POST /api/{type}s/{org}/{name}/preupload/{branch}            commit: which files go to LFS
 *   POST /[datasets/]{org}/{name}.git/info/lfs/objects/batch     commit: LFS upload actions ("basic" transfer)
 *   PUT  /__lfs/{oid}                                            commit: LFS object upload
 *   POST /api/{type}s/{org}/{name}/commit/{branch}               commit: the ndjson commit
 *
 * Repos live in memory; `addRepoFromDir` loads fixture files written to a temp dir. Every request is recorded.
 */
import { createHash } from "node:crypto";
import fs from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";

type Files = Map<string, Buffer>;

interface Repo {
  type: "model" | "dataset";
  name: string;
  private: boolean;
  gated: boolean;
  commits: Map<string, Files>;
  refs: Map<string, string>;
}

export interface RecordedRequest {
  method: string;
  url: string;
  authorization?: string;
  range?: string;
}

/** Files at or above this size, and *.safetensors, are stored as LFS (with a sha256 oid). */
const LFS_MIN = 1024;

function gitOid(content: Buffer): string {
  return createHash("sha1").update(`blob ${content.length}\0`).update(content).digest("hex");
}
function sha256(content: Buffer): string {
  return createHash("sha256").update(content).digest("hex");
}
function isLfs(p: string, content: Buffer): boolean {
  return content.length >= LFS_MIN || p.endsWith(".safetensors");
}

export class HubServer {
  readonly requests: RecordedRequest[] = [];
  /** Tokens the server accepts. */
  readonly tokens = new Set<string>();
  /** Token → its user and orgs (addUser). Such a token may create repos only in those namespaces; a token in
   *  `tokens` without a user may create anywhere. */
  readonly users = new Map<string, { name: string; orgs: string[] }>();
  /** When set, error bodies repeat the Authorization header (a hostile/buggy server) to test scrubbing. */
  echoAuthInErrors = false;
  /** When set, commits are answered with this HTTP status (an upload that fails after the repo was created). */
  failCommitsWith?: number;
  /** When set, file bodies are passed through it (to serve corrupt or truncated downloads). */
  tamper?: (path: string, content: Buffer) => Buffer;
  /** When set, the next `times` file bodies longer than `after` bytes stop there: the connection is destroyed after
   *  the headers promised the whole body (a dropped connection mid-file). */
  cutDownloads?: { after: number; times: number };
  /** When set, GET /api/… (repo info, listings) is answered with this HTTP status (a hub that is down). */
  failApiWith?: number;
  private repos = new Map<string, Repo>();
  private lfs = new Map<string, Buffer>();
  private server = http.createServer((req, res) => void this.handle(req, res));
  private commitCounter = 0;
  url = "";

  async start(): Promise<this> {
    await new Promise<void>((resolve) => this.server.listen(0, "127.0.0.1", resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this;
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  /** A token belonging to a user (whoami answers with it). */
  addUser(token: string, name: string, orgs: string[] = []): this {
    this.tokens.add(token);
    this.users.set(token, { name, orgs });
    return this;
  }

  private key(type: string, name: string): string {
    return `${type}:${name}`;
  }

  /** Adds (or extends) a repo with a commit holding `files`, pointing `branch` at it; returns the commit sha. */
  addRepo(
    id: string,
    files: Record<string, Buffer | string>,
    opts: { type?: "model" | "dataset"; branch?: string; private?: boolean; gated?: boolean } = {},
  ): string {
    const type = opts.type ?? "model";
    const k = this.key(type, id);
    let repo = this.repos.get(k);
    if (!repo) {
      repo = { type, name: id, private: !!opts.private, gated: !!opts.gated, commits: new Map(), refs: new Map() };
      this.repos.set(k, repo);
    }
    const map: Files = new Map(Object.entries(files).map(([p, c]) => [p, Buffer.isBuffer(c) ? c : Buffer.from(c)]));
    return this.addCommit(repo, map, opts.branch ?? "main");
  }

  /** Adds a repo commit from a fixture folder on disk (every file, recursively). */
  addRepoFromDir(id: string, dir: string, opts: Parameters<HubServer["addRepo"]>[2] = {}): string {
    const files: Record<string, Buffer> = {};
    const walk = (rel: string) => {
      for (const e of fs.readdirSync(path.join(dir, rel), { withFileTypes: true })) {
        const p = rel ? `${rel}/${e.name}` : e.name;
        if (e.isDirectory()) walk(p);
        else files[p] = fs.readFileSync(path.join(dir, p));
      }
    };
    walk("");
    return this.addRepo(id, files, opts);
  }

  /** The files of a branch or commit (for asserting uploads). */
  filesAt(id: string, revision = "main", type: "model" | "dataset" = "model"): Map<string, Buffer> | undefined {
    const repo = this.repos.get(this.key(type, id));
    if (!repo) return undefined;
    return repo.commits.get(repo.refs.get(revision) ?? revision);
  }

  private addCommit(repo: Repo, files: Files, branch: string): string {
    const h = createHash("sha1").update(`${repo.name}\n${branch}\n${this.commitCounter++}\n`);
    for (const [p, c] of [...files].sort()) h.update(`${p}\0${gitOid(c)}\n`);
    const sha = h.digest("hex");
    repo.commits.set(sha, files);
    repo.refs.set(branch, sha);
    return sha;
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const auth = req.headers.authorization;
    this.requests.push({ method: req.method ?? "", url: req.url ?? "", authorization: auth, ...(req.headers.range ? { range: req.headers.range } : {}) });
    try {
      await this.route(req, res, auth);
    } catch (e) {
      this.error(res, 500, "Internal", (e as Error).message, auth);
    }
  }

  private error(res: http.ServerResponse, status: number, code: string, message: string, auth?: string): void {
    if (res.headersSent) { res.destroy(); return; }
    res.writeHead(status, { "Content-Type": "application/json", "X-Error-Code": code });
    res.end(JSON.stringify({ error: this.echoAuthInErrors && auth ? `${message} (got ${auth})` : message }));
  }

  private json(res: http.ServerResponse, body: unknown): void {
    res.writeHead(200, { "Content-Type": "application/json" });
    res.end(JSON.stringify(body));
  }

  private validToken(auth?: string): boolean {
    return !!auth && auth.startsWith("Bearer ") && this.tokens.has(auth.slice(7));
  }

  /** The hub's access rules: bad token → 401; private/missing repo without auth → 401; missing with auth → 404. */
  private access(res: http.ServerResponse, type: string, name: string, auth?: string): Repo | undefined {
    if (auth && !this.validToken(auth)) { this.error(res, 401, "InvalidCredentials", "Invalid credentials in Authorization header", auth); return; }
    const repo = this.repos.get(this.key(type, name));
    if (!repo || (repo.private && !auth)) {
      if (auth) this.error(res, 404, "RepoNotFound", "Repository not found", auth);
      else this.error(res, 401, "RepoNotFound", "Repository not found", auth);
      return;
    }
    if (repo.gated && !auth) { this.error(res, 401, "GatedRepo", "Access to this repo is restricted", auth); return; }
    if (repo.gated && auth) { this.error(res, 403, "GatedRepo", "You must accept the conditions to access this repo", auth); return; }
    return repo;
  }

  private commitOf(res: http.ServerResponse, repo: Repo, rev: string, auth?: string): [string, Files] | undefined {
    const sha = repo.refs.get(rev) ?? (repo.commits.has(rev) ? rev : undefined);
    if (!sha) { this.error(res, 404, "RevisionNotFound", `Invalid rev id: ${rev}`, auth); return; }
    return [sha, repo.commits.get(sha)!];
  }

  private async body(req: http.IncomingMessage): Promise<Buffer> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    return Buffer.concat(chunks);
  }

  private async route(req: http.IncomingMessage, res: http.ServerResponse, auth?: string): Promise<void> {
    const u = new URL(req.url ?? "/", this.url);
    const p = decodeURIComponent(u.pathname);
    let m: RegExpMatchArray | null;
    if (this.failApiWith && req.method === "GET" && p.startsWith("/api/")) return this.error(res, this.failApiWith, "Internal", "the hub is down", auth);

    if (req.method === "GET" && (m = p.match(/^\/api\/(models|datasets)\/([^/]+\/[^/]+|[^/]+)\/revision\/(.+)$/))) {
      const repo = this.access(res, m[1]!.slice(0, -1), m[2]!, auth);
      if (!repo) return;
      const c = this.commitOf(res, repo, m[3]!, auth);
      if (!c) return;
      return this.json(res, { _id: `id-${repo.name}`, id: repo.name, sha: c[0], private: repo.private, siblings: [...c[1].keys()].map((rfilename) => ({ rfilename })) });
    }

    if (req.method === "GET" && (m = p.match(/^\/api\/(models|datasets)\/([^/]+\/[^/]+)\/tree\/([^/]+)(?:\/(.*))?$/))) {
      const repo = this.access(res, m[1]!.slice(0, -1), m[2]!, auth);
      if (!repo) return;
      const c = this.commitOf(res, repo, m[3]!, auth);
      if (!c) return;
      const under = m[4] ? `${m[4]}/` : "";
      const recursive = u.searchParams.get("recursive") === "true";
      const entries: unknown[] = [];
      const dirs = new Set<string>();
      for (const [fp, content] of [...c[1]].sort()) {
        if (!fp.startsWith(under)) continue;
        const rest = fp.slice(under.length);
        const parts = rest.split("/");
        for (let i = 1; i < parts.length; i++) dirs.add(under + parts.slice(0, i).join("/"));
        if (!recursive && parts.length > 1) continue;
        const lfs = isLfs(fp, content) ? { oid: sha256(content), size: content.length, pointerSize: 130 } : undefined;
        entries.push({ type: "file", oid: gitOid(content), size: content.length, path: fp, ...(lfs ? { lfs } : {}) });
      }
      for (const d of dirs) if (recursive || !d.slice(under.length).includes("/")) entries.push({ type: "directory", oid: "0".repeat(40), size: 0, path: d });
      return this.json(res, entries);
    }

    if (req.method === "GET" && p === "/api/whoami-v2") {
      if (!this.validToken(auth)) return this.error(res, 401, "Unauthorized", "Invalid credentials in Authorization header", auth);
      const user = this.users.get(auth!.slice(7));
      if (!user) return this.error(res, 404, "NotImplemented", "test hub server: this token has no user (use addUser)", auth);
      return this.json(res, {
        type: "user", id: `id-${user.name}`, name: user.name, fullname: user.name, email: null, emailVerified: false, canPay: false,
        isPro: false, periodEnd: null, avatarUrl: "", orgs: user.orgs.map((o) => ({ type: "org", id: `id-${o}`, name: o, fullname: o })),
        auth: { type: "access_token", accessToken: { displayName: "test", role: "write", createdAt: "2026-01-01T00:00:00.000Z" } },
      });
    }

    if (req.method === "POST" && p === "/api/repos/create") {
      if (!this.validToken(auth)) return this.error(res, 401, "Unauthorized", "Invalid credentials in Authorization header", auth);
      const b = JSON.parse((await this.body(req)).toString()) as { name: string; organization?: string; type?: string; visibility?: string };
      const user = this.users.get(auth!.slice(7));
      if (user && b.organization && b.organization !== user.name && !user.orgs.includes(b.organization)) {
        return this.error(res, 403, "Forbidden", `You don't have the rights to create a repo under the namespace "${b.organization}"`, auth);
      }
      const name = b.organization ? `${b.organization}/${b.name}` : b.name;
      const type = (b.type ?? "model") as "model" | "dataset";
      if (this.repos.has(this.key(type, name))) return this.error(res, 409, "RepoExists", "You already created this repo", auth);
      this.addRepo(name, { ".gitattributes": "*.safetensors filter=lfs diff=lfs merge=lfs -text\n" }, { type, private: b.visibility === "private" });
      return this.json(res, { url: `${this.url}/${name}`, id: name });
    }

    if (req.method === "POST" && (m = p.match(/^\/api\/(models|datasets)\/([^/]+\/[^/]+)\/preupload\/(.+)$/))) {
      if (!this.validToken(auth)) return this.error(res, 401, "Unauthorized", "Invalid credentials in Authorization header", auth);
      if (!this.access(res, m[1]!.slice(0, -1), m[2]!, auth)) return;
      const b = JSON.parse((await this.body(req)).toString()) as { files: { path: string; size: number }[] };
      return this.json(res, {
        files: b.files.map((f) => ({ path: f.path, uploadMode: f.size >= LFS_MIN || f.path.endsWith(".safetensors") ? "lfs" : "regular", shouldIgnore: false })),
      });
    }

    if (req.method === "POST" && (m = p.match(/^\/(?:(datasets)\/)?([^/]+\/[^/]+)\.git\/info\/lfs\/objects\/batch$/))) {
      if (!this.validToken(auth)) return this.error(res, 401, "Unauthorized", "Invalid credentials in Authorization header", auth);
      const b = JSON.parse((await this.body(req)).toString()) as { objects: { oid: string; size: number }[] };
      return this.json(res, {
        transfer: "basic",
        objects: b.objects.map((o) => ({
          oid: o.oid,
          size: o.size,
          ...(this.lfs.has(o.oid) ? {} : { actions: { upload: { href: `${this.url}/__lfs/${o.oid}` } } }),
        })),
      });
    }

    if (req.method === "PUT" && (m = p.match(/^\/__lfs\/([0-9a-f]{64})$/))) {
      const content = await this.body(req);
      if (sha256(content) !== m[1]) return this.error(res, 400, "BadOid", "sha256 mismatch");
      this.lfs.set(m[1]!, content);
      res.writeHead(200);
      return void res.end();
    }

    if (req.method === "POST" && (m = p.match(/^\/api\/(models|datasets)\/([^/]+\/[^/]+)\/commit\/(.+)$/))) {
      if (!this.validToken(auth)) return this.error(res, 401, "Unauthorized", "Invalid credentials in Authorization header", auth);
      const repo = this.access(res, m[1]!.slice(0, -1), m[2]!, auth);
      if (!repo) return;
      if (this.failCommitsWith) return this.error(res, this.failCommitsWith, "Internal", "commit failed (test)", auth);
      const branch = m[3]!;
      const parent = repo.refs.get(branch);
      const files: Files = new Map(parent ? repo.commits.get(parent)! : []);
      for (const line of (await this.body(req)).toString().split("\n").filter(Boolean)) {
        const { key, value } = JSON.parse(line) as { key: string; value: { path: string; content?: string; oid?: string } };
        if (key === "file") files.set(value.path, Buffer.from(value.content!, "base64"));
        else if (key === "lfsFile") {
          const c = this.lfs.get(value.oid!);
          if (!c) return this.error(res, 400, "MissingLfs", `LFS object ${value.oid} was not uploaded`);
          files.set(value.path, c);
        } else if (key === "deletedFile") files.delete(value.path);
      }
      const sha = this.addCommit(repo, files, branch);
      return this.json(res, { commitOid: sha, commitUrl: `${this.url}/${repo.name}/commit/${sha}` });
    }

    if ((req.method === "GET" || req.method === "HEAD") && (m = p.match(/^\/(?:(datasets)\/)?([^/]+\/[^/]+|[^/]+)\/resolve\/([^/]+)\/(.+)$/))) {
      const repo = this.access(res, m[1] ? "dataset" : "model", m[2]!, auth);
      if (!repo) return;
      const c = this.commitOf(res, repo, m[3]!, auth);
      if (!c) return;
      const content = c[1].get(m[4]!);
      if (!content) return this.error(res, 404, "EntryNotFound", `${m[4]} does not exist on "${m[3]}"`, auth);
      const headers: Record<string, string> = {
        "Content-Type": "application/octet-stream",
        ETag: `"${isLfs(m[4]!, content) ? sha256(content) : gitOid(content)}"`,
        "X-Repo-Commit": c[0],
        "Accept-Ranges": "bytes",
      };
      const range = req.headers.range?.match(/^bytes=(\d+)-(\d+)?$/);
      const served = this.tamper ? this.tamper(m[4]!, content) : content;
      if (range && content.length === 0) {
        res.writeHead(206, { ...headers, "Content-Range": "bytes */0", "Content-Length": "0" });
        return void res.end();
      }
      const start = range ? Number(range[1]) : 0;
      const end = range ? Math.min(range[2] ? Number(range[2]) : content.length - 1, content.length - 1) : served.length - 1;
      const body = served.subarray(start, end + 1);
      res.writeHead(range ? 206 : 200, { ...headers, ...(range ? { "Content-Range": `bytes ${start}-${end}/${content.length}` } : {}), "Content-Length": String(body.length) });
      if (req.method === "HEAD") return void res.end();
      const cut = this.cutDownloads;
      if (cut && cut.times > 0 && body.length > cut.after) {
        cut.times--;
        res.write(body.subarray(0, cut.after), () => res.destroy());
        return;
      }
      return void res.end(body);
    }

    this.error(res, 404, "NotImplemented", `test hub server has no route for ${req.method} ${p}`, auth);
  }
}
