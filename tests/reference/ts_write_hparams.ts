/**
 * Writes hparams with OUR writer (TensorBoardWriter.addHparams) so the real tensorboard/torch can check them:
 *
 *   npx tsx tests/reference/ts_write_hparams.ts /tmp/hp && tests/reference/.venv/bin/python tests/reference/check_hparams.py /tmp/hp
 *
 * check_hparams.py decodes our three hparams-plugin summaries with tensorboard's own protos and compares them with what
 * torch.utils.tensorboard's add_hparams makes for the same dict (the same values as written here).
 */
import { TensorBoardWriter } from "../../lib/training/tensorboard.js";

const dir = process.argv[2];
if (!dir) throw new Error("usage: ts_write_hparams.ts <logDir>");
const w = new TensorBoardWriter(dir);
w.addHparams({ learning_rate: 1e-5, seed: 1, report_to: "tensorboard", use_ema: false, cache_dir: null, max_grad_norm: 1,
  output_dir: "/tmp/out-1", dataset_name: "synthetic-fill50k:16", hub_model_id: "true", caption_column: "a b" }, { floats: new Set(["learning_rate", "max_grad_norm"]) });
w.close();
