"""Zero-shot OOD baselines (MCM, GL-MCM, MaxLogit, NegLabel, CSP) of a pretrained CLIP, no training.

    python -m jaxood.evaluate --config=configs/zeroshot.py --workdir=runs/zeroshot_b16 \
        --config.id_dataset.data_dir=~/tensorflow_datasets --config.ood_root=/data/mos

Variants:
- (default) `imagenet`: ViT-B/16 (`openai/clip-vit-base-patch16`, or a local HF
  directory via `--config.model=DIR`), ImageNet-1k validation as ID, the MOS sets
  (iNaturalist, SUN, Places, Textures) under `ood_root` as OOD. Published
  zero-shot numbers for reference: MCM avg FPR95 42.7 / AUROC 90.8, NegLabel
  25.4 / 94.2 (from the methods' papers; this config has not been run here).
- `imagenet,openood_v15`: OpenOOD v1.5's ImageNet benchmark, image lists under
  `ood_root` (default /data/openood): ID its 45,000 test images of ImageNet-1k's
  validation split (the other 5,000 are its validation set), OOD SSB-hard, NINCO,
  iNaturalist, Textures and OpenImage-O, with OpenOOD's near-OOD (SSB-hard, NINCO)
  and far-OOD averages (`ood_groups`) beside the average of all five.
  `imagenet,mos` is the default.
- `coop,<dataset>`: few-shot classification's test set, CoOp's split of one of
  its datasets (caltech101, oxford_pets, stanford_cars, oxford_flowers, food101,
  fgvc_aircraft, sun397, dtd, eurosat, ucf101; under `coop_root`, default /data/coop, as CoOp's
  DATASETS.md lays them out), with CoOp's zero-shot prompt for it and no OOD set:
  zero-shot CLIP's ID accuracy, the "CLIP" column of the few-shot tables.
- `toy`: the toy world (ID test, near/far/spurious OOD) with the embedded tiny
  CLIP (`model = "toy"`; another via `--config.model=DIR`).
"""

import ml_collections

from jaxood.data.datasets import COOP_DATASETS, coop_split, id_test_set, ood_benchmark, ood_groups
from jaxood.data.sources import IMAGENET_TFDS
from jaxood.errors import unknown_argument

IMAGENET_OOD = {"mos": "/data/mos", "openood_v15": "/data/openood"}  # ImageNet's OOD benchmarks, default roots
COOP_ROOT = "/data/coop"  # CoOp's datasets (its DATASETS.md's $DATA), default root


