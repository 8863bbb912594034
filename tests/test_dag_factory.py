"""The DAG factory through real Airflow: a DagBag over ``tests/data/dagfolder``.

The folder holds the loader (a copy of ``dags/stepcab_dags.py``), good recipes, a cab-only library
file, an unrelated YAML file and two broken recipes (bad YAML; an unknown cab). AIRFLOW_HOME and
the other Airflow settings come from ``conftest.py`` (a temporary home per session).
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from airflow_provider_stepcab.dag_factory import RecipeImportError, build_dags

pytestmark = pytest.mark.airflow
FOLDER = Path(__file__).resolve().parent / "data" / "dagfolder"
REPO = Path(__file__).resolve().parent.parent
GOOD = {"pipeline", "multi", "multi__alpha", "withdefault", "loops", "loops__toploop", "dataflow"}


def dagbag(folder: Path = FOLDER):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(str(folder))


@pytest.fixture(scope="module")
def bag():
    return dagbag()


def upstream(dag) -> dict:
    return {t.task_id: sorted(t.upstream_task_ids) for t in dag.tasks}


def test_loader_in_fixture_is_the_shipped_loader():
    assert (FOLDER / "stepcab_dags.py").read_text() == (REPO / "dags" / "stepcab_dags.py").read_text()
    text = (REPO / "dags" / "stepcab_dags.py").read_text().lower()
    assert "airflow" in text and "dag" in text  # dag_discovery_safe_mode


def test_good_dags_present_and_broken_files_reported(bag):
    assert set(bag.dags) == GOOD
    assert set(bag.import_errors) == {str(FOLDER / "bad_cab.yml"), str(FOLDER / "broken_yaml.yml")}
    bad_cab = bag.import_errors[str(FOLDER / "bad_cab.yml")]
    assert f"{FOLDER / 'bad_cab.yml'}:8: badcab.steps.bad.cab: unknown cab 'no_such_cab'" in bad_cab
    bad_yaml = bag.import_errors[str(FOLDER / "broken_yaml.yml")]
    assert f"{FOLDER / 'broken_yaml.yml'}:6:" in bad_yaml and "invalid YAML" in bad_yaml
    for dag in bag.dags.values():
        assert dag.fileloc == str(FOLDER / "stepcab_dags.py")


def test_pipeline_tasks_groups_and_dependencies(bag):
    dag = bag.dags["pipeline"]
    assert upstream(dag) == {"flag": [], "image.dirty": ["flag"], "image.clean": ["image.dirty"],
                             "masking": ["image.clean"]}
    assert "image" in dag.task_group.children and dag.task_group.children["image"].group_id == "image"
    for task in dag.tasks:
        assert type(task).__name__ == "StepcabNativeOperator"
        assert str(task.trigger_rule) in ("none_failed", "TriggerRule.NONE_FAILED")
        assert task.recipe_file == str(FOLDER / "pipeline.yml") and task.recipe_name == "pipeline"
    assert dag.get_task("image.clean").step_path == ("image", "clean")


def test_pipeline_settings(bag):
    dag = bag.dags["pipeline"]
    assert dag.schedule == "@daily" and dag.timetable.expression == "0 0 * * *"
    assert dag.start_date == dt.datetime(2024, 3, 1, tzinfo=dt.timezone.utc)
    assert dag.catchup is True and dag.max_active_runs == 1
    assert dag.dagrun_timeout == dt.timedelta(hours=12)
    assert set(dag.tags) == {"stepcab", "imaging", "test"}
    assert dag.description == "Flag, image and mask a measurement set."
    flag, clean = dag.get_task("flag"), dag.get_task("image.clean")
    assert flag.owner == "radio" and flag.retries == 2 and flag.retry_delay == dt.timedelta(minutes=5)
    assert (flag.pool, flag.queue, flag.execution_timeout) == ("stepcab_pool", "q1", dt.timedelta(hours=1))
    assert (clean.pool, clean.execution_timeout) == ("gpu", dt.timedelta(hours=2))  # opts.airflow.tasks
    assert "| `size` | `int` | `256` |" in dag.doc_md and "Second line of the description." in dag.doc_md
    assert "**image** (recipe" in dag.doc_md


def test_defaults_without_settings(bag):
    dag = bag.dags["multi"]
    assert dag.start_date == dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    assert dag.catchup is False and dag.schedule is None and set(dag.tags) == {"stepcab"}
    task = dag.get_task("m1")
    assert task.owner == "stepcab" and task.retries == 0 and task.execution_timeout is None


def test_params_from_inputs(bag):
    params = bag.dags["pipeline"].params
    assert params["size"] == 256 and params.get_param("size").schema["type"] == ["integer", "null"]
    assert params.get_param("mode").schema["enum"] == ["auto", "manual", None]
    assert params.get_param("ms").description == "the measurement set"
    assert params.get_param("prefix").value is None and "computed" in params.get_param("prefix").description
    alpha = bag.dags["multi__alpha"].params
    assert not alpha.get_param("text").has_value                      # required, no default
    assert alpha.get_param("count").schema["type"] == ["integer", "null"]
    assert alpha.get_param("names").schema["items"]["enum"] == ["x", "y", "z"]
    for name in ("select", "skip_steps", "tags", "skip_tags", "steps", "stepcab_workdir"):
        assert name in alpha


def test_which_recipes_become_dags(bag):
    assert "withdefault" in bag.dags and not any(d.startswith("withdefault__") for d in bag.dags)
    assert upstream(bag.dags["withdefault"]) == {"first": [], "sub.h": ["first"]}
    assert not any("cabs_only" in d or "notes" in d for d in bag.dags)


def test_dataflow_inference(bag):
    assert upstream(bag.dags["dataflow"]) == {
        "flag": [], "img-a": ["flag"], "img-b": ["flag"], "side": [], "show-a": ["img-a"],
        "after": ["show-a"], "combine": ["img-a", "img-b"]}


def test_for_loop_mapping_structure(bag):
    dag = bag.dags["loops"]
    assert upstream(dag) == {"prep": [], "fields.cal": ["prep"], "fields.img": ["fields.cal"],
                             "each-ms__for_loop": ["fields.img"], "each-ms.proc": ["each-ms__for_loop"],
                             "final": ["each-ms.proc"]}
    fields = dag.task_group.children["fields"]
    assert type(fields).__name__ == "MappedTaskGroup"
    assert fields._expand_input.value == {"loop_value": ["f1", "f2", "f3"]}
    assert dag.get_task("fields.cal").max_active_tis_per_dagrun == 2          # scatter: 2
    each = dag.task_group.children["each-ms"]
    assert type(each).__name__ == "MappedTaskGroup" and dag.get_task("each-ms.proc").max_active_tis_per_dagrun == 1
    values_task = dag.get_task("each-ms__for_loop")
    assert type(values_task).__name__ == "StepcabLoopValuesOperator" and values_task.step_path == ("each-ms",)
    top = bag.dags["loops__toploop"]
    assert upstream(top) == {"one": [], "two": ["one"]}                       # ids without the group prefix
    assert top.get_task("one").max_active_tis_per_dagrun is None              # scatter: -1
    assert "loop_value" in top.get_task("one").template_fields


def test_loop_values_at_run_time():
    from airflow_provider_stepcab.dag_factory.loops import loop_values
    from airflow_provider_stepcab.operators.overrides import parse_overrides
    from airflow_provider_stepcab.recipe.api import load_recipe

    recipe, loaded = load_recipe(str(FOLDER / "loops.yml"), "loops")
    fetch = lambda *a, **k: {}  # noqa: E731 - earlier steps pushed nothing
    ov = parse_overrides({}, recipe, {"mss": ["x.ms", "y.ms", "z.ms"]})
    assert loop_values(recipe, loaded, ("each-ms",), ov.recipe_params, ov, fetch, "loops") == ["x.ms", "y.ms", "z.ms"]
    ov = parse_overrides({}, recipe, {})
    assert loop_values(recipe, loaded, ("each-ms",), ov.recipe_params, ov, fetch, "loops") == ["a.ms", "b.ms"]


def test_serializable(bag):
    from airflow.serialization.serialized_objects import DagSerialization

    for dag in bag.dags.values():
        DagSerialization.to_dict(dag)


def test_parse_spawns_no_subprocess_and_no_network(monkeypatch):
    from airflow_provider_stepcab.recipe.api import clear_cache

    calls = []

    def forbid(name):
        def _f(*a, **k):
            calls.append(name)
            raise AssertionError(f"{name} called at parse time")
        return _f

    clear_cache()
    monkeypatch.setattr(subprocess.Popen, "__init__", forbid("Popen"))
    monkeypatch.setattr(os, "fork", forbid("fork"))
    monkeypatch.setattr(os, "posix_spawn", forbid("posix_spawn"))
    monkeypatch.setattr(os, "system", forbid("system"))
    monkeypatch.setattr(socket.socket, "connect", forbid("connect"))
    fresh = dagbag()
    assert set(fresh.dags) == GOOD and not calls


def test_parsing_context_builds_only_the_requested_dag(monkeypatch):
    import airflow_provider_stepcab.dag_factory.spec as spec

    loaded = []
    real = spec.file_spec
    monkeypatch.setattr(spec, "file_spec", lambda path, *a, **kw: loaded.append(Path(path).name) or real(path, *a, **kw))
    monkeypatch.setenv("_AIRFLOW_PARSING_CONTEXT_DAG_ID", "multi__alpha")
    dags = build_dags(folders=[str(FOLDER)])
    assert list(dags) == ["multi__alpha"] and loaded == ["multi.yml"]


def test_broken_setting_and_dag_id_clash(tmp_path):
    shutil.copy(FOLDER / "stepcab_dags.py", tmp_path)
    (tmp_path / "a.yml").write_text("cabs: {say: {command: echo}}\na:\n  steps: {s: {cab: say}}\n")
    (tmp_path / "b.yml").write_text("opts:\n  airflow:\n    retries: lots\n"
                                    "cabs: {say: {command: echo}}\nb:\n  steps: {s: {cab: say}}\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.yaml").write_text("cabs: {say: {command: echo}}\na:\n  steps: {s: {cab: say}}\n")
    bag = dagbag(tmp_path)
    assert set(bag.dags) == {"a"}
    assert set(bag.import_errors) == {str(tmp_path / "b.yml"), str(tmp_path / "sub" / "a.yaml")}
    assert f"{tmp_path / 'b.yml'}:3: opts.airflow.retries:" in bag.import_errors[str(tmp_path / "b.yml")]
    assert "dag_id 'a' is already used" in bag.import_errors[str(tmp_path / "sub" / "a.yaml")]


def test_scheduled_recipe_with_required_input_is_reported(tmp_path):
    (tmp_path / "s.yml").write_text("opts: {airflow: {schedule: '@daily'}}\ncabs: {say: {command: echo}}\n"
                                    "s:\n  inputs: {ms: {dtype: str, required: true}}\n"
                                    "  steps: {x: {cab: say}}\n")
    with pytest.raises(RecipeImportError, match="required input.*ms.*schedule"):
        build_dags(files=[str(tmp_path / "s.yml")], on_error="raise")


def test_extra_recipe_folders(tmp_path, monkeypatch):
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "more.yml").write_text("cabs: {say: {command: echo}}\nmore:\n  steps: {s: {cab: say}}\n")
    monkeypatch.setenv("STEPCAB_RECIPE_FOLDERS", f"{extra}:/does/not/exist")
    empty = tmp_path / "dags"
    empty.mkdir()
    dags = build_dags({"__file__": str(empty / "stepcab_dags.py")})
    assert list(dags) == ["more"]


def test_on_error_raise_lists_file_and_line():
    with pytest.raises(RecipeImportError) as info:
        build_dags(files=[str(FOLDER / "bad_cab.yml"), str(FOLDER / "multi.yml")], on_error="raise")
    assert f"{FOLDER / 'bad_cab.yml'}:8:" in str(info.value)


def test_only_steps_with_file_outputs_declare_an_asset_alias(tmp_path):
    """An AssetAlias outlet costs Airflow work at the end of every task: only steps that can emit
    File/Directory/MS assets declare one."""
    (tmp_path / "assets.yml").write_text(
        "cabs:\n"
        "  touch: {command: touch, outputs: {out: {dtype: File, policies: {positional: true}}}}\n"
        "  say: {command: echo, inputs: {text: {dtype: str, policies: {positional: true}}},\n"
        "        outputs: {n: {dtype: int, implicit: 1}}}\n"
        "assets:\n  steps:\n    make: {cab: touch, params: {out: x.txt}}\n    tell: {cab: say, params: {text: hi}}\n")
    dag = build_dags(folders=[str(tmp_path)])["assets"]
    outlets = {t.task_id: [type(o).__name__ for o in t.outlets] for t in dag.tasks}
    assert outlets == {"make": ["AssetAlias"], "tell": []}


NESTED = """\
cabs:
  say: {command: echo, inputs: {scan: {dtype: int, policies: {positional: true}}}}
