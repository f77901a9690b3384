/**
 * --max_train_samples keeps the rows upstream keeps: datasets' shuffle(seed) is numpy's
 * default_rng(seed).permutation(n), checked layer by layer against numpy 2.4.6's own values
 * (tests/fixtures/numpy_rng/cases.json, written by tests/reference/make_fixtures.py --only numpy_rng).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { numpyPermutation, PCG64, SeedSequence } from "../../lib/data/numpy-rng.js";
import { createDataset } from "../../lib/data/index.js";
import type { SubsetSource } from "../../lib/data/sources/table.js";

interface Cases {
  seeds: { seed: string; generate_state_u64: string[]; random_raw: string[] }[];
  cases: { seed: string; n: number; whole: boolean; permutation: number[]; sha256_u32le: string }[];
}
const golden = JSON.parse(fs.readFileSync(path.resolve(import.meta.dirname, "../fixtures/numpy_rng/cases.json"), "utf8")) as Cases;

test("SeedSequence.generate_state(4, uint64) and PCG64's raw draws equal numpy's for seeds from 0 to 2^53-1", () => {
  assert.ok(golden.seeds.length >= 8);
  for (const g of golden.seeds) {
    const seed = Number(g.seed);
    assert.deepEqual(new SeedSequence(seed).generateState64(4).map(String), g.generate_state_u64, `seed ${g.seed}`);
    const rng = new PCG64(seed);
    assert.deepEqual(g.random_raw.map(() => String(rng.nextUint64())), g.random_raw, `seed ${g.seed}`);
  }
});

test("default_rng(seed).permutation(n) equals numpy's bit for bit (n = 1 … 70000)", () => {
  assert.ok(golden.cases.some((c) => c.n === 70000) && golden.cases.some((c) => c.n === 1));
  for (const c of golden.cases) {
    const p = numpyPermutation(c.n, Number(c.seed));
    assert.deepEqual(Array.from(c.whole ? p : p.subarray(0, c.permutation.length)), c.permutation, `seed ${c.seed}, n ${c.n}`);
    const le = Buffer.alloc(4 * c.n);
    p.forEach((v, i) => le.writeUInt32LE(v, 4 * i));
    assert.equal(crypto.createHash("sha256").update(le).digest("hex"), c.sha256_u32le, `seed ${c.seed}, n ${c.n}`);
  }
});

test("max_train_samples keeps shuffle(seed).select(range(n))'s rows: numpy's permutation's first n", async () => {
  const c = golden.cases.find((x) => x.seed === "42" && x.n === 1000)!;
  const ds = await createDataset({ synthetic: { count: 1000, seed: 3 }, max_train_samples: 8, seed: 42, resolution: 16 });
  assert.deepEqual(Array.from((ds.source as SubsetSource).indices), c.permutation.slice(0, 8));
  // the whole dataset kept (max = rows) is still shuffled, as select(range(len)) after shuffle is
  const all = await createDataset({ synthetic: { count: 1000, seed: 3 }, max_train_samples: 1000, seed: 42, resolution: 16 });
  assert.deepEqual(Array.from((all.source as SubsetSource).indices), c.permutation);
});

test("bad lengths and seeds are refused with one line", () => {
  assert.throws(() => numpyPermutation(-1, 0), /permutation length/);
  assert.throws(() => numpyPermutation(3, -1), /non-negative integer/);
  assert.deepEqual(Array.from(numpyPermutation(0, 0)), []);
});
