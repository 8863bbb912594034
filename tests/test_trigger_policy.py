"""Trigger permission is not code execution (issue 15): the trigger-time override policy.

Real ``dag.test()`` runs of a DAG made by the DAG factory (the loader in the session's dags folder)
show that a refused conf runs nothing and that conf/form values reach the command line as data;
``parse_overrides`` cases pin down the policy table of ``docs/security.md``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_provider_stepcab.operators.overrides import parse_overrides
from airflow_provider_stepcab.operators.trigger_policy import TriggerPolicy
from airflow_provider_stepcab.recipe.api import load_recipe
from airflow_provider_stepcab.recipe.data import ConfValue, is_data
from airflow_provider_stepcab.recipe.errors import RecipeError
from test_native_operator import load_dags, run_dag, write_dag_file, xcom

pytestmark = pytest.mark.airflow

EXPLOIT = {"steps": {"*": {"backend": {"native": {"virtual_env": "/nonexistent; touch ~/pwned; #"}}}}}

RECIPE = """
cabs:
  write:
    command: sh -c
    inputs:
      script: {dtype: str, required: true, policies: {positional: true}}
  say:
    command: python3 -c "import sys; open('said.txt', 'w').write(sys.argv[1])"
    inputs:
      text: {dtype: str, required: true, policies: {positional: true}}
  shout:
    command: "sh -c 'echo {recipe.msg} > shout.txt'"
policy_demo:
  inputs:
    msg: {dtype: str, default: hello}
    level: {dtype: int, default: 1, choices: [1, 2, 3]}
  steps:
    first:
      cab: write
      params: {script: "echo ran > first.txt"}
    say:
      cab: say
      params: {text: =recipe.msg}
    shout:
      cab: shout
"""

LOADER = """
from airflow_provider_stepcab.dag_factory import build_dags

build_dags(globals(), folders=[{folder!r}], on_error="raise")
"""


@pytest.fixture(scope="module")
def recipe_file(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("policy-recipes")
    path = folder / "policy_demo.yml"
    path.write_text(RECIPE)
    return path


@pytest.fixture(scope="module")
def dag(airflow_db, airflow_dags_folder, recipe_file):
    loader = write_dag_file(airflow_dags_folder, "stepcab_policy_dags.py", LOADER.format(folder=str(recipe_file.parent)))
    return load_dags(loader)["policy_demo"]


@pytest.fixture()
def home(tmp_path, monkeypatch) -> Path:
    """A HOME of the test's own, so that ``~/pwned`` would land where the test looks."""
    path = tmp_path / "home"
    path.mkdir()
    monkeypatch.setenv("HOME", str(path))
    return path


def test_exploit_conf_fails_the_run_before_anything_runs(dag, tmp_path, home):
    work = tmp_path / "work"
    run, states = run_dag(dag, work, EXPLOIT)
    assert run.state == "failed"
    assert states == {"first": "failed", "say": "upstream_failed", "shout": "upstream_failed"}, states
    assert not (home / "pwned").exists()
    assert not (work / "first.txt").exists()  # the first step's command never ran


def test_deployer_can_widen_but_a_widened_path_is_still_quoted(dag, tmp_path, home, monkeypatch):
    monkeypatch.setenv("AIRFLOW__STEPCAB__TRIGGER_OVERRIDES_ALLOW", "backend.native.virtual_env")
    run, states = run_dag(dag, tmp_path / "work", EXPLOIT)
    assert states["first"] == "failed"  # '/nonexistent; touch ~/pwned; #/bin/activate' does not exist
    assert not (home / "pwned").exists()


def test_form_values_are_data_never_substituted(dag, tmp_path, monkeypatch):
    monkeypatch.setenv("STEPCAB_TEST_SECRET", "s3cr3t")
    work = tmp_path / "work"
    run, states = run_dag(dag, work, {"msg": "{config.run.env.STEPCAB_TEST_SECRET}"})
    assert run.state == "success", states
    assert (work / "said.txt").read_text() == "{config.run.env.STEPCAB_TEST_SECRET}"
    assert xcom(run, "say", "stepcab_params") == {"text": "{config.run.env.STEPCAB_TEST_SECRET}"}


def test_step_param_from_conf_is_not_a_formula(dag, tmp_path):
    work = tmp_path / "work"
    run, states = run_dag(dag, work, {"steps": {"say": {"params": {"text": "=recipe.level + 41"}}}})
    assert run.state == "success", states
    assert (work / "said.txt").read_text() == "=recipe.level + 41"


