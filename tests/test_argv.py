"""Tests for plan/argv.py: unit tests per rule, golden command lines from Stimela 2.1.4, live oracle."""

import glob
import json
import os
import subprocess
import sys

import pytest

from airflow_provider_stepcab.plan.argv import (
    CommandLineError, build_arguments, build_argv, fill_defaults, filter_params,
)
from airflow_provider_stepcab.plan.flavours import build_flavour_argv
from airflow_provider_stepcab.recipe.cab import apply_dynamic_schema, build_cab
from airflow_provider_stepcab.recipe.dynamic_schema import flatten_params
from airflow_provider_stepcab.recipe.errors import Problems, RecipeError
from airflow_provider_stepcab.recipe.model import POLICY_FIELDS
from airflow_provider_stepcab.recipe.yamlio import load_yaml_file, load_yaml_text

HERE = os.path.dirname(__file__)
ORACLE = os.path.join(HERE, "oracle")
GOLDEN = os.path.join(ORACLE, "golden")
ROOT = os.path.dirname(HERE)
POLICY_CABS = os.path.join(ORACLE, "cabs", "policies.yml")


def policy_cab(name):
    tree = load_yaml_file(POLICY_CABS)
    problems = Problems()
    cab = build_cab(name, tree["cabs"][name], f"cabs.{name}", problems)
    assert not problems, [str(p) for p in problems]
    return cab


def cab_of(text):
    problems = Problems()
    cab = build_cab("t", load_yaml_text(text, "t.yml"), "cabs.t", problems)
    assert not problems.errors, [str(p) for p in problems]
    return cab


def args_of(text, params):
    cab = cab_of(text)
    return build_arguments(cab, fill_defaults(cab, params))


def test_verified_example_line():
    """The line verified against Stimela 2.1.4 in the shared notes."""
    cab = cab_of("""
command: mytool --verbose
args: ["--fixed", "HEAD"]
policies: {prefix: "-", replace: {"_": "-"}}
inputs:
  ms: {dtype: MS, policies: {positional: true}}
  size: {dtype: "List[int]", policies: {repeat: list}}
  pol: {dtype: "List[str]", policies: {repeat: ","}}
  chans: {dtype: "List[int]", policies: {repeat: "[]"}}
  field: {dtype: "List[str]", policies: {repeat: repeat}}
  do_thing: bool
  expl: {dtype: bool, policies: {explicit_false: "no"}}
  kv: {dtype: int, policies: {key_value: true}}
  fmt: {dtype: float, policies: {format: "{0:.2f}"}}
  fl: {dtype: "List[int]", policies: {format_list: ["{0}x{1}"], repeat: list}}
  fls: {dtype: int, policies: {format_list_scalar: ["{0}", "{0}"], repeat: list}}
  spl: {dtype: str, policies: {split: ",", repeat: list}}
  alias: {dtype: str, nom_de_guerre: real-name}
outputs:
  out_file: File
""")
    params = dict(ms="a.ms", size=[10, 20], pol=["I", "Q"], chans=[1, 2], field=["f1", "f2"], do_thing=True,
                  expl=False, kv=5, fmt=3.14159, fl=[4, 5], fls=7, spl="a,b", alias="x", out_file="o.fits")
    assert " ".join(build_argv(cab, params)) == (
        "mytool --verbose --fixed HEAD -size 10 20 -pol I,Q -chans [1,2] -field f1 -field f2 -do-thing "
        "-expl no -kv=5 -fmt 3.14 -fl 4x5 -fls 7 7 -spl a b -real-name x -out-file o.fits a.ms")


def test_subst_applies_to_command_and_args():
    cab = cab_of("command: 'tool {x}'\nargs: ['{y}']\ninputs: {a: int}\n")
    assert build_argv(cab, {"a": 1}, subst=lambda s: s.format(x="X", y="Y")) == ["tool", "X", "Y", "--a", "1"]


