"""`jaxood.settings`: the range checks every config value goes through, and the messages they give."""

import ml_collections
import pytest

from jaxood import settings
from jaxood.errors import InvalidInput


def _config():
    return ml_collections.ConfigDict({"a": {"n": 3, "x": 0.5, "flag": True, "name": "big"}})


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
    ],
)
def test_out_of_range_names_key_range_and_value(check, message):
    with pytest.raises(InvalidInput) as err:
        check(_config())
    assert str(err.value) == message
