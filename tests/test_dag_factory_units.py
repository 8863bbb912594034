"""Unit tests of the DAG factory's pure parts: naming, settings, dataflow, param specs, error keys."""

from __future__ import annotations

import datetime as dt

import pytest

from airflow_provider_stepcab.dag_factory import dataflow, naming, settings
from airflow_provider_stepcab.dag_factory.errors import error_key
from airflow_provider_stepcab.dag_factory.params import is_computed, param_spec
from airflow_provider_stepcab.recipe.dtypes import parse_dtype
from airflow_provider_stepcab.recipe.errors import Problems
from airflow_provider_stepcab.recipe.model import Cab, Parameter, Recipe, Step
from airflow_provider_stepcab.recipe.yamlio import load_yaml_text


# ------------------------------------------------------------------------------------------ naming

def test_sanitize_id_rules():
    assert naming.sanitize_id("image-1") == "image-1"
    assert naming.sanitize_id("cal.flag step") == "cal_flag_step"
    assert naming.sanitize_id("") == "_"
    long = naming.sanitize_id("x" * 400)
    assert len(long) == naming.MAX_ID_LENGTH and long != naming.sanitize_id("x" * 401)


def test_dag_id_rule():
    assert naming.dag_id_for("/d/pipe.yml", "pipe") == "pipe"
    assert naming.dag_id_for("/d/pipe.yml", "other") == "pipe__other"
    assert naming.dag_id_for("/d/pipe.yaml", "other", is_default=True) == "pipe"
    assert naming.dag_id_for("/d/my pipe.yml", "a.b") == "my_pipe__a_b"
    assert naming.dag_id_for("/d/pipe.yml", "other", override="custom id") == "custom_id"
    assert naming.dag_id_may_come_from("pipe__other", "/d/pipe.yml")
    assert naming.dag_id_may_come_from("pipe", "/x/pipe.yaml")
    assert not naming.dag_id_may_come_from("pipeline", "/d/pipe.yml")


def test_task_id_for_and_collisions():
    assert naming.task_id_for("r", ("cal", "flag.1")) == "cal.flag_1"
    # unrolled loops: a TaskGroup per iteration, named by it (the top recipe's: "")
    assert naming.task_id_for("r", ("pol", "image"), {"": 1, "pol": 2}) == "1.pol.2.image"
    assert naming.task_id_for("r", ("pre",), {"pol": 2}) == "pre"
    assert naming.id_collisions(["a.b", "a_b", "c"]) == [("a.b", "a_b")]


# ------------------------------------------------------------------------------------------ settings

def _section(text: str):
    return load_yaml_text(text, "f.yml")["opts"]["airflow"]


def test_settings_all_keys():
    sec = _section("""
opts:
  airflow:
    schedule: "0 3 * * *"
    start_date: 2023-05-06
    end_date: "2025-01-01T12:00:00+02:00"
    catchup: true
    retries: 3
    retry_delay: 1h30m
    owner: me
    tags: x
    max_active_runs: 2
    max_active_tasks: 5
    pool: p
    queue: q
    dagrun_timeout: "01:30:00"
    execution_timeout: 90
    description: short
    doc_md: more
    parallel: dataflow
    backend: [native]
    workdir: /somewhere
    tasks:
      "a*": {pool: gpu, retries: 0}
    recipes:
      r2: {schedule: null, tags: [y]}
""")
    p = Problems()
    s = settings.parse_settings(sec, "r1", p)
    assert not p.items, p.items
    assert s.schedule == "0 3 * * *" and s.catchup is True and s.retries == 3
    assert s.start_date == dt.datetime(2023, 5, 6, tzinfo=dt.timezone.utc)
    assert s.end_date.utcoffset() == dt.timedelta(hours=2)
    assert s.retry_delay == dt.timedelta(minutes=90) and s.dagrun_timeout == dt.timedelta(minutes=90)
    assert s.execution_timeout == dt.timedelta(seconds=90)
    assert s.tags == ["x"] and s.parallel == "dataflow" and s.backend == ["native"]
    assert s.tasks == {"a*": {"pool": "gpu", "retries": 0}}
    assert s.default_args() == {"owner": "me", "retries": 3, "retry_delay": dt.timedelta(minutes=90),
                                "pool": "p", "queue": "q", "execution_timeout": dt.timedelta(seconds=90)}
    s2 = settings.parse_settings(sec, "r2", Problems())
    assert s2.schedule is None and s2.tags == ["y"] and s2.retries == 3


