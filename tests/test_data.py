"""Sources, preprocessing, few-shot sampling, sharded loading and the toy world."""

import errno
import io
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import textwrap

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds
from conftest import write_image
from PIL import Image

from jaxood.cache import load_npy, save_npy, write_whole
from jaxood.data import preprocess, sampling, sources, toy_world
from jaxood.data.pipeline import Loader
from jaxood.data.sources import DatasetMissing, FolderSource, ImageListSource, TfdsSource
from jaxood.errors import InvalidInput, report_user_errors


@pytest.fixture
def folder(tmp_path):
    """3 classes x 4 images, JPEG and PNG, one planted undecodable file."""
    root = tmp_path / "folder"
    for c, name in enumerate(["golden_retriever", "sea_lion", "tench"]):
        (root / name).mkdir(parents=True)
        for i in range(4):
            ext = "jpg" if i % 2 else "png"
            write_image(root / name / f"{i}.{ext}", seed=10 * c + i)
    (root / "sea_lion" / "9_broken.jpg").write_bytes(b"this is not a jpeg")
    return str(root)


# ----------------------------------------------------------------- sources


def test_folder_source(folder):
    src = FolderSource(folder)
    assert src.class_names == ("golden retriever", "sea lion", "tench")
    assert len(src) == 13
    assert np.bincount(src.labels()).tolist() == [4, 5, 4]
    path, label = src.read(0)
    assert path.endswith(os.path.join("golden_retriever", "0.png")) and label == 0


@pytest.mark.parametrize(
    "dataset, label, name",
    [("oxford_iiit_pet", "golden_retriever", "golden retriever"), ("sun397", "/a/abbey", "abbey"),
     ("sun397", "/b/bakery/shop", "shop bakery"), ("sun397", "/a/apartment_building/outdoor",
     "outdoor apartment building"), ("places365_small", "apartment_building/outdoor", "outdoor apartment building"),
     ("sun397", "/c/car_interior/backseat", "backseat car interior"),
     ("cars196", "AM General Hummer SUV 2000", "2000 AM General Hummer SUV"),
     ("cars196", "Ram C/V Cargo Van Minivan 2012", "2012 Ram C/V Cargo Van Minivan")],
)  # fmt: skip
def test_class_names_read_tfds_labels_as_coop_does(dataset, label, name):
    """TFDS's SUN397 labels are category paths: the prompts read 'a photo of a /a/abbey.' Stanford Cars' year goes
    first, as in CoOp; and its one name with a slash is not a path: it read 'V Cargo Van Minivan 2012 Ram C'."""
    assert sources.tfds_prompt_names(dataset, [label]) == (name,)


def test_names_after_a_wordnet_id_lose_it_as_stanford_dogs_folders_name_them():
    """Stanford Dogs' folders (and TFDS's stanford_dogs labels) put a WordNet id first: the prompts read 'a photo of
    a n02085620-Chihuahua.'."""
    names = ["n02085620-Chihuahua", "n02085782-Japanese_spaniel", "n02086240-Shih-Tzu"]
    assert sources.prompt_names(names) == ("Chihuahua", "Japanese spaniel", "Shih-Tzu")
    assert sources.prompt_names(["n02085620-Chihuahua", "beagle"]) == ("n02085620-Chihuahua", "beagle")  # not all


def test_imagenet_wordnet_id_folders_get_clip_names_and_other_ids_are_refused_as_id_classes(tmp_path):
    """An ImageNet subset in WordNet-id folders (MCM's ImageNet-10/-20/-100) got its folder names as class names:
    zero-shot prompts read 'a photo of a n01440764.'. Only all 1000 folders were named."""
    import ml_collections
    from conftest import load_config

    from jaxood.data.classnames import imagenet_classnames, imagenet_names_by_wnid
    from jaxood.evaluate import open_inputs

    by_wnid = imagenet_names_by_wnid()
    assert list(by_wnid) == sorted(by_wnid) and tuple(by_wnid.values()) == imagenet_classnames()  # label order
    assert by_wnid["n01440764"] == "tench" and by_wnid["n15075141"] == "toilet paper"
    for wnid in ("n02119789", "n01440764", "n01443537"):
        (tmp_path / "subset" / wnid).mkdir(parents=True)
        write_image(tmp_path / "subset" / wnid / "a.JPEG", 0)
    assert FolderSource(str(tmp_path / "subset")).class_names == ("tench", "goldfish", "kit fox")
    # WordNet ids outside ImageNet-1k have no names here: kept, and refused as the ID set's classes.
    (tmp_path / "subset" / "n99999999").mkdir()
    write_image(tmp_path / "subset" / "n99999999" / "a.JPEG", 0)
    assert FolderSource(str(tmp_path / "subset")).class_names == ("n01440764", "n01443537", "n02119789", "n99999999")
    config = load_config("zeroshot", "toy")
    config.id_dataset = ml_collections.ConfigDict({"kind": "folder", "root": str(tmp_path / "subset")})
    with pytest.raises(InvalidInput, match=r"config\.id_dataset: 4 of its 4 classes are named by WordNet ids "
                       r"\(n01440764, n01443537, n02119789, \.\.\.\), not all ImageNet-1k's .* 'a photo of a "
                       r"n01440764\.'"):  # fmt: skip
        open_inputs(config)


@pytest.mark.parametrize("given", ["dog", "cat,dog", 3, ["cat", 2, "dog"]])
def test_class_names_that_are_not_a_list_of_strings_are_refused(folder, given):
    """One string was read as a sequence of names, one per character: 'dog' named the fixture's 3 classes 'd', 'o'
    and 'g' with no word said, and 'cat,dog' was refused as 7 names."""
    from jaxood.data.datasets import make_source

    with pytest.raises(InvalidInput, match=r"^config\.id_dataset: class_names must be a list of strings, one per "
                       r"class in label order, as \['cat', 'dog'\]; got " + re.escape(repr(given)) + "$"):  # fmt: skip
        make_source({"kind": "folder", "root": folder, "class_names": given}, "id_dataset")
    names = ("cat", "dog", "fish")
    for given in (names, list(names), np.array(names)):
        assert make_source({"kind": "folder", "root": folder, "class_names": given}).class_names == names


def test_a_flat_folder_is_one_unlabelled_set_and_images_beside_class_folders_are_said(folder, tmp_path, capsys):
    """A folder of images without class folders (how OOD sets often come) was refused as having no class folders;
    images beside class folders were left out silently."""
    from jaxood.data.datasets import make_source

    flat = tmp_path / "flat"
    shutil.copytree(os.path.join(folder, "tench"), flat)
    src = make_source({"kind": "folder", "root": str(flat)})
    assert len(src) == 4 and src.labels().tolist() == [-1] * 4 and src.class_names == ()
    with pytest.raises(InvalidInput, match=r"holds images but no class folders for the 2 class names"):
        FolderSource(str(flat), class_names=("a", "b"))
    write_image(os.path.join(folder, "stray.png"), 0)
    capsys.readouterr()
    assert len(FolderSource(folder)) == 13
    assert "1 image(s) lie in it beside its class folders, in none of them, and are left out (e.g. stray.png)" in (
        capsys.readouterr().out
    )


def test_files_that_are_not_images_by_their_name_are_said_and_pgm_images_read(folder, tmp_path, capsys):
    """A class's photos in a format jaxood does not read by name (`.heic` from a phone) were left out unsaid, and
    `.pgm` images, which torchvision's ImageFolder reads, too. Hidden files (`.DS_Store`) are not said, and macOS's
    `._` twins of copied files are no images (each was an undecodable example, and a few-shot pick)."""
    Image.fromarray(np.zeros((30, 40), np.uint8)).save(os.path.join(folder, "tench", "grey.pgm"))
    for name in ("a.heic", "b.HEIC", "notes"):
        pathlib.Path(folder, "sea_lion", name).write_bytes(b"x")
    pathlib.Path(folder, "tench", ".DS_Store").write_bytes(b"x")
    pathlib.Path(folder, "tench", "._0.png").write_bytes(b"x")  # macOS's metadata twin: read, undecodable, before
    pathlib.Path(folder, "README.txt").write_bytes(b"x")  # beside the class folders: no image, not said
    capsys.readouterr()
    src = FolderSource(folder)
    assert len(src) == 14 and np.bincount(src.labels()).tolist() == [4, 5, 5]
    assert preprocess.decode(src.read(13)[0]).size == (40, 30)
    out = capsys.readouterr().out
    assert (
        f"{folder}: 3 file(s) in its image folders are not images by their name and are left out (.heic 2, (no "
        f"extension) 1; e.g. {os.path.join('sea_lion', 'a.heic')}): jaxood reads .jpg .jpeg .png" in out
    )
    assert "DS_Store" not in out and "README" not in out

    flat = tmp_path / "flat"
    shutil.copytree(os.path.join(folder, "tench"), flat)
    (flat / "c.avif").write_bytes(b"x")
    capsys.readouterr()
    assert len(FolderSource(str(flat))) == 5
    assert (
        f"{flat}: 1 file(s) in its image folders are not images by their name and are left out (.avif 1; e.g. "
        "c.avif)" in capsys.readouterr().out
    )
    capsys.readouterr()
    shutil.rmtree(os.path.join(folder, "sea_lion"))
    FolderSource(folder)
    assert "left out" not in capsys.readouterr().out


def test_linked_sub_folders_of_a_class_are_read_once_each(tmp_path):
    """A class folder's linked sub-folder was not walked, so its images were left out, unsaid; torchvision's
    ImageFolder follows links. A second link to a folder already read, or a link back up (a loop), adds nothing."""
    (tmp_path / "data" / "cat" / "sub").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    for i, path in enumerate(["data/cat/a.png", "data/cat/sub/b.png", "elsewhere/c.png", "elsewhere/d.png"]):
        write_image(tmp_path / path, i)
    os.symlink(tmp_path / "elsewhere", tmp_path / "data" / "cat" / "linked")
    os.symlink(tmp_path / "elsewhere", tmp_path / "data" / "cat" / "sub" / "again")
    os.symlink(tmp_path / "data" / "cat", tmp_path / "data" / "cat" / "sub" / "loop")
    cat = tmp_path / "data" / "cat"
    assert FolderSource(str(tmp_path / "data")).paths == [
        str(cat / name) for name in ("a.png", "linked/c.png", "linked/d.png", "sub/b.png")
    ]


def test_class_names_given_for_numbered_class_folders_are_said_in_their_text_order(tmp_path, capsys):
    """Class folders numbered by label (a dataset exported as 0 to 99) sort as text (0, 1, 10, 11, ..., 2), as in
    torchvision's ImageFolder, and class_names are matched to them in that order: names given in label order
    named classes 10 and up wrongly, unsaid."""
    for label in range(12):
        (tmp_path / "d" / str(label)).mkdir(parents=True)
        write_image(tmp_path / "d" / str(label) / "a.png", label)
    names = [f"class {label}" for label in range(12)]
    capsys.readouterr()
    assert FolderSource(str(tmp_path / "d"), class_names=names).class_names[2] == "class 2"  # folder 10's name
    assert f"{tmp_path / 'd'}: its class folders are numbers, which sort as text (0, 1, 10, 11, ...), and the " \
        "class_names name them in that order (10: 'class 2')" in capsys.readouterr().out  # fmt: skip
    FolderSource(str(tmp_path / "d"))  # no names given: the numbers are the names (said for an ID set)
    shutil.rmtree(tmp_path / "d" / "10"), shutil.rmtree(tmp_path / "d" / "11")
    FolderSource(str(tmp_path / "d"), class_names=names[:10])  # 0 to 9 sort alike either way
    assert "sort as text" not in capsys.readouterr().out


def test_folder_errors(tmp_path, capsys):
    # A file given as the folder (an archive not unpacked) was "not found" there.
    for name, kind in [("val.tar", "an archive: unpack it and give the folder"), ("list.txt", "a file")]:
        (tmp_path / name).write_bytes(b"x")
        with pytest.raises(DatasetMissing, match=f"^image folder {tmp_path / name} is {kind}, not a folder of images"):
            FolderSource(str(tmp_path / name))
    with pytest.raises(DatasetMissing, match="not found at"):
        FolderSource(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetMissing, match="has no class sub-folders, nor images$"):
        FolderSource(str(tmp_path / "empty"))
    for wnid in ("n01440764", "n01443537"):  # ImageNet's training tar, unpacked once: a tar per class
        (tmp_path / "empty" / f"{wnid}.tar").write_bytes(b"x")
    with pytest.raises(DatasetMissing, match=r"nor images \(it holds 2 archive\(s\), as n01440764.tar: unpack them;"):
        FolderSource(str(tmp_path / "empty"))
    (tmp_path / "d" / "cat").mkdir(parents=True)
    (tmp_path / "d" / "empty_class").mkdir()
    write_image(tmp_path / "d" / "cat" / "a.png", 0)
    with pytest.raises(DatasetMissing, match=r"empty_class holds no images \(\.jpg, .*\.jfif\)$"):
        FolderSource(str(tmp_path / "d"))
    (tmp_path / "d" / "empty_class").rmdir()
    (tmp_path / "d" / ".ipynb_checkpoints").mkdir()  # left by Jupyter beside the class folders
    capsys.readouterr()
    with pytest.raises(DatasetMissing, match=r"ipynb_checkpoints holds no images .* \(a hidden folder is read as a "):
        FolderSource(str(tmp_path / "d"))
    assert "hidden" not in capsys.readouterr().out  # the refusal gives the hint, once (the log gave it too, before)
    # One with images is a class, as in ImageFolder, and said: it became a class named '.thumbnails' unsaid.
    (tmp_path / "d" / ".ipynb_checkpoints").rename(tmp_path / "d" / ".thumbnails")
    write_image(tmp_path / "d" / ".thumbnails" / "a.png", 1)
    capsys.readouterr()
    assert FolderSource(str(tmp_path / "d")).class_names == (".thumbnails", "cat")
    assert f"{tmp_path / 'd'}: its hidden folder(s) .thumbnails are read as classes, as torchvision's ImageFolder " \
        "reads them" in capsys.readouterr().out  # fmt: skip


def test_image_list_source(folder, tmp_path):
    lst = tmp_path / "list.txt"
    lst.write_text("tench/0.png 2\nsea_lion/1.jpg 1\n\ngolden_retriever/3.jpg\n")
    src = ImageListSource(folder, str(lst), class_names=("a", "b", "c"))
    assert len(src) == 3 and src.labels().tolist() == [2, 1, -1]
    assert src.read(1)[0] == os.path.join(folder, "sea_lion/1.jpg")
    lst.write_text("tench/0.png 2\ntench/missing.png 2\n")
    with pytest.raises(DatasetMissing, match=r"list.txt:2: .*tench/missing.png\nCheck the image root \(the list's pa"):
        ImageListSource(folder, str(lst))
    lst.write_text("tench/0.png,2\nsea_lion/1.jpg,1\n")  # a CSV: each line one path, none there
    with pytest.raises(DatasetMissing, match=r"relative to it\)\. Its lines hold commas: a list is `relative/path "):
        ImageListSource(folder, str(lst))
    lst.write_text("tench\\0.png 2\n.\\sea_lion\\1.jpg 1\n")  # made on Windows: one file name each, here
    with pytest.raises(DatasetMissing, match=r"relative to it\)\. Its paths hold backslashes, Windows's separator"):
        ImageListSource(folder, str(lst))
    with pytest.raises(DatasetMissing, match=f"^image list {folder} is a folder, not a list file"):  # IsADirectoryError
        ImageListSource(folder, folder)
    with pytest.raises(DatasetMissing, match=r"^image list \S+nowhere.txt not found \(OpenOOD v1.5 ships these lists "):
        ImageListSource(folder, str(tmp_path / "nowhere.txt"))
    lst.write_text("\n  \n")  # blank lines only: no example, where a set of none would score nothing
    with pytest.raises(DatasetMissing, match=r"^image list \S+list.txt is empty$"):
        ImageListSource(folder, str(lst))


def test_a_set_reading_a_file_twice_is_said(folder, tmp_path, capsys):
    """A list that names an image on two lines (lists joined, `a/./b.jpg` beside `a/b.jpg`), or a folder of two links
    to one file, counted it twice in the metrics, and a list with two labels once wrong in the ID accuracy, unsaid."""
    from conftest import load_config

    from jaxood.evaluate import open_inputs

    lst = tmp_path / "list.txt"
    lst.write_text("tench/0.png 2\nsea_lion/1.jpg 1\ntench/./0.png 2\nsea_lion/1.jpg 0\ngolden_retriever/3.jpg 0\n")
    (tmp_path / "links").mkdir()
    for name in ("a.png", "b.png"):
        os.symlink(os.path.join(folder, "tench", "2.png"), tmp_path / "links" / name)
    config = load_config("zeroshot", "toy")
    config.id_dataset = {"kind": "list", "root": folder, "list_file": str(lst), "class_names": ["a", "b", "c"]}
    config.ood_datasets.far = {"kind": "folder", "root": str(tmp_path / "links")}
    capsys.readouterr()
    assert len(open_inputs(config)[0]) == 5  # each line is one example
    out = capsys.readouterr().out
    assert (
        f"config.id_dataset: 2 of its 5 images read a file an earlier one reads (e.g. "
        f"{os.path.join(folder, 'tench/./0.png')}, the file of {os.path.join(folder, 'tench/0.png')}); 1 of them "
        f"with another label (1 for {os.path.join(folder, 'sea_lion/1.jpg')}, then 0 for "
        f"{os.path.join(folder, 'sea_lion/1.jpg')}). Each is one example, so such a file counts once per example"
    ) in out
    assert f"config.ood_datasets.far: 1 of its 2 images read a file an earlier one reads (e.g. {tmp_path}" in out
    lst.write_text("tench/0.png 2\nsea_lion/1.jpg 1\n")
    (tmp_path / "links" / "b.png").unlink()
    open_inputs(config)
    assert "earlier one" not in capsys.readouterr().out


