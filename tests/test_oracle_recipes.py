"""Whole recipes: the command lines ``stepcab plan`` gives equal what Stimela 2.1.4 itself runs.

Stimela runs in its own venv (``make oracle``) with recorders in place of the cabs' executables
(tests/oracle/stimela_recipe.py); both tools see the same files, laid out the same way.

* ``../shared/corpus/patterns/``: the evaluation-order rules (``assign`` per step with its
  ``info``, ``assign`` ⇄ ``assign_based_on``, a required input filled by ``assign_based_on``),
  checked against the commands listed in ``patterns/EXPECTED.md`` and against the live oracle.
* ``omstimelation-cc021/ddf-mosaic.yaml`` (``mosaic``, ``obs=M2``): a real DDFacet/killMS mosaic
  pipeline; every command Stimela runs, step by step, argv for argv.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from needs import missing

from airflow_provider_stepcab.plan.steps import plan_recipe
from airflow_provider_stepcab.recipe.api import load_recipe

ROOT = Path(__file__).resolve().parents[1]
ORACLE = ROOT / "tests" / "oracle" / "stimela_recipe.py"
CORPUS = Path(os.environ.get("STEPCAB_CORPUS", ROOT.parent / "shared" / "corpus"))
PATTERNS = CORPUS / "patterns"


def _corpus_or_fail() -> None:
    if not PATTERNS.is_dir():
        missing(f"shared corpus missing: {PATTERNS}")


def _oracle_python() -> str:
    script = ROOT / "scripts" / "oracle-venv.sh"
    proc = subprocess.run(["bash", str(script)], capture_output=True, text=True)
    if proc.returncode != 0:
        missing(f".oracle-venv (stimela 2.1.4) could not be built: {proc.stderr.strip()[-300:]}")
    return os.path.join(os.environ.get("ORACLE_VENV", str(ROOT / ".oracle-venv")), "bin", "python")


def stimela_calls(tmp_path: Path, spec: dict) -> list:
    """Every command Stimela 2.1.4 runs for ``spec`` (see tests/oracle/stimela_recipe.py)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    spec_file, out_file = tmp_path / "oracle-spec.json", tmp_path / "oracle-out.json"
    spec_file.write_text(json.dumps(spec))
    subprocess.run([_oracle_python(), str(ORACLE), str(spec_file), str(out_file)], check=True, timeout=600)
    result = json.loads(out_file.read_text())
    assert result["rc"] == 0, f"Stimela failed: {result['log'][-3000:]}"
    return result["calls"]


