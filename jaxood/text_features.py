"""L2-normalised CLIP text features of templated prompts, in batches, cached on disk.

The cache key is a hash of the text tower's parameters, the CLIP's architecture
and compute dtype, and the exact prompts, so a second evaluation with the same
model and templates reads the ~70k WordNet candidates' features instead of
encoding them again.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import Mesh

from jaxood import distributed
from jaxood.cache import DEFAULT_CACHE, load_npy, save_npy
from jaxood.data.pipeline import data_mesh, every_device, place, replicate, split_rows
from jaxood.errors import InvalidInput
from jaxood.models import clip
from jaxood.models.tokenizer import tokenize
from jaxood.progress import Progress


def model_fingerprint(params) -> str:
    """A hash of the parameters that shape text features."""
    h = hashlib.sha1()
    text_leaves = {k: params[k] for k in ("text_model", "text_projection") if k in params}
    for leaf in jax.tree.leaves(text_leaves):
        h.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
    return h.hexdigest()[:16]


@functools.lru_cache(maxsize=8)
def _encoder(model: clip.CLIP, mesh: Mesh):
    """Text features of a prompt batch split over the mesh's data axis (whatever its placement), gathered onto
    every device."""

    def encode(params, ids):
        ids = jax.lax.with_sharding_constraint(ids, split_rows(mesh))
        return model.apply({"params": params}, ids, method="encode_text")

    return jax.jit(encode, out_shardings=every_device(mesh))


def encode_texts(
    model: clip.CLIP, params, texts: Sequence[str], batch_size: int = 256, label: str = "text features"
) -> np.ndarray:
    """Raw (unnormalised) features (N, D) of `texts`, EOT-truncated batch by batch, each batch split over the
    devices (`batch_size` rounds up to a multiple of their number). In a multi-host job every host passes the same
    `texts`, which are not compared here (`templated_features` compares them once)."""
    mesh = data_mesh()
    enc = _encoder(model, mesh)
    batch_size = -(-batch_size // mesh.size) * mesh.size
    params = replicate(params, mesh)  # once, not with every batch
    progress = Progress(label, len(texts), "prompts") if len(texts) > 4 * batch_size else None
    out = []
    # Sorting by length groups short prompts, so most batches truncate to few tokens.
    ids = tokenize(texts)
    order = np.argsort(ids.argmax(-1), kind="stable")
    for i in range(0, len(texts), batch_size):
        chunk = ids[order[i : i + batch_size]]
        n = len(chunk)
        if n < batch_size:  # pad so every batch has the same leading shape
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch_size - n, 0)])
        ids_batch = place(clip.truncate_at_eot(chunk), split_rows(mesh))  # each device gets its rows only
        out.append(np.asarray(enc(params, ids_batch))[:n])
        if progress:
            progress.update(n)
    feats = np.empty((len(texts), out[0].shape[-1]), np.float32)
    feats[order] = np.concatenate(out)
    return feats


def templated_features(
    model: clip.CLIP,
    params,
    words: Sequence[str],
    templates: Sequence[str] | Sequence[Sequence[str]],
    cache_dir: str | None = DEFAULT_CACHE,
    label: str = "text features",
    fingerprint: str | None = None,
) -> np.ndarray:
    """Per word, the mean of its templates' raw features, then normalised.

    `templates` is one tuple of templates for all words, or one tuple per word
    (words with the same tuple are encoded together). One template is plain
    prompting. `fingerprint`: `model_fingerprint(params)` when the caller has it
    (callers with several prompt sets hash the text tower once).
    """
    per_word = templates if templates and not isinstance(templates[0], str) else [tuple(templates)] * len(words)
    key = hashlib.sha1((fingerprint or model_fingerprint(params)).encode())
    key.update(f"{np.dtype(model.dtype).name} {model.cfg}".encode())  # how the weights compute: bfloat16 differs
    for w, t in zip(words, per_word):
        key.update(("\x00".join(t) + "\x01" + w + "\x02").encode())
    # The hosts compare the prompts once, before any is encoded: a host built from another config or another jaxood
    # checkout stopped in JAX's check of the first prompt batch, an AssertionError printing token ids.
    if jax.process_count() > 1 and (hosts := distributed.differing([label], [distributed.digest(key.digest())])[1]):
        raise InvalidInput(
            f"the hosts of this job hold other {label} to encode: host(s) {', '.join(map(str, hosts))} differ from "
            "host 0. Each host builds the prompts from its own config, class names and jaxood checkout: give every "
            "host the same command, the same datasets and the same checkout"
        )
    path = os.path.join(cache_dir, "text_features", key.hexdigest() + ".npy") if cache_dir else None
    cached = load_npy(path, (len(words), model.cfg.projection_dim)) if path else None
    if distributed.on_every_host(cached is not None):  # else every host encodes them, together
        distributed.log(f"[{label}] {len(words)} cached text features from {path}")
        return cached
    feats = np.zeros((len(words), model.cfg.projection_dim), np.float32)
    groups: dict[tuple[str, ...], list[int]] = {}
    for i, t in enumerate(per_word):
        groups.setdefault(tuple(t), []).append(i)
    for tmpl, idx in groups.items():
        prompts = [t.format(words[i]) for t in tmpl for i in idx]
        enc = encode_texts(model, params, prompts, label=label).reshape(len(tmpl), len(idx), -1)
        raw = enc.mean(0)  # the raw (unnormalised) features averaged over templates, then normalised
        feats[idx] = raw / np.linalg.norm(raw, axis=-1, keepdims=True)
    if path:
        save_npy(path, feats)
    return feats
