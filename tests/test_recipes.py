"""Building recipes: steps, cab/recipe references, params, aliases, for_loop, choice of recipe, cache."""

import pytest

from airflow_provider_stepcab.recipe import api
from airflow_provider_stepcab.recipe.api import load_all, load_recipe, load_recipe_result
from airflow_provider_stepcab.recipe.errors import RecipeError
from airflow_provider_stepcab.recipe.model import UNSET
from recipe_helpers import CORPUS, DATA, line_of, write

GOOD = DATA / "good.yml"

CABS = """\
cabs:
  echo:
    command: echo
    inputs:
      a: {dtype: str, required: true}
      b: {dtype: int, default: 2}
      c: str
    outputs:
      out: {dtype: File, implicit: "{current.a}.out"}
"""


def test_default_recipe_and_steps():
    recipe, config = load_recipe(GOOD)
    assert recipe.name == "main"
    assert list(recipe.steps) == ["first", "mk", "after", "nested", "loop", "glob", "auto"]
    first = recipe.steps["first"]
    assert first.cab_name == "echo" and first.cab.command == "echo"
    assert first.param_locs["msg"].line == line_of(GOOD, 'msg: "{recipe.prefix}.{recipe.suffix}"')
    assert recipe.steps["after"].tags == ["never"]
    assert recipe.steps["glob"].skip == "=EXISTS('nothing-here')"
    assert recipe.steps["mk"].backend == {"select": "singularity"}


def test_nested_recipe_by_name_and_sub_params():
    recipe, _ = load_recipe(GOOD)
    nested = recipe.steps["nested"]
    assert nested.recipe_name == "sub" and nested.recipe.name == "sub"
    assert nested.params["again.msg"] == "overridden"
    assert list(nested.recipe.steps) == ["say", "again"]


def test_for_loop_parsed_and_over_input_required():
    recipe, _ = load_recipe(GOOD, "looped")
    fl = recipe.for_loop
    assert (fl.var, fl.over, fl.scatter) == ("item", "items", -1)
    assert recipe.inputs["items"].required


def test_explicit_and_auto_aliases():
    recipe, _ = load_recipe(GOOD)
    assert recipe.aliases["count"] == ["first.n"]
    assert recipe.inputs["count"].default == 1 and not recipe.inputs["count"].required
    # unset required step parameter becomes an auto-aliased recipe input
    assert recipe.aliases["auto.msg"] == ["auto.msg"]
    assert recipe.inputs["auto.msg"].required and recipe.inputs["auto.msg"].category == "Required"
    # nested auto-aliases propagate up
    assert "auto.n" not in recipe.inputs  # has a default: not aliased


def test_alias_targets_cab_spec_glob_and_dollar(tmp_path):
    p = write(tmp_path, "a.yml", CABS + """\
r:
  inputs:
    b:
      default: 7
      aliases: ['(echo).$']
  aliases:
    c: ['s*.c']
    x.a: [s1.$]
  steps:
    s1: {cab: echo}
    s2: {cab: echo, params: {a: z, c: set}}
""")
    recipe, _ = load_recipe(p)
    assert recipe.aliases["b"] == ["s1.b", "s2.b"]
    assert recipe.inputs["b"].default == 7
    assert recipe.aliases["c"] == ["s1.c"]  # s2.c is set explicitly: the glob skips it
    assert recipe.aliases["x.a"] == ["s1.a"] and recipe.inputs["x.a"].required
    assert "s2.a" not in recipe.inputs  # set: not auto-aliased
    assert recipe.outputs == {}  # implicit outputs are not auto-aliased


def test_alias_problems_have_locations(tmp_path):
    p = write(tmp_path, "a.yml", CABS + """\
r:
  inputs:
    dup: str
  aliases:
    dup: [s1.c]
    nodot: [s1]
    unknown: [s1.nope]
    impl: [s1.out, s2.out]
  steps:
    s1: {cab: echo, params: {a: x}}
    s2: {cab: echo, params: {a: x}}
""")
    result = load_recipe_result(p)
    msgs = {p.message.split(": ", 1)[1]: p.loc.line for p in result.problems.errors}
    assert msgs["alias 'dup' also appears under inputs or outputs"] == line_of(p, "dup: [s1.c]")
    assert msgs["alias 'nodot': invalid target 's1' (missing dot)"] == line_of(p, "nodot:")
    assert msgs["alias 'unknown' refers to unknown step parameter 's1.nope'"] == line_of(p, "unknown:")
    assert msgs["output alias 'impl' is defined more than once"] == line_of(p, "impl:")


