/**
 * The training script's memory options, each measured on real ControlNetTrainer steps at a mid-size config: peak of
 * live device (tensor) bytes over one training step, with the option ON against OFF, same seed, same config, same
 * process. Every run builds fresh components (same seeds), trains one warm-up step (which creates the optimizer state),
 * then measures the second step with measurePeak. Numbers are relative to the live bytes before the components were
 * built, so whatever earlier runs left behind cancels out.
 *
 * Two configs: MID (channel-heavy, 256 latent tokens) for checkpointing and the optimizer options, ATTN (1024 latent
 * tokens, where the attention score tensors dominate the step's activations) for chunked attention. The CLI's
 * --enable_xformers_memory_efficient_attention becomes attention_chunk_size 1024 (lib/training/run.ts), which only
 * chunks above 1024 query tokens (e.g. SD at 512 px: 4096); at ATTN's 1024 tokens the test uses 256.
 */
import { before, test, type TestContext } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { tf, hasFusedAttention, measurePeak, memoryInfo, useFusedKernels } from "../../lib/engine/index.js";
import { createDataset } from "../../lib/data/index.js";
import { ControlNetTrainer, type TrainingComponents, type TrainingOptions } from "../../lib/training/trainer.js";
import type { StateBytes } from "../../lib/training/optim/index.js";
import { MIXED_PRECISION_WARNING, makeTrainArgs, parseTrainArgs } from "../../lib/training/args.js";
import { testEngine, tempDir } from "../helpers.js";
import { tinyComponents, tinyDataset, TINY_RESOLUTION } from "./tiny.js";

before(async () => {
  await testEngine();
});

interface StepConfig {
  name: string;
  blockOutChannels: [number, number];
  /** diffusers' historic name: the number of attention heads. */
  heads: number;
  /** Pixel resolution; the 2-stage VAE makes latents resolution / 2. */
  resolution: number;
  batch: number;
}

/** 2 layers per block, cross-attention at the full latent resolution; 16×16 latents (256 tokens), batch 2. */
const MID: StepConfig = { name: "MID [64,128] 8 heads res 32 batch 2", blockOutChannels: [64, 128], heads: 8, resolution: 32, batch: 2 };
/**
 * 32×32 latents (1024 tokens): the self-attention scores [B·heads, 1024, 1024] (16 MiB per head at batch 2, in 7
 * self-attention layers) dominate the step: measured step peaks of 901 / 1140 / 1619 MiB at 1 / 2 / 4 heads.
 */
const ATTN: StepConfig = { name: "ATTN [32,64] 4 heads res 64 batch 2", blockOutChannels: [32, 64], heads: 4, resolution: 64, batch: 2 };

/** The tiny components at the sizes of `c`, 16 tokens per prompt. */
const components = (c: StepConfig): TrainingComponents =>
  tinyComponents(1, { blockOutChannels: c.blockOutChannels, layersPerBlock: 2, heads: c.heads, resolution: c.resolution, seqLen: 16 });

interface Measured {
  /** Peak live bytes during the measured (second) step, minus the live bytes before the components were built. */
  stepPeak: number;
  /** Live bytes held between steps (weights of all four models + device optimizer state), same reference. */
  resident: number;
  /** Live bytes right after optimizer.step returned (before the trainer's own clean-up), same reference. */
  afterUpdate: number;
  /** Bytes of the ControlNet's trainable parameters (= one full set of gradients). */
  gradBytes: number;
  state: StateBytes;
  loss: number;
  seconds: number;
}

const MiB = (b: number) => `${(b / 2 ** 20).toFixed(1)} MiB`;

async function runSteps(c: StepConfig, options: Partial<TrainingOptions>): Promise<Measured> {
  const baseline = memoryInfo().liveBytes;
  let comps!: TrainingComponents;
  // Inside tidy: Module.initialize makes each variable from a tensor it never disposes, which would keep every
  // initial weight buffer alive after the models are disposed (see the report); tidy frees those handles.
  tf.tidy(() => {
    comps = components(c);
  });
  const dir = tempDir("memory-options-");
  const dataset = await createDataset({ synthetic: { count: 8, seed: 3, resolution: c.resolution }, resolution: c.resolution });
  const trainer = new ControlNetTrainer(comps, dataset, {
    output_dir: dir, resolution: c.resolution, train_batch_size: c.batch, learning_rate: 1e-4, max_train_steps: 2, seed: 7,
    lr_scheduler: "constant", checkpointing_steps: 1000, ...options,
  });
  try {
    let afterUpdate = Number.NaN;
    const opt = trainer.optimizer;
    const update = opt.step.bind(opt);
    opt.step = (grads, o) => {
      update(grads, o);
      afterUpdate = memoryInfo().liveBytes;
    };
    await trainer.train({ until: 1 }); // warm-up: creates the optimizer state
    const t0 = performance.now();
    const r = await measurePeak(() => trainer.train({ until: 2 }));
    const seconds = (performance.now() - t0) / 1000;
    assert.equal(r.result.globalStep, 2);
    assert.ok(Number.isFinite(r.result.lastLoss!), "loss is finite");
    let gradBytes = 0;
    for (const p of comps.controlnet.trainableVariables()) gradBytes += p.size * 4;
    return {
      stepPeak: r.peakBytes - baseline, resident: r.startBytes - baseline, afterUpdate: afterUpdate - baseline, gradBytes,
      state: opt.stateBytes(), loss: r.result.lastLoss!, seconds,
    };
  } finally {
    await trainer.close();
    trainer.optimizer.dispose();
    for (const m of [comps.unet, comps.controlnet, comps.vae, comps.textEncoder]) m.dispose();
  }
}

