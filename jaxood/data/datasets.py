"""Datasets by description: one entry point from configs to sources.

A dataset is a dict (or ConfigDict) with a `kind`:

- `{"kind": "tfds", "name": "cifar10", "split": "test", "data_dir": ...}`
- `{"kind": "folder", "root": ".../iNaturalist"}`
- `{"kind": "list", "root": ".../images_largescale", "list_file": ".../test_ninco.txt"}`
- `{"kind": "coop", "root": ".../oxford_pets/images", "split_file": ".../split_zhou_OxfordPets.json", "split": "test"}`
- `{"kind": "fgvc_aircraft", "root": ".../fgvc_aircraft", "split": "test"}` (its archive's `data/` folder)
- `{"kind": "toy", "split": "near_ood", "per_class": 50, "size": 64, "seed": 0}`

An entry's optional `download` says how to get the dataset, where it is missing; `ood_benchmark` gives one for
each of the papers' OOD sets.

Paths (`root`, `list_file`, `data_dir`) may start with `~`: a shell leaves
`--config.ood_root=~/data` as it is, so jaxood expands it.

`make_sources(entries)` opens several, naming every missing one in one error.
`ood_benchmark(name, root)` gives the standard OOD sets of the papers, `id_test_set(name, root)` the ID test set
of a benchmark that fixes one (OpenOOD v1.5), `coop_split(name, root, split)` a split of one of CoOp's few-shot
datasets.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import jax
import numpy as np

from jaxood import distributed, settings
from jaxood.data.classnames import imagenet_classnames
from jaxood.data.sources import (
    AircraftSource,
    CoopSplitSource,
    DatasetMissing,
    FolderSource,
    ImageListSource,
    TfdsSource,
)
from jaxood.data.toy_world import ToyWorld
from jaxood.errors import InvalidInput, UserError, each_with_nearest, joined, not_one_of

_PATHS = ("root", "list_file", "split_file", "data_dir")
_TEXT = {
    "name": "a TFDS dataset's name", "split": "a split's name", "download": "how to get the dataset",
    **dict.fromkeys(_PATHS, "a path"),
}  # fmt: skip
# The keys each kind of entry may have (besides `kind`).
ENTRY_KEYS = {
    "tfds": {"name", "split", "data_dir", "class_names", "download"},
    "folder": {"root", "class_names", "download"},
    "list": {"root", "list_file", "class_names", "download"},
    "coop": {"root", "split_file", "split", "class_names", "download"},
    "fgvc_aircraft": {"root", "split", "class_names", "download"},
    "toy": {"split", "per_class", "size", "seed", "spurious_p"},
}
REQUIRED_KEYS = {
    "tfds": {"name", "split"}, "folder": {"root"}, "list": {"root", "list_file"},
    "coop": {"root", "split_file", "split"}, "fgvc_aircraft": {"root", "split"}, "toy": {"split"},
}  # fmt: skip
# The text that is nothing when empty (a shell variable not set: a folder "not found at :"); a list's root may be
# empty, its paths then relative to the current folder.
NOT_EMPTY = {
    "tfds": {"name", "split"}, "folder": {"root"}, "list": {"list_file"}, "coop": {"split_file", "split"},
    "fgvc_aircraft": {"root", "split"}, "toy": set(),
}  # fmt: skip


# A whole dataset entry, as error messages show one (README, 'Datasets', has every kind).
EXAMPLE_ENTRY = "{'kind': 'folder', 'root': '/path/to/images'}"


def make_source(spec: Mapping, key: str = ""):
    """The source a dataset description names; unknown kinds or keys are errors. `key`, where the description sits
    in the config (`id_dataset`, `ood_datasets.SUN`), starts the message of any error, as the entry to fix."""
    return make_sources({key: spec})[key]


def make_sources(entries: Mapping[str, Mapping]) -> dict:
    """`make_source` of each entry (config key -> description), by key; every missing dataset is named in one error
    (ImageNet and MOS' four OOD sets took five runs to learn of), a dataset several keys name once, with its keys
    (a training run's ImageNet train split and ID validation split are one missing dataset).

    In a multi-host job the hosts then compare what they opened (`_same_on_every_host`), so every host stops on a
    dataset one host lacks, or sees otherwise, with the others: there every host must call it (`make_source`
    too), with the same entries."""
    sources, missing = {}, {}  # a missing dataset's message -> the keys naming it, in the entries' order
    refused = None  # the first entry refused, with its error
    for key, spec in entries.items():
        try:
            if not hasattr(spec, "keys"):  # not a dict or ConfigDict, but a path: dict() failed with a ValueError
                raise InvalidInput(
                    f"{spec!r} is not a dataset description: give a dict with its kind, as {EXAMPLE_ENTRY} (README, "
                    "'Datasets')"
                )
            sources[key] = _open(dict(spec))
        except DatasetMissing as err:
            missing.setdefault(str(err), []).append(key)
        except UserError as err:
            refused = key, err
            break
    if jax.process_count() > 1:
        _same_on_every_host(list(entries), sources, failed=bool(refused or missing))
    if refused:
        key, err = refused
        raise type(err)(_at([key], err)) from err
    lines = [_at(keys, message) for message, keys in missing.items()]
    if len(lines) > 1:
        n = sum(map(len, missing.values()))
        raise DatasetMissing(f"{n} of the {len(entries)} datasets are missing:\n" + "\n".join(lines))
    if lines:
        raise DatasetMissing(lines[0])
    return sources


def _same_on_every_host(keys: list[str], sources: dict, failed: bool) -> None:
    """The hosts of a job swap what they opened, per config key: whether they opened it, how many examples it has,
    and a hash of its `fingerprint`. Each host reads its share of one list of examples, so copies that differ
    (a worker's local copy cut short, or made from another version) mixed their images into one set without a
    word, and dropped or repeated some; a dataset missing on one host left the others failing in a collective.
    Now every host stops here, naming the hosts and what each sees; a host that `failed` itself goes on to its
    own error."""
    mine = np.zeros((len(keys), 6), np.int32)  # opened, examples, 128 bits of hash
    for row, key in enumerate(keys):
        if (source := sources.get(key)) is not None:
            mine[row] = [1, len(source), *distributed.digest(source.fingerprint())]
    every = distributed.every_host(mine)  # (hosts, keys, 6)
    if failed:
        return
    for row, key in enumerate(keys):
        seen = every[:, row]
        if not seen[:, 0].all():
            hosts = ", ".join(map(str, np.flatnonzero(seen[:, 0] == 0)))
            raise DatasetMissing(
                f"config.{key}: host(s) {hosts} of this job could not open this dataset (their output says why); "
                "every host reads it"
            )
        variants = {tuple(v): [] for v in seen}
        if len(variants) > 1:
            for host, v in enumerate(seen):
                variants[tuple(v)].append(host)
            counts = [v[1] for v in variants]
            said = "; ".join(
                f"host{'s' if len(hosts) > 1 else ''} {', '.join(map(str, hosts))}: {v[1]} examples"
                + (" (other files or labels)" if v[1] in counts[:i] else "")
                for i, (v, hosts) in enumerate(variants.items())
            )
            raise InvalidInput(
                f"config.{key}: the hosts of this job see different copies of this dataset ({said}). Each host reads "
                "its share of one list of examples, so the job would mix the copies' images and drop or repeat "
                "some: give every host the same files (copy it to every worker again, or keep it on a folder every "
                "host mounts, or in a bucket)"
            )


def _at(keys: list[str], message) -> str:
    """An error's message, after the config keys of the entries it is about (`config.id_dataset: ...`), if any."""
    where = ", ".join(f"config.{key}" for key in keys if key)
    return f"{where}: {message}" if where else str(message)


def _open(spec: dict):
    kind = spec.pop("kind", None)
    if kind not in ENTRY_KEYS:
        raise InvalidInput(f"{not_one_of('dataset kind', kind, sorted(ENTRY_KEYS))}; the entry's other keys: {spec}")
    if unknown := [key for key in spec if key not in ENTRY_KEYS[kind]]:
        raise InvalidInput(_unknown_keys(kind, unknown))
    if missing := REQUIRED_KEYS[kind] - set(spec):  # a KeyError (a TypeError for the toy world) before
        raise InvalidInput(
            f"a {kind!r} dataset needs {' and '.join(map(repr, sorted(missing)))}, missing from "
            f"{ {'kind': kind, **spec} } (README, 'Datasets', has every kind)"
        )
    for field in [f for f in _TEXT if f in spec]:  # a number or None failed in os or TFDS with a TypeError, at best
        value = os.fspath(spec[field]) if field in _PATHS and isinstance(spec[field], os.PathLike) else spec[field]
        if field == "data_dir" and value is None:  # TFDS's default folder
            continue
        if problem := settings.text_problem(value, _TEXT[field]):
            raise InvalidInput(f"{field} {problem}")
        if field in NOT_EMPTY[kind] and not value.strip():
            raise InvalidInput(f"{field} is empty (a shell variable that is not set?): give {_TEXT[field]}")
        spec[field] = os.path.expanduser(value) if field in _PATHS else value
    download = spec.pop("download", "")
    try:
        return _source(kind, spec)
    except DatasetMissing as err:
        if not download.strip():
            raise
        raise DatasetMissing(f"{err}. To get it: {download}") from err


def _unknown_keys(kind: str, unknown: list[str]) -> str:
    """Keys a `kind` dataset does not take, each with its nearest (`sise`: 'size'); where all are another kind's
    (an entry whose kind alone was changed, as `--config.id_dataset.kind=folder` on the toy world's entry), how to
    change it. Before: a sorted list of the keys, which the user of a kind-only change had not given."""
    allowed = sorted(ENTRY_KEYS[kind])
    keys = f"key{'s' if len(unknown) > 1 else ''} {each_with_nearest(unknown, allowed)}"
    said = f"unknown {keys} for a {kind!r} dataset; allowed: {joined(map(repr, allowed))}"
    if set(unknown) <= set().union(*ENTRY_KEYS.values()):
        needed = "".join(f", {key!r}: ..." for key in sorted(REQUIRED_KEYS[kind]))
        said += (
            ". They are keys of another kind: an entry changed to another kind is given whole, with that kind's keys, "
            f"as {{'kind': {kind!r}{needed}}} (README, 'Datasets', has every kind)"
        )
    return said


def _source(kind: str, spec: dict):
    names = _class_names(spec.get("class_names"))
    if kind == "tfds":
        return TfdsSource(spec["name"], spec["split"], spec.get("data_dir"), names)
    if kind == "folder":
        return FolderSource(spec["root"], names)
    if kind == "list":
        return ImageListSource(spec["root"], spec["list_file"], names or ())
    if kind == "coop":
        return CoopSplitSource(spec["root"], spec["split_file"], spec["split"], names)
    if kind == "fgvc_aircraft":
        return AircraftSource(spec["root"], spec["split"], names)
    return ToyWorld(**spec)


def _class_names(given) -> tuple[str, ...] | None:
    """A config's `class_names` as a tuple; None or empty leaves the dataset's own. One string is refused: read as a
    sequence it gave a class per character ('cat,dog' was 7 names)."""
    if given is None:
        return None
    if isinstance(given, (str, bytes)) or not hasattr(given, "__len__") or not all(isinstance(n, str) for n in given):
        raise InvalidInput(
            f"class_names must be a list of strings, one per class in label order, as ['cat', 'dog']; got {given!r}"
        )
    return tuple(map(str, given)) or None


def ood_benchmark(name: str, root: str = "", toy: Mapping | None = None) -> dict[str, dict]:
    """OOD sets of a benchmark as dataset descriptions, keyed by the papers' names.

    - `mos`: iNaturalist, SUN, Places, Textures (the MOS subsets) as folders
      `root/{iNaturalist,SUN,Places,dtd/images}`.
    - `openood_v15`: near SSB-hard and NINCO, far iNaturalist, Textures and
      OpenImage-O, as OpenOOD image lists `root/benchmark_imglist/imagenet/
      test_<set>.txt` over `root/images_largescale`, Textures' over `root/images_classic` (OpenOOD's
      `DATA_INFO`: its download script puts DTD there, with the CIFAR benchmarks' sets).
    - `toy`: the toy world's near, far and spurious OOD splits.

    Each entry's `download` says where its set comes from and how to unpack it into `root`: the MOS subsets from
    their authors (MOS's README), DTD from its site, OpenOOD's five with OpenOOD's download script.
    """
    if name == "mos":
        mos = "http://pages.cs.wisc.edu/~huangrui/imagenet_ood_dataset"  # MOS's README

        def get(url: str) -> str:
            file = url.rsplit("/", 1)[1]
            return f"wget {url} && mkdir -p {root} && tar -xzf {file} -C {root}"

        sub = {
            "iNaturalist": ("iNaturalist", get(f"{mos}/iNaturalist.tar.gz")),
            "SUN": ("SUN", get(f"{mos}/SUN.tar.gz")),
            "Places": ("Places", get(f"{mos}/Places.tar.gz")),
            "Textures": (
                os.path.join("dtd", "images"),
                get("https://www.robots.ox.ac.uk/~vgg/data/dtd/download/dtd-r1.0.1.tar.gz"),
            ),
        }
        return {
            k: {"kind": "folder", "root": os.path.join(root, folder), "download": how}
            for k, (folder, how) in sub.items()
        }
    if name == "openood_v15":
        lists = os.path.join(root, "benchmark_imglist", "imagenet")
        sets = {"SSB-hard": "ssb_hard", "NINCO": "ninco", "iNaturalist": "inaturalist", "Textures": "textures",
                "OpenImage-O": "openimage_o"}  # fmt: skip
        download = _openood_download(root)  # one command for the five sets and the lists
        return {
            k: {
                "kind": "list",
                "root": os.path.join(root, "images_classic" if k == "Textures" else "images_largescale"),
                "list_file": os.path.join(lists, f"test_{v}.txt"),
                "download": download,
            }
            for k, v in sets.items()
        }
    if name == "toy":
        toy = dict(toy or {})
        return {k: {"kind": "toy", "split": s, **toy} for k, s in
                (("near", "near_ood"), ("far", "far_ood"), ("spurious", "spurious_ood"))}  # fmt: skip
    raise InvalidInput(not_one_of("OOD benchmark", name, ("mos", "openood_v15", "toy")))


# CoOp's few-shot datasets but ImageNet, as its DATASETS.md lays them out under one root: the image folder the
# split file's paths are relative to, the split file's name (`split_zhou_<name>.json`, beside it), DATASETS.md's
# section, and the prompt of CoOp's zero-shot CLIP (trainers/zsclip.py, CUSTOM_TEMPLATES). FGVC Aircraft has no
# split file: its folder is its archive's `data/`, read by `AircraftSource`.
COOP_DATASETS = {
    "caltech101": ("caltech-101/101_ObjectCategories", "Caltech101", "Caltech101", "a photo of a {}."),
    "oxford_pets": ("oxford_pets/images", "OxfordPets", "OxfordPets", "a photo of a {}, a type of pet."),
    "stanford_cars": ("stanford_cars", "StanfordCars", "StanfordCars", "a photo of a {}."),
    "oxford_flowers": ("oxford_flowers/jpg", "OxfordFlowers", "Flowers102", "a photo of a {}, a type of flower."),
    "food101": ("food-101/images", "Food101", "Food101", "a photo of {}, a type of food."),
    "fgvc_aircraft": ("fgvc_aircraft", None, "FGVCAircraft", "a photo of a {}, a type of aircraft."),
    "sun397": ("sun397/SUN397", "SUN397", "SUN397", "a photo of a {}."),
    "dtd": ("dtd/images", "DescribableTextures", "DTD", "{} texture."),
    "eurosat": ("eurosat/2750", "EuroSAT", "EuroSAT", "a centered satellite photo of {}."),
    "ucf101": ("ucf101/UCF-101-midframes", "UCF101", "UCF101", "a photo of a person doing {}."),
}


def coop_split(name: str, root: str, split: str) -> dict:
    """Split `split` (train, val or test) of CoOp's dataset `name` (`COOP_DATASETS`) under `root`, as a dataset
    description with the download hint of CoOp's DATASETS.md."""
    if name not in COOP_DATASETS:
        raise InvalidInput(not_one_of("CoOp dataset", name, COOP_DATASETS))
    images, file, section, _ = COOP_DATASETS[name]
    folder = images.split("/")[0]
    how = f"CoOp's DATASETS.md (https://github.com/KaiyangZhou/CoOp/blob/main/DATASETS.md), section {section}: "
    if file is None:  # FGVC Aircraft
        archive = "https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/archives/fgvc-aircraft-2013b.tar.gz"
        return {
            "kind": "fgvc_aircraft",
            "root": os.path.join(root, folder),
            "split": split,
            "download": f"{how}wget {archive} && tar -xzf fgvc-aircraft-2013b.tar.gz && mkdir -p {root} && mv "
            f"fgvc-aircraft-2013b/data {os.path.join(root, folder)}",
        }
    return {
        "kind": "coop",
        "root": os.path.join(root, *images.split("/")),
        "split_file": os.path.join(root, folder, f"split_zhou_{file}.json"),
        "split": split,
        "download": f"{how}its images and split_zhou_{file}.json in {os.path.join(root, folder)}",
    }


def id_test_set(name: str, root: str = "") -> dict | None:
    """The ID test set a benchmark fixes, as a dataset description, or None where it takes the whole of the ID
    validation split (MOS, the toy world).

    - `openood_v15`: ImageNet-1k's 45,000 test images of OpenOOD v1.5 (`root/benchmark_imglist/imagenet/
      test_imagenet.txt` over `root/images_largescale`, OpenOOD's `DATA_INFO`), which its tables and the CMA paper
      score; the other 5,000 of the 50,000 validation images are OpenOOD's validation set. Its labels are ImageNet's
      indices, named by `imagenet_classnames`.
    """
    if name != "openood_v15":
        return None
    return {
        "kind": "list",
        "root": os.path.join(root, "images_largescale"),
        "list_file": os.path.join(root, "benchmark_imglist", "imagenet", "test_imagenet.txt"),
        "class_names": imagenet_classnames(),
        "download": _openood_download(root),
    }


def _openood_download(root: str) -> str:
    """OpenOOD's command that gets ImageNet-1k's test images, the five OOD sets and their lists into `root`."""
    return (
        "OpenOOD's download script (https://github.com/Jingkang50/OpenOOD, with `pip install gdown`): python "
        "scripts/download/download.py --contents datasets --dataset_mode dataset --datasets imagenet_1k ssb_hard "
        f"ninco inaturalist texture openimage_o --save_dir {root}"
    )


def ood_groups(name: str) -> dict[str, str]:
    """The groups of a benchmark's OOD sets its papers average apart (comma-separated names): OpenOOD v1.5 reports
    near-OOD (SSB-hard, NINCO) and far-OOD (iNaturalist, Textures, OpenImage-O) averages; MOS and the toy world
    report one average."""
    return {"near": "SSB-hard,NINCO", "far": "iNaturalist,Textures,OpenImage-O"} if name == "openood_v15" else {}
