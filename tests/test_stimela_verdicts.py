"""Validation verdicts compared with Stimela 2.1.4: option schemas, stale keys, dynamic schemas,
required inputs nothing sets. Divergences are the documented ones (docs/divergences.md)."""

import importlib.util
import json
import os
from typing import Dict, List, Optional, Union

import pytest
from recipe_helpers import line_of

from airflow_provider_stepcab.plan.argv import build_argv, fill_defaults
from airflow_provider_stepcab.recipe.api import load_file
from airflow_provider_stepcab.recipe.backend_schema import BackendOptions
from airflow_provider_stepcab.recipe.cab import build_cab
from airflow_provider_stepcab.recipe.coerce import coerce
from airflow_provider_stepcab.recipe.dynamic_schema import (
    DynamicSchemaUnavailable, apply_dynamic_schema, step_schema,
)
from airflow_provider_stepcab.recipe.errors import NOTE, Loc, Problems
from airflow_provider_stepcab.recipe.model import PathPolicies
from airflow_provider_stepcab.recipe.params import _POLICY_TYPES
from airflow_provider_stepcab.recipe.requirements import required_unset
from airflow_provider_stepcab.recipe.yamlio import load_yaml_text

HERE = os.path.dirname(__file__)
ROOT = os.path.dirname(HERE)
ORACLE = os.path.join(HERE, "oracle")
_spec = importlib.util.spec_from_file_location("stimela_schema", os.path.join(ORACLE, "stimela_schema.py"))
stimela_schema = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(stimela_schema)  # only its describe(): Stimela is imported in main() alone
with open(os.path.join(ORACLE, "stimela_schema.json")) as _fh:
    STIMELA = json.load(_fh)
with open(os.path.join(ROOT, "docs", "divergences.md")) as _fh:
    DIVERGENCES_DOC = _fh.read()

# Stimela's enum option types, which are strings with the same choices here
ENUMS = {"BindMode": "str", "ExistPolicy": "str", "Lifecycle": "str"}


def flat(tree, prefix=""):
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from flat(value, f"{prefix}{key}.")
    else:
        yield prefix.rstrip("."), tree


def test_every_stimela_backend_option_is_read_with_its_type():
    ours = dict(flat(stimela_schema.describe(BackendOptions)))
    theirs = dict(flat(STIMELA["backend"]))
    missing = [k for k in theirs if k not in ours and k != "docker"]  # docker: an extras section
    assert not missing
    differ = {k: (t, ours[k]) for k, t in theirs.items()
              if k in ours and ENUMS.get(str(t), t) != ours[k] and k != "select"}
    assert not differ
    assert theirs["select"] == "Any" and ours["select"] == ["list", "str"]  # "a,b" or a list, kept as a list


def test_every_backend_extension_is_documented():
    ours = dict(flat(stimela_schema.describe(BackendOptions)))
    theirs = dict(flat(STIMELA["backend"]))
    extra = sorted({k.split(".<dict>")[0] for k in ours if k not in theirs and not k.startswith("extras")})
    assert extra  # nv, extra_options, the slurm ssh keys ...
    table = DIVERGENCES_DOC.split("## Our extension keys", 1)[1].split("\n## ", 1)[0]
    for key in extra:
        section, name = key.rsplit(".", 1)
        assert f"backend.{key}" in table or (f"backend.{section}." in table and f"`{name}`" in table), key


def test_policies_and_path_policies_match_scabha():
    assert stimela_schema.describe(dict) == "dict"
    ours = {k: stimela_schema.describe(t) for k, t in _POLICY_TYPES.items()}
    assert ours == STIMELA["policies"]
    assert stimela_schema.describe(PathPolicies) == STIMELA["path_policies"]


def test_parameter_fields_match_scabha():
    from airflow_provider_stepcab.recipe.params import PARAM_FIELDS
    assert sorted(PARAM_FIELDS) == sorted(STIMELA["parameter"])


# ------------------------------------------------------------------------------- stale keys
STALE = """\
opts:
  backend:
    singularity:
      auto_update: true
cabs:
  echo:
    command: echo
    inputs:
      x:
        dtype: "List[str]"
        policies:
          repeat: false
rec:
  steps:
    s1:
      cab: echo
      params:
        x: [a, b]
"""


@pytest.mark.parametrize("strict", [False, True])
def test_stale_backend_key_and_repeat_false(tmp_path, strict):
    path = tmp_path / "stale.yml"
    path.write_text(STALE)
    result = load_file(str(path), strict=strict)
    (stale,) = [p for p in result.problems if p.key == "opts.backend.singularity.auto_update"]
    assert stale.loc == (str(path), 4)
    assert "did you mean 'auto_build'?" in stale.message
    assert stale.is_error is strict
    # repeat: false is accepted as Stimela does (OmegaConf makes it the string "False")
    assert not [p for p in result.problems if "repeat" in p.key]
    cab = result.recipes["rec"].steps["s1"].cab
    assert build_argv(cab, {"x": ["a", "b"]}) == ["echo", "--x", "aFalseb"]  # Stimela: policies-omegaconf


