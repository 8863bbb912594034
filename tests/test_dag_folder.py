"""Which recipes of a DAG folder become DAGs, and what the folder reports (docs/dag-factory.md).

- include fragments (top-level ``steps:`` patches for ``_include_post``, recipe-keyed step patches,
  ``assign``/``assign_based_on`` blocks, ``lib`` only) make no DAG and no import error, as
  ``stepcab validate`` calls them fine;
- a recipe a file merely includes is not a DAG of the including file (no duplicates);
- import-error headlines say what happened to the file's DAGs;
- warnings are in the DAG's docs and one log line per compiled file, never repeated by warm parses.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from airflow_provider_stepcab.dag_factory import RecipeImportError, build_dags

pytestmark = pytest.mark.airflow
CORPUS = Path(os.environ.get("STEPCAB_CORPUS", Path(__file__).resolve().parents[2] / "shared" / "corpus"))
OMS = CORPUS / "omstimelation-cc021"
CABS = "cabs:\n  say:\n    command: echo\n    inputs:\n      text: {dtype: str, policies: {positional: true}}\n"


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """A cache directory per test (cold first parse) and no entries in memory from other tests."""
    from airflow_provider_stepcab.dag_factory import spec

    monkeypatch.setenv("STEPCAB_CACHE_DIR", str(tmp_path / "cache"))
    spec.clear_memory()
    yield
    spec.clear_memory()


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


def validate(*paths) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "airflow_provider_stepcab", "validate", *map(str, paths)],
                          capture_output=True, text=True, timeout=120, check=False)


def test_include_fragments_make_no_dag_and_no_error(tmp_path):
    folder = tmp_path / "dags"
    folder.mkdir()
    write(folder, "main.yml", "_include: [cabs.yml, assigns.yml]\nmain:\n  inputs: {obs: {dtype: str, default: a}}\n"
          "  steps:\n    s1: {cab: say, params: {text: hello}}\n    s2: {cab: say}\n"
          "  _include_post: step-patch.yml\n_include_post: recipe-patch.yml\n")
    write(folder, "cabs.yml", CABS + "lib:\n  misc: {note: shared}\n")
    write(folder, "step-patch.yml", "steps:\n  s2:\n    params: {text: patched}\n")
    write(folder, "recipe-patch.yml", "main:\n  steps:\n    s1:\n      info: patched too\n")
    write(folder, "assigns.yml", "main:\n  assign: {x: 1}\n  assign_based_on:\n    obs:\n      a: {y: 2}\n")
    dags = build_dags(folders=[str(folder)], on_error="raise")  # raises on any broken file
    assert list(dags) == ["main"]
    out = validate(folder)
    assert out.returncode == 0 and out.stdout == "", out.stdout + out.stderr
    assert "5 file(s), 1 recipe(s): 0 error(s), 0 warning(s)" in out.stderr


def test_included_recipes_are_the_dags_of_their_own_file_only(tmp_path):
    write(tmp_path, "lib.yml", CABS + "helper:\n  steps:\n    s: {cab: say, params: {text: from-lib}}\n")
    write(tmp_path, "pipe.yml", "_include: lib.yml\npipe:\n  steps:\n    a: {cab: say, params: {text: x}}\n"
          "    b: {recipe: helper}\n")
    # a file that includes a recipe and changes it owns the changed recipe
    write(tmp_path, "tuned.yml", "_include: lib.yml\nhelper:\n  steps:\n    s:\n      params: {text: tuned}\n")
    dags = build_dags(folders=[str(tmp_path)], on_error="raise")
    assert set(dags) == {"lib__helper", "pipe", "tuned__helper"}
    assert {t.task_id for t in dags["pipe"].tasks} == {"a", "b.s"}


def test_the_omstimelation_folder(tmp_path, caplog):
    """A real pipeline: one recipe file, an include fragment (ddf-mosaic-lib.yaml: opts and lib
    steps), cab libraries and parameter schema files. One DAG, no import error, its warnings in the
    DAG's docs and in one log line at the cold parse; the warm parse logs nothing."""
    if not OMS.is_dir():
        pytest.fail(f"corpus missing: {OMS}")
    folder = tmp_path / "oms"
    shutil.copytree(OMS, folder)
    # the pipeline loads without warnings now (cult-cargo's dynamic schemas are applied): give it one
    with open(folder / "ddf-mosaic.yaml", "a") as fh:
        fh.write("\nopts:\n  backend:\n    singularity:\n      auto_update: true\n")
    with caplog.at_level(logging.DEBUG, logger="airflow_provider_stepcab"):
        dags = build_dags(folders=[str(folder)], on_error="raise")
    assert list(dags) == ["ddf-mosaic__mosaic"]
    cold = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(cold) == 1, [r.getMessage() for r in cold]
    assert cold[0].getMessage().startswith(f"stepcab: {folder / 'ddf-mosaic.yaml'}: ")
    assert "warning(s), listed in the docs of its DAG(s)" in cold[0].getMessage()
    fragments = [r.getMessage() for r in caplog.records if "no recipe of its own" in r.getMessage()]
    assert any("ddf-mosaic-lib.yaml" in m for m in fragments) and all(r.levelno == logging.DEBUG
                                                                       for r in caplog.records
                                                                       if "no recipe of its own" in r.getMessage())
    doc = dags["ddf-mosaic__mosaic"].doc_md
    assert "## Warnings" in doc and "auto_build" in doc
    from airflow_provider_stepcab.dag_factory import spec

    spec.clear_memory()  # as a fresh dag-processor child: the disk cache only
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="airflow_provider_stepcab"):
        warm = build_dags(folders=[str(folder)], on_error="raise")
    assert list(warm) == ["ddf-mosaic__mosaic"] and warm["ddf-mosaic__mosaic"].doc_md == doc
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO] == []


