"""Benchmarks: `python -m jaxood.bench.<name>`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import NoReturn

from jaxood import settings
from jaxood.errors import exit_with, report_user_errors

# What a Ctrl-C kept of a benchmark (`report_user_errors`): nothing, as it writes no file outside its temporary ones
# (a CLIP it downloads is in Hugging Face's cache, which keeps it).
KEPT = "A benchmark writes no file of its own (its temporary ones are removed): the same command times it again."


def run(main: Callable[[list[str]], dict]) -> NoReturn:
    """A benchmark's `main` (which returns its figures) as a command: exit status 0 once its figures are printed; a
    Ctrl-C, where it ended on the traceback of whatever JAX was compiling or running, is one line (`KEPT`) and the
    status of a command stopped by SIGINT, as jaxood's other commands end (`report_user_errors`)."""

    def command(argv: list[str]) -> int:
        main(argv)
        return 0

    exit_with(report_user_errors(command, KEPT)(sys.argv[1:]))


# ViT-B/16 as in openai/clip-vit-base-patch16's config.json: Hugging Face `CLIPConfig` arguments for the benchmarks
# and tests that build one with random weights.
VIT_B16 = dict(
    text_config=dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8),
    vision_config=dict(
        hidden_size=768,
        intermediate_size=3072,
        num_hidden_layers=12,
        num_attention_heads=12,
        image_size=224,
        patch_size=16,
    ),
    projection_dim=512,
)


def count(low: int = 1, high: int | None = None) -> Callable[[str], int]:
    """An argparse `type`: a whole number from `low` to `high` (`jaxood.settings`' check and message), refused by
    argparse otherwise. A benchmark given zero images or more classes than it has names failed inside JAX, or timed
    another problem than the one it printed."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if problem := settings.whole_problem(value, low, high):
            raise argparse.ArgumentTypeError(problem)
        return value

    return parse


def positive(text: str) -> float:
    """An argparse `type`: a number above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if problem := settings.number_problem(value, above=0):
        raise argparse.ArgumentTypeError(problem)
    return value
