"""SOT-GLP (methods.md §1): global + class-specific local prompts with sparse OT on a frozen CLIP.

    python -m jaxood.train --config=configs/sot_glp.py --workdir=runs/sot_glp \
        --config.train_dataset.data_dir=~/tensorflow_datasets --config.ood_root=/data/mos

Variants (`--config=configs/sot_glp.py:<variant>[,<ImageNet OOD benchmark | CoOp dataset>]`;
the benchmark, `mos` by default or `openood_v15`, as in configs/zeroshot.py):
- `paper` (default): ViT-B/16, ImageNet-1k 16-shot, G = P = 4, K = 10, lambda 0.25,
  SGD lr 0.05 momentum 0.9 wd 0.01, batch 32, 50 epochs with 5 warm-up, cosine per
  step. Paper: acc 75.5; MOS avg FPR95 28.1 / AUROC 93.2 (not yet reproduced here).
- `reference`: the released code: lambda 1, G = 3, lr 0.01, batch 256, no warm-up,
  cosine stepped per epoch, layer-0 V-V, mean-over-prompts local score, OOD T = 1000,
  prediction `softmax(100 (mean_G cos + phi) / 2)`, stratified few-shot picks
  (`shot_sampling`: shots x classes images, each class its share by its size),
  the ID accuracy every 5 epochs (`eval_every`, `eval_unit`).
  With a CoOp dataset, that dataset's released script instead of ImageNet's:
  200 epochs and its own batch size, learning rate and P (`RELEASED_FEW_SHOT`),
  the ID accuracy every 10 epochs, and FGVC Aircraft's trainval split.
- `noproj`: the local projection frozen at identity (paper's best OOD: avg FPR95
  23.8 / AUROC 94.2, acc 75.4).
- `novv`: local features from CLIP's own last-block patch tokens instead of the
  V-V stream (`sot_glp.local_stream = "tokens"`), the paper's ablation "w/o V-V"
  (its Tables 2 and 3: acc 75.5; avg FPR95 28.1 / AUROC 92.9).
- `shared`: one pool of P local contexts that every class shares, each followed by
  the class's name (`sot_glp.class_specific_locals = False`), the paper's ablation
  "w/o class-specific locals" (its Table 2: acc 75.2 on ImageNet).
- `demo`: the toy world on the embedded tiny CLIP pretrained by
  `configs/toy_clip.py` (`model = "toy"`; any CLIP via `--config.model=DIR`,
  random weights of `model_arch` via `--config.model=scratch`). Under a minute
  on a 2-core CPU.
- `<variant>,<CoOp dataset>` (all but `demo`; caltech101, oxford_pets, stanford_cars,
  oxford_flowers, food101, fgvc_aircraft, sun397, dtd, eurosat, ucf101): few-shot classification as
  in the paper's Table 1, trained on `shots` per class of CoOp's train split and tested
  on its test split, under `--config.coop_root` (default /data/coop, laid out as
  CoOp's DATASETS.md says), with no OOD set: the report is the ID accuracy.
"""

import importlib.util
import os

import ml_collections

from jaxood.data.datasets import COOP_DATASETS, coop_split
from jaxood.data.sources import IMAGENET_TFDS
from jaxood.errors import joined, unknown_argument


