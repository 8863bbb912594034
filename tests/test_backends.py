"""Backend option models, layer merging, selection and unknown-key handling."""

from airflow_provider_stepcab.recipe.backends import (
    BackendOptions, effective_backend, merge_backend_layers, parse_backend_options, select_backend,
    select_list,
)
from airflow_provider_stepcab.recipe.errors import Problems
from airflow_provider_stepcab.recipe.model import Cab, ImageSpec
from airflow_provider_stepcab.recipe.yamlio import load_yaml_text

DOC = """\
opts:
  backend:
    select: singularity, native
    singularity:
      auto_update: true
      contain: 'no'
      bind_dirs:
        data: {host: /data, mode: rx}
    kube:
      provisioning_timeout: abc
      volumes:
        v: {lifecycle: persist, capacity: 10Gi}
    rlimits: {NOFILE: 100}
    podman: {x: 1}
    slurm:
      srun_opts: {mem: 8G}
"""


def _parse(strict=False):
    tree = load_yaml_text(DOC, "b.yml")
    problems = Problems()
    opts = parse_backend_options(tree["opts"]["backend"], key_path="opts.backend", problems=problems, strict=strict)
    return opts, problems


def test_defaults_match_stimela():
    o = BackendOptions()
    assert o.select == ["singularity", "native"]
    assert o.default_registry == "quay.io/stimela2"
    assert o.singularity.contain is True and o.singularity.auto_build is True
    assert o.kube.service_account == "compute-runner" and o.kube.provisioning_timeout == 600
    assert o.slurm.enable is False and o.slurm.build_local is True
    assert o.native.enable is True and o.wrapper is None


def test_parse_values_and_coercion():
    o, _ = _parse()
    assert o.select == ["singularity", "native"]
    assert o.singularity.contain is False  # 'no' coerced like OmegaConf
    assert o.kube.volumes["v"].lifecycle == "persist"
    assert o.rlimits == {"NOFILE": 100}
    assert o.extras == {"podman": {"x": 1}}
    assert o.slurm.srun_opts == {"mem": "8G"}


def test_unknown_key_is_warning_with_location():
    _, problems = _parse()
    warn = [str(p) for p in problems.warnings]
    assert any(w.startswith("b.yml:5: opts.backend.singularity.auto_update: warning:") for w in warn), warn


def test_unknown_key_is_error_when_strict():
    _, problems = _parse(strict=True)
    assert any(p.key == "opts.backend.singularity.auto_update" for p in problems.errors)


def test_type_and_choice_errors_have_locations():
    _, problems = _parse()
    errs = {p.key: p for p in problems.errors}
    assert errs["opts.backend.kube.provisioning_timeout"].loc.line == 10
    assert errs["opts.backend.singularity.bind_dirs.data.mode"].loc.line == 8


def test_formulas_are_not_type_checked():
    problems = Problems()
    o = parse_backend_options({"kube": {"provisioning_timeout": "=recipe.t"}}, problems=problems)
    assert not problems and o.kube.provisioning_timeout == "=recipe.t"


def test_select_forms():
    assert select_list("a,b") == ["a", "b"]
    assert select_list(" native ") == ["native"]
    assert select_list(["kube"]) == ["kube"]
    assert select_list("") == []
    assert select_list(None) == ["singularity", "native"]


def test_unknown_backend_name_in_select_warns():
    problems = Problems()
    parse_backend_options({"select": "apptainer,native"}, problems=problems)
    assert [p.code for p in problems] == ["unknown-backend-key"]


def test_merge_order_later_wins_and_lists_replace():
    merged = merge_backend_layers({"select": "singularity", "singularity": {"env": {"A": "1"}, "contain": True}},
                                  None, {"singularity": {"env": {"B": "2"}}}, {"singularity": {"contain": False}})
    assert merged == {"select": "singularity", "singularity": {"env": {"A": "1", "B": "2"}, "contain": False}}