# --config=configs/zeroshot.py:<arg>
ARGS = (
    "imagenet",
    *(f"imagenet,{b}" for b in IMAGENET_OOD),
    *(f"coop,{d}" for d in COOP_DATASETS),
    "toy",
)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    if (arg or "imagenet") not in ARGS:
        raise ValueError(
            f"{unknown_argument('variant', arg, ARGS)}: choose imagenet, imagenet,<one of {', '.join(IMAGENET_OOD)}>, "
            f"coop,<one of {', '.join(COOP_DATASETS)}> or toy (the toy world, which sot_glp.py's demo trains on)"
        )
    variant, _, benchmark = (arg or "imagenet").partition(",")
    c = ml_collections.ConfigDict()
    c.model = "openai/clip-vit-base-patch16"
    c.dtype = "auto"  # bfloat16 compute on accelerators, float32 on CPU; params stay float32
    c.eval_batch_size = 64
    c.scores = "mcm,gl_mcm,max_logit,neglabel,csp"
    c.mcm_template = "a photo of a {}."
    c.mcm = ml_collections.ConfigDict({"temperature": 1.0})
    # local_features: "value", GL-MCM's own (the last block's value path, as its code and LoCoOp's take them; what
    # the papers' "CLIP (GL)" rows are), or "vv", the value-value stream SOT-GLP's local prompts and score read.
    c.gl_mcm = ml_collections.ConfigDict({"lambda_local": 1.0, "temperature": 1.0, "local_features": "value"})
    # max_candidates > 0 keeps an evenly spaced subset of each word type (quick runs only).
    c.neglabel = ml_collections.ConfigDict(
        {"percent": 0.15, "eta": 0.05, "temperature": 0.01, "n_groups": 1, "seed": 0, "max_candidates": 0}
    )
    c.csp = ml_collections.ConfigDict(
        {
            "percent": 0.15,
            "eta": 0.05,
            "temperature": 0.01,
            "n_groups": 100,
            "seed": 0,
            "max_candidates": 0,
            "max_id_similarity": 0.95,
        }
    )
    # ODIN and i-ODIN: MSP at `temperature` of CLIP's logits after a step of the image along the gradient of their log
    # max softmax, `eps` (in [0, 1] pixel units) divided by CLIP's per-channel std; every element (ODIN) or the one
    # of largest |gradient| (i-ODIN). ODIN's defaults, T = 1000 and eps = 0.0014.
    c.odin = ml_collections.ConfigDict({"temperature": 1000.0, "eps": 0.0014})
    c.iodin = ml_collections.ConfigDict({"temperature": 1000.0, "eps": 0.0014})
    c.cache_dir = ""  # text-feature cache; default ~/.cache/jaxood (or $JAXOOD_CACHE, $XDG_CACHE_HOME/jaxood)
    c.plots = True
    if variant == "imagenet":
        benchmark = benchmark or "mos"
        c.ood_root = ml_collections.FieldReference(IMAGENET_OOD[benchmark], field_type=str)
        # ImageNet-1k's validation split, or the part of it the benchmark tests on (OpenOOD v1.5's 45,000)
        own = id_test_set(benchmark, "ROOT") or {"kind": "tfds", "name": IMAGENET_TFDS, "split": "validation",
                                                  "data_dir": ""}  # fmt: skip
        c.id_dataset = ml_collections.ConfigDict(under_root(c, "ood_root", own))
        c.ood_datasets = ml_collections.ConfigDict(
            {name: under_root(c, "ood_root", spec) for name, spec in ood_benchmark(benchmark, "ROOT").items()},
            sort_keys=False,  # the papers' order, in the report too (ConfigDict sorts keys by default)
        )
    elif variant == "coop":  # few-shot classification: CoOp's test split, no OOD set (the ID accuracy alone)
        c.coop_root = ml_collections.FieldReference(COOP_ROOT, field_type=str)
        c.id_dataset = ml_collections.ConfigDict(under_root(c, "coop_root", coop_split(benchmark, "ROOT", "test")))
        c.ood_datasets = ml_collections.ConfigDict({})
        c.mcm_template = COOP_DATASETS[benchmark][3]  # CoOp's zero-shot CLIP prompt for the dataset
    else:  # toy
        benchmark = "toy"
        c.model = "toy"
        toy = {"per_class": 50, "size": 64, "seed": 1}
        c.id_dataset = ml_collections.ConfigDict({"kind": "toy", "split": "test", **toy})
        c.ood_datasets = ml_collections.ConfigDict(ood_benchmark(benchmark, toy=toy), sort_keys=False)
        c.neglabel.max_candidates = 3000
        c.csp.max_candidates = 1000
        c.csp.n_groups = 10
    c.ood_groups = ml_collections.ConfigDict(ood_groups(benchmark), sort_keys=False)  # OpenOOD's near, then far
    return c


def under_root(c: ml_collections.ConfigDict, key: str, entry: dict) -> dict:
    """A dataset description written over the root "ROOT" with each "ROOT" in its text a lazy reference to
    `c[key]`: its paths and download hint follow `--config.<key>=...`."""

    def lazy(value):
        if not isinstance(value, str):  # class names
            return value
        head, *after_root = value.split("ROOT")
        for tail in after_root:
            head = head + c.get_ref(key) + tail
        return head

    return {name: lazy(value) for name, value in entry.items()}
