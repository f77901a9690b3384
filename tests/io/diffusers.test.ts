import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { spawnSync } from "node:child_process";
import { describe, test } from "node:test";
import {
  addVariant, DIFFUSERS_VERSION, findWeightFiles, holdTemp, loadModelFolder, loadPipelineFolder, pipelineComponent, saveModelFolder,
  TRANSFORMERS_WEIGHTS_NAME,
} from "../../lib/io/diffusers.js";
import { readSafetensors, writeSafetensors } from "../../lib/io/safetensors.js";
import type { HostTensor } from "../../lib/io/safetensors.js";
import { f32 } from "./tensors.js";
import { tempDir } from "../helpers.js";

const root = tempDir("diffusers-test-");
let n = 0;
const fresh = (name = "m") => path.join(root, `${n++}-${name}`);


const weights = (): Map<string, HostTensor> => new Map([
  ["conv_in.weight", f32([4, 3, 3, 3], 1)],
  ["conv_in.bias", f32([4], 2)],
  ["time_embedding.linear_1.weight", f32([8, 4], 3)],
  ["time_embedding.linear_1.bias", f32([8], 4)],
]);

function assertSameTensors(a: Map<string, HostTensor>, b: Map<string, HostTensor>): void {
  assert.deepEqual([...a.keys()].sort(), [...b.keys()].sort());
  for (const [k, t] of a) {
    assert.deepEqual(b.get(k)!.shape, t.shape, k);
    assert.deepEqual(b.get(k)!.data, t.data, k);
  }
}