def expected_table() -> list:
    """(file, recipe, step, command) rows of patterns/EXPECTED.md."""
    rows = []
    for line in (PATTERNS / "EXPECTED.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].endswith(".yml"):
            command = re.match(r"`([^`]*)`", cells[3])
            rows.append((cells[0], cells[1], cells[2], command.group(1)))
    return rows


def planned(files: list, recipe: str, params: dict, cwd: str, failing: tuple = ()) -> list:
    """The plan's steps; ``failing``: paths of steps whose command line is expected not to build."""
    rec, loaded = load_recipe([str(f) for f in files], recipe)
    plan = plan_recipe(rec, loaded, params, cwd=cwd)
    errors = [p for p in plan.problems.errors if not any(".steps.".join(f) in p.key for f in failing)]
    assert not errors, [str(p) for p in errors]
    return plan.steps


@pytest.mark.parametrize("row", expected_table() if PATTERNS.is_dir() else [], ids=lambda r: f"{r[0]}:{r[2]}")
def test_pattern_plans_as_expected(row, tmp_path):
    _corpus_or_fail()
    file, recipe, label, command = row
    steps = {s.path[-1]: s for s in planned([PATTERNS / file], recipe, {}, str(tmp_path))}
    assert steps[label].argv == command.split(" ", 1), steps[label].unresolved


def test_patterns_table_is_read():
    _corpus_or_fail()
    assert {r[0] for r in expected_table()} == {p.name for p in PATTERNS.glob("*.yml")}


@pytest.mark.parametrize("name", sorted(p.name for p in PATTERNS.glob("*.yml")) if PATTERNS.is_dir() else [])
def test_pattern_matches_live_stimela(name, tmp_path):
    _corpus_or_fail()
    recipe = {r[0]: r[1] for r in expected_table()}[name]
    calls = stimela_calls(tmp_path, {"files": [str(PATTERNS / name)], "recipe": recipe, "executables": ["echo"]})
    steps = planned([PATTERNS / name], recipe, {}, str(tmp_path))
    assert [s.argv for s in steps if s.skip is not True] == calls


# ------------------------------------------------------------------------------------ ddf-mosaic
MS_LIST = ["msdir/1562500862_sdp_l0-A3556_corr.ms", "msdir/1562500862_sdp_l0-A3562-corr.ms"]


def mosaic_copy(dest: Path) -> Path:
    """The cult-cargo 0.2.1 variant of ddf-mosaic with the edits Stimela 2.1.4 needs to *run* it
    (``stimela run -d`` accepts it as is, but a real run stops at the first of these):

    * ``assign_based_on: run.node`` — not a known config item at run time (``config.run.node`` was meant);
    * ``log.dir: ...{run.datetime}`` — likewise ``config.run.datetime``;
    * ``steps.mask-*.mask`` — cult-cargo 0.2.1's breizorro names that output ``outfile``;
    * ``previous.Data-ColName``-style names — the parameters are ``Data.ColName`` in 0.2.1.
    """
    src = CORPUS / "omstimelation-cc021"
    shutil.copytree(src, dest)
    for name in ("ddf-mosaic.yaml", "ddf-mosaic-lib.yaml"):
        text = (dest / name).read_text()
        if name == "ddf-mosaic.yaml":
            start, end = text.index("    run.node:"), text.index("    obs:\n      M1:")
            text = text[:start] + text[end:]
        text = text.replace("{run.datetime}", "{config.run.datetime}")
        text = re.sub(r"mask-(di\d)\.mask", r"mask-\1.outfile", text)
        text = re.sub(r"((?:previous|steps\.[\w-]+)\.)([A-Z]\w*)-([A-Z]\w*)", r"\1\2.\3", text)
        (dest / name).write_text(text)
    return dest / "ddf-mosaic.yaml"


def test_ddf_mosaic_every_step_as_stimela_runs_it(tmp_path):
    _corpus_or_fail()
    recipe_file = mosaic_copy(tmp_path / "recipes")
    # the second phase of the pipeline (its docs: clustercat is made once, by hand, first)
    touch = ["m2-ds9.reg", "mos2/ClusterCat.npy"]
    spec = {"files": [str(recipe_file)], "recipe": "mosaic", "params": {"obs": "M2", "dir_out": "mos2"},
            "executables": ["DDF.py", "kMS.py", "MakeModel.py", "cp", "breizorro", "goquartical"],
            "venvs": [".venv/ddf"], "dirs": [f"../{m}" for m in MS_LIST], "touch": touch,
            "creates": {"DDF.py": {"--Output-Name": ["{}.app.restored.fits", "{}.dirty.fits", "{}.DicoModel"]},
                        "breizorro": {"--outfile": ["{}"]}}}
    calls = stimela_calls(tmp_path / "oracle", spec)
    # the same layout for us: <scratch>/work is the run directory, the MSs in <scratch>/msdir
    scratch = tmp_path / "ours"
    work = scratch / "work"
    for m in MS_LIST:
        (scratch / m).mkdir(parents=True)
    # clustercat.copy_model cannot run in Stimela 2.1.4 either: its required output ``dest`` is a
    # Union[File, Directory], which is not a named output, so it never reaches the command line
    steps = planned([recipe_file], "mosaic", {"obs": "M2", "dir_out": "mos2"}, str(work),
                    failing=(("clustercat", "copy_model"),))
    assert len(steps) == 22
    # what Stimela skipped: explicit skips, and clustercat (its output exists)
    ran = [s for s in steps if s.skip is not True and s.path[0] != "clustercat"]
    oracle_root = re.compile(r"/tmp/stepcab-oracle-recipe-[^/]+")
    theirs = [[oracle_root.sub(str(scratch), a) for a in c] for c in calls]
    ours = [[os.path.basename(s.argv[0])] + s.argv[1:] for s in ran]
    assert [s.path for s in ran][:3] == [("image-pre",), ("image-di2",), ("mask-di2",)]
    assert len(ours) == len(theirs) == 10
    for step, mine, stimela in zip(ran, ours, theirs):
        assert mine == stimela, step.name
    names = [c[c.index("--Output-Name") + 1] for c in ours if "--Output-Name" in c]
    assert names == ["mos2/impre/impre", "mos2/imdi2/imdi2", "mos2/imdi3/imdi3", "mos2/imdi4/imdi4",
                     "mos2/imdi5/imdi5", "mos2/imdd1/imdd1"]


def test_required_input_filled_by_assign_based_on_is_not_missing():
    _corpus_or_fail()
    rec, loaded = load_recipe([str(PATTERNS / "based-on-fills-required-input.yml")], "mosaic")
    plan = plan_recipe(rec, loaded, {})
    assert not plan.problems.errors
    assert plan.steps[0].argv == ["echo", "mos2/impre"]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX paths")
def test_path_params_are_written_as_stimela_does(tmp_path):
    from airflow_provider_stepcab.recipe.paths import normalise_path

    cwd = str(tmp_path / "run")
    assert normalise_path("./data/input.txt", cwd) == "data/input.txt"
    assert normalise_path("data/", cwd) == "data"
    assert normalise_path("../msdir/a.ms", cwd) == str(tmp_path / "msdir" / "a.ms")
    assert normalise_path(cwd + "/x/../y.fits", cwd) == "y.fits"
    assert normalise_path("s3://bucket/a.ms", cwd) == "s3://bucket/a.ms"


# ----------------------------------------------------------------- the same through stepcab run
def _layout():
    import importlib.util

    spec = importlib.util.spec_from_file_location("stimela_recipe", ORACLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def stepcab_run_calls(scratch: Path, spec: dict, *args: str) -> list:
    """Every command ``stepcab run`` (real Airflow, ``dag.test``) executes in the layout Stimela got."""
    proc, calls = stepcab_run(scratch, spec, *args)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return calls


def stepcab_run(scratch: Path, spec: dict, *args: str) -> tuple:
    """``(completed process, commands executed)`` of ``stepcab run`` in the layout Stimela got."""
    layout = _layout()
    scratch.mkdir(parents=True)
    cwd, env_vars = layout.prepare(str(scratch), spec)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(env_vars, STEPCAB_AIRFLOW_HOME=str(scratch / ".airflow"))
    cmd = [sys.executable, "-m", "airflow_provider_stepcab.run_cli", *spec["files"]]
    if spec.get("recipe"):
        cmd += ["--recipe", spec["recipe"]]
    for name, value in (spec.get("params") or {}).items():
        cmd += ["-p", f"{name}={value}"]
    proc = subprocess.run(cmd + list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    return proc, layout.recorded(env_vars)


@pytest.mark.airflow
def test_patterns_through_stepcab_run(tmp_path):
    _corpus_or_fail()
    for name in sorted(p.name for p in PATTERNS.glob("*.yml")):
        rows = [r for r in expected_table() if r[0] == name]
        spec = {"files": [str(PATTERNS / name)], "recipe": rows[0][1], "executables": ["echo"]}
        calls = stepcab_run_calls(tmp_path / name, spec)
        assert calls == [r[3].split(" ", 1) for r in rows], name
@pytest.mark.airflow
def test_ddf_mosaic_through_stepcab_run_as_stimela_runs_it(tmp_path):
    _corpus_or_fail()
    recipe_file = mosaic_copy(tmp_path / "recipes")
    spec = {"files": [str(recipe_file)], "recipe": "mosaic", "params": {"obs": "M2", "dir_out": "mos2"},
            "executables": ["DDF.py", "kMS.py", "MakeModel.py", "cp", "breizorro", "goquartical"],
            "venvs": [".venv/ddf"], "dirs": [f"../{m}" for m in MS_LIST],
            "touch": ["m2-ds9.reg", "mos2/ClusterCat.npy"],
            "creates": {"DDF.py": {"--Output-Name": ["{}.app.restored.fits", "{}.dirty.fits", "{}.DicoModel"]},
                        "breizorro": {"--outfile": ["{}"]}}}
    spec_file, out_file = tmp_path / "spec.json", tmp_path / "out.json"
    spec_file.write_text(json.dumps(spec))
    subprocess.run([_oracle_python(), str(ORACLE), str(spec_file), str(out_file)], check=True, timeout=600)
    oracle = json.loads(out_file.read_text())
    assert oracle["rc"] == 0, oracle["log"][-3000:]
    ours = stepcab_run_calls(tmp_path / "ours", spec, "--backend", "native")
    token = lambda calls, root: [[a.replace(root, "<scratch>") for a in c] for c in calls]  # noqa: E731
    theirs = token(oracle["calls"], oracle["scratch"])
    mine = token(ours, str(tmp_path / "ours"))
    assert len(theirs) == 10
    assert [c[0] for c in mine] == [c[0] for c in theirs]
    for index, (a, b) in enumerate(zip(mine, theirs)):
        assert a == b, index


# ------------------------------------------------------------------- dynamic schema (quartical)
QUARTICAL = """\
_include:
  - (cultcargo)quartical.yml
cal:
  steps:
    solve:
      cab: quartical
      params: {input_ms.path: a.ms, solver.terms: [K, G], K.type: delay, K.direction_dependent: true,
               G.time_interval: 4, G: {freq_interval: 2}}
"""


@pytest.fixture(scope="module")
def quartical(tmp_path_factory) -> tuple:
    """``(spec, calls)``: the quartical recipe and what Stimela 2.1.4 runs for it (run once)."""
    _corpus_or_fail()
    if importlib.util.find_spec("cultcargo") is None:
        missing("cult-cargo is not installed")
    tmp_path = tmp_path_factory.mktemp("quartical")
    path = tmp_path / "quartical.yml"
    path.write_text(QUARTICAL)
    spec = {"files": [str(path)], "recipe": "cal", "executables": ["goquartical"], "dirs": ["a.ms"]}
    return spec, stimela_calls(tmp_path / "oracle", spec)


def test_quartical_term_params_are_planned_as_stimela_runs_them(quartical, tmp_path):
    """The hook's ``K.*``/``G.*`` params (given, nested ``G: {...}``, and the defaults it brings)
    reach the command line in Stimela's order."""
    spec, calls = quartical
    (step,) = planned(spec["files"], "cal", {}, str(tmp_path))
    assert step.argv == calls[0]
    assert {"K.type=delay", "K.direction_dependent=True", "G.time_interval=4", "G.freq_interval=2",
            "G.type=complex"} <= set(step.argv)


@pytest.mark.airflow
def test_quartical_term_params_through_stepcab_run(quartical, tmp_path):
    spec, calls = quartical
    assert stepcab_run_calls(tmp_path / "ours", spec, "--backend", "native") == calls


# ------------------------------------------------------------------------ nested for_loops
NESTED_LOOPS = """\
cabs:
  say:
    command: echo
    inputs:
      scan: {dtype: int, policies: {positional: true}}
      stokes: {dtype: str, policies: {positional: true}}
pol-one-scan:
  inputs:
    scan: {dtype: int}
    pols: {dtype: "List[str]", default: [I, Q, U]}
  for_loop: {var: stokes, over: pols}
  steps:
    image: {cab: say, params: {scan: =recipe.scan, stokes: =recipe.stokes}}
jove-pol-loop:
  inputs:
    scans: {dtype: "List[int]", default: [3, 5]}
  for_loop: {var: scan, over: scans}
  steps:
    pre: {cab: say, params: {scan: =recipe.scan, stokes: X}}
    pol: {recipe: pol-one-scan, params: {scan: =recipe.scan}}
    post: {cab: say, params: {scan: =recipe.scan, stokes: "after-{steps.pol.scan}"}}
"""


def test_nested_loops_are_planned_per_outer_and_inner_iteration_as_stimela_runs_them(tmp_path):
    """scans × Stokes (like parrot-stew's jove-pol-loop): every (outer, inner) iteration with its
    values, in Stimela's order."""
    path = tmp_path / "nested.yml"
    path.write_text(NESTED_LOOPS)
    for params in ({}, {"scans": [7]}):
        calls = stimela_calls(tmp_path / f"oracle{len(params)}", {
            "files": [str(path)], "recipe": "jove-pol-loop", "executables": ["echo"],
            "params": {k: json.dumps(v) for k, v in params.items()}})
        steps = planned([path], "jove-pol-loop", params, str(tmp_path))
        assert [s.argv for s in steps] == calls
    assert [s.name for s in planned([path], "jove-pol-loop", {}, str(tmp_path))][:5] == [
        "jove-pol-loop.0.pre", "jove-pol-loop.0.pol.0.image", "jove-pol-loop.0.pol.1.image",
        "jove-pol-loop.0.pol.2.image", "jove-pol-loop.0.post"]


def test_nested_loop_inside_a_loop_with_run_time_values_is_an_error_naming_the_line(tmp_path):
    path = tmp_path / "nested.yml"
    path.write_text(NESTED_LOOPS.replace('default: [3, 5]}', 'default: "=GLOB(scan*)"}'))
    rec, loaded = load_recipe([str(path)], "jove-pol-loop")
    problems = plan_recipe(rec, loaded, {}).problems
    (error,) = problems.errors
    line = NESTED_LOOPS.splitlines().index("  for_loop: {var: stokes, over: pols}") + 1
    assert (error.loc.file, error.loc.line) == (str(path), line) and error.key == "jove-pol-loop.steps.pol.recipe.for_loop"
    assert "known only at run time" in error.message
    (warning,) = [p for p in problems if p.code == "loop-unresolved"]
    assert "'scans'" in warning.message and "planned once" in warning.message


@pytest.mark.airflow
def test_nested_loops_through_stepcab_run_as_stimela_runs_them(tmp_path):
    """The outer loop (a literal list) is unrolled into a TaskGroup per scan, the inner one (Stokes,
    from an input's default) mapped inside each: every command Stimela runs, in its order."""
    path = tmp_path / "nested.yml"
    path.write_text(NESTED_LOOPS.replace("over: scans}", "over: [3, 5]}"))
    spec = {"files": [str(path)], "recipe": "jove-pol-loop", "executables": ["echo"]}
    theirs = stimela_calls(tmp_path / "oracle", spec)
    assert len(theirs) == 10
    ours = stepcab_run_calls(tmp_path / "ours", spec)
    # per scan, in order: pre, the three Stokes (mapped instances: Airflow picks their order), post
    for scan in range(2):
        mine, stimela = ours[5 * scan:5 * scan + 5], theirs[5 * scan:5 * scan + 5]
        assert [mine[0], sorted(mine[1:4]), mine[4]] == [stimela[0], sorted(stimela[1:4]), stimela[4]]


@pytest.mark.airflow
def test_quartical_term_params_given_at_trigger_time_as_stimela_takes_them(quartical, tmp_path):
    """Term params that only the hook adds, given for the run (``stimela run ... solve.K.time_interval=2``):
    through the run conf's ``steps.solve.params`` and as a ``-p solve.G.time_interval=8`` parameter,
    the command line Stimela runs."""
    spec, _ = quartical
    given = {"solve.K.time_interval": "2", "solve.G.time_interval": "8"}
    theirs = stimela_calls(tmp_path / "oracle", {**spec, "params": given})
    assert {"K.time_interval=2", "G.time_interval=8"} <= set(theirs[0])
    conf = json.dumps({"steps": {"solve": {"params": {"K.time_interval": 2}}}})
    ours = stepcab_run_calls(tmp_path / "ours", {**spec, "params": {"solve.G.time_interval": "8"}},
                             "--backend", "native", "--conf", conf)
    assert ours == theirs


@pytest.mark.airflow
def test_nested_loops_over_an_input_default_through_stepcab_run_as_stimela_runs_them(tmp_path):
    """``over: scans`` (default ``[3, 5]``) holding the Stokes loop: the DAG unrolls the scans at
    parse time. ``stepcab run -p scans=[7]`` re-parses with that value and runs what Stimela runs
    for ``scans=[7]``; a run conf giving another value to the DAG made for the default fails before
    any step runs, saying why."""
    path = tmp_path / "nested.yml"
    path.write_text(NESTED_LOOPS)
    spec = {"files": [str(path)], "recipe": "jove-pol-loop", "executables": ["echo"]}

    def per_scan(calls: list) -> list:  # mapped Stokes instances: Airflow picks their order
        return [[c[0], sorted(c[1:4]), c[4]] for c in (calls[i:i + 5] for i in range(0, len(calls), 5))]

    theirs = stimela_calls(tmp_path / "oracle", spec)
    assert len(theirs) == 10
    assert per_scan(stepcab_run_calls(tmp_path / "ours", spec)) == per_scan(theirs)
    given = {**spec, "params": {"scans": "[7]"}}
    theirs = stimela_calls(tmp_path / "oracle7", given)
    assert len(theirs) == 5 and theirs[0] == ["echo", "7", "X"]
    assert per_scan(stepcab_run_calls(tmp_path / "ours7", given)) == per_scan(theirs)
    proc, ran = stepcab_run(tmp_path / "conf7", spec, "--conf", json.dumps({"scans": [7]}))
    assert proc.returncode != 0 and ran == []
    assert "conf.scans: [7] differs from the recipe's default [3, 5]" in proc.stdout + proc.stderr
    assert "use `stepcab run`, which re-parses the recipe" in proc.stdout + proc.stderr
