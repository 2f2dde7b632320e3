"""Pretrain a CLIP with the shared trainer and export it.

    python -m jaxood.pretrain --config=configs/toy_clip.py --workdir=DIR

Trains (`jaxood.train.train`, method `clip_pretrain`), then writes the final
weights as a half-precision jaxood checkpoint to `DIR/export` (loading restores
float32). `--install` also copies it into the package as the embedded default
(`jaxood/models/assets/toy_clip`, loaded by `clip.load("toy")`).
"""

from __future__ import annotations

import os

from absl import flags

from jaxood import distributed
from jaxood.cache import can_hold_a_folder
from jaxood.errors import InvalidInput
from jaxood.methods import check_command
from jaxood.models import clip, convert
from jaxood.run_folders import EXPORT

INSTALL = flags.DEFINE_bool("install", False, "Copy the exported checkpoint into the package (the embedded default).")


def check_pretraining(config, install: bool = False) -> None:
    """The config trains a CLIP: another method's (SOT-GLP's, on a frozen CLIP) trained it and then exported the
    frozen CLIP as if pretrained, silently. With `install`, the package folder can be written: a system-wide
    install's could not, which failed after the whole pretraining."""
    check_command("jaxood.pretrain", config)
    if install and not can_hold_a_folder(clip.TOY_CLIP_DIR):
        raise InvalidInput(
            f"--install copies the exported CLIP into {clip.TOY_CLIP_DIR}, which this user may not write: run without "
            "--install and copy WORKDIR/export there as a user who may, or install jaxood from a checkout you own "
            "(`pip install -e .`)"
        )


def export(workdir: str, config, params, install: bool) -> str | None:
    """The half-precision checkpoint of `params["clip"]` in `workdir/export` (its path), written by the first host
    only: in a multi-host job every host holds the same weights and shares the workdir (None on the others)."""
    if not distributed.is_first_host():
        return None
    from jaxood.train import architecture

    # The trained CLIP's architecture: `model_arch` for random weights, else its config file (a hub id's from the
    # cache the trainer fetched it into).
    cfg = architecture(config)
    out = convert.save(os.path.join(os.path.expanduser(workdir), EXPORT), cfg, params["clip"], half=True)
    size = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out)) / 2**20
    print(f"exported {out} ({size:.1f} MiB)", flush=True)
    if install:  # the same checkpoint, its files each written whole (a copy in place left them cut short)
        convert.save(clip.TOY_CLIP_DIR, cfg, params["clip"], half=True)
        print(f"installed as the embedded default in {clip.TOY_CLIP_DIR}", flush=True)
    return out


def main(argv):
    del argv
    from absl import logging

    from jaxood.cli import CONFIG, WORKDIR, typed_keys
    from jaxood.train import train

    logging.set_verbosity(logging.WARNING)
    check_pretraining(CONFIG.value, INSTALL.value)
    _, params = train(CONFIG.value, WORKDIR.value, typed_keys())
    export(WORKDIR.value, CONFIG.value, params, INSTALL.value)


if __name__ == "__main__":
    from jaxood import cli

    cli.run(main, "python -m jaxood.pretrain --config=configs/toy_clip.py --workdir=runs/toy_clip")
