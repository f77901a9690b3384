import { test } from "node:test";
import assert from "node:assert/strict";
import { Rng } from "../../lib/training/rng.js";

test("xoshiro128** core matches the reference algorithm on a known state", () => {
  // Independent BigInt implementation of the published xoshiro128** step.
  const M = 0xffffffffn;
  const rotl = (x: bigint, k: bigint) => ((x << k) | (x >> (32n - k))) & M;
  let s = [1n, 2n, 3n, 4n];
  const ref: number[] = [];
  for (let i = 0; i < 10; i++) {
    ref.push(Number((rotl((s[1]! * 5n) & M, 7n) * 9n) & M));
    const t = (s[1]! << 9n) & M;
    s[2] = s[2]! ^ s[0]!;
    s[3] = s[3]! ^ s[1]!;
    s[1] = s[1]! ^ s[2]!;
    s[0] = s[0]! ^ s[3]!;
    s[2] = s[2]! ^ t;
    s[3] = rotl(s[3]!, 11n);
  }
  const r = Rng.fromState({ algorithm: "xoshiro128**", s: [1, 2, 3, 4], spare: null });
  assert.deepEqual(Array.from({ length: 10 }, () => r.nextUint32()), ref);
  assert.equal(ref[0], 11520); // rotl(2*5, 7)*9 = 1280*9, by hand
});

test("same seed → same stream; different seeds differ; large seeds use all bits", () => {
  const a = new Rng(42);
  const b = new Rng(42);
  const c = new Rng(43);
  const d = new Rng(42 + 2 ** 40);
  const sa = Array.from({ length: 8 }, () => a.nextUint32());
  assert.deepEqual(sa, Array.from({ length: 8 }, () => b.nextUint32()));
  assert.notDeepEqual(sa, Array.from({ length: 8 }, () => c.nextUint32()));
  assert.notDeepEqual(sa, Array.from({ length: 8 }, () => d.nextUint32()));
  assert.throws(() => new Rng(-1));
  assert.throws(() => new Rng(1.5));
});

test("state save/restore continues identically, including the cached Box–Muller value", () => {
  const r = new Rng(1234);
  r.normal(); // leaves a spare cached
  const saved = JSON.parse(JSON.stringify(r.getState()));
  assert.notEqual(saved.spare, null);
  const cont = [r.normal(), r.normal(), r.random(), r.randint(0, 1000), ...r.normals(5)];
  const r2 = Rng.fromState(saved);
  assert.deepEqual([r2.normal(), r2.normal(), r2.random(), r2.randint(0, 1000), ...r2.normals(5)], cont);
});

test("normal() has mean 0 / variance 1; randint is uniform over its range; random in [0,1)", () => {
  const r = new Rng(99);
  const n = 200_000;
  let s = 0;
  let s2 = 0;
  for (let i = 0; i < n; i++) {
    const z = r.normal();
    s += z;
    s2 += z * z;
  }
  const mean = s / n;
  const variance = s2 / n - mean * mean;
  assert.ok(Math.abs(mean) < 0.01, `mean ${mean}`);
  assert.ok(Math.abs(variance - 1) < 0.01, `variance ${variance}`);
  const counts = new Array(10).fill(0);
  for (let i = 0; i < 100_000; i++) counts[r.randint(0, 10)]++;
  for (const c of counts) assert.ok(Math.abs(c - 10_000) < 500, `counts ${counts}`);
  const ts = r.randints(1000, 0, 1000);
  assert.ok(ts.every((t) => t >= 0 && t < 1000));
  for (let i = 0; i < 10_000; i++) {
    const u = r.random();
    assert.ok(u >= 0 && u < 1);
  }
});

test("permutation is a permutation; fork gives an independent stream", () => {
  const r = new Rng(5);
  const p = r.permutation(100);
  assert.deepEqual([...p].sort((a, b) => a - b), Array.from({ length: 100 }, (_, i) => i));
  assert.notDeepEqual(p, Array.from({ length: 100 }, (_, i) => i));
  const child = r.fork();
  assert.notDeepEqual(Array.from({ length: 4 }, () => child.nextUint32()), Array.from({ length: 4 }, () => r.nextUint32()));
});

test("setState rejects malformed states", () => {
  const r = new Rng(1);
  assert.throws(() => r.setState({ algorithm: "xoshiro128**", s: [0, 0, 0, 0], spare: null }));
  assert.throws(() => r.setState({ algorithm: "xoshiro128**", s: [1, 2, 3, 2 ** 32], spare: null }));
  assert.throws(() => r.setState({ algorithm: "mt19937" as "xoshiro128**", s: [1, 2, 3, 4], spare: null }));
});
