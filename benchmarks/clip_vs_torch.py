"""Benchmark jaxood's CLIP towers against Hugging Face PyTorch on this machine.

    python benchmarks/clip_vs_torch.py [--image_batch 8] [--seconds 20] [--model DIR]

(a) `encode_image`, ViT-B/16, 224 px: images/s; (b) `encode_text` on the 1000
ImageNet prompts "a photo of a {c}.": prompts/s. Both frameworks get the same
random ViT-B/16 weights (or `--model`, a local HF CLIP directory) and the same
inputs; outputs are compared before timing. Needs the `test` extra (torch), which
is why it lives outside the `jaxood` package.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import jax
import numpy as np

from jaxood.bench import VIT_B16, count, positive, run
from jaxood.data.classnames import imagenet_classnames
from jaxood.models import clip
from jaxood.models.tokenizer import tokenize


def _interleaved_rates(fns, items_per_call: int, seconds: float) -> list[float]:
    """Items/s of each fn from the median of alternating calls (the 2-core machine's load drifts)."""
    for fn in fns:
        fn()
    times = [[] for _ in fns]
    start = time.perf_counter()
    while time.perf_counter() - start < seconds * len(fns) or len(times[0]) < 3:
        for fn, ts in zip(fns, times):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
    return [items_per_call / float(np.median(ts)) for ts in times]


def _rate(fn, items_per_call: int, seconds: float, warmup: bool = True) -> float:
    """Items per second of `fn()` over at least `seconds` (after one warm-up call: compilation)."""
    if warmup:
        fn()
    calls, start = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return calls * items_per_call / elapsed


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="local Hugging Face CLIP directory (default: random ViT-B/16 weights)")
    ap.add_argument("--image_batch", type=count(), default=8)
    ap.add_argument("--text_batch", type=count(), default=250)
    ap.add_argument("--seconds", type=positive, default=20.0, help="time per measurement")
    args = ap.parse_args(argv)

    import torch
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        if args.model:
            directory = args.model
            hf = CLIPModel.from_pretrained(directory).eval()
        else:
            directory = tmp
            hf = CLIPModel(CLIPConfig(**VIT_B16)).eval()
            hf.save_pretrained(directory)
        model, params = clip.load(directory)
    print(
        f"jax {jax.__version__} on {jax.devices()[0].platform} ({os.cpu_count()} cpus); torch {torch.__version__} "
        f"with {torch.get_num_threads()} threads"
    )

    size = model.cfg.image_size
    images = np.random.RandomState(0).randn(args.image_batch, size, size, 3).astype(np.float32)
    images_t = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
    encode_image = jax.jit(lambda p, x: model.apply({"params": p}, x, method="encode_image"))
    encode_text = jax.jit(lambda p, i: model.apply({"params": p}, i, method="encode_text"))

    ids = tokenize([f"a photo of a {c}." for c in imagenet_classnames()])
    batches = [ids[i : i + args.text_batch] for i in range(0, len(ids), args.text_batch)]

    def jax_text():
        for b in batches:
            encode_text(params, clip.truncate_at_eot(b)).block_until_ready()

    def torch_text(cut: bool):
        with torch.inference_mode():
            for b in batches:
                b = clip.truncate_at_eot(b) if cut else b
                hf.get_text_features(input_ids=torch.from_numpy(b.astype(np.int64)))

    def torch_image():
        with torch.inference_mode():
            hf.get_image_features(pixel_values=images_t)

    with torch.inference_mode():
        want = hf.get_image_features(pixel_values=images_t).pooler_output.numpy()
    err = float(np.abs(np.asarray(encode_image(params, images)) - want).max())
    print(f"encode_image max |jaxood - torch| = {err:.2e}")

    r = {}
    r["image_jax"], r["image_torch"] = _interleaved_rates(
        [lambda: encode_image(params, images).block_until_ready(), torch_image], args.image_batch, args.seconds
    )
    r["text_jax"] = _rate(jax_text, len(ids), args.seconds)
    r["text_torch_77"] = _rate(lambda: torch_text(False), len(ids), args.seconds, warmup=False)
    r["text_torch_cut"] = _rate(lambda: torch_text(True), len(ids), args.seconds, warmup=False)
    print(
        f"(a) encode_image {args.model or 'ViT-B/16 (random weights)'}, {size} px, batch {args.image_batch}: "
        f"jaxood {r['image_jax']:.2f} img/s, "
        f"torch {r['image_torch']:.2f} img/s, ratio {r['image_jax'] / r['image_torch']:.2f}x"
    )
    print(
        f"(b) encode_text 1000 ImageNet prompts: jaxood (EOT-truncated) {r['text_jax']:.1f} prompts/s, "
        f"torch (77 tokens) {r['text_torch_77']:.1f} prompts/s, ratio {r['text_jax'] / r['text_torch_77']:.2f}x; "
        f"torch given the same truncation {r['text_torch_cut']:.1f} prompts/s, ratio "
        f"{r['text_jax'] / r['text_torch_cut']:.2f}x"
    )
    return r


if __name__ == "__main__":
    run(main)
