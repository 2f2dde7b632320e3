"""`jaxood.settings`: the range checks every config value goes through, and the messages they give."""

import argparse
import functools
import os
import pathlib
import re

import ml_collections
import pytest

from jaxood import settings
from jaxood.errors import InvalidInput


def _config():
    return ml_collections.ConfigDict({"a": {"n": 3, "x": 0.5, "flag": True, "name": "big"}})


def _set(config, key, value):
    config.a[key] = value
    return config


def test_values_in_range_are_returned():
    c = _config()
    assert settings.whole(c, "a.n", 1, 3) == 3 and settings.number(c, "a.x", above=0, most=0.5) == 0.5
    assert settings.text(c, "a.name", "a size") == "big"
    with c.ignore_type():
        c.a.name = pathlib.Path("~/clip")
    assert settings.text(c, "a.name", "a folder", path=True) == pathlib.Path("~/clip")  # a path object, as os takes


@pytest.mark.parametrize(
    "check, message",
    [
        (lambda c: settings.whole(c, "a.n", 4), "a.n must be a whole number of at least 4, got 3"),
        (lambda c: settings.whole(c, "a.n", 0, 2), "a.n must be a whole number from 0 to 2, got 3"),
        (lambda c: settings.whole(c, "a.flag", 0), "a.flag must be a whole number of at least 0, got True"),
        (lambda c: settings.number(c, "a.x", least=0, below=0.5), "a.x must be a number >= 0 and < 0.5, got 0.5"),
        (lambda c: settings.number(c, "a.name"), "a.name must be a number, got 'big'"),  # no bound: no stray space
        (lambda c: settings.text(c, "a.n", "a size"), "a.n must be a string (a size), got 3"),
        (lambda c: settings.text(c, "a.flag", "a folder", path=True), "a.flag must be a string (a folder), got True"),
        # An infinite temperature gave every image the same score (AUROC 50), silently; an infinite tau trained on
        # zero logits.
        (
            lambda c: settings.number(_set(c, "x", float("inf")), "a.x", above=0),
            "a.x must be a finite number > 0, got inf",
        ),
        (lambda c: settings.number(_set(c, "x", float("-inf")), "a.x"), "a.x must be a finite number, got -inf"),
        (
            lambda c: settings.choice(c, "a.name", ("small", "medium")),
            "a.name must be one of 'small' or 'medium', got 'big'",
        ),
    ],
)
def test_out_of_range_names_key_range_and_value(check, message):
    with pytest.raises(InvalidInput) as err:
        check(_config())
    assert str(err.value) == message


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--classes", "2000"], "--classes: must be a whole number from 1 to 1000, got 2000"),  # ImageNet has 1000
        (["--batch", "0"], "--batch: must be a whole number of at least 1, got 0"),
        (["--prompt_chunk", "1.5"], "--prompt_chunk: '1.5' is not a whole number"),
        (["--dtype", "float8"], "--dtype: invalid choice: 'float8'"),
        # Installed from a copy, the package has no configs/ beside it: that was a FileNotFoundError's traceback.
        (["--config", "/no/configs/sot_glp.py"], "--config: no config file /no/configs/sot_glp.py: the configs ship"),
    ],
)
def test_benchmark_flags_are_range_checked(argv, message, capsys):
    """The benchmarks' counts go through `jaxood.bench.count`: out of range, argparse stops before any work."""
    from jaxood.bench import sot_glp

    with pytest.raises(SystemExit) as stop:
        sot_glp.main(argv)
    assert stop.value.code == 2 and message in capsys.readouterr().err


def test_benchmark_number_flags():
    from jaxood.bench import count, positive

    assert count(0)("0") == 0 and count(1, 3)("3") == 3 and positive("0.5") == 0.5
    for parse, text in ((count(1, 3), "4"), (count(), "x"), (positive, "0"), (positive, "nan")):
        with pytest.raises(argparse.ArgumentTypeError):
            parse(text)


# Where docs/config.md names one row for a whole value: the dataset entries (README's Datasets gives their forms) and
# the groups given as dicts.
WHOLE_VALUES = ("id_dataset", "train_dataset", "ood_datasets", "ood_groups", "optim.groups")
CONFIG_FILES = ("sot_glp", "zeroshot", "toy_clip")  # docs/config.md's default columns, in order


def _keys(node, prefix="", whole=WHOLE_VALUES):
    """A config's dotted keys (of its `to_dict()`) and their values, down to the leaves or a `whole` key."""
    out = {}
    for name, value in node.items():
        key = prefix + name
        if isinstance(value, dict) and key not in whole:
            out.update(_keys(value, key + ".", whole))
        else:
            out[key] = value
    return out


