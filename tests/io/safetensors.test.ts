import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { describe, test } from "node:test";
import { getFloat16 } from "@petamoriken/float16";
import { readSafetensors, readSafetensorsHeader, writeSafetensors } from "../../lib/io/safetensors.js";
import type { HostTensor } from "../../lib/io/safetensors.js";
import { tempDir } from "../helpers.js";

const dir = tempDir("st-test-");
let counter = 0;
const tmp = (name = "x") => path.join(dir, `${counter++}-${name}.safetensors`);

/** Builds a safetensors file byte by byte, so tests can describe files our writer would never produce. */
function raw(header: unknown, data: Uint8Array | number = 0, opts: { len?: bigint; headerText?: string | Buffer } = {}): string {
  const h = opts.headerText !== undefined ? Buffer.from(opts.headerText) : Buffer.from(JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(opts.len ?? BigInt(h.length));
  const body = typeof data === "number" ? new Uint8Array(data) : data;
  const f = tmp("raw");
  fs.writeFileSync(f, Buffer.concat([len, h, body]));
  return f;
}

function bytesOf(arr: ArrayBufferView): Uint8Array {
  return new Uint8Array(arr.buffer, arr.byteOffset, arr.byteLength);
}

function expectInvalid(file: string, pattern: RegExp): void {
  for (const fn of [() => readSafetensorsHeader(file), () => readSafetensors(file)]) {
    assert.throws(fn, (e: unknown) => {
      assert.ok(e instanceof Error);
      assert.match(e.message, /Invalid safetensors file/);
      assert.ok(e.message.includes(file), `message names the file: ${e.message}`);
      assert.match(e.message, pattern);
      return true;
    });
  }
}

describe("safetensors round trips", () => {
  test("float32 and int32 write → read, metadata, shapes incl. scalars and empty tensors", () => {
    const f = tmp();
    const tensors: Record<string, HostTensor> = {
      "b.weight": { dtype: "float32", shape: [2, 3], data: Float32Array.from([1, -2.5, 3e-8, Infinity, -0, 65504.25]) },
      "a.bias": { dtype: "int32", shape: [4], data: Int32Array.from([0, -1, 2147483647, -2147483648]) },
      scalar: { dtype: "float32", shape: [], data: Float32Array.from([7]) },
      empty: { dtype: "float32", shape: [0, 5], data: new Float32Array(0) },
    };
    writeSafetensors(f, tensors, { format: "pt", b: "x" });
    const { tensors: back, metadata } = readSafetensors(f);
    assert.deepEqual(metadata, { format: "pt", b: "x" });
    assert.deepEqual([...back.keys()].sort(), Object.keys(tensors).sort());
    for (const [k, t] of Object.entries(tensors)) {
      const r = back.get(k)!;
      assert.equal(r.dtype, t.dtype, k);
      assert.deepEqual(r.shape, t.shape, k);
      assert.deepEqual(bytesOf(r.data), bytesOf(t.data), k);
    }
    const h = readSafetensorsHeader(f);
    assert.equal(h.entries.get("a.bias")!.dtype, "I32");
    assert.equal(h.entries.get("b.weight")!.dtype, "F32");
  });

  test("header is deterministic: __metadata__ first, sorted names, 8-byte aligned, space padded", () => {
    const t1 = new Map<string, HostTensor>([
      ["z", { dtype: "float32", shape: [1], data: Float32Array.from([1]) }],
      ["a", { dtype: "float32", shape: [3], data: Float32Array.from([1, 2, 3]) }],
    ]);
    const t2 = new Map([...t1].reverse());
    const f1 = tmp(), f2 = tmp();
    writeSafetensors(f1, t1, { z: "1", a: "2" });
    writeSafetensors(f2, t2, { a: "2", z: "1" });
    const b1 = fs.readFileSync(f1), b2 = fs.readFileSync(f2);
    assert.deepEqual(b1, b2);
    const n = Number(b1.readBigUInt64LE(0));
    assert.equal(n % 8, 0);
    const text = b1.subarray(8, 8 + n).toString("utf8");
    assert.match(text, /^\{"__metadata__":\{"a":"2","z":"1"\},"a":\{"dtype":"F32","shape":\[3\],"data_offsets":\[0,12\]\},"z":/);
    assert.match(text, /\} *$/);
    assert.equal(JSON.parse(text).a.shape[0], 3);
    // data of "a" first
    assert.equal(b1.readFloatLE(8 + n), 1);
    assert.equal(b1.length, 8 + n + 16);
  });

  test("write is atomic: no temp files left, existing file replaced, failure leaves old file", () => {
    const sub = fs.mkdtempSync(path.join(dir, "atomic-"));
    const f = path.join(sub, "m.safetensors");
    writeSafetensors(f, { a: { dtype: "float32", shape: [1], data: Float32Array.from([1]) } });
    writeSafetensors(f, { a: { dtype: "float32", shape: [1], data: Float32Array.from([2]) } });
    assert.equal(readSafetensors(f).tensors.get("a")!.data[0], 2);
    assert.throws(() => writeSafetensors(f, { a: { dtype: "float32", shape: [2], data: Float32Array.from([3]) } }), /2 elements\) but 1 values/);
    assert.throws(() => writeSafetensors(f, { a: { dtype: "float32", shape: [1], data: Int32Array.from([3]) } }), /data is a Int32Array/);
    assert.equal(readSafetensors(f).tensors.get("a")!.data[0], 2);
    assert.deepEqual(fs.readdirSync(sub), ["m.safetensors"]);
  });

  test("only= reads just the named tensors; unknown names are a clear error", () => {
    const f = tmp();
    writeSafetensors(f, {
      a: { dtype: "float32", shape: [2], data: Float32Array.from([1, 2]) },
      b: { dtype: "int32", shape: [1], data: Int32Array.from([5]) },
    });
    const r = readSafetensors(f, { only: ["b"] });
    assert.deepEqual([...r.tensors.keys()], ["b"]);
    assert.equal(r.tensors.get("b")!.data[0], 5);
    assert.throws(() => readSafetensors(f, { only: ["a", "nope"] }), /no tensor named "nope"/);
  });

  const oneDtype = (dtype: string, bytes: Uint8Array, count: number) =>
    raw({ __metadata__: { format: "pt" }, t: { dtype, shape: [count], data_offsets: [0, bytes.length] } }, bytes);

  test("F16: every one of the 65536 bit patterns decodes like an independent implementation", () => {
    const u = new Uint16Array(65536);
    for (let i = 0; i < u.length; i++) u[i] = i;
    const t = readSafetensors(oneDtype("F16", bytesOf(u), u.length)).tensors.get("t")!;
    assert.equal(t.dtype, "float32");
    const dv = new DataView(u.buffer);
    for (let i = 0; i < u.length; i++) {
      const want = getFloat16(dv, i * 2, true);
      const got = t.data[i]!;
      assert.ok(Object.is(got, want) || (Number.isNaN(got) && Number.isNaN(want)), `0x${i.toString(16)}: ${got} vs ${want}`);
    }
    assert.equal(t.data[0x3c00], 1);
    assert.equal(t.data[0x7bff], 65504);
    assert.equal(t.data[0x0001], 2 ** -24);
  });

  test("BF16 decodes as the top half of float32", () => {
    const vals = [1, -2, 0.15625, 3.4e38, -Infinity];
    const f32 = Float32Array.from(vals);
    const hi = new Uint16Array(vals.length);
    const u32 = new Uint32Array(f32.buffer);
    for (let i = 0; i < vals.length; i++) hi[i] = u32[i]! >>> 16;
    const t = readSafetensors(oneDtype("BF16", bytesOf(hi), vals.length)).tensors.get("t")!;
    const expected = Float32Array.from(hi, (h) => new Float32Array(Uint32Array.from([h << 16]).buffer)[0]!);
    assert.deepEqual(t.data, expected);
    assert.equal(t.data[0], 1);
    assert.equal(t.data[1], -2);
    assert.equal(t.data[2], 0.15625);
  });

  test("F64 narrows to float32", () => {
    const d = Float64Array.from([1.5, -1e-3, 1e300]);
    const t = readSafetensors(oneDtype("F64", bytesOf(d), 3)).tensors.get("t")!;
    assert.deepEqual(t.data, Float32Array.from([1.5, -1e-3, Infinity]));
  });

  test("I64 → int32 with a range check", () => {
    const ok = BigInt64Array.from([0n, -1n, 2147483647n, -2147483648n, 49407n]);
    const t = readSafetensors(oneDtype("I64", bytesOf(ok), ok.length)).tensors.get("t")!;
    assert.equal(t.dtype, "int32");
    assert.deepEqual(t.data, Int32Array.from([0, -1, 2147483647, -2147483648, 49407]));
    for (const bad of [2147483648n, -2147483649n, 1n << 40n]) {
      const arr = BigInt64Array.from([1n, bad]);
      const f = oneDtype("I64", bytesOf(arr), 2);
      assert.throws(() => readSafetensors(f), (e: Error) => {
        assert.match(e.message, /I64 value at index 1 is outside the int32 range/);
        assert.ok(e.message.includes(f));
        return true;
      });
    }
  });

  test("U64/U32 range checks, U8/I8/I16/U16/BOOL → int32", () => {
    assert.deepEqual(readSafetensors(oneDtype("U64", bytesOf(BigUint64Array.from([7n, 2147483647n])), 2)).tensors.get("t")!.data, Int32Array.from([7, 2147483647]));
    assert.throws(() => readSafetensors(oneDtype("U64", bytesOf(BigUint64Array.from([2147483648n])), 1)), /outside the int32 range/);
    assert.throws(() => readSafetensors(oneDtype("U32", bytesOf(Uint32Array.from([1, 4294967295])), 2)), /U32 value at index 1/);
    assert.deepEqual(readSafetensors(oneDtype("U8", Uint8Array.from([0, 200, 255]), 3)).tensors.get("t")!.data, Int32Array.from([0, 200, 255]));
    assert.deepEqual(readSafetensors(oneDtype("I8", bytesOf(Int8Array.from([-128, 5])), 2)).tensors.get("t")!.data, Int32Array.from([-128, 5]));
    assert.deepEqual(readSafetensors(oneDtype("I16", bytesOf(Int16Array.from([-300, 300])), 2)).tensors.get("t")!.data, Int32Array.from([-300, 300]));
    assert.deepEqual(readSafetensors(oneDtype("U16", bytesOf(Uint16Array.from([65535])), 1)).tensors.get("t")!.data, Int32Array.from([65535]));
    assert.deepEqual(readSafetensors(oneDtype("BOOL", Uint8Array.from([0, 1, 1, 0]), 4)).tensors.get("t")!.data, Int32Array.from([0, 1, 1, 0]));
  });

  test("large F16 tensor spanning several read chunks", () => {
    const n = 5_000_000; // 10 MB of F16 > the 8 MiB chunk
    const u = new Uint16Array(n);
    for (let i = 0; i < n; i++) u[i] = i % 0x7c00;
    const t = readSafetensors(oneDtype("F16", bytesOf(u), n)).tensors.get("t")!;
    const dv = new DataView(u.buffer);
    for (const i of [0, 1, 4194303, 4194304, 4194305, n - 1]) assert.equal(t.data[i], getFloat16(dv, i * 2, true), `index ${i}`);
  });
});

