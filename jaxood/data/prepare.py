"""Prepare a TFDS dataset for jaxood (the only step that downloads).

    python -m jaxood.data.prepare --dataset=cifar10 --data_dir=~/tensorflow_datasets
    python -m jaxood.data.prepare --dataset=imagenet2012 --data_dir=DIR   # tars in DIR/downloads/manual

Writes `array_record` files that jaxood reads without TensorFlow: a dataset
prepared already is left as it is, and one TFDS prepared as tfrecord files gets
array_record copies of them. Preparing most TFDS datasets needs TensorFlow once
(`pip install tensorflow-cpu`) and network (ImageNet: the archives downloaded by
hand instead). Every failure a user can fix (unknown name, a data_dir it cannot
write, archives not in place, a missing module, no network) prints one line
naming the fix and exits with status 1.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import sys
import urllib.parse
import urllib.request

from jaxood.cache import writable_folder_problem
from jaxood.data.sources import (
    ARRAY_RECORD,
    TFRECORD,
    DatasetMissing,
    dataset_folder,
    file_formats,
    is_prepared,
    open_tfds_builder,
    own_file_format,
    prepared_elsewhere,
)
from jaxood.errors import InputMissing, InvalidInput, UserError, exit_with, first_line, report_user_errors
from jaxood.progress import Progress

PIP_PACKAGES = {"tensorflow": "tensorflow-cpu"}  # module TFDS imports -> what to `pip install` for it


def prepare(dataset: str, data_dir: str, manual_dir: str | None = None) -> str:
    """Prepares `dataset` in `data_dir` in array_record (`manual_dir`: its archives downloaded by hand, where it has
    them), and says what was done, in a line."""
    # Empty, as `--dataset=$NAME` with NAME unset: TFDS's "Parsing builder name string failed", or "--data_dir  cannot
    # be written (No such file or directory)".
    for flag, value, give in (
        ("--dataset", dataset, "a TFDS name, such as cifar10 or imagenet2012"),
        ("--data_dir", data_dir, "the folder to prepare it in (no flag: TFDS_DATA_DIR or ~/tensorflow_datasets)"),
    ):
        if not value.strip():
            raise InvalidInput(f"{flag} is empty (a shell variable that is not set, as in {flag}=$NAME?): give {give}")
    import requests
    import tensorflow_datasets as tfds
    from etils import epath

    data_dir = os.path.expanduser(data_dir)  # a shell leaves `--data_dir=~/tensorflow_datasets` as it is
    builder = open_tfds_builder(dataset, data_dir)  # in the format it is prepared in, where it is
    if is_prepared(builder):  # where its archives are gone, or offline, this asked for them or for network
        return _complete(dataset, builder)
    if os.path.isdir(data_dir) and (meant := prepared_elsewhere(dataset, data_dir)):  # a new data_dir is a new store
        raise InvalidInput(
            f"{dataset} is prepared already, in {meant}, not in --data_dir {data_dir}: give --data_dir={meant} "
            f"(this finds it prepared there and downloads nothing), and {meant} as the dataset's data_dir or as "
            f"TFDS_DATA_DIR to read it. To prepare another copy in {data_dir}, make the folder "
            f"{dataset_folder(dataset, data_dir)} first"
        )
    builder = open_tfds_builder(dataset, data_dir, file_format=ARRAY_RECORD)
    if "://" not in data_dir and (problem := writable_folder_problem(data_dir)):  # TFDS failed with its traceback
        raise InvalidInput(
            f"--data_dir {data_dir} cannot be written ({problem}): TFDS writes the downloads and the prepared "
            "dataset there. Give a folder this user may write, then point the dataset's data_dir (or TFDS_DATA_DIR) "
            "at it"
        )  # a bucket's permissions are checked by TFDS as it writes
    manual_dir = os.path.expanduser(manual_dir) if manual_dir else os.path.join(data_dir, "downloads", "manual")
    instructions = " ".join((builder.MANUAL_DOWNLOAD_INSTRUCTIONS or "").split())
    manual = epath.Path(manual_dir)  # TFDS's paths: a bucket (gs://) as well as a local folder
    if instructions and not (manual.is_dir() and any(manual.iterdir())):
        raise InputMissing(
            f"{dataset} is downloaded by hand, into {manual_dir} (or pass --manual_dir): {instructions} "
            "Then run this again."
        )
    if not instructions and (hosts := _unresolved_hosts(builder, os.path.join(data_dir, "downloads"))):
        raise _needs_network(dataset, builder, f"no address for {', '.join(hosts)}: no network")
    with _named_modules(dataset):
        try:
            builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
        except (requests.ConnectionError, requests.Timeout) as err:
            raise _needs_network(dataset, builder, str(err).splitlines()[0]) from err
    return f"prepared {dataset} in {builder.data_dir}"


@contextlib.contextmanager
def _named_modules(dataset: str):
    """A Python module that preparing `dataset` needs and is not installed, named with what to `pip install`."""
    try:
        yield
    except ModuleNotFoundError as err:
        module = (err.name or str(err)).split(".")[0]
        raise UserError(
            f"preparing {dataset} needs the Python module {module!r}: "
            f"`pip install {PIP_PACKAGES.get(module, module)}`, then run this again"
        ) from err


def _complete(dataset: str, builder) -> str:
    """A prepared dataset's files that jaxood reads all there: those TFDS wrote in a format read by index
    (array_record, parquet), or the array_record copies `_add_array_record` makes of tfrecord files (again, of those
    deleted as damaged). A file TFDS wrote that is gone is named: TFDS prepares a dataset anew only in a folder
    without it."""
    from tensorflow_datasets.core import file_adapters

    info = builder.info
    read_by_index = {file_format.value for file_format in file_adapters.FileFormat.with_random_access()}
    if (own := own_file_format(info)) in read_by_index:
        if missing := [path for split in info.splits.values() for path in split.filepaths if not path.exists()]:
            raise DatasetMissing(
                f"{dataset} is prepared in {builder.data_dir}, but {len(missing)} of its files are gone "
                f"({', '.join(path.name for path in missing[:3])}{', ...' if len(missing) > 3 else ''}): restore "
                "them, or delete that folder and run this again to prepare the dataset anew"
            )
    elif own == TFRECORD:
        to_copy = []  # (tfrecord file, its records, its array_record copy), for those not copied whole before
        for split in info.splits.values():
            for path, records in zip(split.filepaths, split.shard_lengths, strict=True):
                copy = file_adapters.convert_path_to_file_format(path, file_adapters.FileFormat.ARRAY_RECORD)
                if not copy.exists():
                    to_copy.append((path, records, copy))
        if to_copy or ARRAY_RECORD not in file_formats(info):
            return _add_array_record(dataset, builder, to_copy)
    else:
        raise DatasetMissing(
            f"{dataset} is prepared in {builder.data_dir} as {own} files, which jaxood does not read (this copies "
            f"tfrecord files alone to array_record): prepare it again in an empty folder (--data_dir=<folder>) and "
            "use that one"
        )
    return f"{dataset} is prepared already, in {builder.data_dir}: nothing to do"


def _add_array_record(dataset: str, builder, to_copy: list) -> str:
    """A dataset prepared by TFDS's default (tfrecord files, which jaxood does not read) gets array_record copies of
    its files beside them (`to_copy`: those not copied whole before), as an alternative file format of the dataset:
    `prepare` had failed with TFDS's "File format is already set to tfrecord", where jaxood's reader asked for it.
    TFDS's own `convert_format` needs Apache Beam besides TensorFlow. A shard copied whole is kept (written under a
    temporary name, then renamed), so the same command goes on where one that stopped left off."""
    from tensorflow_datasets.core import file_adapters
    from tensorflow_datasets.core.utils import py_utils

    info = builder.info
    print(
        f"{dataset} is prepared in {builder.data_dir} as {TFRECORD} files, which jaxood does not read: "
        f"adding array_record copies of {len(to_copy)} of them beside them (as much disk again)",
        flush=True,
    )
    progress = Progress(f"copying {dataset}", sum(records for _, records, _ in to_copy), "records")
    with _named_modules(dataset):
        for path, records, copy in to_copy:
            with py_utils.incomplete_file(copy) as partial:
                records_of = _records_of(dataset, path, records, progress)
                file_adapters.ArrayRecordFileAdapter.write_examples(partial, records_of)
    if ARRAY_RECORD not in file_formats(info):
        info.add_alternative_file_format(ARRAY_RECORD)
        info.write_to_directory(builder.data_dir)
    return f"added array_record files to {dataset} in {builder.data_dir}"


def _records_of(dataset: str, path, records: int, progress: Progress):
    """The serialized records of a tfrecord shard, in order, as (index, bytes), counted in `progress`; a shard that
    TensorFlow finds damaged, or that holds other than its `records`, is refused naming it."""
    import tensorflow as tf  # TFDS's reader of tfrecord files (it checks each record's checksum)
    from tensorflow_datasets.core import file_adapters

    count = 0
    damaged = f"{dataset}'s file {path} is damaged"
    again = f"prepare {dataset} again, in an empty data_dir, and use that one"
    try:
        for record in file_adapters.TfRecordFileAdapter.make_tf_data(path).as_numpy_iterator():
            yield count, record
            count += 1
            progress.update()
    except tf.errors.OpError as err:
        raise DatasetMissing(f"{damaged} (past record {count}: {first_line(err)}): {again}") from None
    if count != records:
        raise DatasetMissing(f"{damaged}: it holds {count} records, its dataset_info.json {records}: {again}")


def _unresolved_hosts(builder, downloads: str) -> list[str]:
    """The hosts the dataset downloads from, when none of them has an address (no network); else []. Offline, TFDS
    tries each download 10 times, backing off for 3.4 minutes in all, before it fails. Not checked where a proxy
    resolves the names, or where DATA_DIR/downloads holds more than the manual archives (downloads put in place)."""
    placed = os.listdir(downloads) if os.path.isdir(downloads) else []
    if urllib.request.getproxies() or any(name != "manual" for name in placed):
        return []
    hosts = sorted({urllib.parse.urlsplit(url).hostname for url in builder.url_infos or {}} - {None})
    for host in hosts:
        try:
            socket.getaddrinfo(host, None)
            return []
        except OSError:
            continue
    return hosts


def _needs_network(dataset: str, builder, reason: str) -> InputMissing:
    return InputMissing(
        f"cannot download {dataset} ({reason}): preparing it needs network once. "
        f"Prepare it where there is network and copy the folder {builder.data_dir} to the same path here "
        "(or point --data_dir / TFDS_DATA_DIR at a shared copy)"
    )


# What a Ctrl-C kept (`report_user_errors`): TFDS keeps each finished download and removes a preparation it had
# begun; `_add_array_record` keeps each whole copy and removes the one it was writing.
KEPT = (
    "Downloads finished before it are kept in the data_dir's downloads folder, and so are whole array_record "
    "copies of tfrecord files: the same command goes on from them (a preparation TFDS had begun starts again)."
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m jaxood.data.prepare", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--dataset", required=True, help="TFDS name, e.g. cifar10, imagenet2012, dtd")
    ap.add_argument("--data_dir", default=os.environ.get("TFDS_DATA_DIR", os.path.expanduser("~/tensorflow_datasets")))
    ap.add_argument(
        "--manual_dir", default=None, help="where manually downloaded archives are (default DATA_DIR/downloads/manual)"
    )
    args = ap.parse_args(argv)
    print(prepare(args.dataset, args.data_dir, args.manual_dir))
    return 0


if __name__ == "__main__":
    exit_with(report_user_errors(main, KEPT)(sys.argv[1:]))