# --------------------------------------------------------------------------- dynamic schemas
DYNAMIC = """\
_include:
  - (cultcargo)wsclean.yml
  - (cultcargo)quartical.yml
  - (cultcargo)cubical.yml
dyn:
  inputs:
    terms: {dtype: "List[str]", default: [K]}
  steps:
    image:
      cab: wsclean
      params: {ms: [a.ms], prefix: img, size: 64, scale: 1asec, bogus-option: 3}
    cal:
      cab: quartical
      params: {input_ms.path: a.ms, solver.terms: [K, G], K.type: delay, G.time_interval: 4, B.type: complex}
    cal-later:
      cab: quartical
      params: {input_ms.path: a.ms, solver.terms: =recipe.terms, K.type: delay}
    cal-nested:
      cab: quartical
      params: {input_ms: {path: a.ms}, solver: {terms: [K]}, K: {type: delay, time_interval: 2}}
    cub:
      cab: cubical
      params: {sol.jones: [G], g.type: complex-2x2, dd.type: phase-diag}
"""


def _unknowns(result):
    return {p.key.rsplit(".params.", 1)[1]: p for p in result.problems if p.code == "unknown-param"}


def test_dynamic_schema_verdicts(tmp_path):
    pytest.importorskip("cultcargo")
    path = tmp_path / "dyn.yml"
    path.write_text(DYNAMIC)
    result = load_file(str(path))
    unknown = _unknowns(result)
    # Stimela: "unknown parameter" for what the hook doesn't add (err-wsclean-unknown,
    # err-quartical-unknown-term); quartical adds K.* and G.* for solver.terms [K, G]
    assert set(unknown) == {"bogus-option", "B.type", "dd.type", "K.type"}
    assert unknown["bogus-option"].is_error and unknown["B.type"].is_error and unknown["dd.type"].is_error
    assert "did you mean 'K.type'?" in unknown["B.type"].message or "did you mean 'G.type'?" in unknown["B.type"].message
    # a term section written as a mapping is flattened with the hook's schema, as Stimela does
    # (golden cc-quartical-nested): nothing unknown in step cal-nested
    assert not [p for p in result.problems if "cal-nested" in p.key]
    # solver.terms is a formula: the hook can't know yet, so only a warning that says why
    later = unknown["K.type"]
    assert not later.is_error and later.key.startswith("dyn.steps.cal-later.") and "solver.terms" in later.message
    assert not [p for p in result.problems if p.code == "dynamic-schema-unavailable"]


def _cab(text, name="t"):
    problems = Problems()
    cab = build_cab(name, load_yaml_text(text, "cabs.yml"), f"cabs.{name}", problems)
    return cab, problems


def test_missing_hook_module_is_said_once_per_cab():
    cab, problems = _cab("command: x\ndynamic_schema: no_such_pkg_xyz.mod.func\ninputs: {a: int}\n", "mycab")
    (w,) = problems.warnings
    assert "cab 'mycab'" in w.message and "no_such_pkg_xyz.mod" in w.message
    strict_problems = Problems()
    build_cab("mycab", load_yaml_text("command: x\ndynamic_schema: no_such_pkg_xyz.mod.func\n", "c.yml"),
              "cabs.mycab", strict_problems, strict=True)
    assert strict_problems.errors  # Stimela can't load such a cab
    with pytest.raises(DynamicSchemaUnavailable):
        apply_dynamic_schema(cab, {})
    seen = Problems()
    for params in ({"a": 1, "b": 2}, {"c": 3}):  # two steps of the cab
        schema, pending, flat, _ = step_schema(cab, params, seen)
        assert pending == ["*"] and list(schema) == ["a"] and flat == params
    # build_cab said it (once per cab definition); validating its steps adds nothing
    assert not [p for p in seen if p.code == "dynamic-schema-unavailable"]


def test_quartical_hook_reproduced_gives_stimela_argv(tmp_path):
    """Full argv with term sections, as Stimela 2.1.4 gave it (golden cc-quartical-terms)."""
    pytest.importorskip("cultcargo")
    with open(os.path.join(ORACLE, "golden", "cc-quartical-terms.json")) as fh:
        record = json.load(fh)
    problems = Problems()
    cab = build_cab("quartical", record["cab_def"], "cabs.quartical", problems)
    assert not problems.errors
    assert "K.type" not in cab.schema
    new = apply_dynamic_schema(cab, record["params"])
    assert "K.type" in new.inputs and "G.interp_mode" in new.inputs and "B.type" not in new.inputs
    assert new.inputs["K.type"].loc.file.endswith("gain_schema.yaml")
    values = {n: new.schema[n].dtype.validate(v, cwd=str(tmp_path))
              for n, v in fill_defaults(new, record["params"]).items()}
    assert build_argv(new, values) == record["argv"]


