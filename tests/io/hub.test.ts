/**
 * The real @huggingface/hub client against the loopback hub server (tests/io/hub-server.ts) serving fixture repos
 * written to a temp dir.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, beforeEach, describe, test } from "node:test";
import { scanCacheDir } from "@huggingface/hub";
import { loadModelFolder, loadPipelineFolder, pipelineComponent, saveModelFolder } from "../../lib/io/diffusers.js";
import { HubError, createRepo, hfTokenPath, hubCacheDir, hubDownload, hubToken, parseRepoId, resolveModel, snapshotDownload, uploadFolder } from "../../lib/io/hub.js";
import { writeSafetensors } from "../../lib/io/safetensors.js";
import type { HostTensor } from "../../lib/io/safetensors.js";
import { HubServer } from "./hub-server.js";
import { tempDir } from "../helpers.js";

const TOKEN = "hf_SeCrEtT0kenForTests123";
const root = tempDir("hub-test-");
let server: HubServer;
let n = 0;
const newCache = () => path.join(root, `cache-${n++}`);

// Tests must not see the developer's hub settings.
for (const k of ["HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "HF_ENDPOINT", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "CONTROLNET_TS_HUB_CACHE", "HF_TOKEN_PATH", "XDG_CACHE_HOME"]) delete process.env[k];
// …nor the developer's login token file (huggingface_hub's $HF_HOME/token)
process.env.HF_HOME = path.join(root, "hf-home");

function f32(shape: number[], seed: number): HostTensor {
  const count = shape.reduce((a, b) => a * b, 1);
  return { dtype: "float32", shape, data: Float32Array.from({ length: count }, (_, i) => Math.cos(seed + i)) };
}

/** A tiny SD-like pipeline repo, as save_pretrained lays it out, plus the files a loader must NOT download. */
function makePipelineFixture(dir: string, unetBias: number): void {
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, "model_index.json"), JSON.stringify({
    _class_name: "StableDiffusionPipeline", _diffusers_version: "0.35.2",
    feature_extractor: ["transformers", "CLIPImageProcessor"], safety_checker: ["stable_diffusion", "StableDiffusionSafetyChecker"],
    scheduler: ["diffusers", "PNDMScheduler"], text_encoder: ["transformers", "CLIPTextModel"], tokenizer: ["transformers", "CLIPTokenizer"],
    unet: ["diffusers", "UNet2DConditionModel"], vae: ["diffusers", "AutoencoderKL"],
  }));
  saveModelFolder(path.join(dir, "unet"), { className: "UNet2DConditionModel", config: { in_channels: 4 }, tensors: { "conv_in.weight": f32([4, 4, 3, 3], 1), "conv_in.bias": { dtype: "float32", shape: [1], data: Float32Array.from([unetBias]) } } });
  saveModelFolder(path.join(dir, "vae"), { className: "AutoencoderKL", config: {}, tensors: { "encoder.conv_in.weight": f32([8, 3, 3, 3], 2) } });
  saveModelFolder(path.join(dir, "text_encoder"), { className: "CLIPTextModel", config: { hidden_size: 32 }, tensors: { "text_model.embeddings.token_embedding.weight": f32([10, 32], 3) }, weightsName: "model.safetensors" });
  // fp16 variant of the vae (stored as F32 here; only the name matters for selection)
  writeSafetensors(path.join(dir, "vae", "diffusion_pytorch_model.fp16.safetensors"), { "encoder.conv_in.weight": f32([8, 3, 3, 3], 9) });
  fs.mkdirSync(path.join(dir, "tokenizer"));
  fs.writeFileSync(path.join(dir, "tokenizer", "vocab.json"), JSON.stringify({ "a</w>": 0 }));
  fs.writeFileSync(path.join(dir, "tokenizer", "merges.txt"), "#version: 0.2\n");
  fs.mkdirSync(path.join(dir, "scheduler"));
  fs.writeFileSync(path.join(dir, "scheduler", "scheduler_config.json"), JSON.stringify({ _class_name: "PNDMScheduler", num_train_timesteps: 1000 }));
  // Must never be fetched: pickles, a root single-file checkpoint, skipped components.
  fs.writeFileSync(path.join(dir, "unet", "diffusion_pytorch_model.bin"), Buffer.alloc(3000, 1));
  writeSafetensors(path.join(dir, "v1-5-pruned.safetensors"), { big: f32([1000], 4) });
  fs.mkdirSync(path.join(dir, "safety_checker"));
  fs.writeFileSync(path.join(dir, "safety_checker", "config.json"), "{}");
  writeSafetensors(path.join(dir, "safety_checker", "model.safetensors"), { w: f32([100], 5) });
}

const resolveCount = () => server.requests.filter((r) => r.url.includes("/resolve/")).length;