describe("cross-implementation: files from Python safetensors 0.8.0 (tests/io/fixtures/make_python_safetensors.py)", () => {
  const fixtures = path.join(path.dirname(new URL(import.meta.url).pathname), "fixtures");

  test("every dtype Python wrote reads back with the same values", () => {
    const want = JSON.parse(fs.readFileSync(path.join(fixtures, "python-dtypes.json"), "utf8")) as Record<string, { shape: number[]; values: number[] }>;
    const { tensors, metadata } = readSafetensors(path.join(fixtures, "python-dtypes.safetensors"));
    assert.deepEqual(metadata, { format: "pt" });
    assert.deepEqual([...tensors.keys()].sort(), Object.keys(want).sort());
    for (const [name, w] of Object.entries(want)) {
      const t = tensors.get(name)!;
      assert.deepEqual(t.shape, w.shape, name);
      assert.equal(t.dtype, name.startsWith("f") || name === "empty" || name === "scalar" ? "float32" : "int32", name);
      const expected = name === "f64" ? w.values.map(Math.fround) : w.values;
      assert.deepEqual([...t.data], expected, name);
    }
  });

  test("our writer reproduces Python's file byte for byte", () => {
    const py = path.join(fixtures, "python-f32-i32.safetensors");
    const { tensors, metadata } = readSafetensors(py);
    const f = tmp("ours");
    writeSafetensors(f, tensors, metadata);
    assert.deepEqual(fs.readFileSync(f), fs.readFileSync(py));
    // Same bytes from the insertion order reversed (the writer's order does not depend on the caller's).
    writeSafetensors(f, new Map([...tensors].reverse()), metadata);
    assert.deepEqual(fs.readFileSync(f), fs.readFileSync(py));
  });
});

