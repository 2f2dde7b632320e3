"""Evaluate OOD detection: `python -m jaxood.evaluate --config=configs/zeroshot.py:toy --workdir=DIR`.

Scores the ID test set and every configured OOD set with every configured
score, then writes to the workdir:

- `results.json`: per score and OOD set fpr95, auroc, aupr_in, aupr_out and
  their mean; id_accuracy; example counts; undecodable images; NaN scores (a
  row's metrics on a set with any are null); tied (ID, OOD) pairs; the config;
  package versions.
- `results.md`: tables laid out like the papers' (rows = method / score,
  columns = OOD sets and their average).
- `scores.npz`: every example's scores, predictions, label and index in its
  dataset, per set, which the tables were computed from.
- `hist_<score>.png` (ID vs each OOD set, with the 95% TPR threshold) and
  `roc_<score>.png`.

A report already in the workdir moves to `earlier_results/<its UTC time>/` first.

Evaluation runs sharded over all devices, and counts every example once.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import itertools
import json
import os
import string
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from jaxood import distributed, report, settings, workdir_lock
from jaxood.cache import DEFAULT_CACHE, can_hold_a_folder
from jaxood.data.classnames import is_wnid
from jaxood.data.datasets import make_sources
from jaxood.data.pipeline import Loader, check_batch, data_mesh, replicate
from jaxood.data.preprocess import clip_eval
from jaxood.data.sources import Source
from jaxood.errors import InvalidInput, NotSaved, agreeing, each_with_nearest, joined, not_one_of, write_fix
from jaxood.memory import compile_within_memory
from jaxood.methods import check_command, command_for
from jaxood.models import clip
from jaxood.models.tokenizer import get_tokenizer
from jaxood.preemption import StopsAtOnce, raise_if_stopped
from jaxood.progress import Progress
from jaxood.run_folders import EXPORT, PRETRAINING, last_saved_step, run_method
from jaxood.scores import logits as logits_lib
from jaxood.scores import mcm as mcm_lib
from jaxood.scores import metrics, neglabel
from jaxood.scores import odin as odin_lib
from jaxood.scores.wordnet import load_pool
from jaxood.text_features import model_fingerprint, templated_features

# Zero-shot GL-MCM's local patch features (`config.gl_mcm.local_features`) -> the CLIP method giving them: GL-MCM's
# own (the last block's value path) or the V-V stream (SOT-GLP's).
GL_MCM_LOCAL_FEATURES = {"value": "encode_image_value_patches", "vv": "encode_image_dense"}
SCORE_TITLES = {
    "mcm": "MCM", "gl_mcm": "GL-MCM", "max_logit": "MaxLogit", "msp": "MSP", "energy": "Energy", "neglabel": "NegLabel",
    "csp": "CSP", "odin": "ODIN", "iodin": "i-ODIN",
}  # fmt: skip
ZERO_SHOT_SCORES = tuple(SCORE_TITLES)  # what config.scores may name
# What the zero-shot rows read besides their scores' own settings: their names and class prompt. (Their text-feature
# cache, `cache_dir`, changes no figure: a command that always names one is taken with the rows off.)
ZERO_SHOT_SETTINGS = ("scores", "mcm_template")
# The zero-shot scores that are a softmax over the ID classes: with one class, 1 for every image.
OVER_ID_CLASSES = ("mcm", "gl_mcm", "msp", "odin", "iodin")
# Scores of CLIP's logits `exp(logit_scale) cos` (T = 1), as a classifier's.
LOGIT_SCORES = {"max_logit": logits_lib.max_logit, "msp": logits_lib.msp, "energy": logits_lib.energy}
# Scores of the same logits after a step of the input along their gradient (a backward pass through the image tower),
# at config.<score>.temperature and .eps.
INPUT_SCORES = {"odin": odin_lib.odin, "iodin": odin_lib.iodin}
# The config keys only evaluation reads (configs/zeroshot.py): a resumed training run may change them (jaxood.train).
EVAL_KEYS = (
    "eval_batch_size", "scores", "mcm_template", "mcm", "gl_mcm", "neglabel", "csp", "odin", "iodin", "cache_dir",
    "plots", "ood_root", "coop_root", "id_dataset", "ood_datasets", "ood_groups",
)  # fmt: skip


# What shrinks an evaluation batch that cannot fit in a device (a training run's scorers add what the run saved:
# jaxood.train's TRAINING_EVAL_FIXES).
EVAL_BATCH_FIXES = "--config.eval_batch_size lower"


@dataclasses.dataclass
class Scorer:
    """What evaluation runs on each batch, as one compiled call `scorer(images)`.

    `fn(args, images) -> {"pred/<method>": (B,) class, "<method> / <score>": (B,) score, ...}` is traceable;
    `args` holds the arrays it reads (parameters, text features), passed to the call rather than closed over,
    which would compile them into it as constants. `rows` names the score rows in table order (e.g.
    "zero-shot / MCM"). `args` may be replaced by arrays of the same shapes and placements, for the same `fn` (a
    training run's ID accuracy every `eval_every` steps): the call compiled for them runs on. `fixes` is what the
    refusal of a batch too large for a device asks to set.
    """

    fn: Callable[[Any, jax.Array], dict[str, jax.Array]]
    args: Any
    rows: tuple[str, ...]
    fixes: str = EVAL_BATCH_FIXES

    def __post_init__(self):
        self._jitted = jax.jit(self.fn)
        self._checked: dict = {}  # batch type -> executable known to fit

    def __call__(self, images: jax.Array) -> dict[str, jax.Array]:
        """Compiled once per batch type, and refused before it runs if it cannot fit in a device (it ended in XLA's
        RESOURCE_EXHAUSTED; after a training run, at its closing evaluation)."""
        key = (images.shape, images.dtype, getattr(images, "sharding", None))
        if key not in self._checked:
            self._checked[key] = compile_within_memory(
                self._jitted, self.args, images, what="evaluation batch", fixes=self.fixes
            )
        return self._checked[key](self.args, images)


def combine(*scorers: Scorer) -> Scorer:
    """One scorer running several (e.g. the zero-shot baseline next to a trained method) in one call.

    Each array is passed once however many scorers read it, so XLA computes what they share once: the zero-shot
    rows and a trained method's rows on the same frozen CLIP encode the images once, not once per scorer.
    """
    leaves, treedef = jax.tree.flatten(tuple(s.args for s in scorers))
    unique = {id(leaf): leaf for leaf in leaves}  # in first-seen order
    slot = {key: i for i, key in enumerate(unique)}
    where = [slot[id(leaf)] for leaf in leaves]

    def fn(unique_leaves, images):
        args = jax.tree.unflatten(treedef, [unique_leaves[i] for i in where])
        out = {}
        for scorer, a in zip(scorers, args):
            out.update(scorer.fn(a, images))
        return out

    return Scorer(fn, list(unique.values()), tuple(r for s in scorers for r in s.rows))


def predictions_only(scorer: Scorer) -> Scorer:
    """`scorer`'s class predictions (its `pred/` outputs) alone: XLA leaves out the work of its scores."""

    def fn(args, images):
        return {k: v for k, v in scorer.fn(args, images).items() if k.startswith("pred/")}

    return Scorer(fn, scorer.args, ())


def _subsample(cands: neglabel.Candidates, limit: int) -> neglabel.Candidates:
    """An evenly spaced, deterministic subset of at most `limit` candidates per word type (tests, demos)."""
    if not limit:
        return cands
    keep = np.concatenate(
        [
            idx[np.linspace(0, len(idx) - 1, min(limit, len(idx))).astype(int)]
            for idx in (np.flatnonzero(cands.word_type == t) for t in np.unique(cands.word_type))
        ]
    )
    return neglabel.Candidates(
        tuple(cands.words[i] for i in keep), tuple(cands.templates[i] for i in keep), cands.word_type[keep]
    )


def negative_candidates(c: ml_collections.ConfigDict, kind: str) -> neglabel.Candidates:
    """The candidate words NegLabel (`kind="neglabel"`) or CSP mines its negative labels from, `c` its settings."""
    pool = load_pool()
    cands = neglabel.csp_candidates(pool, seed=c.seed) if kind == "csp" else neglabel.neglabel_candidates(pool)
    return _subsample(cands, c.max_candidates)


def _too_few_negatives(
    kept: int, candidates: int, c: ml_collections.ConfigDict, kind: str, mined: bool
) -> InvalidInput:
    """`kind.n_groups` groups need a negative label each (with none, every image got the same score, silently).
    Before mining, `kept` is what `percent` allows; CSP's mining first drops candidates too close to an ID class."""
    after = f", after csp.max_id_similarity {c.max_id_similarity} dropped those closer to an ID class" if mined else ""
    return InvalidInput(
        f"{kind}.n_groups {c.n_groups} needs a negative label per group, but {kind} keeps {'' if mined else 'at most '}"
        f"{kept} of its {candidates} candidates ({kind}.percent {c.percent} of each word type's{after}): "
        + ("raise csp.max_id_similarity, " if mined else "")
        + f"raise {kind}.percent or {kind}.max_candidates (0: all)"
        + (f", or lower {kind}.n_groups" if kept else "")
    )


def negative_groups(features: Callable, class_names, c: ml_collections.ConfigDict, kind: str):
    """(ID text features, grouped negative features) for NegLabel (`kind="neglabel"`) or CSP.

    `features(words, templates, label=...)`: `templated_features` of the CLIP.
    """
    cands = negative_candidates(c, kind)
    if kind == "csp":
        id_templates, max_sim = neglabel.CSP_TEMPLATES, c.max_id_similarity
    else:
        id_templates, max_sim = neglabel.ID_TEMPLATES, None
    pos = features(class_names, id_templates, label=f"{kind} ID prompts")
    feats = features(cands.words, cands.templates, label=f"{kind} candidates")
    kept = neglabel.mine(feats, cands.word_type, pos, c.percent, c.eta, max_sim)
    if len(kept) < c.n_groups:  # CSP's candidates close to an ID class are dropped first; the features stay cached
        raise _too_few_negatives(len(kept), len(cands.words), c, kind, mined=True)
    distributed.log(
        f"[{kind}] kept {len(kept)} negative labels of {len(cands.words)} candidates "
        f"({int((cands.word_type[kept] == 0).sum())} nouns), {c.n_groups} group(s)"
    )
    return pos, neglabel.group_negatives(feats[kept], c.n_groups, c.seed)


def zero_shot_scorer(
    config, model: clip.CLIP, params, class_names, prefix: str = "zero-shot", scores: bool = True
) -> Scorer:
    """MCM, GL-MCM, MaxLogit, MSP and Energy (of CLIP's logits `exp(logit_scale) cos`), NegLabel, CSP, ODIN and
    i-ODIN (of the same logits) of a CLIP as it is; with `scores` False its prediction alone, its class prompts' text
    features not cached (a CLIP in training: features of parameters that change)."""
    names = zero_shot_score_names(config) if scores else ()
    cache_dir = text_cache_dir(config) if scores else None
    fingerprint = model_fingerprint(params)  # the text tower hashed once for every prompt set's cache key
    params = replicate(params)
    features = functools.partial(templated_features, model, params, cache_dir=cache_dir, fingerprint=fingerprint)
    aux = {"text": features(class_names, [config.mcm_template], label="class prompts")}
    for kind in ("neglabel", "csp"):
        if kind in names:
            aux[kind + "_pos"], aux[kind + "_neg"] = negative_groups(features, class_names, config[kind], kind)
    # The CLIP method giving GL-MCM's local features with the global one; None without GL-MCM (global alone).
    with_local = GL_MCM_LOCAL_FEATURES[config.gl_mcm.local_features] if "gl_mcm" in names else None

    def logits(params, aux, images):  # CLIP's zero-shot classifier
        g = model.apply({"params": params}, images, method="encode_image")
        return jnp.exp(params["logit_scale"]) * mcm_lib.normalize(g) @ aux["text"].T

    def fn(params, aux, images):
        if with_local:
            g, local = model.apply({"params": params}, images, method=with_local)
        else:
            g = model.apply({"params": params}, images, method="encode_image")
        g = mcm_lib.normalize(g)
        cos = g @ aux["text"].T  # the class prompts' features are unit vectors
        out = {f"pred/{prefix}": logits_lib.predicted_class(cos)}
        for s in names:
            row = f"{prefix} / {SCORE_TITLES[s]}"
            if s == "mcm":
                out[row] = mcm_lib.mcm(cos, config.mcm.temperature)
            elif s == "gl_mcm":
                local_cos = mcm_lib.normalize(local) @ aux["text"].T
                out[row] = mcm_lib.gl_mcm(cos, local_cos, config.gl_mcm.lambda_local, config.gl_mcm.temperature)
            elif s in LOGIT_SCORES:
                out[row] = LOGIT_SCORES[s](jnp.exp(params["logit_scale"]) * cos)
            elif s in INPUT_SCORES:
                classify = functools.partial(logits, params, aux)
                out[row] = INPUT_SCORES[s](classify, images, config[s].temperature, config[s].eps)
            else:
                out[row] = neglabel.neglabel_score(g, aux[s + "_pos"], aux[s + "_neg"], config[s].temperature)
        return out

    rows = tuple(f"{prefix} / {SCORE_TITLES[s]}" for s in names)
    return Scorer(lambda args, images: fn(*args, images), (params, replicate(aux)), rows)


def score_dataset(
    label: str, source, scorer: Scorer, transform, batch_size: int, mesh, stop: Callable[[], bool] | None = None
) -> dict | None:
    """Scores of every readable example of `source` once: {row: (N,) array, "pred/<method>", "label", "index" (the
    example's position in `source`), "unreadable" (how many were not)}; None where `stop()` came true before a
    batch."""
    loader = Loader(source, transform, batch_size, mesh=mesh, name="eval_batch_size")
    progress = Progress(label, len(source), "images")
    chunks: dict[str, list[np.ndarray]] = {}
    unreadable = 0  # over all hosts: each host decodes only its rows, and only the first writes the results
    for batch in loader.evaluate():
        raise_if_stopped()
        if stop and stop():
            return None
        out = scorer(batch["image"])
        out.update(label=batch["label"], mask=batch["mask"], index=batch["index"])
        host = multihost_utils.process_allgather(out, tiled=True) if jax.process_count() > 1 else jax.device_get(out)
        keep, real = np.asarray(host.pop("mask")), np.asarray(host["index"]) >= 0  # index -1: padding
        for k, v in host.items():
            chunks.setdefault(k, []).append(np.asarray(v)[keep])
        unreadable += int((real & ~keep).sum())
        progress.update(int(real.sum()))
    result = {k: np.concatenate(v) for k, v in chunks.items()}
    result["unreadable"] = unreadable
    loader.log_unreadable(label)
    return result


def compute_results(
    scorer: Scorer, id_out: dict, ood_outs: dict[str, dict], groups: dict[str, tuple[str, ...]] | None = None
) -> dict:
    """The metrics of every score row on every OOD set and their mean, ID accuracy, counts; with `groups` (group ->
    OOD set names), "ood_groups": each group's sets and, per row, their mean.

    A NaN score has no rank, so a row's metrics on an OOD set are None where the ID set or that OOD set has one
    (and so is any mean over it); "nan_scores" counts them per row and set, and the scores stay in scores.npz. They
    are None too against a set with no scored example (every image undecodable): that stopped the whole evaluation.
    "tied_pairs" gives, per row and set where any are, the fraction of (ID, OOD) pairs with equal scores
    (`metrics.tied_pairs`).
    """
    table, nan_scores, tied = {}, {}, {}
    for row in scorer.rows:
        nans = {name: int(np.isnan(out[row]).sum()) for name, out in {"id": id_out, **ood_outs}.items()}
        per_set = {
            name: None
            if nans["id"] or nans[name] or not (id_out[row].size and out[row].size)
            else metrics.ood_metrics(id_out[row], out[row])
            for name, out in ood_outs.items()
        }
        table[row] = {**per_set, "mean": _mean(list(per_set.values()))}
        ties = {name: metrics.tied_pairs(id_out[row], ood_outs[name][row]) for name, m in per_set.items() if m}
        if any(ties.values()):
            tied[row] = {name: t for name, t in ties.items() if t}
        if any(nans.values()):
            nan_scores[row] = {name: n for name, n in nans.items() if n}
    results = {
        "id_accuracy": accuracies(id_out),
        "ood": table,
        "counts": {"id": int(len(id_out["label"])), **{k: int(len(v["label"])) for k, v in ood_outs.items()}},
        # the ID accuracy's images: a list's lines without a label have none
        "id_labelled": int((id_out["label"] >= 0).sum()),
        "unreadable": {"id": id_out["unreadable"], **{k: v["unreadable"] for k, v in ood_outs.items()}},
        "nan_scores": nan_scores,
        "tied_pairs": tied,
    }
    if groups:
        results["ood_groups"] = {
            group: {"sets": list(sets), "mean": {row: _mean([table[row][s] for s in sets]) for row in table}}
            for group, sets in groups.items()
        }
    return results


def accuracies(id_out: dict) -> dict[str, float | None]:
    """Each prediction's accuracy (method -> fraction) on the labelled images of `id_out` (`score_dataset`'s); None
    where none is labelled (an image list's lines without a label)."""
    labels = id_out["label"]
    labelled = labels >= 0
    return {
        k.split("/", 1)[1]: metrics.accuracy(v[labelled], labels[labelled]) if labelled.any() else None
        for k, v in id_out.items()
        if k.startswith("pred/")
    }


def _mean(computed: list[dict | None]) -> dict | None:
    """Each metric's mean over sets; None when any set has none, or there is no set (ID accuracy alone)."""
    if None in computed or not computed:
        return None
    return {m: float(np.mean([c[m] for c in computed])) for m in computed[0]}


def zero_shot_score_names(config: ml_collections.ConfigDict) -> tuple[str, ...]:
    """The zero-shot scores `config.scores` names (comma-separated; spaces around names and repeats are ignored)."""
    settings.text(config, "scores", "the zero-shot scores' names, comma-separated")
    names = tuple(dict.fromkeys(s.strip() for s in config.scores.split(",") if s.strip()))
    if unknown := [name for name in names if name not in ZERO_SHOT_SCORES]:
        what = "unknown scores" if len(unknown) > 1 else "an unknown score"
        named = f"{what} {each_with_nearest(unknown, ZERO_SHOT_SCORES)}"
        raise InvalidInput(f"config.scores names {named}; the zero-shot scores: {joined(map(repr, ZERO_SHOT_SCORES))}")
    return names


def unread_keys(config: ml_collections.ConfigDict) -> dict[str, str]:
    """The zero-shot rows' settings that `config`'s run does not read, each with why and the setting that would
    read them: those of a score `config.scores` does not name (and NegLabel's seed with one group), or all where
    training leaves the zero-shot rows out (`eval_zero_shot` False). One set on the command line is refused
    (`settings.refuse_unread`)."""
    held = [s for s in ZERO_SHOT_SCORES if s in config]  # the scores with settings of their own
    if not config.get("eval_zero_shot", True):
        return {
            key: f"{key} is a setting of the zero-shot rows, and eval_zero_shot False drops them. Leave it out, or "
            "set --config.eval_zero_shot=true"
            for key in (*ZERO_SHOT_SETTINGS, *held)
        }
    named = zero_shot_score_names(config)
    unread = {
        s: f"{s} holds the zero-shot {SCORE_TITLES[s]} row's settings, and config.scores ({config.scores!r}) names no "
        f"such row. Leave it out, or add {s} to --config.scores"
        for s in held
        if s not in named
    }
    if "neglabel" in named and config.neglabel.n_groups == 1:  # CSP's seed draws its candidates too
        unread["neglabel.seed"] = (
            "neglabel.seed permutes the negative labels into groups, and neglabel.n_groups 1 keeps them in one, so "
            "every seed scores alike. Leave it out, or set --config.neglabel.n_groups above 1"
        )
    return unread


def text_cache_dir(config: ml_collections.ConfigDict) -> str:
    """The text-feature cache's folder: `config.cache_dir`, else `jaxood.cache.DEFAULT_CACHE` ($JAXOOD_CACHE,
    $XDG_CACHE_HOME/jaxood or ~/.cache/jaxood)."""
    given = settings.text(config, "cache_dir", "the text-feature cache's folder, '' for the default", path=True)
    path = os.path.expanduser(given or DEFAULT_CACHE)
    if "://" in path:
        raise InvalidInput(
            f"the text-feature cache {path!r} is a URL, but jaxood writes it with the local file system (it would "
            f"become a local folder named '{path.split('://')[0]}:'). Set config.cache_dir (or $JAXOOD_CACHE) to a "
            "local folder; each host of a pod may keep its own."
        )
    if not can_hold_a_folder(path):  # found out after encoding the prompts, before
        raise InvalidInput(
            f"the text-feature cache {path!r} (or the nearest part of it that exists) is a file or a folder jaxood "
            "may not write: set config.cache_dir (or $JAXOOD_CACHE) to a folder it can write"
        )
    return path


def _check_settings(config: ml_collections.ConfigDict) -> None:
    """The settings evaluation reads only at its end (scores, OOD set names, prompt, plots, cache folder, batch), and
    the CLIP's compute dtype (training read it only once the training labels were read: minutes for ImageNet)."""
    settings.text(config, "model", "a Hugging Face hub id, a CLIP's folder, toy or scratch", path=True)
    settings.choice(config, "dtype", clip.COMPUTE_DTYPES)
    settings.choice(config, "plots", settings.TRUE_OR_FALSE)
    zero_shot_score_names(config)
    # None (ID accuracy alone: few-shot classification), or sets not named as the results name the ID set and the mean
    if reserved := {"id", "mean"} & set(config.ood_datasets):
        raise InvalidInput(
            f"config.ood_datasets names an OOD set {sorted(reserved)}: the results use 'id' and 'mean' for the ID set "
            "and the average over the OOD sets; rename it"
        )
    titles = [*config.ood_datasets, *(config.get("ood_groups") or {})]  # results.md's column titles
    if broken := [name for name in titles if "|" in name or not name.isprintable()]:
        raise InvalidInput(
            f"config.ood_datasets / ood_groups: {', '.join(map(repr, broken))} holds '|' or a line break, which would "
            "split or end a row of results.md's tables, where the names are column titles: rename it"
        )
    if blank := [name for name in titles if not name.strip()]:  # an untitled column, a key '' in results.json
        raise InvalidInput(
            f"config.ood_datasets / ood_groups: a name of spaces alone ({', '.join(map(repr, blank))}) would title "
            "its column of results.md's tables with nothing: name it"
        )
    template = settings.text(config, "mcm_template", "the zero-shot prompt, with {} where the class name goes")
    fields = [field for _, field, _, _ in string.Formatter().parse(template) if field is not None]
    if fields != [""]:
        raise InvalidInput(f"mcm_template {template!r} needs exactly one {{}}, where the class name goes")
    ood_groups(config)
    text_cache_dir(config)
    check_batch(settings.whole(config, "eval_batch_size", 1), data_mesh(), "eval_batch_size")
    _check_score_settings(config)


def ood_groups(config: ml_collections.ConfigDict) -> dict[str, tuple[str, ...]]:
    """`config.ood_groups` (group -> comma-separated OOD set names, or a list of them; none in a config without it):
    the groups of OOD sets averaged apart, such as OpenOOD v1.5's near and far; each names one or more of
    `config.ood_datasets`."""
    given = config.get("ood_groups") or {}

    def names(sets) -> tuple[str, ...]:  # a list was read as its text, "['near'" and " 'far']", and refused
        listed = sets if isinstance(sets, (list, tuple)) else str(sets).split(",")
        return tuple(s.strip() for s in listed if s.strip())

    groups = {group: names(given[group]) for group in given_order(given)}
    for group, sets in groups.items():
        unknown = [s for s in sets if s not in config.ood_datasets]
        if unknown or not sets:
            raise InvalidInput(
                f"ood_groups.{group} names {', '.join(unknown) or 'no OOD set'}: each group names one or more of the "
                f"OOD sets, {', '.join(given_order(config.ood_datasets))} (OOD sets given on the command line need "
                "their groups given too, --config.ood_groups=\"{'near': 'A,B'}\", or none: --config.ood_groups=\"{}\")"
            )
        if twice := sorted({s for s in sets if sets.count(s) > 1}):  # weighed twice in the group's average, unsaid
            raise InvalidInput(
                f"ood_groups.{group} names {', '.join(twice)} more than once ({', '.join(sets)}): each set counts once "
                "in its group's average, so name each once"
            )
    return groups


def given_order(group) -> list[str]:
    """A config group's keys in the order they were given. A ConfigDict lists its keys sorted unless it was made
    with sort_keys=False, as the configs make `ood_datasets` and `ood_groups` (the papers' order); a dict set over
    one, on the command line (`--config.ood_datasets="{...}"`) or in Python, becomes a sorted one, whose JSON (what
    config.json records) keeps the order given."""
    if isinstance(group, ml_collections.ConfigDict):
        return list(json.loads(group.to_json_best_effort()))
    return list(group)


def _check_score_settings(config: ml_collections.ConfigDict) -> None:
    """The zero-shot scores' values. Out of range they ran silently (a temperature of 0 gave NaN scores, a
    `percent` above 1 kept every candidate) or failed once the negatives were mined (`percent` 0 kept none)."""
    for key in ("mcm.temperature", "gl_mcm.temperature"):
        settings.number(config, key, above=0)
    settings.number(config, "gl_mcm.lambda_local", least=0)
    if config.gl_mcm.local_features not in GL_MCM_LOCAL_FEATURES:
        raise InvalidInput(
            f"{not_one_of('gl_mcm.local_features', config.gl_mcm.local_features, GL_MCM_LOCAL_FEATURES)}: 'value' is "
            "GL-MCM's own local features, 'vv' the V-V stream SOT-GLP reads"
        )
    for s in ("neglabel", "csp"):
        settings.number(config, f"{s}.temperature", above=0)
        settings.number(config, f"{s}.percent", above=0, most=1)  # of each word type's candidates
        settings.number(config, f"{s}.eta", least=0, below=1)  # similarity quantile 1 - eta
        settings.whole(config, f"{s}.n_groups", 1)
        settings.whole(config, f"{s}.seed", 0, 2**32 - 1)
        settings.whole(config, f"{s}.max_candidates", 0)
    settings.number(config, "csp.max_id_similarity", least=-1, most=1)  # a cosine
    for s in INPUT_SCORES:
        settings.number(config, f"{s}.temperature", above=0)
        settings.number(config, f"{s}.eps", least=0)  # a step in [0, 1] pixel units, before the division by std
    named = zero_shot_score_names(config)
    for kind in [k for k in ("neglabel", "csp") if k in named]:  # each group needs a negative label
        cands = negative_candidates(config[kind], kind)
        if (most := neglabel.kept_at_most(cands.word_type, config[kind].percent)) < config[kind].n_groups:
            raise _too_few_negatives(most, len(cands.words), config[kind], kind, mined=False)


class Inputs(NamedTuple):
    """A run's datasets, opened (`open_inputs`)."""

    id: Source
    ood: dict[str, Source]  # by name, in the config's order
    train: Source | None = None  # a training run's training set


def open_inputs(config: ml_collections.ConfigDict, train: bool = False, method_rows: tuple[str, ...] = ()) -> Inputs:
    """The ID source and the OOD sources by name (and `train`: the training set, `config.train_dataset`), after
    checking the settings evaluation reads at its end: bad input fails here, before any work, and every missing
    dataset is named in one error (train calls this first and passes the sources to `evaluate`). `method_rows`: a
    training run's score rows of its method's own (its module's `SCORE_ROWS`)."""
    _check_settings(config)
    # A run's score rows are its method's and config.scores' zero-shot ones (where training keeps them,
    # eval_zero_shot): with none, its OOD sets are not read, and one missing is no reason to refuse the run (a CLIP's
    # zero-shot ImageNet accuracy without the OOD sets, pretraining scored on its ID accuracy alone)
    zero_shot_rows = config.get("eval_zero_shot", True) and zero_shot_score_names(config)
    ood = config.ood_datasets if method_rows or zero_shot_rows else {}
    if not ood and (unread := given_order(config.ood_datasets)):
        distributed.log(
            f"config.scores names no score, so the OOD sets ({', '.join(unread)}) are not read: the report gives the "
            "ID accuracy alone"
        )
    opened = make_sources({
        **({"train_dataset": config.train_dataset} if train else {}),
        "id_dataset": config.id_dataset,
        **{f"ood_datasets.{n}": ood[n] for n in given_order(ood)},
    })  # fmt: skip
    train_source = opened.pop("train_dataset", None)
    id_source = opened.pop("id_dataset")
    if not id_source.class_names:  # there would be no class prompts: JAX's argmax of an empty sequence, later
        raise InvalidInput(
            f"the ID set ({dict(config.id_dataset)}) has no class names, which the class prompts and the ID accuracy "
            "need: use a labelled set (a toy split such as 'test', a folder with one sub-folder per class, a TFDS "
            "dataset), or give an image list its class_names"
        )
    if not_text := [name for name in id_source.class_names if not _is_text(name)]:  # its prompts: a traceback, later
        raise InvalidInput(
            f"config.id_dataset: {len(not_text)} class name(s) not in UTF-8, as "
            + ", ".join(repr(os.fsencode(name)) for name in not_text[:3])
            + f"{', ...' if len(not_text) > 3 else ''} (folders named in another encoding: Latin-1, a Windows zip's), "
            "with which the class prompts cannot be written. Rename the folders in UTF-8 (`convmv -f latin1 -t utf8 "
            "-r --notest ROOT` renames Latin-1 names), or give the dataset its class_names"
        )
    if len(id_source.class_names) == 1:  # pretraining learns from captions, not the ID classes
        _check_one_class(config, id_source.class_names[0], train and not config.get("caption_length", 0))
    if ids := [name for name in id_source.class_names if is_wnid(name)]:  # names are known for ImageNet-1k's alone
        raise InvalidInput(
            f"config.id_dataset: {len(ids)} of its {len(id_source.class_names)} classes are named by WordNet ids "
            f"({', '.join(ids[:3])}{', ...' if len(ids) > 3 else ''}), not all ImageNet-1k's (whose names jaxood "
            f"knows), so the class prompts would read 'a photo of a {ids[0]}.': give the dataset its class_names "
            "(for a folder, one per sub-folder in sorted order)"
        )
    names = id_source.class_names
    if all(name.isdigit() for name in names):  # TFDS names a label it has no name for by its number
        distributed.log(
            f"config.id_dataset: its class names are numbers ({', '.join(names[:3])}, ...), so its prompts read "
            f"'{config.mcm_template.format(names[0])}': right for digits (MNIST, SVHN); a dataset whose classes are "
            "only numbered (TFDS's caltech_birds2011) needs its names as the entry's class_names"
        )
    same_tokens = collections.defaultdict(list)  # names the tokenizer reads alike (case, white space, NFC)
    for label, name in enumerate(names):
        same_tokens[tuple(get_tokenizer().encode(name))].append(label)
    if shared := {" ".join(names[ls[0]].lower().split()): ls for ls in same_tokens.values() if len(ls) > 1}:
        distributed.log(
            f"config.id_dataset: {len(shared)} class name(s) name two or more of its classes ("
            + ", ".join(f"{name!r}: {', '.join(map(str, labels))}" for name, labels in list(shared.items())[:5])
            + f"{', ...' if len(shared) > 5 else ''}), so their prompts are one text and zero-shot cannot tell "
            "those classes apart (their softmax splits between them). OpenAI's ImageNet names, which the papers "
            "use, repeat 'missile' and 'sunglasses'; for another dataset give distinct class_names"
        )
    if len(nested := getattr(id_source, "nested", {})) == len(names):  # SUN397's a/abbey/... read as classes a-z
        first, subs = next(iter(nested.items()))
        distributed.log(
            f"config.id_dataset: each of its {len(names)} class folders keeps its images in sub-folders ({first}: "
            f"{', '.join(subs[:3])}{', ...' if len(subs) > 3 else ''}), and each is read as one class, as "
            "torchvision's ImageFolder reads them; if the sub-folders are the classes (SUN397's a/abbey layout), give "
            "the set as a list entry with its class_names, or use TFDS's sun397"
        )
    ood_sources = {key.removeprefix("ood_datasets."): source for key, source in opened.items()}
    _check_sets_apart(config, id_source, ood_sources, train_source)
    return Inputs(id_source, ood_sources, train_source)


def _is_text(name: str) -> bool:
    """Whether `name` is text: not a file name whose bytes are not UTF-8, which Python holds as surrogates."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_sets_apart(config: ml_collections.ConfigDict, id_source, ood_sources: dict, train_source) -> None:
    """The datasets read images apart, by their sources' `identity`: no OOD set reads the ID set's images (its
    AUROC would be 50 by construction, its report meaningless), the training set's (the method would be trained on
    the images it is to call OOD) or another OOD set's (the mean over the sets would count them twice); a copied
    config entry ran so, silently. An ID set that reads the training set's images, or some, is said, not refused.
    Folders and lists are compared by their files too, TFDS splits by their records (`records`): an OOD set all of
    whose images the ID or training set reads is refused, one that shares some is said, and so are two OOD sets
    that share images."""
    by_identity: dict[tuple, list[str]] = {}
    for name, ood in ood_sources.items():
        by_identity.setdefault(ood.identity, []).append(name)
    if twice := [names for names in by_identity.values() if len(names) > 1]:
        raise InvalidInput(
            "; ".join(" and ".join(f"config.ood_datasets.{name}" for name in names) for names in twice)
            + " read the same images (a copied entry whose path was left as it was?): each would be a row of its "
            "own, and the mean over the OOD sets would count them twice. Point each at its own dataset."
        )
    # Each set's files or records, read once (toy sets have none: their identity alone tells).
    ood_records = {name: getattr(ood, "records", set)() for name, ood in ood_sources.items()}
    compared = {"id_dataset": (id_source, getattr(id_source, "records", set)())}
    if train_source is not None:
        compared["train_dataset"] = (train_source, getattr(train_source, "records", set)())
        ids = compared["id_dataset"][1]
        shared = len(ids & compared["train_dataset"][1])
        if train_source.identity == id_source.identity or 0 < shared == len(ids):  # a sanity check, or a slip
            distributed.log(
                "config.id_dataset reads the training set's images (config.train_dataset): ID accuracy and the OOD "
                "metrics will be measured on images the method trained on, which flatters both; give the ID set a "
                "held-out split for results to report"
            )
        elif shared:  # a held-out slice that is not
            distributed.log(
                f"config.id_dataset: {shared} of its {len(ids)} images are config.train_dataset's too (the same files "
                "or TFDS records): ID accuracy and the OOD metrics will be measured partly on images the method may "
                "train on, which flatters both; give the ID set a held-out split for results to report"
            )
    every = {**compared, **{f"ood_datasets.{n}": (ood_sources[n], files) for n, files in ood_records.items()}}
    for key, (source, files) in every.items():
        if hasattr(source, "repeats") and len(files) < len(source):  # a file read twice: once per example
            _say_repeats(key, source)
    for key, (source, theirs) in compared.items():
        why = (
            "an OOD set must hold images of other classes than the ID set's, or its AUROC is 50 by construction"
            if key == "id_dataset"
            else "the method would be trained on the images it is then to call OOD"
        )
        if same := [name for name, ood in ood_sources.items() if ood.identity == source.identity]:
            raise InvalidInput(
                f"{', '.join(f'config.ood_datasets.{name}' for name in same)} "
                f"{agreeing(len(same), 'reads', 'read')} the same images as config.{key} ({dict(config[key])}): "
                f"{why}. Name another dataset."
            )
        for name, mine in ood_records.items():
            if not (shared := len(mine & theirs)):
                continue
            if shared == len(mine):  # a folder inside the other set's, a list of its files, a slice of its split
                raise InvalidInput(
                    f"config.ood_datasets.{name}: all {shared} of its images are config.{key}'s too (its folder lies "
                    f"inside that set's, its list or its links name that set's files, or its TFDS split is a part of "
                    f"that set's): {why}. Name another dataset."
                )
            what = "they are scored as ID and as OOD" if key == "id_dataset" else "the method trains on them"
            distributed.log(
                f"config.ood_datasets.{name}: {shared} of its {len(mine)} images are config.{key}'s too (the same "
                f"files or TFDS records): {what}"
            )
    for (name, mine), (other, theirs) in itertools.combinations(ood_records.items(), 2):
        if shared := len(mine & theirs):
            distributed.log(
                f"config.ood_datasets.{name} and config.ood_datasets.{other} share {shared} images (the same files "
                f"or TFDS records, of {len(mine)} and {len(theirs)}): the mean over the OOD sets counts them twice"
            )


def _say_repeats(key: str, source) -> None:
    """Say a set's examples that read a file an earlier one reads (`source.repeats()`): a list joined from two
    counted the images they share twice in the metrics, and one with two labels once wrong in the ID accuracy."""
    repeats, labels, paths = source.repeats(), source.labels(), source.paths
    i, j = repeats[0]
    other = ""
    if relabelled := [(a, b) for a, b in repeats if labels[a] != labels[b]]:
        a, b = relabelled[0]
        other = (
            f"; {len(relabelled)} of them with another label ({labels[b]} for {paths[b]}, then {labels[a]} for "
            f"{paths[a]})"
        )
    distributed.log(
        f"config.{key}: {len(repeats)} of its {len(source)} images read a file an earlier one reads (e.g. "
        f"{paths[i]}, the file of {paths[j]}){other}. Each is one example, so such a file counts once "
        "per example in the metrics (and in training): remove the repeats (a list's repeated lines, a folder's "
        "links to one file) to count each image once"
    )


def _check_one_class(config: ml_collections.ConfigDict, name: str, classifier: bool) -> None:
    """An ID set of one class (a folder holding all its images in one sub-folder) is refused where it makes the
    run meaningless: a method trained as a classifier of the ID classes (`classifier`) has a loss of 0 from the
    first step, and MCM, GL-MCM, MSP, ODIN and i-ODIN are a softmax over them (every image scored 1: AUROC 50,
    silently)."""
    over = [s for s in zero_shot_score_names(config) if s in OVER_ID_CLASSES]
    if not (classifier or over):
        return
    others = [SCORE_TITLES[s] for s in ZERO_SHOT_SCORES if s not in OVER_ID_CLASSES]  # they score one class
    why = (
        f"{config.method} learns to tell the ID classes apart: with one, its loss is 0 from the first step"
        if classifier
        else f"{', '.join(SCORE_TITLES[s] for s in over)} (config.scores) are a softmax over the ID classes: with "
        "one, every image scores 1 (AUROC 50)"
    )
    raise InvalidInput(
        f"config.id_dataset has one class ({name!r}), and {why}. Give the ID set its classes (a folder: one "
        "sub-folder per class)"
        + ("" if classifier else f", or score it with {joined(others, 'or')} alone (config.scores)")
    )


def _check_not_a_training_run(workdir: str) -> None:
    """Refuse a training run's workdir (its config.json names a method), naming the command that evaluates it."""
    if not (method := run_method(folder := os.path.expanduser(workdir))):
        return
    export = os.path.join(workdir, EXPORT)
    step = last_saved_step(folder)
    it = (
        f"resumes at its checkpoint of step {step}"
        if step is not None
        else "has saved no checkpoint, so it trains from step 0"
    )
    raise InvalidInput(
        f"--workdir {workdir} is the workdir of a training run (its config.json: method {method!r}), but "
        "jaxood.evaluate scores a CLIP as it is (the zero-shot rows), and would replace the trained report in the "
        f"workdir with those. To evaluate a trained run, run `python -m {command_for(method)}` with its config and "
        f"--workdir: it {it} and evaluates it (the evaluation settings may change). For zero-shot rows alone give "
        "another --workdir" + (f"; the CLIP it pretrained is --config.model={export}" if method == PRETRAINING else "")
    )