def test_conf_value_in_a_cab_shell_command_is_quoted(dag, tmp_path):
    work = tmp_path / "work"
    marker = tmp_path / "marker"
    msg = f"hi'; touch {marker}; echo '$(touch {marker})"
    run, states = run_dag(dag, work, {"msg": msg})
    assert run.state == "success", states
    assert not marker.exists()
    assert (work / "shout.txt").read_text() == msg + "\n"


def test_a_bad_value_fails_before_anything_runs(dag, tmp_path):
    work = tmp_path / "work"
    run, states = run_dag(dag, work, {"steps": {"say": {"params": {"text": ["not", "a", "str"]}}}})
    assert states["first"] == "failed" and not (work / "first.txt").exists()


# ------------------------------------------------------------------------------- the policy table

POLICY_RECIPE = """
cabs:
  echo:
    command: echo
    image: alpine
    inputs:
      text: {dtype: str, policies: {positional: true}}
      mode: {dtype: str, choices: [fast, slow], default: fast}
opts:
  airflow:
    trigger_limits: {time: "2:00:00", mem: 8G}
pol:
  inputs:
    n: {dtype: int, default: 3}
    name: {dtype: str, default: demo}
  steps:
    a: {cab: echo, params: {text: x}}
    b: {cab: echo, params: {text: y}, backend: {select: [podman, native]}}
"""


@pytest.fixture(scope="module")
def pol(tmp_path_factory):
    path = tmp_path_factory.mktemp("pol") / "pol.yml"
    path.write_text(POLICY_RECIPE)
    recipe, loaded = load_recipe(str(path), "pol")
    return recipe, loaded.tree


def parse(conf, pol, params=None, policy=None):
    recipe, tree = pol
    return parse_overrides(conf, recipe, params or {}, config_tree=tree, policy=policy or TriggerPolicy())


def refused(conf, pol, policy=None) -> str:
    with pytest.raises(RecipeError) as exc:
        parse(conf, pol, policy=policy)
    return str(exc.value)


@pytest.mark.parametrize("section,key", [
    ("native", "virtual_env"), ("singularity", "env"), ("singularity", "bind_dirs"),
    ("singularity", "extra_options"), ("podman", "devices"), ("podman", "user"), ("podman", "extra_options"),
    ("slurm", "remote_dependencies"), ("slurm", "ssh_conn_id"), ("slurm", "remote_dir"),
    ("slurm", "enable"), ("kube", "namespace"), ("kube", "service_account"),
    ("kube", "job_pod.custom_pod_spec"), ("rlimits", "NOFILE"),
])
def test_file_only_backend_settings_are_refused_naming_the_key(pol, section, key):
    value: object = "x"
    for part in reversed(f"{section}.{key}".split(".")):
        value = {part: value}
    text = refused({"steps": {"*": {"backend": value}}}, pol)
    assert f"conf.steps.*.backend.{section}.{key}: may only be set in recipe/cab files" in text
    assert f"trigger_overrides_allow = backend.{section}.{key}" in text


def test_deployer_patterns_widen_the_policy(pol):
    wide = TriggerPolicy(allow=("backend.singularity.*",))
    ov = parse({"steps": {"a": {"backend": {"singularity": {"bind_dirs": {"d": {"host": "/data"}}}}}}}, pol, policy=wide)
    assert ov.backend_for(("a",)) == {"singularity": {"bind_dirs": {"d": {"host": "/data"}}}}
    assert "backend.native.virtual_env" in refused({"steps": {"a": {"backend": {"native": {"virtual_env": "/v"}}}}},
                                                   pol, policy=wide)


def test_from_airflow_config(monkeypatch):
    monkeypatch.setenv("AIRFLOW__STEPCAB__TRIGGER_OVERRIDES_ALLOW", "backend.native.virtual_env, backend.kube.*")
    monkeypatch.setenv("AIRFLOW__STEPCAB__TRIGGER_LIMITS", "time=1:00:00, cpus=4")
    policy = TriggerPolicy.from_airflow_config()
    assert policy.allow == ("backend.native.virtual_env", "backend.kube.*")
    assert policy.limits == {"time": 3600, "cpus": 4.0}
    assert policy.widened("backend.kube.namespace") and not policy.widened("backend.native.env")


def test_the_conf_cannot_widen_the_policy(pol):
    text = refused({"trigger_overrides_allow": "backend.*"}, pol)
    assert "conf.trigger_overrides_allow: not a parameter of recipe 'pol'" in text