def test_settings_defaults_never_break_backfills():
    s = settings.parse_settings({}, "r", Problems())
    assert s.start_date == dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    assert s.catchup is False and s.schedule is None and s.parallel == "sequential"


def test_settings_problems_have_locations():
    sec = _section("opts:\n  airflow:\n    retries: many\n    colour: blue\n    parallel: wild\n")
    p = Problems()
    settings.parse_settings(sec, "r", p)
    errors = {e.key: e for e in p.errors}
    assert set(errors) == {"opts.airflow.retries", "opts.airflow.parallel"}
    assert errors["opts.airflow.retries"].loc.line == 3
    assert [w.key for w in p.warnings] == ["opts.airflow.colour"]


@pytest.mark.parametrize("text,seconds", [(45, 45), ("45", 45), ("2m", 120), ("1h30m", 5400),
                                          ("1d", 86400), ("0:05", 300), ("1:00:01", 3601)])
def test_parse_duration(text, seconds):
    assert settings.parse_duration(text) == dt.timedelta(seconds=seconds)


def test_parse_duration_rejects_garbage():
    with pytest.raises(ValueError):
        settings.parse_duration("soon")


# ------------------------------------------------------------------------------------------ dataflow

def _cab(name, inputs=(), outputs=(), writable=()):
    def par(n, out=False):
        dtype = "File" if n in ("ms", "img", "out") else "str"
        return Parameter(name=n, dtype_str=dtype, dtype=parse_dtype(dtype), writable=n in writable, is_output=out)
    return Cab(name=name, command="echo", inputs={n: par(n) for n in inputs},
               outputs={n: par(n, True) for n in outputs})


def test_dataflow_by_references_and_files():
    make = _cab("make", inputs=["ms"], writable=["ms"])
    image = _cab("image", inputs=["ms"], outputs=["out"])
    use = _cab("use", inputs=["img", "text"])
    steps = {
        "flag": Step("flag", cab=make, params={"ms": "=recipe.ms"}),
        "img-a": Step("img-a", cab=image, params={"ms": "=recipe.ms", "out": "a.fits"}),
        "img-b": Step("img-b", cab=image, params={"ms": "=recipe.ms", "out": "b.fits"}),
        "side": Step("side", cab=use, params={"text": "hello"}),
        "show-a": Step("show-a", cab=use, params={"img": "a.fits"}),
        "after": Step("after", cab=use, params={"text": "{previous.text}"}),
        "combine": Step("combine", cab=use, params={"text": "=steps.img-b.out"}, skip="=steps.img-a.out == ''"),
    }
    deps = dataflow.infer_dependencies(Recipe(name="r", steps=steps))
    assert deps == {"flag": [], "img-a": ["flag"], "img-b": ["flag"], "side": [], "show-a": ["img-a"],
                    "after": ["show-a"], "combine": ["img-a", "img-b"]}


def test_dataflow_aliases_and_globs():
    image = _cab("image", inputs=["ms"], outputs=["out"])
    use = _cab("use", inputs=["img", "text"])
    steps = {
        "image-1": Step("image-1", cab=image),
        "image-2": Step("image-2", cab=image),
        "report": Step("report", cab=use, params={"text": "{steps.image-*.out}"}),
        "final": Step("final", cab=use, params={"text": "=recipe.result"}),
        "odd": Step("odd", cab=use, params={"text": "=IF(("}),
    }
    recipe = Recipe(name="r", steps=steps, aliases={"ms": ["image-1.ms", "image-2.ms"],
                                                      "result": ["image-2.out"]})
    deps = dataflow.infer_dependencies(recipe)
    assert deps["image-1"] == [] and deps["image-2"] == []          # both only read recipe.ms
    assert deps["report"] == ["image-1", "image-2"]
    assert deps["final"] == ["image-2"]                               # recipe.result is image-2's output
    assert deps["odd"] == ["report", "final"]                         # unparsable: after everything


def test_transitive_reduction():
    deps = {"a": set(), "b": {"a"}, "c": {"a", "b"}}
    assert dataflow.transitive_reduction("abc", deps) == {"a": [], "b": ["a"], "c": ["b"]}


# ------------------------------------------------------------------------------------------ params

