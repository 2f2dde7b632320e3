"""House style (style.md): `ruff` lint and format are clean with the settings in pyproject.toml."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("args", [["check", "."], ["format", "--check", "."]], ids=["lint", "format"])
def test_ruff_is_clean(args):
    out = subprocess.run([sys.executable, "-m", "ruff", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, (
        f"`ruff {' '.join(args)}` (fix with `ruff check --fix .` / `ruff format .`):\n" + out.stdout + out.stderr
    )
