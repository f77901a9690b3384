import { test } from "node:test";
import assert from "node:assert/strict";
import { compileBmmWat } from "../../scripts/wasm-kernels.js";
import { BMM_WASM_BASE64, BMM_WASM_SHARED_BASE64 } from "../../lib/engine/kernels/bmm-wasm.js";
import { bmmOnMemory, setSimdBatchMatMul, type WasmMemory } from "../../lib/engine/kernels/bmm.js";
import { initEngine, tf } from "../../lib/engine/index.js";
import { assertClose } from "../helpers.js";
import { Prng } from "../../lib/data/prng.js";

// the WebAssembly global (this project's TypeScript lib has no WebAssembly types)
const { Memory } = (globalThis as unknown as { WebAssembly: { Memory: new (d: { initial: number; maximum: number; shared: boolean }) => WasmMemory } }).WebAssembly;

test("bmm-wasm.ts holds bmm.wat as compiled now (run `npm run build:wasm-kernels` after editing the .wat)", async () => {
  assert.equal(Buffer.from(await compileBmmWat(false)).toString("base64"), BMM_WASM_BASE64);
  assert.equal(Buffer.from(await compileBmmWat(true)).toString("base64"), BMM_WASM_SHARED_BASE64);
});

for (const shared of [false, true]) {
  test(`the bmm kernel on ${shared ? "a shared" : "an unshared"} memory: every column block, broadcast batches, exact addresses`, () => {
    const memory = new Memory({ initial: 4, maximum: 65536, shared });
    assert.equal(memory.buffer instanceof SharedArrayBuffer, shared);
    const bmm = bmmOnMemory(memory); // picks the module whose import matches the memory
    const f32 = new Float32Array(memory.buffer);
    const rng = new Prng(7);
    // n = 21: two 8-column blocks, one 4-column block and one single column; k = 1 and odd k included
    // transA: A[q] stored as its transpose (k×m), read in place
    for (const [batch, m, k, n, na, nb, transA] of [[3, 5, 7, 21, 3, 3, 0], [2, 4, 1, 9, 1, 2, 0], [4, 3, 16, 4, 4, 1, 0], [1, 2, 3, 3, 1, 1, 0], [3, 5, 7, 21, 3, 3, 1], [2, 6, 9, 13, 1, 2, 1]]) {
      const a = 16; // element offsets of a, b, c (c is surrounded by sentinels)
      const b = a + na! * m! * k!;
      const c = b + nb! * k! * n! + 4;
      const total = batch! * m! * n!;
      for (let i = a; i < c - 4; i++) f32[i] = rng.uniform(-1, 1);
      f32.fill(12345, c - 4, c + total + 4);
      bmm(4 * a, 4 * b, 4 * c, batch!, m!, k!, n!, na === 1 ? 0 : m! * k!, nb === 1 ? 0 : k! * n!, transA);
      for (let q = 0; q < batch!; q++)
        for (let r = 0; r < m!; r++)
          for (let j = 0; j < n!; j++) {
            let want = 0;
            for (let p = 0; p < k!; p++) want += f32[a + (na === 1 ? 0 : q * m! * k!) + (transA ? p * m! + r : r * k! + p)]! * f32[b + (nb === 1 ? 0 : q * k! * n!) + p * n! + j]!;
            const got = f32[c + (q * m! + r) * n! + j]!;
            assert.ok(Math.abs(got - want) <= 1e-5 * Math.max(1, Math.abs(want)), `batch ${q} [${r},${j}] of ${[batch, m, k, n]}${transA ? " (A transposed)" : ""}: ${got} vs ${want}`);
          }
      for (const i of [c - 1, c + total]) assert.equal(f32[i], 12345, "wrote outside C");
    }
  });
}

test("with the SIMD kernel off, small batched products fall back to the stock loop and agree with it", async () => {
  await initEngine({ backend: "wasm" }); // wasm's own mechanisms: always on wasm
  const run = () => tf.tidy(() => {
    const a = tf.randomNormal([6, 9, 13], 0, 1, "float32", 3);
    const b = tf.randomNormal([6, 21, 13], 0, 1, "float32", 4);
    return tf.matMul(a as tf.Tensor3D, b as tf.Tensor3D, false, true).dataSync();
  });
  const simd = run();
  const was = setSimdBatchMatMul(false);
  let stock: Float32Array;
  try {
    stock = run() as Float32Array;
  } finally {
    setSimdBatchMatMul(was);
  }
  assert.equal(was, true);
  assertClose(simd, stock, 1e-5, "SIMD vs stock");
});