/** Runs are shared between tests (e.g. the plain checkpointed run is the OFF side of three options). */
const runs = new Map<string, Promise<Measured>>();
function measured(c: StepConfig, options: Partial<TrainingOptions>): Promise<Measured> {
  const key = `${c.name} ${JSON.stringify(options)}${hasFusedAttention() ? " fused attention" : ""}`;
  if (!runs.has(key)) runs.set(key, runSteps(c, options));
  return runs.get(key)!;
}

function report(t: TestContext, label: string, m: Measured): void {
  t.diagnostic(
    `${label}: step peak ${MiB(m.stepPeak)}, resident ${MiB(m.resident)}, after update ${MiB(m.afterUpdate)}, ` +
    `optimizer state device ${MiB(m.state.device)} host ${MiB(m.state.host)}, loss ${m.loss.toFixed(5)}, step ${m.seconds.toFixed(1)} s`,
  );
}

/** ON must be at least 10% below OFF. */
function assertLower(on: number, off: number, what: string): void {
  assert.ok(on <= 0.9 * off, `${what}: ${MiB(on)} is not at least 10% below ${MiB(off)}`);
}

const GC = { gradient_checkpointing: true };

test("gradient_checkpointing lowers the step peak (MID), same loss", async (t) => {
  const off = await measured(MID, {});
  const on = await measured(MID, GC);
  report(t, `${MID.name}, plain`, off);
  report(t, `${MID.name}, gradient_checkpointing`, on);
  assertLower(on.stepPeak, off.stepPeak, "step peak with gradient checkpointing");
  assert.equal(on.resident, off.resident, "checkpointing does not change what is held between steps");
  assert.ok(Math.abs(on.loss - off.loss) <= 1e-3 * Math.abs(off.loss), `loss ${on.loss} vs ${off.loss}`);
});

test("use_8bit_adam: optimizer state ~4x smaller than fp32 AdamW and off the device; lower step peak (MID + checkpointing)", async (t) => {
  const off = await measured(MID, GC);
  const on = await measured(MID, { ...GC, use_8bit_adam: true });
  report(t, `${MID.name}, checkpointing, AdamW`, off);
  report(t, `${MID.name}, checkpointing, use_8bit_adam`, on);
  assert.equal(off.state.host, 0);
  assert.equal(off.state.device, 2 * off.gradBytes, "fp32 AdamW holds m and v on the device");
  assert.equal(on.state.device, 0);
  const ratio = off.state.device / on.state.host;
  t.diagnostic(`fp32 AdamW state / 8-bit state = ${ratio.toFixed(2)}x`);
  assert.ok(ratio >= 3.5 && ratio <= 4.1, `8-bit state should be ~4x smaller, got ${ratio.toFixed(2)}x`);
  assert.ok(off.resident - on.resident >= 0.9 * off.state.device, "the fp32 state leaves the device");
  assertLower(on.stepPeak, off.stepPeak, "step peak with 8-bit Adam");
});

test("offload_optimizer_state: state moves from device to host; lower step peak (MID + checkpointing)", async (t) => {
  const off = await measured(MID, GC);
  const on = await measured(MID, { ...GC, offload_optimizer_state: true });
  report(t, `${MID.name}, checkpointing, AdamW`, off);
  report(t, `${MID.name}, checkpointing, offload_optimizer_state`, on);
  assert.equal(on.state.device, 0);
  assert.ok(on.state.host > 0);
  // m, v and the fp32 master copy of the parameters: 12 bytes per parameter on the host.
  assert.equal(on.state.host, 3 * on.gradBytes);
  assert.ok(off.resident - on.resident >= 0.9 * off.state.device, "the fp32 state leaves the device");
  assertLower(on.stepPeak, off.stepPeak, "step peak with the optimizer state offloaded");
});

