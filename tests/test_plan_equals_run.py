"""What a task runs is what ``stepcab plan --json`` says it runs, step by step, argv for argv.

For every example recipe (``example_recipes/``), the patterns (``../shared/corpus/patterns``) and
every corpus recipe that plans without inputs, the recipe runs through real Airflow (``dag.test``,
one process for all of them) with a recorder first on ``PATH`` for every command the plan names
(tests/oracle/stimela_recipe.py: it logs its argv and the Airflow task that ran it, then runs the
real tool when there is one — when there is none it only records, so steps needing tools this
machine lacks still show their command line). Each task's recorded command lines must equal the
plan's argv of that task's steps (every iteration of a mapped loop).

Compared: steps the plan runs (``skip`` false) with every value known before the run, whose
command is found on ``PATH`` (binary and CASA cabs). Python-flavour cabs run the worker's own
interpreter (an absolute path, with ``yield_output`` defined inline: ``scabha`` is not installed);
their argv comes from the same function (:func:`~airflow_provider_stepcab.plan.step_plan.cab_argv`)
and is not recorded here. Singularity steps run a recorded runtime (the image is "built" empty):
the argv the ``exec`` line runs inside the image is compared. The plans themselves are compared
with Stimela 2.1.4 in test_oracle_recipes.py.
"""

from __future__ import annotations

import collections
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from needs import missing

from test_native_operator import run_dag, write_dag_file

from airflow_provider_stepcab.dag_factory.naming import task_id_for

pytestmark = pytest.mark.airflow
ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "example_recipes"
CORPUS = Path(os.environ.get("STEPCAB_CORPUS", ROOT.parent / "shared" / "corpus"))
ORACLE = ROOT / "tests" / "oracle" / "stimela_recipe.py"

#: (file, recipe): every example that runs without inputs, the patterns, and the corpus recipes
#: that plan without inputs (``stepcab plan`` finds no problem in them)
EXAMPLE_RECIPES = [("dataflow.yml", "dataflow"), ("loop.yml", "loop"), ("nested.yml", "nested"),
                   ("python-cabs.yml", "python-cabs"), ("text-pipeline.yml", "text-pipeline"),
                   ("wranglers.yml", "wranglers"), ("wranglers.yml", "wranglers-error"),
                   ("wranglers.yml", "wranglers-exit-code"), ("daily-digest.yml", "daily-digest"),
                   ("status_file_demo.yml", "status_file_demo")]
CORPUS_RECIPES = [
    ("patterns/assign-info-suffix.yml", "test"), ("patterns/assign-then-based-on.yml", "test"),
    ("patterns/based-on-fills-required-input.yml", "mosaic"), ("patterns/based-on-then-assign.yml", "test"),
    ("stimela-tests/test_backends.yml", "test_recipe"), ("stimela-tests/test_backends.yml", "test_recipe3"),
    ("stimela-tests/test_backends.yml", "test_recipe4"), ("stimela-tests/test_callables.yml", "test_callables"),
    ("stimela-tests/test_casa.yml", "test_casa"), ("stimela-tests/test_conditional_skips.yml", "recipe"),
    ("stimela-tests/test_output_elements.yml", "recipe"), ("stimela-tests/test_subrecipes.yml", "recipe"),
    ("stimela-tests/test_wranglers.yml", "test_replace_suppress"),
    ("stimela-tests/test_wranglers.yml", "test_force_success"),
    ("stimela-tests/test_wranglers.yml", "test_parse"), ("stimela-tests/test_zip_loops.yml", "main_recipe"),
]
#: inputs a recipe needs in its run directory (``stepcab plan`` does not look; a run checks them)
LAYOUT = {"test_casa": {"dirs": ["test-a.ms", "demo-D147.ms"]}}
# left out: example_recipes/slurm_demo.yml (wraps its steps in Slurm: tests/test_slurm_*.py);
# test_scatter.yml nested_loop (3 × 2 × 10 mapped instances: too slow for this test; its shape is unrolled);
# test_nesting.yml demo_recipe and test_scatter.yml basic_loop: their DAGs' trigger params reject
# the recipes' own int defaults for untyped/str inputs (known, like ddf-mosaic in test_oracle_recipes.py)


def _cases() -> list:
    cases = [(str(EXAMPLES / f), r) for f, r in EXAMPLE_RECIPES]
    if CORPUS.is_dir():
        cases += [(str(CORPUS / f), r) for f, r in CORPUS_RECIPES]
    return cases


