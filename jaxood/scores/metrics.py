"""OOD metrics on host (NumPy). ID is the positive class; a higher score means more ID.

- `auroc`: area under the ROC curve with ties counted half (= sklearn's `roc_auc_score`).
- `aupr_in` / `aupr_out`: average precision with ID / OOD as the positive class
  (OOD scored by `-score`) (= sklearn's `average_precision_score`).
- `roc_curve`: the (FPR, TPR) points the report plots (= sklearn's `roc_curve`
  with `drop_intermediate=False`); their trapezoid area is `auroc`.
- `tied_pairs`: the fraction of (ID, OOD) pairs whose scores are equal, which
  AUROC counts half: had the score told them apart, AUROC could be up to half
  of it higher or lower (a softmax saturated at 1 in float32 ties many).
- `fpr95`: the threshold is the largest score that keeps at least 95% of the ID
  samples at or above it (the `floor(0.05 n)`-th smallest ID score); FPR95 is
  the fraction of OOD samples at or above that threshold (ties count as false
  positives).

Scores must not be NaN, which has no place in the ranking (`ood_metrics` raises,
as sklearn does); +-inf rank as the largest and smallest scores.
"""

from __future__ import annotations

import numpy as np


def auroc(id_scores, ood_scores) -> float:
    """Mann-Whitney U with average ranks for ties."""
    pos, neg = np.asarray(id_scores, np.float64), np.asarray(ood_scores, np.float64)
    both = np.concatenate([pos, neg])
    order = np.argsort(both, kind="mergesort")
    ranks = np.empty(len(both))
    sorted_vals = both[order]
    # average rank over runs of equal values
    starts = np.flatnonzero(np.r_[True, sorted_vals[1:] != sorted_vals[:-1]])
    ends = np.r_[starts[1:], len(both)]
    avg = (starts + ends + 1) / 2.0  # 1-based average rank of each run
    ranks[order] = np.repeat(avg, ends - starts)
    u = ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2
    return float(u / (len(pos) * len(neg)))


def _counts_per_threshold(pos_scores, neg_scores) -> tuple[np.ndarray, np.ndarray]:
    """True and false positives at each distinct score taken as threshold, highest first."""
    s = np.concatenate([pos_scores, neg_scores]).astype(np.float64)
    y = np.r_[np.ones(len(pos_scores)), np.zeros(len(neg_scores))]
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[s[1:] != s[:-1], True]  # last index of each run of equal scores
    return np.cumsum(y)[last], np.cumsum(1 - y)[last]


def roc_curve(id_scores, ood_scores) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, TPR) from (0, 0) through every distinct threshold; its trapezoid area is `auroc`."""
    tp, fp = _counts_per_threshold(id_scores, ood_scores)
    return np.r_[0.0, fp / len(ood_scores)], np.r_[0.0, tp / len(id_scores)]


def average_precision(pos_scores, neg_scores) -> float:
    """Sum over distinct thresholds of (recall step) x precision, positives = `pos_scores`."""
    tp, fp = _counts_per_threshold(pos_scores, neg_scores)
    recall = tp / len(pos_scores)
    precision = tp / (tp + fp)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def tied_pairs(id_scores, ood_scores) -> float:
    """The fraction of (ID, OOD) pairs with equal scores."""
    values, counts = np.unique(np.asarray(id_scores, np.float64), return_counts=True)
    ood = np.asarray(ood_scores, np.float64)
    at = np.minimum(np.searchsorted(values, ood), len(values) - 1)
    return float(counts[at][values[at] == ood].sum() / (counts.sum() * len(ood)))


def tpr95_threshold(id_scores) -> float:
    """The largest score that keeps at least 95% of the ID samples at or above it."""
    ids = np.sort(np.asarray(id_scores, np.float64))
    return float(ids[int(np.floor(0.05 * len(ids)))])


def fpr_at_95_tpr(id_scores, ood_scores) -> float:
    return float(np.mean(np.asarray(ood_scores) >= tpr95_threshold(id_scores)))


def ood_metrics(id_scores, ood_scores) -> dict[str, float]:
    id_scores, ood_scores = np.asarray(id_scores, np.float64), np.asarray(ood_scores, np.float64)
    if id_scores.size == 0 or ood_scores.size == 0:
        raise ValueError(f"need ID and OOD scores, got {id_scores.size} and {ood_scores.size}")
    if np.isnan(id_scores).any() or np.isnan(ood_scores).any():
        raise ValueError(
            f"NaN scores have no rank: {int(np.isnan(id_scores).sum())} ID and {int(np.isnan(ood_scores).sum())} OOD"
        )
    return {
        "fpr95": fpr_at_95_tpr(id_scores, ood_scores),
        "auroc": auroc(id_scores, ood_scores),
        "aupr_in": average_precision(id_scores, ood_scores),
        "aupr_out": average_precision(-ood_scores, -id_scores),
    }


def accuracy(logits_or_pred, labels) -> float:
    """Top-1 accuracy from logits (N, C) or predictions (N,); a row of logits with a NaN is wrong (no class)."""
    pred = np.asarray(logits_or_pred)
    if pred.ndim == 2:
        pred = np.where(np.isnan(pred).any(-1), -1, pred.argmax(-1))
    return float(np.mean(pred == np.asarray(labels)))