def test_param_spec_shapes():
    p = Parameter(name="size", dtype_str="int", dtype=parse_dtype("int"), info="pixels", default=10)
    # a default: not required in the trigger form (emptied, the recipe's default applies)
    assert param_spec("size", p) == {"title": "size", "default": 10, "description": "pixels",
                                     "type": ["integer", "null"]}
    req = Parameter(name="ms", dtype_str="MS", dtype=parse_dtype("MS"), required=True)
    assert "default" not in param_spec("ms", req)
    opt = Parameter(name="n", dtype_str="int", dtype=parse_dtype("int"))
    assert param_spec("n", opt)["type"] == ["integer", "null"] and param_spec("n", opt)["default"] is None
    comp = Parameter(name="x", dtype_str="str", dtype=parse_dtype("str"), default="{recipe.ms}.x")
    spec = param_spec("x", comp)
    assert spec["default"] is None and "computed" in spec["description"]
    ch = Parameter(name="m", dtype_str="str", dtype=parse_dtype("str"), choices=["a", "b"], default="a")
    assert param_spec("m", ch)["enum"] == ["a", "b", None]
    esc = Parameter(name="e", dtype_str="str", dtype=parse_dtype("str"), default="==literal")
    assert param_spec("e", esc)["default"] == "=literal"
    assert is_computed("=x") and is_computed(["{a}"]) and not is_computed("==x") and not is_computed(3)


# ------------------------------------------------------------------------------------------ error keys

class _Result:
    def __init__(self, file_path):
        self.file_path = file_path


def test_error_key_follows_airflow_convention(tmp_path):
    loader = tmp_path / "sub" / "stepcab_dags.py"
    recipe = tmp_path / "sub" / "r" / "x.yml"
    assert error_key(str(recipe), _Result("sub/stepcab_dags.py"), str(loader)) == "sub/r/x.yml"
    assert error_key(str(recipe), _Result(str(loader)), str(loader)) == str(recipe)
    outside = "/elsewhere/y.yml"
    assert error_key(outside, _Result("sub/stepcab_dags.py"), str(loader)) == outside


WSCLEAN_DATAFLOW = """\
_include:
  - (cultcargo)wsclean.yml
opts:
  airflow: {parallel: dataflow}
cabs:
  show:
    command: echo
    inputs:
      image: {dtype: File, policies: {positional: true}}
img:
  steps:
    image: {cab: wsclean, params: {ms: a.ms, prefix: out/im, size: 64, scale: 1asec, nchan: 4}}
    other: {cab: show, params: {image: b.fits}}
    show-mfs: {cab: show, params: {image: out/im-MFS-image.fits}}
    show-band: {cab: show, params: {image: out/im-0002-residual.fits}}
    show-psf: {cab: show, params: {image: out/im-psf.fits}}
"""


def test_dataflow_sees_the_outputs_a_dynamic_schema_adds(tmp_path):
    """cult-cargo's wsclean names its images only in its dynamic schema (``restored.mfs``:
    ``{current.prefix}-MFS-image.fits``, ``residual.per-band``: a ``GLOB``): steps reading them wait
    for the imaging step, in the DAG too; a step reading an image wsclean doesn't make here (no
    ``make-psf``) or another file runs beside it."""
    import importlib.util
    import os

    from airflow_provider_stepcab.dag_factory.builder import compile_dag
    from airflow_provider_stepcab.dag_factory.settings import airflow_section, parse_settings
    from airflow_provider_stepcab.recipe.api import load_recipe

    if importlib.util.find_spec("cultcargo") is None:
        (pytest.fail if os.environ.get("CI") else pytest.skip)("cult-cargo is not installed")
    path = tmp_path / "wsclean.yml"
    path.write_text(WSCLEAN_DATAFLOW)
    recipe, loaded = load_recipe([str(path)], "img")
    assert dataflow.infer_dependencies(recipe) == {"image": [], "other": [], "show-mfs": ["image"],
                                                   "show-band": ["image"], "show-psf": []}
    problems = Problems()
    spec = compile_dag(dag_id="img", recipe=recipe, recipe_file=str(path), operator_class=None, problems=problems,
                       settings=parse_settings(airflow_section(loaded.tree), "img", problems), config_tree=loaded.tree)
    assert sorted(spec["body"]["edges"]) == [["image", "show-band"], ["image", "show-mfs"]]
