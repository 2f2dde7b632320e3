"""NegLabel and CSP: negative labels mined from WordNet, scored against the ID labels.

Mining (host, once per model): each candidate's text feature gets
`d = quantile_{1 - eta}(cos(candidate, every ID class))`; within each word type
(nouns, adjectives) the candidates are sorted by `d` ascending and the lowest
`percent` are kept (15% of the type's candidates that remain after CSP's
near-duplicate exclusion). Scoring (jit):
`S = sum_ID softmax([pos, neg] / T)[ID part]`, averaged over groups of
negatives when grouping is on (the remainder dropped from the end, then one
seeded permutation, as NegLabel's code groups them).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxood.scores.wordnet import Pool

NOUN_TEMPLATES = ("the nice {}",)
ADJ_TEMPLATES = ("This is a {} photo",)
ID_TEMPLATES = ("the nice {}",)
# The seed code's WordNet files lack these two lexicographer files.
NEGLABEL_EXCLUDE = ("noun.animal", "noun.food")
CSP_EXCLUDE = NEGLABEL_EXCLUDE + ("noun.person", "noun.quantity", "noun.group", "adj.pert")
CSP_TEMPLATES = (
    "a close-up photo of the nice {}.", "a photo with the nice {}.", "a good photo with the nice {}.",
    "a photo of the nice {}.", "{}", "the {}", "the good {}", "the nice {}",
)  # fmt: skip
CSP_ADJ_TEMPLATES = ("{}", "a nice photo of {}", "a good photo of {}", "a close-up photo of {}")
CSP_SUPERCLASSES = (
    "environment", "space", "object", "scene", "place", "item", "area", "view", "thing", "pattern",
    "structure", "landscape", "vista", "creature",
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Candidates:
    """Candidate negative labels: the words, their prompt templates and word type (0 noun, 1 adjective)."""

    words: tuple[str, ...]
    templates: tuple[tuple[str, ...], ...]  # per candidate
    word_type: np.ndarray


def neglabel_candidates(pool: Pool, exclude_lexnames=NEGLABEL_EXCLUDE) -> Candidates:
    nouns, adjs = pool.select("n", exclude_lexnames), pool.select("a", exclude_lexnames)
    return Candidates(
        tuple(nouns + adjs),
        (NOUN_TEMPLATES,) * len(nouns) + (ADJ_TEMPLATES,) * len(adjs),
        np.r_[np.zeros(len(nouns), np.int32), np.ones(len(adjs), np.int32)],
    )


def csp_candidates(pool: Pool, seed: int = 0, exclude_lexnames=CSP_EXCLUDE) -> Candidates:
    """CSP's pool: nouns with 8 templates; adjectives as "{adj} {superclass}" (seeded choice) with 4 templates."""
    nouns, adjs = pool.select("n", exclude_lexnames), pool.select("a", exclude_lexnames)
    supers = np.random.RandomState(seed).randint(len(CSP_SUPERCLASSES), size=len(adjs))
    modified = [f"{a} {CSP_SUPERCLASSES[s]}" for a, s in zip(adjs, supers)]
    return Candidates(
        tuple(nouns + modified),
        (CSP_TEMPLATES,) * len(nouns) + (CSP_ADJ_TEMPLATES,) * len(adjs),
        np.r_[np.zeros(len(nouns), np.int32), np.ones(len(adjs), np.int32)],
    )


@jax.jit
def _sim_stats(cand: jax.Array, id_text: jax.Array, q: float) -> tuple[jax.Array, jax.Array]:
    sims = cand @ id_text.T
    return jnp.quantile(sims, q, axis=1), jnp.max(sims, axis=1)


def mine(
    cand_features: np.ndarray,
    word_type: np.ndarray,
    id_features: np.ndarray,
    percent: float = 0.15,
    eta: float = 0.05,
    max_id_similarity: float | None = None,
    chunk: int = 8192,
) -> np.ndarray:
    """Indices of the kept negatives, word type by word type, each by ascending `d`.

    Features are L2-normalised. `max_id_similarity` (CSP: 0.95) first drops
    candidates whose largest cosine to an ID class exceeds it.
    """
    d, top = [], []
    for i in range(0, len(cand_features), chunk):
        a, b = _sim_stats(jnp.asarray(cand_features[i : i + chunk]), jnp.asarray(id_features), 1 - eta)
        d.append(np.asarray(a))
        top.append(np.asarray(b))
    d, top = np.concatenate(d), np.concatenate(top)
    keep_mask = np.ones(len(d), bool) if max_id_similarity is None else top <= max_id_similarity
    kept = []
    for t in np.unique(word_type):
        idx = np.flatnonzero((word_type == t) & keep_mask)
        order = idx[np.argsort(d[idx], kind="stable")]
        kept.append(order[: _kept_count(len(idx), percent)])
    return np.concatenate(kept)


def _kept_count(candidates: int, percent: float) -> int:
    return int(percent * candidates)


def kept_at_most(word_type: np.ndarray, percent: float) -> int:
    """How many negatives `mine` keeps of candidates of these word types: all of them, unless `max_id_similarity`
    drops some first."""
    return sum(_kept_count(n, percent) for n in np.unique(word_type, return_counts=True)[1])


def group_negatives(neg_features: np.ndarray, n_groups: int = 1, seed: int = 0) -> np.ndarray:
    """(G, M', D) negatives: with grouping, as NegLabel's code groups them, the last `M % G` are dropped (in `mine`'s
    order: the adjectives nearest the ID classes), then one seeded permutation splits the rest into G groups."""
    neg = np.asarray(neg_features)
    if n_groups <= 1:
        return neg[None]
    usable = len(neg) - len(neg) % n_groups
    if usable == 0:
        raise ValueError(f"{len(neg)} negatives cannot form {n_groups} groups")
    perm = np.random.RandomState(seed).permutation(usable)
    return neg[:usable][perm].reshape(n_groups, usable // n_groups, -1)


def neglabel_score(image: jax.Array, pos: jax.Array, neg_groups: jax.Array, temperature: float = 0.01) -> jax.Array:
    """NegLabel score for image features (B, D), ID text (C, D), grouped negatives (G, M', D), averaged over G.

    All features L2-normalised. `S_g = sum_ID softmax([pos, neg_g] / T)[ID part]`.
    """
    lse_pos = jax.nn.logsumexp(image @ pos.T / temperature, axis=-1)  # (B,)
    lse_neg = jax.nn.logsumexp(jnp.einsum("bd,gmd->bgm", image, neg_groups) / temperature, axis=-1)  # (B, G)
    return jnp.mean(jnp.exp(lse_pos[:, None] - jnp.logaddexp(lse_pos[:, None], lse_neg)), axis=-1)