describe("hostile safetensors files → one clear error", () => {
  const good = { t: { dtype: "F32", shape: [2], data_offsets: [0, 8] } };

  test("missing file / directory", () => {
    assert.throws(() => readSafetensors(path.join(dir, "nope.safetensors")), /Cannot open safetensors file .*nope\.safetensors.*ENOENT/);
    assert.throws(() => readSafetensorsHeader(dir), /not a regular file/);
  });

  test("shorter than 8 bytes", () => {
    const f = tmp();
    fs.writeFileSync(f, Buffer.from([1, 0, 0]));
    expectInvalid(f, /truncated: 3 bytes/);
  });

  test("header length 2^60 (no huge allocation)", () => {
    expectInvalid(raw(good, 8, { len: 1n << 60n }), /header length 1152921504606846976 exceeds/);
  });

  test("header length 2^64-1", () => {
    expectInvalid(raw(good, 8, { len: (1n << 64n) - 1n }), /exceeds the 100000000-byte limit/);
  });

  test("header length past the end of the file", () => {
    expectInvalid(raw(good, 8, { len: 5000n }), /header length 5000 runs past the end/);
  });

  test("truncated data", () => {
    const f = tmp();
    writeSafetensors(f, { a: { dtype: "float32", shape: [100], data: new Float32Array(100) } });
    const b = fs.readFileSync(f);
    fs.writeFileSync(f, b.subarray(0, b.length - 7));
    expectInvalid(f, /run past the end of the 393-byte data buffer \(truncated file\?\)/);
  });

  test("invalid JSON, invalid UTF-8, non-object header, non-object entries", () => {
    expectInvalid(raw(null, 0, { headerText: '{"t": {"dtype": "F32",' }), /header is not valid JSON/);
    expectInvalid(raw(null, 0, { headerText: Buffer.from([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x3a, 0x31, 0x7d]) }), /not valid UTF-8/);
    expectInvalid(raw([1, 2]), /header JSON is not an object/);
    expectInvalid(raw(null, 0, { headerText: "null" }), /header JSON is not an object/);
    expectInvalid(raw({ t: [1] }), /entry "t" is not an object/);
    expectInvalid(raw({ t: "F32" }), /entry "t" is not an object/);
    expectInvalid(raw({ __metadata__: [1] }), /__metadata__ is not an object/);
    assert.deepEqual(readSafetensors(raw({ __metadata__: null })).metadata, {}, "null metadata is accepted, like the reference reader");
    expectInvalid(raw({ __metadata__: { a: 1 } }), /__metadata__ value for "a" is not a string/);
    expectInvalid(raw(null, 0, { headerText: "" , len: 0n }), /too small/);
  });

  test("bad dtype", () => {
    expectInvalid(raw({ t: { dtype: "F17", shape: [2], data_offsets: [0, 8] } }, 8), /tensor "t": unknown dtype "F17"/);
    expectInvalid(raw({ t: { shape: [2], data_offsets: [0, 8] } }, 8), /dtype is missing/);
  });

  test("fp8 header is parsed but the tensor is refused on read", () => {
    const f = raw({ t: { dtype: "F8_E4M3", shape: [2], data_offsets: [0, 2] } }, 2);
    assert.equal(readSafetensorsHeader(f).entries.get("t")!.dtype, "F8_E4M3");
    assert.throws(() => readSafetensors(f), /dtype F8_E4M3 is not supported/);
  });

  test("bad shapes", () => {
    for (const shape of [[-1], [1.5], ["2"], "2", null, [2 ** 60]]) {
      expectInvalid(raw({ t: { dtype: "F32", shape, data_offsets: [0, 8] } }, 8), /shape .* is not a list of non-negative integers/);
    }
  });

  test("bad offsets", () => {
    expectInvalid(raw({ t: { dtype: "F32", shape: [2], data_offsets: [0] } }, 8), /data_offsets \[0\] is not a pair/);
    expectInvalid(raw({ t: { dtype: "F32", shape: [2], data_offsets: [-8, 0] } }, 8), /not a pair of non-negative integers/);
    expectInvalid(raw({ t: { dtype: "F32", shape: [2], data_offsets: [8, 0] } }, 8), /end before they begin/);
    expectInvalid(raw({ t: { dtype: "F32", shape: [2], data_offsets: [0, 2 ** 53] } }, 8), /not a pair|run past the end/);
    expectInvalid(raw({ t: { dtype: "F32", shape: [2], data_offsets: [8, 16] } }, 8), /run past the end/);
  });

  test("byte length ≠ shape × dtype size, incl. a shape whose product overflows", () => {
    expectInvalid(raw({ t: { dtype: "F32", shape: [3], data_offsets: [0, 8] } }, 8), /F32\[3\] needs 12 bytes but data_offsets span 8/);
    expectInvalid(raw({ t: { dtype: "F16", shape: [2 ** 40, 2 ** 40], data_offsets: [0, 8] } }, 8), /needs 2417851639229258349412352 bytes/);
  });

  test("overlapping offsets", () => {
    expectInvalid(raw({
      a: { dtype: "F32", shape: [2], data_offsets: [0, 8] },
      b: { dtype: "F32", shape: [2], data_offsets: [4, 12] },
    }, 12), /tensor "b" \[4, 12\] overlaps tensor "a"/);
    expectInvalid(raw({
      a: { dtype: "F32", shape: [2], data_offsets: [0, 8] },
      b: { dtype: "F32", shape: [2], data_offsets: [0, 8] },
    }, 8), /overlaps/);
  });

  test("holes and trailing bytes", () => {
    expectInvalid(raw({ a: { dtype: "F32", shape: [1], data_offsets: [4, 8] } }, 8), /hole in the data buffer: bytes \[0, 4\)/);
    expectInvalid(raw(good, 12), /data buffer holds 12 bytes but the tensors describe 8/);
  });

  test("fuzz: 400 random corruptions of a valid file each read cleanly or fail with one clear error", () => {
    const f = tmp("fuzz-src");
    writeSafetensors(f, {
      "a.weight": { dtype: "float32", shape: [3, 4], data: Float32Array.from({ length: 12 }, (_, i) => i) },
      "b.ids": { dtype: "int32", shape: [5], data: Int32Array.from([1, 2, 3, 4, 5]) },
    }, { format: "pt" });
    const good = fs.readFileSync(f);
    const headerEnd = 8 + Number(good.readBigUInt64LE(0));
    let seed = 12345;
    const rand = (n: number) => { seed = (seed * 1103515245 + 12345) % 2 ** 31; return seed % n; };
    let failed = 0;
    for (let i = 0; i < 400; i++) {
      const bad = Buffer.from(good);
      let out: Buffer = bad;
      const kind = i % 4;
      if (kind === 0) for (let k = 0; k <= rand(3); k++) bad[rand(headerEnd)] = rand(256); // header bytes
      else if (kind === 1) out = bad.subarray(0, rand(good.length)); // truncation
      else if (kind === 2) bad.writeBigUInt64LE(BigInt(rand(2 ** 31)) * BigInt(1 + rand(2 ** 20)), 0); // length field
      else { // a digit inside the JSON changed (shapes/offsets that still parse)
        const digits = [...bad.subarray(8, headerEnd).entries()].filter(([, b]) => b >= 0x30 && b <= 0x39);
        bad[8 + digits[rand(digits.length)]![0]] = 0x30 + rand(10);
      }
      const g = tmp("fuzz");
      fs.writeFileSync(g, out);
      try {
        readSafetensors(g);
      } catch (e) {
        failed++;
        assert.ok(e instanceof Error && /^Invalid safetensors file /.test(e.message), `case ${i}: ${(e as Error).message}`);
      }
      fs.rmSync(g);
    }
    assert.ok(failed > 300, `most corruptions are detected (${failed}/400)`);
  });

  test("zero-size tensors sharing an offset are fine", () => {
    const f = raw({
      a: { dtype: "F32", shape: [0], data_offsets: [0, 0] },
      b: { dtype: "F32", shape: [1], data_offsets: [0, 4] },
      c: { dtype: "I64", shape: [0, 3], data_offsets: [4, 4] },
    }, bytesOf(Float32Array.from([3])));
    const r = readSafetensors(f).tensors;
    assert.equal(r.get("b")!.data[0], 3);
    assert.deepEqual(r.get("c")!.shape, [0, 3]);
    assert.equal(r.get("c")!.dtype, "int32");
  });
});
