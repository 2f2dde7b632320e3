"""setup.cfg's version floors are the versions of .ci/oldest.txt, the oldest set the suite is run with."""

import configparser
import os

from conftest import ROOT
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version


def setup_floors() -> dict[str, Version]:
    """`>=` floors of setup.cfg's install_requires and test extra, by package (exact `==` pins are the same in any
    set, so not floors)."""
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(ROOT, "setup.cfg"))
    lines = cfg["options"]["install_requires"].splitlines() + cfg["options.extras_require"]["test"].splitlines()
    requirements = [Requirement(line) for line in map(str.strip, lines) if line and not line.startswith("#")]
    return {
        canonicalize_name(r.name): Version(s.version) for r in requirements for s in r.specifier if s.operator == ">="
    }


def oldest_pins() -> dict[str, Version]:
    with open(os.path.join(ROOT, ".ci", "oldest.txt"), encoding="utf-8") as f:
        lines = [line.strip() for line in f if line.strip() and not line.startswith("#")]
    return {canonicalize_name(r.name): Version(s.version) for r in map(Requirement, lines) for s in r.specifier}


def test_every_floor_is_what_the_oldest_set_pins():
    """A floor raised without the oldest set (or the other way round) would claim versions no run has tried."""
    floors, pins = setup_floors(), oldest_pins()
    assert {"jax", "pillow", "ml-collections", "scikit-learn"} <= floors.keys()  # both sections were read
    assert pins.pop("jaxlib") == floors["jax"]  # jax needs its own jaxlib; setup.cfg names jax alone
    differ = {p: (floors.get(p), pins.get(p)) for p in floors.keys() | pins.keys() if floors.get(p) != pins.get(p)}
    assert not differ, f"setup.cfg floor vs .ci/oldest.txt pin: {differ}"