let mainSha = "";
let v2Sha = "";
before(async () => {
  server = await new HubServer().start();
  server.tokens.add(TOKEN);
  const fx = path.join(root, "fixtures");
  makePipelineFixture(path.join(fx, "pipe-main"), 0.25);
  makePipelineFixture(path.join(fx, "pipe-v2"), 0.75);
  mainSha = server.addRepoFromDir("org/tiny-pipe", path.join(fx, "pipe-main"));
  v2Sha = server.addRepoFromDir("org/tiny-pipe", path.join(fx, "pipe-v2"), { branch: "v2" });
  saveModelFolder(path.join(fx, "cn"), { className: "ControlNetModel", config: { conditioning_channels: 3 }, tensors: { "controlnet_cond_embedding.conv_in.weight": f32([16, 3, 3, 3], 6) } });
  server.addRepoFromDir("org/tiny-controlnet", path.join(fx, "cn"));
  server.addRepoFromDir("org/private-cn", path.join(fx, "cn"), { private: true });
  server.addRepoFromDir("org/gated-cn", path.join(fx, "cn"), { gated: true });
  server.addRepo("org/pickle-only", { "config.json": "{}", "diffusion_pytorch_model.bin": Buffer.alloc(10) });
  server.addRepo("org/fill10", { "README.md": "# data", "data/train-00000.parquet": Buffer.alloc(2000, 7), "data/meta.json": "{}" }, { type: "dataset" });
});
after(async () => {
  await server.close();
});
beforeEach(() => {
  server.requests.length = 0;
  server.echoAuthInErrors = false;
  server.tamper = undefined;
});

