"""The DAG trigger form as Airflow 3.3's UI sees it: the serialized DAG's params.

Airflow's form (``FlexibleForm/isParamRequired``) marks a field required when its schema has a
``type`` that does not include ``"null"``; the API refuses a run whose params do not validate. So:
required exactly for inputs nothing in the recipe sets (auto-aliased ``step.param`` ones included),
never for inputs with a default, inputs ``assign``/``assign_based_on`` fill, or the control params.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from airflow_provider_stepcab.dag_factory import build_dags

pytestmark = pytest.mark.airflow
CORPUS = Path(os.environ.get("STEPCAB_CORPUS", Path(__file__).resolve().parents[2] / "shared" / "corpus"))
CONTROL = ("select", "skip_steps", "tags", "skip_tags", "steps", "stepcab_workdir")
# a jove-pol-like recipe: cult-cargo's msutils.addcol needs colname and likecol; only colname is set
JOVE = """\
_include: (cultcargo)msutils.yml
jove-pol:
  inputs:
    ms: {dtype: MS, required: true}
    band: {dtype: str, required: true, default: L}
    niter: {dtype: int, default: 100}
  steps:
    add-corrected-data:
      cab: msutils.addcol
      params: {msname: =recipe.ms, colname: CORRECTED_DATA}
"""


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    from airflow_provider_stepcab.dag_factory import spec

    monkeypatch.setenv("STEPCAB_CACHE_DIR", str(tmp_path / "cache"))
    spec.clear_memory()


def served(dag):
    """The DAG as the API server has it: serialized, then deserialized."""
    from airflow.serialization.serialized_objects import DagSerialization

    return DagSerialization.from_dict(DagSerialization.to_dict(dag))


def ui_required(schema: dict) -> bool:
    """Airflow 3.3's trigger form rule (``isRequired``): a type, and not one including null."""
    kind = schema.get("type")
    return bool(kind) and (not isinstance(kind, list) or "null" not in kind)


def form(dag) -> dict:
    """``{param name: (required in the form, default or None when it has none)}``."""
    from airflow.serialization.definitions.notset import is_arg_set

    params = served(dag).params
    return {name: (ui_required(params.get_param(name).schema),
                   params.get_param(name).value if is_arg_set(params.get_param(name).value) else None)
            for name in params}


def only_dag(path: Path):
    [dag] = build_dags(files=[str(path)], on_error="raise").values()
    return dag


def test_input_filled_by_assign_based_on_is_not_required():
    dag = only_dag(CORPUS / "patterns" / "based-on-fills-required-input.yml")
    fields = form(dag)
    assert fields["dir_out"] == (False, None)
    assert "assign_based_on" in served(dag).params.get_param("dir_out").description
    assert fields["obs"] == (False, "M2")
    served(dag).params.validate()  # a run triggered without any value is accepted


def test_required_inputs_nobody_sets_are_shown_as_required(tmp_path):
    path = tmp_path / "jove-pol.yml"
    path.write_text(JOVE)
    fields = form(only_dag(path))
    assert fields["ms"] == (True, None)
    assert fields["add-corrected-data.likecol"] == (True, None)  # an auto-alias, shown and required
    assert "add-corrected-data.colname" not in fields  # set by the step
    assert fields["band"] == (False, "L") and fields["niter"] == (False, 100)
    from airflow.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError):
        served(only_dag(path)).params.validate()


def test_control_params_are_optional(tmp_path):
    path = tmp_path / "jove-pol.yml"
    path.write_text(JOVE)
    fields = form(only_dag(path))
    for name in CONTROL:
        assert fields[name][0] is False, name
    assert fields["select"] == (False, []) and fields["steps"] == (False, {})


def test_nothing_optional_is_required_in_the_example_recipes():
    """Every param of every example recipe's DAG: required in the form only when the recipe says the
    input is required and gives it no value."""
    from airflow_provider_stepcab.recipe.api import load_recipe
    from airflow_provider_stepcab.recipe.requirements import required_unset

    root = Path(__file__).resolve().parent.parent / "example_recipes"
    dags = build_dags(folders=[str(root)])
    assert dags
    for dag in dags.values():
        recipe_file, recipe_name = next((t.recipe_file, t.recipe_name) for t in dag.tasks if hasattr(t, "recipe_file"))
        recipe, _ = load_recipe(recipe_file, recipe_name)
        needed = {name for name, _ in required_unset(recipe)}
        required = {name for name, (req, _) in form(dag).items() if req}
        assert required == needed, dag.dag_id


UNTYPED = """\
cabs:
  say: {command: echo, inputs: {n: {policies: {positional: true}}}}
mosaic:
  inputs:
    ncpu: {info: Number of CPUs to use, default: 64, aliases: [say.n]}
    label: {dtype: str, default: 64}
    note: {info: "untyped, without default"}
  steps:
    say: {cab: say}
"""


def test_untyped_input_with_an_int_default_is_accepted_as_the_recipe_accepts_it(tmp_path):
    """ddf-mosaic's ``ncpu: {default: 64}`` has no dtype (Stimela: ``str``, which takes numbers and
    booleans too): the run with the default, and a conf giving a number, text or boolean, validate."""
    from airflow.exceptions import ParamValidationError

    path = tmp_path / "mosaic.yml"
    path.write_text(UNTYPED)
    params = served(only_dag(path)).params
    assert form(only_dag(path))["ncpu"] == (False, 64)
    assert params.validate()["ncpu"] == 64
    for value in (32, "32", 1.5, True, None):  # a run conf, checked as the API checks it
        assert params.deep_merge({"note": value, "ncpu": value}).validate()["note"] == value
    assert params.get_param("label").resolve(raises=True) == 64  # dtype str, default 64: valid
    with pytest.raises(ParamValidationError):
        params.deep_merge({"note": [1, 2]}).validate()  # the recipe refuses a list for a str input too
