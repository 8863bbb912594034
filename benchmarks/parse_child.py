"""One parse measurement, run in a fresh interpreter: parse every DAG file of a folder the way
Airflow 3's dag-processor does (``BundleDagBag`` per file, then ``DagSerialization.to_dict`` of
each DAG, as ``airflow.dag_processing.processor._parse_file`` does) and print one JSON line.

Untimed baseline: Airflow itself, its SDK, the DAG bag / serialisation modules and the ``airflow.*``
modules each DAG file imports (the dag-processor pre-imports those in its long-lived manager before
forking the parsing child; e.g. ``BashOperator``'s module). The baseline's objects are then frozen
(``gc.freeze()``), as the manager does before it starts forking parsing children. Everything after that is timed: importing
the contender's own modules (``airflow_provider_stepcab``, ``dagfactory``), reading its files,
building the DAGs and serialising them.

Usage: ``python parse_child.py FOLDER [--profile OUT.html]``; the parent sets ``AIRFLOW_HOME`` etc.
"""

from __future__ import annotations

import gc
import json
import os
import resource
import sys
import time


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def dag_files(folder: str) -> list[str]:
    """The ``.py`` files the dag-processor would parse (top level of the folder, sorted)."""
    return sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(".py"))


def pre_import(files: list[str]) -> None:
    """What the dag-processor manager does before forking a parsing child (``[dag_processor]
    parsing_pre_import_modules``, on by default): import the ``airflow.*`` modules a file imports."""
    import importlib

    from airflow.utils.file import iter_airflow_imports

    for path in files:
        for module in iter_airflow_imports(path):
            try:
                importlib.import_module(module)
            except Exception:  # noqa: BLE001 - as the processor: a warning, parsing goes on
                pass


def measure(folder: str) -> dict:
    import airflow  # noqa: F401 - baseline
    import airflow.sdk  # noqa: F401
    from airflow.dag_processing.dagbag import BundleDagBag
    from airflow.serialization.serialized_objects import DagSerialization
    # imported by the first serialisation of any DAG (task dependency detection); the manager
    # process the parsing child is forked from has them already
    import airflow.providers.standard.operators.trigger_dagrun  # noqa: F401
    import airflow.providers.standard.sensors.external_task  # noqa: F401

    files = dag_files(folder)
    pre_import(files)
    # The dag-processor manager calls gc.freeze() before its parsing loop (manager.before_run), so
    # a forked parsing child never re-scans Airflow's own objects in a full collection. Without
    # this, every contender pays ~0.15 s per gen-2 collection over the baseline's ~200k objects.
    gc.freeze()
    rss0 = _rss_mb()
    parse = serialize = worst = cpu = 0.0
    dags = tasks = 0
    errors: dict = {}
    for path in files:
        c0, t0 = time.process_time(), time.perf_counter()
        bag = BundleDagBag(dag_folder=path, bundle_path=folder, bundle_name="bench", load_op_links=False)
        t1 = time.perf_counter()
        for dag in bag.dags.values():
            DagSerialization.to_dict(dag)
        t2, c2 = time.perf_counter(), time.process_time()
        cpu += c2 - c0
        parse += t1 - t0
        serialize += t2 - t1
        worst = max(worst, t2 - t0)
        dags += len(bag.dags)
        tasks += sum(len(d.task_dict) for d in bag.dags.values())
        errors.update({str(k): str(v)[-400:] for k, v in bag.import_errors.items()})
    return {"parse_s": parse, "serialize_s": serialize, "total_s": parse + serialize, "cpu_s": cpu,
            "worst_file_s": worst,
            "files": len(files), "dags": dags, "tasks": tasks, "import_errors": errors,
            "peak_rss_mb": _rss_mb(), "rss_growth_mb": _rss_mb() - rss0}


def main(argv: list[str]) -> int:
    folder = os.path.abspath(argv[0])
    profile = argv[argv.index("--profile") + 1] if "--profile" in argv else None
    if profile:
        import airflow.sdk  # noqa: F401 - keep the baseline out of the profile
        from airflow.dag_processing.dagbag import BundleDagBag  # noqa: F401
        from airflow.serialization.serialized_objects import DagSerialization  # noqa: F401
        from pyinstrument import Profiler

        with Profiler(interval=0.0005) as prof:
            result = measure(folder)
        with open(profile, "w") as fh:
            fh.write(prof.output_html() if profile.endswith(".html") else prof.output_text(show_all=False))
    else:
        result = measure(folder)
    print("BENCH_RESULT " + json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