def _sibling(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(os.path.dirname(__file__), f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


zeroshot, toy_clip, common = _sibling("zeroshot"), _sibling("toy_clip"), _sibling("common")

# The released code's script per few-shot dataset (train_script/scripts/run_<dataset>.sh, 16 shots): epochs, batch
# size, learning rate and local prompts per class. The paper keeps its settings "constant across datasets".
RELEASED_FEW_SHOT = {
    "caltech101": (200, 32, 0.005, 6), "oxford_pets": (200, 32, 0.005, 6), "stanford_cars": (200, 32, 0.005, 4),
    "oxford_flowers": (200, 32, 0.005, 6), "food101": (200, 128, 0.005, 6), "fgvc_aircraft": (200, 128, 0.01, 2),
    "sun397": (200, 128, 0.005, 4), "dtd": (200, 128, 0.002, 4), "eurosat": (200, 10, 0.001, 4),
    "ucf101": (200, 128, 0.005, 4),
}  # fmt: skip


VARIANTS = ("paper", "reference", "noproj", "novv", "shared", "demo")
BENCHMARKS = (*sorted(zeroshot.IMAGENET_OOD), *COOP_DATASETS)  # what all variants but demo may name after a comma
ARGS = (*VARIANTS, *(f"{v},{b}" for v in VARIANTS[:-1] for b in BENCHMARKS))  # --config=configs/sot_glp.py:<arg>


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    if (arg or "paper") not in ARGS:
        raise ValueError(
            f"{unknown_argument('variant', arg, ARGS)}: choose {joined(VARIANTS, 'or')} (the toy world); all but demo "
            f"may name ImageNet's OOD benchmark after a comma ({', '.join(sorted(zeroshot.IMAGENET_OOD))}; default "
            f"mos), or a CoOp dataset to train and test on instead ({', '.join(COOP_DATASETS)})"
        )
    variant, _, benchmark = (arg or "paper").partition(",")
    coop = benchmark in COOP_DATASETS
    imagenet = ",".join(filter(None, ("imagenet", benchmark)))
    c = zeroshot.get_config("toy" if variant == "demo" else f"coop,{benchmark}" if coop else imagenet)
    common.add_trainer_defaults(c)
    c.method = "sot_glp"
    c.variant = variant
    c.model_arch = toy_clip.toy_arch()  # used only when model == "scratch" (random weights)
    c.train_dataset = ml_collections.ConfigDict(
        zeroshot.under_root(c, "coop_root", coop_split(benchmark, "ROOT", "train"))
        if coop
        else {"kind": "tfds", "name": IMAGENET_TFDS, "split": "train", "data_dir": ""}
    )
    c.shots = 16
    # "per_class": exactly `shots` of each class (the paper's "16 shots per class"); "stratified": the released code's
    # stratified split of shots x classes images, each class its share in proportion to its size (README, SOT-GLP).
    c.shot_sampling = "per_class"
    c.batch_size = 32
    c.epochs = 50
    c.augment = ml_collections.ConfigDict({"scale": (0.08, 1.0), "flip": True})
    c.optim = ml_collections.ConfigDict({
        "name": "sgd", "lr": 0.05, "min_lr": 0.0, "momentum": 0.9, "nesterov": False, "weight_decay": 0.01,
        "b1": 0.9, "b2": 0.999, "warmup_epochs": 5.0, "schedule_unit": "step", "clip_norm": 0.0, "groups": {},
    })  # fmt: skip
    c.sot_glp = ml_collections.ConfigDict({
        "n_global": 4, "n_local": 4, "init_text": "a photo of a", "top_k": 10, "ot_epsilon": 0.1,
        "ot_iterations": 100, "lam": 0.25, "tau": 0.01, "local_reduction": "sum", "vv_layer0_ori": False,
        "prediction": "paper", "ood_temperature": 1.0, "learn_proj": True, "prompt_chunk": 1000,
        "local_stream": "vv", "class_specific_locals": True,
    })  # fmt: skip
    # prompt_chunk: prompts per device through the text tower at once (0: all). Smaller needs less memory for one
    # more forward pass, and the results do not change (a resumed run may change it). ImageNet's 8,000 prompts on
    # one device: 13.3 GiB for the step instead of 96.6 (XLA:CPU, float32); from 8 devices on, 1000 is all of them.
    c.scores = "mcm,gl_mcm,max_logit"  # zero-shot rows shown next to the trained ones
    if variant == "reference":
        c.sot_glp.update(
            {
                "lam": 1.0,
                "n_global": 3,
                "vv_layer0_ori": True,
                "local_reduction": "mean",
                "ood_temperature": 1000.0,
                "prediction": "reference",
            }
        )
        c.optim.update({"lr": 0.01, "warmup_epochs": 0.0, "schedule_unit": "epoch"})
        c.batch_size = 256
        c.shot_sampling = "stratified"
        c.eval_every, c.eval_unit = 5, "epoch"  # run_imagenet.sh's --eval_freq
        if coop:  # the released script of that dataset, not ImageNet's
            c.epochs, c.batch_size, c.optim.lr, c.sot_glp.n_local = RELEASED_FEW_SHOT[benchmark]
            c.eval_every = 10  # each run_<dataset>.sh's --eval_freq
            if benchmark == "fgvc_aircraft":  # its dataset reads split="trainval" for training
                c.train_dataset.split = "trainval"
    elif variant == "noproj":
        c.sot_glp.learn_proj = False
    elif variant == "novv":
        c.sot_glp.local_stream = "tokens"
    elif variant == "shared":
        c.sot_glp.class_specific_locals = False
    elif variant == "demo":
        c.model = "toy"
        toy = {"size": 64, "seed": 0}
        # 80 % of each training class sits on its own background: the spurious shortcut the spurious OOD set probes.
        c.train_dataset = ml_collections.ConfigDict(
            {"kind": "toy", "split": "train", "per_class": 16, "spurious_p": 0.8, **toy}
        )
        c.augment.scale = (0.5, 1.0)  # crops down to 8 % of a 64 px image often cut the object out
        c.batch_size = 32
        c.epochs = 10
        c.optim.update({"lr": 0.05, "warmup_epochs": 1.0})
        c.sot_glp.update({"top_k": 8, "ot_iterations": 50})
        c.eval_batch_size = 64
        c.log_every = 5
        c.eval_every = 20  # the ID accuracy at steps 20 and 40; the closing evaluation's at 60
        c.checkpoint_every = 50
        c.progress_every = 10.0
    return c