describe("model folders", () => {
  test("save → load round trip; config.json as diffusers writes it", () => {
    const dir = fresh();
    const config = { in_channels: 4, block_out_channels: [4, 8], norm_eps: 1e-5, nested: { z: 1, a: 2 } };
    saveModelFolder(dir, { className: "ControlNetModel", config, tensors: weights() });
    assert.deepEqual(fs.readdirSync(dir).sort(), ["config.json", "diffusion_pytorch_model.safetensors"]);
    const text = fs.readFileSync(path.join(dir, "config.json"), "utf8");
    assert.ok(text.endsWith("}\n"));
    assert.ok(text.startsWith(`{\n  "_class_name": "ControlNetModel",\n  "_diffusers_version": "${DIFFUSERS_VERSION}",\n  "block_out_channels": [`));
    assert.ok(text.indexOf('"a": 2') < text.indexOf('"z": 1'), "nested keys sorted");
    const loaded = loadModelFolder(dir);
    assert.equal(loaded.config._class_name, "ControlNetModel");
    assert.deepEqual(loaded.config.block_out_channels, [4, 8]);
    assertSameTensors(weights(), loaded.tensors);
    assert.deepEqual(readSafetensors(path.join(dir, "diffusion_pytorch_model.safetensors")).metadata, { format: "pt" });
    // Deterministic: saving again gives identical bytes.
    const dir2 = fresh();
    saveModelFolder(dir2, { className: "ControlNetModel", config, tensors: weights() });
    for (const f of ["config.json", "diffusion_pytorch_model.safetensors"]) {
      assert.deepEqual(fs.readFileSync(path.join(dir, f)), fs.readFileSync(path.join(dir2, f)), f);
    }
  });

  test("transformers-style folder (model.safetensors, architectures)", () => {
    const dir = fresh();
    saveModelFolder(dir, { className: "CLIPTextModel", config: { model_type: "clip_text_model", hidden_size: 32 }, tensors: weights(), weightsName: TRANSFORMERS_WEIGHTS_NAME });
    assert.deepEqual(fs.readdirSync(dir).sort(), ["config.json", "model.safetensors"]);
    const { config, tensors } = loadModelFolder(dir);
    assert.deepEqual(config.architectures, ["CLIPTextModel"]);
    assert.equal(config._class_name, undefined);
    assert.equal(typeof config.transformers_version, "string");
    assertSameTensors(weights(), tensors);
  });

  test("sharded save → index.json → load; `only` reads a subset across shards", () => {
    const dir = fresh();
    saveModelFolder(dir, { className: "UNet2DConditionModel", config: {}, tensors: weights(), maxShardBytes: 200 });
    const files = fs.readdirSync(dir).sort();
    assert.ok(files.includes("diffusion_pytorch_model.safetensors.index.json"));
    const shards = files.filter((f) => /^diffusion_pytorch_model-\d{5}-of-\d{5}\.safetensors$/.test(f));
    assert.ok(shards.length >= 2, `several shards: ${files}`);
    assert.ok(!files.includes("diffusion_pytorch_model.safetensors"));
    const index = JSON.parse(fs.readFileSync(path.join(dir, "diffusion_pytorch_model.safetensors.index.json"), "utf8"));
    assert.equal(index.metadata.total_size, [...weights().values()].reduce((a, t) => a + t.data.byteLength, 0));
    assertSameTensors(weights(), loadModelFolder(dir).tensors);
    const part = loadModelFolder(dir, { only: ["conv_in.bias", "time_embedding.linear_1.bias"] }).tensors;
    assert.deepEqual([...part.keys()].sort(), ["conv_in.bias", "time_embedding.linear_1.bias"]);
    assert.throws(() => loadModelFolder(dir, { only: ["nope"] }), /has no tensor named "nope"/);
  });

  test("variant files (fp16 stored as F16) and variant-specific errors", () => {
    const dir = fresh();
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, "config.json"), JSON.stringify({ _class_name: "AutoencoderKL" }));
    // A hand-built F16 file as diffusers writes with variant="fp16".
    const half = Uint16Array.from([0x3c00, 0xc000, 0x3800]); // 1, -2, 0.5
    const header = Buffer.from(JSON.stringify({ __metadata__: { format: "pt" }, w: { dtype: "F16", shape: [3], data_offsets: [0, 6] } }));
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(header.length));
    fs.writeFileSync(path.join(dir, addVariant("diffusion_pytorch_model.safetensors", "fp16")), Buffer.concat([len, header, Buffer.from(half.buffer)]));
    assert.equal(addVariant("diffusion_pytorch_model.safetensors", "fp16"), "diffusion_pytorch_model.fp16.safetensors");
    assert.equal(addVariant("model.safetensors.index.json", "fp16"), "model.safetensors.index.fp16.json");
    const t = loadModelFolder(dir, { variant: "fp16" }).tensors.get("w")!;
    assert.equal(t.dtype, "float32");
    assert.deepEqual(t.data, Float32Array.from([1, -2, 0.5]));
    assert.throws(() => loadModelFolder(dir), /No weights found in model folder .*diffusion_pytorch_model\.fp16\.safetensors \(name its variant to load one: fp16 for diffusion_pytorch_model\.fp16\.safetensors\)/);
    assert.throws(() => loadModelFolder(dir, { variant: "ema" }), /the "ema" variant/);
  });

  test("sharded variant index", () => {
    const dir = fresh();
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, "config.json"), "{}");
    writeSafetensors(path.join(dir, "model.fp16-00001-of-00002.safetensors"), { a: f32([2]) });
    writeSafetensors(path.join(dir, "model.fp16-00002-of-00002.safetensors"), { b: f32([3]) });
    fs.writeFileSync(path.join(dir, "model.safetensors.index.fp16.json"), JSON.stringify({
      metadata: { total_size: 20 },
      weight_map: { a: "model.fp16-00001-of-00002.safetensors", b: "model.fp16-00002-of-00002.safetensors" },
    }));
    const w = findWeightFiles(dir, { variant: "fp16" });
    assert.equal(w.shards.size, 2);
    assert.deepEqual([...loadModelFolder(dir, { variant: "fp16" }).tensors.keys()].sort(), ["a", "b"]);
  });

  test("hostile shard indexes: path traversal, missing shard, tensor missing from its shard", () => {
    const dir = fresh();
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, "config.json"), "{}");
    const idx = path.join(dir, "diffusion_pytorch_model.safetensors.index.json");
    fs.writeFileSync(idx, JSON.stringify({ weight_map: { a: "../../etc/passwd" } }));
    assert.throws(() => loadModelFolder(dir), /tensor "a" maps to "..\/..\/etc\/passwd", not a file name in the same folder/);
    fs.writeFileSync(idx, JSON.stringify({ weight_map: { a: "s1.safetensors" } }));
    assert.throws(() => loadModelFolder(dir), /lists s1\.safetensors, which is missing/);
    fs.writeFileSync(idx, JSON.stringify({ nope: 1 }));
    assert.throws(() => loadModelFolder(dir), /no "weight_map" object/);
    fs.writeFileSync(idx, "{oops");
    assert.throws(() => loadModelFolder(dir), /Invalid shard index .*not valid JSON/);
    writeSafetensors(path.join(dir, "s1.safetensors"), { a: f32([1]) });
    writeSafetensors(path.join(dir, "s2.safetensors"), { b: f32([1]) });
    fs.writeFileSync(idx, JSON.stringify({ weight_map: { a: "s1.safetensors", b: "s1.safetensors" } }));
    assert.throws(() => loadModelFolder(dir), /s1\.safetensors has no tensor named "b"/);
  });

  test("pickles are refused with the reason and the conversion command", () => {
    const dir = fresh();
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, "config.json"), "{}");
    fs.writeFileSync(path.join(dir, "diffusion_pytorch_model.bin"), "PK\x03\x04 not really");
    for (const fn of [() => loadModelFolder(dir), () => loadModelFolder(path.join(root, "v1-5-pruned.ckpt"))]) {
      assert.throws(fn, (e: Error) => {
        assert.match(e.message, /Refusing to load .*(diffusion_pytorch_model\.bin|v1-5-pruned\.ckpt)/);
        assert.match(e.message, /executes code/);
        assert.match(e.message, /save_pretrained\('<out_dir>', safe_serialization=True\)/);
        return true;
      });
    }
    // With safetensors present too (like the SD1.5 repo), the safetensors are used and the pickle ignored.
    writeSafetensors(path.join(dir, "diffusion_pytorch_model.safetensors"), { a: f32([1]) });
    assert.deepEqual([...loadModelFolder(dir).tensors.keys()], ["a"]);
  });

  test("missing folder / config / weights are clear errors", () => {
    assert.throws(() => loadModelFolder(path.join(root, "absent")), /Model folder not found: .*absent/);
    const dir = fresh();
    fs.mkdirSync(dir);
    assert.throws(() => loadModelFolder(dir), /has no config\.json/);
    fs.writeFileSync(path.join(dir, "config.json"), "[1]");
    assert.throws(() => loadModelFolder(dir), /Invalid model config .*not a JSON object/);
    fs.writeFileSync(path.join(dir, "config.json"), "{}");
    assert.throws(() => loadModelFolder(dir), /No weights found in model folder/);
  });
});

