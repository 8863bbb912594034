"""The resolver records where every resolved value came from (``ResolvedStep.sources``,
:mod:`airflow_provider_stepcab.recipe.sources`), the sources the Step view shows: one recipe
(``tests/data/recipes/sources.yml``) giving a cab step's parameters every way Stimela allows.
"""

from __future__ import annotations

from airflow_provider_stepcab.recipe.api import load_recipe
from airflow_provider_stepcab.recipe.data import as_data
from airflow_provider_stepcab.recipe.resolve import resolve_recipe
from airflow_provider_stepcab.recipe.sources import SOURCES
from recipe_helpers import DATA


def resolved(params=None, step_params=None):
    recipe, loaded = load_recipe(DATA / "sources.yml", "main")
    return {s.fqname: s for s in resolve_recipe(recipe, loaded.tree, params or {}, step_params=step_params)}


def test_every_value_of_a_step_has_its_source():
    steps = resolved({"fromconf": as_data("y")}, lambda path, cargo: {"h": as_data("H")} if path == ("s",) else {})
    s = steps["main.s"]
    assert s.params == {"f": 2, "g": "M1-x", "h": "H", "b": "fromrecipe", "c": "y", "d": "assigned",
                        "e": "case-m1", "a": "cabdef", "o": "out.txt"}
    assert s.sources == {"f": "formula", "g": "substitution", "h": "run conf", "b": "alias", "c": "run conf",
                         "d": "assign", "e": "assign_based_on", "a": "cab default", "o": "implicit"}
    assert set(s.sources.values()) <= set(SOURCES)


def test_without_trigger_values_the_recipe_decides():
    s = resolved()["main.s"]
    assert s.params["h"] == "literal" and s.sources["h"] == "recipe"
    assert "c" not in s.params and s.sources["b"] == "alias"  # fromconf not given; given's recipe default
    # a recipe input given as written (the command line), not as trigger-time data: passed by alias
    assert resolved({"fromconf": "z"})["main.s"].sources["c"] == "alias"


def test_sources_inside_a_looping_sub_recipe():
    steps = resolved()
    for index, item in enumerate(["p", "q"]):
        t = steps[f"main.sub.{index}.t"]
        assert t.params["b"] == item and t.sources["b"] == "formula"
        assert t.sources["c"] == "recipe" and t.sources["a"] == "cab default"
        # given to the sub-recipe as ``t.d`` by its parent step: passed down by (implicit) alias
        assert t.params["d"] == "subparam" and t.sources["d"] == "alias"