def _layout():
    spec = importlib.util.spec_from_file_location("stimela_recipe", ORACLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def stepcab_plan(file: str, recipe: str, workdir: Path, *backend: str) -> dict:
    """``stepcab plan --json`` of ``recipe``, run in ``workdir`` as a user would."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "airflow_provider_stepcab", "plan", file, "--recipe", recipe,
                           "--json", *backend], cwd=workdir, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def on_path(step: dict) -> bool:
    """A step whose command the recorders can see: run by name, not a Python interpreter."""
    argv = step.get("argv") or []
    return bool(argv) and "/" not in argv[0] and not argv[0].startswith("python")


def in_container(call: list) -> list:
    """A recorded ``singularity exec ... IMAGE.simg argv...`` as the argv it runs in the container."""
    if call[0] in ("apptainer", "singularity") and call[1:2] == ["exec"]:
        image = next(i for i, a in enumerate(call) if a.endswith(".simg"))
        call = [os.path.basename(call[image + 1])] + call[image + 2:]
    return call


def comparable(step: dict) -> bool:
    return step.get("skip") is False and not step.get("unresolved") and on_path(step)


@pytest.fixture(scope="module")
def recipe_dags(airflow_db, airflow_dags_folder):
    files = sorted({f for f, _ in _cases()})
    loader = ("from airflow_provider_stepcab.dag_factory import build_dags\n\n"
              f"build_dags(globals(), files={files!r})\n")
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(str(write_dag_file(airflow_dags_folder, "stepcab_plan_equals_run.py", loader)))
    # test_scatter.yml's nested_loop has no DAG (its import error); its basic_loop has one
    assert set(bag.import_errors) <= {str(CORPUS / "stimela-tests" / "test_scatter.yml")}, bag.import_errors
    dags = bag.dags
    by_recipe = {}
    for dag in dags.values():
        task = next(iter(dag.tasks), None)
        if task is not None and hasattr(task, "recipe_file"):
            by_recipe[(os.path.realpath(task.recipe_file), task.recipe_name)] = dag
    return by_recipe


@pytest.mark.parametrize("case", _cases(), ids=lambda c: f"{Path(c[0]).name}:{c[1]}")
def test_each_task_runs_what_the_plan_says(case, recipe_dags, tmp_path, monkeypatch):
    file, recipe = case
    if not Path(file).exists():
        missing(f"recipe missing: {file} (shared corpus)")
    layout = _layout()
    work, _ = layout.prepare(str(tmp_path / "inputs"), LAYOUT.get(recipe, {}))
    plan = stepcab_plan(file, recipe, Path(work))
    containers = {s["backend"] for s in plan["steps"] if s.get("backend") in ("singularity",)}
    executables = sorted({os.path.basename(s["argv"][0]) for s in plan["steps"] if on_path(s)})
    spec = {"executables": executables + (["apptainer", "singularity"] if containers else []),
            # a recorded `singularity build IMAGE ...` leaves an (empty) image behind
            "creates": {"apptainer": {"build": ["{}"]}, "singularity": {"build": ["{}"]}}}
    _, env = layout.prepare(str(tmp_path / "scratch"), spec)
    tasks_out = str(tmp_path / "scratch" / "tasks.jsonl")
    # the cabs' own tools run for real (when installed); a container runtime is only recorded
    for name, value in {**env, "ORACLE_TASK_OUT": tasks_out, "ORACLE_PASS_THROUGH": json.dumps(executables)}.items():
        if name != "HOME":
            monkeypatch.setenv(name, value)
    _run, states = run_dag(recipe_dags[(os.path.realpath(file), recipe)], Path(work))

    ran: dict = collections.defaultdict(list)
    if os.path.exists(tasks_out):
        for line in Path(tasks_out).read_text().splitlines():
            task_id, *argv = json.loads(line)
            ran[task_id].append(in_container(argv))
    planned: dict = collections.defaultdict(list)
    for step in plan["steps"]:
        planned[task_id_for(recipe, step["path"])].append(step)
    compared = 0
    for task_id, steps in planned.items():
        if not all(comparable(s) for s in steps):
            continue
        names = {os.path.basename(s["argv"][0]) for s in steps}
        calls = [c for c in ran.get(task_id, []) if c[0] in names]  # not the tools a script calls
        mine = [[os.path.basename(s["argv"][0])] + s["argv"][1:] for s in steps]
        finished = {state for key, state in states.items() if key.split("[")[0] == task_id}
        if finished == {"success"}:
            assert calls, f"{task_id}: succeeded, but its command ({mine[0]}) never ran"
        if calls:
            assert sorted(calls) == sorted(mine), task_id
            compared += 1
    assert compared or not any(comparable(s) for s in plan["steps"]), (states, dict(ran))
