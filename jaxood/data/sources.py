"""Random-access image sources behind one small interface.

A source has `class_names`, `__len__`, `labels()` (every label, without
decoding an image) and `read(i) -> (raw, label)`, where `raw` is a file path,
encoded bytes or a uint8 array; `jaxood.data.preprocess.decode` turns any of
them into pixels (an undecodable one is counted by the pipeline, not fatal).

- `FolderSource`: one sub-folder per class (ImageNet train/val, MOS OOD sets).
- `ImageListSource`: OpenOOD-style `relative/path label` lines.
- `CoopSplitSource`: a split of a CoOp split file (the few-shot papers' splits).
- `AircraftSource`: a split of FGVC Aircraft in its own layout, as CoOp reads it (it has no split file).
- `TfdsSource`: a TFDS dataset prepared in `array_record` format, read through
  `as_data_source` (no TensorFlow needed to read).
- `jaxood.data.toy_world.ToyWorld`: the embedded benchmark.
"""

from __future__ import annotations

import codecs
import collections
import functools
import glob
import hashlib
import json
import logging
import os
import re
from collections.abc import Callable, Iterator
from typing import Protocol

import jax
import numpy as np

from jaxood import distributed
from jaxood.cache import DEFAULT_CACHE, can_hold_a_folder, load_npy, nearest_existing, save_npy
from jaxood.data.classnames import coop_name, imagenet_names_by_wnid
from jaxood.data.preprocess import Undecodable
from jaxood.errors import (
    READ_PERMISSION_FIX,
    InputMissing,
    InvalidInput,
    first_line,
    nearest_choice,
    not_one_of,
    open_files_error,
    out_of_open_files,
)
from jaxood.progress import Progress

LABELS_PROGRESS_MIN = 50_000  # a TFDS split this long reports progress while its labels are read
# What array_record raises for a damaged file: a record whose bytes changed ("Corrupted Riegeli/records file: chunk
# data hash mismatch"), a file cut short (every record of it: "Invalid Riegeli/records file ... Failed to read
# RiegeliPostscript", or TFDS gives empty records), one that went away (OSError).
DAMAGED = (RuntimeError, OSError)
# What to do about a dataset's folder or list the system would not read for a reason other than permission.
READ_FAULT_FIX = (
    "That is not a matter of permission: mend what the system's reason names (a failing disk or network mount, a "
    "link that loops), then run again."
)
# torchvision's ImageFolder's (.pgm was missing), .gif and .jfif; a file named otherwise is left out, and said
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".jfif")
ARCHIVES = (".tar", ".tar.gz", ".tgz", ".zip", ".7z", ".rar", ".tar.bz2", ".tar.xz")  # a folder set given unpacked


class DatasetMissing(InputMissing):
    """A dataset is not where jaxood was told to look; the message says what to get and where to put it."""


class Source(Protocol):
    class_names: tuple[str, ...]
    identity: tuple  # what images it reads: two sources with the same identity read the same images
    # Folders, lists and TFDS splits also have `records()`, the files or records they read, which `&` and `len`
    # compare (jaxood.evaluate's check that the sets read images apart).

    def __len__(self) -> int: ...

    def labels(self) -> np.ndarray: ...

    def read(self, index: int) -> tuple[object, int]: ...

    def fingerprint(self) -> bytes:
        """Its examples in order, as far as a host can tell without reading them (files and labels; records;
        settings): the hosts of a job compare theirs (`jaxood.data.datasets.make_sources`)."""
        ...


def tfds_prompt_names(dataset: str, labels) -> tuple[str, ...]:
    """A TFDS dataset's label names for prompts, read as CoOp's dataset code reads them where that differs
    (`classnames.coop_name`: SUN397's and Places365's category paths, Stanford Cars' year, EuroSAT's and
    Caltech101's renamed classes), then `prompt_names`."""
    return prompt_names([coop_name(dataset, label) for label in labels])


WNID_FIRST = re.compile(r"n\d{8}-(.+)")  # a WordNet id, then the class's name (Stanford Dogs)


def prompt_names(names) -> tuple[str, ...]:
    """Class names for prompts: ImageNet-1k's WordNet ids as their CLIP-style names when every name is one (an
    ImageNet folder, a subset of it such as MCM's ImageNet-10, and TFDS's imagenet2012, imagenet_v2, imagenet_r,
    imagenet_a, imagenet_sketch, whose labels are the 1000 ids); else each name with underscores as spaces, and
    without the WordNet id that Stanford Dogs' folders put first (`n02085620-Chihuahua`: the prompts read "a photo
    of a n02085620-Chihuahua.")."""
    by_wnid = imagenet_names_by_wnid()
    if names and all(name in by_wnid for name in names):
        return tuple(by_wnid[name] for name in names)
    if names and all(found := [WNID_FIRST.fullmatch(name) for name in names]):
        names = [match.group(1) for match in found]
    return tuple(name.replace("_", " ").strip() for name in names)


def _named_classes(given: tuple[str, ...] | None, own: tuple[str, ...], where: str) -> tuple[str, ...]:
    """The class names for prompts: `given` (a config's `class_names`, one per class in label order) in place of the
    dataset's `own`, which None leaves; a count that does not match is refused, `where` saying how many classes the
    dataset has."""
    if given is None:
        return own
    if len(given) != len(own):
        raise InvalidInput(
            f"{where} but {len(given)} class names were given" + ("" if own else " (it has no labels: an OOD set)")
        )
    return tuple(given)


def _is_image(name: str) -> bool:
    """An image by its name (`IMAGE_EXTENSIONS`, any case), but not macOS's metadata twin of a file (`._x.jpg`, beside
    each file copied from a Mac to another disk): it was read as an image, undecodable, and took a few-shot pick."""
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith("._")


