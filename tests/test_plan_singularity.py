"""``singularity exec`` command lines: golden argvs produced by Stimela 2.1.4, plus unit cases.

The golden files (``tests/golden/singularity/*.json``) come from ``generate.py`` there: Stimela 2.1.4
run with a fake ``singularity`` that records its argv, for cult-cargo cabs and our own (inputs and
outputs in several directories, symlinks, ``bind_dirs``, ephemeral storage, registries, prebuilt
images). Here the same recipe and file tree are rebuilt under ``/var/tmp`` and planned by
:func:`singularity_argv_for_step`; the argvs must be identical.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest

from airflow_provider_stepcab.plan.flavours import build_flavour_argv
from airflow_provider_stepcab.plan.singularity import (
    ContainerPlanError, MemoryFs, file_values, fill_ephemeral, plan_mounts, singularity_argv_for_step,
)
from airflow_provider_stepcab.recipe.api import load_recipe
from airflow_provider_stepcab.recipe.backends import BackendOptions, effective_backend, parse_backend_options
from airflow_provider_stepcab.recipe.dtypes import parse_dtype
from airflow_provider_stepcab.recipe.model import UNSET, Cab, ImageSpec, Parameter
from airflow_provider_stepcab.recipe.resolve import resolve_recipe
from airflow_provider_stepcab.runtime.containers import LocalFs

GOLDEN = Path(__file__).parent / "golden" / "singularity"
CASES = sorted(GOLDEN.glob("*.json"))


def _make_tree(root: str, record: dict) -> str:
    tree = record.get("tree") or {}
    for d in tree.get("dirs", []):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    for f in tree.get("files", []):
        os.makedirs(os.path.dirname(os.path.join(root, f)), exist_ok=True)
        open(os.path.join(root, f), "w").close()
    for link, target in (tree.get("links") or {}).items():
        os.makedirs(os.path.dirname(os.path.join(root, link)), exist_ok=True)
        os.symlink(target.replace("{ROOT}", root), os.path.join(root, link))
    if record.get("image_exists"):
        path = record["image_exists"].replace("{ROOT}", root)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        open(path, "w").close()
    cwd = os.path.join(root, record.get("cwd") or "work")
    os.makedirs(cwd, exist_ok=True)
    return cwd


def _plan_golden(record: dict, root: str) -> list:
    cwd = _make_tree(root, record)
    path = os.path.join(root, "recipe.yml")
    Path(path).write_text(record["recipe"].replace("{ROOT}", root))
    recipe, loaded = load_recipe(path, "golden")
    (rs,) = list(resolve_recipe(recipe, loaded.tree, {}))
    cab = rs.step.cab
    params = {}
    for name, value in rs.params.items():
        if value is UNSET:
            continue
        p = cab.inputs.get(name) or cab.outputs.get(name)
        params[name] = p.dtype.validate(value, cwd=cwd) if p.dtype.is_file_type else value
        if p.is_output and p.dtype.is_file_type and p.path_policies.mkdir_parent is not False:
            for f in file_values(p.dtype, params[name]):   # like Stimela (and our operators) before a run
                os.makedirs(os.path.dirname(os.path.join(cwd, f)), exist_ok=True)
    old = os.getcwd()
    os.chdir(cwd)
    try:
        command = build_flavour_argv(cab, params, python="python")
    finally:
        os.chdir(old)
    opts, _ = effective_backend(loaded.tree, rs.recipes, cab, rs.step)
    plan = singularity_argv_for_step(cab, params, command, backend=opts, cwd=cwd, fs=LocalFs(),
                                     executable="singularity", images=loaded.tree.get("images"))
    out = []
    for i, arg in enumerate(plan.argv):
        if i and plan.argv[i - 1] == "--bind":
            arg = re.sub(r"^::EPH\d+::", "EPHEMERAL", arg)
        out.append(arg.replace(root, "{ROOT}"))
    return out


@pytest.mark.parametrize("golden", CASES, ids=[p.stem for p in CASES])
def test_golden_argv_matches_stimela(golden):
    record = json.loads(golden.read_text())
    assert "argv" in record, f"golden case failed under Stimela: {record.get('error')}"
    root = tempfile.mkdtemp(prefix="stepcab-sgold-", dir="/var/tmp")  # same place as generate.py
    try:
        assert _plan_golden(record, root) == record["argv"]
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_golden_cases_cover_the_brief():
    ids = {p.stem for p in CASES}
    assert {"breizorro-dirs", "tricolour-ms", "fitstool-stack", "bind-dirs", "bind-dirs-ephemeral",
            "copy-symlinked-input", "prebuilt-image", "registry-override"} <= ids
    assert len(ids) >= 15


# ------------------------------------------------------------------ unit cases (in-memory filesystem)

def _param(name, dtype, **kw):
    return Parameter(name=name, dtype_str=dtype, dtype=parse_dtype(dtype), **kw)


def _cab(inputs=(), outputs=()):
    return Cab(name="t", command="tool", image=ImageSpec(name="tool", version="1"),
               inputs={p.name: p for p in inputs},
               outputs={p.name: dataclass_out(p) for p in outputs})


def dataclass_out(p):
    p.is_output = True
    return p


def test_binds_parents_rw_and_covered_children():
    fs = MemoryFs(dirs=["/w", "/data/a", "/out"], files=["/data/a/x.fits", "/data/a/y.fits"])
    cab = _cab([_param("ins", "List[File]")], [_param("out", "File")])
    plan = plan_mounts(cab, {"ins": ["/data/a/x.fits", "/data/a/y.fits"], "out": "/out/new/z.fits"},
                       cwd="/w", fs=fs)
    assert [(b.src, b.dest, b.mode) for b in plan.binds] == [
        ("/data/a", "/data/a", "ro"), ("/out", "/out", "rw"), ("::EPH0::", "/tmp", "rw"), ("/w", "/w", "rw")]
    assert plan.ephemeral == {"EPH0": "/tmp"}


def test_child_under_rw_parent_dropped_but_rw_child_under_ro_parent_kept():
    fs = MemoryFs(dirs=["/w", "/d/sub"], files=["/d/sub/f"])
    cab = _cab([_param("a", "File", writable=True)])
    binds = plan_mounts(cab, {"a": "/d/sub/f"}, cwd="/w", fs=fs, bind_dirs={"d": {"host": "/d", "mode": "ro"}},
                        bind_tmp=False).binds
    assert [(b.src, b.mode) for b in binds] == [("/d", "ro"), ("/d/sub", "rw"), ("/w", "rw")]
    binds = plan_mounts(cab, {"a": "/w/sub/f"}, cwd="/w", fs=fs, bind_tmp=False).binds
    assert [(b.src, b.mode) for b in binds] == [("/w", "rw")]


def test_symlinked_input_binds_the_target():
    fs = MemoryFs(dirs=["/w", "/store"], files=["/store/real.fits"], links={"/w/l.fits": "/store/real.fits"})
    cab = _cab([_param("a", "File")])
    binds = plan_mounts(cab, {"a": "l.fits"}, cwd="/w", fs=fs, bind_tmp=False).binds
    assert [(b.src, b.mode) for b in binds] == [("/store", "ro"), ("/w", "rw")]


def test_bind_dir_errors():
    fs = MemoryFs(dirs=["/w"], files=["/w/file"])
    cab = _cab()
    with pytest.raises(ContainerPlanError, match="does not exist"):
        plan_mounts(cab, {}, cwd="/w", fs=fs, bind_dirs={"x": {"host": "/nope"}})
    with pytest.raises(ContainerPlanError, match="not a directory"):
        plan_mounts(cab, {}, cwd="/w", fs=fs, bind_dirs={"x": {"host": "/w/file", "mkdir": True}})
    with pytest.raises(ContainerPlanError, match="target must be specified"):
        plan_mounts(cab, {}, cwd="/w", fs=fs, bind_dirs={"x": {"host": "ephemeral"}})
    with pytest.raises(ContainerPlanError, match="undefined ephemeral"):
        plan_mounts(cab, {}, cwd="/w", fs=fs, bind_tmp="ram")
    with pytest.raises(ContainerPlanError, match="not in the inputs"):
        plan_mounts(cab, {"zz": 1}, cwd="/w", fs=fs)
    plan = plan_mounts(cab, {}, cwd="/w", fs=fs, bind_dirs={"x": {"host": "~/new", "mkdir": True}}, bind_tmp=False)
    assert plan.mkdirs == ["/root/new"] and [b.src for b in plan.binds] == ["/root/new", "/w"]


def test_must_exist_input_missing_is_an_error():
    fs = MemoryFs(dirs=["/w"])
    cab = _cab([_param("a", "File", must_exist=True)])
    with pytest.raises(ContainerPlanError, match="does not exist"):
        plan_mounts(cab, {"a": "/gone/x/f"}, cwd="/w", fs=fs)


def test_file_values_walks_composite_types():
    assert file_values(parse_dtype("Union[str, File]"), "x") == ["x"]       # bound, like Stimela 2.1.4
    assert file_values(parse_dtype("Union[int, File]"), 3) == []
    assert file_values(parse_dtype("Union[File, List[File]]"), ["a", "b"]) == ["a", "b"]
    assert file_values(parse_dtype("Dict[str, File]"), {"k": "f"}) == ["f"]
    assert file_values(parse_dtype("Tuple[int, File]"), [1, "f"]) == ["f"]
    assert file_values(parse_dtype("List[str]"), ["a"]) == []


def test_remote_uris_are_not_bound():
    fs = MemoryFs(dirs=["/w"])
    cab = _cab([_param("u", "URI")])
    assert [b.src for b in plan_mounts(cab, {"u": "s3://bucket/x"}, cwd="/w", fs=fs, bind_tmp=False).binds] == ["/w"]


def test_exec_flags_env_nv_and_extra_options():
    fs = MemoryFs(dirs=["/w", "/home/u/.singularity"], home="/home/u")
    opts = parse_backend_options({"singularity": {"image_dir": "~/.singularity", "containall": True,
                                                  "env": {"A": "1"}, "nv": True,
                                                  "extra_options": ["--cleanenv"]}})
    plan = singularity_argv_for_step(_cab(), {}, ["tool"], backend=opts, cwd="/w", fs=fs, executable="apptainer",
                                     extra_env={"B": "2"})
    assert plan.argv == ["apptainer", "exec", "--pwd", "/w", "--containall", "--env", "A=1,B=2", "--nv",
                         "--cleanenv", "--bind", "::EPH0:::/tmp:rw", "--bind", "/w:/w:rw",
                         "/home/u/.singularity/quay.io-stimela2-tool:1.simg", "tool"]
    assert plan.build_argv == ["apptainer", "build", "/home/u/.singularity/quay.io-stimela2-tool:1.simg",
                               "docker://quay.io/stimela2/tool:1"]
    assert fill_ephemeral(plan.argv, {"EPH0": "/tmp/tmpabc"})[10] == "/tmp/tmpabc:/tmp:rw"


def test_no_contain_and_default_options():
    fs = MemoryFs(dirs=["/w"])
    opts = BackendOptions()
    opts.singularity.contain = False
    opts.singularity.bind_tmp = False
    plan = singularity_argv_for_step(_cab(), {}, ["tool", "-x"], backend=opts, cwd="/w", fs=fs)
    assert plan.argv[:6] == ["singularity", "exec", "--pwd", "/w", "--bind", "/w:/w:rw"]
    assert plan.argv[-2:] == ["tool", "-x"]