describe("hub downloads", () => {
  test("resolveModel fetches exactly what a pipeline loader needs, and it loads", async () => {
    const cacheDir = newCache();
    const dir = await resolveModel("org/tiny-pipe", { hubUrl: server.url, cacheDir });
    assert.equal(dir, path.join(cacheDir, "models--org--tiny-pipe", "snapshots", mainSha));
    const pipe = loadPipelineFolder(dir);
    const unet = loadModelFolder(pipelineComponent(pipe, "unet").path);
    assert.equal(unet.config._class_name, "UNet2DConditionModel");
    assert.equal(unet.tensors.get("conv_in.bias")!.data[0], 0.25);
    assert.deepEqual(loadModelFolder(pipelineComponent(pipe, "text_encoder").path).tensors.get("text_model.embeddings.token_embedding.weight")!.data, f32([10, 32], 3).data);
    assert.ok(fs.existsSync(path.join(dir, "tokenizer", "merges.txt")));
    assert.ok(fs.existsSync(path.join(dir, "scheduler", "scheduler_config.json")));
    const fetched = server.requests.filter((r) => r.url.includes("/resolve/")).map((r) => decodeURIComponent(r.url.split(`/resolve/${mainSha}/`)[1]!));
    for (const never of ["unet/diffusion_pytorch_model.bin", "v1-5-pruned.safetensors", "safety_checker/model.safetensors", "vae/diffusion_pytorch_model.fp16.safetensors"]) {
      assert.ok(!fetched.includes(never), `${never} must not be downloaded`);
      assert.ok(!fs.existsSync(path.join(dir, never)), `${never} not in snapshot`);
    }
    // The cache is huggingface_hub's layout: the client's own scanner understands it.
    const scan = await scanCacheDir(cacheDir);
    const repo = [...scan.repos].find((r) => r.id.name === "org/tiny-pipe")!;
    assert.ok(repo, "scanCacheDir finds the repo");
    assert.equal([...repo.revisions][0]!.commitOid, mainSha);
    assert.deepEqual([...repo.revisions][0]!.refs, ["main"]);
  });

  test("cache hit: a branch costs one revision lookup, a commit sha no request at all", async () => {
    const cacheDir = newCache();
    const first = await resolveModel("org/tiny-pipe", { hubUrl: server.url, cacheDir });
    assert.ok(resolveCount() > 5);
    server.requests.length = 0;
    const again = await resolveModel("org/tiny-pipe", { hubUrl: server.url, cacheDir });
    assert.equal(again, first);
    assert.deepEqual(server.requests.map((r) => r.url.split("?")[0]), ["/api/models/org/tiny-pipe/revision/main"], "no listing, no downloads");
    server.requests.length = 0;
    const bySha = await resolveModel("org/tiny-pipe", { hubUrl: server.url, cacheDir, revision: mainSha });
    assert.equal(bySha, first);
    assert.equal(server.requests.length, 0, "server sees no request");
  });

  test("revision: a branch and an older commit give their own files", async () => {
    const cacheDir = newCache();
    const v2 = await resolveModel("org/tiny-pipe", { hubUrl: server.url, cacheDir, revision: "v2", subfolder: "unet" });
    assert.ok(v2.includes(v2Sha));
    assert.equal(loadModelFolder(v2).tensors.get("conv_in.bias")!.data[0], 0.75);
    const old = await resolveModel("org/tiny-pipe", { hubUrl: server.url, cacheDir, revision: mainSha, subfolder: "unet" });
    assert.equal(loadModelFolder(old).tensors.get("conv_in.bias")!.data[0], 0.25);
    assert.equal(fs.readFileSync(path.join(cacheDir, "models--org--tiny-pipe", "refs", "v2"), "utf8"), v2Sha);
    // Identical blobs (e.g. the text encoder) are stored once.
    const blobs = fs.readdirSync(path.join(cacheDir, "models--org--tiny-pipe", "blobs"));
    assert.equal(new Set(blobs).size, blobs.length);
    await assert.rejects(resolveModel("org/tiny-pipe", { hubUrl: server.url, cacheDir, revision: "nope" }), (e: HubError) => {
      assert.equal(e.status, 404);
      assert.match(e.message, /Not found on the hub \(HTTP 404\): hub model repo org\/tiny-pipe \(revision nope\)/);
      return true;
    });
  });

  test("variant selection, subfolder model repo, patterns, single files, datasets", async () => {
    const cacheDir = newCache();
    const vae = await resolveModel("org/tiny-pipe", { hubUrl: server.url, cacheDir, subfolder: "vae", variant: "fp16" });
    assert.deepEqual(fs.readdirSync(vae).sort(), ["config.json", "diffusion_pytorch_model.fp16.safetensors"]);
    assert.deepEqual(loadModelFolder(vae, { variant: "fp16" }).tensors.get("encoder.conv_in.weight")!.data, f32([8, 3, 3, 3], 9).data);
    // A variant missing in a folder falls back to the plain weights there.
    const unet = await resolveModel("org/tiny-pipe", { hubUrl: server.url, cacheDir, subfolder: "unet", variant: "fp16" });
    assert.ok(fs.existsSync(path.join(unet, "diffusion_pytorch_model.safetensors")));

    const cn = await resolveModel("org/tiny-controlnet", { hubUrl: server.url, cacheDir });
    assert.equal(loadModelFolder(cn).config._class_name, "ControlNetModel");

    const snap = await snapshotDownload("org/tiny-pipe", { hubUrl: server.url, cacheDir: newCache(), allowPatterns: ["tokenizer/", "*.json"], ignorePatterns: ["safety_checker/*"] });
    const got: string[] = [];
    const walk = (rel: string) => { for (const e of fs.readdirSync(path.join(snap, rel), { withFileTypes: true })) { const p = rel ? `${rel}/${e.name}` : e.name; if (e.isDirectory()) walk(p); else got.push(p); } };
    walk("");
    assert.deepEqual(got.sort(), ["model_index.json", "scheduler/scheduler_config.json", "text_encoder/config.json", "tokenizer/merges.txt", "tokenizer/vocab.json", "unet/config.json", "vae/config.json"]);

    const one = await hubDownload("org/tiny-pipe", "scheduler/scheduler_config.json", { hubUrl: server.url, cacheDir: newCache() });
    assert.equal(JSON.parse(fs.readFileSync(one, "utf8")).num_train_timesteps, 1000);
    await assert.rejects(hubDownload("org/tiny-pipe", "nope.json", { hubUrl: server.url, cacheDir: newCache() }), /has no file "nope\.json"/);

    const ds = await snapshotDownload("datasets/org/fill10", { hubUrl: server.url, cacheDir });
    assert.equal(fs.readFileSync(path.join(ds, "data", "train-00000.parquet")).length, 2000);
    assert.ok(ds.includes("datasets--org--fill10"));
    assert.deepEqual(parseRepoId("org/fill10", "dataset"), { type: "dataset", name: "org/fill10", label: "datasets/org/fill10" });
    // a missing local folder (--dataset_name=/data/fill50k) is named as one, not as a malformed repo id
    for (const p of ["/nonexistent", "./data/x", "../x", "~/x"]) assert.throws(() => parseRepoId(p, "dataset"), new RegExp(`"${p.replace(/[.]/g, "\\.")}" is not an existing local folder`));
  });

  test("local paths resolve to themselves; bad ids and pickle-only repos are clear errors", async () => {
    const local = path.join(root, "fixtures", "cn");
    assert.equal(await resolveModel(local), local);
    await assert.rejects(resolveModel("./no/such/dir"), /Local model path not found: \.\/no\/such\/dir/);
    await assert.rejects(resolveModel("a/b/c/d", { hubUrl: server.url }), /neither an existing local path nor a hub repo id/);
    await assert.rejects(resolveModel("org/pickle-only", { hubUrl: server.url, cacheDir: newCache() }), (e: Error) => {
      assert.match(e.message, /has no safetensors weights/);
      assert.match(e.message, /diffusion_pytorch_model\.bin/);
      assert.match(e.message, /unpickling runs code/);
      return true;
    });
  });

  test("a listing with paths escaping the repo is refused", async () => {
    server.addRepo("org/evil", { "config.json": "{}", "../../outside.json": "{}" });
    const cacheDir = newCache();
    await assert.rejects(snapshotDownload("org/evil", { hubUrl: server.url, cacheDir }), /lists an unsafe file path "..\/..\/outside.json"; refusing/);
    assert.ok(!fs.existsSync(path.join(cacheDir, "outside.json")));
  });

  test("downloads are verified: corrupt or truncated bodies never enter the cache", async () => {
    const cacheDir = newCache();
    server.tamper = (p, c) => (p.endsWith(".safetensors") ? Buffer.concat([c.subarray(0, c.length - 4), Buffer.from("evil")]) : c);
    await assert.rejects(resolveModel("org/tiny-controlnet", { hubUrl: server.url, cacheDir }), /diffusion_pytorch_model\.safetensors" from org\/tiny-controlnet is corrupt/);
    const blobs = path.join(cacheDir, "models--org--tiny-controlnet", "blobs");
    assert.deepEqual(fs.readdirSync(blobs).filter((b) => b.includes("incomplete")), [], "a corrupt body is not kept");
    // a body that ends early, every time: each attempt resumes where the bytes end; then the bytes are kept (as
    // huggingface_hub keeps its .incomplete file, which `hf cache prune` sees) and the next run resumes from them
    server.tamper = (p, c) => (p.endsWith(".safetensors") ? c.subarray(0, 100) : c);
    const warned: string[] = [];
    await assert.rejects(resolveModel("org/tiny-controlnet", { hubUrl: server.url, cacheDir, warn: (l) => warned.push(l) }),
      /diffusion_pytorch_model\.safetensors" of hub model repo org\/tiny-controlnet .* stopped early 5 times .* the 100 of \d+ bytes received are kept in the cache and the next run resumes from them/);
    assert.equal(warned.length, 4, warned.join("\n"));
    assert.match(warned[0]!, /^warning: the download of "diffusion_pytorch_model\.safetensors" from org\/tiny-controlnet stopped at 100 of \d+ bytes .*; resuming there \(attempt 2 of 5\)$/);
    const kept = fs.readdirSync(blobs).filter((b) => b.endsWith(".incomplete"));
    assert.equal(kept.length, 1, `one partial file, named as huggingface_hub names them: ${kept}`);
    server.tamper = undefined;
    server.requests.length = 0;
    const dir = await resolveModel("org/tiny-controlnet", { hubUrl: server.url, cacheDir });
    assert.equal(loadModelFolder(dir).config._class_name, "ControlNetModel");
    assert.ok(server.requests.some((r) => r.range?.startsWith("bytes=100-")), "resumed from the kept bytes");
    assert.deepEqual(fs.readdirSync(blobs).filter((b) => b.includes("incomplete")), [], "nothing left over");
  });

  test("what a process that is gone (kill -9) left of a blob is taken over and resumed; a live one's is left alone", async () => {
    const cacheDir = newCache();
    const file = fs.readFileSync(path.join(root, "fixtures", "cn", "diffusion_pytorch_model.safetensors"));
    const blobs = path.join(cacheDir, "models--org--tiny-controlnet", "blobs");
    fs.mkdirSync(blobs, { recursive: true });
    const etag = createHash("sha256").update(file).digest("hex");
    const host = os.hostname().replace(/[^A-Za-z0-9_]/g, "_").slice(0, 64);
    const gone = spawnSync(process.execPath, ["-e", "process.stdout.write(String(process.pid))"], { encoding: "utf8" }).stdout;
    fs.writeFileSync(path.join(blobs, `${etag}.${host}-${gone}-dead1.incomplete`), file.subarray(0, 700));
    fs.writeFileSync(path.join(blobs, `${etag}.${host}-${gone}-dead2.incomplete`), file.subarray(0, 200));
    // (the parent of this test process: alive, perhaps downloading it)
    const live = path.join(blobs, `${etag}.${host}-${process.ppid}-live.incomplete`);
    fs.writeFileSync(live, file.subarray(0, 50));
    server.requests.length = 0;
    const dir = await resolveModel("org/tiny-controlnet", { hubUrl: server.url, cacheDir });
    assert.equal(loadModelFolder(dir).config._class_name, "ControlNetModel");
    assert.ok(server.requests.some((r) => r.range?.startsWith("bytes=700-")), "resumed from the larger of the two left");
    assert.deepEqual(fs.readdirSync(blobs).filter((b) => b.includes("incomplete")), [path.basename(live)]);
  });

  test("a connection dropped mid-file resumes where it stopped (a Range request), and the file is whole", async () => {
    const cacheDir = newCache();
    server.cutDownloads = { after: 300, times: 2 };
    server.requests.length = 0;
    const warned: string[] = [];
    try {
      const dir = await resolveModel("org/tiny-controlnet", { hubUrl: server.url, cacheDir, warn: (l) => warned.push(l) });
      assert.equal(loadModelFolder(dir).config._class_name, "ControlNetModel", "the sha256 of the joined parts matched");
    } finally {
      server.cutDownloads = undefined;
    }
    assert.equal(warned.length, 2, warned.join("\n"));
    assert.match(warned[0]!, /stopped at 300 of \d+ bytes .*; resuming there \(attempt 2 of 5\)/);
    const ranges = server.requests.map((r) => r.range).filter((r) => r && r !== "bytes=0-0");
    assert.deepEqual(ranges.map((r) => r!.replace(/-\d+$/, "-")), ["bytes=300-", "bytes=600-"], "each attempt resumed at the bytes on disk");
  });

  test("a hub that answers with an error (down, a token it no longer takes) leaves a cached snapshot usable, saying so; a 404 does not", async () => {
    const cacheDir = newCache();
    const warm = await resolveModel("org/tiny-controlnet", { hubUrl: server.url, cacheDir });
    const warned: string[] = [];
    try {
      for (const status of [500, 503, 401]) {
        server.failApiWith = status;
        assert.equal(await resolveModel("org/tiny-controlnet", { hubUrl: server.url, cacheDir, warn: (l) => warned.push(l) }), warm);
        assert.match(warned.at(-1)!, new RegExp(`^warning: .*HTTP ${status}.* Using the cached snapshot [0-9a-f]{12} of org/tiny-controlnet instead\\.$`));
      }
      // with nothing cached, the error itself
      await assert.rejects(resolveModel("org/tiny-controlnet", { hubUrl: server.url, cacheDir: newCache() }), /HTTP 401/);
    } finally {
      server.failApiWith = undefined;
    }
    // a revision the hub does not have is not replaced by the cached one
    await assert.rejects(resolveModel("org/tiny-controlnet", { hubUrl: server.url, cacheDir, revision: "no-such-branch" }), /HTTP 404/);
  });
});

describe("offline mode", () => {
  test("HF_HUB_OFFLINE=1: cache hits work without any request; misses name the repo and file", async () => {
    const cacheDir = newCache();
    const online = await resolveModel("org/tiny-pipe", { hubUrl: server.url, cacheDir, subfolder: "unet" });
    server.requests.length = 0;
    process.env.HF_HUB_OFFLINE = "1";
    try {
      assert.equal(await resolveModel("org/tiny-pipe", { hubUrl: server.url, cacheDir, subfolder: "unet" }), online);
      await assert.rejects(resolveModel("org/tiny-controlnet", { hubUrl: server.url, cacheDir }), (e: HubError) => {
        assert.match(e.message, /Offline mode \(HF_HUB_OFFLINE\): hub model repo org\/tiny-controlnet \(revision main\) is not in the cache at /);
        assert.equal(e.repo, "org/tiny-controlnet");
        return true;
      });
      await assert.rejects(hubDownload("org/tiny-pipe", "vae/config.json", { hubUrl: server.url, cacheDir }), (e: HubError) => {
        assert.match(e.message, /Offline mode \(HF_HUB_OFFLINE\): file "vae\/config\.json" of hub model repo org\/tiny-pipe \(revision main\) is not in the cache/);
        assert.equal(e.file, "vae/config.json");
        return true;
      });
      await assert.rejects(resolveModel("org/tiny-pipe", { hubUrl: server.url, cacheDir, revision: "v2" }), /revision v2\) is not in the cache/);
    } finally {
      delete process.env.HF_HUB_OFFLINE;
    }
    assert.equal(server.requests.length, 0, "offline makes no request");
    // A cache made by Python huggingface_hub has no .trees listing: offline mode then uses the snapshot folder.
    fs.rmSync(path.join(cacheDir, "models--org--tiny-pipe", ".trees"), { recursive: true });
    const py = await resolveModel("org/tiny-pipe", { hubUrl: server.url, cacheDir, subfolder: "unet", offline: true });
    assert.equal(loadModelFolder(py).tensors.get("conv_in.bias")!.data[0], 0.25);
    assert.equal(server.requests.length, 0);
    // The option works like the env variable.
    await assert.rejects(resolveModel("org/tiny-controlnet", { hubUrl: server.url, cacheDir, offline: true }), /Offline mode/);
  });

  test("hub unreachable: falls back to the cache, else says so", async () => {
    const cacheDir = newCache();
    await resolveModel("org/tiny-controlnet", { hubUrl: server.url, cacheDir });
    const dead = "http://127.0.0.1:9"; // discard port: connection refused
    const dir = await resolveModel("org/tiny-controlnet", { hubUrl: dead, cacheDir });
    assert.equal(loadModelFolder(dir).config._class_name, "ControlNetModel");
    await assert.rejects(resolveModel("org/tiny-pipe", { hubUrl: dead, cacheDir }), (e: Error) => {
      assert.match(e.message, /Cannot reach the hub at http:\/\/127\.0\.0\.1:9 .*is not in the cache.*Download it once while online, or pass a local folder \(there is none at \/.*\)\.$/);
      // (offline mode is not what failed here: the advice names it only when it is set)
      assert.doesNotMatch(e.message, /HF_HUB_OFFLINE/);
      return true;
    });
    // a dataset named without its `datasets/` prefix: the local folder it is not is the one typed
    await assert.rejects(snapshotDownload("org/no-data", { hubUrl: dead, cacheDir, repoType: "dataset" }),
      (e: Error) => e.message.includes(`(there is none at ${path.resolve("org/no-data")}).`));
    // an upload: the cache is no help, so offline mode is not offered
    const folder = path.join(root, "upload-dead");
    fs.mkdirSync(folder, { recursive: true });
    fs.writeFileSync(path.join(folder, "config.json"), "{}");
    await assert.rejects(uploadFolder("me/dead", folder, { hubUrl: dead, token: TOKEN }), (e: Error) => {
      assert.match(e.message, /Cannot reach the hub at http:\/\/127\.0\.0\.1:9/);
      assert.doesNotMatch(e.message, /HF_HUB_OFFLINE/);
      return true;
    });
  });
});

describe("authentication", () => {
  const cacheFiles = (dir: string): string[] => {
    const out: string[] = [];
    const walk = (d: string) => { for (const e of fs.readdirSync(d, { withFileTypes: true })) { const p = path.join(d, e.name); if (e.isDirectory()) walk(p); else if (e.isFile()) out.push(p); } };
    if (fs.existsSync(dir)) walk(dir);
    return out;
  };

  test("private repo: 401 without a token says to set HF_TOKEN; HF_TOKEN gives access and never reaches disk", async () => {
    const cacheDir = newCache();
    await assert.rejects(resolveModel("org/private-cn", { hubUrl: server.url, cacheDir }), (e: HubError) => {
      assert.equal(e.status, 401);
      assert.match(e.message, /Cannot access hub model repo org\/private-cn \(revision main\): authentication required \(HTTP 401\).*set HF_TOKEN/);
      return true;
    });
    process.env.HF_TOKEN = TOKEN;
    try {
      const dir = await resolveModel("org/private-cn", { hubUrl: server.url, cacheDir });
      assert.equal(loadModelFolder(dir).config._class_name, "ControlNetModel");
    } finally {
      delete process.env.HF_TOKEN;
    }
    assert.ok(server.requests.some((r) => r.authorization === `Bearer ${TOKEN}`), "token sent as a header");
    assert.ok(server.requests.every((r) => !r.url.includes(TOKEN)), "token never in a URL");
    for (const f of cacheFiles(cacheDir)) assert.ok(!fs.readFileSync(f).includes(TOKEN), `token written to ${f}`);
  });

  test("a rejected token: 401 error without the token, even when the server echoes it", async () => {
    server.echoAuthInErrors = true;
    const wrong = "hf_WrongButSecretValue987";
    for (const repo of ["org/private-cn", "org/tiny-controlnet"]) {
      await assert.rejects(resolveModel(repo, { hubUrl: server.url, cacheDir: newCache(), token: wrong }), (e: HubError) => {
        assert.equal(e.status, 401);
        assert.match(e.message, /the hub rejected the token \(HTTP 401\)/);
        assert.ok(!e.message.includes(wrong), `token leaked: ${e.message}`);
        assert.ok(!String(e.stack).includes(wrong), "token leaked in stack");
        assert.match(e.message, /hf_\*\*\*/, "the echoed token was scrubbed");
        return true;
      });
    }
    await assert.rejects(resolveModel("org/private-cn", { hubUrl: server.url, cacheDir: newCache(), token: "not-a-token-SECRET" }), (e: Error) => {
      assert.match(e.message, /must start with "hf_"/);
      assert.ok(!e.message.includes("not-a-token-SECRET"));
      return true;
    });
  });

  test("gated repo: 403 says to accept the conditions", async () => {
    await assert.rejects(resolveModel("org/gated-cn", { hubUrl: server.url, cacheDir: newCache(), token: TOKEN }), (e: HubError) => {
      assert.equal(e.status, 403);
      assert.match(e.message, /forbidden \(HTTP 403\): the repo is gated/);
      assert.ok(!e.message.includes(TOKEN));
      return true;
    });
  });
});

describe("upload", () => {
  test("uploadFolder commits a model folder (LFS weights, regular config), skipping ignored files; it downloads back", async () => {
    const out = path.join(root, "train-out");
    saveModelFolder(out, { className: "ControlNetModel", config: { v: 1 }, tensors: { w: f32([600], 7) } });
    fs.mkdirSync(path.join(out, "checkpoint-10"));
    fs.writeFileSync(path.join(out, "checkpoint-10", "state.json"), "{}");
    fs.mkdirSync(path.join(out, "logs"));
    fs.writeFileSync(path.join(out, "logs", "events.txt"), "x");
    fs.writeFileSync(path.join(out, ".tmp-partial"), "x");
    await assert.rejects(uploadFolder("me/my-controlnet", out, { hubUrl: server.url }), /needs a token: log in with `hf auth login`.*set HF_TOKEN/);
    const res = await uploadFolder("me/my-controlnet", out, { hubUrl: server.url, token: TOKEN, ignorePatterns: ["checkpoint-*"] });
    assert.match(res.commit, /^[0-9a-f]{40}$/);
    const files = server.filesAt("me/my-controlnet")!;
    assert.deepEqual([...files.keys()].sort(), [".gitattributes", "config.json", "diffusion_pytorch_model.safetensors", "logs/events.txt"]);
    assert.deepEqual(files.get("diffusion_pytorch_model.safetensors"), fs.readFileSync(path.join(out, "diffusion_pytorch_model.safetensors")));
    assert.ok(server.requests.some((r) => r.method === "PUT" && r.url.startsWith("/__lfs/")), "weights went through LFS");
    // A second upload to the existing repo makes a new commit.
    fs.writeFileSync(path.join(out, "README.md"), "# my controlnet\n");
    const res2 = await uploadFolder("me/my-controlnet", out, { hubUrl: server.url, token: TOKEN, ignorePatterns: ["checkpoint-*", "logs/"] });
    assert.notEqual(res2.commit, res.commit);
    assert.ok(server.filesAt("me/my-controlnet")!.has("README.md"));
    const back = await resolveModel("me/my-controlnet", { hubUrl: server.url, cacheDir: newCache() });
    assert.deepEqual(loadModelFolder(back).tensors.get("w")!.data, f32([600], 7).data);
    await assert.rejects(uploadFolder("me/other", out, { hubUrl: server.url, token: "hf_badTokenSECRET" }), (e: HubError) => {
      assert.equal(e.status, 401);
      assert.ok(!e.message.includes("hf_badTokenSECRET"));
      return true;
    });
  });
});

describe("login token file and create_repo", () => {
  const withEnv = (env: Record<string, string | undefined>, fn: () => void) => {
    const saved = Object.fromEntries(Object.keys(env).map((k) => [k, process.env[k]]));
    for (const [k, v] of Object.entries(env)) if (v === undefined) delete process.env[k]; else process.env[k] = v;
    try { fn(); } finally {
      for (const [k, v] of Object.entries(saved)) if (v === undefined) delete process.env[k]; else process.env[k] = v;
    }
  };

  test("the token comes from the option, HF_TOKEN, then the file `hf auth login` wrote ($HF_TOKEN_PATH, $HF_HOME/token, $XDG_CACHE_HOME/huggingface/token)", () => {
    const home = path.join(root, "token-home");
    fs.mkdirSync(home, { recursive: true });
    fs.writeFileSync(path.join(home, "token"), "  hf_fromHomeFile123\n");
    const explicit = path.join(root, "explicit-token");
    fs.writeFileSync(explicit, "hf_fromTokenPath456\n");
    withEnv({ HF_HOME: home, HF_TOKEN_PATH: undefined, HF_TOKEN: undefined }, () => {
      assert.equal(hfTokenPath(), path.join(home, "token"));
      assert.equal(hubToken(), "hf_fromHomeFile123"); // trimmed, as huggingface_hub strips it
      assert.equal(hubToken({ token: "hf_option" }), "hf_option");
    });
    withEnv({ HF_HOME: home, HF_TOKEN_PATH: explicit, HF_TOKEN: undefined }, () => assert.equal(hubToken(), "hf_fromTokenPath456"));
    withEnv({ HF_HOME: home, HF_TOKEN_PATH: explicit, HF_TOKEN: "hf_env789" }, () => assert.equal(hubToken(), "hf_env789"));
    const xdg = path.join(root, "xdg");
    fs.mkdirSync(path.join(xdg, "huggingface"), { recursive: true });
    fs.writeFileSync(path.join(xdg, "huggingface", "token"), "hf_fromXdg000");
    withEnv({ HF_HOME: undefined, HF_TOKEN_PATH: undefined, XDG_CACHE_HOME: xdg, HF_TOKEN: undefined }, () => assert.equal(hubToken(), "hf_fromXdg000"));
    // not logged in (no file) and an empty file: no token
    withEnv({ HF_HOME: path.join(root, "nobody"), HF_TOKEN_PATH: undefined }, () => assert.equal(hubToken(), undefined));
    fs.writeFileSync(explicit, "\n");
    withEnv({ HF_TOKEN_PATH: explicit }, () => assert.equal(hubToken(), undefined));
  });

  test("the default cache is huggingface_hub's HF_HUB_CACHE ($HF_HUB_CACHE, $HUGGINGFACE_HUB_CACHE, $HF_HOME/hub, $XDG_CACHE_HOME/huggingface/hub, ~/.cache/huggingface/hub), so Python's downloads are reused", () => {
    const clear = { CONTROLNET_TS_HUB_CACHE: undefined, HF_HUB_CACHE: undefined, HUGGINGFACE_HUB_CACHE: undefined, HF_HOME: undefined, XDG_CACHE_HOME: undefined };
    withEnv(clear, () => assert.equal(hubCacheDir(), path.join(os.homedir(), ".cache", "huggingface", "hub")));
    withEnv({ ...clear, XDG_CACHE_HOME: "/x/cache" }, () => assert.equal(hubCacheDir(), "/x/cache/huggingface/hub"));
    withEnv({ ...clear, XDG_CACHE_HOME: "/x/cache", HF_HOME: "/h/home" }, () => {
      assert.equal(hubCacheDir(), "/h/home/hub");
      assert.equal(hfTokenPath(), "/h/home/token"); // the same HF_HOME as the token
    });
    withEnv({ ...clear, HF_HOME: "~/hf", HUGGINGFACE_HUB_CACHE: "/legacy" }, () => assert.equal(hubCacheDir(), "/legacy"));
    withEnv({ ...clear, HF_HOME: "~/hf" }, () => assert.equal(hubCacheDir(), path.join(os.homedir(), "hf", "hub")));
    // expanded as Python's expanduser + expandvars; an unset variable stays as written
    withEnv({ ...clear, HF_HOME: "/h", HF_HUB_CACHE: "$CN_TEST_ROOT/${CN_TEST_SUB}/$CN_TEST_UNSET", CN_TEST_ROOT: "/r", CN_TEST_SUB: "s", CN_TEST_UNSET: undefined }, () =>
      assert.equal(hubCacheDir(), "/r/s/$CN_TEST_UNSET"));
    withEnv({ ...clear, HF_HOME: "/h", HF_HUB_CACHE: "~/hc", HUGGINGFACE_HUB_CACHE: "/legacy" }, () => assert.equal(hubCacheDir(), path.join(os.homedir(), "hc")));
    // ours first, then the option
    withEnv({ ...clear, HF_HUB_CACHE: "/hc", CONTROLNET_TS_HUB_CACHE: "/ours" }, () => {
      assert.equal(hubCacheDir(), "/ours");
      assert.equal(hubCacheDir({ cacheDir: "/opt" }), "/opt");
    });
  });

  test("a cache Python's huggingface_hub filled under $HF_HOME/hub is used as is (offline: no request)", async () => {
    const home = path.join(root, "py-home");
    const sha = "0123456789abcdef0123456789abcdef01234567";
    const repo = path.join(home, "hub", "models--org--py-cn");
    const blob = path.join(repo, "blobs", "d7edf6bd2a681fb0175f7735299831ee1b22b812");
    fs.mkdirSync(path.dirname(blob), { recursive: true });
    fs.writeFileSync(blob, JSON.stringify({ _class_name: "ControlNetModel" }));
    fs.mkdirSync(path.join(repo, "snapshots", sha), { recursive: true });
    fs.symlinkSync(path.join("..", "..", "blobs", path.basename(blob)), path.join(repo, "snapshots", sha, "config.json"));
    fs.mkdirSync(path.join(repo, "refs"));
    fs.writeFileSync(path.join(repo, "refs", "main"), sha);
    const before = server.requests.length;
    const saved = { HF_HOME: process.env.HF_HOME, HF_HUB_OFFLINE: process.env.HF_HUB_OFFLINE };
    process.env.HF_HOME = home;
    process.env.HF_HUB_OFFLINE = "1";
    try {
      const file = await hubDownload("org/py-cn", "config.json", { hubUrl: server.url });
      assert.equal(file, path.join(repo, "snapshots", sha, "config.json"));
      assert.equal(JSON.parse(fs.readFileSync(file, "utf8"))._class_name, "ControlNetModel");
    } finally {
      for (const [k, v] of Object.entries(saved)) if (v === undefined) delete process.env[k]; else process.env[k] = v;
    }
    assert.equal(server.requests.length, before);
  });

  test("createRepo: a bare name goes under the token's user (whoami), an existing repo is fine (exist_ok), foreign namespaces and missing tokens are one clear error", async () => {
    const alice = "hf_aliceSECRETtoken11";
    server.addUser(alice, "alice", ["team"]);
    const r = await createRepo("my-cn", { hubUrl: server.url, token: alice });
    assert.deepEqual(r, { repoId: "alice/my-cn", url: `${server.url}/alice/my-cn`, created: true });
    assert.ok(server.filesAt("alice/my-cn"), "repo exists on the hub");
    assert.ok(server.requests.some((q) => q.url === "/api/whoami-v2"));
    // exist_ok: again, and with the full id
    assert.deepEqual(await createRepo("alice/my-cn", { hubUrl: server.url, token: alice }), { ...r, created: false });
    assert.equal((await createRepo("team/shared", { hubUrl: server.url, token: alice })).repoId, "team/shared");
    await assert.rejects(createRepo("bob/x", { hubUrl: server.url, token: alice }), (e: HubError) => {
      assert.equal(e.status, 403);
      assert.match(e.message, /may not create hub model repo bob\/x \(HTTP 403\)/);
      assert.ok(!e.message.includes(alice));
      return true;
    });
    await assert.rejects(createRepo("my-cn", { hubUrl: server.url, token: "hf_rejectedSECRET000" }), (e: HubError) => {
      assert.equal(e.status, 401);
      assert.match(e.message, /rejected the token \(HTTP 401\)/);
      assert.ok(!e.message.includes("hf_rejectedSECRET000"));
      return true;
    });
    await assert.rejects(createRepo("my-cn", { hubUrl: server.url }), /Creating hub repo my-cn needs a token: log in with `hf auth login`/);
  });
});