def test_coop_split_file_source(tmp_path):
    """A split of a CoOp split file (`split_zhou_<Dataset>.json`), the splits SOT-GLP's few-shot table and the
    prompt-learning papers use, where jaxood read only TFDS's splits, folders and lists: paths under the image
    folder, the file's labels, and its class names by label over all three splits, as CoOp's prompts read them."""
    from jaxood.data.datasets import make_source

    images = tmp_path / "oxford_pets" / "images"
    images.mkdir(parents=True)
    split = {"train": [], "val": [], "test": []}
    for i, (name, label, where) in enumerate(
        [("abyssinian", 0, "train"), ("american_bulldog", 1, "train"), ("abyssinian", 0, "val"),
         ("american_bulldog", 1, "test"), ("abyssinian", 0, "test")]
    ):  # fmt: skip
        write_image(images / f"{name}_{i}.jpg", seed=i)
        split[where].append([f"{name}_{i}.jpg", label, name])
    file = tmp_path / "oxford_pets" / "split_zhou_OxfordPets.json"
    file.write_text(json.dumps(split))
    entry = {"kind": "coop", "root": str(images), "split_file": str(file), "split": "test"}
    test = make_source(entry)
    assert len(test) == 2 and test.labels().tolist() == [1, 0]
    assert test.read(0) == (str(images / "american_bulldog_3.jpg"), 1)
    assert test.class_names == ("abyssinian", "american bulldog")
    train = make_source({**entry, "split": "train"})  # the same classes, though this split has another order
    assert train.class_names == test.class_names and train.labels().tolist() == [0, 1]
    assert train.identity != test.identity and not train.records() & test.records()
    assert make_source({**entry, "class_names": ["cat", "dog"]}).class_names == ("cat", "dog")
    with pytest.raises(
        InvalidInput,
        match=r"^config\.x: the split of a CoOp split file must be one of 'train', 'val' or 'test', got 'valid' "
        r"\(did you mean 'val'\?\)$",
    ):
        make_source({**entry, "split": "valid"}, "x")
    with pytest.raises(DatasetMissing, match=r"^CoOp split file \S+split_zhou_Pets.json not found \(CoOp's split_z"):
        make_source({**entry, "split_file": str(tmp_path / "split_zhou_Pets.json")})
    (images / "abyssinian_4.jpg").unlink()
    with pytest.raises(DatasetMissing, match=r"1 file\(s\) named in \S+ do not exist under \S+, e.g.\n  \S+json: "
                       r"test\[1\]: \S+abyssinian_4.jpg\nCheck the image root"):  # fmt: skip
        make_source(entry)
    for broken, message in [
        ({**split, "val": [["a.jpg", 1, "abyssinian"]]}, r"label 1 is named both 'american_bulldog' and 'abyssinian' "),
        (
            {**split, "val": [["a.jpg", 3, "beagle"]]},
            r"no item has label 2, below its highest, 3: the labels are 0, 1, \.\.\. in turn",
        ),
        ({**split, "val": [["a.jpg", "0"]]}, r"val\[0\] is \['a.jpg', '0'\]; each item is \[relative/path, label, "),
        ({"train": [], "test": []}, r"is not a split file: it needs the lists 'train', 'val', 'test' of"),
    ]:
        file.write_text(json.dumps(broken))
        with pytest.raises(InvalidInput, match=message):
            make_source(entry)
    file.write_text('{"train": [')
    with pytest.raises(InvalidInput, match=r"split_zhou_OxfordPets.json is not JSON \(.*\): download it again$"):
        make_source(entry)


def test_fgvc_aircraft_source_reads_its_archive_as_coop_does(tmp_path):
    """FGVC Aircraft, one of SOT-GLP's eleven few-shot datasets (its Table 1), has no CoOp split file: CoOp reads the
    archive's `data/` folder, classes the lines of `variants.txt` in turn and a split's images the lines
    `<image id> <variant>` of `images_variant_<split>.txt` (a variant may hold spaces and slashes), `images/<id>.jpg`
    each. jaxood could not read that layout."""
    from jaxood.data.datasets import coop_split, make_source

    root = tmp_path / "fgvc_aircraft"
    (root / "images").mkdir(parents=True)
    (root / "variants.txt").write_text("707-320\nF/A-18\nCessna 172\n")
    (root / "images_variant_train.txt").write_text("0034309 Cessna 172\n0056978 707-320\n1514522 F/A-18\n")
    (root / "images_variant_test.txt").write_text("0062765 F/A-18\n")
    for i, image in enumerate(["0034309", "0056978", "1514522", "0062765"]):
        write_image(root / "images" / f"{image}.jpg", seed=i)
    entry = coop_split("fgvc_aircraft", str(tmp_path), "train")
    assert {k: entry[k] for k in ("kind", "root", "split")} == {"kind": "fgvc_aircraft", "root": str(root),
                                                                 "split": "train"}  # fmt: skip
    train, test = make_source(entry), make_source({**entry, "split": "test"})
    assert train.class_names == test.class_names == ("707-320", "F/A-18", "Cessna 172")
    assert train.labels().tolist() == [2, 0, 1] and test.labels().tolist() == [1]
    assert train.read(0) == (str(root / "images" / "0034309.jpg"), 2)
    assert train.identity != test.identity and not train.records() & test.records()
    with pytest.raises(
        InvalidInput,
        match=r"^config\.x: the split of FGVC Aircraft must be one of 'train', 'val', 'trainval' or 'test', "
        r"got 'valid' \(did you mean 'val'\?\)$",
    ):
        make_source({**entry, "split": "valid"}, "x")
    with pytest.raises(DatasetMissing, match=r"images_variant_val\.txt not found \(FGVC Aircraft's archive, .*\. To "
                       r"get it: CoOp's DATASETS\.md .*section FGVCAircraft: wget https://www\.robots\.ox\.ac\.uk/"
                       r"~vgg/data/fgvc-aircraft/archives/fgvc-aircraft-2013b\.tar\.gz && "):  # fmt: skip
        make_source({**entry, "split": "val"})
    (root / "images_variant_test.txt").write_text("0062765 F-16A/B\n")
    with pytest.raises(InvalidInput, match=r"images_variant_test\.txt:1: '0062765 F-16A/B' names no variant of \S+"
                       r"variants\.txt; each line is `<image id> <variant>`"):  # fmt: skip
        make_source({**entry, "split": "test"})
    (root / "images" / "0056978.jpg").unlink()
    with pytest.raises(DatasetMissing, match=r"1 file\(s\) named in \S+images_variant_train\.txt do not exist under "
                       r"\S+images, e\.g\.\n  \S+images_variant_train\.txt:2: \S+0056978\.jpg\n"):  # fmt: skip
        make_source(entry)
    (root / "variants.txt").write_text("707-320\nF/A-18\n707-320\n")
    with pytest.raises(InvalidInput, match=r"variants\.txt names the variant '707-320' twice: each of its lines is "):
        make_source(entry)


def test_image_list_with_a_byte_order_mark_or_latin_1_names(folder, tmp_path):
    """A list saved with a byte-order mark had it read into its first path (missing: "img/\ufeffa.png"), and one in
    Latin-1 naming a Latin-1 file failed with UnicodeDecodeError; each now reads the files it names, and the
    report of an undecodable one can be printed."""
    name = "caf\xe9.png".encode("latin-1")  # a file name that is no UTF-8
    shutil.copy(os.path.join(folder, "tench", "0.png"), os.path.join(os.fsencode(folder), b"tench", name))
    lst = tmp_path / "list.txt"
    lst.write_bytes("\ufefftench/0.png 2\n".encode() + b"tench/" + name + b" 1\n")
    src = ImageListSource(folder, str(lst))
    assert src.labels().tolist() == [2, 1]
    assert [preprocess.decode(src.read(i)[0]).size for i in range(2)] == [(40, 30)] * 2  # both the same image
    # Undecodable, it is named in a line a UTF-8 terminal can print (print() raised UnicodeEncodeError on it).
    with open(os.path.join(os.fsencode(folder), b"tench", name), "wb") as f:
        f.write(b"not a png")
    loader = Loader(src, preprocess.clip_eval(16), global_batch=2)
    list(loader.evaluate())
    assert "tench/caf\\udce9.png" in loader.report().encode("utf-8").decode()


def _refusing(call, refused: set[str], code: int = errno.EACCES):
    """`call` (os.scandir, os.stat, open: a path first) but raising the OSError of number `code` for each path in
    `refused`: by default the PermissionError a file system gives this user, where root, running the tests, would
    read."""

    def refused_or_called(path=".", *args, **kwargs):
        if os.fspath(path) in refused:
            raise OSError(code, os.strerror(code), os.fspath(path))  # PermissionError for EACCES
        return call(path, *args, **kwargs)

    return refused_or_called


def _refusal(source, *args) -> str:
    """The message of the DatasetMissing that `source(*args)` (a dataset opened) raises."""
    with pytest.raises(DatasetMissing) as err:
        source(*args)
    return str(err.value)


def test_folders_this_user_may_not_read_are_named(folder, monkeypatch):
    """A class's sub-folder this user may not list (a copy made with another user's umask) had its images left out
    unsaid (os.walk passes over what it cannot list), an unreadable class folder was called empty, and an
    unreadable root was PermissionError's traceback. Each is refused now, naming the folders and the fix. Root
    reads every folder, so the file system's refusal is played by os.scandir and os.listdir."""
    nested = os.path.join(folder, "tench", "more")
    os.makedirs(nested)
    write_image(os.path.join(nested, "9.png"), seed=9)
    refused = {nested, os.path.join(folder, "sea_lion")}
    monkeypatch.setattr(os, "scandir", _refusing(os.scandir, refused))
    assert _refusal(FolderSource, folder) == (
        f"2 folder(s) in {folder} cannot be read, and their images would be left out: {folder}/sea_lion (Permission "
        f"denied); {nested} (Permission denied). Their owner can let this user read them: "
        "`chmod -R a+rX` on the folder that holds them."
    )
    monkeypatch.setattr(os, "listdir", _refusing(os.listdir, refused))
    refused.add(folder)
    assert re.match(
        rf"^image folder {re.escape(folder)} cannot be read \(Permission den", _refusal(FolderSource, folder)
    )


def test_an_image_list_this_user_may_not_read_or_reach_is_named(folder, tmp_path, monkeypatch):
    """A list's images in a folder this user may not enter were called missing ("Check the image root"), and a list
    file it may not read was PermissionError's traceback. Both are said as what they are, with the fix; as in the
    test above, os.stat and open play the file system's refusal."""
    lst = tmp_path / "list.txt"
    lst.write_text("tench/0.png 2\nsea_lion/1.jpg 1\n")
    hidden = os.path.join(folder, "sea_lion", "1.jpg")
    monkeypatch.setattr(os, "stat", _refusing(os.stat, {hidden}))
    assert _refusal(ImageListSource, folder, str(lst)) == (
        f"1 file(s) named in {lst} cannot be reached under {folder}, e.g.\n  {lst}:2: {hidden} (Permission denied)\n"
        "Their owner can let this user read them: `chmod -R a+rX` on the folder that holds them."
    )
    monkeypatch.setattr(sources, "open", _refusing(open, {str(lst)}), raising=False)
    assert re.match(
        rf"^image list {re.escape(str(lst))} cannot be read \(Permission den",
        _refusal(ImageListSource, folder, str(lst)),
    )


def test_folders_and_lists_the_system_would_not_read_for_another_reason_are_not_told_to_chmod(
    folder, tmp_path, monkeypatch
):
    """A folder or list that failed to read for another reason than permission (a failing disk's EIO, a restarted
    NFS server's ESTALE) was told to be made readable with chmod, which does not mend it, and a list's image that
    failed so (or a looping link's ELOOP) was called missing ("Check the image root"). Each is named with the
    system's reason now, and told to mend what it names; a folder refused for both kinds gets both fixes."""
    faulty, denied = os.path.join(folder, "tench"), os.path.join(folder, "sea_lion")
    monkeypatch.setattr(os, "scandir", _refusing(_refusing(os.scandir, {denied}), {faulty}, errno.EIO))
    assert _refusal(FolderSource, folder) == (
        f"2 folder(s) in {folder} cannot be read, and their images would be left out: {denied} (Permission denied); "
        f"{faulty} (Input/output error). Their owner can let this user read them: `chmod -R a+rX` on the folder "
        "that holds them. That is not a matter of permission: mend what the system's reason names (a failing disk "
        "or network mount, a link that loops), then run again."
    )
    monkeypatch.setattr(os, "listdir", _refusing(os.listdir, {folder}, errno.ESTALE))
    assert (
        _refusal(FolderSource, folder)
        == f"image folder {folder} cannot be read (Stale file handle). {sources.READ_FAULT_FIX}"
    )
    lst, image = tmp_path / "list.txt", os.path.join(folder, "tench", "0.png")
    lst.write_text("tench/0.png 2\n")
    monkeypatch.setattr(os, "stat", _refusing(os.stat, {image}, errno.EIO))
    assert _refusal(ImageListSource, folder, str(lst)) == (
        f"1 file(s) named in {lst} cannot be reached under {folder}, e.g.\n  {lst}:1: {image} (Input/output error)\n"
        + sources.READ_FAULT_FIX
    )
    os.symlink("loop", os.path.join(folder, "loop"))  # a real one: os.stat gives ELOOP, and called it missing
    lst.write_text("tench/2.png 2\nloop 1\n")
    assert _refusal(ImageListSource, folder, str(lst)) == (
        f"1 file(s) named in {lst} cannot be reached under {folder}, e.g.\n  {lst}:2: {folder}/loop (Too many levels "
        f"of symbolic links)\n{sources.READ_FAULT_FIX}"
    )
    monkeypatch.setattr(sources, "open", _refusing(open, {str(lst)}, errno.EIO), raising=False)
    assert (
        _refusal(ImageListSource, folder, str(lst))
        == f"image list {lst} cannot be read (Input/output error). {sources.READ_FAULT_FIX}"
    )


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-32", "utf-16-le"])
def test_an_image_list_in_utf_16_or_32(folder, tmp_path, encoding):
    """Windows PowerShell 5 writes `>` and Out-File in UTF-16 with a byte-order mark: such a list was read as UTF-8,
    a NUL after each character, and refused for a label of '\x002\x00'. It is read by its mark now; without one
    (utf-16-le: no mark) it is refused, saying what the NULs are."""
    lst = tmp_path / "list.txt"
    text = "tench/0.png 2\r\nsea_lion/1.jpg 1\r\n"
    lst.write_bytes(("\ufeff" + text if encoding == "utf-16-be" else text).encode(encoding))  # the others add it
    if encoding == "utf-16-le":
        with pytest.raises(InvalidInput, match=rf"^{re.escape(str(lst))}:1: holds NUL characters, as a list in UTF-16"):
            ImageListSource(folder, str(lst))
        return
    src = ImageListSource(folder, str(lst))
    assert [os.path.relpath(p, folder) for p in src.paths] == ["tench/0.png", "sea_lion/1.jpg"]
    assert src.labels().tolist() == [2, 1]


def test_a_folder_with_names_that_are_no_utf_8(folder):
    """A folder whose names are not UTF-8 (a Latin-1 archive's) reads its images, but a multi-host job's check that
    every host sees the same files failed on their names (UnicodeEncodeError), and an ID class folder so named
    failed at its prompts with a traceback. The check now hashes the names' bytes; the class is refused with the
    folder's name and the fix, and reads with class_names given."""
    from conftest import load_config

    from jaxood.evaluate import open_inputs

    os.rename(os.path.join(folder, "tench"), os.path.join(os.fsencode(folder), "t\xe9nch".encode("latin-1")))
    src = FolderSource(folder)
    assert src.class_names[2] == "t\udce9nch" and src.paths[-1].endswith(os.path.join("t\udce9nch", "3.jpg"))
    assert os.path.join(os.fsencode(folder), b"t\xe9nch", b"0.png") in src.fingerprint().split(b"\n")
    assert preprocess.decode(src.read(len(src) - 1)[0]).size == (40, 30)
    config = load_config("zeroshot", "toy")
    config.id_dataset = {"kind": "folder", "root": folder}
    with pytest.raises(InvalidInput, match=r"^config\.id_dataset: 1 class name\(s\) not in UTF-8, as b't\\xe9nch' \("):
        open_inputs(config)
    config.id_dataset = {"kind": "folder", "root": folder, "class_names": ["golden retriever", "sea lion", "tench"]}
    assert open_inputs(config).id.class_names[2] == "tench"


@pytest.mark.parametrize(
    "line, class_names, message",
    [
        (
            "sea_lion/1.jpg 3",
            ("a", "b", "c"),
            "label '3' must be a whole number from 0 to 2 .one of its 3 class names.",
        ),
        ("sea_lion/1.jpg -2", (), "label '-2' must be a whole number of at least 0, or -1 for none"),
        ("sea_lion/1.jpg 1.0", (), r"label '1.0' must be a whole number"),
        ("sea lion/1.jpg 1", (), r"3 fields in 'sea lion/1.jpg 1'; .* a path with a space in it needs its file"),
        ("sea lion/1.jpg", (), r"label 'lion/1.jpg' must be a whole number .* \(a path ends at its first space\)"),
    ],
)
def test_image_list_label_the_class_names_do_not_cover_is_refused(folder, tmp_path, line, class_names, message):
    """A label past the class names counted as a wrong prediction in the ID accuracy, silently, and in training
    made the loss NaN (JAX's gather past the logits), stopping the run as if it had diverged; a label that is no
    whole number failed with int()'s error; a path with a space was cut at it, its next word read as the label."""
    from jaxood.errors import InvalidInput

    lst = tmp_path / "list.txt"
    lst.write_text(f"tench/0.png 0\n{line}\n")
    with pytest.raises(InvalidInput, match=f"list.txt:2: {message}"):
        ImageListSource(folder, str(lst), class_names)


_TINY_SHAPES = """
import sys
import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

class TinyShapes(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")
    LABELLED = True

    def _info(self):
        features = {"image": tfds.features.Image(shape=(None, None, 3))}
        if self.LABELLED:
            features["label"] = tfds.features.ClassLabel(names=["red_box", "blue_ball"])
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(features))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(6)}

    def _generate_examples(self, n):
        for i in range(n):
            image = Image.fromarray(np.full((12, 10, 3), 20 * i, np.uint8))
            yield i, {"image": image, "label": i % 2} if self.LABELLED else {"image": image}

class TinyTextures(TinyShapes):  # images alone, as TFDS's lsun
    LABELLED = False

class TinyVectors(TinyShapes):  # no images
    def _info(self):
        features = {"vector": tfds.features.Tensor(shape=(3,), dtype=np.float32)}
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(features))

    def _generate_examples(self, n):
        for i in range(n):
            yield i, {"vector": np.full(3, i, np.float32)}

for builder in (TinyShapes, TinyTextures, TinyVectors):
    builder(data_dir=sys.argv[1], file_format="array_record").download_and_prepare()
"""


