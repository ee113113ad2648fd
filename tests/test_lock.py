"""The repository's environment is the lock: uv.lock matches pyproject.toml, .venv holds exactly the locked set,
and the uv that the Makefile bootstraps is the one the lock pins."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
UV = Path(sys.executable).parent / "uv"


def _locked_versions() -> dict[str, list[str]]:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    versions: dict[str, list[str]] = {}
    for package in lock["package"]:
        versions.setdefault(package["name"], []).append(package.get("version", ""))
    return versions


def test_makefile_bootstraps_the_uv_the_lock_pins():
    makefile_uv = re.search(r"^UV_VERSION := (\S+)$", (ROOT / "Makefile").read_text(), re.M).group(1)
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert f"uv=={makefile_uv}" in pyproject["project"]["optional-dependencies"]["dev"]
    assert _locked_versions()["uv"] == [makefile_uv]


def test_the_lock_covers_torch_and_every_extra():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    locked = _locked_versions()
    requirements = list(pyproject["project"]["dependencies"])
    for extra in pyproject["project"]["optional-dependencies"].values():
        requirements += extra
    names = {re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower() for requirement in requirements}
    assert "torch" in names
    assert not names - set(locked), f"not in uv.lock: {sorted(names - set(locked))}"


@pytest.mark.skipif(not UV.exists(), reason="uv is not in this environment (make install puts it in .venv)")
@pytest.mark.skipif(os.environ.get("MRL_FLOORS") == "1", reason="make test-floors runs on the lowest versions")
def test_venv_is_exactly_the_lock():
    """`uv sync --locked` would change nothing: the lock is current with pyproject.toml and .venv has every
    locked package at its locked version and nothing else (a hand-installed package fails this)."""
    venv = Path(sys.prefix)
    env = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(venv), "UV_PYTHON_DOWNLOADS": "never"}
    result = subprocess.run(
        [str(UV), "sync", "--locked", "--all-extras", "--dry-run", "--offline"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "Would make no changes" in result.stderr + result.stdout, result.stderr


def test_lower_bounds_are_the_tested_versions():
    """Each dependency's floor in pyproject.toml is the (lowest) version uv.lock installs, the one the tests ran
    on: lowering a floor means running the tests on that version first."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    requirements = list(pyproject["project"]["dependencies"])
    for extra in pyproject["project"]["optional-dependencies"].values():
        requirements += extra
    locked = _locked_versions()
    untested = {}
    for requirement in requirements:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)(?:\[[a-z0-9_,-]+\])?(?:>=|==)([^,; ]+)", requirement)
        assert match, f"{requirement}: every dependency needs a tested lower bound (>=) or a pin (==)"
        name, floor = match.group(1).lower(), match.group(2)
        lowest = min(locked[name], key=Version)
        if floor != lowest:
            untested[name] = (floor, lowest)
    assert not untested, f"floors that are not the locked (tested) versions: {untested}"