def evaluate(
    config: ml_collections.ConfigDict,
    workdir: str,
    model=None,
    params=None,
    scorer: Scorer | None = None,
    inputs: Inputs | None = None,
    unreadable: dict[str, int] | None = None,
    step: int | None = None,
    trained_by: list[dict] | None = None,
    typed: Iterable[str] = (),
) -> dict:
    """Run the evaluation of `config` and write the report into `workdir` (`inputs`: `open_inputs(config)`;
    `unreadable`: undecodable images of sets read before, {"train": n} from training, reported first; `step`: the
    training step whose parameters the trained rows are, and `trained_by`, the code that trained which steps
    (`jaxood.train.trained_by`), recorded in the report; `typed`: the keys set on the command line, refused where
    the run would not read them)."""
    if scorer is None:  # the command's run (training evaluates with its method's scorer)
        check_command("jaxood.evaluate", config)
        _check_not_a_training_run(workdir)
        settings.refuse_unread(typed, unread_keys(config))
    distributed.maybe_initialize()
    id_source, ood_sources, _ = inputs or open_inputs(config)
    workdir = os.path.expanduser(workdir)  # a shell leaves `--workdir=~/runs/x` as it is
    with workdir_lock.holding(workdir):  # held already when training evaluates
        if model is None:
            model, params = clip.load(config.model, dtype=clip.compute_dtype(config.dtype))
        mesh = data_mesh()
        if scorer is None:
            scorer = zero_shot_scorer(config, model, params, id_source.class_names)
        transform = clip_eval(model.cfg.image_size)
        id_out = score_dataset("ID", id_source, scorer, transform, config.eval_batch_size, mesh)
        ood_outs = {
            name: score_dataset(name, src, scorer, transform, config.eval_batch_size, mesh)
            for name, src in ood_sources.items()
        }
        results = compute_results(scorer, id_out, ood_outs, ood_groups(config))
        results["unreadable"] = {**(unreadable or {}), **results["unreadable"]}
        for name, n in results["counts"].items():
            if not n:
                distributed.log(
                    f"[{name}] no image of this set could be scored ({results['unreadable'][name]} undecodable): the "
                    "metrics against it are left out (n/a in the tables, null in results.json)"
                )
        for row, nans in results["nan_scores"].items():
            distributed.log(
                f"[{row}] NaN scores ({', '.join(f'{k} {v}' for k, v in nans.items())}): its metrics against a set "
                "with any are left out (null in results.json; the scores are in scores.npz). Check the model's "
                "weights, and config.dtype: float16 overflows where bfloat16 and float32 do not."
            )
        if step is not None:
            results["step"] = step
        if trained_by is not None:
            results["trained_by"] = trained_by
        results["config"] = config.to_dict()
        results["versions"] = report.versions()
        results["source"] = report.source()
        results["devices"] = report.devices(model.dtype)
        raise_if_stopped()
        if distributed.is_first_host():
            try:
                if kept := report.keep_earlier(workdir):
                    print(f"the earlier report in {workdir} moved to {kept}", flush=True)
                md = report.write(workdir, results)
                report.write_scores(workdir, {"id": id_out, **ood_outs}, {"id": id_source, **ood_sources})
                plotted = report.plots(workdir, results["ood"], id_out, ood_outs) if config.plots else []
            except OSError as err:  # a full disk, a quota: after the whole evaluation
                fix = write_fix(err, "it", room="Free space there")
                raise NotSaved(
                    f"the report could not be written in {workdir} ({err.strerror or err}). {fix}, then run the same "
                    "command again to evaluate again."
                ) from err
            print(md, flush=True)
            print(report.where_written(workdir, len(plotted)), flush=True)
        return results


def main(argv):
    del argv
    from absl import logging

    from jaxood.cli import CONFIG, WORKDIR, typed_keys

    logging.set_verbosity(logging.WARNING)
    with StopsAtOnce(WORKDIR.value, "while evaluating; no report was written. Run the same command again."):
        evaluate(CONFIG.value, WORKDIR.value, typed=typed_keys())


if __name__ == "__main__":
    from jaxood import cli

    cli.run(main, "python -m jaxood.evaluate --config=configs/zeroshot.py:toy --workdir=runs/zeroshot")
