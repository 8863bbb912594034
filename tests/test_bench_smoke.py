"""Smoke test of the benchmark suite (``benchmarks/``, ``make bench``) so it cannot rot.

Generates a tiny workload (2 files x 3 steps) for every contender, checks that the stepcab recipes
load cleanly, and runs one real parse measurement of the stepcab folder in a fresh interpreter
(cold, then warm from the persistent recipe cache) plus the report code on that result. dag-factory
is not installed in the main venv, so only the generated YAML of that contender is checked here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "benchmarks"
sys.path.insert(0, str(BENCH))

import bench  # noqa: E402
import report  # noqa: E402
import workload  # noqa: E402


def test_workload_shapes(tmp_path):
    paths = workload.write_shape(str(tmp_path), 2, 3)
    step = Path(paths["stepcab"])
    assert sorted(p.name for p in step.glob("*.yml")) == ["bench_2x3_000.yml", "bench_2x3_001.yml"]
    assert (step / "lib" / "cabs.yml").is_file() and (step / "stepcab_dags.py").is_file()
    cab_text = (step / "lib" / "cabs.yml").read_text()
    assert cab_text.count("policies:") > 10 and "wranglers:" in cab_text
    import yaml

    df = yaml.safe_load((Path(paths["dagfactory"]) / "bench_2x3_000.yml").read_text())
    tasks = df["bench_2x3_000"]["tasks"]
    assert [t["task_id"] for t in tasks] == ["step-0000", "step-0001", "step-0002"]
    assert tasks[2]["dependencies"] == ["step-0001"] and tasks[0]["operator"].endswith("BashOperator")
    py = (Path(paths["python"]) / "bench_2x3_001.py").read_text()
    compile(py, "bench_2x3_001.py", "exec")
    assert py.count("BashOperator(") == 3 and "t1 >> t2" in py


def test_generated_recipes_load_cleanly(tmp_path):
    from airflow_provider_stepcab.recipe.api import load_file

    paths = workload.write_shape(str(tmp_path), 1, 12)
    result = load_file(os.path.join(paths["stepcab"], "bench_1x12_000.yml"))
    assert not result.problems.errors, [str(p) for p in result.problems.errors]
    recipe = next(iter(result.recipes.values()))
    assert len(recipe.steps) == 12
    assert all(10 <= len(s.cab.inputs) <= 30 for s in recipe.steps.values())


def test_cab_sizes():
    assert all(10 <= len(c.inputs) <= 30 for c in workload.make_cabs())


@pytest.mark.airflow
def test_one_parse_measurement_and_report(tmp_path):
    paths = workload.write_shape(str(tmp_path / "dags"), 2, 3)
    env = bench._env(str(tmp_path), str(tmp_path / "cache"))
    runs = {}
    for mode in ("cold", "warm"):
        proc = subprocess.run([sys.executable, str(BENCH / "parse_child.py"), paths["stepcab"]], env=env,
                              text=True, capture_output=True, timeout=300)
        line = [x for x in proc.stdout.splitlines() if x.startswith("BENCH_RESULT ")]
        assert line, proc.stderr[-2000:]
        runs[mode] = bench.json.loads(line[-1].split(" ", 1)[1])
    for r in runs.values():
        assert r["dags"] == 2 and r["tasks"] == 6 and not r["import_errors"], r
    assert list((tmp_path / "cache").rglob("*.pkl")), "the warm run should find the persistent recipe cache"
    raw = {"2x3": {"stepcab": {"cold": [runs["cold"]], "warm": [runs["warm"]]},
                   "dagfactory": {"cold": [], "warm": []}, "python": {"cold": [], "warm": []}}}
    result = {"when": "now", "duration_s": 1.0, "reps": 1, "metric": "wall",
              "machine": {"python": "3", "platform": "x", "cpus": 2, "loadavg_at_start": (0.0, 0.0, 0.0)},
              "versions": {"airflow": "3", "dag_factory": None}, "parse": bench.summarize_parse(raw),
              "tasks": None, "slurm": None}
    result["targets"] = report.evaluate_targets(result)
    md = report.markdown(result)
    assert "| 2x3 | 6 |" in md and "## Targets" in md


def test_paired_ratios_compare_runs_made_back_to_back():
    # round 1 ran on a slow moment (both contenders 2x slower), round 2 on a quiet one: the paired
    # ratio is 1.2 in both rounds, while the ratio of the medians mixes the two moments
    def run(t):
        return {"total_s": t, "cpu_s": t, "peak_rss_mb": 100.0, "tasks": 10, "dags": 1, "import_errors": {}}

    raw = {"1x10": {"stepcab": {"cold": [run(0.1)], "warm": [run(0.024), run(0.012), run(0.012)]},
                    "dagfactory": {"cold": [run(0.2)], "warm": []},
                    "python": {"cold": [], "warm": [run(0.020), run(0.010), {"error": "boom"}]}}}
    paired = bench.summarize_paired(raw)["1x10"]
    assert paired["warm/python"]["cpu_s"] == pytest.approx(1.2)
    assert paired["warm/python"]["pairs"] == 2, "a failed run pairs with nothing"
    assert paired["cold/dagfactory"]["total_s"] == pytest.approx(0.5)
    result = {"metric": "cpu", "reps": 1, "parse_paired": {"1x10": paired},
              "parse": bench.summarize_parse(raw)}
    text = "\n".join(report.paired_table(result))
    assert "| 1x10 | 1.20x | 0.50x | 2 / 1 |" in text


def test_rounds_interleave_the_contenders(tmp_path, monkeypatch):
    calls = []
    caches = {}

    def fake_child(script, args, env, timeout):
        contender = os.path.basename(args[0]).split("-")[0]
        calls.append(contender)
        caches.setdefault(contender, set()).add(env["STEPCAB_CACHE_DIR"])
        return {"error": "not run"}

    monkeypatch.setattr(bench, "run_child", fake_child)
    bench.parse_benchmark([(1, 2)], 2, str(tmp_path), 10, log=lambda *_: None)
    cold, warm = bench.runs_per_rep(2)
    per_rep = (cold + warm) * 3
    assert len(calls) == 2 * per_rep
    first = calls[:per_rep]
    # every round runs each contender once, in the same order within a repetition ...
    assert first == first[:3] * (cold + warm) and sorted(first[:3]) == ["dagfactory", "python", "stepcab"]
    # ... and the order rotates between repetitions
    assert calls[per_rep:per_rep + 3] != first[:3]
    # a cold run of one contender empties only its own cache: stepcab's warm runs stay warm
    assert len(caches["stepcab"]) == 1
    assert caches["stepcab"].isdisjoint(caches["python"] | caches["dagfactory"])


def test_run_bench_workloads_load_and_summarize(tmp_path):
    """benchmarks/run_bench.py: its recipes load cleanly (stepcab's copy with opts.airflow) and
    the summary and table are made from raw runs."""
    import run_bench

    from airflow_provider_stepcab.recipe.api import load_recipe_result

    files = run_bench.write_workloads(str(tmp_path))
    steps = {"7-step": 5, "50-step": 50, "dataflow": 4}
    for name, by in files.items():
        for contender, path in by.items():
            result = load_recipe_result(path, None)
            assert not result.problems.errors, [str(p) for p in result.problems.errors]
            assert len(result.recipe.steps) == steps[name]
        assert "parallel: dataflow" in Path(by["stepcab"]).read_text() or name != "dataflow"
    raw = {"7-step": {"stepcab": [{"wall_s": 4.0, "cpu_s": 3.0}, {"error": "exit 1"}],
                      "stimela": [{"wall_s": 2.0, "cpu_s": 2.0}, {"wall_s": 3.0, "cpu_s": 2.0}]}}
    summary = run_bench.summarize(raw)["7-step"]
    assert summary["ratio_wall_s"] == 4.0 / 2.5 and summary["paired_wall_s"] == 2.0
    assert "7-step" in "\n".join(run_bench.markdown({"7-step": summary}, 2))


def test_size_benchmark_runs_and_loads_its_recipes():
    out = subprocess.run([sys.executable, str(BENCH / "size_bench.py"), "--sizes", "0.05,0.1", "--reps", "1"],
                         capture_output=True, text=True, timeout=300, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert out.returncode == 0 and "errors loading" not in out.stderr, out.stderr[-2000:]
    rows = [line.split("|")[1:-1] for line in out.stdout.splitlines() if line.startswith("| yaml") or
            line.startswith("| load")]
    assert [(r[0].strip(), r[1].strip()) for r in rows] == [("yaml", "0.05"), ("yaml", "0.1"), ("load", "0.05"),
                                                           ("load", "0.1")]
    assert all(int(r[2]) > 1000 for r in rows)  # the steps were loaded
