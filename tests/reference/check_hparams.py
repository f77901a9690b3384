"""Checks the hparams written by tests/reference/ts_write_hparams.ts against torch's add_hparams (see that file)."""
import glob
import sys

import yaml
from tensorboard.backend.event_processing import event_file_loader
from tensorboard.plugins.hparams import plugin_data_pb2
from torch.utils.tensorboard.summary import hparams

VALUES = {"learning_rate": 1e-5, "seed": 1, "report_to": "tensorboard", "use_ema": False, "cache_dir": None, "max_grad_norm": 1.0,
          "output_dir": "/tmp/out-1", "dataset_name": "synthetic-fill50k:16", "hub_model_id": "true", "caption_column": "a b"}
logdir = sys.argv[1]
ours = {}
for f in glob.glob(f"{logdir}/*/events.out.tfevents.*"):
    for ev in event_file_loader.EventFileLoader(f).Load():
        for v in ev.summary.value:
            assert v.metadata.plugin_data.plugin_name == "hparams", v.metadata
            ours[v.tag] = plugin_data_pb2.HParamsPluginData.FromString(v.metadata.plugin_data.content)
theirs = {}
for s in hparams(VALUES, {}):
    for v in s.value:
        theirs[v.tag] = plugin_data_pb2.HParamsPluginData.FromString(v.metadata.plugin_data.content)
assert ours == theirs, f"ours:\n{ours}\ntorch:\n{theirs}"
(yml,) = glob.glob(f"{logdir}/*/hparams.yml")
assert yaml.safe_load(open(yml)) == VALUES, open(yml).read()
print(f"hparams: {len(ours)} summaries equal torch's add_hparams; hparams.yml reads back (yaml.safe_load) as the values")
