"""The DAG factory's parse cache (dag_factory/spec.py), seen the way Airflow uses it: every parse is
a fresh process (what the dag-processor does every 30 s), running the dag-processor's own
``BundleDagBag`` + ``DagSerialization`` on a folder with the loader and recipe files.

A warm parse must give exactly the DAGs of a cold one without importing the recipe layer; any edit
to a recipe or to a file it includes must show up in the next parse; broken recipes stay reported.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LOADER = "from airflow_provider_stepcab.dag_factory import build_dags\n\nbuild_dags(globals())\n"

PARSE = textwrap.dedent('''
    import json, sys
    from airflow.dag_processing.dagbag import BundleDagBag
    from airflow.serialization.serialized_objects import DagSerialization

    folder = sys.argv[1]
    bag = BundleDagBag(dag_folder=folder + "/stepcab_dags.py", bundle_path=folder, bundle_name="t",
                       load_op_links=False)
    print("RESULT " + json.dumps({
        "dags": {k: DagSerialization.to_dict(d) for k, d in sorted(bag.dags.items())},
        "errors": {str(k): str(v) for k, v in bag.import_errors.items()},
        "recipe_layer": sorted(m for m in sys.modules if m.split(".")[:2] == ["airflow_provider_stepcab", "recipe"]),
        "dag_factory": sorted(m for m in sys.modules if m.startswith("airflow_provider_stepcab.dag_factory")),
        "operators": sorted(m for m in sys.modules if m.startswith("airflow_provider_stepcab.operators.")),
    }, default=str, sort_keys=True))
''')


def parse(folder: Path, cache: Path) -> dict:
    """Parse ``folder`` in a fresh interpreter, as the dag-processor's parsing child does."""
    env = dict(os.environ, STEPCAB_CACHE_DIR=str(cache), STEPCAB_RECIPE_FOLDERS="",
               AIRFLOW__STEPCAB__RECIPE_FOLDERS="")
    out = subprocess.run([sys.executable, "-c", PARSE, str(folder)], env=env, capture_output=True, text=True,
                         timeout=300, cwd=folder)
    assert out.returncode == 0, out.stderr[-3000:]
    line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "stepcab_dags.py").write_text(LOADER)
    shutil.copy(REPO / "example_recipes" / "text-pipeline.yml", dags)
    shutil.copytree(REPO / "example_recipes" / "lib", dags / "lib")
    (dags / "loop.yml").write_text((REPO / "example_recipes" / "loop.yml").read_text())
    return dags


def test_warm_parse_is_the_cold_parse_without_the_recipe_layer(folder, tmp_path):
    cache = tmp_path / "cache"
    cold = parse(folder, cache)
    assert cold["dags"] and not cold["errors"], cold["errors"]
    assert cold["recipe_layer"], "a cold parse compiles the recipes"
    warm = parse(folder, cache)
    assert warm["recipe_layer"] == [], "a warm parse must not import the recipe layer"
    # every module a warm parse loads costs its import at every parse: only discovery and the spec
    # cache/materialisation (plus loops.py, whose operator class the looping recipe's DAG uses)
    pkg = "airflow_provider_stepcab.dag_factory"
    assert warm["dag_factory"] == [pkg, f"{pkg}.discovery", f"{pkg}.loops", f"{pkg}.spec"]
    assert "airflow_provider_stepcab.dag_factory.compile" in cold["dag_factory"]
    # operators: the classes the DAGs use, not what a task does when it runs (running.py, the
    # mechanisms' *_run.py, resolve.py): a parse creates operators, it never runs one
    ops = "airflow_provider_stepcab.operators"
    classes = {f"{ops}.base", f"{ops}.native", f"{ops}.singularity", f"{ops}.podman"}
    assert f"{ops}.base" in warm["operators"] and set(warm["operators"]) <= classes, warm["operators"]
    assert warm["dags"] == cold["dags"]
    assert any(os.scandir(cache)), "the cache directory stays empty"


def test_an_edit_of_an_included_file_reaches_the_next_parse(tmp_path):
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "stepcab_dags.py").write_text(LOADER)
    (dags / "common.yml").write_text("opts:\n  airflow:\n    tags: [first]\n"
                                     "cabs:\n  say:\n    command: echo\n    inputs: {x: {dtype: str, default: a}}\n")
    (dags / "pipe.yml").write_text("_include: common.yml\npipe:\n  steps:\n    s1: {cab: say}\n")
    cache = tmp_path / "cache"
    parse(dags, cache)
    assert "first" in parse(dags, cache)["dags"]["pipe"]["dag"]["tags"]
    (dags / "common.yml").write_text((dags / "common.yml").read_text().replace("[first]", "[second]"))
    tags = parse(dags, cache)["dags"]["pipe"]["dag"]["tags"]
    assert "second" in tags and "first" not in tags
    (dags / "pipe.yml").write_text("_include: common.yml\npipe:\n  steps:\n    s1: {cab: say}\n    s2: {cab: say}\n")
    warm = parse(dags, cache)
    assert warm["recipe_layer"], "an edited recipe is compiled again"
    assert {t["__var"]["task_id"] for t in warm["dags"]["pipe"]["dag"]["tasks"]} == {"s1", "s2"}


def test_a_broken_recipe_stays_reported_on_warm_parses(folder, tmp_path):
    (folder / "broken.yml").write_text("cabs: {say: {command: echo}}\nbroken:\n  steps:\n    s: {cab: nope}\n")
    cache = tmp_path / "cache"
    cold, warm = parse(folder, cache), parse(folder, cache)
    for result in (cold, warm):
        assert "text-pipeline" in result["dags"]
        [(path, message)] = [(k, v) for k, v in result["errors"].items()]
        assert path.endswith("broken.yml") and "nope" in message and "broken.yml:4" in message, message
    # only the Problem class, to format the errors: no loading, no validation
    assert warm["recipe_layer"] == ["airflow_provider_stepcab.recipe", "airflow_provider_stepcab.recipe.errors",
                                    "airflow_provider_stepcab.recipe.records"]


def test_compiling_a_recipe_leaves_no_cyclic_garbage_per_step(tmp_path):
    """Reference cycles created per step (e.g. a recursive closure) are freed only by the cyclic
    collector, which then walks all of them in the middle of the parse: a 1,000-step recipe left
    ~18,000 such objects (~20 ms). What is left must not grow with the number of steps."""
    import gc

    sys.path.insert(0, str(REPO / "benchmarks"))
    import workload

    from airflow_provider_stepcab.dag_factory.compile import compile_file

    left = {}
    for steps in (20, 200):
        paths = workload.write_shape(str(tmp_path / str(steps)), 1, steps)
        [recipe] = sorted(Path(paths["stepcab"]).glob("*.yml"))
        gc.collect()
        gc.disable()
        try:
            spec, _, ok = compile_file(str(recipe))
            assert ok and spec["dags"][0]["spec"] is not None
            del spec
            left[steps] = gc.collect()
        finally:
            gc.enable()
    assert left[200] <= left[20] + 50, left
