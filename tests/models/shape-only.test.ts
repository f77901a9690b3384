/** Shape-only construction: the SD1.5 ControlNet from the SD1.5 UNet config has exactly diffusers' tensors. */
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import { tf } from "../../lib/engine/index.js";
import { testEngine } from "../helpers.js";
import { AutoencoderKL, CLIPTextModel, ControlNetModel, UNet2DConditionModel } from "../../lib/models/index.js";

export const SD15_UNET_CONFIG = {
  _class_name: "UNet2DConditionModel",
  _diffusers_version: "0.6.0",
  act_fn: "silu",
  attention_head_dim: 8,
  block_out_channels: [320, 640, 1280, 1280],
  center_input_sample: false,
  cross_attention_dim: 768,
  down_block_types: ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
  downsample_padding: 1,
  flip_sin_to_cos: true,
  freq_shift: 0,
  in_channels: 4,
  layers_per_block: 2,
  mid_block_scale_factor: 1,
  norm_eps: 1e-5,
  norm_num_groups: 32,
  out_channels: 4,
  sample_size: 64,
  up_block_types: ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
};

const KEYS = "/work/shared/reference/sd15-controlnet-keys.txt";
const keysFile = fs.existsSync(KEYS) ? KEYS : new URL("../fixtures/sd15-controlnet-keys.txt", import.meta.url).pathname;

test("SD1.5 ControlNet built shape-only from the SD1.5 UNet config: 340 tensors, 361,279,120 params, exact names and shapes", async () => {
  await testEngine();
  const before = tf.memory().numBytes;
  const unet = new UNet2DConditionModel(SD15_UNET_CONFIG, { shapeOnly: true });
  const cn = ControlNetModel.fromUnet(unet);
  assert.equal(tf.memory().numBytes, before, "shape-only construction allocated tensor memory");
  assert.equal(cn.materialized, false);

  const lines = fs.readFileSync(keysFile, "utf8").trim().split("\n");
  const header = lines.shift()!;
  const m = /num_tensors (\d+) num_params (\d+)/.exec(header)!;
  const expected = new Map(lines.map((l) => {
    const [name, shape] = l.split(" [");
    return [name!, JSON.parse(`[${shape}`) as number[]] as const;
  }));
  const specs = cn.parameterSpecs();
  const missing = [...expected.keys()].filter((k) => !specs.has(k));
  const extra = [...specs.keys()].filter((k) => !expected.has(k));
  assert.deepEqual({ missing, extra }, { missing: [], extra: [] });
  for (const [name, shape] of expected) assert.deepEqual(specs.get(name)!.shape, shape, name);
  assert.equal(specs.size, Number(m[1]));
  assert.equal(specs.size, 340);
  assert.equal(cn.numParameters(), Number(m[2]));
  assert.equal(cn.numParameters(), 361_279_120);
  // the UNet itself: 859,520,964 parameters (a third-party audit of SD1.5)
  assert.equal(unet.numParameters(), 859_520_964);
  // forward on a shape-only model is a clear error, not a crash
  assert.throws(() => cn.namedParameters(), /shape-only/);
});

test("SD2-style config (linear projection, head-dim list, 1024 cross-attention) declares diffusers' shapes", async () => {
  await testEngine();
  const unet = new UNet2DConditionModel(
    { ...SD15_UNET_CONFIG, attention_head_dim: [5, 10, 20, 20], use_linear_projection: true, cross_attention_dim: 1024 },
    { shapeOnly: true },
  );
  const s = unet.parameterSpecs();
  assert.deepEqual(s.get("down_blocks.0.attentions.0.proj_in.weight")!.shape, [320, 320]);
  assert.deepEqual(s.get("down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight")!.shape, [320, 1024]);
  assert.deepEqual(s.get("mid_block.attentions.0.proj_out.weight")!.shape, [1280, 1280]);
  // SD2.x UNet: 865,910,724 parameters
  assert.equal(unet.numParameters(), 865_910_724);
});

test("bench-mid config: UNet 4,473,572 and ControlNet 2,514,224 parameters (bench-configs.md)", async () => {
  await testEngine();
  const { BENCH_MID_UNET, BENCH_MID_PARAMS } = await import("../../bench/models.js");
  const unet = new UNet2DConditionModel(BENCH_MID_UNET, { shapeOnly: true });
  assert.equal(unet.numParameters(), BENCH_MID_PARAMS.unet);
  assert.equal(ControlNetModel.fromUnet(unet).numParameters(), BENCH_MID_PARAMS.controlnet);
});

test("real SD1.5 / SD2.1 components (tests/fixtures/sd_shapes, from diffusers on the meta device): exact names and shapes, shape-only", async () => {
  await testEngine();
  const dir = new URL("../fixtures/sd_shapes/", import.meta.url).pathname;
  const configs = (JSON.parse(fs.readFileSync(dir + "README.json", "utf8")) as { configs: Record<string, Record<string, unknown>> }).configs;
  const read = (name: string) => {
    const lines = fs.readFileSync(`${dir}${name}-keys.txt`, "utf8").trim().split("\n");
    const m = /num_tensors (\d+) num_params (\d+)/.exec(lines.shift()!)!;
    return { tensors: Number(m[1]), params: Number(m[2]), shapes: new Map(lines.map((l) => { const [n, s] = l.split(" ["); return [n!, JSON.parse(`[${s}`) as number[]] as const; })) };
  };
  const check = (name: string, model: { parameterSpecs(): Map<string, { shape: number[] }>; numParameters(): number }) => {
    const want = read(name);
    const specs = model.parameterSpecs();
    const missing = [...want.shapes.keys()].filter((k) => !specs.has(k));
    const extra = [...specs.keys()].filter((k) => !want.shapes.has(k));
    assert.deepEqual({ name, missing, extra }, { name, missing: [], extra: [] });
    for (const [k, s] of want.shapes) assert.deepEqual(specs.get(k)!.shape, s, `${name} ${k}`);
    assert.equal(specs.size, want.tensors, name);
    assert.equal(model.numParameters(), want.params, name);
  };
  const before = tf.memory().numBytes;
  for (const v of ["sd15", "sd21"]) {
    const unet = new UNet2DConditionModel(configs[`${v}-unet`]!, { shapeOnly: true });
    check(`${v}-unet`, unet);
    check(`${v}-controlnet`, ControlNetModel.fromUnet(unet));
    check(`${v}-text_encoder`, new CLIPTextModel(configs[`${v}-text_encoder`]!, { shapeOnly: true }));
  }
  check("sd-vae", new AutoencoderKL(configs["sd-vae"]!, { shapeOnly: true }));
  assert.equal(tf.memory().numBytes, before, "shape-only construction allocated tensor memory");
});
