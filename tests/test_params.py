"""Tests for recipe/params.py (schema parsing, shorthand, nesting, problems with file:line)."""

import glob
import os

import pytest

from airflow_provider_stepcab.recipe.errors import Problems
from airflow_provider_stepcab.recipe.model import UNSET
from airflow_provider_stepcab.recipe.params import parse_policies, parse_schema, parse_shorthand
from airflow_provider_stepcab.recipe.yamlio import load_yaml_text


def schema_of(text, strict=False, is_output=False):
    node = load_yaml_text(text, "cab.yml")
    problems = Problems()
    return parse_schema(node["inputs"], "cabs.x.inputs", problems, strict=strict, is_output=is_output), problems


@pytest.mark.parametrize("text,fields", [
    ("MS", {"dtype": "MS"}),
    ("str*", {"dtype": "str", "required": True}),
    ('int = 3 "doc"', {"dtype": "int", "default": "3", "info": "doc"}),
    ("str = 'quoted'", {"dtype": "str", "default": "quoted"}),
    ('str = "x y"', {"dtype": "str", "default": "", "info": "x y"}),  # Stimela's own quirk
    ("  List[int]  ", {"dtype": "List[int]"}),
    ('File "just info"', {"dtype": "File", "info": "just info"}),
    ("str = =recipe.x", {"dtype": "str", "default": "=recipe.x"}),
    ("str* = 3", {"dtype": "str*", "default": "3"}),
])
def test_shorthand(text, fields):
    assert parse_shorthand(text) == fields


def test_shorthand_params():
    params, problems = schema_of("""
inputs:
  ms: MS
  prefix: "str*"
  niter: 'int = 3 "number of iterations"'
  name: "str = =recipe.name"
  tpl: "str = '{recipe.x}'"
""")
    assert not problems
    assert list(params) == ["ms", "prefix", "niter", "name", "tpl"]
    assert params["ms"].dtype_str == "MS" and params["ms"].dtype.is_file
    assert params["prefix"].required and params["prefix"].default is UNSET
    assert params["niter"].default == 3 and params["niter"].info == "number of iterations"
    assert params["name"].default == "=recipe.name"
    assert params["tpl"].default == "{recipe.x}"
    assert params["ms"].loc.file == "cab.yml" and params["ms"].loc.line == 3


def test_full_fields_and_policies():
    params, problems = schema_of("""
inputs:
  ms:
    info: the MS
    dtype: List[MS]
    required: true
    writable: true
    must_exist: false
    mkdir: true
    choices: [a, b]
    element_choices: [x]
    default: [a.ms]
    aliases: [s.ms]
    tags: [t]
    category: obscure
    metavar: MS
    abbreviation: m
    metadata: {k: v}
    suppress_cli_default: true
    skip_freshness_checks: true
    nom_de_guerre: vis
    implicit: "=foo"
    path_policies: {mkdir_parent: false, write_parent: true}
    remove_if_exists: true
    policies: {positional: true, repeat: list, replace: {"-": "_"}, format_list: ["{0}"], prefix: 3}
""")
    assert not problems, [str(p) for p in problems]
    p = params["ms"]
    assert p.required and p.writable and p.mkdir and p.must_exist is False and p.suppress_cli_default
    assert p.choices == ["a", "b"] and p.element_choices == ["x"] and p.default == ["a.ms"]
    assert p.category == "Obscure" and p.metadata == {"k": "v"} and p.nom_de_guerre == "vis"
    assert p.implicit == "=foo" and p.aliases == ["s.ms"] and p.tags == ["t"]
    assert p.path_policies.mkdir_parent is False and p.path_policies.write_parent is True
    assert p.path_policies.remove_if_exists is True
    assert p.policies.positional and p.policies.repeat == "list" and p.policies.replace == {"-": "_"}
    assert p.policies.prefix == "3"
    assert "required" in p.given_fields and "info" in p.given_fields


def test_nested_sections_flatten():
    params, problems = schema_of("""
inputs:
  input_ms:
    path: {dtype: MS, required: true}
    data_column: "str = DATA"
    subsection: ignored
    deeper:
      x: int
  flag: bool
""")
    assert not problems
    assert list(params) == ["input_ms.path", "input_ms.data_column", "input_ms.deeper.x", "flag"]
    assert params["input_ms.data_column"].default == "DATA"
    assert params["input_ms.path"].name == "input_ms.path"


def test_empty_mapping_is_a_str_parameter():
    params, problems = schema_of("inputs:\n  x: {}\n")
    assert params["x"].dtype_str == "str" and not problems


def test_outputs_flagged():
    params, _ = schema_of("inputs:\n  o: File\n  s: str\n  i: {dtype: File, implicit: x}\n", is_output=True)
    assert params["o"].is_output and params["o"].is_named_output
    assert not params["s"].is_named_output and not params["i"].is_named_output


def test_bad_dtype_reports_file_line():
    params, problems = schema_of("""
inputs:
  a: int
  b:
    dtype: List[Foo]
  c: "Lisst[int]"
""")
    msgs = [str(p) for p in problems.errors]
    assert any(m.startswith("cab.yml:5: cabs.x.inputs.b.dtype:") and "unknown type 'Foo'" in m for m in msgs), msgs
    assert any(m.startswith("cab.yml:6: cabs.x.inputs.c.dtype:") for m in msgs), msgs
    assert "a" in params


