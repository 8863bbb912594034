"""How loading one recipe file scales with its size (issue 15): 2.5, 5, 10 and 20 MB.

Usage: ``python benchmarks/size_bench.py [--sizes 2.5,5,10,20] [--reps 3] [--profile 20]``.

Each size is the same shape as ``tests/hostile_files.py``'s ``huge`` file (one recipe with a long
list of steps, ``{cab: c, params: {x: 1}}`` each), loaded with the size cap raised
(``STEPCAB_MAX_FILE_SIZE=64M``) in a fresh interpreter: once the YAML loader alone
(``load_yaml_file``), once the whole load (``load_file``: directives, interpolation, the recipe
model and its checks). Printed: CPU seconds (median of ``--reps``), seconds per MB and, for each
size, how many times the time of the smallest size it took against how many times the bytes (a
linear loader keeps the two ratios equal), and the child's peak RSS. ``--profile MB`` prints the top of a cProfile of the
whole load of that size instead.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

CHILD = r'''
import json, sys, time
stage, path = sys.argv[1], sys.argv[2]
from airflow_provider_stepcab.recipe.api import load_file
from airflow_provider_stepcab.recipe.yamlio import load_yaml_file
start = time.process_time()
if stage == "yaml":
    tree = load_yaml_file(path)
    steps = len(tree["huge"]["steps"])
    errors = []
else:
    result = load_file(path, persist=False)
    steps = len(result.recipes["huge"].steps) if "huge" in result.recipes else 0
    errors = [str(p) for p in result.problems.errors][:3]
import resource
print(json.dumps({"cpu": time.process_time() - start, "steps": steps, "errors": errors,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
'''

PROFILE = r'''
import cProfile, pstats, sys
from airflow_provider_stepcab.recipe.api import load_file
cProfile.run("load_file(sys.argv[1], persist=False)", sys.argv[1] + ".prof")
pstats.Stats(sys.argv[1] + ".prof").sort_stats("cumulative").print_stats(40)
'''


def write_recipe(path: str, size: int) -> int:
    """A recipe of about ``size`` bytes (the shape of the hostile ``huge`` file); returns its steps."""
    step = "   s{0:07d}: {{cab: c, params: {{x: 1}}}}\n"
    with open(path, "w") as fh:
        fh.write("cabs:\n  c: {command: echo, inputs: {x: {dtype: int}}}\nhuge:\n  steps:\n")
        written, i = 0, 0
        while written < size:
            line = step.format(i)
            fh.write(line)
            written += len(line)
            i += 1
    return i


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=REPO, STEPCAB_MAX_FILE_SIZE="64M", STEPCAB_RECIPE_FOLDERS="",
                AIRFLOW__STEPCAB__RECIPE_FOLDERS="")


def measure(path: str, stage: str, reps: int) -> dict:
    runs = []
    for _ in range(reps):
        out = subprocess.run([sys.executable, "-c", CHILD, stage, path], capture_output=True, text=True,
                             env=_env(), timeout=1800, check=True)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {"cpu": statistics.median(r["cpu"] for r in runs), "runs": [r["cpu"] for r in runs],
            "rss_mb": max(r.get("rss_mb", 0) for r in runs),
            "steps": runs[0]["steps"], "errors": runs[0]["errors"]}


def main(argv: list | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="2.5,5,10,20", help="MB, comma-separated")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--stages", default="yaml,load", help="yaml (the YAML loader), load (load_file)")
    p.add_argument("--profile", type=float, default=None, help="cProfile the whole load of this size (MB)")
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="stepcab-size-") as work:
        if args.profile:
            path = os.path.join(work, "huge.yml")
            write_recipe(path, int(args.profile * 1024 * 1024))
            subprocess.run([sys.executable, "-c", PROFILE, path], env=_env(), check=True)
            return 0
        sizes = [float(s) for s in args.sizes.split(",")]
        results: dict = {}
        print("| stage | MB | steps | CPU s (median) | s/MB | time ratio | size ratio | peak RSS MB |")
        print("|---|---|---|---|---|---|---|---|")
        for stage in args.stages.split(","):
            base = None
            for mb in sizes:
                path = os.path.join(work, f"huge_{mb}.yml")
                if not os.path.exists(path):
                    write_recipe(path, int(mb * 1024 * 1024))
                r = measure(path, stage, args.reps)
                if r["errors"]:
                    print(f"errors loading {mb} MB: {r['errors']}", file=sys.stderr)
                base = base or (mb, r["cpu"])
                results[f"{stage}/{mb}"] = r
                print(f"| {stage} | {mb:g} | {r['steps']} | {r['cpu']:.2f} | {r['cpu'] / mb:.3f} | "
                      f"{r['cpu'] / base[1]:.2f}x | {mb / base[0]:.2f}x | {r['rss_mb']:.0f} |", flush=True)
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(results, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