def test_docs_config_md_names_every_config_key_with_its_default():
    """docs/config.md is the config keys' reference: a row per key of any variant of the three config files, no
    other, each with its default variant's value per file (an em dash where that has none); a key added to a config,
    or a default changed, without the page fails here."""
    from conftest import ROOT, config_module

    with open(os.path.join(ROOT, "docs", "config.md"), encoding="utf-8") as f:
        rows = [line.split(" | ") for line in f if line.startswith("| `")]
    documented = {row[0].removeprefix("| `").removesuffix("`"): row[1:4] for row in rows}
    assert len(documented) == len(rows), "a key has two rows"
    modules = [config_module(name) for name in CONFIG_FILES]
    variants = [mod.get_config(arg).to_dict() for mod in modules for arg in getattr(mod, "ARGS", (None,))]
    every = {key for config in variants for key in _keys(config)}
    assert sorted(set(documented) - every) == [], "docs/config.md names keys no config has"
    assert sorted(every - set(documented)) == [], "docs/config.md lacks these keys"
    for column, mod in enumerate(modules):
        defaults = _keys(mod.get_config().to_dict())
        for key, cells in documented.items():
            cell, value = cells[column], defaults.get(key)
            if key not in defaults:
                assert cell == "\u2014", (key, CONFIG_FILES[column], cell)
            elif isinstance(value, dict) and value:  # a dataset entry: said in words
                assert cell not in ("\u2014", ""), (key, CONFIG_FILES[column], cell)
            else:
                assert cell == f"`{value!r}`", (key, CONFIG_FILES[column], cell, value)


class _WorkStarted(Exception):
    """Raised where a command loads or makes its CLIP: every setting it checks was taken."""


@pytest.fixture
def command_until_the_clip(monkeypatch):
    """`take(command, config, workdir, key, typed=())`: how `jaxood.<command>` took `config` (`typed`: the keys set
    on the command line) until it would load its CLIP, None where it refused it in one line that names `key`'s last
    part, else what it did."""
    import jaxood.evaluate
    import jaxood.train
    from jaxood.errors import UserError, missing_config_key
    from jaxood.models import clip

    def work(*args, **kwargs):
        raise _WorkStarted

    monkeypatch.setattr(clip, "load", work)
    monkeypatch.setattr(clip, "init_params", work)
    commands = {"train": jaxood.train.train, "evaluate": jaxood.evaluate.evaluate}

    def take(command, config, workdir, key, typed=()) -> str | None:
        try:
            commands[command](config, workdir, typed=typed)
            return "ran"
        except _WorkStarted:
            return "reached the CLIP"
        except (UserError, KeyError, AttributeError) as err:  # a lacking key's, as the command line names it
            refusal = err if isinstance(err, UserError) else missing_config_key(err)
            if refusal is None:
                return f"{type(err).__name__}: {err}"
            return None if re.search(rf"\b{key.rsplit('.', 1)[-1]}\b", str(refusal)) else f"refused unnamed: {refusal}"
        except Exception as err:  # failed where the value was read, with a traceback
            return f"{type(err).__name__}: {err}"

    return take


def _of_other_types(value) -> list:
    """Values of other types than `value`'s, as a config file written by hand may hold. Not True for a float key:
    ml_collections makes it 1.0."""
    if isinstance(value, bool):
        return ["yes"]
    if isinstance(value, float):
        return ["x", None]
    if isinstance(value, int):
        return ["x", None, True]
    if isinstance(value, str):
        return [7, None]
    if isinstance(value, (tuple, list)):
        return ["x", 3]
    return ["x"]


def _leaves_of(name, variant) -> dict:
    """Every leaf of `configs/<name>.py`'s config, dotted, with its value: the dataset entries' and groups' keys too."""
    from conftest import load_config

    return _keys(load_config(name, variant).to_dict(), whole=())


def _without(name, variant, key):
    """`configs/<name>.py`'s config without `key` (dotted)."""
    from conftest import load_config

    config = load_config(name, variant)
    *parents, leaf = key.split(".")
    del functools.reduce(lambda node, part: node[part], parents, config)[leaf]
    return config


TOY_CONFIGS = [("sot_glp", "demo", "train"), ("toy_clip", None, "train"), ("zeroshot", "toy", "evaluate")]
# Keys a config's command does not read, whose values pass unchecked: the variant's name, a record of it, and the
# architecture of random weights, which the demo's `model` "toy" does not take.
NOT_READ = {"sot_glp": ("variant", "model_arch.")}


