"""Benchmark the input pipeline on this machine.

    python -m jaxood.bench.data [--images 256] [--batch 64] [--steps 12]

(a) ImageNet-like JPEGs (500x375, quality 90) written to a temp folder, read by
`FolderSource` and the training transform (decode, RandomResizedCrop 224
bicubic, flip, CLIP normalisation), batched by `Loader.train` and placed on the
device: images/s, and per core. (b) The eval transform (resize 224, centre
crop). (c) Rendering 10,000 toy-world images. (d) `TfdsSource.labels()`'s one
pass over a TFDS split in `array_record` format (records of such JPEGs), which
few-shot sampling needs once per dataset: records/s, and the time it would take
for ImageNet's 1.28 M. (e) Few-shot sampling's decode check (`DecodeCheck`) over the
JPEGs of (a): images/s, and the time ImageNet's 16,000 picks of 16 shots take on one host.
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time

import numpy as np
from PIL import Image

from jaxood.bench import count, run
from jaxood.data import preprocess, toy_world
from jaxood.data.pipeline import DecodeCheck, Loader, usable_cpus
from jaxood.data.sources import FolderSource, TfdsSource


def _photo(rng: np.random.Generator) -> Image.Image:
    """A 500x375 image whose smooth content plus noise compresses like a photo, not like pure noise."""
    yy, xx = np.mgrid[0:375, 0:500]
    base = np.stack([np.sin(xx / rng.uniform(10, 60)), np.cos(yy / rng.uniform(10, 60)), np.sin((xx + yy) / 40)], -1)
    return Image.fromarray((base * 80 + 128 + rng.normal(0, 12, base.shape)).clip(0, 255).astype(np.uint8))


def _write_jpegs(root: str, n: int) -> None:
    rng = np.random.default_rng(0)
    for i in range(n):
        d = os.path.join(root, f"class_{i % 8}")
        os.makedirs(d, exist_ok=True)
        _photo(rng).save(os.path.join(d, f"{i}.jpg"), quality=90)


def _label_scan(records: int) -> float:
    """Records/s of `TfdsSource.labels()` over a freshly prepared array_record split of JPEG records."""
    import tensorflow_datasets as tfds

    rng = np.random.default_rng(0)
    jpegs = []
    for _ in range(16):
        buf = io.BytesIO()
        _photo(rng).save(buf, format="JPEG", quality=90)
        jpegs.append(buf.getvalue())

    class JaxoodBenchRecords(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            image = tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg")
            label = tfds.features.ClassLabel(num_classes=1000)
            features = tfds.features.FeaturesDict({"image": image, "label": label})
            return tfds.core.DatasetInfo(builder=self, features=features)

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            for i in range(records):
                yield i, {"image": io.BytesIO(jpegs[i % len(jpegs)]), "label": i % 1000}

    with tempfile.TemporaryDirectory() as tmp:
        JaxoodBenchRecords(data_dir=tmp, file_format="array_record").download_and_prepare()
        src = TfdsSource("jaxood_bench_records", "train", data_dir=tmp)
        start = time.perf_counter()
        src.labels()
        return records / (time.perf_counter() - start)


def _rate(loader_iter, steps: int, batch: int) -> float:
    next(loader_iter)  # thread pool and first transfer warm up
    start = time.perf_counter()
    for _ in range(steps):
        b = next(loader_iter)
        b["image"].block_until_ready()
    return steps * batch / (time.perf_counter() - start)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(
        prog="python -m jaxood.bench.data", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--images", type=count(), default=256)
    ap.add_argument("--batch", type=count(), default=64)
    ap.add_argument("--steps", type=count(), default=12)
    ap.add_argument("--toy_images", type=count(), default=10_000)
    ap.add_argument("--records", type=count(), default=4000)
    args = ap.parse_args(argv)
    cores = usable_cpus()
    r = {}
    with tempfile.TemporaryDirectory() as tmp:
        _write_jpegs(tmp, args.images)
        src = FolderSource(tmp)
        train = Loader(src, preprocess.clip_train(224), global_batch=args.batch).train()
        r["train"] = _rate(train, args.steps, args.batch)
        ev = Loader(src, preprocess.clip_eval(224), global_batch=args.batch)
        r["eval"] = _rate(ev.train(), args.steps, args.batch)  # the eval transform, repeated epochs
        start = time.perf_counter()
        DecodeCheck(src)(np.arange(len(src)))
        r["decode_check"] = len(src) / (time.perf_counter() - start)
    print(
        f"(a) train pipeline (JPEG 500x375 -> RandomResizedCrop 224, flip, normalise, batch {args.batch}): "
        f"{r['train']:.0f} img/s on {cores} cores, {r['train'] / cores:.0f} img/s per core"
    )
    print(f"(b) eval pipeline (resize 224, centre crop): {r['eval']:.0f} img/s, {r['eval'] / cores:.0f} per core")
    world = toy_world.ToyWorld("pretrain", per_class=-(-args.toy_images // 28))
    start = time.perf_counter()
    for i in range(args.toy_images):
        world.example(i % len(world))
    r["toy_seconds"] = time.perf_counter() - start
    print(f"(c) toy world: {args.toy_images} images (64 px) rendered in {r['toy_seconds']:.1f} s on one core")
    r["label_records_per_s"] = _label_scan(args.records)
    print(
        f"(d) TFDS label scan (array_record, {args.records} JPEG records): {r['label_records_per_s']:.0f} records/s, "
        f"so {1_281_167 / r['label_records_per_s'] / 60:.1f} min for ImageNet's train split (once: then cached)"
    )
    print(
        f"(e) few-shot decode check: {r['decode_check']:.0f} img/s on {cores} cores, so "
        f"{16_000 / r['decode_check']:.0f} s for ImageNet's 16,000 picks of 16 shots on one such host"
    )
    return r


if __name__ == "__main__":
    run(main)
