/**
 * `node --import tsx scripts/fidelity-breakdown.ts --controlnet DIR [--base data/tiny-sd] [--count 32]
 *   [--set-seed 77001] [--scale 1]`
 *
 * Where a ControlNet on the tiny base loses control fidelity. Starting from the ground-truth latents of `count`
 * fill50k outlines (the validation set, seed 77001, unless --set-seed says otherwise), it scores:
 *   - the ceiling: the ground-truth latent decoded (what the VAE can draw at all);
 *   - one-step x0: the latent noised to t, x0 predicted in one UNet call (the scheduler's predOriginalSample, so
 *     the base's prediction_type decides the conversion), with the ControlNet and with the base alone — how much
 *     of the disc each t's prediction knows;
 *   - SDEdit: the latent noised to t, then denoised to 0 with 20·t/1000 DDIM steps (the tail of a 20-step schedule,
 *     as diffusers' img2img does) with the ControlNet. From t = 999 that is ordinary sampling; from a low t the
 *     layout is given and only the refinement is measured.
 * No classifier-free guidance (a single conditional pass), so the numbers isolate the networks.
 */
import { scriptArgs } from "./_cli.js";
import { initEngine, tf } from "../lib/engine/index.js";
import { loadTinySd, DEFAULT_TINY_SD } from "../lib/demo/tiny-sd.js";
import { heldOutSet } from "../lib/demo/run.js";
import { renderFilled, toFloat } from "../lib/data/index.js";
import { averageFidelity } from "../lib/eval/fidelity.js";
import { ControlNetModel } from "../lib/models/index.js";
import { DDIMScheduler } from "../lib/schedulers/index.js";
import { addNoise } from "../lib/schedulers/training.js";
import { denormalize, toRgbImages } from "../lib/pipeline/index.js";
import { Generator } from "../lib/schedulers/random.js";

const USAGE = "usage: node --import tsx scripts/fidelity-breakdown.ts --controlnet DIR [--base data/tiny-sd] [--count 32] [--set-seed 77001] [--scale 1]\n" +
  "Where a ControlNet on the tiny base loses control fidelity: the VAE's ceiling, one-step x0 predictions and SDEdit from each t.";
const values = scriptArgs(USAGE, {
  base: { type: "string" }, controlnet: { type: "string" }, count: { type: "string" },
  "set-seed": { type: "string" }, scale: { type: "string" },
});
if (!values.controlnet) {
  console.error(`--controlnet DIR is required (e.g. out/demo-controlnet after npm run demo)\n${USAGE}`);
  process.exit(2);
}
await initEngine();
const sd = loadTinySd(values.base ?? DEFAULT_TINY_SD);
const cn = ControlNetModel.fromPretrained(values.controlnet);
const n = Number(values.count ?? 32);
const scale = Number(values.scale ?? 1);
const set = heldOutSet(n, sd.resolution, Number(values["set-seed"] ?? 77_001));
const r = sd.resolution;
const sf = sd.vae.scalingFactor;
const ac = sd.noiseScheduler.alphasCumprod;

const targets = new Float32Array(n * r * r * 3);
const outlines = new Float32Array(n * r * r * 3);
set.forEach((s, i) => {
  toFloat(renderFilled(s.truth), "signed", targets, i * r * r * 3);
  toFloat(s.outline, "unit", outlines, i * r * r * 3);
});
const cond = tf.tensor4d(outlines, [n, r, r, 3]);
const z0 = tf.tidy(() => {
  const post = sd.vae.encode(tf.tensor4d(targets, [n, r, r, 3]));
  const z = tf.mul(post.mean, sf);
  post.dispose();
  return z;
}) as tf.Tensor4D;
const ids = sd.tokenizer.tokenize(set.map((s) => s.truth.prompt), sd.tokenizer.modelMaxLength);
const text = sd.textEncoder.forward(ids);
text.pooledOutput?.dispose();
const embeds = text.lastHiddenState;
const noise = new Generator(5).randn(z0.shape) as tf.Tensor4D;

/** The model output for latents x_t at timestep t, with the ControlNet's residuals or without. */
function predict(xt: tf.Tensor4D, t: number, control: boolean): tf.Tensor4D {
  return tf.tidy(() => {
    if (!control) return sd.unet.forward(xt, t, embeds);
    const c = cn.forward(xt, t, embeds, cond, { conditioningScale: scale });
    return sd.unet.forward(xt, t, embeds, { downBlockAdditionalResiduals: c.downBlockResSamples, midBlockAdditionalResidual: c.midBlockResSample });
  });
}

function iou(z: tf.Tensor4D): string {
  const x = tf.tidy(() => denormalize(sd.vae.decode(tf.div(z, sf) as tf.Tensor4D)));
  const images = toRgbImages(x);
  x.dispose();
  return averageFidelity(images.map((image, i) => ({ image, target: set[i]!.target }))).iou.toFixed(3);
}

console.log(`${n} outlines (set seed ${values["set-seed"] ?? 77_001}), ControlNet ${values.controlnet}, conditioning scale ${scale}`);
console.log(`ceiling (ground-truth latent decoded): IoU ${iou(z0)}`);

const ddim = DDIMScheduler.fromConfig(sd.schedulerConfig);
ddim.setTimesteps(20);

console.log("one-step x0 from the ground truth noised to t:   t  | with ControlNet | base alone");
for (const t of [999, 700, 500, 300, 150, 50]) {
  const xt = addNoise(ac, z0, noise, [t]) as tf.Tensor4D;
  const x0 = (control: boolean) => {
    const out = predict(xt, t, control);
    const { prevSample, predOriginalSample } = ddim.step(out, t, xt);
    tf.dispose([out, prevSample]);
    return predOriginalSample as tf.Tensor4D;
  };
  const [a, b] = [x0(true), x0(false)];
  console.log(`  ${String(t).padStart(45)} | ${iou(a).padStart(14)} | ${iou(b)}`);
  tf.dispose([xt, a, b]);
}

console.log("SDEdit (DDIM, 20-step schedule's tail) with the ControlNet, from t:");
for (const start of [999, 700, 500, 300, 150]) {
  const steps = ddim.timesteps.filter((t) => t <= start);
  let x = addNoise(ac, z0, noise, [steps[0]!]) as tf.Tensor4D;
  for (const t of steps) {
    const v = predict(x, t, true);
    const out = ddim.step(v, t, x);
    tf.dispose([v, x, out.predOriginalSample].filter((y): y is tf.Tensor => !!y));
    x = out.prevSample as tf.Tensor4D;
  }
  console.log(`  from t ${steps[0]} (${steps.length} steps): IoU ${iou(x)}`);
  x.dispose();
}
