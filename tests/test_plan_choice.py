"""Which recipe ``stepcab plan`` plans (Stimela's rule, ``-l``/``--last-recipe``) and its errors.

The rule is checked against Stimela 2.1.4 itself (``.oracle-venv``): ``stimela run --native`` logs
the recipe it picked. Errors must be one ``file: key: message`` line each, never a traceback.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from needs import missing
from recipe_helpers import write

ROOT = Path(__file__).resolve().parent.parent
ORACLE = Path(os.environ.get("ORACLE_VENV", ROOT / ".oracle-venv")) / "bin" / "stimela"
LIB = """\
cabs:
  say:
    command: echo
    inputs:
      x: {dtype: str, policies: {positional: true}}
first:
  steps:
    s: {cab: say, params: {x: first}}
"""
MAIN = """\
_include: lib.yml
DEFAULT: middle
middle:
  steps:
    s: {cab: say, params: {x: middle}}
last:
  steps:
    s: {cab: say, params: {x: last}}
"""
TWO = "cabs:\n  say: {command: echo}\nalpha:\n  steps: {s: {cab: say}}\nbeta:\n  steps: {s: {cab: say}}\n"


def stepcab(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "airflow_provider_stepcab", *map(str, args)],
                          capture_output=True, text=True, timeout=120, check=False, cwd=cwd)


def planned(*args) -> str:
    out = stepcab("plan", "--json", *args)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)["recipe"]


@pytest.fixture
def files(tmp_path: Path) -> Path:
    write(tmp_path, "lib.yml", LIB)
    write(tmp_path, "main.yml", MAIN)
    write(tmp_path, "two.yml", TWO)
    return tmp_path


# (arguments, recipe Stimela 2.1.4 runs): DEFAULT, -l beating DEFAULT (the last top-level key, an
# included recipe counting as one), the only recipe, an explicit name
CASES = [(["main.yml"], "middle"), (["-l", "main.yml"], "last"), (["lib.yml"], "first"),
         (["-l", "two.yml"], "beta"), (["main.yml", "first"], "first")]


def _ours(files: Path, args: list) -> str:
    flags = [a for a in args if a.startswith("-")]
    paths = [str(files / a) for a in args if a.endswith(".yml")]
    names = [a for a in args if not a.startswith("-") and not a.endswith(".yml")]
    return planned(*paths, *flags, *(["-r", names[0]] if names else []))


@pytest.mark.parametrize("args,expected", CASES)
def test_recipe_choice(files, args, expected):
    assert _ours(files, args) == expected


def test_recipe_choice_is_stimelas(files):
    if not ORACLE.exists():
        missing(f"{ORACLE} missing (make oracle)")
    picked = re.compile(r"selecting '([^']+)'|selected recipe is '([^']+)'|found single recipe '([^']+)'")
    for args, _ in CASES:
        out = subprocess.run([str(ORACLE), "run", "--native", *args], capture_output=True, text=True,
                             timeout=300, cwd=files, check=False)
        text = " ".join((out.stdout + out.stderr).split())  # Stimela wraps its log lines
        found = [next(g for g in m.groups() if g) for m in picked.finditer(text)]
        assert found, text[-2000:]
        assert _ours(files, args) == found[-1], (args, text[-2000:])


def test_last_recipe_long_option_and_conflict_with_recipe(files):
    assert planned(files / "two.yml", "--last-recipe") == "beta"
    out = stepcab("plan", files / "two.yml", "-l", "-r", "alpha")
    assert out.returncode == 2 and "not allowed with argument" in out.stderr


def no_traceback(out) -> None:
    assert "Traceback" not in out.stderr + out.stdout, out.stderr


def test_several_recipes_one_line_listing_them(files):
    out = stepcab("plan", files / "two.yml")
    no_traceback(out)
    assert out.returncode == 1
    assert out.stderr.splitlines() == [(f"{files / 'two.yml'}: several recipes and no DEFAULT: name one (or use "
                                        "--last-recipe for the last); recipes are: alpha, beta")]


def test_unknown_recipe_names_the_given_file_and_the_recipes(files):
    out = stepcab("plan", files / "main.yml", "-r", "nope")
    no_traceback(out)
    assert out.returncode == 1
    assert out.stderr.splitlines() == [(f"{files / 'main.yml'}: nope: recipe 'nope' not found; recipes are: "
                                        "first, middle, last")]


@pytest.mark.parametrize("text,fragment", [(None, "cannot read file"), ("a: [\n", "invalid YAML")])
def test_bad_file_one_line(tmp_path, text, fragment):
    path = tmp_path / "x.yml"
    if text is not None:
        path.write_text(text)
    out = stepcab("plan", path)
    no_traceback(out)
    assert out.returncode == 1
    [line] = out.stderr.splitlines()
    assert line.startswith(str(path)) and fragment in line, out.stderr


def test_bad_params_exit_1_without_traceback(files):
    out = stepcab("plan", files / "two.yml", "-r", "alpha", "-p", "nope=1")
    no_traceback(out)
    assert out.returncode == 1 and "'nope' is not a known parameter or step of recipe 'alpha'" in out.stderr
    out = stepcab("plan", files / "two.yml", "-r", "alpha", "-p", "nope")
    no_traceback(out)
    assert out.returncode == 2 and "expected NAME=VALUE, got 'nope'" in out.stderr