inner:
  inputs: {scan: int}
  for_loop: {var: stokes, over: [I, V]}
  steps:
    image: {cab: say, params: {scan: =recipe.scan}}
outer:
  inputs:
    scans: {dtype: "List[int]", default: [3, 5]}
  for_loop: {var: scan, over: OVER}
  steps:
    pre: {cab: say, params: {scan: =recipe.scan}}
    pol: {recipe: inner, params: {scan: =recipe.scan}}
"""


def test_nested_loop_with_a_literal_outer_list_is_unrolled_into_task_groups(tmp_path):
    (tmp_path / "nested.yml").write_text(NESTED.replace("OVER", "[3, 5]"))
    dag = build_dags(files=[str(tmp_path / "nested.yml")], on_error="raise")["nested__outer"]
    tasks = {t.task_id: t for t in dag.tasks}
    assert sorted(tasks) == ["0.pol.image", "0.pre", "1.pol.image", "1.pre"]
    assert tasks["1.pol.image"].loop_indices == {"": 1} and tasks["1.pre"].upstream_task_ids == {"0.pol.image"}
    assert [g for g in dag.task_group_dict if g.endswith("pol")] == ["0.pol", "1.pol"]  # mapped inside each


def test_nested_loop_over_an_input_default_is_unrolled_and_the_input_fixed(tmp_path):
    """``over: scans`` with a literal default: known at parse time, so unrolled as a literal list is;
    the trigger form shows the default and says a run can't change it."""
    (tmp_path / "nested.yml").write_text(NESTED.replace("OVER", "scans"))
    dag = build_dags(files=[str(tmp_path / "nested.yml")], on_error="raise")["nested__outer"]
    tasks = {t.task_id: t for t in dag.tasks}
    assert sorted(tasks) == ["0.pol.image", "0.pre", "1.pol.image", "1.pre"]
    assert tasks["1.pol.image"].loop_indices == {"": 1} and tasks["1.pre"].upstream_task_ids == {"0.pol.image"}
    assert [g for g in dag.task_group_dict if g.endswith("pol")] == ["0.pol", "1.pol"]
    assert dag.task_group_dict["0"].tooltip == "scan=3"
    scans = dag.params.get_param("scans")
    assert scans.value == [3, 5] and "fixed for this DAG, a run can't change it" in scans.description
    assert "stepcab run" in scans.description


def test_nested_loop_whose_outer_values_are_known_only_at_run_time_is_an_error_with_its_line(tmp_path):
    path = tmp_path / "nested.yml"
    path.write_text(NESTED.replace("OVER", "scans").replace("default: [3, 5]", 'default: "=GLOB(scan*)"'))
    with pytest.raises(RecipeImportError) as info:
        build_dags(files=[str(path)], on_error="raise")
    line = NESTED.splitlines().index("  for_loop: {var: stokes, over: [I, V]}") + 1
    assert f"{path}:{line}:" in str(info.value) and "literal list" in str(info.value)
