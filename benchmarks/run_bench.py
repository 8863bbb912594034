"""``stepcab run`` against ``stimela run`` (Stimela 2.1.4 from ``.oracle-venv``): wall and CPU time.

The same recipe file, native backend, runs through both commands, interleaved run by run (the
order alternates per repetition), each run in a fresh empty working directory; medians of
``--reps`` runs. ``stepcab run`` uses one ``AIRFLOW_HOME`` for all its runs (its metadata
database is migrated by a warm-up run that is not counted, as a user's second run finds it).

Workloads (:func:`write_workloads`):

- ``7-step``: 7 task instances: a step writing a file, a loop over three sizes (a mapped task in
  Airflow), a step whose output a wrangler parses, a step skipped by a formula, a report;
- ``50-step``: 50 chained ``echo`` steps, each using the previous step's value;
- ``dataflow``: 4 independent steps of ``sleep 1`` with ``opts.airflow.parallel: dataflow``.

Usage: ``python benchmarks/run_bench.py [--reps N] [--only 7-step,50-step]``; writes
``results/run.json`` and ``results/run.md`` and prints the table. ``bench.py`` runs it too.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
STIMELA = os.path.join(os.environ.get("ORACLE_VENV", os.path.join(REPO, ".oracle-venv")), "bin", "stimela")

CABS = """\
cabs:
  write:
    command: sh -c 'printf "%s\\n" "$@" > "$0"'
    inputs:
      words: {dtype: "List[str]", required: true, policies: {positional: true, repeat: list}}
    outputs:
      out: {dtype: File, required: true, policies: {positional_head: true}}
  count:
    command: wc -l
    inputs:
      file: {dtype: File, required: true, policies: {positional: true}}
    outputs:
      nlines: {dtype: int}
    management:
      wranglers:
        '^\\s*(?P<nlines>\\d+)\\s': PARSE_OUTPUT:nlines:int
  say:
    command: echo
    inputs:
      text: {dtype: str, required: true, policies: {positional: true}}
  nap:
    command: sleep
    inputs:
      seconds: {dtype: float, required: true, policies: {positional: true}}
"""

SEVEN = CABS + """
lib:
  recipes:
    sized:
      inputs:
        sizes: {dtype: "List[int]", default: [1, 2, 3]}
      for_loop: {var: size, over: sizes}
      steps:
        make:
          cab: write
          params: {words: ["=recipe.size"], out: "size-{recipe.size}.txt"}
bench-7:
  inputs:
    loud: {dtype: bool, default: false}
  steps:
    words: {cab: write, params: {words: [a, b, c, d], out: words.txt}}
    sizes: {recipe: sized}
    count: {cab: count, params: {file: words.txt}}
    shout: {cab: say, skip: "=not recipe.loud", params: {text: LOUD}}
    report: {cab: say, params: {text: "{steps.count.nlines} lines"}}
"""


def _chain(n: int) -> str:
    steps = ["    s0: {cab: say, params: {text: step-0}}"]
    steps += [f"    s{i}: {{cab: say, params: {{text: '=previous.text'}}}}" for i in range(1, n)]
    return CABS + "bench-50:\n  steps:\n" + "\n".join(steps) + "\n"


DATAFLOW = CABS + """
bench-dataflow:
  steps:
    a: {cab: nap, params: {seconds: 1}}
    b: {cab: nap, params: {seconds: 1}}
    c: {cab: nap, params: {seconds: 1}}
    d: {cab: nap, params: {seconds: 1}}
