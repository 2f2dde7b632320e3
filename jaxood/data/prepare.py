"""Prepare a TFDS dataset for jaxood (the only step that downloads).

    python -m jaxood.data.prepare --dataset=cifar10 --data_dir=~/tensorflow_datasets
    python -m jaxood.data.prepare --dataset=imagenet2012 --data_dir=DIR   # tars in DIR/downloads/manual

Writes `array_record` files that jaxood reads without TensorFlow. Preparing
most TFDS datasets needs TensorFlow once (`pip install tensorflow-cpu`) and
network (ImageNet: the manual download only).
"""

from __future__ import annotations

import argparse
import os


def prepare(dataset: str, data_dir: str, manual_dir: str | None = None) -> str:
    import tensorflow_datasets as tfds

    builder = tfds.builder(dataset, data_dir=data_dir, file_format="array_record")
    config = tfds.download.DownloadConfig(manual_dir=manual_dir or os.path.join(data_dir, "downloads", "manual"))
    try:
        builder.download_and_prepare(download_config=config)
    except ModuleNotFoundError as err:
        raise SystemExit(
            f"preparing {dataset} needs {err.name}: `pip install tensorflow-cpu`, then run this again"
        ) from err
    return builder.data_dir


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", required=True, help="TFDS name, e.g. cifar10, imagenet2012, dtd")
    ap.add_argument("--data_dir", default=os.environ.get("TFDS_DATA_DIR", os.path.expanduser("~/tensorflow_datasets")))
    ap.add_argument(
        "--manual_dir", default=None, help="where manually downloaded archives are (default DATA_DIR/downloads/manual)"
    )
    args = ap.parse_args(argv)
    print(f"prepared {args.dataset} in {prepare(args.dataset, os.path.expanduser(args.data_dir), args.manual_dir)}")


if __name__ == "__main__":
    main()