def test_effective_backend_order_config_recipe_cab_step_override():
    config = {"opts": {"backend": {"select": "singularity", "verbose": 0, "rlimits": {"A": 1}}}}
    outer = {"backend": {"verbose": 1, "native": {"virtual_env": "/outer"}}}
    inner = {"backend": {"verbose": 2}}
    cab = Cab(name="c", command="x", backend={"native": {"virtual_env": "/cab"}, "verbose": 3})
    step = {"backend": {"verbose": 4}}
    opts, merged = effective_backend(config, [outer, inner], cab, step)
    assert opts.verbose == 4 and opts.native.virtual_env == "/cab" and opts.select == ["singularity"]
    opts, _ = effective_backend(config, [outer, inner], cab, step, override="native")
    assert opts.select == ["native"]
    opts, _ = effective_backend(config, [], None, None, override={"slurm": {"enable": True}})
    assert opts.wrapper == "slurm"


def test_select_backend_rules():
    opts = parse_backend_options({"select": ["singularity", "native"]})
    no_image = Cab(name="c", command="x")
    with_image = Cab(name="c", command="x", image=ImageSpec(name="img"))
    assert select_backend(opts, no_image)[0] == "native"
    assert select_backend(opts, with_image)[0] == "singularity"
    assert select_backend(opts, with_image, available={"native"})[0] == "native"
    opts = parse_backend_options({"select": "singularity", "singularity": {"enable": False}})
    name, excuses = select_backend(opts, with_image)
    assert name is None and excuses == {"singularity": "disabled"}


SLURM_RECIPE = """\
opts:
  backend:
    slurm:
      enable: true
      srun_opts: {mem: 1G}
      ssh_conn_id: stepcab_cluster
      remote_dir: /scratch/jobs
      remote_workdir: /data/run
      remote_dependencies: [module load apptainer, "export X=1"]
      sbatch_opts: {qos: long, exclusive: true}
      poll_interval: 2.5
      stream_logs: false
      cleanup: on_success
      exit_grace: 30
      missing_grace: 60
      ssh_patience: 600
      term_grace: 5
      log_chunk_size: 4096
cabs:
  echo: {command: echo}
slurmy:
  steps:
    hi:
      cab: echo
      backend: {slurm: {cleanup: always, remote_dependencies: "module load x", ssh_conn_id: other}}
"""


def test_slurm_remote_submission_keys_are_known(tmp_path):
    from airflow_provider_stepcab.plan.slurm import OUR_KEYS, SlurmSubmitOptions, parse_slurm_options
    from airflow_provider_stepcab.recipe.api import load_recipe_result
    from airflow_provider_stepcab.recipe.backend_schema import SlurmOptions

    path = tmp_path / "slurmy.yml"
    path.write_text(SLURM_RECIPE)
    result = load_recipe_result(str(path), "slurmy")
    assert result.recipe is not None
    assert not [p for p in result.problems if p.code == "unknown-backend-key"], [str(p) for p in result.problems]
    assert not result.problems.errors, [str(p) for p in result.problems.errors]
    tree = load_yaml_text(SLURM_RECIPE, "slurmy.yml")
    problems = Problems()
    opts = parse_backend_options(tree["opts"]["backend"], key_path="opts.backend", problems=problems, strict=True)
    assert not problems, [str(p) for p in problems]
    assert opts.slurm.cleanup == "on_success" and opts.slurm.poll_interval == 2.5
    # one set of keys and defaults: plan/slurm.py's parser takes them from the schema
    schema = SlurmOptions()
    assert set(OUR_KEYS) <= {f for f in SlurmOptions.__dataclass_fields__}
    parsed, unknown = parse_slurm_options(tree["opts"]["backend"]["slurm"])
    assert unknown == [] and parsed.cleanup == "on_success" and parsed.remote_dependencies[0] == "module load apptainer"
    defaults = SlurmSubmitOptions()
    for key in OUR_KEYS:
        want = getattr(schema, key)
        assert getattr(defaults, key) == (tuple(want) if isinstance(want, list) else want), key