def test_headline_of_a_file_with_some_dags_created(tmp_path, caplog):
    path = write(tmp_path, "mixed.yml", CABS + "good:\n  steps:\n    s: {cab: say}\n"
                 "bad:\n  steps:\n    s: {cab: nope}\n")
    with caplog.at_level(logging.ERROR, logger="airflow_provider_stepcab"):
        dags = build_dags(files=[str(path)])
    assert list(dags) == ["mixed__good"]
    [record] = [r.getMessage() for r in caplog.records]
    assert record.splitlines()[0] == (f"stepcab: recipe file {path}: the DAG(s) of recipe(s) bad were not created "
                                      "(created: mixed__good):")
    assert f"{path}:11: bad.steps.s.cab: unknown cab 'nope'" in record


def test_headline_of_a_broken_file(tmp_path):
    path = write(tmp_path, "broken.yml", CABS + "one:\n  steps:\n    s: {cab: nope}\n")
    with pytest.raises(RecipeImportError) as info:
        build_dags(files=[str(path)], on_error="raise")
    assert str(info.value).splitlines()[0] == (f"stepcab: recipe file {path} is broken; the DAG of recipe one "
                                               "was not created:")
    path = write(tmp_path, "unreadable.yml", "a: [\n")
    with pytest.raises(RecipeImportError) as info:
        build_dags(files=[str(path)], on_error="raise")
    assert str(info.value).splitlines()[0] == f"stepcab: recipe file {path} is broken; no DAG was created from it:"


def test_default_dag_broken_only_by_the_recipes_it_uses(tmp_path):
    unused = CABS + "spare:\n  steps:\n    s: {cab: nope}\nmain:\n  steps:\n    a: {cab: say}\nDEFAULT: main\n"
    assert list(build_dags(files=[str(write(tmp_path, "a.yml", unused))], on_error="raise")) == ["a"]
    used = CABS + "sub:\n  steps:\n    s: {cab: nope}\nmain:\n  steps:\n    b: {recipe: sub}\nDEFAULT: main\n"
    with pytest.raises(RecipeImportError, match=r"b\.yml:8: sub\.steps\.s\.cab: unknown cab 'nope'"):
        build_dags(files=[str(write(tmp_path, "b.yml", used))], on_error="raise")
    # validate still checks every recipe of the file
    out = validate(tmp_path / "a.yml")
    assert out.returncode == 1 and "spare.steps.s.cab: unknown cab 'nope'" in out.stdout