@pytest.mark.parametrize("name, variant, command", TOY_CONFIGS)
def test_a_value_of_another_type_is_refused_by_its_key_before_any_work(
    name, variant, command, command_until_the_clip, tmp_path
):
    """Each key of the toy configs set in turn to a value of another type, as a config file written by hand may hold
    (`model` None and `mcm_template` 7 failed with a TypeError's traceback where they were read, `remat` "no" ran as
    True, before each was checked): each is refused in one line that names its key before the command loads its
    CLIP, but for the keys `NOT_READ` lists, which reach it. A key added to a config without its check fails here."""
    from conftest import load_config

    wrong = []
    for i, (key, value) in enumerate(_leaves_of(name, variant).items()):
        for j, other in enumerate(_of_other_types(value)):
            config = load_config(name, variant, **{key: other})
            outcome = command_until_the_clip(command, config, str(tmp_path / f"run{i}_{j}"), key)
            expected = "reached the CLIP" if key.startswith(NOT_READ.get(name, ())) else None  # None: refused
            if outcome != expected:
                wrong.append(f"{key} = {other!r}: {outcome or 'refused by its key, where NOT_READ lists it'}")
    assert not wrong, "\n".join(wrong)


# Keys a config may lack: those its command does not read (`NOT_READ`'s, and the other optimiser's settings), and a
# toy world entry's but its kind and split, which have defaults.
MAY_LACK = {
    "sot_glp": (*NOT_READ["sot_glp"], "optim.b1", "optim.b2"),
    "toy_clip": ("optim.momentum", "optim.nesterov"),
}


@pytest.mark.parametrize("name, variant, command", TOY_CONFIGS)
def test_a_lacking_key_is_named_before_any_work(name, variant, command, command_until_the_clip, tmp_path):
    """Each key of the toy configs removed in turn, as from a config file written by hand or for an earlier jaxood: a
    lacking `optim.name`, `optim.momentum` or `optim.clip_norm` was named once the CLIP had loaded (a hub model's
    download), where the optimiser was made; `eval_zero_shot`, `tensorboard` or `plots` once work had started. Each
    is named in one line before the command loads its CLIP, but for the keys it may lack (`MAY_LACK`), which reach
    it."""
    wrong = []
    for i, key in enumerate(_leaves_of(name, variant)):
        config = _without(name, variant, key)
        outcome = command_until_the_clip(command, config, str(tmp_path / f"run{i}"), key)
        entry_default = re.fullmatch(r"(id_dataset|train_dataset|ood_datasets\.\w+)\.(?!split$|kind$)\w+", key)
        may_lack = key.startswith(MAY_LACK.get(name, ())) or entry_default
        if outcome != ("reached the CLIP" if may_lack else None):
            wrong.append(f"{key} removed: {outcome or 'named, where it may be lacked'}")
    assert not wrong, "\n".join(wrong)


# The keys each toy config's run does not read: the other optimiser's settings, the settings of the zero-shot scores
# `scores` does not name (and NegLabel's seed with one group), and (the demo's `model` "toy") the architecture of
# random weights.
UNREAD_TYPED = {
    "sot_glp": ("optim.b1", "optim.b2", "neglabel.", "csp.", "odin.", "iodin.", "model_arch."),
    "toy_clip": ("optim.momentum", "optim.nesterov", "neglabel.", "csp.", "odin.", "iodin."),
    "zeroshot": ("odin.", "iodin.", "neglabel.seed"),  # NegLabel's one group: its seed permutes none
}


@pytest.mark.parametrize("name, variant, command", TOY_CONFIGS)
def test_a_key_set_on_the_command_line_that_the_run_does_not_read_is_refused(name, variant, command):
    """Each key of the toy configs set on the command line in turn: `--config.optim.b1=0.5` with SGD,
    `--config.model_arch.vision.layers=6` with the embedded CLIP or `--config.odin.eps=0.01` where `scores` names no
    ODIN row trained or evaluated as if it had not been given, silently. Each is refused by its key where the run
    does not read it (`UNREAD_TYPED`), and no other. The commands' own use of the check is run by the next test and
    by test_sot_glp.py's subprocess test."""
    from conftest import load_config

    import jaxood.evaluate
    import jaxood.train

    unread = {"train": jaxood.train.unread_keys, "evaluate": jaxood.evaluate.unread_keys}[command](
        load_config(name, variant)
    )
    refused = []
    for key in _leaves_of(name, variant):
        try:
            settings.refuse_unread([key], unread)
        except InvalidInput as err:
            assert str(err).startswith(f"--config.{key} would be ignored: "), err
            refused.append(key)
    assert refused == [key for key in _leaves_of(name, variant) if key.startswith(UNREAD_TYPED[name])]