@pytest.mark.parametrize("schema,params,expected", [
    ("a: bool", {"a": True}, ["--a"]),
    ("a: bool", {"a": False}, []),
    ("a: {dtype: bool, policies: {explicit_true: 'yes'}}", {"a": True}, ["--a", "yes"]),
    ("a: {dtype: bool, policies: {explicit_true: 'yes'}}", {"a": False}, []),
    ("a: {dtype: bool, policies: {key_value: true}}", {"a": False}, ["--a=False"]),
    ("a: {dtype: bool, policies: {key_value: true, explicit_true: '1'}}", {"a": True}, ["--a=1"]),
    ("a: {dtype: 'Optional[bool]'}", {"a": False}, ["--a", "False"]),  # not dtype 'bool': passed as text
    ("a: {dtype: bool, policies: {positional: true}}", {"a": True}, ["True"]),
    ("a: {dtype: bool, policies: {positional: true, explicit_false: 'n'}}", {"a": False}, ["False"]),
    ("a: int", {"a": None}, []),
    ("a: bool", {"a": None}, []),
    ("a: {dtype: 'List[int]', policies: {repeat: list}}", {"a": []}, ["--a"]),
    ("a: {dtype: 'List[int]', policies: {repeat: '[]'}}", {"a": []}, ["--a", "[]"]),
    ("a: {dtype: 'List[int]', policies: {repeat: repeat}}", {"a": []}, []),
    ("a: {dtype: 'List[int]', policies: {repeat: ','}}", {"a": []}, ["--a", ""]),
    ("a: {dtype: 'List[int]', policies: {repeat: '[]', positional: true}}", {"a": [1, 2]}, ["[1,2]"]),
    ("a: {dtype: 'List[int]', policies: {repeat: ':', positional: true}}", {"a": [1, 2]}, ["1:2"]),
    ("a: {dtype: 'List[int]', policies: {repeat: repeat, positional_head: true}}\nb: int",
     {"a": [1, 2], "b": 3}, ["1", "2", "--b", "3"]),
    ("a: {dtype: str, policies: {split: ' ', repeat: list}}", {"a": "x  y"}, ["--a", "x", "", "y"]),
    ("a: {dtype: str, policies: {format: '{0}@{b}'}}\nb: int", {"a": "x", "b": 2}, ["--a", "x@2", "--b", "2"]),
    ("a: {dtype: str, nom_de_guerre: n_g, policies: {replace: {'_': '-'}}}", {"a": "v"}, ["--n_g", "v"]),
    ("a_b: {dtype: str, policies: {replace: {'_': '-'}, prefix: ''}}", {"a_b": "v"}, ["a-b", "v"]),
    ("a: {dtype: 'Dict[str, int]', policies: {repeat: list}}", {"a": {"x": 1, "y": 2}}, ["--a", "x", "y"]),
    ("a: {dtype: 'Tuple[int, int]', policies: {repeat: ','}}", {"a": (1, 2)}, ["--a", "1,2"]),
])
def test_rules(schema, params, expected):
    text = "command: t\ninputs:\n" + "".join(f"  {line}\n" for line in schema.splitlines())
    assert args_of(text, params) == expected


def test_defaults_and_implicits_filled():
    cab = policy_cab("pol-all")
    filled = fill_defaults(cab, {"ms": "a.ms"})
    assert filled["dflt"] == "dv" and filled["dflt_int"] == 7  # cab defaults win over schema defaults
    assert filled["impl_in"] == "impl-value" and filled["out_impl"] == "x.fits"
    assert "size" not in filled


def test_skip_rules():
    cab = policy_cab("pol-all")
    values = filter_params(cab, fill_defaults(cab, {"skipme": "s", "out_str": "o", "out_str_forced": "f",
                                                    "out_file": "o.fits", "out_list": ["l"]}))
    assert "skipme" not in values and "impl_skipped" not in values and "impl_in" in values
    assert "out_str" not in values and values["out_str_forced"] == "f" and "out_file" in values
    assert "out_list" not in values and "out_impl" not in values and values["out_impl_forced"] == "y.fits"


def test_yaml_parameter_passing():
    cab = policy_cab("pol-yaml")
    assert build_argv(cab, {"a": 1, "b": ["x"], "c": "no", "o": "o.fits", "o2": "z"}) == \
        ["yamltool", "a: 1\nb:\n- x\no: o.fits\n"]


@pytest.mark.parametrize("cab_name,params,fragment,param", [
    ("pol-nolist", {"items": ["a"]}, "list-type parameter 'items' does not have a repeat policy set", "items"),
    ("pol-list-kv", {"items": ["a"]}, "repeat policy 'list' is incompatible with policy 'key_value'", "items"),
    ("pol-kv-repeat", {"items": ["a", "b"]}, "policy 'key_value' needs exactly one value", "items"),
    ("pol-required", {"opt": 4}, "required parameter 'need' is missing", "need"),
])
def test_errors(cab_name, params, fragment, param):
    cab = policy_cab(cab_name)
    with pytest.raises(CommandLineError) as exc:
        build_argv(cab, fill_defaults(cab, params))
    assert fragment in str(exc.value)
    assert isinstance(exc.value, RecipeError)
    assert exc.value.problems[0].loc.file == POLICY_CABS and exc.value.problems[0].loc.line > 0
    assert exc.value.param == param


def test_format_error_is_command_line_error():
    cab = cab_of("command: t\ninputs:\n  a: {dtype: str, policies: {format: '{nope}'}}\n")
    with pytest.raises(CommandLineError, match="formatting failed"):
        build_argv(cab, {"a": "x"})


def test_bool_needs_a_bool():
    cab = cab_of("command: t\ninputs:\n  a: bool\n")
    with pytest.raises(CommandLineError, match="bool value expected"):
        build_argv(cab, {"a": "yes"})