def _say_left_out(root: str, others: list[str]) -> None:
    """Say the files in a set's image folders that are not images by their name (`IMAGE_EXTENSIONS`), which are left
    out: a class's `.heic` or `.avif` photos were dropped unsaid. Hidden files (`.DS_Store`) are no data: not said."""
    if others := [p for p in others if not os.path.basename(p).startswith(".")]:
        kinds = collections.Counter(os.path.splitext(p)[1].lower() or "(no extension)" for p in others)
        distributed.log(
            f"{root}: {len(others)} file(s) in its image folders are not images by their name and are left out "
            f"({', '.join(f'{kind} {n}' for kind, n in kinds.most_common())}; e.g. {os.path.relpath(others[0], root)}"
            f"): jaxood reads {' '.join(IMAGE_EXTENSIONS)}; convert them to one of those to use them"
        )


def _linked_names(folder: str) -> frozenset[str]:
    """The names in `folder` that are symbolic links (none where it cannot be listed: its files are unreadable,
    which the loader reports)."""
    try:
        with os.scandir(folder or ".") as entries:
            return frozenset(e.name for e in entries if e.is_symlink())
    except OSError:
        return frozenset()


class RecordRanges:
    """The records a TFDS split or slice reads, as sorted, merged half-open index ranges per shard file: where two
    meet (`a & b`, `len`), they read the same records; `&` with a set of files is empty. Ranges, not a key per
    record: a set of ImageNet's 1.28 M (shard, index) keys took 1.2 s and 190 MiB to build (measured)."""

    def __init__(self, ranges: dict[str, list[tuple[int, int]]]):
        self.ranges = {}
        for shard, spans in ranges.items():
            merged: list[tuple[int, int]] = []
            for start, stop in sorted(spans):
                if merged and start <= merged[-1][1]:
                    merged[-1] = (merged[-1][0], max(merged[-1][1], stop))
                elif start < stop:
                    merged.append((start, stop))
            if merged:
                self.ranges[shard] = merged

    def key(self) -> tuple:
        return tuple(sorted((shard, tuple(spans)) for shard, spans in self.ranges.items()))

    def __len__(self) -> int:
        return sum(stop - start for spans in self.ranges.values() for start, stop in spans)

    def __and__(self, other) -> RecordRanges:
        if not isinstance(other, RecordRanges):
            return RecordRanges({})
        return RecordRanges({
            shard: [(max(a, c), min(b, d)) for a, b in spans for c, d in other.ranges.get(shard, ())]
            for shard, spans in self.ranges.items()
        })  # fmt: skip

    __rand__ = __and__  # a set of files & ranges

    def file_of(self, index: int) -> str:
        """The file of the `index`-th record read (the files' ranges are read in order)."""
        for shard, spans in self.ranges.items():
            if index < (count := sum(stop - start for start, stop in spans)):
                return shard
            index -= count
        raise IndexError(f"record {index} past the last file's")


class _FileListSource:
    """A list of image paths with labels (`self.paths`, `self._labels`)."""

    paths: list[str]
    _labels: np.ndarray

    def __len__(self) -> int:
        return len(self.paths)

    def labels(self) -> np.ndarray:
        return self._labels

    def read(self, index: int) -> tuple[str, int]:
        return self.paths[index], int(self._labels[index])

    def fingerprint(self) -> bytes:
        # The names' bytes as the file system holds them: one not in UTF-8 is held as surrogates, which encode() refused
        return os.fsencode("\n".join(self.paths)) + np.asarray(self._labels, np.int64).tobytes()

    def _files(self) -> Iterator[str]:
        """Each example's file with links and `..` resolved. One `realpath` and one listing per folder, and one
        `realpath` per file that is a link (a set made of links into another's folders, as ImageNet's classes split
        into ID and OOD by linking their files)."""
        real = functools.cache(os.path.realpath)
        links = functools.cache(_linked_names)
        for path in self.paths:
            folder, name = os.path.split(path)
            yield os.path.realpath(path) if name in links(folder) else os.path.join(real(folder), name)

    def records(self) -> set[str]:
        """Its image files (`_files`): where two sources' sets meet, they read the same files; one smaller than the
        source has repeats."""
        return set(self._files())

    def repeats(self) -> list[tuple[int, int]]:
        """(example, the earlier example) for each example whose file an earlier one reads: a list's repeated lines
        (`a/./b.jpg` beside `a/b.jpg` too), a folder's two links to one file."""
        first: dict[str, int] = {}
        return [(i, j) for i, file in enumerate(self._files()) if (j := first.setdefault(file, i)) != i]


