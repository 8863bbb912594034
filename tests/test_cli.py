"""The stepcab command, run as a subprocess (python -m airflow_provider_stepcab)."""

import json
import subprocess
import sys

from recipe_helpers import DATA, line_of, write

GOOD, BAD = DATA / "good.yml", DATA / "bad.yml"


def stepcab(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "airflow_provider_stepcab", *map(str, args)],
                          capture_output=True, text=True, timeout=120, cwd=cwd)


def test_validate_good_file_exit_0():
    out = stepcab("validate", GOOD)
    assert out.returncode == 0, out.stdout + out.stderr
    # only notes: required inputs that nothing in the recipes sets (a for_loop's list, an auto-alias)
    assert out.stdout.splitlines() == [
        f"{GOOD}:{line_of(GOOD, 'items:')}: looped.inputs.items: note: required input 'items' needs a value "
        f"at run time: nothing in the recipe sets it (give it with -p items=... or in the trigger form)",
        f"{GOOD}:{line_of(GOOD, 'auto:')}: main.inputs.auto.msg: note: required input 'auto.msg' needs a "
        f"value at run time: nothing in the recipe sets it (give it with -p auto.msg=... or in the trigger form)",
    ]
    assert "1 file(s), 3 recipe(s): 0 error(s), 0 warning(s), 2 note(s)" in out.stderr


def test_validate_reports_every_problem_as_file_line_key_message():
    out = stepcab("validate", BAD)
    assert out.returncode == 1
    lines = out.stdout.splitlines()
    want = f"{BAD}:{line_of(BAD, 'ERR unknown cab')}: broken.steps.s-unknown-cab.cab: unknown cab 'nosuchcab'"
    assert want in lines
    assert f"{BAD}:{line_of(BAD, 'ERR wrong dtype')}: broken.steps.s-dtype.params.n: " in out.stdout
    assert len([x for x in lines if ": warning: " not in x]) >= 10


def test_validate_warnings_only_exit_0_and_strict_exit_1(tmp_path):
    f = write(tmp_path, "w.yml", "r:\n  steps:\n    s:\n      cab: {command: x}\n      backend:\n"
                                 "        singularity: {auto_update: true}\n")
    out = stepcab("validate", f)
    assert out.returncode == 0 and f"{f}:6: r.steps.s.backend.singularity.auto_update: warning:" in out.stdout
    assert stepcab("validate", "--strict", f).returncode == 1


def test_validate_folder_keeps_going_after_a_broken_file():
    out = stepcab("validate", DATA)
    assert out.returncode == 1
    assert "broken_yaml.yml:2: invalid YAML" in out.stdout
    assert "bad.yml" in out.stdout  # the other files were still reported


def test_plan_text_and_params():
    out = stepcab("plan", GOOD, "-p", "auto.msg=hello world", "-p", "count=3")
    assert out.returncode == 0, out.stderr
    assert "main.first  (cab: echo, backend: native)" in out.stdout
    assert "argv: echo --n 3 out.txt" in out.stdout
    assert "argv: echo --n 1 'hello world'" in out.stdout


def test_plan_json():
    out = stepcab("plan", GOOD, "--recipe", "looped", "-p", "items=[x, y, z]", "--json", "--backend", "native")
    assert out.returncode == 0, out.stderr
    d = json.loads(out.stdout)
    assert d["recipe"] == "looped"
    assert [s["name"] for s in d["steps"]] == ["looped.0.show", "looped.1.show", "looped.2.show"]
    assert d["steps"][2]["argv"] == ["echo", "--n", "1", "z-2"]
    assert all(s["backend"] == "native" for s in d["steps"])


def test_plan_missing_param_exit_1_with_location():
    out = stepcab("plan", GOOD)
    assert out.returncode == 1
    assert f"{GOOD}:{line_of(GOOD, '    auto:')}: main.auto.msg: missing required parameter 'auto.msg'" in out.stderr


def test_plan_bad_file_exit_1():
    out = stepcab("plan", BAD)
    assert out.returncode == 1 and "unknown cab 'nosuchcab'" in out.stderr


def test_doc_cab_and_recipe():
    out = stepcab("doc", "echo", GOOD)
    assert out.returncode == 0, out.stderr
    assert "cab 'echo' (command: echo)" in out.stdout
    header = next(line for line in out.stdout.splitlines() if line.strip().startswith("name"))
    assert header.split() == ["name", "dtype", "required", "default", "info"]
    assert any(line.split()[:3] == ["msg", "str", "yes"] for line in out.stdout.splitlines() if line.strip())
    out = stepcab("doc", "main", GOOD)
    assert out.returncode == 0 and "recipe 'main'" in out.stdout and "auto.msg" in out.stdout


def test_doc_unknown_name():
    out = stepcab("doc", "nothing", GOOD)
    assert out.returncode == 1 and "neither a cab nor a recipe" in out.stderr


def test_cli_module_does_not_import_airflow():
    code = "import sys, airflow_provider_stepcab.cli; print('airflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False"
