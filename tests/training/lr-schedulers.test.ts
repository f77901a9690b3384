import { test } from "node:test";
import assert from "node:assert/strict";
import { getScheduler, LR_SCHEDULERS } from "../../lib/training/lr-schedulers.js";

const close = (a: number, b: number, what: string) => assert.ok(Math.abs(a - b) <= 1e-12 + 1e-9 * Math.abs(b), `${what}: ${a} vs ${b}`);

function lrs(name: string, steps: number[], opts: Parameters<typeof getScheduler>[1]): number[] {
  const s = getScheduler(name, opts);
  return steps.map((k) => s.baseLr * s.factor(k));
}

test("constant ignores warmup; constant_with_warmup ramps linearly from 0", () => {
  assert.deepEqual(lrs("constant", [0, 1, 500, 10_000], { baseLr: 1e-5, numWarmupSteps: 500 }), [1e-5, 1e-5, 1e-5, 1e-5]);
  const v = lrs("constant_with_warmup", [0, 1, 50, 99, 100, 5000], { baseLr: 2e-4, numWarmupSteps: 100 });
  [0, 2e-6, 1e-4, 1.98e-4, 2e-4, 2e-4].forEach((want, i) => close(v[i]!, want, `step ${i}`));
});

test("linear: warmup 10, 110 total → 0 at the end, clamped at 0 beyond", () => {
  const v = lrs("linear", [5, 10, 60, 110, 200], { baseLr: 1, numWarmupSteps: 10, numTrainingSteps: 110 });
  [0.5, 1, 0.5, 0, 0].forEach((want, i) => close(v[i]!, want, `i ${i}`));
});

test("cosine: half a period whatever lr_num_cycles says (diffusers does not pass it)", () => {
  const opts = { baseLr: 1, numWarmupSteps: 0, numTrainingSteps: 100, numCycles: 3 };
  const v = lrs("cosine", [0, 25, 50, 75, 100], opts);
  [1, 0.5 * (1 + Math.SQRT1_2), 0.5, 0.5 * (1 - Math.SQRT1_2), 0].forEach((want, i) => close(v[i]!, want, `i ${i}`));
});

test("cosine_with_restarts: lr_num_cycles hard restarts, 0 once progress reaches 1", () => {
  const opts = { baseLr: 1, numWarmupSteps: 10, numTrainingSteps: 110, numCycles: 2 };
  // progress = (s-10)/100; factor = 0.5(1+cos(π·((2·progress) mod 1)))
  const v = lrs("cosine_with_restarts", [5, 10, 35, 59, 60, 85, 110], opts);
  const f = (p: number) => 0.5 * (1 + Math.cos(Math.PI * ((2 * p) % 1)));
  [0.5, 1, 0.5, f(0.49), 1, 0.5, 0].forEach((want, i) => close(v[i]!, want, `i ${i}`));
});

test("polynomial: (lr − 1e-7)·remaining^power + 1e-7, lr_end after the end", () => {
  const opts = { baseLr: 1e-4, numWarmupSteps: 0, numTrainingSteps: 100, power: 2 };
  const v = lrs("polynomial", [0, 50, 100, 150], opts);
  [1e-4, (1e-4 - 1e-7) * 0.25 + 1e-7, 1e-7, 1e-7].forEach((want, i) => close(v[i]!, want, `i ${i}`));
  const lin = lrs("polynomial", [5, 30], { baseLr: 1e-4, numWarmupSteps: 10, numTrainingSteps: 110 });
  close(lin[0]!, 0.5e-4, "warmup");
  close(lin[1]!, (1e-4 - 1e-7) * 0.8 + 1e-7, "decay");
  assert.throws(() => getScheduler("polynomial", { baseLr: 1e-8, numWarmupSteps: 0, numTrainingSteps: 10 }), /lr_end/);
});

test("getLastLr follows step(); state round trip; errors as diffusers'", () => {
  const s = getScheduler("linear", { baseLr: 1, numWarmupSteps: 4, numTrainingSteps: 8 });
  assert.equal(s.getLastLr(), 0); // before the first step: λ(0)
  s.step();
  s.step();
  assert.equal(s.getLastLr(), 0.5);
  const state = JSON.parse(JSON.stringify(s.stateDict()));
  const t = getScheduler("linear", { baseLr: 1, numWarmupSteps: 4, numTrainingSteps: 8 });
  t.loadStateDict(state);
  assert.equal(t.stepCount, 2);
  assert.equal(t.getLastLr(), 0.5);
  // another schedule continues at the saved step (torch's LambdaLR keeps the step, not the lambda)
  const cosine = getScheduler("cosine", { baseLr: 1, numWarmupSteps: 4, numTrainingSteps: 8 });
  cosine.loadStateDict(state);
  assert.equal(cosine.stepCount, 2);
  assert.equal(cosine.getLastLr(), 0.5);
  assert.throws(() => cosine.loadStateDict({ ...state, last_epoch: -1 }), /bad lr scheduler step -1/);
  assert.throws(() => getScheduler("linear", { baseLr: 1, numWarmupSteps: 4 }), /num_training_steps/);
  assert.throws(() => getScheduler("constant_with_warmup", { baseLr: 1 }), /num_warmup_steps/);
  assert.throws(() => getScheduler("exponential", { baseLr: 1 }), /not a valid lr scheduler/);
  assert.equal(LR_SCHEDULERS.length, 6);
});

test("trainingSteps: the script's epoch/step/scale_lr arithmetic", async () => {
  const { trainingSteps } = await import("../../lib/training/lr-schedulers.js");
  // 50 examples, batch 4 → 13 batches; accumulation 4 → 4 updates per epoch; 3 epochs → 12 steps
  const a = trainingSteps({ numExamples: 50, trainBatchSize: 4, gradientAccumulationSteps: 4, maxTrainSteps: null, numTrainEpochs: 3, lrWarmupSteps: 5, learningRate: 1e-5, scaleLr: false });
  assert.deepEqual(a, { batchesPerEpoch: 13, numUpdateStepsPerEpoch: 4, maxTrainSteps: 12, numTrainEpochs: 3, schedulerTrainingSteps: 12, schedulerWarmupSteps: 5, learningRate: 1e-5 });
  // max_train_steps overrides the epochs, which are recomputed: ceil(10 / 4) = 3
  const b = trainingSteps({ numExamples: 50, trainBatchSize: 4, gradientAccumulationSteps: 4, maxTrainSteps: 10, numTrainEpochs: 100, lrWarmupSteps: 0, learningRate: 1e-5, scaleLr: true });
  assert.equal(b.numTrainEpochs, 3);
  assert.equal(b.schedulerTrainingSteps, 10);
  close(b.learningRate, 1e-5 * 4 * 4, "scale_lr = lr · grad_accum · batch · processes");
});
