"""Prepare a TFDS dataset for jaxood (the only step that downloads).

    python -m jaxood.data.prepare --dataset=cifar10 --data_dir=~/tensorflow_datasets
    python -m jaxood.data.prepare --dataset=imagenet2012 --data_dir=DIR   # tars in DIR/downloads/manual

Writes `array_record` files that jaxood reads without TensorFlow. Preparing
most TFDS datasets needs TensorFlow once (`pip install tensorflow-cpu`) and
network (ImageNet: the archives downloaded by hand instead). Every failure a
user can fix (unknown name, a data_dir it cannot write, archives not in place,
a missing module, no network) prints one line naming the fix and exits with
status 1.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import urllib.parse
import urllib.request

from jaxood.cache import writable_folder_problem
from jaxood.data.sources import open_tfds_builder
from jaxood.errors import InputMissing, InvalidInput, UserError, exit_with, report_user_errors

PIP_PACKAGES = {"tensorflow": "tensorflow-cpu"}  # module TFDS imports -> what to `pip install` for it


def prepare(dataset: str, data_dir: str, manual_dir: str | None = None) -> str:
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
    builder = open_tfds_builder(dataset, data_dir, file_format="array_record")
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
    try:
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    except ModuleNotFoundError as err:
        module = (err.name or str(err)).split(".")[0]
        raise UserError(
            f"preparing {dataset} needs the Python module {module!r}: "
            f"`pip install {PIP_PACKAGES.get(module, module)}`, then run this again"
        ) from err
    except (requests.ConnectionError, requests.Timeout) as err:
        raise _needs_network(dataset, builder, str(err).splitlines()[0]) from err
    return builder.data_dir


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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", required=True, help="TFDS name, e.g. cifar10, imagenet2012, dtd")
    ap.add_argument("--data_dir", default=os.environ.get("TFDS_DATA_DIR", os.path.expanduser("~/tensorflow_datasets")))
    ap.add_argument(
        "--manual_dir", default=None, help="where manually downloaded archives are (default DATA_DIR/downloads/manual)"
    )
    args = ap.parse_args(argv)
    print(f"prepared {args.dataset} in {prepare(args.dataset, args.data_dir, args.manual_dir)}")
    return 0


if __name__ == "__main__":
    exit_with(report_user_errors(main)(sys.argv[1:]))