describe("atomic folder saves", () => {
  test("a failing save leaves no folder and no temp folder", () => {
    const dir = fresh();
    const bad = new Map([["x", { dtype: "float32", shape: [3], data: new Float32Array(2) } as HostTensor]]);
    assert.throws(() => saveModelFolder(dir, { className: "X", config: {}, tensors: bad }), /3 elements\) but 2 values/);
    assert.ok(!fs.existsSync(dir));
    assert.deepEqual(fs.readdirSync(root).filter((f) => f.includes(path.basename(dir))), []);
  });

  test("an existing model folder is replaced only by a complete one; a failed save keeps the old", () => {
    const dir = fresh();
    saveModelFolder(dir, { className: "X", config: { v: 1 }, tensors: weights(), maxShardBytes: 200 });
    const bad = new Map([["x", { dtype: "float32", shape: [3], data: new Float32Array(2) } as HostTensor]]);
    assert.throws(() => saveModelFolder(dir, { className: "X", config: { v: 2 }, tensors: bad }));
    assert.equal(loadModelFolder(dir).config.v, 1);
    saveModelFolder(dir, { className: "X", config: { v: 3 }, tensors: { only: f32([2]) } });
    assert.deepEqual(fs.readdirSync(dir).sort(), ["config.json", "diffusion_pytorch_model.safetensors"], "old shards gone");
    assert.equal(loadModelFolder(dir).config.v, 3);
    assert.deepEqual(fs.readdirSync(root).filter((f) => f.startsWith(`.${path.basename(dir)}.`)), [], "no temp/old folders left");
  });

  test("a folder with other content (training output) keeps that content", () => {
    const dir = fresh("output");
    saveModelFolder(dir, { className: "X", config: { v: 1 }, tensors: weights(), maxShardBytes: 200 });
    fs.mkdirSync(path.join(dir, "checkpoint-10"));
    fs.writeFileSync(path.join(dir, "checkpoint-10", "state.json"), "{}");
    fs.writeFileSync(path.join(dir, "logs.txt"), "hello");
    // the user's own weights kept in the folder are not this save's (diffusers removes only its weights name's files)
    fs.writeFileSync(path.join(dir, "sd15-base.safetensors"), "mine");
    fs.writeFileSync(path.join(dir, "vae.safetensors.index.json"), "{}");
    // a variant is never written by us: it may be the user's, so it stays, and the save names it (a variant load
    // would take it instead of the new weights)
    fs.writeFileSync(path.join(dir, "diffusion_pytorch_model.fp16.safetensors"), "an earlier variant save");
    const lines: string[] = [];
    saveModelFolder(dir, { className: "X", config: { v: 2 }, tensors: weights(), warn: (l) => lines.push(l) });
    assert.deepEqual(fs.readdirSync(dir).sort(), ["checkpoint-10", "config.json", "diffusion_pytorch_model.fp16.safetensors", "diffusion_pytorch_model.safetensors", "logs.txt", "sd15-base.safetensors", "vae.safetensors.index.json"]);
    assert.equal(lines.length, 1);
    assert.match(lines[0]!, /kept diffusion_pytorch_model\.fp16\.safetensors \(not written by this save\): from_pretrained with variant="fp16" would load it instead of the new weights/);
    assert.equal(fs.readFileSync(path.join(dir, "sd15-base.safetensors"), "utf8"), "mine");
    assert.equal(fs.readFileSync(path.join(dir, "logs.txt"), "utf8"), "hello");
    assert.equal(loadModelFolder(dir).config.v, 2);
    assertSameTensors(weights(), loadModelFolder(dir).tensors);
  });
});