def test_select_among_the_backends_the_files_allow(pol):
    assert parse({"steps": {"*": {"backend": "native"}}}, pol).backend_for(("a",)) == {"select": "native"}
    assert parse({"steps": {"b": {"backend": {"select": "podman"}}}}, pol).backend_for(("b",)) == {"select": "podman"}
    text = refused({"steps": {"*": {"backend": {"select": ["podman"]}}}}, pol)
    assert ("conf.steps.*.backend.select: 'podman' not among the backends the files allow for step 'a' "
            "(singularity, native)") in text
    assert "for step 'b'" not in text
    assert "'kube' not among" in refused({"steps": {"b": {"backend": "kube"}}}, pol)


def test_resource_knobs_only_within_limits(pol):
    ov = parse({"steps": {"a": {"backend": {"slurm": {"sbatch_opts": {"time": "1:30:00", "mem": "4G"}}}}}}, pol)
    assert ov.backend_for(("a",)) == {"slurm": {"sbatch_opts": {"time": "1:30:00", "mem": "4G"}}}
    assert "exceeds the trigger-time limit for 'time'" in refused(
        {"steps": {"a": {"backend": {"slurm": {"srun_opts": {"time": "1-00:00:00"}}}}}}, pol)
    assert "is not a Slurm time" in refused(
        {"steps": {"a": {"backend": {"slurm": {"sbatch_opts": {"time": "1:00:00 --uid=0"}}}}}}, pol)
    assert "no trigger-time limit for 'cpus' is set" in refused(
        {"steps": {"a": {"backend": {"slurm": {"sbatch_opts": {"cpus-per-task": 64}}}}}}, pol)
    assert "conf.steps.a.backend.slurm.sbatch_opts.uid: may only be set" in refused(
        {"steps": {"a": {"backend": {"slurm": {"sbatch_opts": {"uid": 0}}}}}}, pol)
    strict = TriggerPolicy(limits={"time": 600.0, "cpus": 2.0})  # the deployer's caps win when stricter
    assert "exceeds the trigger-time limit for 'time'" in refused(
        {"steps": {"a": {"backend": {"slurm": {"sbatch_opts": {"time": "30"}}}}}}, pol, policy=strict)
    assert parse({"steps": {"a": {"backend": {"podman": {"cpus": "2", "memory": "512m"}}}}}, pol, policy=strict)
    assert parse({"steps": {"a": {"backend": {"kube": {"job_pod": {"cpu": {"limit": "1500m"}}}}}}}, pol, policy=strict)
    assert "exceeds" in refused({"steps": {"a": {"backend": {"kube": {"job_pod": {"memory": {"request": "9Gi"}}}}}}}, pol)


def test_values_are_checked_against_dtype_and_choices(pol):
    assert "conf.n: invalid value 'three' for dtype int" in refused({"n": "three"}, pol)
    assert "conf.steps.a.params.mode: 'medium' is not one of the allowed choices" in refused(
        {"steps": {"a": {"params": {"mode": "medium"}}}}, pol)
    assert "conf.steps.a.skip: expected true or false" in refused({"steps": {"a": {"skip": "no"}}}, pol)


@pytest.mark.parametrize("path", ["~/runs", "$HOME/runs", "/runs/{run_id}", "runs", "/runs/\nx"])
def test_workdir_from_the_conf_is_a_literal_absolute_path(pol, path):
    assert "conf.stepcab_workdir:" in refused({"stepcab_workdir": path}, pol)


def test_values_from_the_conf_are_data_and_untouched_defaults_the_recipes(pol):
    ov = parse({"name": "{config.run.env.HOME}", "steps": {"a": {"params": {"text": "=recipe.n"}}}}, pol,
               params={"n": 3, "name": "demo", "stepcab_workdir": "/abs"})
    assert ov.recipe_params == {"n": 3, "name": "{config.run.env.HOME}"}
    assert ov.from_conf == {"name"}  # n is the form's untouched default: the recipe's own value
    assert isinstance(ov.recipe_params["name"], ConfValue) and is_data(ov.params_for(("a",), pol[0].steps["a"].cargo))
    assert not isinstance(ov.recipe_params["n"], ConfValue)


# ------------------------------------------------------------ params a cab's dynamic schema adds
QUARTICAL = """\
_include:
  - (cultcargo)quartical.yml
cal:
  inputs:
    terms: {dtype: "List[str]", default: [K, G]}
  steps:
    solve:
      cab: quartical
      params: {input_ms.path: a.ms, solver.terms: =recipe.terms, K.type: delay}
    note:
      cab: quartical
      params: {input_ms.path: a.ms}
"""


@pytest.fixture(scope="module")
def quartical(tmp_path_factory):
    import importlib.util
    import os

    if importlib.util.find_spec("cultcargo") is None:
        (pytest.fail if os.environ.get("CI") else pytest.skip)("cult-cargo is not installed")
    path = tmp_path_factory.mktemp("quartical") / "quartical.yml"
    path.write_text(QUARTICAL)
    recipe, loaded = load_recipe(str(path), "cal")
    return recipe, loaded.tree


