"""The names ``mrl`` exports: each resolves to the object of its home module, the version is the installed
distribution's (pyproject.toml holds it, nowhere else), and ``import mrl`` imports none of them."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from importlib import import_module
from pathlib import Path

import pytest

import mrl

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", sorted(mrl._EXPORTS))
def test_every_export_is_its_home_modules_object(name):
    home = import_module(mrl._EXPORTS[name])
    assert getattr(mrl, name) is getattr(home, name)
    assert name in dir(mrl) and name in mrl.__all__


def test_version_is_the_one_in_pyproject():
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert mrl.__version__ == declared
    assert '__version__ = "' not in (ROOT / "src" / "mrl" / "__init__.py").read_text()


def test_unknown_names_and_the_removed_alias_fail():
    for name in ("MatryoshkaModule", "no_such_name"):
        with pytest.raises(AttributeError, match=rf"module 'mrl' has no attribute '{name}'"):
            getattr(mrl, name)


def test_import_mrl_stays_light():
    code = "import sys, mrl; print(sorted(m for m in sys.modules if m.startswith(('mrl.', 'torch'))))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_the_cli_docstring_names_every_console_script():
    import mrl.cli

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert len(scripts) >= 10
    missing = [name for name in scripts if f"``{name}``" not in mrl.cli.__doc__]
    assert not missing, f"mrl/cli/__init__.py does not name {missing}"
