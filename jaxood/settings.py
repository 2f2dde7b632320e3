"""Config values checked before the work that reads them: a bad one names its key, what it must be, and its value.

Without these, a value out of range failed late with an error that named
neither (a ZeroDivisionError after the step compiled, NumPy's "high - low < 0"
from the crop sampler, JAX's top_k inside the traced step), or ran silently
with a meaning nobody meant (0 training steps evaluated the untrained prompts;
-1 shots took all but one image per class).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping

import ml_collections

from jaxood.errors import InvalidInput, not_one_of


def whole(config: ml_collections.ConfigDict, key: str, least: int, most: int | None = None) -> int:
    """`config[key]` (dotted) is a whole number in `[least, most]`; returned."""
    value = at(config, key)
    if problem := whole_problem(value, least, most):
        raise InvalidInput(f"{key} {problem}")
    return value


def whole_problem(value, least: int, most: int | None = None) -> str:
    """What is wrong with `value` as a whole number in `[least, most]` ("must be ..., got ..."); "" when nothing."""
    if isinstance(value, bool) or not isinstance(value, int) or value < least or (most is not None and value > most):
        span = f"from {least} to {most}" if most is not None else f"of at least {least}"
        return f"must be a whole number {span}, got {value!r}"
    return ""


def number(
    config: ml_collections.ConfigDict,
    key: str,
    least: float | None = None,
    above: float | None = None,
    most: float | None = None,
    below: float | None = None,
    why: str = "",
) -> float:
    """`config[key]` (dotted) is a real number `>= least`, `> above`, `<= most` and `< below` (each where given);
    returned. `why` (a bound's reason) follows the error's message."""
    value = at(config, key)
    if problem := number_problem(value, least, above, most, below):
        raise InvalidInput(f"{key} {problem}" + (f": {why}" if why else ""))
    return value


def number_problem(
    value, least: float | None = None, above: float | None = None, most: float | None = None, below: float | None = None
) -> str:
    """What is wrong with `value` as a real number within the bounds given (as `number`'s); "" when nothing."""
    bounds = [
        (least, ">=", lambda v, b: v >= b),
        (above, ">", lambda v, b: v > b),
        (most, "<=", lambda v, b: v <= b),
        (below, "<", lambda v, b: v < b),
    ]
    is_number = isinstance(value, int | float) and not isinstance(value, bool) and value == value  # not NaN
    infinite = isinstance(value, float) and math.isinf(value)
    if not is_number or infinite or not all(ok(value, b) for b, _, ok in bounds if b is not None):
        span = "".join(f" and {op} {b}" for b, op, _ in bounds if b is not None).removeprefix(" and")
        return f"must be a {'finite ' if infinite else ''}number{span}, got {value!r}"
    return ""


def text(config: ml_collections.ConfigDict, key: str, what: str, path: bool = False) -> str | os.PathLike:
    """`config[key]` (dotted) is a string (`what` says what it holds), or a path object where it is a `path`;
    returned. A number or None failed where it was read, with a TypeError's traceback from os or str.format."""
    value = at(config, key)
    if problem := text_problem(os.fspath(value) if path and isinstance(value, os.PathLike) else value, what):
        raise InvalidInput(f"{key} {problem}")
    return value


def text_problem(value, what: str) -> str:
    """What is wrong with `value` as a string holding `what` ("must be a string (...), got ..."); "" when nothing."""
    return "" if isinstance(value, str) else f"must be a string ({what}), got {value!r}"


TRUE_OR_FALSE = (True, False)  # a switch's choices: a string ("no") was taken as True where a config file gave one


def choice(config: ml_collections.ConfigDict, key: str, allowed: tuple) -> object:
    """`config[key]` (dotted) is one of `allowed`; returned."""
    value = at(config, key)
    if value not in allowed:
        raise InvalidInput(not_one_of(key, value, allowed))
    return value


def refuse_unread(typed: Iterable[str], unread: Mapping[str, str]) -> None:
    """Refuse a key set on the command line or in a --flagfile (`typed`, dotted: `cli.typed_keys`) that this run does
    not read, which was ignored, silently (`--config.optim.b1=0.5` with SGD). `unread`: a key, or a group of keys,
    that the run does not read -> why, and the setting that would read it. A config file's value of such a key is
    taken: the shipped files hold every key, so one given there cannot be told from a default."""
    for key in typed:
        if name := next((name for name in unread if key == name or key.startswith(f"{name}.")), None):
            raise InvalidInput(f"--config.{key} would be ignored: {unread[name]}")


def at(config: ml_collections.ConfigDict, key: str):
    """The value of the config's `key`, dotted (`optim.lr`)."""
    for part in key.split("."):
        config = config[part]
    return config
