"""Flavour command lines (python, python-code, casa-task) against Stimela 2.1.4.

The live oracle comparison runs Stimela itself from ``.oracle-venv`` (skipped when absent).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from airflow_provider_stepcab.plan import flavours
from airflow_provider_stepcab.plan.flavours import (
    FlavourError, build_flavour_argv, filter_input_params, validate_flavour,
)
from airflow_provider_stepcab.recipe.errors import Problems
from airflow_provider_stepcab.recipe.model import Cab, Flavour, Parameter, Policies

ROOT = Path(__file__).resolve().parents[1]
ORACLE_PY = ROOT / ".oracle-venv" / "bin" / "python"


def make_cab(spec: dict) -> Cab:
    """Our model Cab from the compact form also fed to the Stimela oracle."""

    def params(node, is_output):
        result = {}
        for name, p in (node or {}).items():
            p = {"dtype": p} if isinstance(p, str) else dict(p)
            kw = dict(name=name, dtype_str=p.get("dtype", "str"), is_output=is_output,
                      policies=Policies(**p.get("policies", {})), nom_de_guerre=p.get("nom_de_guerre"))
            if "implicit" in p:
                kw["implicit"] = p["implicit"]
            result[name] = Parameter(**kw)
        return result

    flav = spec.get("flavour", "binary")
    if isinstance(flav, str):
        flav = {"kind": flav}
    flav = dict(flav)
    kind = flav.pop("kind")
    return Cab(name=spec["name"], command=spec["command"], flavour=Flavour(kind, flav),
               inputs=params(spec.get("inputs"), False), outputs=params(spec.get("outputs"), True),
               policies=Policies(**spec.get("policies", {})))


CASES = [
    dict(id="python-output", cab={
        "name": "f", "command": "mypkg.mod.func", "flavour": {"kind": "python", "output": "y"},
        "inputs": {"a": "int", "b-c": "str", "d.e": "float", "nick": {"dtype": "str", "nom_de_guerre": "alias"},
                   "skipme": {"dtype": "str", "policies": {"skip": True}},
                   "missing": {"dtype": "str", "policies": {"pass_missing_as_none": True}}},
        "outputs": {"y": "float", "f": "File", "imp": {"dtype": "File", "implicit": "x.fits"}}},
        params={"a": 1, "b-c": "x", "d.e": 2.5, "nick": "n", "skipme": "no", "f": "o.fits", "imp": "x.fits"}),
    dict(id="python-dict-verbose", verbose=True, cab={
        "name": "g", "command": "pkg.func", "flavour": {
            "kind": "python", "output_dict": True, "interpreter_binary": "python3.11",
            "interpreter_command": "{python} -X dev -u",
            "pre_commands": {"a": "import os", "b": "print('pre')"}, "post_commands": {"z": "print('post')"}},
        "inputs": {"lst": "List[int]", "flag": "bool"}, "outputs": {"out": "str"}},
        params={"lst": [1, 2], "flag": False}),
    dict(id="python-plain-venv", venv=True, cab={
        "name": "h", "command": "m.run", "flavour": "python", "inputs": {"x": "str"}},
        params={"x": "ünïcode"}),
    dict(id="python-filter-policies", cab={
        "name": "fp", "command": "a.b", "flavour": {"kind": "python", "output_dict": True},
        "policies": {"skip_implicits": True},
        "inputs": {"a": "int", "imp": {"dtype": "str", "implicit": "v"},
                   "imp2": {"dtype": "str", "implicit": "v", "policies": {"skip": False}},
                   "nd": {"dtype": "str", "nom_de_guerre": "real"}, "absent": "str"},
        "outputs": {"f": "File", "lf": "List[File]", "s": "str", "d": "Directory", "u": "URI",
                    "forced": {"dtype": "str", "policies": {"skip": False}}}},
        params={"a": 1, "imp": "v", "imp2": "v", "nd": "n", "f": "f.fits", "lf": ["x"], "s": "s", "d": "dd",
                "u": "http://x", "forced": "y"}),
    dict(id="python-code", cab={
        "name": "pc", "command": "x = a + 1\ny = x * 2\n",
        "flavour": {"kind": "python-code", "input_dict": "p", "pre_commands": {"a": "import os\n"},
                    "post_commands": {"b": "print('done')"}},
        "inputs": {"a": "int", "b-c": "str", "d.e": "str"},
        "outputs": {"y": "int", "z": "File", "imp": {"dtype": "int", "implicit": 3}}},
        params={"a": 1, "b-c": "q", "d.e": "r", "z": "z.fits"}),
    dict(id="python-code-novars", venv=True, cab={
        "name": "pc2", "command": "print(_params)\n",
        "flavour": {"kind": "python-code", "input_vars": False, "output_vars": False},
        "inputs": {"a": "int"}, "outputs": {"y": "int"}},
        params={"a": 5}),
    dict(id="casa-default", cab={
        "name": "c", "command": "flagdata", "flavour": "casa-task",
        "inputs": {"vis": "MS", "mode": "str", "spw": "List[int]", "flagbackup": "bool"}},
        params={"vis": "a.ms", "mode": "rflag", "spw": [0, 1], "flagbackup": False}),
    dict(id="casa-options", cab={
        "name": "c2", "command": "tclean", "flavour": {
            "kind": "casa-task", "path": " /opt/casa/bin/casa --pipeline ", "opts": ["--nogui"], "wrapper": ""},
        "inputs": {"vis": "MS", "niter": "int"}, "outputs": {"imagename": "File"}},
        params={"vis": "a.ms", "niter": 0, "imagename": "img"}),
    dict(id="casa-wrapper", cab={
        "name": "c3", "command": "listobs", "flavour": {"kind": "casa-task", "wrapper": "xvfb-run -a -s x"},
        "inputs": {"vis": "MS"}},
        params={"vis": "a.ms"}),
]


def our_argv(case, venv=None):
    return build_flavour_argv(make_cab(case["cab"]), case["params"], python="python",
                              virtual_env=venv if case.get("venv") else None,
                              verbose=case.get("verbose", False))


ORACLE_SCRIPT = r'''
import sys, json, logging
import stimela
stimela.VERBOSE = False
from stimela import config as sconfig
from omegaconf import OmegaConf
from stimela.kitchen.cab import Cab, get_cab_schema
stimela.CONFIG = sconfig.load_config(extra_configs=[])
req = json.load(open(sys.argv[1]))
venv = sys.argv[2]
out = []
for case in req:
    stimela.VERBOSE = case.get("verbose", False)
    cab = Cab(**OmegaConf.merge(get_cab_schema(), OmegaConf.create(case["cab"])))
    args, _ = cab.flavour.get_arguments(cab, case["params"], {}, virtual_env=venv if case.get("venv") else None)
    out.append(list(args))
print("@@" + json.dumps(out))
'''


@pytest.fixture(scope="module")
def fake_venv(tmp_path_factory):
    venv = tmp_path_factory.mktemp("venv")
    (venv / "bin").mkdir()
    for name in ("python", "activate"):
        (venv / "bin" / name).write_text("")
    return str(venv)


@pytest.fixture(scope="module")
def oracle(tmp_path_factory, fake_venv):
    if not ORACLE_PY.exists():
        pytest.skip("no .oracle-venv (scripts/oracle-venv.sh)")
    tmp = tmp_path_factory.mktemp("oracle")
    (tmp / "req.json").write_text(json.dumps(CASES))
    (tmp / "oracle.py").write_text(ORACLE_SCRIPT)
    proc = subprocess.run([str(ORACLE_PY), str(tmp / "oracle.py"), str(tmp / "req.json"), fake_venv],
                          capture_output=True, text=True, cwd=tmp, timeout=300,
                          env={**os.environ, "HOME": str(tmp)})
    lines = [line for line in proc.stdout.splitlines() if line.startswith("@@")]
    assert lines, proc.stdout + proc.stderr
    return dict(zip([c["id"] for c in CASES], json.loads(lines[-1][2:])))


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_same_argv_as_stimela(case, oracle, fake_venv):
    assert our_argv(case, fake_venv) == oracle[case["id"]]


# ---------------------------------------------------------------- without the oracle

def case_by_id(name):
    return next(c for c in CASES if c["id"] == name)


def decode(arg):
    return json.loads(zlib.decompress(base64.b64decode(arg)).decode("ascii"))


def test_python_params_encoding_and_mangling():
    case = case_by_id("python-output")
    argv = build_flavour_argv(make_cab(case["cab"]), case["params"])
    assert argv[:3] == ["python3", "-u", "-c"]
    assert "from mypkg.mod import func\n" in argv[3] and "_result = func(**_inputs)\n" in argv[3]
    assert decode(argv[4]) == {"a": 1, "b_c": "x", "d__e": 2.5, "alias": "n", "missing": None, "f": "o.fits"}


def test_python_code_params_are_plain_json():
    case = case_by_id("python-code")
    argv = build_flavour_argv(make_cab(case["cab"]), case["params"])
    assert json.loads(argv[4]) == {"a": 1, "b-c": "q", "d.e": "r", "z": "z.fits"}
    assert argv[3].startswith('\nimport sys, json\np = json.loads(sys.argv[1])\nimport os\na = p["a"]\n')


def test_casa_literal():
    case = case_by_id("casa-default")
    assert build_flavour_argv(make_cab(case["cab"]), case["params"]) == [
        "xvfb-run", "-a", "casa", "--log2term", "--nologger", "--nologfile", "-c",
        "flagdata(**{'vis': 'a.ms', 'mode': 'rflag', 'spw': [0, 1], 'flagbackup': False})"]


def test_casa_config_and_substitution():
    cab = make_cab({"name": "c", "command": "{task}", "flavour": "casa-task", "inputs": {"vis": "MS"}})
    sub = lambda text: text.replace("{task}", "listobs").replace("{casa}", "/opt/casa")  # noqa: E731
    argv = build_flavour_argv(cab, {"vis": "x.ms"}, substitute=sub,
                              casa_config={"path": "{casa}/bin/casa", "opts": ["--nogui"], "wrapper": None})
    assert argv == ["/opt/casa/bin/casa", "--nogui", "-c", "listobs(**{'vis': 'x.ms'})"]


def test_python_code_subst_only_when_asked():
    sub = lambda text: text.replace("{n}", "5")  # noqa: E731
    cab = make_cab({"name": "p", "command": "x = {n}\n", "flavour": "python-code"})
    assert "x = {n}\n" in build_flavour_argv(cab, {}, substitute=sub)[3]
    cab = make_cab({"name": "p", "command": "x = {n}\n", "flavour": {"kind": "python-code", "subst": True}})
    assert "x = 5\n" in build_flavour_argv(cab, {}, substitute=sub)[3]


def test_interpreters_and_virtual_env():
    cab = make_cab({"name": "h", "command": "m.run", "flavour": "python"})
    assert build_flavour_argv(cab, {})[0] == "python3"
    assert build_flavour_argv(cab, {}, python="python")[0] == "python"
    assert build_flavour_argv(cab, {}, virtual_env="/venvs/x")[0] == "/venvs/x/bin/python3"
    cab = make_cab({"name": "h", "command": "m.run",
                    "flavour": {"kind": "python", "interpreter_binary": "python3.12",
                                "interpreter_command": "nice {python} -u -B"}})
    assert build_flavour_argv(cab, {}, virtual_env="/v")[:5] == ["nice", "/v/bin/python3.12", "-u", "-B", "-c"]


def test_binary_defers_to_plan_argv_and_venv_wraps(monkeypatch):
    import types

    fake = types.ModuleType("airflow_provider_stepcab.plan.argv")
    fake.build_argv = lambda cab, params: ["wsclean", "-name", "my image", params["ms"]]
    monkeypatch.setitem(sys.modules, "airflow_provider_stepcab.plan.argv", fake)
    cab = make_cab({"name": "b", "command": "wsclean", "inputs": {"ms": "MS"}})
    assert build_flavour_argv(cab, {"ms": "a.ms"}) == ["wsclean", "-name", "my image", "a.ms"]
    assert build_flavour_argv(cab, {"ms": "a.ms"}, virtual_env="/v env") == [
        "/bin/bash", "-c", ". '/v env/bin/activate' && wsclean -name 'my image' a.ms"]


def test_flavour_errors():
    with pytest.raises(FlavourError, match="module.function"):
        build_flavour_argv(make_cab({"name": "x", "command": "nodot", "flavour": "python"}), {})
    with pytest.raises(FlavourError, match="both 'output_dict' and 'output'"):
        build_flavour_argv(make_cab({"name": "x", "command": "a.b", "outputs": {"o": "int"},
                                     "flavour": {"kind": "python", "output": "o", "output_dict": True}}), {})
    with pytest.raises(FlavourError, match="unknown flavour 'rust'"):
        build_flavour_argv(make_cab({"name": "x", "command": "a.b", "flavour": "rust"}), {})


@pytest.mark.parametrize("flavour,command,message", [
    ("rust", "a.b", "unknown flavour 'rust'"),
    ({"kind": "python", "bogus": 1}, "a.b", "unknown option for flavour 'python'"),
    ({"kind": "python-code", "output": "o"}, "x=1", "unknown option for flavour 'python-code'"),
    ({"kind": "python", "output": "nope"}, "a.b", "'nope' is not a known output"),
    ({"kind": "python", "output": "o", "output_dict": True}, "a.b", "both"),
    ("python", "nodot", "module.function"),
])
def test_validate_flavour(flavour, command, message):
    problems = Problems()
    cab = make_cab({"name": "x", "command": command, "flavour": flavour, "outputs": {"o": "int"}})
    validate_flavour(cab, problems, key_path="cabs.x")
    assert len(problems.errors) == 1 and message in problems.errors[0].message
    assert problems.errors[0].key.startswith("cabs.x.")


def test_validate_flavour_ok():
    problems = Problems()
    for flavour in ("binary", {"kind": "python", "output": "o", "interpreter_binary": "py"},
                    {"kind": "casa-task", "opts": ["-x"]}, {"kind": "python-code", "input_dict": "p"}):
        validate_flavour(make_cab({"name": "x", "command": "a.b", "flavour": flavour, "outputs": {"o": "int"}}),
                         problems)
    assert not problems


def test_filter_input_params_rules():
    cab = make_cab({"name": "x", "command": "a.b", "policies": {"skip_implicits": True},
                    "inputs": {"a": "int", "imp": {"dtype": "str", "implicit": "v"},
                               "imp2": {"dtype": "str", "implicit": "v", "policies": {"skip": False}},
                               "nd": {"dtype": "str", "nom_de_guerre": "real"}},
                    "outputs": {"f": "File", "lf": "List[File]", "s": "str",
                                "forced": {"dtype": "str", "policies": {"skip": False}}}})
    params = {"a": 1, "imp": "v", "imp2": "v", "nd": "n", "f": "f.fits", "lf": ["x"], "s": "s", "forced": "y"}
    assert filter_input_params(cab, params) == {"a": 1, "imp2": "v", "real": "n", "f": "f.fits", "forced": "y"}
    assert "nd" in filter_input_params(cab, params, apply_nom_de_guerre=False)