def test_step_params_a_dynamic_schema_adds_are_taken(quartical):
    """quartical's hook adds ``{term}.{option}`` for each of ``solver.terms`` (here from a recipe
    input): the conf may set them, checked against the hook's schema, and they reach the step."""
    recipe = quartical[0]
    ov = parse({"steps": {"solve": {"params": {"G.time_interval": 8, "K.type": "delay_and_offset"}}}}, quartical)
    assert ov.params_for(("solve",), recipe.steps["solve"].cargo) == {"G.time_interval": "8",
                                                                       "K.type": "delay_and_offset"}
    assert "'tec' is not one of the allowed choices" in refused(
        {"steps": {"solve": {"params": {"K.type": "tec"}}}}, quartical)
    # the run's own terms count: B exists once the trigger asks for it
    ov = parse({"terms": ["K", "B"], "steps": {"solve": {"params": {"B.time_interval": 2}}}}, quartical)
    assert ov.params_for(("solve",), recipe.steps["solve"].cargo) == {"B.time_interval": "2"}
    # as a recipe-level step.param (stepcab run -p solve.G.time_interval=4)
    assert parse({"solve.G.time_interval": 4}, quartical).recipe_params == {"solve.G.time_interval": "4"}
    # a glob: each step gets what its own schema has ('note' solves for the default terms, G only)
    ov = parse({"steps": {"*": {"params": {"K.time_interval": 3}}}}, quartical)
    assert ov.params_for(("solve",), recipe.steps["solve"].cargo) == {"K.time_interval": "3"}
    assert ov.params_for(("note",), recipe.steps["note"].cargo) == {}


def test_step_params_no_dynamic_schema_adds_are_refused_naming_the_key(quartical):
    message = refused({"steps": {"solve": {"params": {"B.time_interval": 8}}}}, quartical)
    assert ("conf.steps.solve.params.B.time_interval: no such parameter: the dynamic schema of cab 'quartical'"
            in message and "does not add 'B.time_interval' for the values of step solve" in message)
    assert "did you mean 'G.time_interval'?" in refused({"steps": {"solve": {"params": {"G.time_interva": 8}}}},
                                                         quartical)
    assert "conf.solve.X.type: no such parameter" in refused({"solve.X.type": "delay"}, quartical)
    assert "conf.steps.note.params.K.type: no such parameter" in refused(
        {"steps": {"note": {"params": {"K.type": "delay"}}}}, quartical)


def test_step_params_for_a_dynamic_schema_stay_data(quartical):
    """Conf values that look like a formula or a substitution are not evaluated for the hook: the
    terms are the literal strings given, so no term 'B' comes out of them."""
    for conf in ({"terms": ["=['B']"]}, {"steps": {"solve": {"params": {"solver.terms": ["{recipe.terms}"]}}}}):
        conf = {**conf, "steps": {"solve": {"params": {**conf.get("steps", {}).get("solve", {}).get("params", {}),
                                                        "B.type": "delay"}}}}
        assert "conf.steps.solve.params.B.type: no such parameter" in refused(conf, quartical)
    ov = parse({"terms": ["=['B']"], "steps": {"solve": {"params": {"=['B'].type": "delay"}}}}, quartical)
    assert is_data(ov.params_for(("solve",), quartical[0].steps["solve"].cargo))


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
    label: {dtype: str, default: x}
  for_loop: {var: scan, over: scans}
  steps:
    pol: {recipe: inner, params: {scan: =recipe.scan}}
"""


def test_an_input_laying_out_an_unrolled_loop_cant_change_at_trigger_time(tmp_path):
    path = tmp_path / "nested.yml"
    path.write_text(NESTED)
    recipe, loaded = load_recipe(str(path), "outer")
    nested = (recipe, loaded.tree)
    message = refused({"scans": [7]}, nested)
    assert "conf.scans: [7] differs from the recipe's default [3, 5]" in message
    assert "unrolls it into one TaskGroup per value when it is parsed" in message and "stepcab run" in message
    # the form's untouched default, or the same values written otherwise, are the recipe's
    for given in ({"scans": [3, 5]}, {"scans": ["3", "5"]}):
        ov = parse(given, nested, params={"scans": [3, 5], "label": "y"})
        assert ov.recipe_params == {"scans": [3, 5], "label": "y"} and ov.from_conf == {"label"}
    assert "conf.scans:" in refused({"label": "y", "scans": [3]}, nested)