def test_wsclean_hook_adds_only_outputs():
    pytest.importorskip("cultcargo")
    with open(os.path.join(ORACLE, "golden", "cc-wsclean.json")) as fh:
        record = json.load(fh)
    problems = Problems()
    result_cab = build_cab("wsclean", record["cab_def"], "cabs.wsclean", problems)
    new = apply_dynamic_schema(result_cab, record["params"])
    assert list(new.inputs) == list(result_cab.inputs)
    assert set(new.outputs) > set(result_cab.outputs) and "restored" in new.outputs


# ------------------------------------------------------------------- required inputs unset
REQUIRED = """\
cabs:
  echo:
    command: echo
    inputs:
      msg: {dtype: str, required: true}
      likecol: {dtype: str, required: true}
      opt: str
rec:
  inputs:
    obs: {dtype: str, required: true}
    band: {dtype: str, required: true}
    dir_out: {dtype: str, required: true}
    prefix: {dtype: str, required: true}
    with_default: {dtype: str, required: true, default: x}
  assign_based_on:
    band:
      L: {dir_out: mos1}
  assign:
    prefix: "{recipe.dir_out}/im"
  steps:
    add-corrected-data:
      cab: echo
      params: {msg: "{recipe.obs}"}
    other:
      cab: echo
      params: {msg: hi, likecol: DATA}
"""


def test_required_unset_names_each_with_its_line(tmp_path):
    path = tmp_path / "req.yml"
    path.write_text(REQUIRED)
    result = load_file(str(path))
    assert not result.problems.errors, [str(p) for p in result.problems.errors]
    unset = required_unset(result.recipes["rec"])
    assert [name for name, _ in unset] == ["obs", "band", "add-corrected-data.likecol"]
    locs = dict(unset)
    assert locs["obs"] == (str(path), line_of(path, "obs: {")) and locs["band"] == (str(path), line_of(path, "band: {"))
    # an auto-alias: where the step that leaves it unset is
    assert locs["add-corrected-data.likecol"] == (str(path), line_of(path, "add-corrected-data:"))


def test_validate_prints_notes_and_exits_0(tmp_path):
    import subprocess
    import sys
    path = tmp_path / "req.yml"
    path.write_text(REQUIRED)
    out = subprocess.run([sys.executable, "-m", "airflow_provider_stepcab", "validate", str(path)],
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert f"{path}:{line_of(path, 'add-corrected-data:')}: rec.inputs.add-corrected-data.likecol: note: required input " \
           f"'add-corrected-data.likecol' needs a value at run time: nothing in the recipe sets it " \
           f"(give it with -p add-corrected-data.likecol=... or in the trigger form)" in lines
    assert len(lines) == 3 and "0 error(s), 0 warning(s), 3 note(s)" in out.stderr


def test_notes_are_neither_errors_nor_warnings():
    problems = Problems()
    problems.note(Loc("f.yml", 3), "k", "needs a value")
    assert problems.notes and not problems.warnings and not problems.errors
    assert problems.notes[0].severity == NOTE and str(problems.notes[0]) == "f.yml:3: k: note: needs a value"


# ------------------------------------------------------------------ OmegaConf conversions
with open(os.path.join(ORACLE, "coerce_cases.json")) as _fh:
    COERCE_CASES = json.load(_fh)
COERCE_TYPES = {"bool": bool, "int": int, "float": float, "str": str, "Dict[str, str]": Dict[str, str],
                "List[str]": List[str], "Union[bool, str]": Union[bool, str], "Optional[int]": Optional[int]}


@pytest.mark.parametrize("case", COERCE_CASES, ids=lambda c: f"{c['type']}:{c['value']!r}")
def test_values_converted_as_omegaconf_does(case):
    """What Stimela's OmegaConf makes of a YAML value for a typed field (tests/oracle/stimela_coerce.py)."""
    try:
        result = coerce(COERCE_TYPES[case["type"]], case["value"])
    except ValueError:
        result = "error"
    assert result == case["result"] and type(result) is type(case["result"])


def test_broken_cult_cargo_cab_rejected_like_stimela(tmp_path):
    """cult-cargo 0.2.1's mosaic-queen has ``dtype: store_true`` inputs: Stimela 2.1.4 rejects the
    cab (golden err-mosaic-queen-dtype, 'inputs.regrid was interpreted as nested section'); so do we."""
    pytest.importorskip("cultcargo")
    with open(os.path.join(ORACLE, "golden", "err-mosaic-queen-dtype.json")) as fh:
        assert "inputs.regrid" in json.load(fh)["error"]
    path = tmp_path / "mq.yml"
    path.write_text("_include: [(cultcargo)mosaic-queen.yml]\nmq:\n  steps:\n    s:\n      cab: mosaic-queen\n"
                    "      params: {input: imgs, target-images: [a.fits], name: m}\n")
    errors = load_file(str(path)).problems.errors
    assert any(p.key == "cabs.mosaic-queen.inputs.regrid" and "nested section" in p.message for p in errors)