class FolderSource(_FileListSource):
    """Images in `root/<class>/...` (recursively), classes sorted by folder name; or, in a folder without class
    folders, its images as one unlabelled set (label -1, no class names: an OOD set).

    Folders named by ImageNet-1k's WordNet ids (`n01440764`, ...) get the
    CLIP-style ImageNet names (`prompt_names`): all 1000, or a subset such as
    MCM's ImageNet-10, -20 and -100. Labels follow the sorted folder order unless
    `class_names` is given explicitly. `nested` names the class folders that keep all their images in two or more
    sub-folders (SUN397's `a/abbey/...`), which the ID set's check reports.
    """

    def __init__(self, root: str, class_names: tuple[str, ...] | None = None, what: str = "image folder"):
        if os.path.isfile(root):  # an archive not unpacked, a list file: it was "not found" there
            kind = "an archive: unpack it and give the folder" if root.lower().endswith(ARCHIVES) else "a file"
            raise DatasetMissing(  # collected with the other missing datasets (make_sources)
                f"{what} {root} is {kind}, not a folder of images (a list of images is an entry of kind 'list', with "
                "its root and list_file)"
            )
        if not os.path.isdir(root):
            raise DatasetMissing(
                f"{what} not found at {root}{_said_elsewhere(root, os.path.isdir)}: expected one sub-folder per class "
                "with the images inside (see README, 'Datasets', for where each OOD set comes from)"
            )
        self.identity = ("folder", os.path.realpath(root))
        self.nested: dict[str, list[str]] = {}  # class folder -> its sub-folders, where they hold all its images
        try:
            entries = sorted(os.listdir(root))
        except OSError as err:  # a folder this user may not list: PermissionError's traceback before
            raise _unreadable(what, root, err) from None
        folders = [d for d in entries if os.path.isdir(os.path.join(root, d))]
        loose = [os.path.join(root, f) for f in entries if _is_image(f) and f not in folders]
        if not folders and not loose:
            archives = [f for f in entries if f.lower().endswith(ARCHIVES)]
            unpack = (  # ILSVRC2012_img_train.tar unpacks to a folder of 1000 tars, one per class
                f" (it holds {len(archives)} archive(s), as {archives[0]}: unpack them; ImageNet's training tar "
                "holds one tar per class, each to unpack into a folder of its name)"
                if archives
                else ""
            )
            raise DatasetMissing(f"{what} at {root} has no class sub-folders, nor images{unpack}")
        if not folders:  # a flat folder of images, as OOD sets often come: unlabelled (-1), no class names
            if class_names:
                raise InvalidInput(f"{root} holds images but no class folders for the {len(class_names)} class names")
            _say_left_out(root, [os.path.join(root, f) for f in entries if not _is_image(f)])
            self.paths, self._labels, self.class_names = loose, np.full(len(loose), -1, np.int32), ()
            return
        if loose:
            distributed.log(
                f"{root}: {len(loose)} image(s) lie in it beside its class folders, in none of them, and are left out "
                f"(e.g. {os.path.basename(loose[0])}); move them into their class's folder to use them"
            )
        self.paths: list[str] = []
        labels: list[int] = []
        others: list[str] = []  # files in the class folders that are not images by their name
        unreadable: list[OSError] = []  # folders os.walk could not list, whose images it passed over unsaid
        for label, folder in enumerate(folders):
            class_dir, files, within, walked = os.path.join(root, folder), [], set(), set()
            # Into linked sub-folders too, as torchvision's ImageFolder walks (their images were left out, unsaid),
            # each real folder once: a link to a folder already walked, or a loop, adds nothing.
            for dirpath, subfolders, names in os.walk(class_dir, onerror=unreadable.append, followlinks=True):
                if (real := os.path.realpath(dirpath)) in walked:
                    subfolders.clear()
                    continue
                walked.add(real)
                subfolders.sort()  # which of two links to one folder is walked: the first by name, on any disk
                is_image = [_is_image(f) for f in names]
                others += [os.path.join(dirpath, f) for f, image in zip(names, is_image) if not image]
                if images := [os.path.join(dirpath, f) for f, image in zip(names, is_image) if image]:
                    files += images
                    within.add(os.path.relpath(dirpath, class_dir).split(os.sep)[0])  # "." for class_dir itself
            if not files and not unreadable:  # an unreadable class folder is said below, not called empty
                hidden = (  # Jupyter's .ipynb_checkpoints, beside the class folders one browsed
                    " (a hidden folder is read as a class too, as torchvision's ImageFolder reads it: move it out)"
                    if folder.startswith(".")
                    else ""
                )
                raise DatasetMissing(
                    f"class folder {class_dir} holds no images ({', '.join(IMAGE_EXTENSIONS)}){hidden}"
                )
            if len(within) > 1 and "." not in within:
                self.nested[folder] = sorted(within)
            files.sort()
            self.paths += files
            labels += [label] * len(files)
        if unreadable:
            raise DatasetMissing(
                f"{len(unreadable)} folder(s) in {root} cannot be read, and their images would be left out: "
                + "; ".join(f"{err.filename} ({err.strerror or err})" for err in unreadable[:3])
                + f"{'; ...' if len(unreadable) > 3 else ''}. {_read_fix(unreadable)}"
            )
        if hidden := [folder for folder in folders if folder.startswith(".")]:  # said once all hold images: an empty
            distributed.log(  # one was refused above, with the same hint
                f"{root}: its hidden folder(s) {', '.join(hidden)} are read as classes, as torchvision's ImageFolder "
                "reads them (the labels follow that order); move them out if they are not classes"
            )
        _say_left_out(root, others)
        self._labels = np.asarray(labels, np.int32)
        self.class_names = _named_classes(
            class_names, prompt_names(folders), f"{root} has {len(folders)} class folders"
        )
        if class_names and all(f.isdigit() for f in folders) and folders != (by_number := sorted(folders, key=int)):
            i = next(i for i, (a, b) in enumerate(zip(folders, by_number)) if a != b)
            distributed.log(  # a dataset exported to folders by label (0 to 99), its names given in label order
                f"{root}: its class folders are numbers, which sort as text ({', '.join(folders[:4])}, ...), and the "
                f"class_names name them in that order ({folders[i]}: {self.class_names[i]!r}), as torchvision's "
                "ImageFolder labels them; if yours follow the numbers, give them in the folders' order"
            )


class ImageListSource(_FileListSource):
    """OpenOOD-style list: each line `relative/path label` (label optional, -1 if absent)."""

    def __init__(self, root: str, list_file: str, class_names: tuple[str, ...] = ()):
        if os.path.isdir(list_file):  # Python's IsADirectoryError, a traceback
            raise DatasetMissing(
                f"image list {list_file} is a folder, not a list file of `relative/path [label]` lines (a folder of "
                "images is an entry of kind 'folder')"
            )
        self.identity = ("list", os.path.realpath(root), os.path.realpath(list_file))
        self.paths, labels, listed = [], [], _ListedFiles()
        n_classes = len(class_names)
        # A byte-order mark (Windows editors) is no part of the first path; bytes that are not UTF-8 (a Latin-1
        # file name) stay the bytes the file system has, as Python's own os functions keep them. A list this user
        # may not read was PermissionError's traceback.
        where_from = "OpenOOD v1.5 ships these lists in benchmark_imglist/"
        with _open_text(list_file, "image list", where_from, errors="surrogateescape") as f:
            for lineno, line in enumerate(f, 1):
                parts = line.split()
                if not parts:
                    continue
                if "\x00" in line:  # UTF-16 without its byte-order mark, read as UTF-8
                    raise InvalidInput(
                        f"{list_file}:{lineno}: holds NUL characters, as a list in UTF-16 without its byte-order "
                        "mark: save it as UTF-8"
                    )
                if len(parts) > 2:  # its path would be read up to the first space, its label from the next word
                    raise InvalidInput(
                        f"{list_file}:{lineno}: {len(parts)} fields in {line.strip()!r}; each line is "
                        "`relative/path [label]`, split at white space as in OpenOOD's lists: a path with a space "
                        "in it needs its file renamed, or its image put in a folder source"
                    )
                path = os.path.join(root, parts[0])
                listed.check(lineno, path)
                text = parts[1] if len(parts) > 1 else "-1"
                label = int(text) if re.fullmatch(r"-?\d+", text) else None
                # A label the class names do not cover was scored (ID accuracy) or trained against a missing class.
                if label is None or label < -1 or (n_classes and label >= n_classes):
                    span = (
                        f"from 0 to {n_classes - 1} (one of its {n_classes} class names)"
                        if n_classes
                        else "of at least 0"
                    )
                    raise InvalidInput(
                        f"{list_file}:{lineno}: label {text!r} must be a whole number {span}, or -1 for none; each "
                        "line is `relative/path [label]` (a path ends at its first space)"
                    )
                self.paths.append(path)
                labels.append(label)
        commas = " Its lines hold commas: a list is `relative/path [label]` split at white space, not CSV."
        listed.refuse(lambda lineno: f"{list_file}:{lineno}", list_file, root, commas)
        if not self.paths:
            raise DatasetMissing(f"image list {list_file} is empty")
        self._labels = np.asarray(labels, np.int32)
        self.class_names = tuple(class_names)


