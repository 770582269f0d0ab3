"""A scratch copy of the project for tests that run ``kedro run`` or ``tirl`` in a subprocess."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ("01_raw", "03_primary", "06_models", "07_model_output", "08_reporting")


def scratch_project(root: Path, *, git: bool = False) -> Path:
    """``conf`` (without ``conf/local``, recreated empty), ``pyproject.toml`` and the data
    layers under ``root``; with ``git``, committed to a fresh repository (for the lineage
    tags). tirl is installed (editable): the copy needs only the layout Kedro checks for."""
    shutil.copytree(ROOT / "conf", root / "conf", ignore=shutil.ignore_patterns("local"))
    (root / "conf" / "local").mkdir()
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    (root / "src").mkdir()
    for layer in LAYERS:
        (root / "data" / layer).mkdir(parents=True)
    if git:
        cmd = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
        subprocess.run([*cmd, "init", "-q"], cwd=root, check=True)
        subprocess.run([*cmd, "add", "conf", "pyproject.toml"], cwd=root, check=True)
        subprocess.run([*cmd, "commit", "-qm", "scratch"], cwd=root, check=True)
    return root
