"""Command-line flags shared by `jaxood.train`, `jaxood.evaluate` and `jaxood.pretrain`.

`--config=configs/<file>.py[:variant]` is an ml_collections config file read
with `lock_config=True`, so `--config.<key>=...` with an unknown key fails
before any work starts.
"""

from absl import flags
from ml_collections import config_flags

CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/zeroshot.py:toy.", lock_config=True)
WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results.")
flags.mark_flags_as_required(["config", "workdir"])
