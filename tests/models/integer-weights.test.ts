/**
 * Integer-typed weights are refused, not loaded as floats (lib/models/module.ts loadState): the audit's repro turned
 * `conv_in.bias` of a saved ControlNet into I32 (same bytes) and training ran on 1042406592.0-sized values.
 * F16 / F64 weights still load (the reader converts them to float32).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { tf } from "../../lib/engine/index.js";
import { loadModelFolder } from "../../lib/io/diffusers.js";
import { readSafetensors } from "../../lib/io/safetensors.js";
import type { HostTensor } from "../../lib/io/safetensors.js";
import { testEngine, tempDir } from "../helpers.js";
import { ControlNetModel, UNet2DConditionModel } from "../../lib/models/index.js";
import { TINY_UNET } from "./tiny.js";

const root = tempDir("cn-int-weights-");

/** float32 → IEEE half bits (the test's values are exact in half precision). */
function toHalf(x: number): number {
  const f = new Float32Array([x]);
  const b = new Uint32Array(f.buffer)[0]!;
  const sign = (b >>> 16) & 0x8000;
  const exp = ((b >>> 23) & 0xff) - 127 + 15;
  const mant = (b >>> 13) & 0x3ff;
  if (x === 0) return sign;
  assert.ok(exp > 0 && exp < 31 && (b & 0x1fff) === 0, `${x} is not exact in float16`);
  return sign | (exp << 10) | mant;
}

/** Rewrites a safetensors file with some tensors stored under another dtype: "I32" keeps the float32 bytes (the
 *  audit's edit), "F16"/"F64" convert the values. */
function rewriteDtypes(file: string, dtypes: Record<string, "I32" | "F16" | "F64">): void {
  const { tensors, metadata } = readSafetensors(file);
  const header: Record<string, unknown> = { __metadata__: metadata };
  const chunks: Buffer[] = [];
  let offset = 0;
  for (const [name, t] of tensors) {
    const want = dtypes[name] ?? "F32";
    const data = t.data as Float32Array;
    let bytes: Buffer;
    if (want === "F16") bytes = Buffer.from(Uint16Array.from(data, toHalf).buffer);
    else if (want === "F64") bytes = Buffer.from(Float64Array.from(data).buffer);
    else bytes = Buffer.from(data.buffer, data.byteOffset, data.byteLength); // F32, or I32 with the same bytes
    header[name] = { dtype: want, shape: t.shape, data_offsets: [offset, offset + bytes.length] };
    chunks.push(bytes);
    offset += bytes.length;
  }
  const json = Buffer.from(JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  fs.writeFileSync(file, Buffer.concat([len, json, ...chunks]));
}

const BIAS = [0.375, -0.5, 0.25, 1]; // exact in float16

async function savedControlNet(name: string): Promise<{ dir: string; file: string }> {
  await testEngine();
  const cn = ControlNetModel.fromUnet(new UNet2DConditionModel(TINY_UNET, { seed: 12 }), { conditioningEmbeddingOutChannels: [16, 32], seed: 13 });
  cn.namedParameters().get("conv_in.bias")!.variable.assign(tf.tensor1d(BIAS));
  const dir = path.join(root, name);
  cn.savePretrained(dir);
  cn.dispose();
  return { dir, file: path.join(dir, "diffusion_pytorch_model.safetensors") };
}

test("an I32 conv_in.bias (same bytes as the floats) is refused in one line naming the tensor, its dtype and the file", async () => {
  const { dir, file } = await savedControlNet("i32");
  const good = ControlNetModel.fromPretrained(dir); // loads before the edit
  rewriteDtypes(file, { "conv_in.bias": "I32" });
  assert.throws(() => ControlNetModel.fromPretrained(dir), (e: Error) => {
    assert.ok(!e.message.includes("\n"), `one line: ${e.message}`);
    assert.match(e.message, /^ControlNetModel\.loadState: integer dtype for 1 float parameter\(s\), refusing to load them as floats: conv_in\.bias is I32 in /);
    assert.ok(e.message.includes(file), `names the file: ${e.message}`);
    assert.match(e.message, /nothing was loaded/);
    assert.ok(!/shape mismatch|missing|unexpected/.test(e.message), "no other problem reported");
    return true;
  });
  // a model loaded earlier keeps every value: nothing of the refused state dict is assigned
  const before = good.stateDict();
  assert.throws(() => good.loadState(loadModelFolder(dir).tensors), /conv_in\.bias is I32/);
  for (const [k, t] of good.stateDict()) assert.deepEqual(t.data, before.get(k)!.data, k);
  assert.deepEqual(Array.from(good.namedParameters().get("conv_in.bias")!.variable.dataSync()), Array.from(Float32Array.from(BIAS)));
  good.dispose();
});

test("F16 and F64 weights still load as float32 with their values", async () => {
  const { dir, file } = await savedControlNet("f16-f64");
  const f32 = readSafetensors(file).tensors;
  rewriteDtypes(file, { "conv_in.bias": "F16", "time_embedding.linear_1.weight": "F64" });
  const cn = ControlNetModel.fromPretrained(dir);
  const sd = cn.stateDict();
  assert.deepEqual(Array.from(sd.get("conv_in.bias")!.data), Array.from(Float32Array.from(BIAS)));
  assert.deepEqual(sd.get("time_embedding.linear_1.weight")!.data, f32.get("time_embedding.linear_1.weight")!.data);
  cn.dispose();
});

test("an int32 tensor built in memory (no file) is refused too, and says so", async () => {
  const { dir } = await savedControlNet("memory");
  const cn = ControlNetModel.fromPretrained(dir);
  const tensors = new Map(loadModelFolder(dir).tensors);
  const ints: HostTensor = { dtype: "int32", shape: [4], data: Int32Array.from([1, 2, 3, 4]) };
  tensors.set("conv_in.bias", ints);
  assert.throws(() => cn.loadState(tensors), /integer dtype for 1 float parameter\(s\).*conv_in\.bias is int32 \(in memory\)/);
  cn.dispose();
});
