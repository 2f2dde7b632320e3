"""What a training run's workdir holds, for the commands that are given a folder: a run's `config.json` (its
settings) beside `checkpoints/` (a folder per saved step). `--workdir` and `jaxood.summarize` name the run whose
checkpoints a folder given lies in; a run's workdir given as a CLIP is named as training state."""

from __future__ import annotations

import json
import os

RUN_CHECKPOINTS = "checkpoints"  # the folder of a training run's checkpoints in its workdir, beside its config.json
RUN_CONFIG = "config.json"  # a training run's settings, which a resumed run is checked against
TRAINED_BY = "trained_by.json"  # the code that trained which steps of a run
PRETRAINING = "clip_pretrain"  # the method of jaxood.pretrain's runs
EXPORT = "export"  # the folder of the CLIP a jaxood.pretrain run exported, in its workdir


def run_holding(path: str) -> str | None:
    """The workdir of the run whose checkpoints folder holds `path` (`<run>/checkpoints`, a step's folder in it, or a
    folder in a step's), relative where `path` is; else None. A run's workdir is one whose config.json holds a
    method's settings: a folder named checkpoints elsewhere is no run's."""
    if "://" in path:
        return None
    given = os.path.expanduser(path)
    parts = os.path.abspath(given).split(os.sep)
    for at in range(max(1, len(parts) - 3), len(parts)):  # <run>/checkpoints[/<step>[/<folder>]]
        if parts[at] != RUN_CHECKPOINTS or not all(step.isdigit() for step in parts[at + 1 : at + 2]):
            continue
        run = os.sep.join(parts[:at]) or os.sep
        if run_method(run):
            return run if os.path.isabs(given) else os.path.relpath(run)
    return None


def run_method(folder: str) -> str | None:
    """The method of the jaxood run whose workdir `folder` is (its config.json holds the run's settings, as
    `jaxood.train` saves them), else None."""
    try:
        with open(os.path.join(folder, RUN_CONFIG), encoding="utf-8") as f:
            settings = json.load(f)
    except (OSError, ValueError):
        return None
    return str(settings["method"]) if is_run_settings(settings) else None


def last_saved_step(workdir: str) -> int | None:
    """The last step whose checkpoint the run in `workdir` saved (a step's folder in its checkpoints folder; one
    orbax did not finish is named `<step>.orbax-checkpoint-tmp`), else None."""
    try:
        steps = [int(name) for name in os.listdir(os.path.join(workdir, RUN_CHECKPOINTS)) if name.isdigit()]
    except OSError:
        return None
    return max(steps, default=None)


def is_run_settings(settings) -> bool:
    """`settings`, read from JSON, are a jaxood run's (a method's): a run's config.json, or its results.json's
    "config"."""
    return isinstance(settings, dict) and "method" in settings