@pytest.fixture(scope="module")
def tiny_tfds(tmp_path_factory) -> str:
    """A TFDS data dir with `tiny_shapes` (and the unlabelled `tiny_textures`) prepared in array_record by another
    process, as `jaxood.data.prepare` or a custom builder on another machine would: the tests read it from its files
    alone (each from a copy)."""
    data_dir = tmp_path_factory.mktemp("tfds")
    subprocess.run([sys.executable, "-c", _TINY_SHAPES, str(data_dir)], check=True, capture_output=True, timeout=300)
    return str(data_dir)


def test_tfds_dataset_without_labels_reads_as_unlabelled_images(tiny_tfds, tmp_path):
    """A TFDS dataset of images alone (lsun, as an OOD set) stopped with a KeyError traceback on its 'label'; one with
    no 'image' is refused, naming its features, where a loader thread failed on its first record."""
    from jaxood.data.pipeline import Loader

    shutil.copytree(tiny_tfds, tmp_path, dirs_exist_ok=True)
    with pytest.raises(InvalidInput, match=r"'tiny_vectors' has no 'image' feature \(its features: vector\)"):
        TfdsSource("tiny_vectors", "train", data_dir=str(tmp_path))
    src = TfdsSource("tiny_textures", "train", data_dir=str(tmp_path))
    assert src.class_names == () and src.labels().tolist() == [-1] * 6
    batches = list(Loader(src, preprocess.clip_eval(16), global_batch=4).evaluate())
    assert sorted(np.concatenate([np.asarray(b["label"])[np.asarray(b["mask"])] for b in batches])) == [-1] * 6


_TINY_VERSIONS = """
import sys
import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

class TinyVersions(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("{version}")
    RELEASE_NOTES = {{"{version}": "this version"}}

    def _info(self):
        image, label = tfds.features.Image(shape=(None, None, 3)), tfds.features.ClassLabel(num_classes=2)
        features = {{"image": image, "label": label}}
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(features))

    def _split_generators(self, dl_manager):
        return {{"train": self._generate_examples()}}

    def _generate_examples(self):
        for i in range({records}):
            yield i, {{"image": Image.fromarray(np.full((4, 4, 3), i, np.uint8)), "label": i % 2}}
"""


def _prepare_tiny_versions(
    data_dir: str, records: int = 3, shards: int = 0, file_format: str = "array_record", name: str = "TinyVersions"
) -> None:
    """`tiny_versions` 1.0.0 prepared in `data_dir` by another process (`shards` files; 0: as TFDS chooses), in
    `file_format`, its builder named `name` (`tiny_versions` is registered in this process by a test)."""
    config = f"tfds.download.DownloadConfig(num_shards={shards})" if shards else "None"
    prepare = _TINY_VERSIONS.format(version="1.0.0", records=records).replace("TinyVersions", name) + (
        f"{name}(data_dir=sys.argv[1], file_format={file_format!r}).download_and_prepare(download_config={config})"
    )
    subprocess.run([sys.executable, "-c", prepare, data_dir], check=True, capture_output=True, timeout=300)


def test_a_tfds_dataset_prepared_at_another_version_is_named_with_the_name_that_reads_it(tmp_path):
    """A dataset TFDS knows (imagenet2012) prepared by an older TFDS sits in its folder as a version the installed TFDS
    does not read by default (TFDS 4.9.10 reads imagenet2012 5.1.0): it was called not prepared, with the download and
    preparation to do again (ImageNet's 150 GB), where naming the version prepared reads it."""
    _prepare_tiny_versions(str(tmp_path))
    exec(_TINY_VERSIONS.format(version="1.1.0", records=3), {})  # the installed TFDS's builder reads a later version
    message = (
        f"TFDS dataset 'tiny_versions' is prepared in {re.escape(str(tmp_path))} as version 1.0.0, not as 1.1.0, the "
        "version TFDS "
        r"[\d.]+ reads: name the version to read it \('tiny_versions:1.0.0' as the dataset's name\), or prepare 1.1.0: "
    )
    with pytest.raises(DatasetMissing, match=message):
        TfdsSource("tiny_versions", "train", data_dir=str(tmp_path))
    assert TfdsSource("tiny_versions:1.0.0", "train", data_dir=str(tmp_path)).labels().tolist() == [0, 1, 0]


@pytest.mark.parametrize("below", [["tiny_shapes"], ["tiny_shapes", "1.0.0"]])
def test_a_tfds_data_dir_given_as_the_datasets_own_folder_names_the_data_dir_above_it(tiny_tfds, tmp_path, below):
    """A data_dir one or two levels too deep (the dataset's folder, or its version's) was read as a data dir without
    the dataset: not found for a dataset TFDS does not know, and for one it knows (imagenet2012) not prepared, with
    the download to do again (ImageNet's 150 GB)."""
    shutil.copytree(tiny_tfds, tmp_path, dirs_exist_ok=True)
    deep = str(tmp_path.joinpath(*below))
    message = (
        f"^TFDS dataset 'tiny_shapes' is not prepared in {re.escape(deep)}, but in {re.escape(str(tmp_path))}: give "
        f"{re.escape(str(tmp_path))} as the dataset's data_dir or as TFDS_DATA_DIR"
    )
    with pytest.raises(DatasetMissing, match=message):
        TfdsSource("tiny_shapes", "train", data_dir=deep)
    with pytest.raises(DatasetMissing, match="'tiny_shapes:1.0.0' is not prepared in .*, but in .*: give "):
        TfdsSource("tiny_shapes:1.0.0", "train", data_dir=deep)
    assert sorted(TfdsSource("tiny_shapes", "train", data_dir=str(tmp_path)).labels().tolist()) == [0, 0, 0, 1, 1, 1]
    known = tmp_path.joinpath("cifar10", "3.0.2")  # a dataset TFDS knows, as its files lie (their contents unread)
    known.mkdir(parents=True)
    (known / "dataset_info.json").write_text("{}", encoding="utf-8")
    with pytest.raises(DatasetMissing, match=f"'cifar10' is not prepared in .*: give {re.escape(str(tmp_path))} as "):
        TfdsSource("cifar10", "test", data_dir=str(tmp_path.joinpath("cifar10", *below[1:])))


def test_a_tfds_data_dir_given_a_level_too_high_names_the_data_dir_in_it(tiny_tfds, tmp_path):
    """A data_dir one level too high (`/data` for `/data/tensorflow_datasets`) was read as a data dir without the
    dataset: not found for a dataset TFDS does not know, and for one it knows (imagenet2012) not prepared, with the
    download to do into it (ImageNet's 150 GB)."""
    shutil.copytree(tiny_tfds, tmp_path / "tensorflow_datasets")
    (tmp_path / "other").mkdir()  # a folder beside it without the dataset
    inside = re.escape(str(tmp_path / "tensorflow_datasets"))
    message = (
        f"^TFDS dataset 'tiny_shapes' is not prepared in {re.escape(str(tmp_path))}, but in {inside}: give {inside} as "
        r"the dataset's data_dir or as TFDS_DATA_DIR \(TFDS reads <data_dir>/<dataset>/<version>\)$"
    )
    with pytest.raises(DatasetMissing, match=message):
        TfdsSource("tiny_shapes", "train", data_dir=str(tmp_path))
    known = tmp_path / "tensorflow_datasets" / "cifar10" / "plain_text" / "3.0.2"  # a config's layout, contents unread
    known.mkdir(parents=True)
    (known / "dataset_info.json").write_text("{}", encoding="utf-8")
    with pytest.raises(DatasetMissing, match=r"'cifar10' is not prepared in .*, but in .*tensorflow_datasets: give "):
        TfdsSource("cifar10", "test", data_dir=str(tmp_path))


def test_tfds_labels_named_by_imagenet_wordnet_ids_get_clip_names(tiny_tfds, tmp_path):
    """TFDS's imagenet_v2, imagenet_r, imagenet_a and imagenet_sketch label by the 1000 WordNet ids: only
    imagenet2012 got names, so their prompts read 'a photo of a n01440764.' (here the ids replace tiny_shapes')."""
    shutil.copytree(tiny_tfds, tmp_path, dirs_exist_ok=True)
    (tmp_path / "tiny_shapes" / "1.0.0" / "label.labels.txt").write_text("n01443537\nn01440764\n")
    assert TfdsSource("tiny_shapes", "train", data_dir=str(tmp_path)).class_names == ("goldfish", "tench")


def test_id_classes_sharing_a_prompt_name_are_said(folder, capsys):
    """Two ID classes whose names CLIP's tokenizer reads as one text ('Sea lion' and 'sea  lion') have one prompt:
    zero-shot cannot tell them apart, unsaid. OpenAI's ImageNet names repeat two, as the papers use them."""
    from conftest import load_config

    from jaxood.evaluate import open_inputs

    config = load_config("zeroshot", "toy")
    config.id_dataset = {"kind": "folder", "root": folder, "class_names": ["Sea lion", "tench", "sea  lion"]}
    capsys.readouterr()
    open_inputs(config)
    assert "config.id_dataset: 1 class name(s) name two or more of its classes ('sea lion': 0, 2), so their prompts " \
        "are one text and zero-shot cannot tell those classes apart" in capsys.readouterr().out  # fmt: skip
    config.id_dataset = {"kind": "folder", "root": folder}
    open_inputs(config)
    assert "two or more" not in capsys.readouterr().out


def test_tfds_class_names_replace_its_labels_and_numbered_id_classes_are_said(tiny_tfds, tmp_path, capsys):
    """TFDS names a class it has no name for by its number (caltech_birds2011's 200 species are '0' to '199'): the
    prompts read 'a photo of a 0.' with no word said. A TFDS entry may now give its class_names, as a folder or list
    can, and an ID set named by numbers alone is said."""
    from conftest import load_config

    from jaxood.data.datasets import make_source
    from jaxood.evaluate import open_inputs

    shutil.copytree(tiny_tfds, tmp_path, dirs_exist_ok=True)
    (tmp_path / "tiny_shapes" / "1.0.0" / "label.labels.txt").write_text("0\n1\n")
    entry = {"kind": "tfds", "name": "tiny_shapes", "split": "train", "data_dir": str(tmp_path)}
    config = load_config("zeroshot", "toy")
    config.id_dataset = entry
    open_inputs(config)
    assert "config.id_dataset: its class names are numbers (0, 1, ...), so its prompts read 'a photo of a 0.'" in (
        capsys.readouterr().out
    )
    config.id_dataset = {**entry, "class_names": ["red box", "blue ball"]}
    assert open_inputs(config)[0].class_names == ("red box", "blue ball")
    assert "class names are numbers" not in capsys.readouterr().out
    with pytest.raises(InvalidInput, match=r"^config\.id_dataset: TFDS dataset 'tiny_shapes' has 2 classes but 3 cl"):
        make_source({**entry, "class_names": ["a", "b", "c"]}, "id_dataset")


def test_an_ood_set_reading_the_id_training_or_another_ood_sets_images_is_refused(tiny_tfds, folder, tmp_path, capsys):
    """An OOD entry copied from the ID entry (or naming its folder another way) scored the ID images as OOD: AUROC
    50, reported as a result. One copied from the training entry trained the method on its own OOD images, and two
    OOD entries reading the same images counted them twice in the mean. An ID set reading the training images
    flattered both accuracy and OOD metrics unsaid; it is now said (a sanity check may want it). So was an OOD
    folder inside the ID folder (now refused) and a list naming some of its files (now said).
    Each kind of dataset is compared by what it reads: a folder's or list's real path, a TFDS dataset's folder,
    version and split, a toy split's settings (defaults filled in)."""
    from conftest import load_config

    from jaxood.evaluate import open_inputs

    shutil.copytree(tiny_tfds, tmp_path / "tfds")
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "id.txt").write_text("golden_retriever/1.jpg 0\nsea_lion/1.jpg 1\n")
    config = load_config("zeroshot", "toy")
    tfds_entry = {"kind": "tfds", "name": "tiny_shapes", "split": "train", "data_dir": str(tmp_path / "tfds")}
    list_entry = {"kind": "list", "root": folder, "list_file": str(tmp_path / "lists" / "id.txt")}
    (tmp_path / "elsewhere").mkdir()
    write_image(tmp_path / "elsewhere" / "0.png", 0)
    elsewhere = {"kind": "folder", "root": str(tmp_path / "elsewhere")}
    for id_entry, same, other in (
        ({"kind": "folder", "root": folder}, {"kind": "folder", "root": folder + "/../folder/"}, elsewhere),
        ({**list_entry, "class_names": ["dog", "seal"]}, {**list_entry, "root": folder + "/"}, elsewhere),
        (tfds_entry, {**tfds_entry, "data_dir": str(tmp_path / "tfds") + "/", "split": "train[:100%]"},
         {**tfds_entry, "name": "tiny_textures"}),
        ({"kind": "toy", "split": "test"}, {"kind": "toy", "split": "test", "seed": 0}, {"kind": "toy", "split": "test",
         "seed": 1}),
    ):  # fmt: skip
        config.id_dataset = id_entry
        config.ood_datasets = {"near": other, "copy": same}
        with pytest.raises(InvalidInput, match=r"^config\.ood_datasets\.copy reads the same images as config\."
                           r"id_dataset \(.*\): an OOD set must hold images of other classes than the ID set's, or its "
                           r"AUROC is 50 by construction\. Name another dataset\.$"):  # fmt: skip
            open_inputs(config)
        config.ood_datasets = {"near": other, "far": dict(other)}
        with pytest.raises(InvalidInput, match=r"^config\.ood_datasets\.near and config\.ood_datasets\.far read "
                           r"the same images \(a copied entry .*\): each would be a row of its own, and the mean over "
                           r"the OOD sets would count them twice\. Point each at its own dataset\.$"):  # fmt: skip
            open_inputs(config)
        config.ood_datasets = {"near": other}
        assert list(open_inputs(config).ood) == ["near"]
    config = load_config("sot_glp", "demo")
    config.ood_datasets.far = dict(config.train_dataset)
    with pytest.raises(InvalidInput, match=r"^config\.ood_datasets\.far reads the same images as config\.train_"
                       r"dataset \(.*\): the method would be trained on the images it is then to call"):  # fmt: skip
        open_inputs(config, train=True)
    open_inputs(config)  # evaluating alone, no training set
    # Folders and lists are compared by their files too: a folder inside the ID set's is refused, a list that
    # names some of its files is said.
    config = load_config("zeroshot", "toy")
    config.id_dataset = {"kind": "folder", "root": folder}
    write_image(tmp_path / "other.png", 0)
    (tmp_path / "lists" / "ood.txt").write_text("other.png\nfolder/tench/0.png\n")
    config.ood_datasets = {"inside": {"kind": "folder", "root": folder + "/tench"}}
    with pytest.raises(InvalidInput, match=r"^config\.ood_datasets\.inside: all 4 of its images are config\.id_"
                       r"dataset's too \(its folder lies inside that set's, its list or its links name that set's "
                       r"files, or its TFDS split is a part of that set's\): an OOD set must hold images of other "
                       r"classes"):  # fmt: skip
        open_inputs(config)
    config.ood_datasets = {"some": {"kind": "list", "root": str(tmp_path), "list_file": str(tmp_path / "lists" /
                                                                                            "ood.txt")}}  # fmt: skip
    capsys.readouterr()
    open_inputs(config)
    assert "config.ood_datasets.some: 1 of its 2 images are config.id_dataset's too (the same files or TFDS " \
        "records): they are scored as ID and as OOD" in capsys.readouterr().out  # fmt: skip
    config = load_config("sot_glp", "demo")
    capsys.readouterr()
    open_inputs(config, train=True)
    assert "reads the training set's images" not in capsys.readouterr().out
    config.id_dataset = dict(config.train_dataset)  # evaluated on the images it trained on: said, not refused
    open_inputs(config, train=True)
    assert "config.id_dataset reads the training set's images (config.train_dataset): ID accuracy and the OOD " \
        "metrics will be measured on images the method trained on" in capsys.readouterr().out  # fmt: skip


def test_an_ood_folder_of_links_to_the_id_sets_files_is_compared_by_the_files_linked(folder, tmp_path, capsys):
    """A set made by linking files (ImageNet's classes split into ID and OOD folders of links) was compared by the
    links' own paths: an OOD folder of links to the ID set's images was taken for other images, unsaid."""
    from conftest import load_config

    from jaxood.evaluate import open_inputs

    config = load_config("zeroshot", "toy")
    config.id_dataset = {"kind": "folder", "root": folder}
    (tmp_path / "links").mkdir()
    for name in ("0.png", "1.jpg"):
        (tmp_path / "links" / f"tench_{name}").symlink_to(os.path.join(folder, "tench", name))
    config.ood_datasets = {"linked": {"kind": "folder", "root": str(tmp_path / "links")}}
    with pytest.raises(InvalidInput, match=r"^config\.ood_datasets\.linked: all 2 of its images are config\.id_data"):
        open_inputs(config)
    write_image(tmp_path / "links" / "own.png", 0)
    (tmp_path / "links" / "dangling.png").symlink_to(tmp_path / "nowhere.png")  # unreadable: the loader says so
    capsys.readouterr()
    open_inputs(config)
    assert "config.ood_datasets.linked: 2 of its 4 images are config.id_dataset's too" in capsys.readouterr().out


def test_two_ood_sets_sharing_files_are_said(folder, tmp_path, capsys):
    """Two OOD entries reading the same dataset are refused; two that share only some files (a folder and a
    sub-folder of it, a list of some of another set's files) were not said, and the mean over the sets counted
    those files twice."""
    from conftest import load_config

    from jaxood.evaluate import open_inputs

    config = load_config("zeroshot", "toy")
    config.ood_datasets = {
        "all": {"kind": "folder", "root": folder},
        "part": {"kind": "folder", "root": folder + "/tench"},
    }
    config.ood_datasets["other"] = {"kind": "folder", "root": str(tmp_path / "other")}
    (tmp_path / "other").mkdir()
    write_image(tmp_path / "other" / "0.png", 0)
    capsys.readouterr()
    open_inputs(config)
    out = capsys.readouterr().out
    assert (
        "config.ood_datasets.all and config.ood_datasets.part share 4 images (the same files or TFDS records, of 13 "
        "and 4): the mean over the OOD sets counts them twice"
    ) in out
    assert out.count(" share ") == 1


