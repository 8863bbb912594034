"""Targets and the markdown report of a benchmark result (see :mod:`bench`)."""

from __future__ import annotations

from typing import Any, Optional

IMPORT_TIMEOUT_S = 30.0
#: "far inside the 30 s import timeout": at most a third of it
FAR_INSIDE = IMPORT_TIMEOUT_S / 3


def _value(result: dict, shape: str, contender: str, mode: str) -> Optional[float]:
    key = "cpu_s" if result.get("metric") == "cpu" else "total_s"
    return (((result["parse"].get(shape) or {}).get(contender) or {}).get(mode) or {}).get(key)


def _ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return a / b if a is not None and b else None


def evaluate_targets(result: dict) -> list[dict]:
    """Each target with its measurement and ``ok`` (``None`` when not measured)."""
    out = []

    def add(name: str, measured: Optional[float], limit: float, unit: str) -> None:
        out.append({"target": name, "measured": measured, "limit": limit, "unit": unit,
                    "ok": None if measured is None else measured <= limit})

    for shape in result["parse"]:
        add(f"warm {shape}: stepcab / python", _ratio(_value(result, shape, "stepcab", "warm"),
                                                      _value(result, shape, "python", "warm")), 1.3, "x")
        add(f"cold {shape}: stepcab / dag-factory", _ratio(_value(result, shape, "stepcab", "cold"),
                                                           _value(result, shape, "dagfactory", "cold")), 1.0, "x")
    if "1x1000" in result["parse"]:
        for mode in ("cold", "warm"):
            add(f"1 recipe x 1,000 steps, {mode}", _value(result, "1x1000", "stepcab", mode), 1.0, "s")
    if "100x100" in result["parse"]:
        cold = result["parse"]["100x100"]["stepcab"]["cold"]
        add("100 x 100 cold, slowest DAG file (import timeout 30 s)", cold.get("worst_file_s"), FAR_INSIDE, "s")
    tasks = result.get("tasks") or {}
    if "dag_test" in tasks:
        add("native step / BashOperator (dag.test)", tasks["dag_test"]["ratio"], 1.1, "x")
    for name, entry in (result.get("run_cli") or {}).items():
        add(f"`stepcab run` / `stimela run`, {name} (wall)", entry.get("ratio_wall_s"),
            1.0 if name != "dataflow" else 0.99, "x")
    return out


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def parse_table(result: dict) -> list[str]:
    metric = "CPU s" if result.get("metric") == "cpu" else "s"
    rows = [f"| shape (files x steps) | tasks | stepcab cold | stepcab warm | dag-factory cold | dag-factory warm "
            f"| python cold | python warm | warm stepcab/python | cold stepcab/dag-factory "
            f"| peak RSS MB stepcab / dag-factory / python |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for shape, by in result["parse"].items():
        v = {(c, m): _value(result, shape, c, m) for c in ("stepcab", "dagfactory", "python") for m in ("cold", "warm")}
        rss = " / ".join(_fmt(max(filter(None, [by[c][m]["peak_rss_mb"] for m in ("cold", "warm")]), default=None), 0)
                         for c in ("stepcab", "dagfactory", "python"))
        rows.append(f"| {shape} | {_fmt(by['stepcab']['cold']['tasks'])} "
                    + "".join(f"| {_fmt(v[(c, m)])} " for c in ("stepcab", "dagfactory", "python") for m in ("cold", "warm"))
                    + f"| {_fmt(_ratio(v[('stepcab', 'warm')], v[('python', 'warm')]), 2)}x "
                    f"| {_fmt(_ratio(v[('stepcab', 'cold')], v[('dagfactory', 'cold')]), 2)}x | {rss} |")
    notes = []
    for shape, by in result["parse"].items():
        for c, modes in by.items():
            for m, s in modes.items():
                if s["errors"] or s["import_errors"]:
                    notes.append(f"- {shape} {c} {m}: {len(s['errors'])} failed run(s); import errors: "
                                 f"{list(s['import_errors'])[:3]} {(s['errors'] or [''])[0][:200]}")
    return rows + ([""] + notes if notes else []) + ["", f"Times in {metric}: median of all runs of DagBag + serialisation of every DAG file "
                                                     f"(dag-processor work); {result['reps']} repetition(s), each with 3 cold + 7 "
                                                     "warm parses per contender for folders of up to 100 tasks, 3 + 3 up to 1,000 "
                                                     "tasks, 1 + 1 above, interleaved run by run."] + paired_table(result)


def paired_table(result: dict) -> list[str]:
    """The same ratios as medians of per-round ratios (runs made back to back; see
    ``bench.summarize_paired``), as a check of how much machine noise moved the ratios above."""
    paired = result.get("parse_paired")
    if not paired:
        return []
    key = "cpu_s" if result.get("metric") == "cpu" else "total_s"
    rows = ["", "Paired check: median of the per-round ratios (the i-th runs of two contenders ran back to "
            "back, so both saw the same machine load). Targets use the ratios of medians above.", "",
            "| shape | warm stepcab/python, paired | cold stepcab/dag-factory, paired | pairs (warm / cold) |",
            "|---|---|---|---|"]
    for shape, by in paired.items():
        w, c = by.get("warm/python", {}), by.get("cold/dagfactory", {})
        rows.append(f"| {shape} | {_fmt(w.get(key), 2)}x | {_fmt(c.get(key), 2)}x | "
                    f"{w.get('pairs', 0)} / {c.get('pairs', 0)} |")
    return rows


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = ["# Parse and task benchmarks", "",
             f"Run {result['when']} ({result['duration_s']:.0f} s) on {m['platform']}, Python {m['python']}, "
             f"{m['cpus']} CPUs, load average at start {', '.join(f'{x:.1f}' for x in m['loadavg_at_start'])}; "
             f"Airflow {result['versions']['airflow']}, dag-factory {result['versions']['dag_factory']}.", "",
             "## DAG folder parse time", ""]
    lines += parse_table(result)
    tasks = result.get("tasks") or {}
    lines += ["", "## Task overhead", ""]
    if "error" in tasks:
        lines.append(f"failed: {tasks['error'][:500]}")
    if "dag_test" in tasks:
        d = tasks["dag_test"]
        lines += [f"`dag.test()` of {d['tasks']} chained `echo` tasks, median of {d['reps']}: stepcab native "
                  f"{d['stepcab_median_s']:.3f} s, BashOperator {d['bash_median_s']:.3f} s, ratio {d['ratio']:.2f}x "
                  f"({d['stepcab_per_task_ms']:.0f} vs {d['bash_per_task_ms']:.0f} ms per task)."]
    if "resolve" in tasks:
        r = tasks["resolve"]
        lines.append(f"Inside our code, per step of a {r['params']}-parameter cab (recipe cached, resolve + "
                     f"command line): {r['median_ms']:.1f} ms median ({r['first_ms']:.0f} ms for the first, "
                     "imports and load included).")
    slurm = result.get("slurm")
    if slurm is not None:
        lines += ["", "## Slurm (benchmarks/slurm_bench.py)", ""]
        lines += [slurm["table"]] if "table" in slurm else ["```", str(slurm)[:3000], "```"]
        if slurm.get("scale_table") or slurm.get("scale_error"):
            lines += ["", "## Many waiting Slurm tasks (benchmarks/slurm_local_bench.py)", ""]
            lines += [slurm.get("scale_table") or f"```\n{slurm['scale_error']}\n```"]
    if result.get("run_cli"):
        import run_bench

        lines += ["", "## `stepcab run` vs `stimela run` (run_bench.py)", ""]
        lines += run_bench.markdown(result["run_cli"], result["reps"])
    lines += ["", "## Targets", "", "| target | measured | limit | ok |", "|---|---|---|---|"]
    for t in result["targets"]:
        ok = "-" if t["ok"] is None else ("yes" if t["ok"] else "**no**")
        lines.append(f"| {t['target']} | {_fmt(t['measured'], 2)} {t['unit']} | {t['limit']} {t['unit']} | {ok} |")
    return "\n".join(lines) + "\n"
