"""Class names shipped with jaxood."""

import functools
import os

_ASSETS = os.path.join(os.path.dirname(__file__), "assets")


@functools.cache
def imagenet_classnames() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names in label order, CLIP-style (OpenAI's prompt-engineering list).

    Two names repeat in that list ("missile", "sunglasses"), as in the original.
    """
    names = _lines("imagenet_classes.txt")
    assert len(names) == 1000, len(names)
    return names


@functools.cache
def imagenet_names_by_wnid() -> dict[str, str]:
    """ImageNet-1k's WordNet ids (`n01440764`) to their CLIP-style names. The label order is the ids' sorted order
    (`imagenet_wnids.txt`, TFDS's `imagenet2012/labels.txt`)."""
    return dict(zip(_lines("imagenet_wnids.txt"), imagenet_classnames(), strict=True))


# CoOp's names for the classes of EuroSAT and Caltech101 whose labels read badly in a prompt ("a photo of a
# AnnualCrop."), from CoOp's datasets/eurosat.py and caltech101.py (NEW_CNAMES).
COOP_NAMES = {
    "eurosat": {
        "AnnualCrop": "Annual Crop Land", "Forest": "Forest", "HerbaceousVegetation": "Herbaceous Vegetation Land",
        "Highway": "Highway or Road", "Industrial": "Industrial Buildings", "Pasture": "Pasture Land",
        "PermanentCrop": "Permanent Crop Land", "Residential": "Residential Buildings", "River": "River",
        "SeaLake": "Sea or Lake",
    },
    "caltech101": {"airplanes": "airplane", "faces": "face", "leopards": "leopard", "motorbikes": "motorbike"},
}  # fmt: skip


def coop_name(dataset: str, label: str) -> str:
    """A TFDS label of `dataset` as CoOp's code reads that dataset's labels, the names the few-shot papers measured
    with: SUN397's category paths (`/a/apartment_building/outdoor`, index letter dropped, qualifier first:
    "outdoor apartment_building"; Places365's, without the letter, alike), Stanford Cars' year first ("AM General
    Hummer SUV 2000": "2000 AM General Hummer SUV"), `COOP_NAMES`; any other label as it is. Only these datasets'
    labels are paths: "Ram C/V Cargo Van Minivan 2012" is a car."""
    if dataset in ("sun397", "places365_small"):
        parts = [part for part in label.split("/") if part]
        return " ".join(reversed(parts[1:] if label.startswith("/") else parts))
    if dataset == "cars196":
        *model, year = label.split(" ")
        return " ".join([year, *model])
    return COOP_NAMES.get(dataset, {}).get(label, label)


def is_wnid(name: str) -> bool:
    """`name` is a WordNet noun id, as ImageNet's folders are named (`n01440764`)."""
    return len(name) == 9 and name[0] == "n" and name[1:].isdigit()


def _lines(name: str) -> tuple[str, ...]:
    with open(os.path.join(_ASSETS, name), encoding="utf-8") as f:
        return tuple(line.rstrip("\n") for line in f if line.strip())
