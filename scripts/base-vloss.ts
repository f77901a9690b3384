/**
 * `node --import tsx scripts/base-vloss.ts [baseDir] [rows]`: a paired measure of a tiny-SD checkpoint's UNet — its
 * v-prediction MSE on `rows` (default 512) rows of the recipe's own training pool (seed 1234, pool seed 1237) and on
 * as many fresh rows (a synthetic fill50k with seed 999), at t = 100, 300, 500, 700, 900, 999 with fixed noise, from
 * the VAE's latent means. Fixed rows and noise make two checkpoints comparable with far less noise than a ControlNet
 * run; pool vs fresh shows whether the UNet overfits its pool.
 */
import { initEngine, tf } from "../lib/engine/index.js";
import { loadTinySd, DEFAULT_TINY_SD, type TinySd } from "../lib/demo/tiny-sd.js";
import { SyntheticFill50k, toFloat, type RawImage } from "../lib/data/index.js";
import { Rng } from "../lib/training/rng.js";
import { TINY_SD_RECIPE, recipeDataset, drawPool } from "../data/recipes/tiny-sd.js";

const TIMESTEPS = [100, 300, 500, 700, 900, 999];

function vMse(sd: TinySd, ds: SyntheticFill50k, rows: number[]): number {
  const r = sd.resolution;
  const noiseRng = new Rng(7);
  let total = 0;
  for (let s = 0; s < rows.length; s += 64) {
    const idx = rows.slice(s, s + 64);
    const px = new Float32Array(idx.length * r * r * 3);
    const prompts = idx.map((i, k) => {
      const row = ds.row(i);
      toFloat(row.image as RawImage, "signed", px, k * r * r * 3);
      return row.text as string;
    });
    total += tf.tidy(() => {
      const lat = tf.mul(sd.vae.encode(tf.tensor4d(px, [idx.length, r, r, 3])).mean, sd.vae.config.scaling_factor) as tf.Tensor4D;
      const text = sd.textEncoder.forward(sd.tokenizer.tokenize(prompts, sd.tokenizer.modelMaxLength)).lastHiddenState;
      let sum = 0;
      for (const t of TIMESTEPS) {
        const noise = tf.tensor4d(noiseRng.normals(lat.size), lat.shape);
        const ts = new Array<number>(idx.length).fill(t);
        const noisy = sd.noiseScheduler.addNoise(lat, noise, ts) as tf.Tensor4D;
        const target = sd.noiseScheduler.getVelocity(lat, noise, ts);
        sum += tf.mean(tf.squaredDifference(sd.unet.forward(noisy, tf.tensor1d(ts, "float32"), text), target)).dataSync()[0]! * idx.length;
      }
      return sum / TIMESTEPS.length;
    });
  }
  return total / rows.length;
}

await initEngine();
const dir = process.argv[2] ?? DEFAULT_TINY_SD;
const n = Number(process.argv[3] ?? 512);
if (!(Number.isInteger(n) && n > 0)) throw new Error(`rows must be a positive integer (got ${process.argv[3]})`);
const sd = loadTinySd(dir);
const seed = TINY_SD_RECIPE.seed;
const train = recipeDataset(seed, sd.resolution);
const pool = drawPool(seed, n, train.length).rows; // the first n rows of the recipe's pool
const fresh = recipeDataset(999, sd.resolution);
console.log(`${dir}: v-MSE on ${n} pool rows ${vMse(sd, train, pool).toFixed(4)}, on ${n} fresh rows ${vMse(sd, fresh, Array.from({ length: n }, (_, i) => i)).toFixed(4)}`);
