"""`jaxood.settings`: the range checks every config value goes through, and the messages they give."""

import argparse

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


@pytest.mark.parametrize(
    "check, message",
    [
        (lambda c: settings.whole(c, "a.n", 4), "a.n must be a whole number of at least 4, got 3"),
        (lambda c: settings.whole(c, "a.n", 0, 2), "a.n must be a whole number from 0 to 2, got 3"),
        (lambda c: settings.whole(c, "a.flag", 0), "a.flag must be a whole number of at least 0, got True"),
        (lambda c: settings.number(c, "a.x", least=0, below=0.5), "a.x must be a number >= 0 and < 0.5, got 0.5"),
        (lambda c: settings.number(c, "a.name"), "a.name must be a number, got 'big'"),  # no bound: no stray space
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
