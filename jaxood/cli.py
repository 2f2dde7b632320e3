"""Command-line flags shared by `jaxood.train`, `jaxood.evaluate` and `jaxood.pretrain`.

`--config=configs/<file>.py[:variant]` is an ml_collections config file read
with `lock_config=True`, so `--config.<key>=...` with an unknown key fails
before any work starts. So do a `--workdir` that names a file (or lies under one, or
in a folder jaxood may not write) and a `--workdir` URL: jaxood writes its workdir
with the local file system (orbax included), which would turn `gs://b/run`
into a local folder `gs:/b/run` on each host; multi-host runs need a folder
that every host mounts at the same path.
"""

from absl import app, flags
from ml_collections import config_flags

from jaxood.cache import can_hold_a_folder
from jaxood.errors import report_user_errors

CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/zeroshot.py:toy.", lock_config=True)
WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results.")
flags.mark_flags_as_required(["config", "workdir"])
flags.register_validator(
    "workdir",
    lambda workdir: workdir is None or "://" not in workdir,
    "--workdir must be a folder of the local file system, not a URL: jaxood writes it with the local file system "
    "(a gs:// path would become a local folder named 'gs:'). On a pod or cluster use a folder every host mounts at "
    "the same path (NFS, Filestore).",
)


flags.register_validator(
    "workdir",
    lambda workdir: workdir is None or "://" in workdir or can_hold_a_folder(workdir),
    "--workdir must be a folder jaxood can write, or a path where it can make one; this one (or the nearest part "
    "of it that exists) is a file or a folder it may not write.",
)  # jaxood.evaluate used to find out only when writing its report, after the whole evaluation


def run(main) -> None:
    """`absl.app.run(main)`, with jaxood's own errors (`jaxood.errors.UserError`) printed as their message alone."""
    app.run(report_user_errors(main))
