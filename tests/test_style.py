"""House style (style.md): `ruff` lint and format are clean with the settings in pyproject.toml, and every text file
jaxood opens names its encoding (ruff's PLW1514, a preview rule, checked alone so that preview mode does not change
the stable rules'): UTF-8, where the locale's would otherwise be taken."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize(
    "args",
    [["check", "."], ["format", "--check", "."], ["check", "--preview", "--select", "PLW1514", "."]],
    ids=["lint", "format", "encoding"],
)
def test_ruff_is_clean(args):
    out = subprocess.run([sys.executable, "-m", "ruff", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, (
        f"`ruff {' '.join(args)}` (fix with `ruff check --fix .` / `ruff format .`):\n" + out.stdout + out.stderr
    )
