"""Run-time resolution fetches only the earlier steps a step refers to.

Each fetch is one XCom request to Airflow's API server; fetching every earlier sibling made step
``k`` of a chain cost ``k`` requests (a 100-step recipe: 4,950 per run).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_provider_stepcab.operators import resolve as R
from airflow_provider_stepcab.operators.overrides import parse_overrides
from airflow_provider_stepcab.recipe.api import load_recipe
from airflow_provider_stepcab.runtime.workdir import choose_workdir

RECIPE = """\
cabs:
  say:
    command: echo
    inputs:
      text: {dtype: str, policies: {positional: true}}
chain:
  steps:
    s0: {cab: say, params: {text: zero}}
    s1: {cab: say, params: {text: one}}
    s2: {cab: say, params: {text: two}}
    s3: {cab: say, params: {text: =previous.text}}
    s4: {cab: say, params: {text: "{steps.s1.text}-and-{steps.s0.text}"}}
    s5: {cab: say, params: {text: plain}}
"""


def resolve(tmp_path: Path, label: str) -> tuple[R.ResolvedStep, list]:
    path = tmp_path / "chain.yml"
    path.write_text(RECIPE)
    recipe, loaded = load_recipe(str(path), "chain")
    published = {(f"s{i}",): {"text": word} for i, word in enumerate(["zero", "one", "two", "two"])}
    fetched: list = []

    def fetch(step_path, *, same_loop, in_loop):
        fetched.append(step_path[-1])
        return published.get(tuple(step_path))

    workdir = choose_workdir(dag_id="chain", run_id="r1", recipe="chain", conf_value=str(tmp_path / "work"))
    step = R.resolve(recipe=recipe, loaded=loaded, step_path=(label,), recipe_params={},
                     overrides=parse_overrides({}, recipe, {}), loop_value=None, loop_index=None, fetch=fetch,
                     backend_pref=None, available=["native"], workdir=workdir, recipe_name="chain")
    return step, fetched


@pytest.mark.parametrize("label, text, fetched", [
    ("s3", "two", ["s2"]),
    ("s4", "one-and-zero", ["s1", "s0"]),
    ("s5", "plain", []),
])
def test_only_referenced_steps_are_fetched(tmp_path, label, text, fetched):
    step, calls = resolve(tmp_path, label)
    assert step.params["text"] == text
    assert sorted(calls) == sorted(fetched)


def test_lazy_params_behave_like_a_dict():
    calls = []
    lazy = R.LazyParams(lambda: calls.append(1) or {"a": 1, "b": [2]})
    assert calls == []
    assert dict(lazy) == {"a": 1, "b": [2]} and {**lazy} == {"a": 1, "b": [2]}
    assert lazy == {"a": 1, "b": [2]} and "a" in lazy and len(lazy) == 2 and lazy.get("z", 3) == 3
    assert calls == [1], "loaded once"
    import json
    import pickle

    # what is pushed to XCom goes through R.plain (json's C encoder would see an unloaded one as {})
    assert json.loads(json.dumps(R.plain({"p": R.LazyParams(lambda: {"x": 1})}))) == {"p": {"x": 1}}
    assert pickle.loads(pickle.dumps(R.LazyParams(lambda: {"x": 1}))) == {"x": 1}
    assert dict(R.LazyParams(lambda: None)) == {}


DATA = """\
cabs:
  say:
    command: echo
    inputs:
      text: {dtype: str, policies: {positional: true}}
      more: {dtype: "List[str]", policies: {positional: true}}
inner:
  inputs:
    msg: {dtype: str}
  steps:
    said: {cab: say, params: {text: =recipe.msg}}
outer:
  inputs:
    msg: {dtype: str}
  steps:
    echo: {cab: say, params: {text: "{recipe.msg}"}}
    nested: {recipe: inner, params: {msg: =recipe.msg}}
"""


def test_trigger_values_stay_data_through_the_resolver(tmp_path):
    """One marker for trigger-time data (``as_data``): a recipe input or a step param given so is
    never evaluated, also where recipe formulas pass it on (``=recipe.msg`` into a nested recipe)."""
    from airflow_provider_stepcab.recipe.data import as_data
    from airflow_provider_stepcab.recipe.resolve import resolve_recipe

    path = tmp_path / "data.yml"
    path.write_text(DATA)
    recipe, loaded = load_recipe(str(path), "outer")
    secret = "{config.run.env.SECRET}"
    given = {"msg": as_data(secret), "echo.more": as_data(["=recipe.msg", secret])}
    steps = resolve_recipe(recipe, loaded.tree, given, config_ns={"run": {"env": {"SECRET": "s3cr3t"}}},
                           allow_io=True)
    assert [(s.fqname, s.params["text"]) for s in steps] == [("outer.echo", secret), ("outer.nested.said", secret)]
    assert steps[0].params["more"] == ["=recipe.msg", secret]
    plain = resolve_recipe(recipe, loaded.tree, {"msg": secret}, config_ns={"run": {"env": {"SECRET": "s3cr3t"}}},
                           allow_io=True)
    assert plain[1].params["text"] == "s3cr3t"  # the same text written in the recipe is substituted