describe("saves onto another filesystem and after crashes (issue 25 #1)", () => {
  /** The pid of a process that has exited (a writer that died). */
  const deadPid = () => spawnSync(process.execPath, ["-e", "0"]).pid!;

  test("output_dir is a tmpfs mount point: the save succeeds (no cross-device rename) and leaves nothing in the parent", (t) => {
    const mnt = fresh("mnt");
    fs.mkdirSync(mnt);
    const m = spawnSync("mount", ["-t", "tmpfs", "-o", "size=16m", "tmpfs", mnt], { encoding: "utf8" });
    if (m.status !== 0) {
      t.skip(`cannot mount a tmpfs here (${(m.stderr || m.error?.message || "").trim()}): needs root`);
      return;
    }
    try {
      assert.notEqual(fs.statSync(mnt).dev, fs.statSync(root).dev, "the mount is its own filesystem");
      saveModelFolder(mnt, { className: "X", config: { v: 1 }, tensors: weights(), maxShardBytes: 200 });
      fs.mkdirSync(path.join(mnt, "checkpoint-1"));
      saveModelFolder(mnt, { className: "X", config: { v: 2 }, tensors: weights() });
      assert.equal(loadModelFolder(mnt).config.v, 2);
      assertSameTensors(weights(), loadModelFolder(mnt).tensors);
      assert.deepEqual(fs.readdirSync(mnt).sort(), ["checkpoint-1", "config.json", "diffusion_pytorch_model.safetensors"]);
      assert.deepEqual(fs.readdirSync(root).filter((f) => f.startsWith(".") && f.includes(path.basename(mnt))), [], "no temp folders beside the mount");
    } finally {
      spawnSync("umount", [mnt]);
    }
  });

  test("temporaries of a writer that died are removed by the next save, inside output_dir and beside it", () => {
    const dir = fresh("crashed");
    saveModelFolder(dir, { className: "X", config: { v: 1 }, tensors: weights() });
    const pid = deadPid();
    const inside = path.join(dir, `.tmp-${pid}-abc123`);
    const beside = path.join(root, `.${path.basename(dir)}.tmp-${pid}-def456`); // where earlier versions wrote
    const live = path.join(dir, `.tmp-${process.pid}-zzz999`); // a save in progress in this process: kept
    const other = path.join(dir, `.tmp-${process.ppid}-yyy888`); // a live process's save: kept
    // our own pid on a temporary we are not writing: a previous run's, as in a container where every run is pid 1
    const samePid = path.join(dir, `.tmp-${process.pid}-xxx777`);
    for (const d of [inside, beside, live, other, samePid]) {
      fs.mkdirSync(d);
      fs.writeFileSync(path.join(d, "diffusion_pytorch_model.safetensors"), "partial");
    }
    const release = holdTemp(live);
    saveModelFolder(dir, { className: "X", config: { v: 2 }, tensors: weights() });
    release();
    assert.ok(!fs.existsSync(inside) && !fs.existsSync(beside), "dead writers' temporaries removed");
    assert.ok(!fs.existsSync(samePid), "a previous pid-1 run's temporary removed although its pid is ours");
    assert.ok(fs.existsSync(live) && fs.existsSync(other), "live writers' temporaries are left alone");
    fs.rmSync(live, { recursive: true });
    fs.rmSync(other, { recursive: true });
    assert.equal(loadModelFolder(dir).config.v, 2);
  });
});