test("set_grads_to_none frees each gradient as it is applied: fewer live bytes when the update ends (MID + checkpointing)", async (t) => {
  const on = await measured(MID, GC); // set_grads_to_none defaults to true in the trainer
  const off = await measured(MID, { ...GC, set_grads_to_none: false });
  report(t, `${MID.name}, checkpointing, set_grads_to_none=false`, off);
  report(t, `${MID.name}, checkpointing, set_grads_to_none=true`, on);
  t.diagnostic(`gradients: ${MiB(on.gradBytes)}`);
  assert.ok(off.afterUpdate - on.afterUpdate >= 0.9 * on.gradBytes, "the gradients are gone when the update ends");
  assertLower(on.afterUpdate, off.afterUpdate, "live bytes after the optimizer update");
  // Not claimed: the step peak (it is reached before the update, with all gradients live either way), nor the bytes
  // held between steps (the trainer disposes kept gradients right after the update).
});

test("attention_chunk_size (the --enable_xformers_memory_efficient_attention analogue) lowers the step peak where attention scores dominate (ATTN)", async (t) => {
  // chunking applies to attention composed from tfjs ops (wasm; native with its fused kernel off)
  const fused = hasFusedAttention();
  useFusedKernels(false);
  let off: Measured, on: Measured;
  try {
    off = await measured(ATTN, {});
    on = await measured(ATTN, { attention_chunk_size: 256 });
  } finally {
    useFusedKernels(fused);
  }
  report(t, `${ATTN.name}, full attention`, off);
  report(t, `${ATTN.name}, attention_chunk_size 256`, on);
  assertLower(on.stepPeak, off.stepPeak, "step peak with chunked attention");
  assert.equal(on.resident, off.resident);
  assert.ok(Math.abs(on.loss - off.loss) <= 1e-3 * Math.abs(off.loss), `loss ${on.loss} vs ${off.loss}`);
  if (!fused) return;
  // native: the fused kernel keeps no score maps at all, with or without the flag
  const kernel = await measured(ATTN, { attention_chunk_size: 256 });
  report(t, `${ATTN.name}, fused attention kernel`, kernel);
  assertLower(kernel.stepPeak, off.stepPeak, "step peak with the fused attention kernel vs full composed attention");
  assert.ok(kernel.stepPeak < on.stepPeak, `the fused kernel's step peak ${MiB(kernel.stepPeak)} is below chunking's ${MiB(on.stepPeak)}`); // 672 vs 726 MiB seen
  assert.ok(Math.abs(kernel.loss - off.loss) <= 1e-3 * Math.abs(off.loss), `loss ${kernel.loss} vs ${off.loss}`);
});

test("mixed_precision fp16/bf16 is accepted with its honest float32 message, and the trainer runs with those args", async (t) => {
  const cli = ["--pretrained_model_name_or_path", "base", "--dataset_name", "synthetic"];
  for (const mode of ["fp16", "bf16"] as const) {
    const { args, warnings } = parseTrainArgs([...cli, `--mixed_precision=${mode}`]);
    assert.equal(args.mixed_precision, mode);
    assert.ok(warnings.includes(MIXED_PRECISION_WARNING(mode)), `warning for ${mode}`);
    const msg = MIXED_PRECISION_WARNING(mode);
    assert.match(msg, new RegExp(`^--mixed_precision ${mode}: TensorFlow\\.js has no float16/bfloat16 compute`));
    assert.match(msg, /training runs entirely in float32/);
    for (const flag of ["--gradient_checkpointing", "--use_8bit_adam", "--set_grads_to_none", "--enable_xformers_memory_efficient_attention", "--offload_optimizer_state"]) {
      assert.ok(msg.includes(flag), `the message points to ${flag}`);
    }
  }
  t.diagnostic(MIXED_PRECISION_WARNING("fp16"));
  assert.deepEqual(parseTrainArgs([...cli, "--mixed_precision=no"]).warnings, []);
  assert.throws(() => parseTrainArgs([...cli, "--mixed_precision=fp8"]), /invalid choice: 'fp8'/);

  // The trainer takes the parsed args as run.ts passes them (spread) and trains, in float32.
  const dir = tempDir("memory-options-mp-");
  const { args } = makeTrainArgs({
    pretrained_model_name_or_path: "base", dataset_name: "synthetic", output_dir: dir, mixed_precision: "fp16",
    resolution: TINY_RESOLUTION, train_batch_size: 2, max_train_steps: 1, seed: 7,
  });
  let comps!: TrainingComponents;
  tf.tidy(() => {
    comps = tinyComponents();
  });
  const trainer = new ControlNetTrainer(comps, await tinyDataset(), { ...args, seed: args.seed, attention_chunk_size: 0, logging_dir: path.join(dir, "logs") });
  try {
    const r = await trainer.train();
    assert.equal(r.globalStep, 1);
    assert.ok(Number.isFinite(r.lastLoss!));
    for (const p of comps.controlnet.trainableVariables()) assert.equal(p.dtype, "float32");
  } finally {
    await trainer.close();
    trainer.optimizer.dispose();
    for (const m of [comps.unet, comps.controlnet, comps.vae, comps.textEncoder]) m.dispose();
  }
});
