/**
 * Writes a small TensorBoard log with OUR writer (lib/training/tensorboard.ts) so the real tensorboard can read it:
 *
 *   npx tsx tests/reference/ts_write_tensorboard.ts /tmp/tb && \
 *     tests/reference/.venv/bin/python tests/reference/make_fixtures.py --check-tensorboard /tmp/tb
 *
 * Expected: scalars loss (1, 1/2, 1/3 at steps 1-3), lr, single (0.25 at step 4) and one image "validation" at
 * step 3, 16x8 pixels (two 8x8 images side by side, no padding, as torch's add_images tiles them).
 */
import { TensorBoardWriter } from "../../lib/training/tensorboard.js";

const dir = process.argv[2];
if (!dir) throw new Error("usage: ts_write_tensorboard.ts <logDir>");
const w = new TensorBoardWriter(dir);
for (let s = 1; s <= 3; s++) w.addScalars({ loss: 1 / s, lr: 1e-5 }, s);
w.addScalar("single", 0.25, 4);
const img = new Uint8Array(8 * 8 * 3).map((_, i) => (i * 7) % 256);
await w.addImages("validation", [img, img], 8, 8, 3, 3);
w.close();