class CoopSplitSource(_FileListSource):
    """One split (`train`, `val` or `test`) of a CoOp split file (`split_zhou_<Dataset>.json`, the few-shot papers'
    splits of Oxford Pets, Caltech101, DTD, ...: `{"train": [[relative/path, label, class name], ...], "val": ...,
    "test": ...}`), its paths under `root`, the dataset's image folder. The class names are the file's, by label
    over all its splits (so the train and test entries of one file name the same classes), underscores as spaces,
    as CoOp's prompts read them; `class_names` replaces them."""

    SPLITS = ("train", "val", "test")
    WHERE_FROM = (
        "CoOp's split_zhou_<Dataset>.json, which CoOp's DATASETS.md links for each dataset, beside its image folder"
    )

    def __init__(self, root: str, split_file: str, split: str, class_names: tuple[str, ...] | None = None):
        if split not in self.SPLITS:
            raise InvalidInput(not_one_of("the split of a CoOp split file", split, self.SPLITS))
        text = _read_text(split_file, "CoOp split file", self.WHERE_FROM)
        try:
            splits = json.loads(text)
        except ValueError as err:
            raise InvalidInput(f"CoOp split file {split_file} is not JSON ({err}): download it again") from None
        if not isinstance(splits, dict) or not all(isinstance(splits.get(k), list) for k in self.SPLITS):
            raise InvalidInput(
                f"CoOp split file {split_file} is not a split file: it needs the lists "
                f"{', '.join(map(repr, self.SPLITS))} of [relative/path, label, class name] items"
            )
        names: dict[int, str] = {}
        for name in self.SPLITS:
            for i, item in enumerate(splits[name]):
                ok = isinstance(item, list) and len(item) == 3 and isinstance(item[0], str) and isinstance(item[2], str)
                if not ok or isinstance(item[1], bool) or not isinstance(item[1], int) or item[1] < 0:
                    raise InvalidInput(
                        f"{split_file}: {name}[{i}] is {item!r}; each item is [relative/path, label, class name] with "
                        "a label of 0 or more"
                    )
                if names.setdefault(item[1], item[2]) != item[2]:
                    raise InvalidInput(
                        f"{split_file}: label {item[1]} is named both {names[item[1]]!r} and {item[2]!r} "
                        f"({name}[{i}]): each label is one class"
                    )
        if gaps := sorted(set(range(max(names, default=-1) + 1)) - set(names)):
            raise InvalidInput(
                f"{split_file}: no item has label {', '.join(map(str, gaps[:5]))}{', ...' if len(gaps) > 5 else ''}, "
                f"below its highest, {max(names)}: the labels are 0, 1, ... in turn, one per class, and name them"
            )
        items = splits[split]
        self.identity = ("coop", os.path.realpath(root), os.path.realpath(split_file), split)
        self.paths = [os.path.join(root, path) for path, _, _ in items]
        listed = _ListedFiles()
        for i, path in enumerate(self.paths):
            listed.check(i, path)
        listed.refuse(lambda i: f"{split_file}: {split}[{i}]", split_file, root)
        if not self.paths:
            raise DatasetMissing(f"CoOp split file {split_file} has no {split!r} images")
        self._labels = np.asarray([label for _, label, _ in items], np.int32)
        own = prompt_names([names[label] for label in range(len(names))])
        self.class_names = _named_classes(class_names, own, f"{split_file} has {len(names)} classes")


