"""Which files of a DAGs folder are recipe files (dag_factory/discovery.py): the fast folder walk
every parse uses must find exactly what Airflow's own walker finds, and ``.airflowignore`` files
must be honoured like Airflow does."""

from __future__ import annotations

import os
import re

import pytest

from airflow_provider_stepcab.dag_factory import discovery

RECIPE = "r:\n  steps:\n    s: {cab: {command: echo}}\n"


def tree(root, files: dict) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def through_airflow(monkeypatch, folders) -> list[str]:
    """The same search with the fast walk disabled (Airflow's walker for every folder)."""
    def refuse(folder):
        raise discovery._NeedsAirflowWalk(folder)

    with monkeypatch.context() as m:
        m.setattr(discovery, "_fast_walk", refuse)
        return discovery.find_recipe_files(folders)


def test_fast_walk_finds_what_airflow_finds(tmp_path, monkeypatch):
    tree(tmp_path / "dags", {
        "a.yml": RECIPE,
        "b.yaml": "DEFAULT: x\nx:\n  steps: {}\n",
        "sub/deeper/c.yml": "_include: lib.yml\n",
        "sub/notes.yml": "just: data\n",         # YAML but not a recipe
        "compose.yml": "services: {}\n",
        ".hidden/h.yml": RECIPE,                  # hidden folder
        "sub/.h.yml": RECIPE,                     # hidden file
        "stepcab_dags.py": "",
        "README.md": "steps:\n",
    })
    outside = tmp_path / "elsewhere"
    tree(outside, {"linked.yml": RECIPE})
    os.symlink(outside, tmp_path / "dags" / "link")
    os.symlink(tmp_path / "dags" / "a.yml", tmp_path / "dags" / "sub" / "a-again.yml")
    folder = str(tmp_path / "dags")
    fast = discovery.find_recipe_files([folder])
    assert [os.path.relpath(p, folder) for p in fast] == ["a.yml", "b.yaml", "link/linked.yml", "sub/deeper/c.yml"]
    assert fast == through_airflow(monkeypatch, [folder])


def test_plain_folder_needs_no_realpath_per_file_and_finds_the_same(tmp_path, monkeypatch):
    # the usual DAGs folder: no symlinks, one folder -> paths are already unique and real
    tree(tmp_path / "dags", {"a.yml": RECIPE, "sub/b.yml": RECIPE, ".hidden/h.yml": RECIPE,
                             "sub/.h.yml": RECIPE, "lib/cabs.yml": "cabs: {}\n"})
    folder = str(tmp_path / "dags")
    expected = through_airflow(monkeypatch, [folder])
    assert [os.path.relpath(p, folder) for p in expected] == ["a.yml", "sub/b.yml"]
    with monkeypatch.context() as m:
        def no_realpath(path):
            raise AssertionError(f"realpath({path}) on the plain-folder path")

        m.setattr(discovery.os.path, "realpath", no_realpath)
        assert discovery.find_recipe_files([folder]) == expected
    # a symlink anywhere below turns deduplication by real path back on
    os.symlink(tmp_path / "dags" / "a.yml", tmp_path / "dags" / "sub" / "a-link.yml")
    assert discovery.find_recipe_files([folder]) == expected


def test_airflowignore_is_honoured_anywhere_in_the_tree(tmp_path, monkeypatch):
    tree(tmp_path / "dags", {
        "keep.yml": RECIPE,
        "old/retired.yml": RECIPE,
        "team/wip_x.yml": RECIPE,
        "team/done.yml": RECIPE,
        "team/.airflowignore": "wip_*\n",
        ".airflowignore": "old/\n",
    })
    folder = str(tmp_path / "dags")
    found = [os.path.relpath(p, folder) for p in discovery.find_recipe_files([folder])]
    assert found == ["keep.yml", "team/done.yml"]
    # an ignore file only in a sub-folder still turns the whole walk over to Airflow's rules
    (tmp_path / "dags" / ".airflowignore").unlink()
    found = [os.path.relpath(p, folder) for p in discovery.find_recipe_files([folder])]
    assert found == ["keep.yml", "old/retired.yml", "team/done.yml"]
    assert discovery.find_recipe_files([folder]) == through_airflow(monkeypatch, [folder])


def test_a_file_found_through_two_folders_counts_once(tmp_path):
    tree(tmp_path / "dags", {"a.yml": RECIPE, "more/b.yml": RECIPE})
    found = discovery.find_recipe_files([str(tmp_path / "dags"), str(tmp_path / "dags" / "more")])
    assert [os.path.basename(p) for p in found] == ["a.yml", "b.yml"]


@pytest.mark.parametrize("text", [
    "steps:\n", "  steps :\n", "x: 1\nDEFAULT: r\n", "_include: a.yml\n", "\t_include_post: [a]\n",
    "r:\n  steps:\n", "a: 1\r\nsteps:\r\n",
])
def test_recipe_keys_are_recognised(text):
    assert discovery.has_recipe_key(text.encode())


@pytest.mark.parametrize("text", [
    "", "nsteps:\n", "# steps:\n", "x: steps:\n", "steps\n", "DEFAULTS: 1\n", "- steps:\n", "_includ: a\n",
    "steps_x: 1\n", "a: '\n steps'\n",
])
def test_other_yaml_is_not_a_recipe(text):
    assert not discovery.has_recipe_key(text.encode())


def test_key_test_agrees_with_its_regular_expression_definition():
    # the documented rule: a line that is (indented) steps:, DEFAULT: or _include<word>:
    rule = re.compile(rb"(?m)^[ \t]*(steps|DEFAULT|_include\w*)[ \t]*:")
    import random

    rng = random.Random(7)
    pieces = [b"steps", b"DEFAULT", b"_include", b"_post", b" ", b"\t", b"\n", b":", b"x", b"#", b"\r", b"-", b"9"]
    for _ in range(20000):
        text = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 9)))
        assert discovery.has_recipe_key(text) == bool(rule.search(text)), text
