/**
 * Scheduler parity with diffusers 0.42 (tests/fixtures/schedulers, made by tests/reference/make_fixtures.py):
 * every scheduler × timestep_spacing variant, created from SD1.5's scheduler config through from_config, stepping
 * the same fixed model outputs for 20 steps. Each step's sample must match to ≤ 1e-5 (relative to the sample's
 * magnitude), timesteps exactly.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { tf } from "../../lib/engine/index.js";
import { readSafetensors, type HostTensor } from "../../lib/io/safetensors.js";
import { testEngine, relErr, maxAbsDiff } from "../helpers.js";
import { schedulerFromConfig, addNoise, getVelocity, DDPMScheduler, type Scheduler } from "../../lib/schedulers/index.js";

const DIR = path.join("tests", "fixtures", "schedulers");
const TOL = 1e-5;

interface Meta {
  configs: Record<string, Record<string, unknown>>;
  sd15_scheduler_config: Record<string, unknown>;
}

function load(): { meta: Meta; t: Map<string, HostTensor> } {
  assert.ok(fs.existsSync(path.join(DIR, "io.safetensors")), `missing fixture ${DIR} (run tests/reference/make_fixtures.py)`);
  const meta = JSON.parse(fs.readFileSync(path.join(DIR, "meta.json"), "utf8")) as Meta;
  return { meta, t: readSafetensors(path.join(DIR, "io.safetensors")).tensors };
}

function get(t: Map<string, HostTensor>, name: string): HostTensor {
  const v = t.get(name);
  assert.ok(v, `fixture tensor ${name} missing`);
  return v;
}

/** Slice k of a stacked [K, ...] host tensor as a tf tensor. */
function slice(h: HostTensor, k: number): tf.Tensor {
  const inner = h.shape.slice(1);
  const n = inner.reduce((a, b) => a * b, 1);
  return tf.tensor(h.data.slice(k * n, (k + 1) * n) as Float32Array, inner, "float32");
}

test("scheduler parity with diffusers: 4 schedulers × 5 variants, 20-step trajectories", async () => {
  await testEngine();
  const { meta, t } = load();
  const outputs = get(t, "model_outputs");
  const report: string[] = [];
  for (const [name, cfg] of Object.entries(meta.configs)) {
    const cls = String(cfg._class_name);
    // diffusers' from_config on the SD1.5 file with the variant's override is what produced `cfg`; loading the
    // saved `cfg` itself must give the same scheduler.
    const s: Scheduler = schedulerFromConfig(cls, cfg);
    for (const [k, v] of Object.entries(s.config)) {
      if (k in cfg && !((cfg._use_default_values as string[] | undefined) ?? []).includes(k)) {
        assert.deepEqual(v, cfg[k], `${name}: config ${k}`);
      }
    }
    s.setTimesteps(20);
    const wantTs = Array.from(get(t, `${name}.timesteps`).data);
    assert.equal(s.timesteps.length, wantTs.length, `${name}: number of timesteps`);
    assert.ok(maxAbsDiff(s.timesteps, wantTs) <= 1e-4, `${name}: timesteps ${s.timesteps} vs ${wantTs}`);
    const sigma = get(t, `${name}.init_noise_sigma`).data[0]!;
    assert.ok(Math.abs(s.initNoiseSigma - sigma) <= TOL * Math.max(1, sigma), `${name}: init_noise_sigma ${s.initNoiseSigma} vs ${sigma}`);
    if (t.has(`${name}.sigmas`)) {
      const want = get(t, `${name}.sigmas`).data;
      const got = (s as unknown as { sigmas: Float64Array }).sigmas;
      assert.ok(relErr(got, want) <= TOL, `${name}: sigmas rel err ${relErr(got, want)}`);
    }
    const samples = get(t, `${name}.samples`);
    const preds = t.get(`${name}.pred_original_samples`);
    const scaled = t.get(`${name}.scaled_model_inputs`);
    const noise = t.get(`${name}.variance_noise`);
    let x = slice(samples, 0);
    let worst = 0;
    for (let k = 0; k < s.timesteps.length; k++) {
      const ts = s.timesteps[k]!;
      const inp = s.scaleModelInput(x, ts);
      if (scaled) {
        const want = slice(scaled, k);
        const e = relErr(inp.dataSync(), want.dataSync());
        assert.ok(e <= TOL, `${name} step ${k}: scale_model_input rel err ${e}`);
        want.dispose();
      }
      inp.dispose();
      const mo = slice(outputs, k);
      const n = noise ? slice(noise, k) : undefined;
      const out = s.step(mo, ts, x, { noise: n });
      const want = slice(samples, k + 1);
      const e = relErr(out.prevSample.dataSync(), want.dataSync());
      worst = Math.max(worst, e);
      assert.ok(e <= TOL, `${name} step ${k} (t=${ts}): prev_sample rel err ${e.toExponential(2)}`);
      if (preds && out.predOriginalSample) {
        const wp = slice(preds, k);
        const ep = relErr(out.predOriginalSample.dataSync(), wp.dataSync());
        assert.ok(ep <= TOL, `${name} step ${k}: pred_original_sample rel err ${ep.toExponential(2)}`);
        wp.dispose();
      }
      tf.dispose([mo, n, want, out.predOriginalSample, x].filter((z): z is tf.Tensor => !!z));
      // continue from diffusers' own sample so one step's rounding does not compound into the next comparison
      out.prevSample.dispose();
      x = slice(samples, k + 1);
    }
    x.dispose();
    s.dispose();
    report.push(`${name} ${worst.toExponential(1)}`);
  }
  console.log(`  worst per-step rel err: ${report.join(", ")}`);
});