describe("pipeline folders", () => {
  test("model_index.json components", () => {
    const dir = fresh("pipe");
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, "model_index.json"), JSON.stringify({
      _class_name: "StableDiffusionPipeline",
      _diffusers_version: "0.6.0",
      feature_extractor: ["transformers", "CLIPImageProcessor"],
      requires_safety_checker: true,
      safety_checker: [null, null],
      scheduler: ["diffusers", "PNDMScheduler"],
      text_encoder: ["transformers", "CLIPTextModel"],
      tokenizer: ["transformers", "CLIPTokenizer"],
      unet: ["diffusers", "UNet2DConditionModel"],
      vae: ["diffusers", "AutoencoderKL"],
    }));
    for (const c of ["scheduler", "text_encoder", "tokenizer", "unet", "vae"]) fs.mkdirSync(path.join(dir, c));
    const pipe = loadPipelineFolder(dir);
    assert.equal(pipe.className, "StableDiffusionPipeline");
    assert.equal(pipe.diffusersVersion, "0.6.0");
    assert.deepEqual([...pipe.components.keys()].sort(), ["feature_extractor", "safety_checker", "scheduler", "text_encoder", "tokenizer", "unet", "vae"]);
    const unet = pipelineComponent(pipe, "unet");
    assert.equal(unet.className, "UNet2DConditionModel");
    assert.equal(unet.library, "diffusers");
    assert.equal(unet.path, path.join(dir, "unet"));
    assert.equal(pipelineComponent(pipe, "text_encoder").library, "transformers");
    assert.throws(() => pipelineComponent(pipe, "controlnet"), /has no "controlnet" component; it has feature_extractor/);
    assert.throws(() => pipelineComponent(pipe, "safety_checker"), /disabled/);
    assert.throws(() => pipelineComponent(pipe, "feature_extractor"), /has no folder/);
    assert.throws(() => loadPipelineFolder(path.join(dir, "unet")), /has no model_index\.json/);
  });
});
