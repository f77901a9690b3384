/**
 * The native engine (tfjs-node's backend on TensorFlow 2.21's C library): the conv cases our models need, stride 2
 * with explicit and asymmetric padding included (tfjs-node 4.22's own Conv2DBackprop* kernels refuse EXPLICIT;
 * lib/engine/native/kernels.ts passes it to TensorFlow), against the cpu backend; and its memory report.
 * Runs when the native engine is installed (npm install builds it; CI requires it).
 */
import { before, describe, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { fusedBiasAdd, fusedLinear, hostMemoryLimit, initEngine, memoryBudget, memoryInfo, tf } from "../../lib/engine/index.js";
import { FUSED_BIAS_ADD, FUSED_BIAS_GRAD, FUSED_LINEAR, FUSED_LINEAR_GRAD_INPUT, FUSED_LINEAR_GRAD_WEIGHT } from "../../lib/engine/fused.js";
import { nativeMissingReason } from "../../lib/engine/native/load.js";
import { nativeDir } from "../../lib/engine/native/install-status.js";
import { assertConvCaseMatchesCpu, convCases, largeFilterConvCases } from "./conv-cases.js";
import { lastLineOfChild, runChild } from "./child-process.js";
import { paddingName } from "../../lib/engine/native/kernels.js";
import { tempDir } from "../helpers.js";

const missing = nativeMissingReason();
/** The environment without the variables the host-memory policy reads, so a child starts as a user's process does. */
function envWithoutAllocatorSettings(): NodeJS.ProcessEnv {
  const { TF_ONEDNN_USE_SYSTEM_ALLOCATOR: _, CONTROLNET_TS_SYSTEM_ALLOCATOR: __, ...env } = process.env;
  return env;
}

/** Runs `fn` on a copy of the installed engine (links) that lacks one of our optional addons' folders. */
function withoutAddon<T>(addon: string, fn: (dir: string) => T): T {
  const dir = tempDir(`native-no-${addon}-`);
  const installed = nativeDir();
  for (const e of fs.readdirSync(installed)) if (e !== addon) fs.symlinkSync(path.join(installed, e), path.join(dir, e));
  return fn(dir);
}

describe("native engine", { skip: missing ?? false }, () => {
  before(async () => {
    const info = await initEngine({ backend: "node" });
    assert.equal(info.tfjsBackend, "tensorflow");
  });

  convCases.forEach((c, i) => {
    test(`conv2d forward and gradients, case ${i}: ${c.h}x${c.w} k${c.k} s${c.s} pad ${JSON.stringify(c.pad)}`, async () => {
      await assertConvCaseMatchesCpu(c, i);
    });
  });

  largeFilterConvCases.forEach((c, i) => {
    test(`a large-filter conv (${c.ci}→${c.co}, k${c.k[0]} s${c.s[0]} pad ${JSON.stringify(c.pad)}) runs as patches · filter and equals the cpu backend`, async () => {
      const backend = tf.backend() as unknown as { executeSingleOutput(name: string, ...rest: unknown[]): unknown };
      const stock = backend.executeSingleOutput;
      const ops: string[] = [];
      backend.executeSingleOutput = function (name, ...rest) {
        ops.push(name);
        return stock.call(this, name, ...rest);
      };
      try {
        await assertConvCaseMatchesCpu(c, 100 + i);
      } finally {
        backend.executeSingleOutput = stock;
      }
      assert.ok(ops.includes("ExtractImagePatches") && ops.includes("MatMul"), `ops run: ${[...new Set(ops)].join(", ")}`);
      assert.ok(!ops.includes("Conv2D"), "no Conv2D forward");
    });
  });

  test("an explicit padding that equals SAME or VALID reaches TensorFlow by that name (its oneDNN rewrite skips EXPLICIT)", () => {
    const info = (h: number, k: number, stride: number, pad: number) =>
      tf.backend_util.computeConv2DInfo([2, h, h, 4], [k, k, 4, 8], stride, 1, [[0, 0], [pad, pad], [pad, pad], [0, 0]], undefined, false, "channelsLast");
    assert.equal(paddingName(info(16, 3, 1, 1)), "SAME", "a resnet's 3×3 padding-1 conv");
    assert.equal(paddingName(info(16, 1, 1, 0)), "VALID");
    assert.equal(paddingName(info(16, 3, 2, 1)), "EXPLICIT", "a downsampler: SAME would pad 0 before and 1 after");
    assert.equal(paddingName(info(16, 3, 1, 2)), "EXPLICIT");
  });

  test("a product of two matrices (TensorFlow's MatMul) equals the batched product, every transpose, gradients too", () => {
    tf.tidy(() => {
      const a = tf.randomNormal([37, 19], 0, 1, "float32", 1), b = tf.randomNormal([19, 23], 0, 1, "float32", 2);
      for (const [ta, tb] of [[false, false], [true, false], [false, true], [true, true]] as const) {
        const x = ta ? tf.transpose(a) : a, y = tb ? tf.transpose(b) : b;
        const flat = tf.matMul(x, y, ta, tb);
        const batched = tf.squeeze(tf.matMul(tf.expandDims(x, 0), tf.expandDims(y, 0), ta, tb), [0]); // BatchMatMulV2
        assert.deepEqual(flat.shape, [37, 23]);
        assert.ok(tf.max(tf.abs(tf.sub(flat, batched))).dataSync()[0]! < 1e-5, `transposeA ${ta}, transposeB ${tb}`);
      }
      const [ga, gb] = tf.grads((p: tf.Tensor, q: tf.Tensor) => tf.sum(tf.square(tf.matMul(p as tf.Tensor2D, q as tf.Tensor2D))))([a, b]);
      const y = tf.matMul(a, b);
      assert.ok(tf.max(tf.abs(tf.sub(ga!, tf.matMul(tf.mul(y, 2), b, false, true)))).dataSync()[0]! < 1e-4);
      assert.ok(tf.max(tf.abs(tf.sub(gb!, tf.matMul(a, tf.mul(y, 2), true, false)))).dataSync()[0]! < 1e-4);
      assert.deepEqual(tf.matMul(tf.tensor2d([[1, 2]], [1, 2], "int32"), tf.tensor2d([[3], [4]], [2, 1], "int32")).arraySync(), [[11]], "int32: tfjs-node's own kernel");
    });
  });

  test("the linear layer and bias add as one kernel each: output and every gradient equal the composed ops; no dW where none is asked", () => {
    const counts = new Map<string, number>();
    const counted = <T>(fn: () => T): T => {
      const wraps = [FUSED_LINEAR, FUSED_LINEAR_GRAD_INPUT, FUSED_LINEAR_GRAD_WEIGHT, FUSED_BIAS_ADD, FUSED_BIAS_GRAD].map((name) => {
        const k = tf.getKernel(name, "tensorflow")!;
        const f = k.kernelFunc;
        (k as { kernelFunc: typeof f }).kernelFunc = (args) => (counts.set(name, (counts.get(name) ?? 0) + 1), f(args));
        return () => ((k as { kernelFunc: typeof f }).kernelFunc = f);
      });
      try {
        return fn();
      } finally {
        wraps.forEach((undo) => undo());
      }
    };
    tf.tidy(() => {
      const composed = (x: tf.Tensor, w: tf.Tensor, b: tf.Tensor) => tf.reshape(tf.add(tf.matMul(tf.reshape(x, [-1, w.shape[0]!]), w as tf.Tensor2D), b), [...x.shape.slice(0, -1), w.shape[1]!]);
      const w = tf.randomNormal([19, 23], 0, 1, "float32", 3), b = tf.randomNormal([23], 0, 1, "float32", 4), up = tf.randomNormal([2, 3, 4, 23], 0, 1, "float32", 5);
      // rows in 4- or 8-row blocks (the AVX2 / AVX-512 copy) and some left over; columns in blocks of two and one
      // widest vectors (8 or 16 floats), 8-wide blocks and single ones (56 = 32 + 16 + 8 with 16 lanes); 40K rows on
      // the threads (our op); a weight above 256×256 entries goes to TensorFlow's MatMul (OWN_MATMUL_MAX_WEIGHT)
      const cases: [number[], number, number][] = [[[37, 19], 19, 23], [[2, 5, 7, 19], 19, 23], [[3, 6, 32], 32, 40], [[5, 11, 24], 24, 56], [[40_000, 16], 16, 8], [[2, 9, 300], 300, 260]];
      for (const [shape, k, n] of cases) {
        const [wk, bk] = [tf.randomNormal([k, n], 0, 1, "float32", 3), tf.randomNormal([n], 0, 1, "float32", 4)];
        const x = tf.randomNormal(shape, 0, 1, "float32", 6);
        const dy = tf.randomNormal([...shape.slice(0, -1), n], 0, 1, "float32", 9);
        const loss = (f: typeof composed) => (p: tf.Tensor, q: tf.Tensor, r: tf.Tensor) => tf.sum(tf.mul(f(p, q, r), dy));
        const fused = counted(() => tf.grads(loss((p, q, r) => fusedLinear(p, q, r)!))([x, wk, bk]));
        const want = tf.grads(loss(composed))([x, wk, bk]);
        // relative to the gradient's largest entry: the sums run over up to 40K rows in different orders
        fused.forEach((g, i) => assert.ok(tf.max(tf.abs(tf.sub(g, want[i]!))).dataSync()[0]! < 1e-5 * Math.max(10, tf.max(tf.abs(want[i]!)).dataSync()[0]!), `[${shape}]: gradient ${i}`));
        assert.ok(tf.max(tf.abs(tf.sub(fusedLinear(x, wk, bk)!, composed(x, wk, bk)))).dataSync()[0]! < 1e-5, `[${shape}]: output`);
        assert.ok(tf.max(tf.abs(tf.sub(fusedLinear(x, wk, null)!, tf.sub(composed(x, wk, bk), bk)))).dataSync()[0]! < 1e-5, `[${shape}]: no bias`);
      }
      // a frozen layer: only dx is asked for, so dW's product never runs
      counts.clear();
      const x = tf.randomNormal([4, 19], 0, 1, "float32", 7);
      counted(() => tf.grad((p: tf.Tensor) => tf.sum(fusedLinear(p, w, b)!))(x));
      assert.equal(counts.get(FUSED_LINEAR_GRAD_INPUT), 1);
      assert.equal(counts.get(FUSED_LINEAR_GRAD_WEIGHT), undefined, "no dW for a weight nobody differentiates");
      // bias add (the convs' bias): x's gradient is dy, the bias's the sum over all other axes
      const y = tf.randomNormal([2, 3, 4, 23], 0, 1, "float32", 8);
      const [gy, gb] = counted(() => tf.grads((p: tf.Tensor, q: tf.Tensor) => tf.sum(tf.mul(fusedBiasAdd(p, q)!, up)))([y, b]));
      assert.ok(counts.get(FUSED_BIAS_GRAD)! >= 1);
      assert.ok(tf.max(tf.abs(tf.sub(fusedBiasAdd(y, b)!, tf.add(y, b)))).dataSync()[0]! === 0);
      assert.ok(tf.max(tf.abs(tf.sub(gy!, up))).dataSync()[0]! === 0);
      assert.ok(tf.max(tf.abs(tf.sub(gb!, tf.sum(up, [0, 1, 2])))).dataSync()[0]! < 1e-5);
    });
  });

  test("a reshape to the tensor's own shape shares its TensorFlow tensor; any other reshape is TensorFlow's op", () => {
    const x = tf.tensor3d([1, 2, 3, 4, 5, 6], [1, 2, 3]);
    const before = tf.memory().numTensors;
    const same = tf.reshape(x, [1, -1, 3]);
    assert.equal(same.dataId, x.dataId, "shared, no copy and no op");
    const other = tf.reshape(x, [3, 2]);
    assert.notEqual(other.dataId, x.dataId);
    x.dispose(); // the shared data outlives the first tensor
    assert.deepEqual(same.arraySync(), [[[1, 2, 3], [4, 5, 6]]]);
    assert.deepEqual(other.arraySync(), [[1, 2], [3, 4], [5, 6]]);
    // gradients of broadcasting ops reshape to their operand's shape: still right through the shared path
    const a = tf.tensor2d([[1, 2], [3, 4]]), b = tf.tensor1d([10, 20]);
    const [ga, gb] = tf.grads((p: tf.Tensor, q: tf.Tensor) => tf.sum(tf.mul(tf.add(p, q), p)))([a, b]);
    assert.deepEqual(ga!.arraySync(), [[12, 24], [16, 28]]); // 2p + q
    assert.deepEqual(gb!.arraySync(), [4, 6]); // Σ over rows of p
    tf.dispose([same, other, a, b, ga!, gb!]);
    assert.equal(tf.memory().numTensors, before - 1, "every tensor freed, x included");
  });

  test("memory: live tensor bytes and RSS, no wasm heap, host memory as the budget", () => {
    const a = memoryInfo();
    const t = tf.zeros([1024, 1024]);
    const b = memoryInfo();
    assert.equal(b.liveBytes - a.liveBytes, 4 * 1024 * 1024);
    assert.equal(b.heapBytes, null);
    assert.equal(b.heapLimitBytes, null);
    assert.equal(b.gpuBytes, null, "the CPU build has no GPU");
    assert.ok(b.rssBytes > 0);
    assert.equal(memoryBudget(), hostMemoryLimit());
    // a container's cgroup limit (Docker --memory) is the budget where it is below the machine's memory
    assert.equal(hostMemoryLimit(64 * 2 ** 30, 8 * 2 ** 30), 8 * 2 ** 30);
    for (const none of [undefined, 0, 2 ** 63]) assert.equal(hostMemoryLimit(64 * 2 ** 30, none), 64 * 2 ** 30);
    t.dispose();
    assert.equal(memoryInfo().liveBytes, a.liveBytes);
  });

  test("host memory: tensors come from glibc's heap, so a freed large tensor's pages are reused, not zeroed again", () => {
    // a 64 MB op output made and freed 30 times: how many times its 16,384 pages were faulted in afresh. With our heap
    // policy glibc reuses a freed block for most of them (which ones varies from run to run); on TensorFlow's
    // system allocator alone (the user's own TF_ONEDNN_USE_SYSTEM_ALLOCATOR=1, which we leave as it is) every one is
    // a fresh mapping the kernel zeroes
    const probe = (extraEnv: Record<string, string>) => JSON.parse(lastLineOfChild(
      `import fs from "node:fs";
       import { initEngine, tf } from ENGINE;
       const info = await initEngine({ backend: "node", threads: 1 });
       const faults = () => Number(fs.readFileSync("/proc/self/stat", "utf8").split(") ")[1].split(" ")[7]);
       const a = tf.ones([16 << 20]); const b = tf.ones([16 << 20]);
       let fresh = 0;
       for (let i = 0; i < 30; i++) { const f0 = faults(); tf.add(a, b).dispose(); if (faults() - f0 > 8192) fresh++; }
       console.log(JSON.stringify({ hostAllocator: info.hostAllocator, fresh, env: process.env.TF_ONEDNN_USE_SYSTEM_ALLOCATOR }));`,
      { ...envWithoutAllocatorSettings(), ...extraEnv })) as { hostAllocator: string; fresh: number; env: string };
    const ours = probe({});
    assert.match(ours.hostAllocator, /TF_ONEDNN_USE_SYSTEM_ALLOCATOR=1, M_MMAP_MAX=0/);
    assert.equal(ours.env, "1", "set before TensorFlow loads");
    assert.ok(ours.fresh <= 20, `with our heap policy ${ours.fresh} of 30 outputs were fresh memory`); // 4 to 13 seen
    const child = probe({ TF_ONEDNN_USE_SYSTEM_ALLOCATOR: "1", CONTROLNET_TS_SYSTEM_ALLOCATOR: "1" });
    assert.match(child.hostAllocator, /M_MMAP_MAX=0/, "a child of ours (launch's workers) inherits the setting and applies the heap policy again");
    const user = probe({ TF_ONEDNN_USE_SYSTEM_ALLOCATOR: "1" });
    assert.match(user.hostAllocator, /TF_ONEDNN_USE_SYSTEM_ALLOCATOR=1 as set by the environment/);
    assert.ok(user.fresh >= 28, `without the policy every output should be fresh memory (${user.fresh} of 30)`);
  });

  test("without the host-memory addon the engine still runs, on TensorFlow's own pool, and says so", () => {
    const line = withoutAddon("host-memory", (dir) => lastLineOfChild(
      `import { initEngine, describeEngine } from ENGINE;
       const info = await initEngine({ backend: "node", threads: 1 });
       console.log(JSON.stringify({ text: describeEngine(info), env: process.env.TF_ONEDNN_USE_SYSTEM_ALLOCATOR ?? null }));`,
      { ...envWithoutAllocatorSettings(), CONTROLNET_TS_NATIVE_DIR: dir }));
    const out = JSON.parse(line) as { text: string; env: string | null };
    assert.match(out.text, /host tensors: TensorFlow's oneDNN pool \(the host-memory addon is not installed\)/);
    assert.equal(out.env, null, "TensorFlow keeps its default allocator");
  });

  test("signals arriving while TensorFlow runs its GEMMs (V8's CPU profiler: 1 kHz SIGPROF) leave memory intact; without the signals addon the same run aborts", () => {
    // TensorFlow's MatMul and a stride-2 conv's filter gradient (Eigen, through oneDNN's JIT sgemm): the kernels whose
    // stack pointer sits in a heap workspace while they run (native/signals/signals.cc)
    const code = `import { initEngine, describeEngine, tf } from ENGINE;
      const info = await initEngine({ backend: "node", threads: 2 });
      const a = tf.randomNormal([256, 512]), b = tf.randomNormal([512, 128]);
      const x = tf.randomNormal([2, 16, 16, 8]), w = tf.randomNormal([3, 3, 8, 8]);
      const dw = tf.grad((f) => tf.sum(tf.conv2d(x, f, 2, [[0, 0], [1, 1], [1, 1], [0, 0]])));
      const t0 = Date.now();
      let n = 0;
      while (Date.now() - t0 < 2500) { tf.tidy(() => { tf.matMul(a, b).dataSync(); dw(w).dataSync(); }); n++; }
      console.log(JSON.stringify({ n, text: describeEngine(info) }));`;
    const run = (dir: string, profile: boolean) => {
      const profiles = tempDir("cpu-prof-");
      return runChild(code, { ...process.env, CONTROLNET_TS_NATIVE_DIR: dir }, profile ? ["--cpu-prof", "--cpu-prof-dir", profiles] : []);
    };
    const result = (r: ReturnType<typeof runChild>) => {
      assert.equal(r.status, 0, r.stderr);
      const out = JSON.parse(r.stdout.trim().split("\n").pop()!) as { n: number; text: string };
      assert.ok(out.n > 100, `${out.n} iterations in 2.5 s`);
      return out.text;
    };
    assert.match(result(run(nativeDir(), true)), /signals: held back from TensorFlow's threads while its ops run/);
    withoutAddon("signals", (dir) => {
      assert.match(result(run(dir, false)), /signals: not held \(the signals addon is not installed\): a signal during a TensorFlow op may corrupt memory/);
      const profiled = run(dir, true);
      assert.notEqual(profiled.status, 0, "TensorFlow's oneDNN no longer corrupts the heap under signals: the signals addon can go");
    });
  });

  test("without the fused-kernels addon the engine still runs, attention as TensorFlow's ops, and says so", () => {
    const line = withoutAddon("fused", (dir) => lastLineOfChild(
      `import { initEngine, describeEngine, hasFusedAttention, tf } from ENGINE;
       import { scaledDotProductAttention } from ${JSON.stringify(new URL("../../lib/models/attention.ts", import.meta.url).href)};
       const info = await initEngine({ backend: "node", threads: 1 });
       const q = tf.ones([1, 4, 8]);
       const out = scaledDotProductAttention(q, q, q, 0.5).dataSync();
       console.log(JSON.stringify({ text: describeEngine(info), fused: hasFusedAttention(), out: Array.from(out.slice(0, 2)) }));`,
      { ...process.env, CONTROLNET_TS_NATIVE_DIR: dir }));
    const out = JSON.parse(line) as { text: string; fused: boolean; out: number[] };
    assert.match(out.text, /fused kernels: none, TensorFlow's own ops run \(attention as batched products\): the fused-kernels addon is not built; rebuild with: npm run install-native/);
    assert.equal(out.fused, false);
    assert.deepEqual(out.out, [1, 1], "attention of ones over ones is ones");
  });

  test("TF32 (node-gpu) is off unless allowTf32, as diffusers' --allow_tf32: NVIDIA_TF32_OVERRIDE=0 is set before TensorFlow loads", () => {
    const { NVIDIA_TF32_OVERRIDE: _, ...env } = process.env;
    const overrideAfterInit = (allowTf32: boolean) => lastLineOfChild(
      `import { initEngine } from ENGINE;
       await initEngine({ backend: "node", threads: 1, allowTf32: ${allowTf32} }); console.log(String(process.env.NVIDIA_TF32_OVERRIDE));`,
      env);
    assert.equal(overrideAfterInit(false), "0", "exact float32 by default");
    assert.equal(overrideAfterInit(true), "undefined", "allowTf32 leaves TensorFlow's default (TF32 on Ampere+)");
  });
});
