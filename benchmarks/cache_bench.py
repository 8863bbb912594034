"""The step cache: an unchanged re-run of a 100-step recipe, in one fresh process (``docs/cache.md``).

The recipe is a chain of ``N`` native steps, each copying the previous step's file (``cp``), with
``opts.airflow.cache: true``. ``dag.test()`` runs it three times in one working directory:

1. first run (every step runs and is recorded);
2. unchanged re-run (every step is a cache hit: skipped, XComs published again);
3. re-run with ``stepcab_cache: off`` (every step runs again, nothing looked up): what a re-run
   costs without the cache.

Our code's cost per step is measured inside the same process: the time in the step operator's
``execute`` (re-load the recipe from its cache, resolve the step, compute its key, look it up,
publish its XComs again), of that the step cache's part (``step_cache.before_run``), and the
time of the XCom requests it makes (``xcom_push``/``xcom_pull``: Airflow's execution API, an
in-process HTTP round trip under ``dag.test()``); "our code" is ``execute`` minus those requests,
as wall time and as CPU time of the task's thread (robust on a busy machine: waiting for a CPU
and the API server's threads are not counted). Medians over the steps.
The goal (no assertion) is under 20 ms per cached step beyond Airflow's own task start.

Usage: ``python cache_bench.py WORKDIR [--steps N]``; prints ``BENCH_RESULT {json}``. ``bench.py``
runs it (``make bench``) unless ``--no-cache-bench``.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

RECIPE = """\
opts:
  airflow: {cache: true}
cabs:
  copy:
    command: cp
    inputs:
      src: {dtype: File, required: true, policies: {positional: true}}
    outputs:
      dst: {dtype: File, required: true, policies: {positional: true}}
cache-bench:
  info: N chained copies
  steps:
%s
"""
LOADER = "from airflow_provider_stepcab.dag_factory import build_recipe_dag\n\ndag = build_recipe_dag(%r, 'cache-bench')\n"
GOAL_MS = 20.0


class Meter:
    """Per call of ``execute``: wall and task-thread CPU time, and the same for the XCom requests
    made during it (Airflow's execution API), so that our code's share is execute minus requests."""

    def __init__(self):
        self.steps: list = []      # (wall, cpu, xcom wall, xcom cpu) per execute
        self.cache: list = []      # wall of step_cache.before_run
        self._xcom = [0.0, 0.0]

    def execute(self, func):
        def wrapper(*args, **kwargs):
            self._xcom = [0.0, 0.0]
            w, c = time.perf_counter(), time.thread_time()
            try:
                return func(*args, **kwargs)
            finally:
                self.steps.append((time.perf_counter() - w, time.thread_time() - c, *self._xcom))
        return wrapper

    def xcom(self, func):
        def wrapper(*args, **kwargs):
            w, c = time.perf_counter(), time.thread_time()
            try:
                return func(*args, **kwargs)
            finally:
                self._xcom[0] += time.perf_counter() - w
                self._xcom[1] += time.thread_time() - c
        return wrapper

    def lookup(self, func, profiling: dict):
        def wrapper(*args, **kwargs):
            profiler = profiling.get("on")
            w = time.perf_counter()
            if profiler is not None:
                profiler.enable()
            try:
                return func(*args, **kwargs)
            finally:
                if profiler is not None:
                    profiler.disable()
                self.cache.append(time.perf_counter() - w)
        return wrapper

    def summary(self, steps: int) -> dict:
        med = lambda xs: 1000 * statistics.median(xs) if xs else None  # noqa: E731
        return {"execute_median_ms": med([s[0] for s in self.steps]),
                "cache_median_ms": med(self.cache),
                "xcom_median_ms": med([s[2] for s in self.steps]),
                "own_median_ms": med([s[0] - s[2] for s in self.steps]),
                "own_cpu_median_ms": med([s[1] - s[3] for s in self.steps])}


def run(work: str, steps: int, profile: bool = False) -> dict:
    from airflow.utils import db

    from airflow_provider_stepcab.operators import base, step_cache
    from task_child import dag_bag, write_files

    db.initdb()
    dags, run_dir = os.path.join(work, "dags"), os.path.join(work, "run")
    os.makedirs(dags, exist_ok=True)
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, "f0.txt"), "w") as fh:
        fh.write("seed\n")
    body = "".join(f"    s{i}:\n      cab: copy\n      params: {{src: f{i - 1}.txt, dst: f{i}.txt}}\n"
                   for i in range(1, steps + 1))
    recipe = os.path.join(work, "cache-bench.yml")
    write_files({recipe: RECIPE % body, os.path.join(dags, "stepcab_cache_bench.py"): LOADER % recipe})
    dag = dag_bag(dags).dags["cache-bench"]
    import cProfile

    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    meter = Meter()
    profiling: dict = {}
    base.StepcabBaseOperator.execute = meter.execute(base.StepcabBaseOperator.execute)
    step_cache.before_run = meter.lookup(step_cache.before_run, profiling)
    RuntimeTaskInstance.xcom_push = meter.xcom(RuntimeTaskInstance.xcom_push)
    RuntimeTaskInstance.xcom_pull = meter.xcom(RuntimeTaskInstance.xcom_pull)

    out: dict = {"steps": steps}
    for name, conf in (("first", {}), ("cached", {}), ("cache_off", {"stepcab_cache": "off"})):
        meter.steps.clear()
        meter.cache.clear()
        profiling["on"] = cProfile.Profile() if profile and name == "cached" else None
        t0 = time.perf_counter()
        dag_run = dag.test(run_conf={"stepcab_workdir": run_dir, **conf})
        wall = time.perf_counter() - t0
        states = [str(getattr(ti.state, "value", ti.state)) for ti in dag_run.get_task_instances()]
        out[name] = {"wall_s": wall, "per_step_ms": 1000 * wall / steps,
                     "states": {s: states.count(s) for s in set(states)},
                     **meter.summary(steps)}
        if profiling.get("on") is not None:
            import pstats

            print(f"--- profile of step_cache.before_run, run {name}")
            pstats.Stats(profiling["on"], stream=sys.stdout).sort_stats("cumulative").print_stats(30)
    first, cached = out["first"], out["cached"]
    out["rerun_over_first"] = cached["wall_s"] / first["wall_s"]
    out["rerun_over_cache_off"] = cached["wall_s"] / out["cache_off"]["wall_s"]
    out["goal_ms"] = GOAL_MS
    out["goal_met"] = cached["own_cpu_median_ms"] < GOAL_MS
    return out


def markdown(result: dict) -> str:
    """The table ``bench.py`` appends to ``latest.md``."""
    if not result or "error" in result:
        return f"\n## Step cache\n\n{(result or {}).get('error', 'not run')}\n"
    rows = ["", "## Step cache: unchanged re-run", "",
            f"{result['steps']} chained native steps (`cp`), `opts.airflow.cache: true`, `dag.test()` in one process.", "",
            "| run | wall s | per step ms | `execute` per step, median ms | of which the cache | of which XCom requests"
            " | our code (wall) | our code (CPU of the task thread) | task states |",
            "|---|---|---|---|---|---|---|---|---|"]
    fmt = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
    for name in ("first", "cached", "cache_off"):
        r = result[name]
        rows.append(f"| {name} | {r['wall_s']:.1f} | {r['per_step_ms']:.0f} | {fmt(r['execute_median_ms'])} | "
                    f"{fmt(r['cache_median_ms'])} | {fmt(r['xcom_median_ms'])} | {fmt(r['own_median_ms'])} | "
                    f"{fmt(r['own_cpu_median_ms'])} | {r['states']} |")
    rows += ["", f"Cached re-run / first run: {result['rerun_over_first']:.2f}x; / re-run without the cache: "
             f"{result['rerun_over_cache_off']:.2f}x. Our code per cached step (`execute` minus the "
             f"XCom requests it makes through Airflow's execution API, CPU time of the task's thread): "
             f"{result['cached']['own_cpu_median_ms']:.1f} ms (goal < {result['goal_ms']:.0f} ms: "
             f"{'met' if result['goal_met'] else 'NOT met'})."]
    return "\n".join(rows) + "\n"


def main(argv: list) -> int:
    work = os.path.abspath(argv[0])
    steps = int(argv[argv.index("--steps") + 1]) if "--steps" in argv else 100
    os.makedirs(os.path.join(work, "dags"), exist_ok=True)
    os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = os.path.join(work, "dags")
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    result = run(work, steps, profile="--profile" in argv)
    print("BENCH_RESULT " + json.dumps(result))
    if "--markdown" in argv:
        print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
