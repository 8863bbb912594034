"""plan_recipe: flattened steps, resolved params, unresolved run-time values, loops, backends."""

import json

import pytest

from airflow_provider_stepcab.plan.steps import plan_recipe
from airflow_provider_stepcab.recipe.api import load_recipe
from airflow_provider_stepcab.recipe.resolve import NS, Unresolved, evaluate, resolve_recipe
from recipe_helpers import CORPUS, DATA, line_of, write

GOOD = DATA / "good.yml"


@pytest.fixture(scope="module")
def plan():
    recipe, config = load_recipe(GOOD)
    return plan_recipe(recipe, config, {"auto.msg": "hi"})


def steps(plan):
    return {s.name: s for s in plan.steps}


def test_flattened_names_in_order(plan):
    assert [s.name for s in plan.steps] == [
        "main.first", "main.mk", "main.after", "main.nested.say", "main.nested.again",
        "main.loop.0.show", "main.loop.1.show", "main.glob", "main.auto"]
    assert steps(plan)["main.nested.say"].path == ("nested", "say")
    assert not plan.problems.errors


def test_substitutions_assign_and_assign_based_on(plan):
    s = steps(plan)
    assert s["main.first"].argv == ["echo", "--n", "1", "out.txt"]
    assert s["main.mk"].argv == ["touch", "mos1/out.fits"]  # assign_based_on obs=M1 -> dir_out


def test_implicit_output_flows_to_next_step_and_never_tag(plan):
    after = steps(plan)["main.after"]
    assert after.argv[-1] == "mos1/out.fits" and after.skip is True


def test_nested_recipe_params_and_sub_param_override(plan):
    s = steps(plan)
    assert s["main.nested.say"].argv[-1] == "hello"
    assert s["main.nested.again"].argv[-1] == "overridden"


def test_for_loop_unrolled_with_index(plan):
    s = steps(plan)
    assert s["main.loop.0.show"].argv[-1] == "a-0" and s["main.loop.1.show"].argv[-1] == "b-1"
    assert s["main.loop.1.show"].loop == {"var": "item", "value": "b", "index": 1, "scatter": -1, "count": 2}


def test_runtime_values_shown_as_text_and_flagged(plan):
    g = steps(plan)["main.glob"]
    assert g.argv[-1] == "=GLOB('*.fits')" and "msg" in g.unresolved
    assert isinstance(g.skip, Unresolved)


def test_backend_selection_and_merged_settings(plan):
    s = steps(plan)
    assert s["main.first"].backend == "native"
    mk = s["main.mk"]
    assert mk.backend == "singularity"
    assert mk.settings["singularity"]["contain"] is False  # from the cab
    assert mk.settings["singularity"]["bind_dirs"]["data"]["mode"] == "ro"  # from opts.backend


def test_backend_override():
    recipe, config = load_recipe(GOOD)
    p = plan_recipe(recipe, config, {"auto.msg": "x"}, backend="native")
    assert {s.backend for s in p.steps} == {"native"}


def test_to_dict_is_json(plan):
    d = json.loads(json.dumps(plan.to_dict()))
    assert d["recipe"] == "main"
    first = d["steps"][0]
    assert set(first) >= {"name", "cab", "backend", "argv", "settings"}
    assert first["cab"] == "echo" and first["settings"]["select"] == ["native"]


def test_missing_required_input_is_an_error_with_location():
    recipe, config = load_recipe(GOOD)
    p = plan_recipe(recipe, config, {})
    (err,) = p.problems.errors
    assert err.key == "main.auto.msg" and "missing required parameter" in err.message
    assert err.loc.line == line_of(GOOD, "    auto:")
    assert "msg" in steps(p)["main.auto"].unresolved


def test_unknown_cli_param_and_wrong_dtype():
    recipe, config = load_recipe(GOOD)
    p = plan_recipe(recipe, config, {"auto.msg": "x", "nope": 1, "count": "many"})
    codes = sorted(e.code for e in p.problems.errors)
    assert codes == ["unknown-param", "wrong-dtype"]


def test_alias_value_pushed_down_and_step_param_override():
    recipe, config = load_recipe(GOOD)
    p = plan_recipe(recipe, config, {"auto.msg": "x", "count": 5, "first.msg": "direct"})
    assert steps(p)["main.first"].argv == ["echo", "--n", "5", "direct"]


def test_previous_outputs_unresolved(tmp_path):
    f = write(tmp_path, "p.yml", """\
cabs:
  gen:
    command: gen
    outputs: {n: int}
  use:
    command: use
    inputs: {x: {dtype: int, policies: {positional: true}}}
r:
  steps:
    a: {cab: gen}
    b: {cab: use, params: {x: =previous.n}}
    c: {cab: use, params: {x: "=steps.a.n"}}
""")
    recipe, config = load_recipe(f)
    p = plan_recipe(recipe, config)
    b, c = p.steps[1], p.steps[2]
    assert b.argv == ["use", "=previous.n"] and "x" in b.unresolved
    assert c.argv == ["use", "=steps.a.n"] and "x" in c.unresolved
    assert not p.problems.errors


def test_loop_over_unknown_values_is_kept_as_one_unresolved_iteration(tmp_path):
    f = write(tmp_path, "l.yml", """\
cabs:
  e: {command: e, inputs: {v: {dtype: str, policies: {positional: true}}}}
r:
  inputs: {vals: "List[str]"}
  for_loop: {var: v, over: vals}
  steps:
    s: {cab: e, params: {v: =recipe.v}}
""")
    recipe, config = load_recipe(f)
    p = plan_recipe(recipe, config)
    assert [s.name for s in p.steps] == ["r.0.s"] and "v" in p.steps[0].unresolved


def test_command_substitution(tmp_path):
    f = write(tmp_path, "c.yml", """\
cabs:
  e: {command: "run-{current.tool}", args: ["--in={current.tool}"], inputs: {tool: str}}
r:
  steps:
    s: {cab: e, params: {tool: x}}
""")
    recipe, config = load_recipe(f)
    assert plan_recipe(recipe, config).steps[0].argv == ["run-x", "--in=x", "--tool", "x"]


def test_resolve_is_pure_and_does_not_mutate_recipe():
    recipe, config = load_recipe(GOOD)
    before = {k: dict(s.params) for k, s in recipe.steps.items()}
    resolve_recipe(recipe, config.tree, {"auto.msg": "x", "count": 3})
    assert {k: dict(s.params) for k, s in recipe.steps.items()} == before


def test_ns_dotted_keys_and_evaluate():
    ns = {"recipe": NS({"input_ms.path": "a.ms", "x": 2})}
    assert evaluate("{recipe.input_ms.path}", ns) == "a.ms"
    assert evaluate("=recipe.x + 1", ns) == 3
    assert isinstance(evaluate("=recipe.nope", ns), Unresolved) or evaluate("=recipe.nope", ns) is not None
    assert isinstance(evaluate("{config.run.date}", {"config": NS()}), Unresolved)


@pytest.mark.skipif(not CORPUS.exists(), reason="shared corpus not available")
def test_corpus_nesting_plan():
    recipe, config = load_recipe(CORPUS / "stimela-tests" / "test_nesting.yml", "demo_recipe")
    p = plan_recipe(recipe, config, backend="native")
    assert p.steps[0].argv[0] == "echo" and not p.problems.errors
