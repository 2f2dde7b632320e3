"""Few-shot subsets and ID/OOD class splits, deterministic by seed (same on every host)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from jaxood.errors import InvalidInput, first_ten


def few_shot_indices(
    labels: np.ndarray,
    shots: int | None,
    seed: int = 0,
    num_classes: int = 0,
    decodes: Callable[[np.ndarray], np.ndarray] | None = None,
) -> np.ndarray:
    """Indices of exactly `shots` examples per class (all examples when `shots` is None).

    For each class (label >= 0), a seeded permutation of its examples is cut
    at `shots`; the result is sorted. A class with fewer than `shots` examples
    is an error naming it, and so is a class with none at all below the
    highest label or `num_classes` (a partly prepared dataset would otherwise
    train those classes' prompts on nothing), with `shots` None too.

    With `decodes` (indices -> whether each example decodes, a bool array), an
    undecodable pick is passed over for the next example of its class in the
    seeded order (it was masked out of every step, and its class trained on
    fewer shots): a class with fewer than `shots` decodable examples keeps
    those it has, and one with none is an error naming it.
    """
    labels = np.asarray(labels)
    per_class = np.bincount(labels[labels >= 0], minlength=num_classes)
    short = np.flatnonzero(per_class < (shots or 1))  # every image: a class without one trained on nothing, unsaid
    if short.size:
        shown = first_ten(f"{c} ({per_class[c]})" for c in short)
        sampled, fewer, fix = (
            (f"{shots}-shot sampling", f"fewer than {shots} examples", ", or lower --config.shots")
            if shots
            else ("training on every image", "no example", "")
        )
        raise InvalidInput(
            f"{sampled}: {short.size} of {per_class.size} classes have {fewer} (class (examples): {shown}); check "
            f"that the training set is complete{fix}"
        )
    if shots is None:
        return np.flatnonzero(labels >= 0)
    rng = np.random.RandomState(seed)
    order = np.argsort(labels, kind="stable")  # unlabelled (< 0) first, then class 0, 1, ...
    starts = np.count_nonzero(labels < 0) + np.cumsum(per_class) - per_class
    orders = [order[s + rng.permutation(c)] for s, c in zip(starts, per_class) if c]  # every class has c >= shots
    picked = [o[:shots] for o in orders] if decodes is None else _decodable_picks(orders, shots, decodes)
    return np.sort(np.concatenate(picked)) if picked else np.zeros((0,), np.int64)


def _decodable_picks(
    orders: list[np.ndarray], shots: int, decodes: Callable[[np.ndarray], np.ndarray]
) -> list[np.ndarray]:
    """Each class's first `shots` examples in its seeded `order` that decode, checked in rounds: one call of
    `decodes` over every class's tries, then over the next examples of the classes whose tries failed."""
    picked = [o[:0] for o in orders]
    tried = np.zeros(len(orders), np.int64)
    while True:
        want = [min(shots - len(p), len(o) - t) for p, o, t in zip(picked, orders, tried)]
        if not any(want):
            break
        tries = [o[t : t + w] for o, t, w in zip(orders, tried, want)]
        ok = np.split(np.asarray(decodes(np.concatenate(tries)), bool), np.cumsum(want)[:-1])
        picked = [np.concatenate([p, t[k]]) for p, t, k in zip(picked, tries, ok)]
        tried += want
    if none := [c for c, p in enumerate(picked) if not len(p)]:
        shown = first_ten(map(str, none))
        raise InvalidInput(
            f"{shots}-shot sampling: {len(none)} of {len(orders)} classes have no decodable example (class: {shown}); "
            "replace their undecodable images (the log names them)"
        )
    return picked


def class_split(n_id: int, n_ood: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Fine-grained ID/OOD classes: ID = `RandomState(seed).choice(n_id + n_ood, n_id, replace=False)`.

    As in ASCOOD's code (methods.md §4): Cars 150/46, Aircraft 90/10. Both sorted.
    """
    ids = np.sort(np.random.RandomState(seed).choice(n_id + n_ood, n_id, replace=False))
    return ids, np.setdiff1d(np.arange(n_id + n_ood), ids)


def relabel(labels: np.ndarray, id_classes: np.ndarray) -> np.ndarray:
    """Map original labels to 0..len(id_classes)-1, and every other class to -1 (OOD)."""
    table = np.full(int(max(np.max(labels), np.max(id_classes))) + 1, -1, np.int32)
    table[np.asarray(id_classes)] = np.arange(len(id_classes), dtype=np.int32)
    return np.where(np.asarray(labels) >= 0, table[np.maximum(labels, 0)], -1)