def test_unknown_field_warning_then_strict_error():
    text = """
inputs:
  a:
    dtype: int
    requried: true
"""
    params, problems = schema_of(text)
    assert "a" in params and params["a"].dtype_str == "int"
    assert not problems.errors
    (w,) = problems.warnings
    assert str(w).startswith("cab.yml:5: cabs.x.inputs.a.requried: warning: unknown parameter field 'requried'")
    _, problems = schema_of(text, strict=True)
    assert problems.errors and "requried" in str(problems.errors[0])


def test_misspelled_field_with_string_values_hint():
    # Stimela reads this as a nested section (x.dtype, x.defualt); we say why it failed
    params, problems = schema_of("""
inputs:
  x:
    dtype: int
    defualt: "3"
""")
    msgs = [str(p) for p in problems.errors]
    assert any("read as a nested section" in m and "'defualt'" in m and m.startswith("cab.yml:3:") for m in msgs)


@pytest.mark.parametrize("text,fragment", [
    ("inputs:\n  a: 3\n", "not a valid parameter definition"),
    ("inputs:\n  a:\n", "not a valid parameter definition"),
    ("inputs:\n  a: {dtype: int, required: maybe}\n", "'required' must be true or false"),
    ("inputs:\n  a: {dtype: int, choices: x}\n", "'choices' must be a list"),
    ("inputs:\n  a: {dtype: 3}\n", "dtype must be a string"),
    ("inputs:\n  a: {category: Weird}\n", "unknown category"),
    ("inputs:\n  a: {policies: {repeat: [1]}}\n", "policy 'repeat' must be a str"),
    ("inputs:\n  a: {policies: {positional: 'maybe'}}\n", "policy 'positional' must be a bool"),
    ("inputs:\n  a: {policies: {positional: 2.5}}\n", "policy 'positional' must be a bool"),
    ("inputs:\n  a: {policies: {replace: {1: x}}}\n", "policy 'replace' must be a Dict[str, str]"),
    ("inputs:\n  a: {policies: {format_list: x}}\n", "policy 'format_list' must be a List[str]"),
    ("inputs: [a, b]\n", "a schema mapping is expected"),
])
def test_bad_inputs(text, fragment):
    _, problems = schema_of(text)
    msgs = [str(p) for p in problems.errors]
    assert any(fragment in m and m.startswith("cab.yml:") for m in msgs), msgs


def test_unknown_policy_warns():
    problems = Problems()
    node = load_yaml_text("p:\n  positional: true\n  repaet: list\n", "c.yml")["p"]
    pol = parse_policies(node, "cabs.x.policies", problems)
    assert pol.positional is True
    assert str(problems.warnings[0]).startswith("c.yml:3: cabs.x.policies.repaet: warning: unknown policy")


def test_mosaic_queen_typo_detected():
    """cult-cargo 0.2.1's mosaic-queen has `action: store_true` in a param: Stimela fails to load it."""
    cultcargo = pytest.importorskip("cultcargo")
    path = os.path.join(os.path.dirname(cultcargo.__file__), "mosaic-queen.yml")
    with open(path) as fh:
        node = load_yaml_text(fh.read(), path)
    problems = Problems()
    parse_schema(node["cabs"]["mosaic-queen"]["inputs"], "cabs.mosaic-queen.inputs", problems)
    assert any("regrid" in p.key and p.loc.line > 0 for p in problems.errors), [str(p) for p in problems]


def test_all_cultcargo_schemas_parse_without_errors():
    """Every cult-cargo cab schema written inline parses (mosaic-queen's known typo aside)."""
    cultcargo = pytest.importorskip("cultcargo")
    root = os.path.dirname(cultcargo.__file__)
    count = 0
    for path in glob.glob(os.path.join(root, "**", "*.y*ml"), recursive=True):
        with open(path) as fh:
            tree = load_yaml_text(fh.read(), path)
        for name, cab in ((tree or {}).get("cabs") or {}).items():
            if not isinstance(cab, dict):
                continue
            for io in ("inputs", "outputs"):
                sec = cab.get(io)
                if not isinstance(sec, dict):
                    continue
                sec = {k: v for k, v in sec.items() if not k.startswith("_")}
                problems = Problems()
                parse_schema(sec, f"cabs.{name}.{io}", problems, is_output=io == "outputs")
                if name != "mosaic-queen":
                    assert not problems.errors, [str(p) for p in problems.errors]
                count += 1
    assert count > 40


@pytest.mark.parametrize("policy,value,expected", [
    # what OmegaConf makes of them when Stimela 2.1.4 reads ParameterPolicies (checked in its venv)
    ("repeat", "false", "False"), ("repeat", "1", "1"), ("explicit_true", "true", "True"),
    ("positional", "'yes'", True), ("positional", "1", True), ("key_value", "0", False),
    ("key_value", "'off'", False), ("format_list", "[1, true]", ["1", "True"]), ("replace", "{_: 1}", {"_": "1"}),
])
def test_policies_are_converted_as_stimela_does(policy, value, expected):
    schema, problems = schema_of(f"inputs:\n  a: {{dtype: str, policies: {{{policy}: {value}}}}}\n")
    assert not problems, [str(p) for p in problems]
    assert getattr(schema["a"].policies, policy) == expected


def test_misspelled_policy_suggests_the_right_one():
    _, problems = schema_of("inputs:\n  a: {dtype: str, policies: {postional: true}}\n")
    (w,) = problems.warnings
    assert "unknown policy 'postional'" in w.message and "did you mean 'positional'?" in w.message
    assert str(w).startswith("cab.yml:2:")