# ------------------------------------------------------------------------------- golden files
def stepcab_argv(record, cwd):
    """Our pipeline for one golden case: cab → (dynamic schema) → defaults → validate → argv."""
    problems = Problems()
    cab = build_cab(record["cab"], record["cab_def"], f"cabs.{record['cab']}", problems)
    if problems.errors:  # a cab Stimela rejects too (checked by check_record)
        raise ValueError(str(problems.errors[0]))
    params = record["params"]
    if cab.dynamic_schema:
        cab = apply_dynamic_schema(cab, params)
    params, _ = flatten_params(params, cab.schema)  # Stimela flattens with the (dynamic) schema
    values = fill_defaults(cab, params)
    validated = {}
    for name, value in values.items():
        schema = cab.schema.get(name)
        if schema is None:
            raise ValueError(f"unknown parameter '{name}'")
        validated[name] = schema.dtype.validate(value, cwd=cwd)
    if cab.flavour.kind != "binary":  # python / python-code (casa6 cabs too): Stimela's interpreter name
        return build_flavour_argv(cab, validated, python="python")
    return build_argv(cab, validated)


def golden_records():
    records = []
    for path in sorted(glob.glob(os.path.join(GOLDEN, "*.json"))):
        if os.path.basename(path) == "dtypes.json":
            continue
        with open(path) as fh:
            records.append(json.load(fh))
    return records


# Cases where we deliberately differ from Stimela 2.1.4 (checked against our own expectation instead)
DIVERGENCES = {
    "policies-yaml": ("Stimela 2.1.4 crashes on parameter_passing: yaml (yaml.safe_dump of an OrderedDict); "
                      "we pass the filtered values as one YAML argument",
                      ["yamltool", "a: 1\nb:\n- x\n- y\no: o.fits\n"]),
}


def check_record(record, cwd):
    if record["id"] in DIVERGENCES:
        assert "error" in record  # still what Stimela does
        assert stepcab_argv(record, cwd) == DIVERGENCES[record["id"]][1]
        return
    if "error" in record:
        with pytest.raises((CommandLineError, ValueError)):
            stepcab_argv(record, cwd)
    else:
        assert stepcab_argv(record, cwd) == record["argv"]


GOLDEN_RECORDS = golden_records()


def _policies_used(record):
    cab = record.get("cab_def") or {}
    used = set((cab.get("policies") or {}))
    for section in ("inputs", "outputs"):
        for schema in (cab.get(section) or {}).values():
            if isinstance(schema, dict):
                used |= {k for k, v in (schema.get("policies") or {}).items() if v is not None}
    return used


def test_golden_coverage():
    ids = {r["id"] for r in GOLDEN_RECORDS}
    assert len([i for i in ids if i.startswith("cc-")]) >= 24
    # every Stimela policy is exercised by a case that Stimela ran to a command line
    used = set().union(*(_policies_used(r) for r in GOLDEN_RECORDS if "argv" in r))
    assert used >= set(POLICY_FIELDS), set(POLICY_FIELDS) - used
    assert {"policies-all", "err-no-repeat", "err-list-key-value", "err-missing-required"} <= ids


@pytest.mark.parametrize("record", GOLDEN_RECORDS, ids=lambda r: r["id"])
def test_golden(record, tmp_path):
    check_record(record, str(tmp_path))


# --------------------------------------------------------------------------------- live oracle
def _oracle_python():
    script = os.path.join(ROOT, "scripts", "oracle-venv.sh")
    try:
        proc = subprocess.run(["bash", script], capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f".oracle-venv (stimela 2.1.4) could not be built: {exc}")
    if proc.returncode != 0:
        pytest.skip(f".oracle-venv (stimela 2.1.4) could not be built: {proc.stderr.strip()[-300:]}")
    return os.path.join(os.environ.get("ORACLE_VENV", os.path.join(ROOT, ".oracle-venv")), "bin", "python")


LIVE_IDS = ["policies-all", "policies-coerce", "policies-kv-nested", "policies-omegaconf", "err-no-repeat",
            "cc-breizorro", "cc-quartical-terms"]


@pytest.mark.skipif(sys.platform == "win32", reason="oracle needs a POSIX shell")
def test_live_oracle_matches(tmp_path):
    """Re-run Stimela 2.1.4 now on a few cases (own cabs + one cult-cargo cab) and compare with us."""
    python = _oracle_python()
    out = tmp_path / "golden"
    proc = subprocess.run([python, os.path.join(ORACLE, "stimela_argv.py"), os.path.join(ORACLE, "cases.yml"),
                           str(out), *LIVE_IDS], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for case_id in LIVE_IDS:
        with open(out / f"{case_id}.json") as fh:
            live = json.load(fh)
        with open(os.path.join(GOLDEN, f"{case_id}.json")) as fh:
            committed = json.load(fh)
        assert ("error" in live) == ("error" in committed), case_id
        assert live.get("argv") == committed.get("argv"), case_id
        check_record(live, str(tmp_path))
