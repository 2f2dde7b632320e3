"""Train an OOD method: `python -m jaxood.train --config=configs/sot_glp.py[:variant] --workdir=DIR`.

One trainer for every method (`jaxood.methods.<config.method>`):

- parameters split into frozen and trainable by the method's path rules
  (every leaf covered); gradients only for trainable leaves; optax optimiser
  groups with cosine schedules (per step or per epoch) and linear warm-up;
- one `jax.jit` step with explicit shardings over a data-parallel `Mesh`,
  the state donated, the step's rng `fold_in(seed, step)`;
- orbax checkpoints in `DIR/checkpoints` (`jaxood.checkpoints`) with auto-resume: a restarted run
  continues where it stopped and ends bit-identical (batches are a function of
  the step). Only the run's length, data paths, logging and evaluation settings
  may change on resume; any other difference from `DIR/config.json` is refused
  before any work (`check_resume`). The loss is checked on device every step,
  and a NaN/inf stops the run naming the step, without saving, so the last
  checkpoint stays good (with `loss_scale` "dynamic", a gradient the scale
  overflowed skips its step instead: `jaxood.loss_scale`). A preemption
  notice (SIGTERM), Ctrl-C or a closed terminal saves the step it ends at and
  stops the run (`jaxood.preemption`).
  One run at a time holds DIR (`jaxood.workdir_lock`);
- metrics to stdout, `DIR/metrics.jsonl` and TensorBoard (`DIR/tb`; `jaxood.metric_log`), progress with ETA,
  the ID test set's accuracy every `eval_every` steps or epochs (`PeriodicAccuracy`),
  a warning the first time a logged metric exceeds the method's limit for it (`Method.metric_limits`),
  `DIR/config.json`; at the end `jaxood.evaluate` writes the results next to
  the zero-shot baseline rows.

Multi-host: `jax.distributed.initialize()` runs when the launcher says so
(`JAXOOD_DISTRIBUTED=1`, see launch/), each host feeding its slice of the batch.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import itertools
import json
import os
import pkgutil
import re
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import flax
import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.experimental import multihost_utils

import jaxood.methods
from jaxood import distributed, loss_scale, report, settings, workdir_lock
from jaxood import evaluate as evaluation
from jaxood.cache import write_whole
from jaxood.checkpoints import Checkpoints
from jaxood.data.pipeline import (
    DecodeCheck,
    Loader,
    check_batch,
    check_host_memory,
    data_mesh,
    every_device,
    listed,
    on_host,
    replicate,
)
from jaxood.data.preprocess import clip_eval, clip_train
from jaxood.data.sampling import SHOT_SAMPLINGS, few_shot_indices, sampling_name, shot_quota
from jaxood.errors import (
    InvalidInput,
    LossNotFinite,
    NotSaved,
    Preempted,
    agreeing,
    first_ten,
    joined,
    lacking_config_key,
    not_one_of,
    write_fix,
)
from jaxood.memory import compile_within_memory
from jaxood.metric_log import TENSORBOARD, MetricWriter, accuracy_record, logged_at, records, write_evaluation
from jaxood.models import clip, convert
from jaxood.models.tokenizer import CONTEXT_LENGTH
from jaxood.preemption import PreemptionNotice, StopsAtOnce
from jaxood.progress import Progress
from jaxood.run_folders import RUN_CHECKPOINTS, RUN_CONFIG, TRAINED_BY

# ------------------------------------------------------------------- resume

# Settings a resumed run may change: how long it trains, where its data lives, how it logs, and how it is
# evaluated (`EVAL_KEYS` of jaxood.evaluate), and what the method's module names in its own `RESUME_MAY_CHANGE`.
# Any other key is part of what the checkpoints were trained with.
RESUME_MAY_CHANGE = (
    "num_steps", "epochs", "remat", "log_every", "checkpoint_every", "keep_checkpoints", "progress_every",
    "eval_every", "eval_unit", "tensorboard", "train_dataset.data_dir", "train_dataset.root", "eval_zero_shot",
    *evaluation.EVAL_KEYS,
)  # fmt: skip

# Trainer settings added since runs were saved, each with the value that trains as a run saved without it did.
ADDED_KEYS = {"loss_scale": "none"}


def check_resume(
    config: ml_collections.ConfigDict, workdir: str, may_change: tuple[str, ...] = (), added: Mapping | None = None
) -> dict | None:
    """Refuse to continue checkpoints in `workdir` that were trained under other settings than `config`'s; the
    saved config (flattened, dotted keys), or None when there is nothing to resume. `added` gives the keys added to
    a config since runs were saved (the trainer's and the method's `ADDED_KEYS`), each with the value that trains as
    a run saved without it did: such a run resumes under that value. A key the run does not read (`unread_keys`: another
    optimiser's setting, `model_arch` of a CLIP with weights) is not compared: its value trained nothing.

    Without this a changed setting (another seed, learning rate, dataset) silently
    resumed the old run and reported its results under the new config.
    """
    saved_path, ckpt_dir = os.path.join(workdir, RUN_CONFIG), _checkpoint_dir(workdir)
    if not (os.path.isfile(saved_path) and os.path.isdir(ckpt_dir) and os.listdir(ckpt_dir)):
        return None
    try:
        with open(saved_path, encoding="utf-8") as f:
            saved = json.load(f)
        problem = "" if isinstance(saved, dict) else f"JSON {type(saved).__name__}, not a mapping of settings"
    except ValueError as err:  # cut short or edited
        problem = str(err)
    if problem:
        raise InvalidInput(
            f"{saved_path} cannot be read as a saved config ({problem}). It holds the settings of the run whose "
            f"checkpoints are in {ckpt_dir}, which a resumed run must match. Restore it, delete it to resume under "
            "this config without that check, or use a new --workdir."
        )
    saved = {**(added or {}), **flax.traverse_util.flatten_dict(saved, sep=".")}
    now = flax.traverse_util.flatten_dict(json.loads(config.to_json_best_effort()), sep=".")
    saved, now = ({k: tree.get(k, "(absent)") for k in set(saved) | set(now)} for tree in (saved, now))
    free = RESUME_MAY_CHANGE + tuple(may_change) + tuple(unread_keys(config))
    changed = [
        key
        for key in sorted(now)
        if saved[key] != now[key] and not any(key == f or key.startswith(f + ".") for f in free)
    ]
    if kind := next((key for key in ("method", "variant") if key in changed), None):  # another run: none to set back
        raise InvalidInput(
            f"{workdir} holds checkpoints of a run of {kind} {saved[kind]!r}, and this config's {kind} is "
            f"{now[kind]!r} ({len(changed)} settings differ): resuming would continue that run and report it under "
            f"this config. Use a new --workdir (the run's config is {saved_path})."
        )
    if changed:
        diff = "; ".join(f"{k}: {saved[k]!r} there, {now[k]!r} here" for k in changed)
        moved = (
            f" If the model's folder only moved, write its new path into {saved_path}." if "model" in changed else ""
        )
        raise InvalidInput(
            f"{workdir} holds checkpoints of a run trained with other settings ({diff}). Resuming would continue "
            f"that run and report it under this config. Use a new --workdir, or set these back to the run's values "
            f"(its config is {saved_path}).{moved}"
        )
    return saved


def trained_by(workdir: str, start: int, remaining: int) -> list[dict]:
    """Which jaxood code trained which steps of the run in `workdir`, resumed at `start` with `remaining` steps to
    go: `[{"from_step": 0, "source": report.source()}, ...]`, a part for each start that trained on under other code
    than the part before; a run's report names them where they are not the code that evaluates (a fix made
    between a run's start and its resume). Parts from `start` on are trained again, so dropped; steps before it
    with none recorded (a run started before jaxood recorded them, or the file damaged) have source None."""
    now = report.source()
    earlier = []
    if start:
        try:
            with open(os.path.join(workdir, TRAINED_BY), encoding="utf-8") as f:
                earlier = [part for part in map(_code_part, json.load(f)) if part["from_step"] < start]
        except (OSError, ValueError, TypeError, KeyError):  # none, or not as written: the steps' code is not known
            pass
        earlier = earlier or [{"from_step": 0, "source": None}]
    if not remaining or (earlier and earlier[-1]["source"] == now):
        return earlier
    if earlier:
        distributed.log(
            f"this run trained up to step {start} with jaxood at {report.code_name(earlier[-1]['source'])}; it goes "
            f"on at {report.code_name(now)}, and its report names both"
        )
    return [*earlier, {"from_step": start, "source": now}]


def _code_part(part: dict) -> dict:
    """A part of `trained_by.json` as `trained_by` writes it; else KeyError or ValueError (an edited file)."""
    code = part["source"]
    if not (code is None or report.is_source(code)):
        raise ValueError(f"not a source: {code!r}")
    return {"from_step": int(part["from_step"]), "source": code}


# What shrinks any train step, after a method's own `memory_fixes`.
TRAIN_STEP_FIXES = (
    "--config.remat=True (each block's activations recomputed in the backward pass), train on more devices (the "
    "batch is split over them) or lower --config.batch_size"
)


# Each optimiser setting's range, for the base settings and a group's overrides (`optim.groups.<group>.<key>`).
OPTIM_RANGES = {
    "lr": {"least": 0}, "min_lr": {"least": 0}, "warmup_epochs": {"least": 0}, "weight_decay": {"least": 0},
    "clip_norm": {"least": 0}, "momentum": {"least": 0, "below": 1}, "b1": {"least": 0, "below": 1},
    "b2": {"least": 0, "below": 1},
}  # fmt: skip
UNITS = ("step", "epoch")  # what `optim.schedule_unit` steps the schedule by, and what `eval_every` counts
OPTIM_CHOICES = {"name": ("sgd", "adamw"), "schedule_unit": UNITS, "nesterov": settings.TRUE_OR_FALSE}
# The settings a group's optimiser reads: every optimiser's (its name, `schedule`'s, the weight decay), then its own
# (`_group_tx`); and those the base settings hold for all groups at once (`make_optimizer`), with what each does.
GROUP_SETTINGS = ("name", "lr", "min_lr", "warmup_epochs", "schedule_unit", "weight_decay")
OPTIMISER_OWN = {"sgd": ("momentum", "nesterov"), "adamw": ("b1", "b2")}
BASE_ONLY = {"clip_norm": "clips every group's gradients together, by their global norm"}


def optimiser_owning(key: str) -> str | None:
    """The optimiser whose own setting `key` is (`OPTIMISER_OWN`), or None for a setting every optimiser reads."""
    return next((name for name, own in OPTIMISER_OWN.items() if key in own), None)


def _check_optim(config: ml_collections.ConfigDict, key: str) -> None:
    """One optimiser setting, `key` dotted (`optim.lr`, `optim.groups.prompts.lr`), in its range or its choices."""
    name = key.rsplit(".", 1)[1]
    if name in OPTIM_RANGES:
        settings.number(config, key, **OPTIM_RANGES[name])
    elif name in OPTIM_CHOICES:
        settings.choice(config, key, OPTIM_CHOICES[name])


def check_train_settings(config: ml_collections.ConfigDict) -> None:
    """The trainer's own values, before any work. Out of range they used to fail late or run silently: an interval
    of 0 with a ZeroDivisionError once the step had compiled (`log_every`, `checkpoint_every`, `batch_size`),
    0 checkpoints kept by deleting each (`keep_checkpoints`), 0 steps by evaluating the untrained method, -1 shots
    by taking all but one image per class, a reversed crop scale or a negative seed with NumPy's errors, a
    misspelt optimiser override by being ignored, a `min_lr` above `lr` by raising the rate it should lower, a
    misspelt optimiser or schedule unit once the weights had loaded, a caption length of 0 by training CLIP
    pretraining as a classifier (failing on its classes), and one of 1 or above CLIP's 77 tokens with NumPy's or
    JAX's errors, and a negative `progress_every` by printing a progress line at every step."""
    for key in ("log_every", "checkpoint_every", "keep_checkpoints", "batch_size"):
        settings.whole(config, key, 1)
    settings.whole(config, "eval_every", 0)
    settings.choice(config, "eval_unit", UNITS)
    settings.choice(config, "loss_scale", loss_scale.CHOICES)
    for key in ("eval_zero_shot", "tensorboard", "remat"):  # else read once the work has started, or taken as truth
        settings.choice(config, key, settings.TRUE_OR_FALSE)
    settings.whole(config, "seed", 0, 2**32 - 1)  # NumPy's seeds (data order, few-shot subsets, initialisation)
    # Seconds between progress lines: a negative one (or NaN) printed at every step, unsaid; 0 asks for that.
    settings.number(config, "progress_every", least=0, why="the seconds between progress lines (0: every step)")
    settings.whole(config, "shots", 0)
    num_steps, epochs = settings.whole(config, "num_steps", 0), settings.whole(config, "epochs", 0)
    if num_steps == epochs == 0:
        raise InvalidInput("num_steps and epochs are both 0, which trains no step: set one of them to at least 1")
    # Image-text training (the CLIP pretraining's: a config of it without the key is named here, not trained as a
    # classifier on its captions' objects): SOT, at least one token, EOT.
    if "caption_length" in config or config.get("method") == jaxood.methods.PRETRAINING:
        settings.whole(config, "caption_length", 3, CONTEXT_LENGTH)
        if not config.eval_zero_shot:  # each evaluation scored the ID set for nothing, the closing one reporting none
            periodic = f" and eval_every {config.eval_every}'s" if config.eval_every else ""
            raise InvalidInput(
                "image-text pretraining's only prediction and score rows are the zero-shot ones of the CLIP it "
                f"trains, which eval_zero_shot False leaves out: its closing evaluation{periodic} would score the ID "
                "set for no figure. Set eval_zero_shot True"
            )
        if config.shots:  # ignored, silently: the captioned images carry no class to pick shots of
            raise InvalidInput(
                f"shots {config.shots} picks training images per class, but image-text pretraining (caption_length "
                f"{config.caption_length}) learns from every captioned image, object-free ones included: set shots "
                "to 0, or train on fewer images through the dataset entry (the toy world's per_class)"
            )
    if config.shots:  # a class-labelled training set's (configs/sot_glp.py)
        settings.choice(config, "shot_sampling", SHOT_SAMPLINGS)
    if config.model == "scratch":
        clip.check_arch(config)
    settings.choice(config, "augment.flip", settings.TRUE_OR_FALSE)
    scale = config.augment.scale
    pair = isinstance(scale, tuple | list) and len(scale) == 2 and all(isinstance(v, int | float) for v in scale)
    if not (pair and 0 < scale[0] <= scale[1] <= 1):
        raise InvalidInput(
            f"augment.scale must be (low, high) with 0 < low <= high <= 1, the crops' areas as fractions of the "
            f"image's; got {scale!r}"
        )
    for key in sorted(config.optim.keys()):  # an optimiser reads only its own
        _check_optim(config, f"optim.{key}")
    for group, overrides in config.optim.get("groups", {}).items():
        for key in overrides.keys():
            if key not in config.optim or key == "groups":
                raise InvalidInput(
                    f"optim.groups.{group}.{key}: {key!r} is not an optimiser setting; a group may override "
                    f"{sorted(set(config.optim.keys()) - {'groups', *BASE_ONLY})}"
                )
            _check_optim(config, f"optim.groups.{group}.{key}")
    for group in (None, *config.optim.get("groups", {}).keys()):  # the base settings, then each group's
        opt = config.optim if group is None else group_optim(config, group)
        # The settings its optimiser reads: one the config lacks is named here, not once the CLIP has loaded.
        read = (*GROUP_SETTINGS, *OPTIMISER_OWN.get(opt.get("name"), ()))
        for key in (*read, *BASE_ONLY) if group is None else read:
            if key not in opt:
                raise lacking_config_key(f"optim.{key}")
        for key in config.optim.groups[group].keys() if group is not None else ():
            if key not in read and (why := _unread_override(group, key, opt.name)):  # ignored, silently
                raise InvalidInput(why)
        named = "optim" if group is None else f"optimiser group {group} (optim with optim.groups.{group})"
        if opt.name == "sgd" and opt.nesterov and not opt.momentum:  # optax's plain SGD, silently; PyTorch refuses it
            raise InvalidInput(
                f"{named}: nesterov True with momentum 0 is plain SGD, as Nesterov's step looks ahead along the "
                "momentum (PyTorch's SGD refuses it): set momentum above 0, or nesterov False"
            )
        if opt.min_lr > opt.lr:  # the cosine rose to it, silently: a rate given as a fraction of lr, say
            raise InvalidInput(
                f"{named}: min_lr {opt.min_lr:g} is above lr {opt.lr:g}, so the cosine schedule would raise the "
                f"learning rate to {opt.min_lr:g} instead of lowering it. min_lr is the rate the run ends at, in lr's "
                "units (not a fraction of lr): set it at most lr"
            )


def _unread_override(group: str, key: str, name: str) -> str:
    """Why `optim.groups.<group>.<key>`, which the group's optimiser `name` does not read, is refused ("" where no
    table names the key): a base-only setting, or another optimiser's own."""
    if key in BASE_ONLY:
        return f"optim.groups.{group}.{key}: {key} {BASE_ONLY[key]}, so a group has none of its own: set optim.{key}"
    if owner := optimiser_owning(key):
        return (
            f"optim.groups.{group}.{key}: the group's optimiser, {name}, does not read {key} ({owner}'s), so it "
            f"would be ignored: leave it out, or set optim.groups.{group}.name {owner!r}"
        )
    return ""


def unread_keys(config: ml_collections.ConfigDict) -> dict[str, str]:
    """The keys (or groups of keys) that `config`'s training run does not read, the closing evaluation's
    (`evaluation.unread_keys`) among them, each with why and the setting that would read it: one set on the command
    line is refused (`settings.refuse_unread`)."""
    unread = evaluation.unread_keys(config)
    if config.model != "scratch":
        unread["model_arch"] = (
            f"model_arch is the architecture of a CLIP from random weights (model 'scratch'), and model "
            f"{config.model!r} brings its own. Leave it out, or set --config.model=scratch"
        )
    if "shot_sampling" in config and not config.shots:
        unread["shot_sampling"] = (
            "shot_sampling picks the few-shot images, and shots 0 trains on every image. Leave it out, or set "
            "--config.shots above 0"
        )
    if not config.eval_every:
        unread["eval_unit"] = (
            "eval_unit is what eval_every counts, and eval_every 0 scores the ID set after training alone. Leave it "
            "out, or set --config.eval_every above 0"
        )
    return {**unread, **_unread_base_optim(config)}


def _unread_base_optim(config: ml_collections.ConfigDict) -> dict[str, str]:
    """The base optimiser settings that no optimiser group of the run reads, each with why: a group reads the base
    value of each setting it does not override that its optimiser reads (`OPTIMISER_OWN`: the other's are not)."""
    overrides = config.optim.get("groups", {})
    groups = trained_groups(_method_module(config).trainable_rules(config))
    sets = {group: set(overrides.get(group, {}).keys()) for group in groups}  # the keys each group sets itself
    runs = {group: group_optim(config, group).name for group in groups}  # its optimiser
    unread = {}
    for key in sorted(set(config.optim.keys()) - {"groups", *BASE_ONLY}):
        owner = optimiser_owning(key)
        readers = [group for group in groups if owner in (None, runs[group])]  # the groups whose optimiser reads it
        if any(key not in sets[group] for group in readers):
            continue
        if readers:
            own = ", ".join(f"optim.groups.{group}.{key}" for group in readers)
            why = f"each optimiser group that reads optim.{key} sets its own ({own}), so the base value trains none"
            fix = "set it in those groups"
        elif any("name" in sets[group] for group in groups):
            names = "; ".join(f"{group}: {runs[group]}" for group in groups)
            why = f"optim.{key} is {owner}'s, and no optimiser group of this run is {owner} ({names})"
            fix = f"set a group's name to {owner} (optim.groups.<group>.name)"
        else:
            why = f"optim.{key} is {owner}'s, and this run's optimiser is {config.optim.name} (optim.name)"
            fix = f"set --config.optim.name={owner}"
        unread[f"optim.{key}"] = f"{why}. Leave it out, or {fix}"
    return unread


def check_same_classes(train: tuple[str, ...], test: tuple[str, ...]) -> None:
    """The training set's classes are the ID test set's, in the same order: the trained method's predictions are
    indices into the first, ID accuracy compares them with labels that index the second."""
    if tuple(train) == tuple(test):
        return
    i = next((i for i, (a, b) in enumerate(zip(train, test)) if a != b), min(len(train), len(test)))
    at = lambda names: repr(names[i]) if i < len(names) else "none"  # noqa: E731
    raise InvalidInput(
        f"the training set has {len(train)} classes and the ID test set {len(test)}, and they differ from class {i} "
        f"on ({at(train)} in training, {at(test)} in the test set). The trained method predicts the training "
        "classes, so its ID accuracy would compare them with the wrong labels. Give both the same classes in the "
        "same order (train_dataset and id_dataset)."
    )


# ------------------------------------------------------------ param partition


def _checkpoint_dir(workdir: str) -> str:
    return os.path.join(workdir, RUN_CHECKPOINTS)


def trained_groups(rules) -> list[str]:
    """The optimiser groups a method's `rules` (`trainable_rules`) train parameters in, sorted: all but "frozen"."""
    return sorted({group for _, group in rules} - {"frozen"})


def partition(params: dict, rules) -> tuple[dict, dict, dict]:
    """Split params into (trainable, frozen) trees and the optimiser group label of each trainable leaf.

    `rules` are ordered `(regex, group)`; the first rule whose regex matches a
    leaf's '/'-joined path decides. A leaf no rule covers is an error.
    """
    trainable, frozen, labels, uncovered = {}, {}, {}, []
    for path, leaf in flax.traverse_util.flatten_dict(params, sep="/").items():
        group = next((g for pattern, g in rules if re.search(pattern, path)), None)
        if group is None:
            uncovered.append(path)
        elif group == "frozen":
            frozen[path] = leaf
        else:
            trainable[path] = leaf
            labels[path] = group
    if uncovered:
        raise ValueError(f"no trainable/frozen rule covers these parameters: {uncovered[:20]}")
    if not trainable:
        raise ValueError("the rules leave no trainable parameter")
    return tuple(flax.traverse_util.unflatten_dict(d, sep="/") for d in (trainable, frozen, labels))


def merge(trainable: dict, frozen: dict) -> dict:
    return flax.traverse_util.unflatten_dict(
        {**flax.traverse_util.flatten_dict(frozen), **flax.traverse_util.flatten_dict(trainable)}
    )


# ------------------------------------------------------------------ optimiser


def warmup_steps(opt: ml_collections.ConfigDict, steps_per_epoch: int) -> int:
    """The steps of a group's linear warm-up (`opt.warmup_epochs`, rounded to whole steps)."""
    return int(round(opt.warmup_epochs * steps_per_epoch))


def schedule(opt: ml_collections.ConfigDict, steps_per_epoch: int, total_steps: int) -> optax.Schedule:
    """Linear warm-up then cosine to `min_lr`, stepped per step or per epoch (`opt.schedule_unit`)."""
    warmup = warmup_steps(opt, steps_per_epoch)
    per_epoch = opt.schedule_unit == "epoch"  # else "step" (check_train_settings)

    def lr(step):
        step = jnp.asarray(step, jnp.float32)
        t = jnp.floor(step / steps_per_epoch) * steps_per_epoch if per_epoch else step
        progress = jnp.clip((t - warmup) / jnp.maximum(total_steps - warmup, 1), 0.0, 1.0)
        cosine = opt.min_lr + 0.5 * (opt.lr - opt.min_lr) * (1 + jnp.cos(jnp.pi * progress))
        return jnp.where(step < warmup, opt.lr * (step + 1) / max(warmup, 1), cosine)

    return lr


def _group_tx(opt: ml_collections.ConfigDict, lr: optax.Schedule) -> optax.GradientTransformation:
    if opt.name == "sgd":  # PyTorch SGD: weight decay added to the gradient before momentum
        return optax.chain(
            optax.add_decayed_weights(opt.weight_decay),
            optax.sgd(lr, momentum=opt.momentum or None, nesterov=opt.nesterov),
        )
    return optax.adamw(lr, b1=opt.b1, b2=opt.b2, weight_decay=opt.weight_decay)  # "adamw" (check_train_settings)


def check_optim_groups(config: ml_collections.ConfigDict, groups) -> None:
    """`config.optim.groups` overrides only the optimiser groups the method's parameters train in (any other
    would be ignored, silently)."""
    groups = sorted(groups)
    unknown = sorted(set(config.optim.get("groups", {}).keys()) - set(groups))
    if unknown:
        raise InvalidInput(
            f"optim.groups overrides {unknown}, but {config.method}'s trainable parameters are in {groups}: the "
            "overrides would be ignored. Name one of those groups."
        )


def group_optim(config: ml_collections.ConfigDict, group: str) -> ml_collections.ConfigDict:
    """An optimiser group's settings: `config.optim` with the group's overrides from `config.optim.groups`."""
    opt = ml_collections.ConfigDict(config.optim.to_dict())
    for k, v in dict(config.optim.get("groups", {}).get(group, {})).items():
        opt[k] = v
    return opt


def warmup_outlasting_the_run(config: ml_collections.ConfigDict, groups, steps_per_epoch: int, total: int) -> str:
    """What to say (or "") where a group's warm-up lasts the whole run: its learning rate only rises and its cosine
    never starts (the paper config's 5 warm-up epochs in a quick `--config.epochs=3` run, unsaid)."""
    said = []
    for group in sorted(groups):
        opt = group_optim(config, group)
        warmup = warmup_steps(opt, steps_per_epoch)
        if warmup >= total:
            said.append(
                f"optim.warmup_epochs {opt.warmup_epochs:g} of group {group} is {warmup} steps, the run {total}: its "
                f"learning rate only rises, to {float(schedule(opt, steps_per_epoch, total)(total - 1)):.4g} of its "
                f"{opt.lr:g}, and its cosine decay never starts; lower warmup_epochs for a run this short"
            )
    return "; ".join(said)


def group_rates(config, labels: dict, steps_per_epoch: int, total_steps: int) -> dict[str, optax.Schedule]:
    """The learning-rate schedule of each optimiser group the trainable leaves (`labels`) are in, by group."""
    groups = sorted(set(jax.tree.leaves(labels)))
    return {group: schedule(group_optim(config, group), steps_per_epoch, total_steps) for group in groups}


def rate_metric(group: str, rates: dict) -> str:
    """The log's name for `group`'s learning rate: `lr` where one group trains (each method's now), else
    `lr/<group>`. It was the base settings' rate, which a group that overrides them does not train at."""
    return "lr" if len(rates) == 1 else f"lr/{group}"


def make_optimizer(config, labels: dict, steps_per_epoch: int, total_steps: int) -> optax.GradientTransformation:
    """optax.multi_transform over the trainable leaves' groups (`config.optim` per group, overrides in `groups`)."""
    rates = group_rates(config, labels, steps_per_epoch, total_steps)
    check_optim_groups(config, rates)
    txs = {group: _group_tx(group_optim(config, group), rate) for group, rate in rates.items()}
    tx = optax.multi_transform(txs, labels)
    return optax.chain(optax.clip_by_global_norm(config.optim.clip_norm), tx) if config.optim.clip_norm else tx


# ---------------------------------------------------------------------- state


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    trainable: Any
    opt_state: Any
    mutable: Any
    finite: jax.Array  # every loss and gradient so far finite
    bad_step: jax.Array  # first step (numbered from 1) with a non-finite loss or gradient, -1 if none
    scaler: dict | None  # `loss_scale` "dynamic": jaxood.loss_scale's state; None: no scaling


def initial_state(trainable: Any, tx: optax.GradientTransformation, mutable: Any, scaling: str) -> TrainState:
    """The state before the first step: `trainable` with `tx`'s fresh optimiser state, the method's `mutable` state
    and the loss scaler of `config.loss_scale` (`scaling`)."""
    return TrainState(
        step=jnp.asarray(0, jnp.int32),
        trainable=trainable,
        opt_state=tx.init(trainable),
        mutable=mutable,
        finite=jnp.asarray(True),
        bad_step=jnp.asarray(-1, jnp.int32),
        scaler=loss_scale.init(scaling),
    )


def make_step(method, tx, seed: int):
    """The jitted train step (state donated)."""
    base = jax.random.PRNGKey(seed)

    def step_fn(state: TrainState, frozen, batch):
        rng = jax.random.fold_in(base, state.step)
        scaler = state.scaler

        def loss_of(trainable):
            loss, aux = method.loss(merge(trainable, frozen), state.mutable, batch, rng)
            return (loss if scaler is None else loss_scale.scaled(loss, scaler)), (loss, aux)

        (_, (loss, (metrics, mutable))), grads = jax.value_and_grad(loss_of, has_aux=True)(state.trainable)
        if scaler is not None:
            grads = loss_scale.unscaled(grads, scaler)
        updates, opt_state = tx.update(grads, state.opt_state, state.trainable)
        trainable = optax.apply_updates(state.trainable, updates)
        grad_norm = optax.tree_utils.tree_norm(grads)
        # A finite loss can have NaN/inf gradients (a sqrt at 0, an OT backward), which make every parameter NaN.
        grads_finite = jnp.isfinite(grad_norm)
        if scaler is not None:  # a gradient the scale overflowed: the step is skipped, not a NaN
            metrics = dict(metrics, loss_scale=scaler["scale"])
            scaler, skip = loss_scale.update(scaler, grads_finite)
            trainable = loss_scale.unless_skipped(skip, trainable, state.trainable)
            opt_state = loss_scale.unless_skipped(skip, opt_state, state.opt_state)
            metrics["skipped"] = skip.astype(jnp.float32)
            grads_finite = grads_finite | skip
        ok = jnp.isfinite(loss) & grads_finite
        new = TrainState(
            step=state.step + 1,
            trainable=trainable,
            opt_state=opt_state,
            mutable=mutable,
            finite=state.finite & ok,
            bad_step=jnp.where(state.finite & ~ok, state.step + 1, state.bad_step),  # numbered as logged and saved
            scaler=scaler,
        )
        return new, dict(metrics, grad_norm=grad_norm)

    return step_fn


def line_values(steps: list[dict]) -> dict:
    """A log line's values: each metric's mean over `steps`, the steps since the line before. `grad_norm`'s is over
    the steps loss scaling took: a skipped step's norm is inf or NaN (why it was skipped), which would make the
    mean so and hide the other steps' (`skipped` is the fraction skipped). A line whose steps were all skipped has
    no `grad_norm`."""
    values = {k: float(np.mean([m[k] for m in steps])) for k in steps[0] if k != "grad_norm"}
    taken = [m["grad_norm"] for m in steps if not m.get("skipped")]
    return values | ({"grad_norm": float(np.mean(taken))} if taken else {})


# ---------------------------------------------------------------------- train


def architecture(config: ml_collections.ConfigDict) -> clip.CLIPConfig | None:
    """The CLIP's architecture without its weights: `model_arch` for random weights, the config file of the toy
    CLIP, a local folder or a hub id (fetched alone); None for what loading will refuse."""
    if config.model == "scratch":
        return clip.CLIPConfig.from_dict(config.model_arch.to_dict())
    name = os.fspath(clip.resolve(config.model))
    return convert.local_config(name) or (convert.hub_config(name) if convert.is_hub_id(name) else None)


def _log_schedule_change(config, labels: dict, saved: dict, steps_per_epoch: int, start: int, total: int) -> None:
    """A resumed run of another length (`num_steps`, `epochs`) stretches its learning-rate schedules over the new
    total from the step it resumes at: say so, with each optimiser group's rate there before and now (a longer
    cosine run goes back up)."""
    before = saved.get("num_steps") or saved.get("epochs", 0) * steps_per_epoch
    if not isinstance(before, int) or before in (0, total):
        return
    old, new = (group_rates(config, labels, steps_per_epoch, t) for t in (before, total))
    said = "; ".join(
        f"the learning rate of group {group} is {float(rate(start)):.4g}, where the {before}-step schedule had "
        f"{float(old[group](start)):.4g}"
        for group, rate in new.items()
    )
    distributed.log(
        f"the run's length changed from {before} to {total} steps, and its learning-rate schedule with it: at step "
        f"{start} {said}"
    )


def _training_images(config: ml_collections.ConfigDict, source, labels: np.ndarray) -> tuple[np.ndarray, int, str]:
    """The images to train on, how many undecodable ones few-shot sampling passed over (every host's), and how
    many a class has, for the log ("16 per class"; stratified: "stratified 2-shot sampling: 0 to 3 per class").

    With `shots`, each class's are its first decodable images in the seed's order, as many as its quota
    (`shot_sampling`: `shots` each, or its stratified share): an undecodable pick was masked out of every step, and
    its class trained on fewer shots, said only at the end. Checking the picks decodes them once more (ImageNet's
    16 shots: 16,000 images); every image (shots 0) is not checked here.
    """
    class_names = source.class_names
    if not config.shots:
        return few_shot_indices(labels, None, config.seed, len(class_names)), 0, "all per class"
    check = DecodeCheck(source)
    sampled = sampling_name(config.shots, config.shot_sampling)
    try:
        indices = few_shot_indices(labels, config.shots, config.seed, len(class_names), check, config.shot_sampling)
    finally:  # said before a class left without any is refused
        if check.found:
            print(
                f"[train] {sampled} passed over {len(check.found)} undecodable image(s)"
                f"{on_host(check.process_index, check.process_count)}, taking the next image of its class for each "
                f"where there is one: {listed(check.found)}",
                flush=True,
            )
    have = np.bincount(labels[indices], minlength=len(class_names))
    per_class = np.bincount(labels[labels >= 0], minlength=len(class_names))
    quota = shot_quota(per_class, config.shots, config.seed, config.shot_sampling)
    if (empty := np.flatnonzero(quota == 0)).size:  # stratified: a small class's share rounds down to none
        words = functools.partial(agreeing, empty.size)
        distributed.log(
            f"warning: {sampled} gives {empty.size} of {len(class_names)} classes no training image, "
            f"{words('its share', 'their shares')} of {config.shots} x {len(class_names)} rounding down to 0 (class "
            f"(images): {first_ten(f'{class_names[c]} ({per_class[c]})' for c in empty)}): nothing trains toward "
            f"{words('it', 'them')}, as in SOT-GLP's released code; shot_sampling 'per_class' takes {config.shots} of "
            "each class"
        )
    if (short := np.flatnonzero(have < quota)).size:
        share = config.shot_sampling == "stratified"
        shown = first_ten(f"{class_names[c]} ({have[c]}{f' of {quota[c]}' if share else ''})" for c in short)
        of_share = " of its share" if share else ""
        words = functools.partial(agreeing, short.size)
        fewer = f"{words('its stratified share', 'their stratified shares')} of" if share else config.shots
        train_on = words("its share", "their shares") if share else config.shots
        distributed.log(
            f"warning: {short.size} of {len(class_names)} classes {words('has', 'have')} fewer than {fewer} decodable "
            f"training images and {words('trains on those it has', 'train on those they have')} (class (decodable "
            f"images{of_share}): {shown}): replace the undecodable ones and start a new run to train on {train_on} (a "
            "resumed run would change its images at the step it resumes)"
        )
    per = f"{sampled}: {have.min()} to {have.max()}" if config.shot_sampling == "stratified" else config.shots
    return indices, check.total, f"{per} per class"


# What a training run's refusal of an evaluation batch too large for a device asks to set: the periodic and the
# closing evaluations' step is saved before they compile.
TRAINING_EVAL_FIXES = (
    f"{evaluation.EVAL_BATCH_FIXES} (the run saved the step it evaluates: the same command goes on from it, and "
    "after the last step evaluates it again without training)"
)


class PeriodicAccuracy:
    """A training run's ID accuracy every `eval_every` steps or epochs (`eval_unit`): called with the parameters,
    each prediction's accuracy on the ID test set, as the closing evaluation's `id_accuracy` (`scorer_of(params)`:
    a predictions-only scorer); None where `stop()` came true before a batch. The call compiled for the first is
    reused: only the scorer's arrays change."""

    def __init__(self, scorer_of: Callable[[dict], evaluation.Scorer], source, transform, batch_size: int, mesh):
        self.scorer_of, self.source, self.transform, self.batch_size, self.mesh = (
            scorer_of, source, transform, batch_size, mesh
        )  # fmt: skip
        self._scorer: evaluation.Scorer | None = None

    def __call__(self, params: dict, stop: Callable[[], bool]) -> dict[str, float | None] | None:
        fresh = self.scorer_of(params)
        if self._scorer is None:
            self._scorer = fresh
        else:
            self._scorer.args = fresh.args
        try:
            out = evaluation.score_dataset(
                "ID accuracy", self.source, self._scorer, self.transform, self.batch_size, self.mesh, stop
            )
        finally:
            self._scorer.args = None  # the parameters' next step is donated, and the text features not held
        return None if out is None else evaluation.accuracies(out)


def train(config: ml_collections.ConfigDict, workdir: str, typed: Iterable[str] = ()) -> tuple[dict, dict]:
    """Train `config.method`, checkpointing and resuming in `workdir`; then evaluate. Returns (results, params).
    `typed`: the keys set on the command line (`cli.typed_keys`), refused where the run would not read them."""
    if not config.get("method"):  # a zero-shot config, which lacks the training settings (main refuses it first)
        jaxood.methods.check_command("jaxood.train", config)
    check_train_settings(config)
    settings.refuse_unread(typed, unread_keys(config))
    distributed.maybe_initialize()
    workdir = os.path.expanduser(workdir)  # a shell leaves `--workdir=~/runs/x` as it is
    with workdir_lock.holding(workdir, shared=True):  # every host writes and reads the checkpoints there
        return _train(config, workdir)


def _method_module(config: ml_collections.ConfigDict):
    """The module `jaxood.methods.<config.method>`; a name no method module has is refused (a planned method's as
    planned), before any work."""
    try:
        return importlib.import_module(f"jaxood.methods.{config.method}")
    except ModuleNotFoundError as err:
        if err.name != f"jaxood.methods.{config.method}":
            raise  # the method exists but imports something missing
        methods = sorted(m.name for m in pkgutil.iter_modules(jaxood.methods.__path__))
        if planned := jaxood.methods.planned_method_note(config.method):
            raise InvalidInput(
                f"config.method {config.method!r}: {planned}; the methods it trains are {joined(map(repr, methods))}"
            ) from None
        raise InvalidInput(not_one_of("config.method", config.method, methods)) from None


def _train(config: ml_collections.ConfigDict, workdir: str) -> tuple[dict, dict]:
    """`train` in its workdir, which this run holds."""
    method_module = _method_module(config)
    # Input first: a missing dataset fails before any model work, and every missing one in one error.
    eval_inputs = evaluation.open_inputs(config, train=True, method_rows=method_module.SCORE_ROWS)
    mesh = data_mesh()
    check_batch(config.batch_size, mesh, "batch_size")  # split over the devices, as open_inputs checks eval's
    caption_length = config.get("caption_length", 0)
    if not caption_length:  # the trained method predicts the training classes, and is scored on the ID labels
        check_same_classes(eval_inputs.train.class_names, eval_inputs.id.class_names)
    # The method's rules name its optimiser groups: a misspelt override fails here, not once the weights load.
    rules = method_module.trainable_rules(config)
    groups = trained_groups(rules)
    check_optim_groups(config, groups)
    arch = architecture(config)
    if arch and hasattr(method_module, "check_settings"):  # else build checks them, once the model is loaded
        method_module.check_settings(config, arch)
    if arch:  # the loaders check again as they start: the closing evaluation's then comes after training
        for key in ("batch_size", "eval_batch_size"):
            check_host_memory(config[key], arch.image_size, key)
    added = {**ADDED_KEYS, **getattr(method_module, "ADDED_KEYS", {})}
    saved_config = check_resume(config, workdir, getattr(method_module, "RESUME_MAY_CHANGE", ()), added)
    # The training images before the model: too few shots or images fail before a download or load.
    train_source = eval_inputs.train
    class_names = train_source.class_names
    # Image-text training learns from every captioned image, object-free ones (label -1) included.
    if caption_length:
        indices, passed_over, per = np.arange(len(train_source)), 0, "all"
    else:
        train_labels = train_source.labels()  # `labels` below are the parameters' optimiser groups
        if unlabelled := int(np.count_nonzero(train_labels < 0)):  # left out of the classes' images, unsaid
            distributed.log(
                f"config.train_dataset: {unlabelled} of its {len(train_labels)} images have no label (an image "
                "list's lines without one) and are not trained on: give them their labels to train on them"
            )
        indices, passed_over, per = _training_images(config, train_source, train_labels)
    if len(indices) < config.batch_size:  # epochs would make 0 steps (and evaluate the untrained method), silently
        raise InvalidInput(
            f"{len(indices)} training images are fewer than one batch (batch_size {config.batch_size}): lower "
            "batch_size, or train on more images"
        )
    if config.model == "scratch":  # pretraining: the architecture in config.model_arch, random weights
        model = clip.CLIP(arch, dtype=clip.compute_dtype(config.dtype), remat=config.remat)
        clip_params = jax.device_get(clip.init_params(clip.CLIP(arch), config.seed))
    else:
        model, clip_params = clip.load(config.model, dtype=clip.compute_dtype(config.dtype), remat=config.remat)
    transform = clip_train(model.cfg.image_size, tuple(config.augment.scale), config.augment.flip)
    loader = Loader(
        train_source,
        transform,
        config.batch_size,
        indices,
        seed=config.seed,
        mesh=mesh,
        caption_length=caption_length,
        name="batch_size",
    )
    total = config.num_steps or config.epochs * loader.steps_per_epoch
    # Both set: an --config.epochs given over a config that counts steps (configs/toy_clip.py) was ignored, unsaid.
    overrides = f" (num_steps, which overrides epochs {config.epochs})" if config.num_steps and config.epochs else ""
    distributed.log(
        f"{len(indices)} training images ({per}, {len(class_names)} classes), {loader.steps_per_epoch} steps/epoch, "
        f"{total} steps{overrides}, {jax.device_count()} {jax.devices()[0].platform} device(s)"
    )
    if said := warmup_outlasting_the_run(config, groups, loader.steps_per_epoch, total):
        distributed.log(said)
    if config.dtype == "float16" and config.loss_scale == "none":
        distributed.log(
            "dtype float16 without loss scaling: a gradient below float16's smallest number (6e-8) becomes 0 in the "
            "backward pass. --config.loss_scale=dynamic scales the loss as PyTorch's GradScaler does"
        )
    by_epoch = config.eval_unit == "epoch"  # the released SOT-GLP code's eval_freq
    eval_interval = config.eval_every * (loader.steps_per_epoch if by_epoch else 1)
    if eval_interval:
        n = config.eval_every
        epochs = "epochs" if n > 1 else "epoch"
        per = f" {n} {epochs}, {loader.steps_per_epoch} steps/epoch" if by_epoch else ""
        ends_first = eval_interval >= total  # a short trial of a config that scores every few epochs (reference)
        none = f": none before the run's last step, {total}, which the closing evaluation scores" if ends_first else ""
        distributed.log(f"ID accuracy every {eval_interval} steps (eval_every{per}){none}")

    method = method_module.build(config, model, clip_params, class_names, mesh)
    trainable, frozen, labels = partition(method.params, rules)
    n_train = sum(np.size(x) for x in jax.tree.leaves(trainable))
    distributed.log(
        f"trainable parameters: {n_train:,} in {len(jax.tree.leaves(trainable))} arrays; frozen: "
        f"{sum(np.size(x) for x in jax.tree.leaves(frozen)):,}"
    )
    tx = make_optimizer(config, labels, loader.steps_per_epoch, total)
    clip_trains = "clip" in trainable  # its zero-shot prediction changes in training (pretraining)
    id_names = eval_inputs.id.class_names

    def scorer_of(params: dict, final: bool = False) -> evaluation.Scorer:
        """The closing evaluation's scorer (`final`: the method's rows with the zero-shot ones), or `eval_every`'s:
        the predictions that training changes, the method's and, where the CLIP trains, the zero-shot one."""
        scorer = method.scorer(params)
        if config.eval_zero_shot and (final or clip_trains):
            zero_shot = evaluation.zero_shot_scorer(config, model, params["clip"], id_names, scores=final)
            scorer = evaluation.combine(zero_shot, scorer)
        scorer = scorer if final else evaluation.predictions_only(scorer)
        scorer.fixes = TRAINING_EVAL_FIXES
        return scorer

    transform_eval = clip_eval(model.cfg.image_size)
    accuracy_at = PeriodicAccuracy(scorer_of, eval_inputs.id, transform_eval, config.eval_batch_size, mesh)

    replicated = every_device(mesh)
    trainable, frozen = replicate(trainable, mesh), replicate(frozen, mesh)
    # The scalars and the mutable state replicated; the rest is there already.
    state = replicate(initial_state(trainable, tx, method.state, config.loss_scale), mesh)
    # The devices hold the state now; drop the host copy the method was built from (the CLIP: 600 MB for a
    # ViT-B/16, which on a CPU backend would otherwise sit in memory twice for the whole run).
    del clip_params
    method.params = method.state = None
    ckpt = Checkpoints(_checkpoint_dir(workdir), config.keep_checkpoints)
    start = ckpt.latest() or 0
    remaining = max(total - start, 0)
    if start:
        state = ckpt.restore(start, state)
        left = f"{remaining} steps to go" if remaining else f"at or past the config's {total} steps: evaluating it"
        distributed.log(f"resumed from the checkpoint at step {start}, {left}")
        if saved_config and remaining:
            _log_schedule_change(config, labels, saved_config, loader.steps_per_epoch, start, total)
    code = trained_by(workdir, start, remaining)

    step_fn = jax.jit(
        make_step(method, tx, config.seed),
        in_shardings=(replicated, replicated, loader.sharding),  # every batch leaf split over the data axis
        out_shardings=(replicated, replicated),
        donate_argnums=(0,),
    )
    batches = loader.train(start, remaining)
    if remaining:  # compiled for the first batch, and refused before it runs if it cannot fit
        first = next(batches)
        fixes = ", ".join(filter(None, (method.memory_fixes, TRAIN_STEP_FIXES)))  # the method's own first
        step_fn = compile_within_memory(step_fn, state, frozen, first, what="train step", fixes=fixes)
        batches = itertools.chain([first], batches)
    # The run's config, once nothing before its first step has refused it (a refused run leaves no workdir).
    if jax.process_count() > 1:  # every host has read the saved config before host 0 replaces it
        multihost_utils.sync_global_devices("jaxood.train: resume checked")
    # Whole or not at all (a run killed while writing it could not be resumed). A rerun that trains no step keeps the
    # saved one: its length is the one the checkpoints were trained to, with which a resume compares its schedule.
    if distributed.is_first_host() and (remaining or saved_config is None):
        with write_whole(os.path.join(workdir, RUN_CONFIG)) as f:
            f.write(config.to_json_best_effort(indent=1))
        if remaining:
            with write_whole(os.path.join(workdir, TRAINED_BY)) as f:
                json.dump(code, f, indent=1)
    last_good = start

    def kept(step: int) -> str:  # for an error that stops the run
        if step:
            return f"The last good checkpoint (step {step}) is in {_checkpoint_dir(workdir)}"
        return f"No checkpoint was saved before it (checkpoint_every {config.checkpoint_every})"

    def stopped_at(step: int, by: str) -> Preempted:  # a stop at a step saved
        return Preempted(
            f"stopped at step {step} of {total} by {by}, after saving its checkpoint in {_checkpoint_dir(workdir)}. "
            "Run the same command again to resume from it."
        )

    def write(step: int, values: dict) -> None:
        try:
            writer.scalars(step, values)
        except OSError as err:  # a full disk: the log's appends may meet it before a checkpoint does
            fix = write_fix(err, workdir)
            raise NotSaved(
                f"the training log could not be written at step {step} ({err.strerror or err}). "
                f"{kept(last_good)}. {fix}, then run the same command again to resume."
            ) from err

    rates = group_rates(config, labels, loader.steps_per_epoch, total)  # for the log
    limits = dict(method.metric_limits)  # the ones not yet exceeded

    def scores_accuracy(step: int) -> bool:  # eval_every's steps; the last is the closing evaluation's
        return bool(eval_interval) and 0 < step < total and step % eval_interval == 0

    # A run stopped while it scored the ID accuracy resumes at that step, saved before it: scored first then. Every
    # host reads the shared log, and they agree (a collective), so they all score it or none.
    accuracy_owed = scores_accuracy(start) and distributed.on_every_host(not logged_at(workdir, start, "id_accuracy/"))
    # The writer is closed on every exit: TensorBoard shows a stopped run's curve (a NaN's included) to a caller
    # going on. A preemption notice (SIGTERM), Ctrl-C or a closed terminal saves the step it ends at and stops
    # (jaxood.preemption).
    writer = MetricWriter(workdir, distributed.is_first_host(), config.tensorboard, start)
    with PreemptionNotice(workdir) as preemption, contextlib.closing(writer):
        # The rates start here, after the writer's set-up (TensorBoard's import: 0.8 s on the 2-core CPU).
        progress = Progress("train", remaining, "steps", every=config.progress_every)
        last_line = (start, time.monotonic())  # (step, time) of the log's previous line, for steps_per_s

        def log_id_accuracy(step: int) -> None:
            """`eval_every`'s ID accuracy of `step`, saved already. A stop noticed during it leaves it unfinished,
            and the run stops at that step. In a multi-host job `reason` waits for the hosts' agreement, at a later
            step: they finish it."""
            nonlocal last_line
            began = time.monotonic()
            accuracy = accuracy_at(merge(state.trainable, frozen), stop=lambda: bool(preemption.reason))
            if accuracy is None:
                raise stopped_at(step, f"{preemption.reason} while its ID accuracy was scored (not logged)")
            write(step, accuracy_record(accuracy))
            last_line = (last_line[0], last_line[1] + time.monotonic() - began)  # steps_per_s: training's rate

        if accuracy_owed:
            log_id_accuracy(start)
        unlogged = []  # each step's metrics since the log's previous line, on the device until that line
        for step, batch in zip(range(start, total), batches):
            state, metrics = step_fn(state, frozen, batch)
            unlogged.append(metrics)
            done = step + 1
            stop = preemption.reached(done)
            # The ID accuracy's step is saved first: an evaluation that cannot fit or is stopped loses no step.
            accuracy_due = scores_accuracy(done)
            save = stop or accuracy_due or done % config.checkpoint_every == 0 or done == total
            if save or done % config.log_every == 0:  # a step saved is checked (and logged) first
                finite, bad, unlogged = jax.device_get((state.finite, state.bad_step, unlogged))
                if not finite:
                    raise LossNotFinite(
                        f"the loss or its gradient became NaN/inf at step {int(bad)}; stopped without saving. "
                        f"{kept(last_good)}"
                    )
                values = line_values(unlogged)
                unlogged = []
                for name in [k for k, (most, _) in limits.items() if values[k] > most]:
                    most, message = limits.pop(name)  # said once: the log's later lines show how it goes
                    distributed.log(f"warning: {name}={values[name]:.4g} at step {done} is above {most}: {message}")
                values.update({rate_metric(group, rates): float(rate(step)) for group, rate in rates.items()})
                now = time.monotonic()
                values["steps_per_s"] = (done - last_line[0]) / (now - last_line[1])  # since the line before
                last_line = (done, now)
                write(done, values)
            if save:
                ckpt.save(done, state)
                last_good = done
            progress.update()
            if stop:
                raise stopped_at(done, preemption.reason)
            if accuracy_due:
                log_id_accuracy(done)
    loader.log_unreadable("train")
    # Distinct images the steps of this run (since it started or resumed) could not decode, over every host, and
    # those its few-shot sampling passed over.
    unreadable = {"train": passed_over + loader.unreadable_total()} if remaining or passed_over else {}

    params = merge(state.trainable, frozen)
    # Zero-shot rows: the CLIP as training left it (the frozen one, or for pretraining the one just trained,
    # from scratch or continued from a saved model), where it already is: on the devices.
    eval_clip = params["clip"]
    evaluated = max(start, total)  # a workdir trained past the config's steps is evaluated where it is
    stopped = (
        f"while evaluating step {evaluated}, whose checkpoint is in {_checkpoint_dir(workdir)}; no report "
        "was written. Run the same command again to evaluate it."
    )
    draws = config.plots and distributed.is_first_host()
    try:
        with StopsAtOnce(workdir, stopped):
            results = evaluation.evaluate(
                config,
                workdir,
                model=model,
                params=eval_clip,
                scorer=scorer_of(params, final=True),
                inputs=eval_inputs,
                unreadable=unreadable,
                step=evaluated,
                trained_by=code,
            )
    except BaseException:  # stopped or failed: the curves of what training logged are there until it is run again
        curves = training_curves(workdir, evaluated, {}) if draws else None
        if curves:
            distributed.log(f"Training curves (without the closing evaluation's ID accuracy): {curves}")
        raise
    if config.tensorboard and distributed.is_first_host():
        write_evaluation(workdir, evaluated, results)
    curves = training_curves(workdir, evaluated, results["id_accuracy"]) if draws else None
    logs = [f"Training curves: {curves}"] if curves else []
    if config.tensorboard:
        tb = os.path.join(workdir, TENSORBOARD)
        logs.append(f"TensorBoard logs: {tb} (pip install tensorboard; tensorboard --logdir {tb})")
    if logs:
        distributed.log("; ".join(logs))
    return results, params


def training_curves(workdir: str, evaluated: int, id_accuracy: dict) -> str | None:
    """`training_curves.png` of `metrics.jsonl`, each ID accuracy logged during training (`eval_every`) drawn on to
    the closing evaluation's of step `evaluated`; its path, or None when nothing was logged."""
    logged = records(workdir)
    closing = {k: v for k, v in accuracy_record(id_accuracy).items() if any(k in r for r in logged)}
    return report.training_curves(workdir, logged + [{"step": evaluated, **closing}] if closing else logged)


def main(argv):
    del argv
    from absl import logging

    from jaxood.cli import CONFIG, WORKDIR, typed_keys

    logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint operation at INFO
    jaxood.methods.check_command("jaxood.train", CONFIG.value)  # the pretraining's would export nothing
    train(CONFIG.value, WORKDIR.value, typed_keys())


if __name__ == "__main__":
    from jaxood import cli

    cli.run(main, "python -m jaxood.train --config=configs/sot_glp.py:demo --workdir=runs/demo")
