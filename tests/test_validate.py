"""Validation collects every problem with file:line and key path."""

import pytest

from airflow_provider_stepcab.recipe.api import load_file, load_recipe_result
from airflow_provider_stepcab.recipe.errors import Loc, Problems
from airflow_provider_stepcab.recipe.model import Parameter
from airflow_provider_stepcab.recipe.dtypes import parse_dtype
from airflow_provider_stepcab.recipe.validate import check_expression, validate_params
from recipe_helpers import DATA, line_of, write

BAD = DATA / "bad.yml"

EXPECTED = [  # (key, marker in bad.yml, message fragment)
    ("broken.steps.s-unknown-cab.cab", "ERR unknown cab", "unknown cab 'nosuchcab'"),
    ("broken.steps.s-unknown-recipe.recipe", "ERR unknown recipe", "unknown recipe 'nosuchrecipe'"),
    ("broken.steps.s-unknown-param.params.bogus", "ERR unknown parameter", "unknown parameter 'bogus'"),
    ("broken.steps.s-dtype.params.n", "ERR wrong dtype", "invalid value 'not-a-number' for dtype int"),
    ("broken.steps.s-choice.params.mode", "ERR choice", "not one of the allowed choices"),
    ("broken.steps.s-formula.params.msg", "ERR bad formula", "bad formula"),
    ("broken.steps.s-skipif.skip_if_outputs", "ERR skip_if_outputs", "invalid 'skip_if_outputs=sometimes'"),
    ("broken.steps.s-stale.backend.kube.provisioning_timeout", "ERR backend type", "expected an int"),
    ("broken.aliases.x", "ERR alias unknown step", "refers to unknown step 'nosuchstep'"),
]


@pytest.fixture(scope="module")
def problems():
    return load_file(str(BAD)).problems


@pytest.mark.parametrize("key,marker,fragment", EXPECTED, ids=[e[0].rsplit(".", 1)[-1] for e in EXPECTED])
def test_each_error_has_file_line_and_key(problems, key, marker, fragment):
    matches = [p for p in problems.errors if p.key == key]
    assert matches, [str(p) for p in problems]
    p = matches[0]
    assert fragment in p.message
    assert p.loc == Loc(str(BAD), line_of(BAD, marker))
    assert str(p).startswith(f"{BAD}:{line_of(BAD, marker)}: {key}: ")


def test_step_with_cab_and_recipe(problems):
    assert any(p.key == "broken.steps.s-both" and "both a cab and a nested recipe" in p.message
               for p in problems.errors)


def test_stale_keys_are_warnings_by_default(problems):
    warned = {p.key: p.loc.line for p in problems.warnings}
    assert warned["broken.steps.s-stale.colour"] == line_of(BAD, "WARN unknown step field")
    assert warned["broken.steps.s-stale.backend.singularity.auto_update"] == line_of(BAD, "WARN unknown backend")


def test_stale_keys_are_errors_when_strict():
    result = load_file(str(BAD), strict=True)
    keys = {p.key for p in result.problems.errors}
    assert "broken.steps.s-stale.colour" in keys
    assert "broken.steps.s-stale.backend.singularity.auto_update" in keys


def test_all_problems_collected_at_once(problems):
    assert len(problems.errors) >= len(EXPECTED) + 1


def test_broken_yaml_reports_line():
    result = load_file(str(DATA / "broken_yaml.yml"))
    (err,) = result.problems.errors
    assert err.loc.file.endswith("broken_yaml.yml") and err.loc.line == 2 and "invalid YAML" in err.message


def test_missing_include_is_reported_not_raised(tmp_path):
    p = write(tmp_path, "m.yml", "_include: [nothere.yml]\nr:\n  steps:\n    s: {cab: {command: x}}\n")
    result = load_file(str(p))
    assert result.recipes and any(e.loc.line == 1 for e in result.problems.errors)


def _param(name, dtype="str", **kw):
    return Parameter(name=name, dtype_str=dtype, dtype=parse_dtype(dtype), **kw)


def test_validate_params_direct():
    schema = {"a": _param("a", required=True), "n": _param("n", "int"), "m": _param("m", choices=["x", "y"]),
              "l": _param("l", "List[int]", element_choices=[1, 2])}
    problems = Problems()
    out = validate_params(schema, {"n": "5", "m": "z", "l": [1, 3], "q": 1, "f": "=recipe.x"},
                          key_path="r.params", loc=Loc("f.yml", 3), problems=problems, check_required=True,
                          allowed_extra=["f"])
    assert out["n"] == 5
    codes = sorted(p.code for p in problems.errors)
    assert codes == ["bad-choice", "bad-choice", "missing-param", "unknown-param"]
    assert all(p.loc == Loc("f.yml", 3) for p in problems)


def test_unknown_param_warning_mode():
    problems = Problems()
    validate_params({}, {"x": 1}, key_path="k", loc=Loc("f", 1), problems=problems, strict_unknown=False)
    assert problems.warnings and not problems.errors


def test_formulas_and_substitutions_checked_for_syntax_only():
    problems = Problems()
    assert check_expression("=IF(recipe.a, 1, 2)", key_path="k", loc=Loc("f", 1), problems=problems)
    assert check_expression("{recipe.a}-x", key_path="k", loc=Loc("f", 1), problems=problems)
    assert not check_expression("=1 +", key_path="k", loc=Loc("f", 2), problems=problems)
    assert not check_expression("{recipe.a", key_path="k", loc=Loc("f", 3), problems=problems)
    assert [p.loc.line for p in problems.errors] == [2, 3]


def test_bad_assign_based_on_and_skip_formula(tmp_path):
    p = write(tmp_path, "abo.yml", """\
r:
  assign_based_on:
    obs: [not, a, mapping]
  steps:
    s:
      cab: {command: x}
      skip: "=recipe.x ==="
""")
    errs = {e.key: e.loc.line for e in load_recipe_result(p).problems.errors}
    assert errs["r.assign_based_on.obs"] == 3
    assert errs["r.steps.s.skip"] == 7