class AircraftSource(_FileListSource):
    """One split (`train`, `val`, `trainval` or `test`) of FGVC Aircraft as its archive lays it out under `root`
    (`fgvc-aircraft-2013b/data`, CoOp's `fgvc_aircraft/`), read as CoOp reads it, the few-shot papers' split of it:
    the classes are the lines of `variants.txt` in turn (its 100 variants, as "707-320" and "F/A-18"), and a
    split's images the lines `<image id> <variant>` of `images_variant_<split>.txt`, each `images/<id>.jpg`.
    `class_names` replaces the variants' names."""

    SPLITS = ("train", "val", "trainval", "test")
    WHERE_FROM = "FGVC Aircraft's archive, fgvc-aircraft-2013b.tar.gz, has it in its data/ folder"

    def __init__(self, root: str, split: str, class_names: tuple[str, ...] | None = None):
        if split not in self.SPLITS:
            raise InvalidInput(not_one_of("the split of FGVC Aircraft", split, self.SPLITS))
        variants_file = os.path.join(root, "variants.txt")
        split_file = os.path.join(root, f"images_variant_{split}.txt")
        text = _read_text(variants_file, "FGVC Aircraft's", self.WHERE_FROM)
        variants = [name for line in text.splitlines() if (name := line.strip())]
        label_of: dict[str, int] = {}
        for lineno, name in enumerate(variants, 1):
            if label_of.setdefault(name, lineno - 1) != lineno - 1:
                raise InvalidInput(f"{variants_file} names the variant {name!r} twice: each of its lines is one class")
        images = os.path.join(root, "images")
        self.identity = ("fgvc_aircraft", os.path.realpath(root), split)
        self.paths, labels, listed = [], [], _ListedFiles()
        for lineno, line in enumerate(_read_text(split_file, "FGVC Aircraft's", self.WHERE_FROM).splitlines(), 1):
            image, _, variant = line.strip().partition(" ")
            if not image:
                continue
            if variant not in label_of:
                raise InvalidInput(
                    f"{split_file}:{lineno}: {line.strip()!r} names no variant of {variants_file}; each line is "
                    "`<image id> <variant>`"
                )
            path = os.path.join(images, f"{image}.jpg")
            listed.check(lineno, path)
            self.paths.append(path)
            labels.append(label_of[variant])
        listed.refuse(lambda lineno: f"{split_file}:{lineno}", split_file, images)
        if not self.paths:
            raise DatasetMissing(f"{split_file} names no images")
        self._labels = np.asarray(labels, np.int32)
        where = f"{variants_file} names {len(variants)} classes"
        self.class_names = _named_classes(class_names, tuple(variants), where)


def _open_text(path: str, what: str, where_from: str, errors: str = "strict"):
    """A dataset's text file `path`, open for reading in its encoding (`_text_encoding`); one missing or that the
    system will not open is refused naming it as `what` ("image list"), where missing with `where_from`, where it
    comes from."""
    if not os.path.isfile(path):
        raise DatasetMissing(f"{what} {path} not found{_said_elsewhere(path, os.path.isfile)} ({where_from})")
    try:
        return open(path, encoding=_text_encoding(path), errors=errors)
    except OSError as err:
        raise _unreadable(what, path, err) from None


def _elsewhere(path: str, found: Callable[[str], bool]) -> tuple[str, str, str] | None:
    """Where `path`, missing, is `found` a folder or up to three up or one down from the folder given: (that path,
    the folder given, the folder meant), else None. A root given a level off (`/data/mos/iNaturalist` or `/data` for
    `/data/mos`; a TFDS dataset's own folder for its data dir) had each set named missing, with its download. The
    folder given is taken to be the deepest one of `path` that exists; none is guessed at the file system's root,
    nor in a bucket (gs://)."""
    if "://" in path:
        return None
    path = os.path.abspath(path)
    given = nearest_existing(os.path.dirname(path), os.path.isdir)
    if os.path.dirname(given) == given:
        return None
    tail = os.path.relpath(path, given)
    up = [given]
    for _ in range(3):
        up.append(os.path.dirname(up[-1]))
    below = glob.glob(os.path.join(glob.escape(given), "*", glob.escape(tail)))
    candidates = [os.path.join(folder, tail) for folder in up[1:] if os.path.dirname(folder) != folder] + sorted(below)
    there = next((there for there in candidates if found(there)), None)
    return (there, given, there[: len(there) - len(tail) - 1]) if there else None


def _said_elsewhere(path: str, found: Callable[[str], bool]) -> str:
    """` (but <path> is: was <folder> given for <folder>?)` where `_elsewhere` finds `path`, else nothing."""
    if (elsewhere := _elsewhere(path, found)) is None:
        return ""
    there, given, meant = elsewhere
    return f" (but {there} is: was {given} given for {meant}?)"


def _read_text(path: str, what: str, where_from: str) -> str:
    """A dataset's text file whole (`_open_text`), as UTF-8 (or UTF-16 or UTF-32 with their marks) alone."""
    with _open_text(path, what, where_from) as f:
        try:
            return f.read()
        except OSError as err:
            raise _unreadable(what, path, err) from None
        except UnicodeDecodeError as err:
            raise InvalidInput(f"{what} {path} is not text in UTF-8 ({err}): download it again") from None


def _unreadable(what: str, path: str, err: OSError) -> DatasetMissing:
    """The error for a dataset's file or folder (`what`) that the system would not read, with its reason and fix."""
    return DatasetMissing(f"{what} {path} cannot be read ({err.strerror or err}). {_read_fix([err])}")


class _ListedFiles:
    """The files a list names that are missing, or that the system will not reach (a folder this user may not enter,
    a failing disk: not missing), checked one by one as the list is read (`check(where, path)`, `where` its line or
    item) and refused together (`refuse`) with the first five. Only those are kept, so a 1.28 M-line list costs no
    memory for the check."""

    def __init__(self):
        self.missing, self.unreachable = [], []

    def check(self, where, path: str) -> None:
        try:
            os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            self.missing.append((where, path))
        except OSError as err:  # in a folder this user may not enter, on a failing disk: not "missing"
            self.unreachable.append((where, path, err))

    def refuse(self, place: Callable[[object], str], listed_in: str, root: str, commas: str = "") -> None:
        """Raise `DatasetMissing` for them, if any; `place(where)` names each one's place in the list (`list.txt:3`),
        `commas` is said where every missing path holds a comma."""
        if unreachable := self.unreachable:
            raise DatasetMissing(
                f"{len(unreachable)} file(s) named in {listed_in} cannot be reached under {root}, e.g."
                + "".join(f"\n  {place(where)}: {path} ({err.strerror})" for where, path, err in unreachable[:5])
                + f"\n{_read_fix([err for _, _, err in unreachable])}"
            )
        if missing := self.missing:
            hints = (  # a CSV: `a.jpg,3` read as one path; a list made on Windows: `tench\0.png`, one file name here
                (",", commas),
                ("\\", " Its paths hold backslashes, Windows's separator (a list made there): separate them by /."),
            )
            hint = "".join(text for mark, text in hints if all(mark in path for _, path in missing))
            raise DatasetMissing(
                f"{len(missing)} file(s) named in {listed_in} do not exist under {root}, e.g.\n  "
                + "\n  ".join(f"{place(where)}: {path}" for where, path in missing[:5])
                + f"\nCheck the image root (the list's paths are relative to it).{hint}"
            )


