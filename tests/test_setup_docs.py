"""The README's set-up commands and what CI runs agree with tox.ini and .ci/run."""

from __future__ import annotations

import configparser
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_tox_skips_missing_interpreters_but_ci_does_not():
    tox = configparser.ConfigParser()
    tox.read(ROOT / "tox.ini")
    assert tox.getboolean("tox", "skip_missing_interpreters") is True
    ci = (ROOT / ".ci" / "run").read_text()
    [tox_call] = [line for line in ci.splitlines() if re.search(r'"\$VENV_BIN/tox"', line)]
    assert "--skip-missing-interpreters=false" in tox_call


def test_readme_describes_what_ci_expects_of_the_demo():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert 'echo "demo exited with 1 as expected' in ci
    assert "expecting the example's failing tests: exit code 1" in readme
    assert "exactly one failing example" not in readme
    assert "tox --skip-missing-interpreters=false" in readme
