"""The import rules of DEVELOPERS.md hold, and the contract list covers every Qt-free module."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10, which pyproject allows
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_viewer_model_module_is_in_the_qt_free_contract():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contracts = config["tool"]["importlinter"]["contracts"]
    qt_free = next(c for c in contracts if "no Qt" in c["name"] and c["source_modules"][0].startswith("viewer"))
    listed = set(qt_free["source_modules"])
    modules = {f"viewer.{p.stem}" for p in (ROOT / "viewer").glob("*.py") if p.stem != "__init__"}
    assert modules - listed == set(), "add new Qt-free viewer modules to the contract (GUI code lives in viewer.gui)"