def _read_fix(errors: list[OSError]) -> str:
    """What to do about the files or folders the system would not read, by why: this user's permission (a copy
    made with another user's umask), or anything else, as a failing disk's EIO, a restarted NFS server's ESTALE or
    a looping link's ELOOP, which chmod does not mend (those were told to run it too)."""
    denied = [isinstance(err, PermissionError) for err in errors]
    fixes = ((READ_PERMISSION_FIX, any(denied)), (READ_FAULT_FIX, not all(denied)))
    return " ".join(fix for fix, told in fixes if told)


def _text_encoding(path: str) -> str:
    """A text file's encoding by its byte-order mark: UTF-16 or UTF-32 where it has theirs (Windows PowerShell 5
    writes `>` and Out-File in UTF-16: its list was read as UTF-8, a NUL beside each character), else UTF-8, with
    or without its mark."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):  # before UTF-16's: UTF-32 LE's begins with it
        return "utf-32"
    return "utf-16" if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) else "utf-8-sig"


IMAGENET_TFDS = "imagenet2012"  # ImageNet-1k's TFDS name: what jaxood's ImageNet configs train and test on
_MANUAL = {
    IMAGENET_TFDS: "download ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar from image-net.org into {manual}, "
    "then run `python -m jaxood.data.prepare --dataset={name} --data_dir={data_dir}`",
}


def open_tfds_builder(name: str, data_dir: str, **kwargs):
    """`tfds.builder(name, data_dir=...)`, with TFDS's own error cut to one line (`DatasetMissing`).

    An unknown name's error lists every dataset TFDS knows; the line kept
    names the problem, and TFDS's "Did you mean" guess follows it, then
    ImageNet-1k's name where it is near (`imagenet`: TFDS guessed imagenette,
    10 of ImageNet's classes).
    """
    import tensorflow_datasets as tfds
    from tensorflow_datasets.core.registered import DatasetNotFoundError

    try:
        return tfds.builder(name, data_dir=data_dir, **kwargs)
    except Exception as err:
        guess = [line.strip() for line in str(err).strip().splitlines()[1:] if line.startswith("Did you mean")]
        message = " ".join([first_line(err), *guess])
        if isinstance(err, DatasetNotFoundError) and nearest_choice(name, [IMAGENET_TFDS]):
            message += f"; jaxood's ImageNet configs read {IMAGENET_TFDS}"
        raise DatasetMissing(f"TFDS cannot open the dataset {name!r} in {data_dir}: {message}") from None


def _prepared_in(folder: str) -> bool:
    """A TFDS dataset's own folder with a version prepared in it (`<version>/dataset_info.json`, or below a
    config's folder)."""
    prepared = (os.path.join(glob.escape(folder), *levels, "dataset_info.json") for levels in (["*"], ["*", "*"]))
    return any(glob.glob(pattern) for pattern in prepared)


def dataset_folder(name: str, data_dir: str) -> str:
    """TFDS dataset `name`'s own folder in `data_dir` (`<data_dir>/<dataset>`, without its config or version)."""
    return os.path.join(data_dir, name.split(":")[0].split("/")[0])


def prepared_elsewhere(name: str, data_dir: str) -> str | None:
    """The data dir a level off from `data_dir` (`_elsewhere`) where TFDS dataset `name` is prepared, where it has no
    folder in `data_dir` itself. A version folder that is not there (5.1.0, where 5.0.0 is prepared) lies in its
    dataset's folder: a data_dir not there is taken from its deepest folder that is."""
    existing = data_dir if "://" in data_dir else nearest_existing(os.path.abspath(data_dir), os.path.isdir)
    own = dataset_folder(name, existing)
    if os.path.isdir(own) or (elsewhere := _elsewhere(own, _prepared_in)) is None:
        return None
    return elsewhere[2]


def is_prepared(builder) -> bool:
    """`builder.is_prepared()`, without TFDS's warning "Variant folder <data_dir>/<name>/<version> has no
    dataset_info.json" for a dataset not prepared there (a folder that need not exist), which came before jaxood's
    error saying what to do."""
    absl = logging.getLogger("absl")
    no_info = lambda record: not record.getMessage().startswith("Variant folder ")  # noqa: E731
    absl.addFilter(no_info)
    try:
        return builder.is_prepared()
    finally:
        absl.removeFilter(no_info)


ARRAY_RECORD = "array_record"  # the file format jaxood reads (without TensorFlow)
TFRECORD = "tfrecord"  # TFDS's default, which jaxood.data.prepare copies to array_record


def file_formats(info) -> set[str]:
    """The file formats a prepared TFDS dataset's files are in, as its dataset_info.json lists them: its own and its
    alternatives (the array_record copies `jaxood.data.prepare` adds beside tfrecord files). One prepared before TFDS
    wrote the file format down is in tfrecord files, as TFDS reads it."""
    return {own_file_format(info), *info.as_proto.alternative_file_formats}


def own_file_format(info) -> str:
    """The file format TFDS prepared a dataset in: tfrecord where dataset_info.json does not say (as TFDS reads it)."""
    return info.file_format.value if info.file_format else TFRECORD


def _reading_array_record(builder):
    """`builder`, or where its dataset's array_record files are an alternative format that `builder` does not see,
    one read from the dataset's folder, which does. TFDS's builder of a dataset in its catalogue (cifar10, by its
    code) restores the alternatives listed in dataset_info.json to the file but not to the formats it reads, so
    TFDS refused the array_record copies added to a dataset it prepared as tfrecord."""
    import tensorflow_datasets as tfds

    seen = {file_format.value for file_format in builder.info.available_file_formats()}
    if ARRAY_RECORD in seen or ARRAY_RECORD not in file_formats(builder.info):
        return builder
    return tfds.builder_from_directory(builder.data_dir)