def test_tfds_splits_are_compared_by_the_records_they_read(tiny_tfds, tmp_path, capsys):
    """TFDS sets were compared by their split's spelling: `train` and `train[:100%]` were other datasets, and slices
    of one split that overlap (`train[:4]`, `train[2:]`) were not said. They are compared by the records their shard
    files give (`RecordRanges`), as folders and lists by their files."""
    from conftest import load_config

    from jaxood.data.sources import RecordRanges
    from jaxood.evaluate import open_inputs

    shutil.copytree(tiny_tfds, tmp_path / "tfds")
    entry = {"kind": "tfds", "name": "tiny_shapes", "data_dir": str(tmp_path / "tfds")}
    both = TfdsSource("tiny_shapes", "train+train", data_dir=entry["data_dir"]).records()
    assert len(both) == 6 and len(both & TfdsSource("tiny_shapes", "train[3:]", entry["data_dir"]).records()) == 3
    assert len(both & {"a file"}) == len({"a file"} & both) == 0
    assert len(RecordRanges({"s": [(0, 4), (2, 6), (8, 9)]}) & RecordRanges({"s": [(5, 10)], "t": [(0, 3)]})) == 2
    config = load_config("zeroshot", "toy")
    config.id_dataset = {**entry, "split": "train[:4]"}
    config.ood_datasets = {"inside": {**entry, "split": "train[1:3]"}}
    with pytest.raises(InvalidInput, match=r"^config\.ood_datasets\.inside: all 2 of its images are config\.id_data"):
        open_inputs(config)
    config.ood_datasets = {
        "half": {**entry, "split": "train[2:]"}, "rest": {**entry, "split": "train[4:]"},
        "last": {**entry, "split": "train[-1:]"},
    }  # fmt: skip
    capsys.readouterr()
    open_inputs(config)
    out = capsys.readouterr().out
    assert "config.ood_datasets.half: 2 of its 4 images are config.id_dataset's too (the same files or TFDS" in out
    assert "config.ood_datasets.half and config.ood_datasets.rest share 2 images" in out
    assert "config.ood_datasets.rest and config.ood_datasets.last share 1 images" in out
    assert "config.ood_datasets.half and config.ood_datasets.last share 1 images" in out
    assert out.count(" share ") == 3 and out.count("config.id_dataset's too") == 1
    config = load_config("sot_glp", "demo")  # an ID slice that overlaps the training slice: said, with how many
    config.train_dataset = {**entry, "split": "train[:4]"}
    for split, said in (
        ("train[2:]", "config.id_dataset: 2 of its 4 images are config.train_dataset's too"),
        ("train[1:3]", "config.id_dataset reads the training set's images"),
        ("train[4:]", None),
    ):
        config.id_dataset = {**entry, "split": split}
        open_inputs(config, train=True)
        out = capsys.readouterr().out
        assert (said in out) if said else ("config.id_dataset" not in out), split


def test_an_id_folder_whose_classes_all_lie_in_sub_folders_is_said(tmp_path, capsys):
    """SUN397 as CoOp unpacks it (`SUN397/a/abbey/...`) read as 26 classes named by letters, each the classes under
    it, with no word said: its prompts read 'a photo of a a.'. A folder is still read as torchvision's ImageFolder
    reads it, and the log now says it; one sub-folder per class (Tiny-ImageNet's `n01443537/images/`) is not
    nesting, and neither are class folders with images of their own."""
    from conftest import load_config

    from jaxood.evaluate import open_inputs

    config = load_config("zeroshot", "toy")
    for layout, said in (
        ({"a/abbey": 2, "a/airport_terminal": 1, "b/badlands": 1, "b/bakery/shop": 1}, True),
        ({"n01443537/images": 2, "n01440764/images": 1}, False),
        ({"a/abbey": 1, "a": 1, "b/badlands": 1, "b/bakery": 1}, False),
    ):
        root = tmp_path / str(len(os.listdir(tmp_path)))
        for folder, count in layout.items():
            (root / folder).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                write_image(root / folder / f"{i}.jpg", i)
        config.id_dataset = {"kind": "folder", "root": str(root)}
        capsys.readouterr()
        id_source = open_inputs(config)[0]
        assert len(id_source.class_names) == 2
        out = capsys.readouterr().out
        assert ("config.id_dataset: each of its 2 class folders keeps its images in sub-folders (a: abbey, "
                "airport_terminal), and each is read as one class, as torchvision's ImageFolder reads them; if the "
                "sub-folders are the classes (SUN397's a/abbey layout)" in out) == said, out  # fmt: skip