test("scheduler parity: UniPC free-running 20 steps (history built from our own samples)", async () => {
  await testEngine();
  const { meta, t } = load();
  const outputs = get(t, "model_outputs");
  for (const name of Object.keys(meta.configs).filter((n) => n.startsWith("UniPC") || n.startsWith("DDIM") || n.startsWith("Euler"))) {
    const s = schedulerFromConfig(String(meta.configs[name]!._class_name), meta.configs[name]!);
    s.setTimesteps(20);
    const samples = get(t, `${name}.samples`);
    let x = slice(samples, 0);
    for (let k = 0; k < s.timesteps.length; k++) {
      const mo = slice(outputs, k);
      const inp = s.scaleModelInput(x, s.timesteps[k]!);
      const out = s.step(mo, s.timesteps[k]!, x);
      tf.dispose([mo, inp, x, out.predOriginalSample].filter((z): z is tf.Tensor => !!z));
      x = out.prevSample;
    }
    const want = slice(samples, 20);
    const e = relErr(x.dataSync(), want.dataSync());
    assert.ok(e <= TOL, `${name}: final sample after 20 free-running steps rel err ${e.toExponential(2)}`);
    tf.dispose([x, want]);
    s.dispose();
  }
});

test("training helpers match diffusers: alphas_cumprod, add_noise, get_velocity", async () => {
  await testEngine();
  const { meta, t } = load();
  const s = DDPMScheduler.fromConfig(meta.sd15_scheduler_config);
  const ac = get(t, "alphas_cumprod").data;
  assert.ok(maxAbsDiff(s.alphasCumprod, ac) <= 1e-7, `alphas_cumprod max abs diff ${maxAbsDiff(s.alphasCumprod, ac)}`);
  const hx = get(t, "add_noise.original_samples");
  const hn = get(t, "add_noise.noise");
  const x0 = tf.tensor(hx.data as Float32Array, hx.shape);
  const noise = tf.tensor(hn.data as Float32Array, hn.shape);
  const ts = Array.from(get(t, "add_noise.timesteps").data);
  const noisy = addNoise(s.alphasCumprod, x0, noise, ts);
  const v = getVelocity(s.alphasCumprod, x0, noise, ts);
  assert.ok(relErr(noisy.dataSync(), get(t, "add_noise.noisy_samples").data) <= TOL);
  assert.ok(relErr(v.dataSync(), get(t, "get_velocity.velocity").data) <= TOL);
  tf.dispose([x0, noise, noisy, v]);
});
