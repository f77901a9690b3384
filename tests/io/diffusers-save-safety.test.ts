/**
 * What a model save must not destroy (lib/io/diffusers.ts):
 *   1. the user's own .safetensors in output_dir (only our writer's names for the same weights are replaced);
 *   2. a folder holding another model (its config.json of another class is never replaced);
 *   3. writeFileAtomic's temporary after a kill -9 between write and rename: hidden (push skips it), cleaned next time.
 */
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { spawnSync } from "node:child_process";
import { describe, test } from "node:test";
import { checkSaveTarget, loadModelFolder, saveModelFolder, writeFileAtomic } from "../../lib/io/diffusers.js";
import { uploadFolder } from "../../lib/io/hub.js";
import { RUN_FOLDER_PUSH_IGNORE } from "../../lib/training/run.js";
import { HubServer } from "./hub-server.js";
import type { HostTensor } from "../../lib/io/safetensors.js";
import { f32 } from "./tensors.js";
import { tempDir } from "../helpers.js";

// the push below must not see the developer's hub settings
for (const k of ["HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "HF_ENDPOINT", "HF_TOKEN_PATH"]) delete process.env[k];
const root = tempDir("diffusers-safety-");
process.env.HF_HOME = path.join(root, "hf-home");
let n = 0;
const fresh = (name = "m") => path.join(root, `${n++}-${name}`);

const weights = (seed = 1): Map<string, HostTensor> => new Map([
  ["conv_in.weight", f32([4, 3, 3, 3], seed)],
  ["conv_in.bias", f32([4], seed + 1)],
  ["time_embedding.linear_1.weight", f32([8, 4], seed + 2)],
]);
const listing = (dir: string) => fs.readdirSync(dir).sort();
/** Every file of a folder with its bytes (to prove a refused save changed nothing). */
const snapshot = (dir: string) => new Map(listing(dir).map((f) => [f, fs.readFileSync(path.join(dir, f))]));
/** The pid of a process that has exited (a writer that died). */
const deadPid = () => spawnSync(process.execPath, ["-e", "0"]).pid!;

describe("defect 1: a save removes only what a save of ours wrote", () => {
  test("the audit's repro: the user's .safetensors in output_dir all survive the final save; the variant lookalikes are named", () => {
    const dir = fresh("output");
    // an earlier sharded save of ours, then the user's files beside it
    saveModelFolder(dir, { className: "ControlNetModel", config: { v: 1 }, tensors: weights(1), maxShardBytes: 200 });
    const earlier = listing(dir).filter((f) => f.startsWith("diffusion_pytorch_model"));
    assert.ok(earlier.includes("diffusion_pytorch_model.safetensors.index.json") && earlier.some((f) => /-00001-of-0000\d\.safetensors$/.test(f)));
    const mine: Record<string, string> = {
      "diffusion_pytorch_model_backup.safetensors": "backup",
      "diffusion_pytorch_model.step500.safetensors": "step 500",
      "diffusion_pytorch_model.fp16.safetensors": "an fp16 export",
      "my.safetensors": "mine",
      "diffusion_pytorch_model.bin": "an old pickle",
    };
    for (const [f, text] of Object.entries(mine)) fs.writeFileSync(path.join(dir, f), text);
    const lines: string[] = [];
    saveModelFolder(dir, { className: "ControlNetModel", config: { v: 2 }, tensors: weights(5), warn: (l) => lines.push(l) });

    // our earlier shards and their index are gone (diffusers would take the stale index over the new single file)
    assert.deepEqual(listing(dir), ["config.json", "diffusion_pytorch_model.safetensors", ...Object.keys(mine)].sort());
    for (const [f, text] of Object.entries(mine)) assert.equal(fs.readFileSync(path.join(dir, f), "utf8"), text, `${f} kept as it was`);
    const loaded = loadModelFolder(dir);
    assert.equal(loaded.config.v, 2);
    assert.deepEqual(loaded.tensors.get("conv_in.bias")!.data, weights(5).get("conv_in.bias")!.data, "the new weights load");

    // one line naming what a loader could take instead of the new weights, and how; not the user's other files
    assert.equal(lines.length, 1, lines.join("\n"));
    const [line] = lines as [string];
    assert.ok(!line.includes("\n"));
    assert.ok(line.includes(dir));
    for (const f of ["diffusion_pytorch_model.step500.safetensors", "diffusion_pytorch_model.fp16.safetensors", "diffusion_pytorch_model.bin"]) {
      assert.ok(line.includes(f), `${f} named: ${line}`);
    }
    assert.match(line, /variant="step500"/);
    assert.match(line, /variant="fp16"/);
    assert.match(line, /use_safetensors=False/);
    assert.ok(!line.includes("my.safetensors") && !line.includes("_backup"), `the user's unrelated files are not named: ${line}`);
  });

  test("a sharded save over an earlier single file removes the single file (our loader would read it first)", () => {
    const dir = fresh();
    saveModelFolder(dir, { className: "X", config: { v: 1 }, tensors: weights(1) });
    const lines: string[] = [];
    saveModelFolder(dir, { className: "X", config: { v: 2 }, tensors: weights(7), maxShardBytes: 200, warn: (l) => lines.push(l) });
    assert.ok(!fs.existsSync(path.join(dir, "diffusion_pytorch_model.safetensors")));
    assert.ok(fs.existsSync(path.join(dir, "diffusion_pytorch_model.safetensors.index.json")));
    assert.deepEqual(loadModelFolder(dir).tensors.get("conv_in.weight")!.data, weights(7).get("conv_in.weight")!.data);
    // fewer shards now: the earlier save's extra shard names go too
    const before = listing(dir).filter((f) => /-of-/.test(f));
    saveModelFolder(dir, { className: "X", config: { v: 3 }, tensors: weights(8), maxShardBytes: 500, warn: (l) => lines.push(l) });
    const after = listing(dir).filter((f) => /-of-/.test(f));
    assert.ok(after.length < before.length, `${before} → ${after}`);
    assert.deepEqual(listing(dir), ["config.json", "diffusion_pytorch_model.safetensors.index.json", ...after].sort());
    assert.deepEqual(lines, [], "nothing kept, nothing to say");
  });

  test("a transformers-style save replaces model*.safetensors names only, never diffusion_pytorch_model ones", () => {
    const dir = fresh();
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, "diffusion_pytorch_model.safetensors"), "not this save's name");
    fs.writeFileSync(path.join(dir, "model-00001-of-00002.safetensors"), "an earlier shard");
    fs.writeFileSync(path.join(dir, "model.safetensors.index.json"), "{}");
    fs.writeFileSync(path.join(dir, "model_ema.safetensors"), "mine");
    saveModelFolder(dir, { className: "CLIPTextModel", config: {}, tensors: weights(), weightsName: "model.safetensors", warn: () => {} });
    assert.deepEqual(listing(dir), ["config.json", "diffusion_pytorch_model.safetensors", "model.safetensors", "model_ema.safetensors"]);
  });
});