def test_tfds_source_reads_array_record_without_tensorflow_or_builder_code(tiny_tfds, tmp_path, monkeypatch, capsys):
    shutil.copytree(tiny_tfds, tmp_path, dirs_exist_ok=True)
    src = TfdsSource("tiny_shapes", "train", data_dir=str(tmp_path))
    assert "tensorflow" not in sys.modules
    assert src.class_names == ("red box", "blue ball")
    monkeypatch.setattr(sources, "LABELS_PROGRESS_MIN", 6)  # as for ImageNet's 1.28 M records
    capsys.readouterr()
    labels = src.labels()
    assert len(src) == 6 and sorted(labels.tolist()) == [0, 0, 0, 1, 1, 1]
    assert "[labels tiny_shapes train] 6/6 records" in capsys.readouterr().out
    # Labels are cached next to the data (whole files only), named by the split and a fingerprint of its records'
    # files; images decode through the same path as files.
    (cached,) = (tmp_path / "jaxood_labels").iterdir()
    assert re.fullmatch(r"tiny_shapes_1\.0\.0-train-[0-9a-f]{12}\.npy", cached.name), cached.name
    np.testing.assert_array_equal(TfdsSource("tiny_shapes", "train", data_dir=str(tmp_path)).labels(), labels)
    # The dataset prepared again under its version, as many records labelled otherwise (here: the cache made stale,
    # then its file written again): the old labels were served, as the cache was keyed by name and split only.
    np.save(cached, 1 - labels)
    np.testing.assert_array_equal(TfdsSource("tiny_shapes", "train", data_dir=str(tmp_path)).labels(), 1 - labels)
    (shard,) = (tmp_path / "tiny_shapes" / "1.0.0").glob("*.array_record-*")
    os.utime(shard, ns=(shard.stat().st_atime_ns, shard.stat().st_mtime_ns + 10**9))
    np.testing.assert_array_equal(TfdsSource("tiny_shapes", "train", data_dir=str(tmp_path)).labels(), labels)
    (cached,) = [p for p in (tmp_path / "jaxood_labels").iterdir() if p != cached]
    np.testing.assert_array_equal(np.load(cached), labels)
    src = TfdsSource("tiny_shapes", "train", data_dir=str(tmp_path))
    # A damaged cache file (cut short) is said, read again from the records and replaced.
    cached.write_bytes(cached.read_bytes()[:100])
    capsys.readouterr()
    np.testing.assert_array_equal(src.labels(), labels)
    assert f"cache file {cached} cannot be read" in capsys.readouterr().out
    np.testing.assert_array_equal(np.load(cached), labels)
    # A split that selects nothing, or none there is, names the dataset's splits (TFDS's raw errors before).
    assert len(TfdsSource("tiny_shapes", "train[:50%]", data_dir=str(tmp_path))) == 3
    for split in ("train[:0]", "train[10:]", "validation"):
        with pytest.raises(
            InvalidInput, match=rf"split '{re.escape(split)}' of TFDS .*Its splits: train \(6 examples\)"
        ):
            TfdsSource("tiny_shapes", split, data_dir=str(tmp_path))
    raw, label = src.read(3)
    img = np.asarray(preprocess.decode(raw))
    assert img.shape == (12, 10, 3) and img[0, 0, 0] in {20 * i for i in range(6) if i % 2 == label}

    # The same data in a bucket, as TFDS (with gcsfs) would open it: its labels go to this host's jaxood cache,
    # not to a local folder named "gs:" (os.path cannot write to the bucket).
    import tensorflow_datasets as tfds

    opened = tfds.builder("tiny_shapes", data_dir=str(tmp_path))
    monkeypatch.setattr(tfds, "builder", lambda name, data_dir: opened)
    monkeypatch.setattr(sources, "DEFAULT_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path / "jaxood_labels")
    np.testing.assert_array_equal(TfdsSource("tiny_shapes", "train", data_dir="gs://b/tfds").labels(), labels)
    assert os.listdir(tmp_path / "cache" / "tfds") == ["gs_b_tfds"] and not os.path.exists("gs:")


_LABELS_ON_EACH_HOST = """
import json, sys
from jaxood import distributed
distributed.maybe_initialize()
import jax
from jaxood.data import sources
from jaxood.data.preprocess import Undecodable

sources.DEFAULT_CACHE = f"{sys.argv[2]}/cache{jax.process_index()}"  # each host's own cache
read, seen = sources.TfdsSource.read, []

def counted(self, i):
    seen.append(i)
    if i == int(sys.argv[3]):
        raise Undecodable(f"record {i}: planted")
    return read(self, i)

sources.TfdsSource.read = counted
try:
    labels = sources.TfdsSource("tiny_shapes", "train", data_dir=sys.argv[1]).labels().tolist()
except sources.DatasetMissing as err:
    labels = str(err)
print(json.dumps({"labels": labels, "read": seen}))
"""


def test_two_hosts_read_the_labels_of_a_tfds_split_in_shares(tiny_tfds, tmp_path, monkeypatch):
    """Each host of a job read every record of a TFDS split for its labels, all at once (ImageNet's 1.28 M records,
    their images' bytes included, from each host of a pod). Each now reads its share and the hosts swap them. A
    record one host cannot read stops every host, each naming it; a host with a cache of its own (the others
    have none: a host replaced after a preemption) gives its share from it, and the others read theirs."""
    from test_sot_glp import _run_two_hosts

    data = tmp_path / "data"
    shutil.copytree(tiny_tfds, data)
    (data / "jaxood_labels").write_text("")  # no cache next to the data: each host keeps its own
    monkeypatch.setattr(sources, "DEFAULT_CACHE", str(tmp_path / "single"))
    want = TfdsSource("tiny_shapes", "train", data_dir=str(data)).labels().tolist()

    def hosts(damaged):
        logs = _run_two_hosts([sys.executable, "-c", _LABELS_ON_EACH_HOST, str(data), str(tmp_path), str(damaged)])
        return [json.loads(log.splitlines()[-1]) for log in logs]

    first, second = hosts(damaged=4)
    assert "has a record that cannot be read (record 4, read by host 1): its files are damaged" in first["labels"]
    assert "has a record that cannot be read (record 4: planted): its files are damaged" in second["labels"]
    assert [first["read"], second["read"]] == [[0, 1, 2], [3, 4]]
    assert hosts(damaged=-1) == [{"labels": want, "read": [0, 1, 2]}, {"labels": want, "read": [3, 4, 5]}]
    shutil.rmtree(tmp_path / "cache1")
    assert hosts(damaged=-1) == [{"labels": want, "read": []}, {"labels": want, "read": [3, 4, 5]}]


_PLACE_ON_EVERY_DEVICE = """
import json
from jaxood import distributed
distributed.maybe_initialize()
import jax, jax.numpy as jnp, ml_dtypes, numpy as np
from jax.experimental import multihost_utils
from jaxood.data import pipeline

gathered, allgather = [], multihost_utils.process_allgather

def counted(tree, *args, **kwargs):
    gathered.append(sum(np.asarray(leaf).nbytes for leaf in jax.tree.leaves(tree)))
    return allgather(tree, *args, **kwargs)

multihost_utils.process_allgather = counted
weights = np.random.default_rng(0).standard_normal((512, 1024), np.float32)  # 2 MiB
tree = {
    "weights": weights, "half": weights[:4].astype(ml_dtypes.bfloat16), "scale": np.float32(4.6),
    "step": jnp.asarray(3), "unset": np.array([np.nan, 1.0], np.float32),
}
placed = pipeline.replicate(tree)
placed |= pipeline.replicate({"again": placed["weights"], "row": weights[0]})  # an array placed before stays
print(json.dumps({
    "gathered": gathered,
    "dtypes": {name: [str(array.dtype), list(array.shape)] for name, array in placed.items()},
    "everywhere": all(array.sharding.is_fully_replicated for array in placed.values()),
    "same": all(
        np.array_equal(np.asarray(placed[name].addressable_data(0)), np.asarray(want), equal_nan=True)
        for name, want in (tree | {"again": weights, "row": weights[0]}).items()
    ),
}))
"""


def test_two_hosts_place_their_weights_on_every_device_without_gathering_them():
    """JAX checked that the hosts of a job place the same values on every device by gathering every host's copy of
    each array onto every device and host: for a moment the array times the host count in each device's memory.
    The hosts now swap a hash of each array (16 bytes) and place their own copies. The same bytes are the same
    values, NaN included, which JAX's comparison called different; an array already placed stays."""
    from test_sot_glp import _run_two_hosts

    for log in _run_two_hosts([sys.executable, "-c", _PLACE_ON_EVERY_DEVICE], timeout=120):
        got = json.loads(log.splitlines()[-1])
        assert sum(got["gathered"]) < 1024, got["gathered"]  # the weights alone are 2 MiB
        assert got["dtypes"] == {
            "weights": ["float32", [512, 1024]], "half": ["bfloat16", [4, 1024]], "scale": ["float32", []],
            "step": ["int32", []], "unset": ["float32", [2]], "again": ["float32", [512, 1024]],
            "row": ["float32", [1024]],
        }  # fmt: skip
        assert got["everywhere"] and got["same"], got


@pytest.mark.parametrize("damage", ["bytes changed", "cut short", "gone"])
def test_a_damaged_tfds_file_is_named_for_its_labels_and_its_images_are_counted_as_unreadable(
    damage, tiny_tfds, tmp_path
):
    """A record array_record cannot read (a file cut short by a copy or a full disk, bytes changed) stopped the run
    with a RuntimeError from a loader thread. Its images are now undecodable ones, counted and reported; reading
    the labels, which few-shot sampling needs whole, names the damaged dataset, the record's file and what to do."""
    shutil.copytree(tiny_tfds, tmp_path, dirs_exist_ok=True)
    (shard,) = (tmp_path / "tiny_shapes" / "1.0.0").glob("*.array_record-*")
    data = bytearray(shard.read_bytes())
    if damage == "cut short":  # every record of it: TFDS gives them empty (a larger file: Riegeli's error)
        data = data[: len(data) // 2]
    else:
        data[300] ^= 0xFF  # in the second record's chunk
    shard.write_bytes(data)
    if damage == "gone":  # deleted, or moved: the label cache's fingerprint leaves it to the reads to say
        shard.unlink()
    src = TfdsSource("tiny_shapes", "train", data_dir=str(tmp_path))
    first, why = {
        "bytes changed": (1, "Corrupted Riegeli"),
        "cut short": (0, "empty (its file may be cut short)"),
        "gone": (0, "open() failed: No such file or directory"),
    }[damage]
    unread = rf"'tiny_shapes' \(train\) .* has a record that cannot be read \(tiny_shapes train record {first}: "
    named = rf"\(the record's: {re.escape(str(shard))}\)\. .*jaxood\.data\.prepare --dataset=tiny_shapes"
    with pytest.raises(DatasetMissing, match=rf"{unread}{re.escape(why)}.*\): its files are damaged, .* {named}"):
        src.labels()
    assert not (tmp_path / "jaxood_labels").exists()  # nothing cached
    loader = Loader(src, preprocess.clip_eval(16), global_batch=4)
    masks = np.concatenate([np.asarray(b["mask"]) for b in loader.evaluate()])[:6]
    assert masks.tolist() == ([True, False, True, True, True, True] if damage == "bytes changed" else [False] * 6)
    assert f"#{first} tiny_shapes train record {first}: {why}" in loader.report()


def test_cache_files_that_cannot_be_used_are_recomputed(tmp_path, capsys):
    """`load_npy` (text features, TFDS labels): None, so the caller computes again, for a missing file silently and
    for a damaged or mis-shaped one with a line naming it."""
    path = str(tmp_path / "a.npy")
    assert load_npy(path, (3,)) is None and capsys.readouterr().out == ""
    save_npy(path, np.arange(3))
    np.testing.assert_array_equal(load_npy(path, (3,)), np.arange(3))
    assert load_npy(path, (4,)) is None
    assert f"cache file {path} holds shape (3,), not (4,)" in capsys.readouterr().out
    (tmp_path / "a.npy").write_text("not an array")
    assert load_npy(path, (3,)) is None and "cannot be read" in capsys.readouterr().out


def test_a_cache_that_cannot_be_written_is_said_and_the_run_goes_on(tmp_path, capsys):
    """A cache file that cannot be written (a full disk, a read-only folder; here a file where its folder would be)
    stopped the run with an OSError, though the cache only saves computing the array again next time."""
    (tmp_path / "a_file").write_text("")
    path = str(tmp_path / "a_file" / "features.npy")
    save_npy(path, np.arange(3))
    assert f"cache file {path} could not be written (" in capsys.readouterr().out
    assert load_npy(path, (3,)) is None


def test_tfds_labels_of_a_read_only_data_dir_are_cached_in_the_users_own_cache(tiny_tfds, tmp_path, monkeypatch):
    """A shared, read-only TFDS folder (a cluster's dataset mount) stopped the run when its labels were to be cached
    next to it, after reading them all (3 min for ImageNet). They go to the user's own cache instead; labels an
    administrator cached next to the data are read from there."""
    data_dir = tmp_path / "read_only"
    shutil.copytree(tiny_tfds, data_dir)
    monkeypatch.setattr(sources, "DEFAULT_CACHE", str(tmp_path / "cache"))
    (data_dir / "jaxood_labels").write_text("")  # no folder can be made there, even by root (as tests run in CI)
    labels = TfdsSource("tiny_shapes", "train", data_dir=str(data_dir)).labels()
    own = tmp_path / "cache" / "tfds" / re.sub(r"[^\w.-]+", "_", str(data_dir)) / "jaxood_labels"
    (cached,) = own.iterdir()
    np.testing.assert_array_equal(np.load(cached), labels)
    (data_dir / "jaxood_labels").unlink()
    shutil.move(own, data_dir / "jaxood_labels")  # as an administrator would have cached them
    np.testing.assert_array_equal(TfdsSource("tiny_shapes", "train", data_dir=str(data_dir)).labels(), labels)
    assert not own.exists()  # read from next to the data, not recomputed


def test_a_file_written_whole_keeps_the_old_one_until_the_new_one_is_complete(tmp_path):
    path = tmp_path / "config.json"
    path.write_text("old")
    with pytest.raises(RuntimeError), write_whole(str(path)) as f:
        f.write("half of the new")
        raise RuntimeError("killed mid-write")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["config.json"]  # no partial file left
    with write_whole(str(path)) as f:
        f.write("new")
    assert path.read_text() == "new" and os.listdir(tmp_path) == ["config.json"]


def test_tfds_prompts_use_coop_class_names(tmp_path):
    """TFDS's EuroSAT labels went into prompts as "a photo of a AnnualCrop.", Caltech101's as "airplanes": CoOp's
    names are what the few-shot papers measured. TFDS's own label lists (read without the data); other datasets keep
    theirs."""
    import tensorflow_datasets as tfds

    from jaxood.data.sources import tfds_prompt_names

    def labels(name):
        return tfds.builder(name, data_dir=str(tmp_path)).info.features["label"].names

    assert tfds_prompt_names("eurosat", labels("eurosat")) == (
        "Annual Crop Land", "Forest", "Herbaceous Vegetation Land", "Highway or Road", "Industrial Buildings",
        "Pasture Land", "Permanent Crop Land", "Residential Buildings", "River", "Sea or Lake",
    )  # fmt: skip
    caltech = tfds_prompt_names("caltech101", labels("caltech101"))
    assert len(caltech) == 102 and caltech[:5] == ("accordion", "airplane", "anchor", "ant", "background google")
    assert {"face", "faces easy", "leopard", "motorbike", "car side"} <= set(caltech)
    assert not {"airplanes", "faces", "leopards", "motorbikes"} & set(caltech)
    assert tfds_prompt_names("food101", labels("food101"))[:2] == ("apple pie", "baby back ribs")
    for name, count in (("sun397", 397), ("places365_small", 365), ("cars196", 196)):  # whole lists stay distinct
        names = tfds_prompt_names(name, labels(name))
        assert len(set(names)) == len(names) == count and not any("/" in n for n in names if name != "cars196")


def test_tfds_missing_dataset_fails_offline(tmp_path, monkeypatch):
    import socket

    def no_network(*args, **kwargs):
        raise AssertionError("jaxood tried the network for a dataset it should only look for on disk")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    from jaxood.data.datasets import make_source

    data = tmp_path / "data"
    with pytest.raises(DatasetMissing, match=r"'cifar10' is not prepared .*jaxood.data.prepare --dataset=cifar10"):
        TfdsSource("cifar10", "train", data_dir=str(data))
    # Named by its place in the config, with how to point it at a copy prepared elsewhere (not prepare's --data_dir).
    spec = {"kind": "tfds", "name": "cifar10", "split": "test", "data_dir": str(data)}
    with pytest.raises(DatasetMissing, match=r"^config\.id_dataset: TFDS dataset 'cifar10' is not prepared in ") as e:
        make_source(spec, "id_dataset")
    assert str(e.value).endswith("If it is prepared in another folder, give that as the dataset's data_dir or as "
                                 "TFDS_DATA_DIR")  # fmt: skip
    with pytest.raises(DatasetMissing, match=r"ILSVRC2012_img_train.tar .*downloads/manual"):
        TfdsSource("imagenet2012", "validation", data_dir=str(data))
    # The version asked for is the one to prepare: the hint named imagenet2012 alone, whose newest version left it
    # missing still.
    with pytest.raises(DatasetMissing, match=r"downloads/manual, then run `python -m jaxood.data.prepare "
                       r"--dataset=imagenet2012:5\.0\.0 --data_dir="):  # fmt: skip
        TfdsSource("imagenet2012:5.0.0", "validation", data_dir=str(data))
    with pytest.raises(DatasetMissing, match=r"'cifar_ten' .*: Dataset cifar_ten not found") as unknown:
        TfdsSource("cifar_ten", "train", data_dir=str(data))
    assert len(str(unknown.value).splitlines()) == 1  # not TFDS's list of every dataset it knows


def test_tfds_bucket_data_dir_is_left_to_tfds(monkeypatch):
    import tensorflow_datasets as tfds

    asked = []

    def builder(name, data_dir):
        asked.append(data_dir)
        raise RuntimeError("no bucket from here")

    monkeypatch.setattr(tfds, "builder", builder)  # TPU pods keep TFDS_DATA_DIR in a bucket; no local pre-check
    with pytest.raises(DatasetMissing, match=r"'cifar10' in gs://bucket/tfds: no bucket from here"):
        TfdsSource("cifar10", "train", data_dir="gs://bucket/tfds")
    assert asked == ["gs://bucket/tfds"]


def _fake_ilsvrc2012(manual_dir):
    """ILSVRC2012 archives in the real layout, 9 + 5 images: train = a tar of per-synset tars, val = flat JPEGs."""
    import io
    import tarfile

    from tensorflow_datasets.datasets.imagenet2012 import imagenet_common

    synsets = open(imagenet_common.label_names_file(), encoding="utf-8").read().split()

    def add(tar, name, seed):
        data = io.BytesIO()
        if name.endswith(".JPEG"):
            Image.fromarray(np.random.RandomState(seed).randint(0, 255, (30, 40, 3), np.uint8)).save(data, "JPEG")
        else:  # a synset's tar
            with tarfile.open(fileobj=data, mode="w") as inner:
                for i in range(3):
                    add(inner, f"{name[:-4]}_{i}.JPEG", seed + i)
        info = tarfile.TarInfo(name)
        info.size = data.tell()
        data.seek(0)
        tar.addfile(info, data)

    os.makedirs(manual_dir)
    with tarfile.open(os.path.join(manual_dir, "ILSVRC2012_img_train.tar"), "w") as train:
        for c in (0, 1, 999):
            add(train, f"{synsets[c]}.tar", 10 * c)
    with tarfile.open(os.path.join(manual_dir, "ILSVRC2012_img_val.tar"), "w") as val:
        for i in range(1, 6):
            add(val, f"ILSVRC2012_val_{i:08d}.JPEG", 10_000 + i)


def test_prepare_imagenet_from_manual_archives(tmp_path, capsys, monkeypatch):
    """The README's ImageNet steps on tiny archives: without TensorFlow the one fix left is named (CI); with it
    (`pip install tensorflow-cpu`), the split is prepared and read back without TensorFlow's help. The folders are
    given as a shell leaves `--manual_dir=~/manual`: the archives there were reported missing."""
    import importlib.util

    from jaxood.data import prepare

    monkeypatch.setenv("HOME", str(tmp_path))
    data_dir = tmp_path / "tfds"
    argv = ["--dataset=imagenet2012", "--data_dir=~/tfds"]
    assert report_user_errors(prepare.main, prepare.KEPT)(argv) == 1
    err = capsys.readouterr().err
    assert f"into {data_dir}/downloads/manual" in err and "ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar" in err
    assert not os.path.exists(data_dir / "imagenet2012")  # refused before TFDS started

    _fake_ilsvrc2012(str(tmp_path / "manual"))
    argv.append("--manual_dir=~/manual")
    if importlib.util.find_spec("tensorflow") is None:
        assert report_user_errors(prepare.main, prepare.KEPT)(argv) == 1
        assert "needs the Python module 'tensorflow': `pip install tensorflow-cpu`" in capsys.readouterr().err
        return
    assert report_user_errors(prepare.main, prepare.KEPT)(argv) == 0
    val = TfdsSource("imagenet2012", "validation", data_dir=str(data_dir))
    # validation labels come from TFDS's list for ILSVRC2012_val_00000001..5; train labels from the synset tars
    assert sorted(val.labels().tolist()) == [65, 230, 516, 809, 970] and val.class_names[:2] == ("tench", "goldfish")
    train = TfdsSource("imagenet2012", "train", data_dir=str(data_dir)).labels()
    assert sorted(train.tolist()) == [0, 0, 0, 1, 1, 1, 999, 999, 999]


def _no_network(monkeypatch):
    """No address for any host, and no download tried (a test fails that tries one)."""
    import socket

    import requests

    def no_address(host, *args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    def no_download(*args, **kwargs):
        raise AssertionError("prepare tried to download")

    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(socket, "getaddrinfo", no_address)
    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", no_download)


def test_prepare_errors_name_the_fix(tmp_path, monkeypatch, capsys):
    import socket

    import requests

    from jaxood.data import prepare

    def run(*argv):
        # a --data_dir in argv replaces this one (the last given counts)
        assert report_user_errors(prepare.main, prepare.KEPT)([f"--data_dir={tmp_path}", *argv]) == 1
        return capsys.readouterr().err

    err = run("--dataset=cifar_ten")
    assert "TFDS cannot open the dataset 'cifar_ten'" in err and "Did you mean" in err
    assert len(err.splitlines()) == 2  # the message and the JAXOOD_TRACEBACK hint, not every dataset TFDS knows
    assert "jaxood's configs read" not in err
    # TFDS's guess for `imagenet` is imagenette (10 of ImageNet's classes); jaxood's ImageNet is named after it
    err = run("--dataset=imagenet")
    line = err.splitlines()[0]
    assert line.startswith("error: TFDS cannot open the dataset 'imagenet' in ") and line.endswith(
        "; jaxood's ImageNet configs read imagenet2012"
    ), err
    # Empty flags (a shell variable not set): TFDS's "Parsing builder name string failed", or a data_dir of "".
    err = run("--dataset=")
    assert err.startswith("error: --dataset is empty (a shell variable that is not set, as in --dataset=$NAME?): give "
                          "a TFDS name, such as cifar10 or imagenet2012\n")  # fmt: skip
    err = run("--dataset=cifar10", "--data_dir=")
    assert err.startswith("error: --data_dir is empty (a shell variable that is not set, as in --data_dir=$NAME?): "
                          "give the folder to prepare it in")  # fmt: skip

    # No address for the dataset's host: said at once, where TFDS retried for 3.4 minutes before its error.
    _no_network(monkeypatch)
    # A data_dir that cannot be made or written, named before any download (TFDS's traceback came after one).
    err = run("--dataset=cifar10", "--data_dir=/proc/jaxood")
    assert err.startswith("error: --data_dir /proc/jaxood cannot be written (") and "TFDS writes the downloads" in err
    with monkeypatch.context() as read_only:  # os.access as a user other than root sees a read-only folder
        read_only.setattr(os, "access", lambda path, mode: False)
        assert "(this user may not write it)" in run("--dataset=cifar10", f"--data_dir={tmp_path / 'ro'}")
    err = run("--dataset=cifar10")
    assert "cannot download cifar10 (no address for www.cs.toronto.edu: no network): preparing it needs network" in err
    assert f"copy the folder {tmp_path}/cifar10/" in err

    # A proxy resolves the names, downloads already in place need none, and a host with an address is tried:
    # each goes on to TFDS's download, whose failure is said the same way.
    def offline(*args, **kwargs):
        raise requests.ConnectionError("Failed to resolve 'www.cs.toronto.edu'")

    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", offline)
    with monkeypatch.context() as proxied:
        proxied.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
        assert "cannot download cifar10 (Failed to resolve 'www.cs.toronto.edu'): preparing" in run("--dataset=cifar10")
    with monkeypatch.context() as resolved:
        resolved.setattr(socket, "getaddrinfo", lambda *args, **kwargs: [])
        assert "cannot download cifar10 (Failed to resolve 'www.cs.toronto.edu'): preparing" in run("--dataset=cifar10")
    (tmp_path / "downloads").mkdir(exist_ok=True)
    (tmp_path / "downloads" / "www.cs.toronto.edu_kriz_cifar-10-binary.tar.gz").write_bytes(b"")
    assert "cannot download cifar10 (Failed to resolve 'www.cs.toronto.edu'): preparing" in run("--dataset=cifar10")


class TinyTfrecords(tfds.core.GeneratorBasedBuilder):
    """A dataset in TFDS's catalogue (its builder registered by its code, as cifar10's is), which
    `tests/assets/tfds_tfrecord` holds as TFDS 4.9.10 with TensorFlow 2.21.0 prepared it by default, as tfrecord
    files (`TinyTfrecords(data_dir=...).download_and_prepare()`)."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        features = {
            "image": tfds.features.Image(shape=(None, None, 3)),
            "label": tfds.features.ClassLabel(num_classes=2),
        }
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(features))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        for i in range(5):
            yield i, {"image": np.full((4, 3, 3), 50 * i, np.uint8), "label": int(i >= 3)}


def _prepare(capsys, *argv) -> tuple[int, str]:
    from jaxood.data import prepare

    status = report_user_errors(prepare.main, prepare.KEPT)(list(argv))
    out, err = capsys.readouterr()
    return status, out + err


def test_prepare_of_a_dataset_prepared_already_asks_for_nothing(tiny_tfds, tmp_path, monkeypatch, capsys):
    """A dataset prepared already (its archives deleted since, or offline, as a job's setup step on a node without
    network) was asked for again: ImageNet's archives, downloaded by hand, or network for cifar10. A data_dir given a
    level above the one it is prepared in (`/data` for `/data/tensorflow_datasets`) set off a second download. One
    with a file gone was prepared already for TFDS, where the reader asked to prepare it again."""
    _no_network(monkeypatch)
    shutil.copytree(tiny_tfds, tmp_path / "tiny", dirs_exist_ok=True)
    folder = tmp_path / "tiny" / "tiny_shapes" / "1.0.0"
    assert _prepare(capsys, "--dataset=tiny_shapes", f"--data_dir={tmp_path / 'tiny'}") == (
        0, f"tiny_shapes is prepared already, in {folder}: nothing to do\n"
    )  # fmt: skip
    (shard,) = folder.glob("*.array_record-*")
    shard.unlink()
    assert _prepare(capsys, "--dataset=tiny_shapes", f"--data_dir={tmp_path / 'tiny'}")[1].startswith(
        f"error: tiny_shapes is prepared in {folder}, but 1 of its files are gone ({shard.name}): restore them, or "
        "delete that folder and run this again to prepare the dataset anew\n"
    )
    data_dir = tmp_path / "tensorflow_datasets"
    for name in ("cifar10", "imagenet2012"):  # as TFDS writes a prepared dataset's description
        builder = tfds.builder(name, data_dir=str(data_dir), file_format="array_record")
        os.makedirs(builder.data_dir)
        builder.info.write_to_directory(builder.data_dir)
        assert _prepare(capsys, f"--dataset={name}", f"--data_dir={data_dir}") == (
            0, f"{name} is prepared already, in {builder.data_dir}: nothing to do\n"
        )  # fmt: skip
    status, said = _prepare(capsys, "--dataset=cifar10", f"--data_dir={tmp_path}")
    assert status == 1 and said.startswith(
        f"error: cifar10 is prepared already, in {data_dir}, not in --data_dir {tmp_path}: give --data_dir={data_dir} "
        f"(this finds it prepared there and downloads nothing), and {data_dir} as the dataset's data_dir or as "
        f"TFDS_DATA_DIR to read it. To prepare another copy in {tmp_path}, make the folder {tmp_path}/cifar10 first\n"
    )
    (tmp_path / "cifar10").mkdir()  # another copy, as said: on to its download
    status, said = _prepare(capsys, "--dataset=cifar10", f"--data_dir={tmp_path}")
    assert status == 1 and "error: cannot download cifar10 (no address for www.cs.toronto.edu: no network)" in said
    # Prepared in a file format that is neither read by index nor TFDS's default, which prepare copies: named.
    builder = tfds.builder("cifar10", data_dir=str(tmp_path / "riegeli"), file_format="riegeli")
    os.makedirs(builder.data_dir)
    builder.info.write_to_directory(builder.data_dir)
    status, said = _prepare(capsys, "--dataset=cifar10", f"--data_dir={tmp_path / 'riegeli'}")
    assert status == 1 and said.startswith(f"error: cifar10 is prepared in {builder.data_dir} as riegeli files, "
                                           "which jaxood does not read (this copies tfrecord files alone to "
                                           "array_record): prepare it again in an empty folder")  # fmt: skip
    again = r"prepare it again in an empty folder \(`python -m jaxood\.data\.prepare --dataset=cifar10 --data_dir="
    with pytest.raises(DatasetMissing, match="prepared as riegeli files, which jaxood does not read: " + again):
        TfdsSource("cifar10", "test", data_dir=str(tmp_path / "riegeli"))


def test_prepare_leaves_a_dataset_tfds_wrote_as_parquet_as_it_is(tmp_path, capsys):
    """TFDS reads a record of a dataset it wrote as parquet by its index, as it reads array_record, and so does
    jaxood's reader; prepare refused it as a format jaxood does not read."""
    _prepare_tiny_versions(str(tmp_path), file_format="parquet", name="TinyParquet")  # tiny_versions: registered here
    folder = tmp_path / "tiny_parquet" / "1.0.0"
    assert _prepare(capsys, "--dataset=tiny_parquet", f"--data_dir={tmp_path}") == (
        0, f"tiny_parquet is prepared already, in {folder}: nothing to do\n"
    )  # fmt: skip
    assert sorted(TfdsSource("tiny_parquet", "train", data_dir=str(tmp_path)).labels()) == [0, 0, 1]


def _tfrecord_dataset(data_dir: pathlib.Path) -> pathlib.Path:
    """`TinyTfrecords` as TFDS prepared it (`tests/assets/tfds_tfrecord`) copied into `data_dir`: its version folder."""
    shutil.copytree(pathlib.Path(__file__).parent / "assets" / "tfds_tfrecord", data_dir, dirs_exist_ok=True)
    return data_dir / "tiny_tfrecords" / "1.0.0"


def _framed_records(dataset, path, records, progress):
    """A tfrecord file's records read by its framing (each a length, its checksum, the record, its checksum), the
    checksums unchecked, for `jaxood.data.prepare._records_of` (TensorFlow's reading) where TensorFlow is not."""
    import struct

    data, at, count = pathlib.Path(path).read_bytes(), 0, 0
    while at < len(data):
        (length,) = struct.unpack_from("<Q", data, at)
        yield count, data[at + 12 : at + 12 + length]
        at, count = at + 12 + length + 4, count + 1
        progress.update()
    assert count == records


def test_a_dataset_tfds_prepared_as_tfrecord_gets_array_record_copies_that_jaxood_reads(tmp_path, monkeypatch, capsys):
    """TFDS prepares a dataset as tfrecord files by default, which jaxood does not read: its reader asked to run
    `jaxood.data.prepare`, which failed with TFDS's "File format is already set to tfrecord". It now adds array_record
    copies beside them (with TensorFlow, which reads them: without it, the test reads them by their framing), which
    jaxood reads through a builder of the dataset's folder: the catalogue's builder does not see them."""
    import importlib.util

    from jaxood.data import prepare

    folder = _tfrecord_dataset(tmp_path)
    as_prepared = {name: (folder / name).read_bytes() for name in os.listdir(folder)}
    argv = ("--dataset=tiny_tfrecords", f"--data_dir={tmp_path}")
    refused = r"prepared as tfrecord files, which jaxood does not read: `python -m jaxood\.data\.prepare --dataset="
    with pytest.raises(DatasetMissing, match=refused + r"tiny_tfrecords --data_dir=.*` adds array_record copies"):
        TfdsSource("tiny_tfrecords", "train", data_dir=str(tmp_path))
    if importlib.util.find_spec("tensorflow") is None:
        status, said = _prepare(capsys, *argv)
        assert status == 1 and "needs the Python module 'tensorflow': `pip install tensorflow-cpu`" in said
    else:  # a damaged file is named
        damaged = tmp_path / "damaged"
        shutil.copytree(tmp_path, damaged, ignore=shutil.ignore_patterns("damaged"))
        shard = damaged / "tiny_tfrecords" / "1.0.0" / "tiny_tfrecords-train.tfrecord-00000-of-00001"
        shard.write_bytes(shard.read_bytes()[:300])
        status, said = _prepare(capsys, "--dataset=tiny_tfrecords", f"--data_dir={damaged}")
        assert status == 1 and f"error: tiny_tfrecords's file {shard} is damaged (past record 2: " in said
        assert sorted(os.listdir(shard.parent)) == sorted(as_prepared)  # no copy left half-written
    assert {name: (folder / name).read_bytes() for name in os.listdir(folder)} == as_prepared  # nothing written
    reader, copied = (prepare._records_of if importlib.util.find_spec("tensorflow") else _framed_records), []
    monkeypatch.setattr(prepare, "_records_of", lambda *args: copied.append(args[1].name) or reader(*args))
    status, said = _prepare(capsys, *argv)
    assert status == 0 and said.endswith(f"added array_record files to tiny_tfrecords in {folder}\n")
    # Stopped after the copy, before the dataset_info.json that lists it: the same command copies it no second time.
    (folder / "dataset_info.json").write_bytes(as_prepared["dataset_info.json"])
    assert _prepare(capsys, *argv)[0] == 0 and copied == ["tiny_tfrecords-train.tfrecord-00000-of-00001"]
    (folder / "tiny_tfrecords-train.array_record-00000-of-00001").unlink()  # a copy deleted as damaged: made again
    status, said = _prepare(capsys, *argv)
    assert status == 0 and said.startswith(f"tiny_tfrecords is prepared in {folder} as tfrecord files, which jaxood "
                                           "does not read: adding array_record copies of 1 of them beside them (as "
                                           "much disk again)\n")  # fmt: skip
    source = TfdsSource("tiny_tfrecords", "train", data_dir=str(tmp_path))
    assert len(copied) == 2 and len(source) == 5
    read = sorted(
        (np.asarray(Image.open(io.BytesIO(image))).tolist(), label) for image, label in map(source.read, range(5))
    )
    assert read == [(np.full((4, 3, 3), 50 * i).tolist(), int(i >= 3)) for i in range(5)]
    assert _prepare(capsys, *argv) == (0, f"tiny_tfrecords is prepared already, in {folder}: nothing to do\n")


def test_ctrl_c_during_prepare_says_what_it_kept_and_the_same_command_goes_on(tmp_path, monkeypatch, capsys):
    """Ctrl-C stopping prepare's copy said "a training run resumes from its last checkpoint", every command's one
    message for a stop; it now says what prepare keeps, and keeps no copy half-written."""
    from jaxood.data import prepare

    folder = _tfrecord_dataset(tmp_path)
    as_prepared = sorted(os.listdir(folder))

    def stopped_at_record_2(*args):
        for index, record in _framed_records(*args):
            if index == 2:
                raise KeyboardInterrupt
            yield index, record

    monkeypatch.setattr(prepare, "_records_of", stopped_at_record_2)
    argv = ("--dataset=tiny_tfrecords", f"--data_dir={tmp_path}")
    status, said = _prepare(capsys, *argv)
    assert status == 130 and said.endswith(
        "\nstopped by Ctrl-C. Downloads finished before it are kept in the data_dir's downloads folder, and so are "
        "whole array_record copies of tfrecord files: the same command goes on from them (a preparation TFDS had "
        "begun starts again).\n"
    )
    assert sorted(os.listdir(folder)) == as_prepared
    monkeypatch.setattr(prepare, "_records_of", _framed_records)
    assert _prepare(capsys, *argv)[1].endswith(f"added array_record files to tiny_tfrecords in {folder}\n")
    assert len(TfdsSource("tiny_tfrecords", "train", data_dir=str(tmp_path))) == 5


# ------------------------------------------------------------- preprocessing


@pytest.mark.parametrize("size", [(300, 257), (500, 375), (375, 500), (500, 333)])
def test_clip_eval_matches_hf_image_processor(tmp_path, size):
    """500 x 375 is ImageNet's commonest size; its longer side scales to 298.67, which Hugging Face and torchvision
    round down (jaxood rounded it up: a 299-pixel side and a crop shifted by one pixel)."""
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    write_image(tmp_path / "a.jpg", 1, size=size)
    img = preprocess.decode(str(tmp_path / "a.jpg"))
    want = CLIPImageProcessorPil()(images=[img], return_tensors="np")["pixel_values"][0].transpose(1, 2, 0)
    got = preprocess.clip_eval(224)(img)
    assert got.shape == (224, 224, 3) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=2e-2)  # one uint8 rounding step / std
    assert np.mean(np.abs(got - want)) < 1e-3


@pytest.mark.parametrize("size", [(500, 375), (375, 500), (640, 427), (500, 333), (224, 300), (1000, 10)])
def test_shorter_side_resize_gives_hf_and_torchvision_sizes(size):
    from transformers.image_transforms import get_resize_output_image_size

    got = preprocess.ResizeShorter(224)(Image.new("RGB", size)).size
    want_h, want_w = get_resize_output_image_size(np.zeros((size[1], size[0], 3)), 224, default_to_square=False)
    assert got == (want_w, want_h)


def test_an_image_too_thin_to_resize_is_counted_as_undecodable(tmp_path, monkeypatch):
    """A 1 x 4,000 image resized to 224 on its shorter side is 224 x 896,000 pixels, past what PIL opens: it was
    resized all the same (a 1 x 10,000 one took 2 GB), where PIL refuses to open an image of that size.
    Now it is undecodable: masked out and reported with its name and the fix, and the loader goes on."""
    with pytest.raises(preprocess.Undecodable, match=r"^this 1x4000 image resized to 224 on its shorter side would "
                       r"be 224x896000, 200,704,000 pixels, past what PIL opens \(twice Image\.MAX_IMAGE_PIXELS, "
                       r"178,956,970\): crop it nearer to square$"):  # fmt: skip
        preprocess.ResizeShorter(224)(Image.new("RGB", (1, 4000)))
    folder = tmp_path / "set" / "a"
    folder.mkdir(parents=True)
    write_image(folder / "square.png", 0, size=(30, 20))
    write_image(folder / "thin.png", 1, size=(100, 1))  # 1600 x 16 at 16: past a limit of 2 x 700 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 700)
    loader = Loader(FolderSource(str(tmp_path / "set")), preprocess.clip_eval(16), global_batch=2)
    (batch,) = loader.evaluate()
    assert np.asarray(batch["mask"]).tolist() == [True, False]
    assert loader.report() == (
        f"1 undecodable image(s) skipped (masked out): #1 {folder / 'thin.png'}: this 100x1 image resized to 16 on its "
        "shorter side would be 1600x16, 25,600 pixels, past what PIL opens (twice Image.MAX_IMAGE_PIXELS, 1,400): crop "
        "it nearer to square"
    )
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # a user who lifts PIL's limit lifts this one too
    assert preprocess.clip_eval(16)(Image.new("RGB", (100, 1))).shape == (16, 16, 3)


def test_centre_crop_offsets_round_as_torchvisions():
    """A side 75 pixels over the crop: torchvision (OpenAI CLIP's transform) starts it at round(37.5) = 38."""
    pixels = np.random.default_rng(0).integers(0, 256, (224, 299, 3), np.uint8)
    got = np.asarray(preprocess.CenterCrop(224)(Image.fromarray(pixels)))
    np.testing.assert_array_equal(got, pixels[:, 38:262])


def test_train_augmentation_deterministic_and_varied(tmp_path):
    write_image(tmp_path / "a.png", 2, size=(120, 90))
    img = preprocess.decode(str(tmp_path / "a.png"))
    tf = preprocess.clip_train(32, scale=(0.5, 1.0))
    a = tf(img, np.random.default_rng(0))
    b = tf(img, np.random.default_rng(0))
    c = tf(img, np.random.default_rng(1))
    assert a.shape == (32, 32, 3)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 0.1


def test_random_resized_crop_area_in_scale_range():
    """A constant image with one marked pixel column tells nothing; use coordinates instead:
    crop an image whose pixel values encode their position and check the crop's extent."""
    h, w = 100, 200
    yy, xx = np.mgrid[0:h, 0:w]
    coords = np.stack([xx * 255 // (w - 1), yy * 255 // (h - 1), np.zeros_like(xx)], -1).astype(np.uint8)
    img = Image.fromarray(coords)
    op = preprocess.RandomResizedCrop(50, scale=(0.25, 0.5))
    for seed in range(20):
        out = np.asarray(op(img, np.random.default_rng(seed)), np.float32)
        width = (out[:, :, 0].max() - out[:, :, 0].min()) / 255 * (w - 1)
        height = (out[:, :, 1].max() - out[:, :, 1].min()) / 255 * (h - 1)
        area = (width + 1) * (height + 1) / (h * w)
        assert 0.2 < area < 0.56, (seed, area)


@pytest.mark.parametrize("w, h, box", [(1000, 10, (493, 0, 506, 10)), (10, 1000, (0, 493, 10, 506))])
def test_random_resized_crop_falls_back_to_the_largest_centred_crop_within_the_ratios(w, h, box):
    """No crop of the ratio range reaches the smallest area of an image this long (at most 13 x 10 at 4/3, 1.3 % of
    it, < 8 %): after its 10 tries, torchvision's fallback, the centred crop of the nearest ratio, 13 x 10 (round(10
    * 4/3)) at (1000 - 13) // 2 = 493, resized."""
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8))
    want = np.asarray(img.resize((16, 16), preprocess.BICUBIC, box=box))
    crop = preprocess.RandomResizedCrop(16)
    for seed in range(5):
        np.testing.assert_array_equal(np.asarray(crop(img, np.random.default_rng(seed))), want)


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_16_bit_grey_images_keep_their_tones(fmt):
    """A 16-bit grey image decodes to the 8-bit grey of its top byte, as PIL reads 16-bit colour (48-bit RGB PNGs);
    PIL's convert("RGB") clips it at 255 instead, so nearly every pixel came out white."""
    grey16 = np.arange(0, 65536, 257, dtype=np.uint16).reshape(16, 16)  # 0, 257, ..., 65535: top bytes 0..255
    buf = io.BytesIO()
    Image.fromarray(grey16).save(buf, fmt)
    rgb = np.asarray(preprocess.decode(buf.getvalue()))
    np.testing.assert_array_equal(rgb, np.repeat((grey16 >> 8).astype(np.uint8)[..., None], 3, -1))


def test_32_bit_grey_images_keep_their_tones_or_are_undecodable_with_their_range():
    """A 32-bit integer grey image ("I", as Pillow 10 opened 16-bit PNGs) was clipped at 255 by convert("RGB"),
    nearly white; a float one in 0-1 came out black. Now: in 0-255 as it is, in 0-65535 as 16-bit grey (its top
    byte), otherwise (a float image, or one outside 0-65535) undecodable, with its range: counted and reported."""

    def tiff(pixels):
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, "TIFF")
        assert Image.open(io.BytesIO(buf.getvalue())).mode == ("F" if pixels.dtype.kind == "f" else "I")
        return buf.getvalue()

    grey = np.arange(256, dtype=np.int32).reshape(16, 16)
    np.testing.assert_array_equal(np.asarray(preprocess.decode(tiff(grey)))[..., 0], grey)
    np.testing.assert_array_equal(np.asarray(preprocess.decode(tiff(grey * 257)))[..., 0], grey)  # 16-bit's top byte
    for pixels, shown in [(grey - 1, "integer grey pixels (-1 to 254)"), (grey * 65536, "integer grey pixels (0 to"),
                          (grey / 255.0, "float grey pixels (0 to 1)")]:  # fmt: skip
        with pytest.raises(preprocess.Undecodable, match=re.escape(f"record: 32-bit {shown}") + ".* save the image "):
            preprocess.decode(tiff(pixels.astype(np.float32 if pixels.dtype.kind == "f" else np.int32)))


def test_undecodable_bytes(monkeypatch):
    with pytest.raises(preprocess.Undecodable):
        preprocess.decode(b"\x89PNG but not really")
    # An image PIL refuses as a decompression bomb (past twice MAX_IMAGE_PIXELS) is undecodable too: counted and
    # reported, not an error that stops the loader.
    buf = io.BytesIO()
    Image.new("RGB", (30, 20)).save(buf, "PNG")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 250)
    with pytest.raises(preprocess.Undecodable, match=r"record: Image size \(600 pixels\) exceeds limit"):
        preprocess.decode(buf.getvalue())