@pytest.mark.parametrize(
    "overrides, typed, message",
    [
        ({}, "optim.b1", "optim.b1 is adamw's, and this run's optimiser is sgd (optim.name). Leave it out, or set "
         "--config.optim.name=adamw"),
        ({"optim.name": "adamw"}, "optim.b1", None),
        ({"optim.groups": {"prompts": {"name": "adamw"}}}, "optim.b1", None),  # the group reads the base setting
        ({"optim.groups": {"prompts": {"name": "adamw", "b1": 0.5}}}, "optim.b1", "each optimiser group that reads "
         "optim.b1 sets its own (optim.groups.prompts.b1), so the base value trains none. Leave it out, or set it in "
         "those groups"),
        ({"optim.groups": {"prompts": {"lr": 0.01}}}, "optim.lr", "each optimiser group that reads optim.lr sets its "
         "own (optim.groups.prompts.lr)"),
        ({"optim.groups": {"prompts": {"lr": 0.01}}}, "optim.momentum", None),
        ({"optim.groups": {"prompts": {"name": "adamw"}}}, "optim.momentum", "optim.momentum is sgd's, and no "
         "optimiser group of this run is sgd (prompts: adamw). Leave it out, or set a group's name to sgd "
         "(optim.groups.<group>.name)"),
        ({"optim.groups": {"prompts": {"name": "adamw"}}}, "optim.name", "each optimiser group that reads optim.name "
         "sets its own (optim.groups.prompts.name)"),
        ({}, "model_arch.vision.layers", "model_arch is the architecture of a CLIP from random weights (model "
         "'scratch'), and model 'toy' brings its own. Leave it out, or set --config.model=scratch"),
        ({"model": "scratch"}, "model_arch.vision.layers", None),
        ({"shots": 0}, "shot_sampling", "shot_sampling picks the few-shot images, and shots 0 trains on every image. "
         "Leave it out, or set --config.shots above 0"),
        ({"eval_every": 0}, "eval_unit", "eval_unit is what eval_every counts, and eval_every 0 scores the ID set "
         "after training alone. Leave it out, or set --config.eval_every above 0"),
        ({}, "odin.eps", "odin holds the zero-shot ODIN row's settings, and config.scores ('mcm,gl_mcm,max_logit') "
         "names no such row. Leave it out, or add odin to --config.scores"),
        ({"scores": "mcm, odin"}, "odin.eps", None),
        ({"eval_zero_shot": False}, "gl_mcm", "gl_mcm is a setting of the zero-shot rows, and eval_zero_shot False "
         "drops them. Leave it out, or set --config.eval_zero_shot=true"),
        ({"eval_zero_shot": False}, "mcm_template", "mcm_template is a setting of the zero-shot rows"),
        ({"eval_zero_shot": False}, "scores", "scores is a setting of the zero-shot rows"),
        ({"eval_zero_shot": False}, "cache_dir", None),  # where features are kept changes no figure
        ({"scores": "neglabel"}, "neglabel.seed", "neglabel.seed permutes the negative labels into groups, and "
         "neglabel.n_groups 1 keeps them in one, so every seed scores alike. Leave it out, or set "
         "--config.neglabel.n_groups above 1"),
        ({"scores": "neglabel", "neglabel.n_groups": 2}, "neglabel.seed", None),
        ({"scores": "csp", "csp.n_groups": 1}, "csp.seed", None),  # CSP's seed draws its candidates too
    ],
)  # fmt: skip
def test_whether_a_key_is_read_follows_the_settings_that_read_it(
    overrides, typed, message, command_until_the_clip, tmp_path
):
    """A key set on the command line is refused where the other settings leave it unread (the demo's: SGD, the
    embedded CLIP, 16 shots, ID accuracy every 20 steps, the zero-shot MCM, GL-MCM and MaxLogit rows), and taken
    where they read it: `b1` where an optimiser group is AdamW without a `b1` of its own. A base optimiser setting
    that every group reading it overrides (`optim.lr` with `optim.groups.prompts.lr`, SOT-GLP's one group) trained
    nothing, silently: refused, as is SGD's momentum where every group is AdamW (`optim.groups.prompts.name`)."""
    from conftest import load_config

    import jaxood.train

    config = load_config("sot_glp", "demo", **overrides)
    if message is None:
        assert command_until_the_clip("train", config, str(tmp_path / "w"), typed, typed=[typed]) == "reached the CLIP"
        return
    with pytest.raises(InvalidInput) as refused:  # command_until_the_clip stops the command at its CLIP
        jaxood.train.train(config, str(tmp_path / "w"), typed=[typed])
    assert str(refused.value).startswith(f"--config.{typed} would be ignored: {message}")
    assert not (tmp_path / "w").exists()