describe("defect 2: a save refuses a folder that holds another model", () => {
  test("--output_dir = a base model's unet/: one line naming the folder and the class found, nothing written", () => {
    const unet = fresh("unet");
    saveModelFolder(unet, { className: "UNet2DConditionModel", config: { sample_size: 64 }, tensors: weights(3) });
    fs.writeFileSync(path.join(unet, "diffusion_pytorch_model_backup.safetensors"), "mine");
    const before = snapshot(unet);
    const parentBefore = listing(path.dirname(unet));
    assert.throws(
      () => saveModelFolder(unet, { className: "ControlNetModel", config: { v: 1 }, tensors: weights(9) }),
      (e: Error) => {
        assert.ok(!e.message.includes("\n"), "one line");
        assert.ok(e.message.includes(unet), "names the folder");
        assert.match(e.message, /UNet2DConditionModel/);
        assert.match(e.message, /ControlNetModel/);
        assert.match(e.message, /nothing was written/);
        return true;
      },
    );
    assert.deepEqual(snapshot(unet), before, "every file as it was (no temporaries either)");
    assert.deepEqual(listing(path.dirname(unet)), parentBefore);
    assert.equal(loadModelFolder(unet).config._class_name, "UNet2DConditionModel");
  });

  test("a transformers model's folder and an unreadable config.json are refused too; the same class and no config are fine", () => {
    const te = fresh("text_encoder");
    saveModelFolder(te, { className: "CLIPTextModel", config: {}, tensors: weights(), weightsName: "model.safetensors" });
    const before = snapshot(te);
    assert.throws(() => saveModelFolder(te, { className: "ControlNetModel", config: {}, tensors: weights() }), /Not saving a ControlNetModel into .*text_encoder.*a CLIPTextModel's/);
    assert.deepEqual(snapshot(te), before);

    const junk = fresh("junk");
    fs.mkdirSync(junk);
    fs.writeFileSync(path.join(junk, "config.json"), "{ not json");
    assert.throws(() => saveModelFolder(junk, { className: "ControlNetModel", config: {}, tensors: weights() }), /Not saving a ControlNetModel into .*junk: its config\.json is not a model config/);
    assert.deepEqual(listing(junk), ["config.json"]);

    const bare = fresh("bare");
    fs.mkdirSync(bare);
    fs.writeFileSync(path.join(bare, "config.json"), JSON.stringify({ some: "tool's config" }));
    assert.throws(() => saveModelFolder(bare, { className: "ControlNetModel", config: {}, tensors: weights() }), /one without _class_name or architectures/);

    const out = fresh("out");
    saveModelFolder(out, { className: "ControlNetModel", config: { v: 1 }, tensors: weights() });
    saveModelFolder(out, { className: "ControlNetModel", config: { v: 2 }, tensors: weights() });
    assert.equal(loadModelFolder(out).config.v, 2, "an earlier save of the same class is replaced");
    assert.doesNotThrow(() => checkSaveTarget(fresh("none"), "ControlNetModel"), "a folder that does not exist yet");
  });
});

describe("defect 3: writeFileAtomic after a kill -9 between write and rename", () => {
  test("the orphan is hidden (a push leaves it out), and the next write of the same file removes it", async () => {
    const dir = fresh("card");
    fs.mkdirSync(dir);
    const file = path.join(dir, "README.md");
    fs.writeFileSync(file, "old card\n");
    // a real kill -9: the child's rename is replaced by SIGKILL to itself, after the temporary is written and synced
    const child = spawnSync(process.execPath, ["--import", "tsx", "--input-type=module", "-e", `
      import fs from "node:fs";
      const { writeFileAtomic } = await import(${JSON.stringify(new URL("../../lib/io/diffusers.ts", import.meta.url).href)});
      fs.renameSync = () => process.kill(process.pid, "SIGKILL");
      writeFileAtomic(${JSON.stringify(file)}, "new card\\n");
    `], { encoding: "utf8", cwd: process.cwd() });
    assert.equal(child.signal, "SIGKILL", child.stderr);
    const orphans = listing(dir).filter((f) => f.includes(".tmp-"));
    assert.deepEqual(orphans, [`.README.md.tmp-${child.pid}`], "the kill left the temporary, under a hidden name");
    assert.equal(fs.readFileSync(file, "utf8"), "old card\n", "the file itself untouched");

    // a push of the folder as the run pushes it leaves the orphan out
    const server = await new HubServer().start();
    try {
      server.tokens.add("hf_TestToken123");
      await uploadFolder("me/card", dir, { hubUrl: server.url, token: "hf_TestToken123", ignorePatterns: [...RUN_FOLDER_PUSH_IGNORE] });
      assert.deepEqual([...server.filesAt("me/card")!.keys()].sort(), [".gitattributes", "README.md"]);
    } finally {
      await server.close();
    }

    // leftovers of earlier versions (`README.md.tmp-<pid>`) of a dead writer, a live writer's, another file's
    const old = `README.md.tmp-${deadPid()}`;
    const live = `.README.md.tmp-${process.ppid}`;
    const otherFile = `.train_log.jsonl.tmp-${deadPid()}`;
    for (const f of [old, live, otherFile]) fs.writeFileSync(path.join(dir, f), "partial");
    writeFileAtomic(file, "new card\n");
    assert.equal(fs.readFileSync(file, "utf8"), "new card\n");
    assert.deepEqual(listing(dir), [live, otherFile, "README.md"].sort(), "dead writers' temporaries of README.md removed; a live one and another file's kept");
    // our own pid on a temporary we are not writing (a previous pid-1 run in a container) is stale too
    fs.writeFileSync(path.join(dir, `README.md.tmp-${process.pid}`), "partial");
    writeFileAtomic(file, "newer\n");
    assert.ok(!fs.existsSync(path.join(dir, `README.md.tmp-${process.pid}`)));
    assert.equal(fs.readFileSync(file, "utf8"), "newer\n");
  });
});