# ------------------------------------------------------------------ sampling


def test_few_shot_exact_and_deterministic():
    labels = np.repeat(np.arange(10), 30)
    np.random.RandomState(5).shuffle(labels)
    labels[:7] = -1  # unlabelled / OOD examples are never picked
    for k in (1, 2, 4, 8, 16):
        a = sampling.few_shot_indices(labels, k, seed=3)
        assert np.bincount(labels[a], minlength=10).tolist() == [k] * 10
        np.testing.assert_array_equal(a, sampling.few_shot_indices(labels, k, seed=3))
    assert not np.array_equal(sampling.few_shot_indices(labels, 4, 0), sampling.few_shot_indices(labels, 4, 1))
    assert len(sampling.few_shot_indices(labels, None)) == 300 - 7
    with pytest.raises(ValueError, match=r"^training on every image: 1 of 11 classes has no example \(class \(ex"):
        sampling.few_shot_indices(labels, None, num_classes=11)  # a class without an image trained on nothing
    with pytest.raises(ValueError, match=r"10 of 10 classes have fewer than 40 examples \(class \(examples\): 0 \("):
        sampling.few_shot_indices(labels, 40)
    # A class with no example at all (a partly prepared dataset) is short too, once the class count is known.
    assert len(sampling.few_shot_indices(labels, 4, num_classes=10)) == 40
    with pytest.raises(ValueError, match=r"2 of 12 classes .*: 10 \(0\), 11 \(0\)\); check that the training set"):
        sampling.few_shot_indices(labels, 4, num_classes=12)


def test_few_shot_sampling_passes_over_undecodable_picks_for_the_next_of_their_class():
    """An undecodable pick was masked out of every step, and its class trained on fewer shots. Now each class takes
    its first `shots` decodable examples in the seed's order (a seeded permutation per class, drawn in class order);
    a class with fewer keeps those it has, and one with none is refused, naming it. When all decode, the picks are
    those of the sampler without the check."""
    labels = np.array([0] * 6 + [1] * 5 + [2] * 4 + [-1])
    rng = np.random.RandomState(7)
    orders = [np.flatnonzero(labels == c)[rng.permutation(n)] for c, n in enumerate((6, 5, 4))]
    calls = []

    def decodes_except(bad):
        def decodes(indices):
            calls.append(list(indices))
            return ~np.isin(indices, bad)

        return decodes

    plain = sampling.few_shot_indices(labels, 3, seed=7)
    np.testing.assert_array_equal(plain, np.sort(np.concatenate([o[:3] for o in orders])))
    np.testing.assert_array_equal(sampling.few_shot_indices(labels, 3, seed=7, decodes=decodes_except([15])), plain)
    assert len(calls) == 1 and sorted(calls[0]) == plain.tolist()  # one call over every class's picks
    # Class 0's first and its first replacement undecodable; class 1's second; class 2 left with two of four.
    bad = [orders[0][0], orders[0][3], orders[1][1], orders[2][0], orders[2][2]]
    calls.clear()
    got = sampling.few_shot_indices(labels, 3, seed=7, decodes=decodes_except(bad))
    want = [orders[0][[1, 2, 4]], orders[1][[0, 2, 3]], orders[2][[1, 3]]]
    np.testing.assert_array_equal(got, np.sort(np.concatenate(want)))
    assert [sorted(c) for c in calls] == [
        sorted(np.concatenate([o[:3] for o in orders])),
        sorted([orders[0][3], orders[1][3], orders[2][3]]),  # each class's next, for the picks that failed
        [orders[0][4]],
    ]
    # A class with no decodable example trains on nothing: refused, naming it.
    with pytest.raises(InvalidInput, match=r"^3-shot sampling: 1 of 3 classes has no decodable example \(class: 2\); "
                       r"replace its undecodable images \(the log names them\)$"):  # fmt: skip
        sampling.few_shot_indices(labels, 3, seed=7, decodes=decodes_except(orders[2]))