def _other_prepared_versions(builder) -> list[str]:
    """Versions of `builder`'s dataset prepared beside the one it reads (TFDS's version folders, each with its
    dataset_info.json), newest first: as a TFDS before the installed one prepared it (imagenet2012 5.0.0, where TFDS
    4.9.10 reads 5.1.0). Folders in a bucket (gs://) are not listed."""
    import tensorflow_datasets as tfds

    folder = os.path.dirname(str(builder.data_dir))
    if "://" in folder:
        return []
    versions = reversed(tfds.core.utils.version.list_all_versions(folder))  # [] for a folder that is not there
    return [str(v) for v in versions if os.path.isfile(os.path.join(folder, str(v), "dataset_info.json"))]


def _shards_fingerprint(instructions) -> str:
    """12 hex digits naming the records a split reads, in order, and their files as they are now (name, size, time
    written): the label cache of a dataset prepared again under the same version, its records as many but labelled
    otherwise, kept the old labels. A file in a bucket (gs://) is named by its name and records only."""
    shards = []
    for shard in instructions:
        path = str(shard.filename)
        try:
            stat = None if "://" in path else os.stat(path)
        except OSError:  # a file that went away is said when its records are read (`DAMAGED`)
            stat = None
        written = (stat.st_size, stat.st_mtime_ns) if stat else ()
        shards.append((os.path.basename(path), shard.skip, shard.take, *written))
    return hashlib.sha256(repr(shards).encode()).hexdigest()[:12]


def raise_open_file_limit() -> None:
    """This process's limit of open files raised as far as it may go: TFDS keeps each shard file of a split open
    once it has read from it (ImageNet's training split: 1024 files), where many systems allow a process 1024 open
    files unless told otherwise (macOS 256), and the read past them failed. As far as it may go is the hard limit,
    or the most the system takes below it: macOS refuses more than its `kern.maxfilesperproc` (10240 by default)
    under a hard limit it calls unlimited, and that most is found by bisection (a refused try changes nothing)."""
    try:
        import resource
    except ImportError:  # not a Unix
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return

    def takes(limit: int) -> bool:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
        except (ValueError, OSError):
            return False
        return True

    most = 1 << 20 if hard == resource.RLIM_INFINITY else hard
    if soft >= most or takes(most):
        return
    taken, refused = soft, most  # the most the system took so far, and the least it refused
    while refused - taken > 1:
        middle = (taken + refused) // 2
        if takes(middle):
            taken = middle
        else:
            refused = middle


