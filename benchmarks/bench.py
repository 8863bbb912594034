"""Run the parse, task-overhead and ``stepcab run`` benchmarks and write ``results/latest.{json,md}``.

Every measurement runs in a fresh interpreter (:mod:`parse_child`, :mod:`task_child`) of the
*current* interpreter, which should be the bench venv (``benchmarks/venv.sh``: the project's
constraints + dag-factory 1.x + this package), so all contenders share one Python and one Airflow.
Contenders are interleaved run by run: for each repetition and shape, every round runs stepcab,
dag-factory and Python once each, in an order that rotates per repetition; cold rounds first:

- **cold**: no ``__pycache__`` in the DAG folder and an empty stepcab cache (a first parse);
- **warm**: the same files parsed again by a new process (what Airflow does every 30 s when
  nothing changed: ``__pycache__`` and the stepcab cache are there).

Usage: ``python benchmarks/bench.py [--quick] [--reps N] [--shapes 1x10,100x100] [--slurm]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import report  # noqa: E402
import run_bench  # noqa: E402
import workload  # noqa: E402

REPO = os.path.dirname(HERE)
_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d")
QUICK_SHAPES = [(1, 10), (10, 10), (1, 100)]


def _env(work: str, cache: str) -> dict:
    env = dict(os.environ)
    env.update({"AIRFLOW_HOME": os.path.join(work, "airflow-home"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "900", "STEPCAB_CACHE_DIR": cache,
                "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING", "PYTHONHASHSEED": "0"})
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.pop("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", None)
    return env


def run_child(script: str, args: list, env: dict, timeout: float) -> dict:
    """Run ``script`` in a fresh interpreter; return its ``BENCH_RESULT`` JSON (or an error)."""
    try:
        proc = subprocess.run([sys.executable, os.path.join(HERE, script), *args], env=env, text=True,
                              capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("BENCH_RESULT "):
            return json.loads(line[len("BENCH_RESULT "):])
    return {"error": f"exit {proc.returncode}: {(proc.stderr or proc.stdout)[-1500:]}"}


def _clean_pycache(folder: str) -> None:
    for root, dirs, _ in os.walk(folder):
        if "__pycache__" in dirs:
            shutil.rmtree(os.path.join(root, "__pycache__"), ignore_errors=True)


def runs_per_rep(tasks: int) -> tuple[int, int]:
    """``(cold, warm)`` parses per repetition and contender. A folder of up to 100 tasks parses in
    tens of milliseconds, where a busy machine's noise is as large as the differences measured,
    so it gets more samples; 10,000-task folders take seconds per parse and get one of each."""
    if tasks <= 100:
        return 3, 7
    if tasks <= 1000:
        return 3, 3
    return 1, 1


def parse_benchmark(shapes: list, reps: int, work: str, timeout: float, log=print) -> dict:
    """``{shape: {contender: {"cold": [runs], "warm": [runs]}}}`` with every child's JSON.

    Interleaved run by run: for each shape, each round runs every contender once (in an order that
    rotates per repetition), so the i-th runs of two contenders were made seconds apart and a
    machine slowdown hits both; :func:`summarize_paired` uses that pairing."""
    results: dict = {}
    folders = {}
    for n, m in shapes:
        folders[(n, m)] = workload.write_shape(os.path.join(work, "dags"), n, m)
        results[f"{n}x{m}"] = {c: {"cold": [], "warm": []} for c in workload.CONTENDERS}
    order = list(workload.CONTENDERS)
    for rep in range(reps):
        for (n, m), paths in folders.items():
            shape = f"{n}x{m}"
            rotated = order[rep % len(order):] + order[:rep % len(order)]
            cold, warm = runs_per_rep(n * m)
            for mode in ("cold",) * cold + ("warm",) * warm:
                for contender in rotated:
                    # each contender its own cache directory: a cold run of one must not empty the
                    # cache the next warm run of another expects
                    cache = os.path.join(work, "stepcab-cache", shape, contender)
                    if mode == "cold":  # a first parse: no stepcab cache, no compiled DAG files
                        shutil.rmtree(cache, ignore_errors=True)
                        _clean_pycache(paths[contender])
                    r = run_child("parse_child.py", [paths[contender]], _env(work, cache), timeout)
                    results[shape][contender][mode].append(r)
                    shown = f"{r['total_s']:.3f} s wall, {r['cpu_s']:.3f} s cpu" if "error" not in r else r["error"][-300:]
                    log(f"[rep {rep + 1}/{reps}] {shape:>8} {contender:<10} {mode}: {shown}")
            with open(os.path.join(work, "partial.json"), "w") as fh:
                json.dump(results, fh)
    return results


#: the ratios the targets are about: (mode, the contender stepcab is compared with)
PAIRS = (("warm", "python"), ("cold", "dagfactory"))


def summarize_paired(raw: dict) -> dict:
    """Median of the per-round ratios stepcab / other for each shape and :data:`PAIRS` entry,
    for both wall (``total_s``) and CPU (``cpu_s``) time: ``{shape: {"warm/python": {...}}}``.

    The i-th runs of the contenders ran back to back (:func:`parse_benchmark`), so each ratio
    compares runs under the same machine load; the median of them is less sensitive to a busy
    moment than the ratio of two medians, which the targets still use."""
    out: dict = {}
    for shape, by in raw.items():
        out[shape] = {}
        for mode, other in PAIRS:
            ours, theirs = by.get("stepcab", {}).get(mode, []), by.get(other, {}).get(mode, [])
            ok = [(a, b) for a, b in zip(ours, theirs) if "error" not in a and "error" not in b]
            entry: dict = {"pairs": len(ok)}
            for key in ("total_s", "cpu_s"):
                ratios = [a[key] / b[key] for a, b in ok if b.get(key)]
                entry[key] = statistics.median(ratios) if ratios else None
            out[shape][f"{mode}/{other}"] = entry
    return out


def _median(runs: list, key: str):
    values = [r[key] for r in runs if "error" not in r and key in r]
    return statistics.median(values) if values else None


def summarize_parse(raw: dict) -> dict:
    """Medians per shape/contender/mode (``total_s`` = DagBag + serialisation, as the processor)."""
    out: dict = {}
    for shape, by_contender in raw.items():
        out[shape] = {}
        for contender, modes in by_contender.items():
            out[shape][contender] = {}
            for mode, runs in modes.items():
                ok = [r for r in runs if "error" not in r]
                out[shape][contender][mode] = {
                    "runs": len(runs), "ok": len(ok), "total_s": _median(runs, "total_s"),
                    "parse_s": _median(runs, "parse_s"), "serialize_s": _median(runs, "serialize_s"),
                    "cpu_s": _median(runs, "cpu_s"), "worst_file_s": _median(runs, "worst_file_s"),
                    "peak_rss_mb": max((r["peak_rss_mb"] for r in ok), default=None),
                    "rss_growth_mb": _median(runs, "rss_growth_mb"),
                    "tasks": ok[0]["tasks"] if ok else None, "dags": ok[0]["dags"] if ok else None,
                    "import_errors": next((r["import_errors"] for r in ok if r["import_errors"]), {}),
                    "errors": [r["error"][-500:] for r in runs if "error" in r]}
    return out


def run_slurm(args: argparse.Namespace, work: str) -> dict | None:
    script = os.path.join(HERE, "slurm_bench.py")
    cluster = os.path.join(REPO, "scripts", "cluster", "cluster.sh")
    if not args.slurm:
        return None
    if not (os.path.isfile(script) and os.path.isfile(cluster)):
        return {"skipped": "benchmarks/slurm_bench.py or scripts/cluster/cluster.sh missing"}
    # slurm_bench.py (another module) prints a markdown table on stdout; keep it verbatim
    proc = subprocess.run([sys.executable, script] + (["--jobs", "1,5"] if args.quick else []),
                          text=True, capture_output=True, timeout=args.timeout * 4)
    if proc.returncode != 0:
        return {"error": f"exit {proc.returncode}: {(proc.stderr or proc.stdout)[-1500:]}"}
    # keep the report, not the log lines the SSH hooks print on stdout
    lines = [ln for ln in proc.stdout.splitlines() if not _LOG_LINE.match(ln)]
    out = {"table": "\n".join(lines).strip()}
    # many waiting tasks: queries per interval and memory per waiting job (slurm_local_bench.py)
    scale = [sys.executable, os.path.join(HERE, "slurm_local_bench.py")] + (
        ["--jobs", "20", "--local-jobs", "10", "--window", "3"] if args.quick else ["--jobs", "200", "--local-jobs", "200"])
    proc = subprocess.run(scale, text=True, capture_output=True, timeout=args.timeout * 4)
    if proc.returncode != 0:
        out["scale_error"] = f"exit {proc.returncode}: {(proc.stderr or proc.stdout)[-1500:]}"
    else:
        out["scale_table"] = "\n".join(ln for ln in proc.stdout.splitlines() if not _LOG_LINE.match(ln)).strip()
    return out


def main(argv: list | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small shapes, 1 repetition (validation)")
    p.add_argument("--reps", type=int, default=5, help="repetitions (median reported); default 5")
    p.add_argument("--shapes", default=None, help="comma-separated NxM, default: all")
    p.add_argument("--metric", choices=("wall", "cpu"), default="wall",
                   help="what ratios and targets use: wall time (default; a quiet machine) or CPU time")
    p.add_argument("--slurm", action="store_true", help="also run benchmarks/slurm_bench.py and slurm_local_bench.py (needs the cluster)")
    p.add_argument("--no-tasks", action="store_true", help="skip the task-overhead measurement")
    p.add_argument("--no-run-cli", action="store_true", help="skip `stepcab run` vs `stimela run` (run_bench.py)")
    p.add_argument("--no-cache-bench", action="store_true", help="skip the step cache re-run (cache_bench.py)")
    p.add_argument("--timeout", type=float, default=900.0, help="per-child timeout in seconds")
    p.add_argument("--work", default=os.path.join(HERE, "work"), help="scratch directory")
    p.add_argument("--out", default=os.path.join(HERE, "results"), help="where latest.{json,md} go")
    args = p.parse_args(argv)
    reps = 1 if args.quick and args.reps == 5 else args.reps
    if args.shapes:
        shapes = [tuple(int(x) for x in s.split("x")) for s in args.shapes.split(",")]
    else:
        shapes = QUICK_SHAPES if args.quick else workload.SHAPES
    work = os.path.abspath(args.work)
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    started = time.time()
    raw = parse_benchmark(shapes, reps, work, args.timeout)
    tasks = None
    if not args.no_tasks:
        tenv = _env(os.path.join(work, "tasks"), os.path.join(work, "stepcab-cache", "tasks"))
        tasks = run_child("task_child.py", [os.path.join(work, "tasks"), "--reps", str(reps),
                                            "--tasks", "5"], tenv, args.timeout)
        print(f"task overhead: {json.dumps(tasks)[:400]}")
    run_cli = None
    if not args.no_run_cli and os.path.exists(run_bench.STIMELA):
        only = ["7-step"] if args.quick else list(run_bench.WORKLOADS)
        run_cli = run_bench.summarize(run_bench.benchmark(reps, os.path.join(work, "run"), only, sys.executable,
                                                          timeout=args.timeout))
    cache = None
    if not args.no_cache_bench:  # the step cache: unchanged re-run of a 100-step recipe (cache_bench.py)
        cenv = _env(os.path.join(work, "cache"), os.path.join(work, "stepcab-cache", "cache"))
        cache = run_child("cache_bench.py", [os.path.join(work, "cache"), "--steps", "20" if args.quick else "100"],
                          cenv, args.timeout)
        print(f"step cache: {json.dumps(cache)[:400]}")
    import airflow  # noqa: F401 - versions for the record (the children used the same interpreter)

    try:
        import dagfactory
        dagfactory_version = dagfactory.__version__
    except ImportError:
        dagfactory_version = None
    result = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "duration_s": time.time() - started, "reps": reps, "metric": args.metric,
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "cpus": os.cpu_count(), "loadavg_at_start": os.getloadavg()},
        "versions": {"airflow": airflow.__version__, "dag_factory": dagfactory_version},
        "parse": summarize_parse(raw), "parse_paired": summarize_paired(raw), "parse_raw": raw,
        "tasks": tasks, "slurm": run_slurm(args, work), "run_cli": run_cli, "cache": cache,
    }
    result["targets"] = report.evaluate_targets(result)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "latest.json"), "w") as fh:
        json.dump(result, fh, indent=1, default=str)
    md = report.markdown(result)
    if cache is not None:
        from cache_bench import markdown as cache_markdown
        md += cache_markdown(cache)
    with open(os.path.join(args.out, "latest.md"), "w") as fh:
        fh.write(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