"""

#: ``stimela run`` refuses ``opts.airflow`` (not a Stimela option): only stepcab's copy has it
AIRFLOW_OPTS = "opts:\n  airflow:\n    parallel: dataflow\n"

WORKLOADS = {"7-step": ("bench-7.yml", SEVEN, ""), "50-step": ("bench-50.yml", _chain(50), ""),
             "dataflow": ("bench-dataflow.yml", DATAFLOW, AIRFLOW_OPTS)}


def write_workloads(folder: str) -> dict:
    """``{workload: {contender: recipe file}}`` written into ``folder``."""
    out: dict = {}
    for name, (file, text, stepcab_only) in WORKLOADS.items():
        out[name] = {}
        for contender, extra in (("stimela", ""), ("stepcab", stepcab_only)):
            path = os.path.join(folder, contender, file)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as fh:
                fh.write(text + extra)
            out[name][contender] = path
    return out


def _command(contender: str, recipe: str, python: str) -> list:
    if contender == "stimela":
        return [STIMELA, "--boring", "run", "-N", recipe]
    return [python, "-m", "airflow_provider_stepcab", "run", "-N", recipe]


def run_once(contender: str, recipe: str, workdir: str, home: str, python: str, timeout: float) -> dict:
    """One run in a fresh ``workdir``: wall and CPU (user + sys of the process tree) seconds."""
    shutil.rmtree(workdir, ignore_errors=True)
    os.makedirs(workdir)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(STEPCAB_AIRFLOW_HOME=home, PYTHONPATH=REPO + os.pathsep + env.get("PYTHONPATH", ""))
    started = time.perf_counter()
    proc = subprocess.Popen(_command(contender, recipe, python), cwd=workdir, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return {"error": f"timed out after {timeout:.0f} s"}
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        return {"error": f"exit {proc.returncode}: {err[-800:]}"}
    return {"wall_s": wall}


def _cpu_of_children() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def benchmark(reps: int, work: str, only: list, python: str, timeout: float = 900.0, log=print) -> dict:
    """``{workload: {contender: [runs]}}``; the contenders alternate run by run."""
    recipes = write_workloads(os.path.join(work, "recipes"))
    home = os.path.join(work, "stepcab-home")
    shutil.rmtree(home, ignore_errors=True)
    results: dict = {}
    for name in only:
        warm = run_once("stepcab", recipes[name]["stepcab"], os.path.join(work, "warmup"), home, python, timeout)
        log(f"{name}: stepcab warm-up run (database set-up, not counted): {warm}")
        results[name] = {"stepcab": [], "stimela": []}
        for rep in range(reps):
            order = ("stepcab", "stimela") if rep % 2 == 0 else ("stimela", "stepcab")
            for contender in order:
                before = _cpu_of_children()
                r = run_once(contender, recipes[name][contender], os.path.join(work, "wd", name, contender), home, python,
                             timeout)
                if "error" not in r:
                    r["cpu_s"] = _cpu_of_children() - before
                results[name][contender].append(r)
                shown = f"{r['wall_s']:.2f} s wall, {r['cpu_s']:.2f} s cpu" if "error" not in r else r["error"][-300:]
                log(f"[rep {rep + 1}/{reps}] {name:>8} {contender:<8} {shown}")
    return results


def summarize(raw: dict) -> dict:
    """Medians per workload and contender, the ratios stepcab/stimela and the paired ratios."""
    out: dict = {}
    for name, by in raw.items():
        entry: dict = {}
        for contender, runs in by.items():
            ok = [r for r in runs if "error" not in r]
            entry[contender] = {"runs": len(runs), "ok": len(ok),
                                "wall_s": statistics.median([r["wall_s"] for r in ok]) if ok else None,
                                "cpu_s": statistics.median([r["cpu_s"] for r in ok]) if ok else None,
                                "errors": [r["error"] for r in runs if "error" in r]}
        for key in ("wall_s", "cpu_s"):
            a, b = entry["stepcab"][key], entry["stimela"][key]
            entry[f"ratio_{key}"] = a / b if a is not None and b else None
            pairs = [x[key] / y[key] for x, y in zip(by["stepcab"], by["stimela"])
                     if "error" not in x and "error" not in y and y[key]]
            entry[f"paired_{key}"] = statistics.median(pairs) if pairs else None
        out[name] = entry
    return out


def markdown(summary: dict, reps: int) -> list:
    def f(v, unit=""):
        return "-" if v is None else f"{v:.2f}{unit}"

    rows = ["| workload | stepcab run wall | stimela run wall | wall ratio (paired) | stepcab CPU | stimela CPU "
            "| CPU ratio |", "|---|---|---|---|---|---|---|"]
    for name, e in summary.items():
        rows.append(f"| {name} | {f(e['stepcab']['wall_s'], ' s')} | {f(e['stimela']['wall_s'], ' s')} "
                    f"| {f(e['ratio_wall_s'], 'x')} ({f(e['paired_wall_s'], 'x')}) | {f(e['stepcab']['cpu_s'], ' s')} "
                    f"| {f(e['stimela']['cpu_s'], ' s')} | {f(e['ratio_cpu_s'], 'x')} |")
        for contender in ("stepcab", "stimela"):
            for err in e[contender]["errors"][:2]:
                rows.append(f"\n{name} {contender} failed: {err[:300]}")
    rows += ["", f"Medians of {reps} runs per contender, interleaved run by run, native backend, a fresh working "
             "directory per run; `stepcab run` with a warmed-up `AIRFLOW_HOME` (database already migrated); "
             "CPU = user + sys of the command's process tree. Goal: ratio <= 1.0x; dataflow: faster than Stimela."]
    return rows


def main(argv: list | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--only", default=",".join(WORKLOADS), help=f"comma-separated, of {', '.join(WORKLOADS)}")
    p.add_argument("--python", default=sys.executable, help="interpreter with this package (for stepcab run)")
    p.add_argument("--work", default=os.path.join(HERE, "work", "run"))
    p.add_argument("--out", default=os.path.join(HERE, "results"))
    args = p.parse_args(argv)
    if not os.path.exists(STIMELA):
        print(f"run_bench: no Stimela at {STIMELA} (make oracle)", file=sys.stderr)
        return 2
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    load = os.getloadavg()
    raw = benchmark(args.reps, os.path.abspath(args.work), args.only.split(","), args.python)
    summary = summarize(raw)
    result = {"when": started, "reps": args.reps, "loadavg_at_start": load, "summary": summary, "raw": raw}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "run.json"), "w") as fh:
        json.dump(result, fh, indent=1)
    md = ["# `stepcab run` vs `stimela run`", "", f"Run {started}, load average at start "
          f"{', '.join(f'{x:.1f}' for x in load)}, {os.cpu_count()} CPUs.", ""] + markdown(summary, args.reps)
    with open(os.path.join(args.out, "run.md"), "w") as fh:
        fh.write("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
