"""Pretrain jaxood's embedded tiny CLIP on the toy world (contrastive, image-caption pairs).

    python -m jaxood.pretrain --config=configs/toy_clip.py --workdir=runs/toy_clip [--install]

A width-128 ViT (4 layers, patch 8 on 64 px) and a 2-layer text transformer
with the standard CLIP tokenizer, trained from scratch for 9000 steps on the
`pretrain` split (every toy object, ID and OOD alike, and bare textures, with
captions of varied detail) with AdamW. The evaluation at the end reports
zero-shot MCM / GL-MCM on the toy benchmark; `--install` copies the exported
half-precision checkpoint into the package (`clip.load("toy")`).
"""

import importlib.util
import os

import ml_collections


def _sibling(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(os.path.dirname(__file__), f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


zeroshot, common = _sibling("zeroshot"), _sibling("common")


def toy_arch() -> ml_collections.ConfigDict:
    """The tiny CLIP: width 128, 4 vision and 2 text layers (MLP 256), patch 8 on 64 px, the standard vocabulary."""
    tower = {"width": 128, "layers": 4, "heads": 4, "mlp_dim": 256, "act": "quick_gelu", "eps": 1e-5}
    return ml_collections.ConfigDict({
        "vision": dict(tower), "text": dict(tower, layers=2), "image_size": 64, "patch_size": 8, "vocab_size": 49408,
        "context_length": 77, "projection_dim": 128, "logit_scale_init": 2.6592,
    })  # fmt: skip


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    if arg:  # a variant name was ignored: `:demo` started the whole 9000-step pretraining
        raise ValueError(f"configs/toy_clip.py has no variants, got {arg!r}; shorten a run with --config.num_steps=N")
    c = common.add_trainer_defaults(zeroshot.get_config("toy"))
    c.method = "clip_pretrain"
    c.model = "scratch"
    c.model_arch = toy_arch()
    c.dtype = "float32"
    c.train_dataset = ml_collections.ConfigDict(
        {"kind": "toy", "split": "pretrain", "per_class": 400, "size": 64, "seed": 7}
    )
    c.shots = 0
    c.caption_length = 20  # the longest toy caption is 17 tokens
    c.batch_size = 128
    c.epochs = 0
    c.num_steps = 9000
    c.augment = ml_collections.ConfigDict({"scale": (0.7, 1.0), "flip": True})
    c.optim = ml_collections.ConfigDict({
        "name": "adamw", "lr": 1e-3, "min_lr": 1e-5, "momentum": 0.0, "nesterov": False, "weight_decay": 0.1,
        "b1": 0.9, "b2": 0.98, "warmup_epochs": 1.0, "schedule_unit": "step", "clip_norm": 1.0, "groups": {},
    })  # fmt: skip
    c.scores = "mcm,gl_mcm"
    c.checkpoint_every = 200
    c.eval_every = 1000  # the zero-shot accuracy of the CLIP in training, on the 600 toy test images
    return c
