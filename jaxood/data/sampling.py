"""Few-shot subsets, deterministic by seed (same on every host)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from jaxood.errors import InvalidInput, agreeing, first_ten, not_one_of

SHOT_SAMPLINGS = ("per_class", "stratified")


def shot_quota(per_class: np.ndarray, shots: int, seed: int = 0, sampling: str = "per_class") -> np.ndarray:
    """How many examples each class of `per_class` (its examples' counts) gives to `shots`-shot training.

    "per_class": `shots` each, the papers' "16 shots per class". "stratified": SOT-GLP's released code, a
    stratified split of `shots` x classes examples (scikit-learn's `StratifiedShuffleSplit(train_size=shots *
    classes)`), where each class gives its share in proportion to its size: the floor of its exact share, and one
    more for the classes with the largest remainders, ties in an order drawn from `seed`. On ImageNet's train split
    (732 to 1,300 images a class, 1,281,167 in all) the classes' shares of 16 shots' 16,000 are 9.14 to 16.24.
    """
    per_class = np.asarray(per_class, np.int64)
    if sampling == "per_class":
        return np.full(per_class.shape, shots, np.int64)
    if sampling != "stratified":
        raise InvalidInput(not_one_of("few-shot sampling", sampling, SHOT_SAMPLINGS))
    want, total = shots * per_class.size, int(per_class.sum())
    if want > total:
        raise InvalidInput(
            f"stratified {shots}-shot sampling takes {shots} x {per_class.size} classes = {want} examples, more "
            f"than the training set's {total}: lower --config.shots, or set it to 0 to train on every image"
        )
    quota, remainder = np.divmod(per_class * want, total)  # exact: no float ties
    ties = np.random.RandomState(seed).permutation(per_class.size)
    quota[np.lexsort((ties, -remainder))[: want - int(quota.sum())]] += 1
    return quota


def sampling_name(shots: int, sampling: str) -> str:
    """How the log and errors call `shots`-shot sampling by `sampling`: "16-shot sampling", "stratified 16-shot
    sampling"."""
    return f"{'stratified ' * (sampling == 'stratified')}{shots}-shot sampling"


def few_shot_indices(
    labels: np.ndarray,
    shots: int | None,
    seed: int = 0,
    num_classes: int = 0,
    decodes: Callable[[np.ndarray], np.ndarray] | None = None,
    sampling: str = "per_class",
) -> np.ndarray:
    """Indices of `shots`-shot training examples (all examples when `shots` is None): each class's `shot_quota`,
    exactly `shots` of each by default.

    For each class (label >= 0), a seeded permutation of its examples is cut
    at its quota; the result is sorted. A class with fewer than `shots` examples
    ("per_class") is an error naming it, and so is a class with none at all below the
    highest label or `num_classes` (a partly prepared dataset would otherwise
    train those classes' prompts on nothing), with `shots` None too.

    With `decodes` (indices -> whether each example decodes, a bool array), an
    undecodable pick is passed over for the next example of its class in the
    seeded order (it was masked out of every step, and its class trained on
    fewer shots): a class with fewer decodable examples than its quota keeps
    those it has, and one with none is an error naming it.
    """
    labels = np.asarray(labels)
    per_class = np.bincount(labels[labels >= 0], minlength=num_classes)
    least = shots if shots and sampling == "per_class" else 1  # a class without an image trained on nothing, unsaid
    short = np.flatnonzero(per_class < least)
    sampled = sampling_name(shots, sampling) if shots else "training on every image"
    if short.size:
        shown = first_ten(f"{c} ({per_class[c]})" for c in short)
        fewer = f"fewer than {least} examples" if least > 1 else "no example"
        fix = ", or lower --config.shots" if least > 1 else ""
        raise InvalidInput(
            f"{sampled}: {short.size} of {per_class.size} classes {agreeing(short.size, 'has', 'have')} {fewer} "
            f"(class (examples): {shown}); check that the training set is complete{fix}"
        )
    if shots is None:
        return np.flatnonzero(labels >= 0)
    quota = shot_quota(per_class, shots, seed, sampling)
    rng = np.random.RandomState(seed)
    order = np.argsort(labels, kind="stable")  # unlabelled (< 0) first, then class 0, 1, ...
    starts = np.count_nonzero(labels < 0) + np.cumsum(per_class) - per_class
    orders = [order[s + rng.permutation(c)] for s, c in zip(starts, per_class)]  # every class has an example
    if decodes is not None:
        return np.sort(np.concatenate(_decodable_picks(orders, quota, decodes, sampled)))
    picked = [o[:q] for o, q in zip(orders, quota)]
    return np.sort(np.concatenate(picked)) if picked else np.zeros((0,), np.int64)


def _decodable_picks(
    orders: list[np.ndarray], quota: np.ndarray, decodes: Callable[[np.ndarray], np.ndarray], sampled: str
) -> list[np.ndarray]:
    """Each class's first `quota` examples in its seeded `order` that decode, checked in rounds: one call of
    `decodes` over every class's tries, then over the next examples of the classes whose tries failed."""
    picked = [o[:0] for o in orders]
    tried = np.zeros(len(orders), np.int64)
    while True:
        want = [min(q - len(p), len(o) - t) for p, o, t, q in zip(picked, orders, tried, quota)]
        if not any(want):
            break
        tries = [o[t : t + w] for o, t, w in zip(orders, tried, want)]
        ok = np.split(np.asarray(decodes(np.concatenate(tries)), bool), np.cumsum(want)[:-1])
        picked = [np.concatenate([p, t[k]]) for p, t, k in zip(picked, tries, ok)]
        tried += want
    if none := [c for c, (p, q) in enumerate(zip(picked, quota)) if q and not len(p)]:
        shown = first_ten(map(str, none))
        raise InvalidInput(
            f"{sampled}: {len(none)} of {len(orders)} classes {agreeing(len(none), 'has', 'have')} no decodable "
            f"example (class: {shown}); replace {agreeing(len(none), 'its', 'their')} undecodable images (the log "
            "names them)"
        )
    return picked