def test_inline_cab_and_inline_recipe_and_dotted_recipe(tmp_path):
    p = write(tmp_path, "i.yml", """\
lib:
  misc:
    recipes:
      tiny:
        steps:
          t: {cab: {command: "true"}}
r:
  steps:
    inline-cab:
      cab:
        command: ls
        inputs: {path: {dtype: str, policies: {positional: true}}}
      params: {path: /}
    inline-rec:
      recipe:
        steps:
          x: {cab: {command: "true"}}
    dotted:
      recipe: lib.misc.recipes.tiny
""")
    recipe, _ = load_recipe(p)
    assert recipe.steps["inline-cab"].cab.command == "ls" and recipe.steps["inline-cab"].cab_name is None
    assert list(recipe.steps["inline-rec"].recipe.steps) == ["x"]
    assert recipe.steps["dotted"].recipe.name == "tiny"


def test_recursive_recipe_reference_is_an_error(tmp_path):
    p = write(tmp_path, "rec.yml", "a:\n  steps:\n    s: {recipe: b}\nb:\n  steps:\n    s: {recipe: a}\nDEFAULT: a\n")
    result = load_recipe_result(p)
    assert any("recursive recipe reference: a -> b -> a" in e.message for e in result.problems.errors)


def test_recipe_choice_rules(tmp_path):
    one = write(tmp_path, "one.yml", "only:\n  steps:\n    s: {cab: {command: x}}\n")
    assert load_recipe(one)[0].name == "only"
    two = write(tmp_path, "two.yml", "a:\n  steps: {}\nb:\n  steps: {}\n")
    with pytest.raises(RecipeError, match="recipes are: a, b"):
        load_recipe(two)
    assert load_recipe(two, "b")[0].name == "b"
    with pytest.raises(RecipeError, match="recipe 'zz' not found"):
        load_recipe(two, "zz")


def test_for_loop_errors(tmp_path):
    p = write(tmp_path, "fl.yml", """\
r:
  inputs: {x: str}
  for_loop: {var: x, over: nope, scatter: lots}
  steps: {}
""")
    errs = {e.key: e for e in load_recipe_result(p).problems.errors}
    assert errs["r.for_loop.var"].loc.line == 3
    assert "not a defined input" in errs["r.for_loop.over"].message
    assert "bool or int expected" in errs["r.for_loop.scatter"].message


def test_load_all_isolates_broken_files_and_skips_libraries():
    results = {r.file.rsplit("/", 1)[-1]: r for r in load_all(DATA)}
    assert set(results) >= {"good.yml", "bad.yml", "broken_yaml.yml"}
    assert results["good.yml"].ok and results["good.yml"].default == "main"
    assert set(results["good.yml"].recipes) == {"sub", "looped", "main"}
    assert not results["broken_yaml.yml"].ok and not results["broken_yaml.yml"].recipes
    assert not results["bad.yml"].ok and "broken" in results["bad.yml"].recipes


def test_cache_is_keyed_by_content(tmp_path):
    p = write(tmp_path, "c.yml", "r:\n  steps:\n    s: {cab: {command: a}}\n")
    api.clear_cache()
    r1, _ = load_recipe(p)
    r2, _ = load_recipe(p)
    assert r1 is r2
    p.write_text("r:\n  steps:\n    s: {cab: {command: b}}\n")
    r3, _ = load_recipe(p)
    assert r3 is not r1 and r3.steps["s"].cab.command == "b"


def test_cache_sees_changes_in_included_files(tmp_path):
    inc = write(tmp_path, "inc.yml", "cabs:\n  c: {command: one}\n")
    p = write(tmp_path, "main.yml", f"_include: [{inc.name}]\nr:\n  steps:\n    s: {{cab: c}}\n")
    api.clear_cache()
    assert load_recipe(p)[0].steps["s"].cab.command == "one"
    inc.write_text("cabs:\n  c: {command: two}\n")
    assert load_recipe(p)[0].steps["s"].cab.command == "two"


@pytest.mark.skipif(not CORPUS.exists(), reason="shared corpus not available")
@pytest.mark.parametrize("name", ["test_aliasing.yml", "test_nesting.yml", "test_loop_recipe.yml",
                                  "test_subrecipes.yml", "test_wranglers.yml", "test_casa.yml"])
def test_corpus_recipes_build_without_errors(name):
    for result in load_all(CORPUS / "stimela-tests" / name):
        assert result.ok, [str(p) for p in result.problems.errors]
        assert result.recipes


def test_unset_is_not_a_default():
    recipe, _ = load_recipe(GOOD, "sub")
    assert recipe.inputs["word"].default is UNSET
