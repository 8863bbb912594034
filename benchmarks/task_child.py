"""Task overhead, in one fresh process (the parent sets ``AIRFLOW_HOME`` to a scratch directory).

1. ``dag.test()`` of two DAGs of ``K`` chained tasks running the same command (``echo``): one built
   by the stepcab DAG factory from a recipe (native operator), one hand-written with
   ``BashOperator``; runs interleaved, medians and the ratio stepcab/bash.
2. Per-step time inside our code for a cab with 100 parameters: run-time resolution
   (``operators.resolve.resolve``: namespaces, formulas, validation, backend choice) plus the
   command line (``plan.step_plan.native_command``), repeated, in milliseconds per step.

Usage: ``python task_child.py WORKDIR [--reps R] [--tasks K]``; prints ``BENCH_RESULT {json}``.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

RECIPE = """\
cabs:
  say:
    command: echo
    inputs:
      text: {dtype: str, required: true, policies: {positional: true}}
overhead:
  info: K echo steps
  steps:
%s
"""
BASH_DAG = """\
import pendulum
from airflow.sdk import DAG
from airflow.providers.standard.operators.bash import BashOperator

with DAG(dag_id="bash_overhead", schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC")):
    prev = None
    for i in range(%d):
        t = BashOperator(task_id=f"s{i}", bash_command=f"echo hello {i}")
        if prev is not None:
            prev >> t
        prev = t
"""
LOADER = ("from airflow_provider_stepcab.dag_factory import build_dags\n\n"
          "build_dags(globals(), files=[%r])\n")


def big_cab_recipe(n_params: int = 100) -> str:
    """A recipe with one step of a cab with ``n_params`` inputs, all set (formulas, {} and literals)."""
    lines = ["cabs:", "  big:", "    command: big-tool", "    policies: {prefix: '--'}", "    inputs:"]
    params = []
    for i in range(n_params):
        dtype = ("str", "int", "float", "bool", "List[str]")[i % 5]
        policy = ", policies: {repeat: list}" if dtype.startswith("List") else ""
        lines.append(f"      p{i}: {{dtype: '{dtype}'{policy}}}")
        value = {"str": f'"{{recipe.prefix}}-{i}"', "int": "=recipe.n + %d" % i, "float": f"{i}.5",
                 "bool": "=recipe.n > 1", "List[str]": "[a, b]"}[dtype]
        params.append(f"        p{i}: {value}")
    lines += ["big-recipe:", "  inputs:", "    prefix: {dtype: str, default: run}",
              "    n: {dtype: int, default: 3}", "  steps:", "    big:", "      cab: big", "      params:"]
    return "\n".join(lines + params) + "\n"


def write_files(files: dict) -> None:
    """Write ``{path: text}``."""
    for path, text in files.items():
        with open(path, "w") as fh:
            fh.write(text)


def dag_bag(folder: str):
    """The DAGs of ``folder`` (``DagBag``); import errors raise."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(folder)
    if bag.import_errors:
        raise RuntimeError(f"import errors: {bag.import_errors}")
    return bag


def time_dag_test(dag, conf=None) -> float:
    t0 = time.perf_counter()
    run = dag.test(run_conf=conf) if conf is not None else dag.test()
    elapsed = time.perf_counter() - t0
    state = str(getattr(run.state, "value", run.state))
    if state != "success":
        raise RuntimeError(f"{dag.dag_id}: run ended {state}")
    return elapsed


def task_overhead(work: str, reps: int, tasks: int) -> dict:
    from airflow.utils import db

    db.initdb()
    dags = os.path.join(work, "dags")
    os.makedirs(dags, exist_ok=True)
    recipe = os.path.join(work, "overhead.yml")
    steps = "".join(f"    s{i}:\n      cab: say\n      params: {{text: hello {i}}}\n" for i in range(tasks))
    write_files({recipe: RECIPE % steps, os.path.join(dags, "stepcab_overhead.py"): LOADER % recipe,
                 os.path.join(dags, "bash_overhead.py"): BASH_DAG % tasks})
    bag = dag_bag(dags)
    step_dag = next(d for i, d in bag.dags.items() if i != "bash_overhead")
    bash_dag = bag.dags["bash_overhead"]
    conf = {"stepcab_workdir": os.path.join(work, "run")}
    time_dag_test(step_dag, conf)  # warm-up both (imports, first DB writes)
    time_dag_test(bash_dag)
    stepcab, bash = [], []
    for _ in range(reps):
        stepcab.append(time_dag_test(step_dag, conf))
        bash.append(time_dag_test(bash_dag))
    s, b = statistics.median(stepcab), statistics.median(bash)
    return {"tasks": tasks, "reps": reps, "stepcab_runs_s": stepcab, "bash_runs_s": bash,
            "stepcab_median_s": s, "bash_median_s": b, "ratio": s / b,
            "stepcab_per_task_ms": 1000 * s / tasks, "bash_per_task_ms": 1000 * b / tasks}


def step_resolution(work: str, reps: int) -> dict:
    from pathlib import Path

    from airflow_provider_stepcab.operators import resolve as R
    from airflow_provider_stepcab.operators.overrides import parse_overrides
    from airflow_provider_stepcab.plan.step_plan import native_command
    from airflow_provider_stepcab.recipe.api import load_recipe
    from airflow_provider_stepcab.runtime.workdir import Workdir

    path = os.path.join(work, "big.yml")
    with open(path, "w") as fh:
        fh.write(big_cab_recipe(100))
    wd = Path(work) / "resolve"
    wd.mkdir(exist_ok=True)
    workdir = Workdir(wd, "default")
    times, argv = [], []
    n = max(20, reps * 10)
    for _ in range(n):
        t0 = time.perf_counter()
        recipe, loaded = load_recipe(path, "big-recipe")  # cached: what a task process pays warm
        overrides = parse_overrides({}, recipe, {})
        step = R.resolve(recipe=recipe, loaded=loaded, step_path=("big",), recipe_params=overrides.recipe_params,
                         overrides=overrides, loop_value=None, loop_index=None, fetch=lambda *a, **k: None,
                         backend_pref="native", available=["native"], workdir=workdir, recipe_name="big-recipe")
        argv = native_command(step, python=sys.executable).command
        times.append(time.perf_counter() - t0)
    return {"params": 100, "repeats": n, "median_ms": 1000 * statistics.median(times[1:]),
            "first_ms": 1000 * times[0], "argv_len": len(argv)}


def main(argv: list[str]) -> int:
    work = os.path.abspath(argv[0])
    reps = int(argv[argv.index("--reps") + 1]) if "--reps" in argv else 3
    tasks = int(argv[argv.index("--tasks") + 1]) if "--tasks" in argv else 5
    os.makedirs(os.path.join(work, "dags"), exist_ok=True)
    os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = os.path.join(work, "dags")  # dag.test() syncs this bundle
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    out = {"resolve": step_resolution(work, reps)}
    if "--no-dag-test" not in argv:
        out["dag_test"] = task_overhead(work, reps, tasks)
    print("BENCH_RESULT " + json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