def test_stratified_shots_take_each_class_its_share_as_scikit_learns_split_does():
    """SOT-GLP's released code picks its few shots with scikit-learn's `StratifiedShuffleSplit(train_size=shots *
    classes)`: each class gives its share of those in proportion to its size, not `shots` of each (a class smaller
    than `shots` included). `sampling="stratified"` takes as many of each class as that split does (the images are
    jaxood's seeded picks), remainders tied broken by the seed; a class with no example is refused as before, and
    so are more shots than the set has images."""
    from sklearn.model_selection import StratifiedShuffleSplit

    rng = np.random.RandomState(7)
    sizes = rng.randint(5, 200, size=37)
    labels = np.repeat(np.arange(37), sizes)
    rng.shuffle(labels)
    labels = np.concatenate([[-1] * 5, labels])  # unlabelled examples are never picked
    labelled = labels[labels >= 0]
    for shots in (1, 2, 4, 8, 16):
        # No two classes' remainders tie here, so the split's counts are the only ones.
        assert len(set((sizes * shots * 37 % sizes.sum()).tolist())) == 37
        got = sampling.few_shot_indices(labels, shots, seed=3, sampling="stratified")
        split = StratifiedShuffleSplit(n_splits=1, train_size=shots * 37, random_state=3)
        want, _ = next(split.split(labelled, labelled))
        assert np.bincount(labels[got], minlength=37).tolist() == np.bincount(labelled[want], minlength=37).tolist()
        assert len(np.unique(got)) == shots * 37 and np.all(labels[got] >= 0)
        np.testing.assert_array_equal(got, sampling.few_shot_indices(labels, shots, 3, sampling="stratified"))
    # Shares 1.8, 0.6, 0.6 of 3: class 0 gets 2, and the tie between classes 1 and 2 goes by the seed.
    quotas = {tuple(sampling.shot_quota(np.array([6, 2, 2]), 1, seed, "stratified")) for seed in range(10)}
    assert quotas == {(2, 1, 0), (2, 0, 1)}
    assert sampling.shot_quota(np.array([6, 2, 2]), 1, 0).tolist() == [1, 1, 1]  # "per_class" by default
    with pytest.raises(InvalidInput, match=r"^stratified 2-shot sampling: 1 of 38 classes has no example \(class "
                       r"\(examples\): 37 \(0\)\); check that the training set is complete$"):  # fmt: skip
        sampling.few_shot_indices(labels, 2, num_classes=38, sampling="stratified")
    with pytest.raises(InvalidInput, match=rf"^stratified 200-shot sampling takes 200 x 37 classes = 7400 examples, "
                       rf"more than the training set's {sizes.sum()}: lower --config.shots, or set it to 0 to train "
                       r"on every image$"):  # fmt: skip
        sampling.few_shot_indices(labels, 200, sampling="stratified")
    with pytest.raises(
        InvalidInput, match=r"^few-shot sampling must be one of 'per_class' or 'stratified', got 'balanced'"
    ):
        sampling.few_shot_indices(labels, 2, sampling="balanced")


def test_stratified_shots_pass_over_undecodable_picks_within_each_class():
    """With the decode check, a stratified pick that does not decode is passed over for the next of its class, as
    with `shots` per class; a class whose share rounds to 0 gives none and is not refused for it."""
    labels = np.array([0] * 12 + [1] * 6 + [2] * 1)
    quota = sampling.shot_quota(np.array([12, 6, 1]), 2, 0, "stratified")
    assert quota.tolist() == [4, 2, 0]  # shares 3.79, 1.89, 0.32 of 6
    plain = sampling.few_shot_indices(labels, 2, seed=0, sampling="stratified")
    assert np.bincount(labels[plain], minlength=3).tolist() == [4, 2, 0]
    bad = plain[[0, 4]]  # one of class 0's picks, one of class 1's

    def decodes(indices):
        return ~np.isin(indices, bad)

    got = sampling.few_shot_indices(labels, 2, seed=0, decodes=decodes, sampling="stratified")
    assert np.bincount(labels[got], minlength=3).tolist() == [4, 2, 0]
    assert not np.isin(bad, got).any() and len(np.setdiff1d(plain, got)) == 2
    with pytest.raises(InvalidInput, match=r"^stratified 2-shot sampling: 1 of 3 classes has no decodable example "
                       r"\(class: 1\)"):  # fmt: skip
        sampling.few_shot_indices(labels, 2, decodes=lambda i: labels[i] != 1, sampling="stratified")


def test_the_decode_check_names_this_hosts_undecodable_examples(folder, monkeypatch, capsys):
    """`DecodeCheck` (the few-shot sampler's) decodes as a step reads: the planted file is the one undecodable, with
    why. A host of two decodes every second example only, names only its own, and takes the other's from the swap
    (here a stand-in for the two processes' collective: test_sot_glp runs two)."""
    from jaxood.data import pipeline

    src = FolderSource(folder)
    broken = src.paths.index(os.path.join(folder, "sea_lion", "9_broken.jpg"))
    check = pipeline.DecodeCheck(src, num_threads=2)
    monkeypatch.setattr(pipeline, "DECODE_PROGRESS_MIN", 13)  # as for ImageNet's 16,000 picks: progress and ETA
    ok = check(np.arange(len(src)))
    assert "[few-shot picks] 13/13 images (" in capsys.readouterr().out
    assert np.flatnonzero(~ok).tolist() == [broken] and check.total == 1
    assert list(check.found) == [broken] and "9_broken.jpg: cannot identify image file" in check.found[broken]
    decoded, real = [], pipeline.why_undecodable
    monkeypatch.setattr(pipeline, "why_undecodable", lambda source, i: decoded.append(int(i)) or real(source, i))
    theirs = np.isin(np.arange(len(src)), [broken])  # the other host found the broken file
    monkeypatch.setattr(pipeline.distributed, "every_host", lambda mine: np.stack([mine, theirs]))
    other = pipeline.DecodeCheck(src, process_index=1 - broken % 2, process_count=2)
    assert np.flatnonzero(~other(np.arange(len(src)))).tolist() == [broken] and other.total == 1
    assert sorted(decoded) == list(range(1 - broken % 2, len(src), 2))
    assert other.found == {}


# ------------------------------------------------------------------ loading


def test_eval_counts_every_example_once_and_reports_undecodable(folder, capsys):
    src = FolderSource(folder)
    loader = Loader(src, preprocess.clip_eval(16), global_batch=4)
    loader.log_unreadable("eval")
    assert capsys.readouterr().out == ""  # nothing decoded yet, nothing to say
    seen, masked = [], 0
    for batch in loader.evaluate():
        mask = np.asarray(batch["mask"])
        idx = np.asarray(batch["index"])
        seen += idx[idx >= 0].tolist()
        masked += int((~mask & (idx >= 0)).sum())
        assert np.all(np.asarray(batch["label"])[idx < 0] == -1)
    assert sorted(seen) == list(range(len(src)))  # 13 examples in 4 batches, 3 padding rows
    assert masked == 1
    report = loader.report()
    assert report.startswith("1 undecodable image(s)") and "9_broken.jpg" in report
    loader.log_unreadable("eval")
    assert capsys.readouterr().out == f"[eval] {report}\n"


def test_train_batches_resume_and_shard_slices(folder):
    src = FolderSource(folder)
    tf = preprocess.clip_train(16)
    full = Loader(src, tf, global_batch=4, seed=7)
    assert full.steps_per_epoch == 3
    run = [np.asarray(b["image"]) for b in full.train(0, num_steps=5)]
    resumed = [np.asarray(b["image"]) for b in full.train(3, num_steps=2)]
    np.testing.assert_array_equal(run[3], resumed[0])
    np.testing.assert_array_equal(run[4], resumed[1])
    # Two processes each build their half; together they are the single-process batch.
    idx, epoch = full.step_indices(4)
    halves = [
        Loader(src, tf, global_batch=4, seed=7, process_index=p, process_count=2).host_batch(idx, epoch)
        for p in range(2)
    ]
    np.testing.assert_array_equal(np.concatenate([h["image"] for h in halves]), run[4])
    # Every epoch is a permutation: 3 steps cover 12 distinct examples of 13.
    ep = np.concatenate([full.step_indices(s)[0] for s in range(3)])
    assert len(set(ep.tolist())) == 12


def test_training_counts_each_undecodable_image_once_over_hosts_and_epochs(folder, monkeypatch):
    """Over several epochs both hosts of a job meet the planted undecodable image: training's report counts it
    once (the hosts' bitmaps OR-ed, not their counts summed), every host getting the same total."""
    from jaxood.data import pipeline

    src = FolderSource(folder)
    hosts = [
        Loader(src, preprocess.clip_train(16), global_batch=4, seed=1, process_index=p, process_count=2)
        for p in range(2)
    ]
    for step in range(12):  # 4 epochs
        idx, epoch = hosts[0].step_indices(step)
        for host in hosts:
            host.host_batch(idx, epoch)
    assert [len(host.unreadable) for host in hosts] == [1, 1]  # both met it (seed 1: host 1 in epochs 1-2, 0 in 3-4)
    assert hosts[0].unreadable.keys() == hosts[1].unreadable.keys()
    monkeypatch.setattr(pipeline.distributed, "every_host", lambda bits: np.stack([
        host._unreadable_bits() for host in hosts
    ]))  # fmt: skip
    assert [host.unreadable_total() for host in hosts] == [1, 1]


def test_multi_device_loader_equals_single_device(folder):
    """4 simulated CPU devices: the global arrays equal the 1-device run, sharded 4 ways."""
    script = textwrap.dedent(
        f"""
        import numpy as np, jax
        from jaxood.data import preprocess
        from jaxood.data.pipeline import Loader
        from jaxood.data.sources import FolderSource
        assert jax.device_count() == 4
        src = FolderSource({folder!r})
        out = {{}}
        for k, b in enumerate(Loader(src, preprocess.clip_train(16), global_batch=4, seed=7).train(0, num_steps=2)):
            assert len(b["image"].addressable_shards) == 4
            out[f"train{{k}}"] = np.asarray(b["image"])
        ev = list(Loader(src, preprocess.clip_eval(16), global_batch=8).evaluate())
        out["eval_index"] = np.concatenate([np.asarray(b["index"]) for b in ev])
        out["eval_mask"] = np.concatenate([np.asarray(b["mask"]) for b in ev])
        try:
            Loader(src, preprocess.clip_eval(16), global_batch=6)
            raise SystemExit("an indivisible global batch was accepted")
        except ValueError as err:
            assert "global batch 6 does not split over 4 devices: use a multiple of 4, such as 4 or 8" in str(err)
        np.savez({folder!r} + "/../multi.npz", **out)
        """
    )
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    subprocess.run([sys.executable, "-c", script], check=True, env=env, timeout=300)
    multi = np.load(os.path.join(folder, "..", "multi.npz"))
    src = FolderSource(folder)
    single = [
        np.asarray(b["image"])
        for b in Loader(src, preprocess.clip_train(16), global_batch=4, seed=7).train(0, num_steps=2)
    ]
    np.testing.assert_array_equal(multi["train0"], single[0])
    np.testing.assert_array_equal(multi["train1"], single[1])
    idx, mask = multi["eval_index"], multi["eval_mask"]
    assert sorted(idx[idx >= 0].tolist()) == list(range(13)) and mask.sum() == 12  # one undecodable


# ------------------------------------------------------------------ toy world


def test_toy_world_splits():
    assert len(set(toy_world.ALL_OBJECTS)) == len(toy_world.ALL_OBJECTS) >= 20
    assert not set(toy_world.ID_CLASSES) & set(toy_world.NEAR_OOD_CLASSES)
    train = toy_world.ToyWorld("train", per_class=3)
    assert len(train) == 36 and train.class_names == toy_world.ID_CLASSES
    np.testing.assert_array_equal(np.bincount(train.labels()), [3] * 12)
    for split in ("near_ood", "far_ood", "spurious_ood", "fine_grained_ood"):
        w = toy_world.ToyWorld(split, per_class=2)
        assert (w.labels() == -1).all() and len(w) > 0
    fg = toy_world.fine_grained_id_classes()
    assert len(fg) == 9 and set(fg) < set(toy_world.FINE_GRAINED_CLASSES)
    ood = toy_world.ToyWorld("fine_grained_ood", per_class=1)
    assert {ood.example(i).caption.split(" on ")[0].split(" ", 4)[-1] for i in range(len(ood))}.isdisjoint(fg)


def test_toy_world_examples_and_determinism():
    w = toy_world.ToyWorld("train", per_class=4, size=48, seed=1)
    ex = w.example(5)
    assert ex.image.shape == (48, 48, 3) and ex.image.dtype == np.uint8
    assert w.class_names[ex.label] in ex.caption and ex.caption.startswith("a photo of a")
    np.testing.assert_array_equal(ex.image, toy_world.ToyWorld("train", per_class=4, size=48, seed=1).example(5).image)
    assert (
        np.abs(ex.image.astype(int) - toy_world.ToyWorld("train", per_class=4, size=48, seed=2).example(5).image).max()
        > 0
    )
    assert all(w.example(i).label == lab for i, lab in enumerate(w.labels()))
    assert ex.objects == ((w.class_names[ex.label], ex.caption.split(" ")[4]),)
    far = toy_world.ToyWorld("far_ood", per_class=1).example(0)
    assert far.caption in {f"a photo of {v}" for v in toy_world.BACKGROUND_WORDS.values()} and far.objects == ()


def test_toy_world_draws_the_pixels_the_embedded_clip_and_the_demo_were_made_from():
    """The shapes are Pillow polygons, and Pillow has drawn their edges three ways (10.0 to 11.0, 11.1, 11.2.1 to 13.0:
    setup.cfg's floor is 11.2.1). Drawn otherwise, the demo's figures move (with Pillow 10.0 its FPR95 by up to 8
    points) and the embedded CLIP no longer matches its data; this says so by name, where the demo's table test
    only finds rows that differ."""
    import hashlib

    import PIL

    h = hashlib.sha256()
    for split in ("train", "test", "near_ood", "far_ood", "spurious_ood", "pretrain"):
        w = toy_world.ToyWorld(split, per_class=5, size=64, seed=1)
        for i in range(len(w)):
            h.update(np.ascontiguousarray(w.read(i)[0]).tobytes())
    assert h.hexdigest()[:16] == "5f2c2898382a7797", (
        f"Pillow {PIL.__version__} with NumPy {np.__version__} draws other toy world pixels than Pillow 11.2.1-13.0"
    )


def test_toy_objects_stand_out_from_every_background_blend():
    """Each object colour keeps RGB distance >= 50 from any blend of two other muted background tones.

    Gray had < 35.
    """
    t = np.linspace(0, 1, 51)[:, None]
    for colour, rgb in toy_world.COLOURS.items():
        others = [np.array(toy_world.muted(c)) for c in toy_world.COLOURS if c != colour]
        nearest = min(np.linalg.norm(a * (1 - t) + b * t - rgb, axis=1).min() for a in others for b in others)
        assert nearest >= 50, (colour, nearest)


def test_toy_world_spurious_correlation():
    train = toy_world.ToyWorld("train", per_class=40, spurious_p=0.8)
    test = toy_world.ToyWorld("test", per_class=40)

    def agreement(w):
        hits = [
            toy_world.BACKGROUND_WORDS[toy_world.SPURIOUS_BACKGROUND[w.class_names[e.label]]] in e.caption
            for e in map(w.example, range(0, len(w), 3))
        ]
        return np.mean(hits)

    assert agreement(train) > 0.7 and agreement(test) < 0.45


def test_toy_id_classes_have_typical_colours_that_pretraining_never_saw():
    """ID objects take their class's colour 70 % of the time (+ 30 % / 11 by chance).

    Pretraining and OOD splits draw colours uniformly.
    """

    def typical(split, per_class):
        w = toy_world.ToyWorld(split, per_class=per_class, seed=5)
        pairs = [obj for i in range(len(w)) for obj in w.example(i).objects]
        return np.mean([toy_world.TYPICAL_COLOUR.get(name) == colour for name, colour in pairs]), len(pairs)

    for split in ("train", "test"):
        frac, n = typical(split, 30)
        assert n == 360 and 0.65 < frac < 0.82, (split, frac)
    frac, n = typical("pretrain", 30)  # ID objects among every toy object, colours drawn uniformly
    assert n > 700 and frac < 0.1, frac
    assert {toy_world.TYPICAL_COLOUR[c] for c in toy_world.ID_CLASSES} <= set(toy_world.COLOURS)


def test_toy_world_through_loader():
    w = toy_world.ToyWorld("test", per_class=2, size=32)
    batches = list(Loader(w, preprocess.clip_eval(32), global_batch=8).evaluate())
    assert sum(int(np.asarray(b["mask"]).sum()) for b in batches) == 24


