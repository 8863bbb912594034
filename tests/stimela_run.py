"""Run ``stimela run`` (2.1.4, from ``.oracle-venv``) on a test recipe and report which steps ran.

The test recipes' cabs append their step name to ``ran.txt`` in the working directory (see
``tests/data/cli/selection.yml``); a loop iteration's name ends in ``-<value>``.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from needs import missing

ROOT = Path(__file__).resolve().parents[1]
STIMELA = Path(os.environ.get("ORACLE_VENV", ROOT / ".oracle-venv")) / "bin" / "stimela"
SELECTION_RECIPE = ROOT / "tests" / "data" / "cli" / "selection.yml"


def need_stimela() -> Path:
    """The oracle's ``stimela``; a skip without it (a failure under CI)."""
    if not STIMELA.exists():
        missing(f"no Stimela 2.1.4 oracle at {STIMELA} (make oracle)")
    return STIMELA


def ran_names(workdir: Path) -> list:
    """Names the steps wrote to ``ran.txt``, in order (empty when nothing ran)."""
    path = Path(workdir) / "ran.txt"
    return path.read_text().split() if path.exists() else []


def ran_paths(workdir: Path) -> set:
    """``ran_names`` as step paths: ``sub.x`` → ``("sub", "x")``, ``loop.p-1`` → ``("loop", "p")``."""
    return {tuple(name.rsplit("-", 1)[0].split(".")) for name in ran_names(workdir)}


def stimela_run(workdir: Path, *args: str, recipe: Path = SELECTION_RECIPE, timeout: int = 120):
    """``stimela run -N RECIPE ARGS`` in ``workdir``; returns the completed process."""
    Path(workdir).mkdir(parents=True, exist_ok=True)
    return subprocess.run([str(need_stimela()), "--boring", "run", "-N", str(recipe), *args], cwd=workdir,
                          capture_output=True, text=True, timeout=timeout, check=False)
