"""setup.cfg's version floors are the versions of .ci/oldest.txt, the oldest set the suite is run with."""

import configparser
import os
import re

from conftest import ROOT
from packaging.version import Version


def _name(package: str) -> str:
    return re.sub(r"[-_.]+", "-", package).lower()


def setup_floors() -> dict[str, Version]:
    """`>=` floors of setup.cfg's install_requires and test extra, by package (exact `==` pins are the same in any
    set, so not floors)."""
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(ROOT, "setup.cfg"))
    lines = cfg["options"]["install_requires"].splitlines() + cfg["options.extras_require"]["test"].splitlines()
    floors = {}
    for line in (line.strip() for line in lines):
        if line and not line.startswith("#"):
            package, spec = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*(.*)", line).groups()
            for part in spec.split(","):
                if part.strip().startswith(">="):
                    floors[_name(package)] = Version(part.strip()[2:])
    return floors


def oldest_pins() -> dict[str, Version]:
    with open(os.path.join(ROOT, ".ci", "oldest.txt")) as f:
        lines = [line.strip() for line in f if line.strip() and not line.startswith("#")]
    return {_name(package): Version(version) for package, version in (line.split("==") for line in lines)}


def test_every_floor_is_what_the_oldest_set_pins():
    """A floor raised without the oldest set (or the other way round) would claim versions no run has tried."""
    floors, pins = setup_floors(), oldest_pins()
    assert {"jax", "pillow", "ml-collections", "scikit-learn"} <= floors.keys()  # both sections were read
    assert pins.pop("jaxlib") == floors["jax"]  # jax needs its own jaxlib; setup.cfg names jax alone
    differ = {p: (floors.get(p), pins.get(p)) for p in floors.keys() | pins.keys() if floors.get(p) != pins.get(p)}
    assert not differ, f"setup.cfg floor vs .ci/oldest.txt pin: {differ}"