def test_dataset_descriptions(folder, tmp_path):
    from jaxood.data.datasets import make_source, ood_benchmark

    assert len(make_source({"kind": "folder", "root": folder})) == 13
    assert make_source({"kind": "toy", "split": "far_ood", "per_class": 1}).split == "far_ood"
    with pytest.raises(ValueError, match=r"^unknown key 'sise' \(did you mean 'size'\?\) for a 'toy' dataset; all"):
        make_source({"kind": "toy", "split": "test", "sise": 3})
    # An entry whose kind alone was changed (--config.id_dataset.kind=folder) keeps the other kind's keys.
    with pytest.raises(InvalidInput) as err:
        make_source({"kind": "folder", "split": "test", "per_class": 2}, "id_dataset")
    assert str(err.value) == (
        "config.id_dataset: unknown keys 'split' and 'per_class' for a 'folder' dataset; allowed: 'class_names', "
        "'download' and 'root'. They are keys of another kind: an entry changed to another kind is given whole, with "
        "that kind's keys, as {'kind': 'folder', 'root': ...} (README, 'Datasets', has every kind)"
    )
    with pytest.raises(ValueError, match=r"^dataset kind must be one of 'coop', .* or 'toy', got 'hdf5'; the entry's"):
        make_source({"kind": "hdf5"})
    # A mistyped choice is answered with the nearest (errors.not_one_of, for every such setting).
    with pytest.raises(ValueError, match=r"got 'folders' \(did you mean 'folder'\?\); the entry's other keys: \{'ro"):
        make_source({"kind": "folders", "root": folder})
    with pytest.raises(ValueError, match=r"^OOD benchmark must be one of 'mos', 'openood_v15' or 'toy', got 'MOS' \("):
        ood_benchmark("MOS")
    with pytest.raises(ValueError, match=r"^toy world split must be one of 'train', .*, got 'far' \(did you mean '"):
        make_source({"kind": "toy", "split": "far"})
    # A path where the description goes (--config.ood_datasets="{'iNat': '/data/inat'}"): a ValueError of dict().
    with pytest.raises(InvalidInput, match=r"^config\.ood_datasets\.iNat: '/data/inat' is not a dataset description"):
        make_source("/data/inat", "ood_datasets.iNat")
    assert len(make_source(ml_collections.ConfigDict({"kind": "folder", "root": folder}))) == 13  # as configs hold it
    assert len(make_source({"kind": "folder", "root": pathlib.Path(folder)})) == 13  # a path object, in Python
    # A path or name of another type failed in os or TFDS with a TypeError, or was named as a missing folder.
    for spec, message in (
        ({"kind": "list", "root": folder, "list_file": None}, "list_file must be a string (a path), got None"),
        ({"kind": "folder", "root": 5}, "root must be a string (a path), got 5"),
        ({"kind": "tfds", "name": 3, "split": "test"}, "name must be a string (a TFDS dataset's name), got 3"),
        ({"kind": "toy", "split": 1}, "split must be a string (a split's name), got 1"),
        # Empty, as a shell variable not set leaves it: "image folder not found at :", TFDS's "Parsing builder name
        # string failed".
        ({"kind": "folder", "root": ""}, "root is empty (a shell variable that is not set?): give a path"),
        (
            {"kind": "tfds", "name": " ", "split": "test"},
            "name is empty (a shell variable that is not set?): give a TFDS dataset's name",
        ),
        (
            {"kind": "list", "root": folder, "list_file": ""},
            "list_file is empty (a shell variable that is not set?): give a path",
        ),
    ):
        with pytest.raises(InvalidInput) as err:
            make_source(spec, "ood_datasets.x")
        assert str(err.value) == f"config.ood_datasets.x: {message}"
    # An entry without a key its kind needs failed with a KeyError ('root'), or the toy world's TypeError.
    for spec, missing in (
        ({"kind": "folder"}, "'root'"),
        ({"kind": "tfds", "split": "train"}, "'name'"),
        # A TFDS entry without its split read "test", a training set's too (trained on a test split, unsaid).
        ({"kind": "tfds", "name": "oxford_iiit_pet"}, "'split'"),
        ({"kind": "list"}, "'list_file' and 'root'"),
        ({"kind": "toy", "per_class": 1}, "'split'"),
    ):
        with pytest.raises(InvalidInput) as err:
            make_source(spec, "ood_datasets.x")
        assert str(err.value) == (
            f"config.ood_datasets.x: a {spec['kind']!r} dataset needs {missing}, missing from {spec} (README, "
            "'Datasets', has every kind)"
        )
    # A list's root may be empty: its paths are then relative to the current folder (or absolute).
    (tmp_path / "abs.txt").write_text(f"{os.path.join(folder, 'tench', '0.png')} 0\n")
    assert len(make_source({"kind": "list", "root": "", "list_file": str(tmp_path / "abs.txt")})) == 1
    mos = ood_benchmark("mos", str(tmp_path))
    assert list(mos) == ["iNaturalist", "SUN", "Places", "Textures"]
    with pytest.raises(DatasetMissing, match=r"^config\.ood_datasets\.iNaturalist: image folder not found at .*iNat"):
        make_source(mos["iNaturalist"], "ood_datasets.iNaturalist")
    toy = ood_benchmark("toy", toy={"per_class": 2, "size": 32})
    assert {k: len(make_source(v)) for k, v in toy.items()} == {"near": 16, "far": 24, "spurious": 32}


def test_a_missing_benchmark_set_says_where_to_download_it_and_where_to_unpack_it(tmp_path):
    """The ImageNet configs' OOD sets, missing, said where jaxood looked and "see README" for where they come from,
    which the README did not say. Each benchmark entry now carries its `download`, which follows --config.ood_root
    and ends the error; an entry of the user's own may carry one too."""
    from conftest import load_config

    from jaxood.data.datasets import make_source, make_sources

    root = tmp_path / "mos"
    config = load_config("zeroshot", "imagenet")
    config.ood_root = str(root)
    with pytest.raises(DatasetMissing) as err:
        make_sources({f"ood_datasets.{name}": spec for name, spec in config.ood_datasets.items()})
    lines = str(err.value).splitlines()
    assert lines[0] == "4 of the 4 datasets are missing:"
    mos = "http://pages.cs.wisc.edu/~huangrui/imagenet_ood_dataset"
    assert lines[1] == (
        f"config.ood_datasets.iNaturalist: image folder not found at {root}/iNaturalist: expected one sub-folder per "
        "class with the images inside (see README, 'Datasets', for where each OOD set comes from). To get it: wget "
        f"{mos}/iNaturalist.tar.gz && mkdir -p {root} && tar -xzf iNaturalist.tar.gz -C {root}"
    )
    assert lines[4].endswith(
        ". To get it: wget https://www.robots.ox.ac.uk/~vgg/data/dtd/download/dtd-r1.0.1.tar.gz && mkdir -p "
        f"{root} && tar -xzf dtd-r1.0.1.tar.gz -C {root}"
    )
    config = load_config("zeroshot", "imagenet,openood_v15")
    config.ood_root = str(tmp_path / "openood")
    with pytest.raises(DatasetMissing) as err:
        make_source(config.ood_datasets["SSB-hard"], "ood_datasets.SSB-hard")
    assert str(err.value).endswith(
        "not found (OpenOOD v1.5 ships these lists in benchmark_imglist/). To get it: OpenOOD's download script "
        "(https://github.com/Jingkang50/OpenOOD, with `pip install gdown`): python scripts/download/download.py "
        "--contents datasets --dataset_mode dataset --datasets imagenet_1k ssb_hard ninco inaturalist texture "
        f"openimage_o --save_dir {tmp_path / 'openood'}"
    )
    with pytest.raises(DatasetMissing) as id_err:  # its ID set (ImageNet's test images) comes with the same command
        make_source(config.id_dataset, "id_dataset")
    lists = tmp_path / "openood" / "benchmark_imglist" / "imagenet"
    assert str(id_err.value) == (
        f"config.id_dataset: image list {lists}/test_imagenet.txt not found (OpenOOD v1.5 ships these lists in "
        "benchmark_imglist/)" + str(err.value)[str(err.value).index(". To get it:") :]
    )
    own = {"kind": "folder", "root": str(tmp_path / "mine"), "download": "rsync -a lab:/data/mine ."}
    with pytest.raises(DatasetMissing, match=r"\. To get it: rsync -a lab:/data/mine \.$"):
        make_source(own, "ood_datasets.mine")
    with pytest.raises(InvalidInput, match=r"^config\.x: download must be a string \(how to get the dataset\), got 3$"):
        make_source({**own, "download": 3}, "x")


def test_a_benchmark_root_given_a_level_off_names_where_its_sets_are(tmp_path):
    """ood_root given one level too deep (`/data/mos/iNaturalist` for `/data/mos`) or too high (`/data`) named each
    set missing with its download, the doubled or missing folder visible only in the paths. Each now names where its
    set is, and the folder that was meant."""
    from conftest import load_config

    from jaxood.data.datasets import make_source, make_sources

    mos = tmp_path / "mos"
    for folder in ("iNaturalist", "SUN", "Places", "dtd/images"):
        (mos / folder / "a_class").mkdir(parents=True)
    config = load_config("zeroshot", "imagenet")
    for given, meant in ((mos / "iNaturalist", mos), (mos / "iNaturalist" / "a_class", mos), (tmp_path, mos)):
        config.ood_root = str(given)
        with pytest.raises(DatasetMissing) as err:
            make_sources({f"ood_datasets.{name}": spec for name, spec in config.ood_datasets.items()})
        for name, folder in (("SUN", "SUN"), ("Textures", "dtd/images")):
            assert (
                f"config.ood_datasets.{name}: image folder not found at {given}/{folder} (but {mos}/{folder} is: was "
                f"{given} given for {meant}?): expected one sub-folder per class"
            ) in str(err.value)
    config = load_config("zeroshot", "imagenet,openood_v15")
    lists = tmp_path / "openood" / "benchmark_imglist" / "imagenet"
    lists.mkdir(parents=True)
    (lists / "test_ssb_hard.txt").write_text("a.png\n", encoding="utf-8")
    (tmp_path / "openood" / "images_largescale").mkdir()
    config.ood_root = str(tmp_path / "openood" / "images_largescale")
    with pytest.raises(DatasetMissing) as err:
        make_source(config.ood_datasets["SSB-hard"], "ood_datasets.SSB-hard")
    assert str(err.value).startswith(
        f"config.ood_datasets.SSB-hard: image list {config.ood_root}/benchmark_imglist/imagenet/test_ssb_hard.txt "
        f"not found (but {lists}/test_ssb_hard.txt is: was {config.ood_root} given for {tmp_path / 'openood'}?) "
        "(OpenOOD v1.5 ships"
    )
    # A folder of the list's name is no list; where nothing lies a level off, nothing more is said.
    (lists / "test_ninco.txt" / "x").mkdir(parents=True)
    with pytest.raises(DatasetMissing, match=r"test_ninco\.txt not found \(OpenOOD v1\.5 ships"):
        make_source(config.ood_datasets["NINCO"], "ood_datasets.NINCO")
    with pytest.raises(DatasetMissing, match="iNaturalist: expected one sub-folder"):
        make_source({"kind": "folder", "root": str(tmp_path / "elsewhere" / "iNaturalist")})


def test_the_loaders_batches_must_fit_in_the_hosts_memory(monkeypatch):
    """Each host holds 4 batches of its own share of the global batch, float32 (a batch beyond its memory failed with
    NumPy's "Unable to allocate" traceback, or the system killed the process)."""
    from jaxood.data import pipeline

    monkeypatch.setattr(pipeline, "host_bytes", lambda: 2**30)  # 1 GiB
    pipeline.check_host_memory(1024, 224, "batch_size", process_count=4)  # 4 x 256 x 224 x 224 x 3 x 4 B: 0.57 GiB
    with pytest.raises(InvalidInput) as err:
        pipeline.check_host_memory(1024, 224, "batch_size", process_count=2)
    assert str(err.value) == (
        "batch_size 1024: the loader holds 4 batches of 512 images of 224x224 on each host at once, 1.1 GiB, more "
        "than this host's 1.0 GiB of memory: lower batch_size"
    )


def test_the_loader_decodes_on_twice_the_cpus_this_process_may_run_on():
    """A SLURM task or a container's cpuset may run on fewer CPUs than the machine has: the loader's threads follow
    the process's affinity (here pinned to one CPU: 2 threads), where `os.cpu_count()` counted every CPU."""
    code = (  # pinned before jaxood is imported (a preexec_fn would fork this process, JAX's threads and all)
        "import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
        "from jaxood.data import pipeline; print(pipeline.LOADER_THREADS)"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.split() == ["2"]


@pytest.mark.parametrize(
    "env, want",
    [
        ({"JAXOOD_CACHE": "~/jc", "XDG_CACHE_HOME": "/scratch/c"}, "{home}/jc"),
        ({"XDG_CACHE_HOME": "/scratch/c"}, "/scratch/c/jaxood"),
        ({"XDG_CACHE_HOME": "relative"}, "{home}/.cache/jaxood"),  # not absolute: the XDG spec ignores it
        ({"JAXOOD_CACHE": ""}, "{home}/.cache/jaxood"),  # empty, as a shell variable not set leaves it: unset
    ],
)
def test_the_default_cache_is_jaxood_cache_or_the_users_cache_folder(tmp_path, env, want):
    """jaxood's default cache follows $JAXOOD_CACHE, then $XDG_CACHE_HOME (as pip's and Hugging Face's do: a cluster
    may point it off a small home quota), then ~/.cache."""
    clean = {k: v for k, v in os.environ.items() if k not in ("JAXOOD_CACHE", "XDG_CACHE_HOME")}
    run = subprocess.run(
        [sys.executable, "-c", "from jaxood.cache import DEFAULT_CACHE; print(DEFAULT_CACHE)"],
        env={**clean, "HOME": str(tmp_path), **env},
        capture_output=True,
        text=True,
        check=True,
    )
    assert run.stdout.strip() == want.format(home=tmp_path)


_READ_EVERY_RECORD = """
import resource
import sys

resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[2]), int(sys.argv[3])))  # soft, hard
import numpy as np
from jaxood.data import preprocess
from jaxood.data.pipeline import Loader
from jaxood.data.sources import TfdsSource
from jaxood.errors import report_user_errors

def main(argv):
    src = TfdsSource("tiny_versions", "train", data_dir=sys.argv[1])
    labels = src.labels()
    read = sum(int(np.asarray(b["mask"]).sum()) for b in Loader(src, preprocess.clip_eval(16), 20).evaluate())
    print("labels", len(labels), "read", read)

sys.exit(report_user_errors(main, "Nothing to keep.")(sys.argv))
"""


def test_a_tfds_split_of_more_shards_than_the_open_file_limit_is_read_whole(tmp_path):
    """TFDS keeps each shard file of a split open once read (ImageNet's training split: 1024 files; 1024 open files
    is many systems' soft limit): the label scan failed at the shard past the limit, saying the dataset's files
    were damaged and to prepare it again. jaxood raises the soft limit to the hard one when it opens a TFDS
    dataset; where the hard limit is too low, the error says so and that the data is not damaged. Here 100 shards,
    read under a soft limit of 64."""
    data_dir = str(tmp_path / "tfds")
    _prepare_tiny_versions(data_dir, records=100, shards=100)

    def read(soft: int, hard: int) -> subprocess.CompletedProcess:
        shutil.rmtree(os.path.join(data_dir, "jaxood_labels"), ignore_errors=True)
        env = {**os.environ, "JAXOOD_CACHE": str(tmp_path / "cache")}
        cmd = [sys.executable, "-c", _READ_EVERY_RECORD, data_dir, str(soft), str(hard)]
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)

    raised = read(64, 4096)
    assert raised.returncode == 0, raised.stderr
    assert raised.stdout.split() == ["labels", "100", "read", "100"]
    refused = read(64, 64)
    assert refused.returncode == 1
    assert "could not be opened: this process has as many files open as the system allows it (64, `ulimit -n`)" in (
        refused.stderr
    )
    assert "Ask the machine's administrator for a higher hard limit (`ulimit -Hn`); the data is not damaged." in (
        refused.stderr
    )


# macOS's RLIM_INFINITY as Python gives it (Linux's is -1): the open-file tests below simulate macOS with it.
MACOS_UNLIMITED = 2**63 - 1


@pytest.mark.parametrize(
    "soft, hard, system_most, want",
    [
        (256, MACOS_UNLIMITED, 10240, 10240),  # macOS's defaults: 256 under "unlimited", at most kern.maxfilesperproc
        (256, MACOS_UNLIMITED, 600000, 600000),  # a macOS whose kern.maxfilesperproc was raised
        (64, 4096, None, 4096),  # Linux: up to the hard limit, in one call
        (4096, 4096, None, 4096),  # at the hard limit already: nothing asked
    ],
)
def test_the_open_file_limit_is_raised_as_far_as_the_system_takes(monkeypatch, soft, hard, system_most, want):
    """TFDS keeps a split's shard files open once read (ImageNet's training split: 1024). macOS gives a process 256
    open files under a hard limit it calls unlimited, and refuses a soft limit past its `kern.maxfilesperproc`
    (Python's ValueError): jaxood asked for 2**20 alone, was refused, and stayed at 256. It now takes the most the
    system allows, found by bisection. macOS's side is simulated here (`MACOS_UNLIMITED`)."""
    import resource

    limits, asked = {"soft": soft}, []

    def setrlimit(which, pair):
        assert which == resource.RLIMIT_NOFILE and pair[1] == hard
        asked.append(pair[0])
        if not pair[0] <= (system_most or hard):
            raise ValueError("current limit exceeds maximum limit")
        limits["soft"] = pair[0]

    monkeypatch.setattr(resource, "RLIM_INFINITY", MACOS_UNLIMITED)
    monkeypatch.setattr(resource, "getrlimit", lambda which: (limits["soft"], hard))
    monkeypatch.setattr(resource, "setrlimit", setrlimit)
    sources.raise_open_file_limit()
    assert limits["soft"] == want
    assert len(asked) <= 22  # the hard limit (or 2**20), then at most 21 halvings of the gap
    assert asked[:1] == ([] if soft == hard else [min(hard, 1 << 20)])


@pytest.mark.parametrize(
    "soft, hard, fix",
    [
        (10240, MACOS_UNLIMITED, "Raise it (`ulimit -n 65536` before the command; on macOS at most `sysctl kern.maxf"),
        (1024, 4096, "Raise it (`ulimit -n 4096` before the command); the data is not damaged."),
        (4096, 4096, "Ask the machine's administrator for a higher hard limit (`ulimit -Hn`); the data is not"),
    ],
)
def test_the_open_file_limit_error_names_a_limit_the_shell_takes(monkeypatch, soft, hard, fix):
    """Under macOS's unlimited hard limit (`MACOS_UNLIMITED`) the error asked for `ulimit -n 9223372036854775807`."""
    import resource

    from jaxood.errors import open_files_error

    monkeypatch.setattr(resource, "RLIM_INFINITY", MACOS_UNLIMITED)
    monkeypatch.setattr(resource, "getrlimit", lambda which: (soft, hard))
    message = str(open_files_error("a.png"))
    assert f"allows it ({soft}, `ulimit -n`)." in message and fix in message
    assert str(MACOS_UNLIMITED) not in message


def test_an_image_not_opened_for_the_open_file_limit_stops_the_run_rather_than_counting_as_undecodable(
    tmp_path, monkeypatch
):
    """An image that cannot be opened because the process has no file left to open is no damaged image: every one
    after it would fail too, and the run would go on without them, counting them undecodable."""
    import errno

    from jaxood.errors import OutOfOpenFiles

    path = str(tmp_path / "a.png")
    write_image(path, 0)

    def no_file_left(*args, **kwargs):
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE), path)

    monkeypatch.setattr(preprocess.Image, "open", no_file_left)
    with pytest.raises(OutOfOpenFiles, match=f"^{re.escape(path)} could not be opened: this process has as many"):
        preprocess.decode(path)


def test_python_exits_with_batches_still_open_and_their_producer_waiting():
    """A stopped run's batches are closed by the garbage collection of Python's exit (the error's traceback holds
    them) while their producer thread waits on the full queue. Python 3.13 ends a daemon thread that wakes then
    without marking it ended, and the close waited for it forever: both hosts of a two-host job stopped by SIGTERM
    hung after saying they had stopped. Python 3.11 and 3.12 exited either way."""
    script = textwrap.dedent("""
        import time, types
        from jaxood.data.pipeline import Loader
        batches = Loader._prefetched(types.SimpleNamespace(prefetch=1, to_global=lambda b: b), lambda i: [i], 100)
        next(batches)
        time.sleep(0.5)  # the producer fills the queue and waits on it
        cycle = [batches]
        cycle.append(cycle)  # garbage only a collection finds, as a traceback's frames are
        del batches, cycle
        print("exiting", flush=True)
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and run.stdout == "exiting\n", run.stderr