class TfdsSource:
    """A TFDS split prepared in `array_record` format under `data_dir`.

    jaxood never downloads implicitly: a dataset that is not prepared raises
    `DatasetMissing` at once, naming the command that prepares it. `class_names`, one per label, replace the
    dataset's own (`tfds_prompt_names`) in the prompts.
    """

    def __init__(self, name: str, split: str, data_dir: str | None = None, class_names: tuple[str, ...] | None = None):
        import tensorflow_datasets as tfds

        data_dir = data_dir or os.environ.get("TFDS_DATA_DIR") or os.path.expanduser("~/tensorflow_datasets")
        if meant := prepared_elsewhere(name, data_dir):
            # a data_dir given a level off (its dataset's own folder, or /data for /data/tensorflow_datasets): TFDS
            # called a dataset it knows not prepared (with ImageNet's 150 GB to download again), others not found
            raise DatasetMissing(
                f"TFDS dataset {name!r} is not prepared in {data_dir}, but in {meant}: give {meant} as the dataset's "
                "data_dir or as TFDS_DATA_DIR (TFDS reads <data_dir>/<dataset>/<version>)"
            )
        builder = open_tfds_builder(name, data_dir)
        if not is_prepared(builder):
            hint = _MANUAL.get(
                name.split(":")[0], "run `python -m jaxood.data.prepare --dataset={name} --data_dir={data_dir}`"
            )
            manual = os.path.join(data_dir, "downloads", "manual")
            prepare = hint.format(name=name, data_dir=data_dir, manual=manual) + (
                " (needs network and `pip install tensorflow-cpu` once)"
            )
            if others := _other_prepared_versions(builder):  # by an older TFDS, whose default version it was
                raise DatasetMissing(
                    f"TFDS dataset {name!r} is prepared in {data_dir} as version {', '.join(others)}, not as "
                    f"{builder.version}, the version TFDS {tfds.__version__} reads: name the version to read it "
                    f"({name.split(':')[0] + ':' + others[0]!r} as the dataset's name), or prepare "
                    f"{builder.version}: {prepare}"
                )
            raise DatasetMissing(
                f"TFDS dataset {name!r} is not prepared in {data_dir}: {prepare}. If it is prepared in another "
                "folder, give that as the dataset's data_dir or as TFDS_DATA_DIR"
            )
        builder = _reading_array_record(builder)
        raise_open_file_limit()  # the split's shard files stay open once read
        try:
            self._ds = builder.as_data_source(split, decoders={"image": tfds.decode.SkipDecoding()})
        except NotImplementedError as err:
            prepare = f"python -m jaxood.data.prepare --dataset={name} --data_dir="
            if (own := own_file_format(builder.info)) == TFRECORD:
                fix = (
                    f"`{prepare}{data_dir}` adds array_record copies of them (needs `pip install tensorflow-cpu` once)"
                )
            else:
                fix = f"prepare it again in an empty folder (`{prepare}<folder>`) and use that one"
            raise DatasetMissing(
                f"TFDS dataset {name!r} in {data_dir} is prepared as {own} files, which jaxood does not read: {fix}"
            ) from err
        except ValueError as err:  # an unknown split, a slice TFDS cannot parse, one past the end or an empty one
            splits = ", ".join(f"{k} ({v.num_examples} examples)" for k, v in sorted(builder.info.splits.items()))
            raise InvalidInput(
                f"split {split!r} of TFDS dataset {name!r} cannot be read ({first_line(err)}). Its splits: "
                f"{splits}; a slice such as 'train[:10%]' or 'train[100:200]' must select at least one example"
            ) from None
        self.name, self.split = name, split
        ranges: dict[str, list[tuple[int, int]]] = {}  # the split's or slice's records per shard file
        instructions = builder.info.splits[split].file_instructions
        for shard in instructions:
            path = str(shard.filename)
            path = path if "://" in path else os.path.realpath(path)
            ranges.setdefault(path, []).append((shard.skip, shard.skip + shard.take))
        self._records = RecordRanges(ranges)
        self.identity = ("tfds", self._records.key())  # train and train[:100%] read the same records
        readable = f"{builder.info.full_name}-{split}".replace("/", "_").replace(":", "_")
        self._cache_key = f"{readable}-{_shards_fingerprint(instructions)}"
        self._data_dir = data_dir
        features = builder.info.features.keys()
        if "image" not in features:
            raise InvalidInput(
                f"TFDS dataset {name!r} has no 'image' feature (its features: {', '.join(sorted(features))}): jaxood "
                "reads a TFDS dataset's 'image', with its 'label' where it has one"
            )
        # A dataset of images alone (lsun) serves as an OOD set: label -1, no class names.
        self._labelled = "label" in features
        labels = builder.info.features["label"].names if self._labelled else []
        where = f"TFDS dataset {name!r} has {len(labels)} classes"
        self.class_names = _named_classes(class_names, tfds_prompt_names(builder.name, labels), where)

    def __len__(self) -> int:
        return len(self._ds)

    def fingerprint(self) -> bytes:  # the shards by name: hosts may mount the data at other real paths
        return repr(sorted((os.path.basename(shard), spans) for shard, spans in self._records.ranges.items())).encode()

    def records(self) -> RecordRanges:
        """The records it reads (`RecordRanges`), to compare with another TFDS split's or slice's."""
        return self._records

    def labels(self) -> np.ndarray:
        """Every label; read once (records only, images stay encoded) and cached.

        In a multi-host job each host reads its share of the records and the hosts swap them: every host read them
        all before, all at once (ImageNet's 1.28 M records, its images' bytes included, from each host of a pod).
        So every host must call it, as training does.
        """
        # Next to the data, shared by its users; but os.path cannot write to a bucket (gs://), nor anyone to a
        # read-only mount: then (unless the shared one is there already) in this user's own cache.
        name = os.path.join("jaxood_labels", self._cache_key + ".npy")
        shared = None if "://" in self._data_dir else os.path.join(self._data_dir, name)
        own = os.path.join(DEFAULT_CACHE, "tfds", re.sub(r"[^\w.-]+", "_", self._data_dir), name)
        n = len(self._ds)
        if not self._labelled:
            return np.full(n, -1, np.int32)
        cached = next((c for c in (load_npy(p, (n,)) for p in filter(None, (shared, own))) if c is not None), None)
        hosts, host = jax.process_count(), jax.process_index()
        if distributed.on_every_host(cached is not None):  # else every host reads its share
            return cached
        share = -(-n // hosts)
        start, stop = min(host * share, n), min((host + 1) * share, n)
        labels, failed = (cached[start:stop], None) if cached is not None else self._read_labels(start, stop, n)
        if hosts > 1:  # each host's labels, then the first record it could not read (-1: none), swapped at once
            mine = np.full(share + 1, -1, np.int64)
            mine[: len(labels)], mine[share] = labels, -1 if failed is None else failed[0]
            every = distributed.every_host(mine)
            labels, first_bad = every[:, :share].reshape(-1)[:n].astype(np.int32), every[:, share]
            if failed is None and (first_bad >= 0).any():  # read by another host, which names its error
                other = int(np.flatnonzero(first_bad >= 0)[0])
                failed = (int(first_bad[other]), f"record {first_bad[other]}, read by host {other}")
        if failed is not None:  # every label is needed (few-shot sampling), and a cached guess would stay
            raise DatasetMissing(
                f"TFDS dataset {self.name!r} ({self.split}) in {self._data_dir} has a record that cannot be read "
                f"({failed[1]}): its files are damaged, cut short by a copy or a full disk, or gone (the record's: "
                f"{self._records.file_of(failed[0])}). Restore them, or delete the damaged ones and run `python -m "
                f"jaxood.data.prepare --dataset={self.name} --data_dir={self._data_dir}`, which copies again those it "
                "copied from tfrecord files and says how to prepare the dataset anew otherwise."
            )
        save_npy(shared if shared and can_hold_a_folder(os.path.dirname(shared)) else own, labels)
        return labels

    def _read_labels(self, start: int, stop: int, n: int) -> tuple[np.ndarray, tuple[int, str] | None]:
        """The labels of records `start` to `stop` of `n`, and the first one that cannot be read (its index and
        why), if any."""
        # ImageNet's 1.28 M records take ~3 min from a local disk (`python -m jaxood.bench.data`), more from a bucket.
        share = f", records {start}-{stop - 1} of {n}" if stop - start < n else ""  # one host's, of several
        label = f"labels {self.name} {self.split}{share}"
        progress = Progress(label, stop - start, "records") if n >= LABELS_PROGRESS_MIN else None
        labels = np.empty(stop - start, np.int32)
        for begin in range(start, stop, 4096):
            end = min(begin + 4096, stop)
            for i in range(begin, end):
                try:
                    labels[i - start] = self.read(i)[1]
                except Undecodable as err:
                    return labels, (i, str(err))
            if progress:
                progress.update(end - begin)
        return labels, None

    def read(self, index: int) -> tuple[bytes, int]:
        """The encoded image and label of a record; `Undecodable` for one a damaged file cannot give (counted and
        reported by the loader, like an image PIL cannot decode)."""
        try:
            record = self._ds[index]
        except DAMAGED as err:
            if out_of_open_files(err):  # a shard not opened for the process's limit, not a damaged one
                raise open_files_error(f"TFDS dataset {self.name!r} ({self.split}) record {index}") from err
            raise Undecodable(f"{self.name} {self.split} record {index}: {first_line(err)}") from err
        label = record["label"] if self._labelled else -1
        if record["image"] is None or label is None:  # what TFDS gives for a file cut short, at times
            raise Undecodable(f"{self.name} {self.split} record {index}: empty (its file may be cut short)")
        return record["image"], int(label)
