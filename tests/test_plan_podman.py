"""``podman run`` command lines (pure planning, in-memory filesystem)."""

import pytest

from airflow_provider_stepcab.plan.images import ImageError
from airflow_provider_stepcab.plan.podman import container_name, podman_argv_for_step
from airflow_provider_stepcab.plan.singularity import MemoryFs
from airflow_provider_stepcab.recipe.backends import (
    BackendOptions, PodmanOptions, engine_options, parse_backend_options, select_backend,
)
from airflow_provider_stepcab.recipe.dtypes import parse_dtype
from airflow_provider_stepcab.recipe.errors import Problems
from airflow_provider_stepcab.recipe.model import Cab, ImageSpec, Parameter

FS = MemoryFs(dirs=["/w", "/data", "/out"], files=["/data/in.fits"])


def _cab(image=ImageSpec(registry="LOCAL", name="tool", version="2")):
    out = Parameter(name="out", dtype_str="File", dtype=parse_dtype("File"), is_output=True)
    inp = Parameter(name="inp", dtype_str="File", dtype=parse_dtype("File"))
    return Cab(name="t", command="tool", image=image, inputs={"inp": inp}, outputs={"out": out})


def test_defaults():
    plan = podman_argv_for_step(_cab(), {"inp": "/data/in.fits", "out": "/out/x.fits"}, ["tool", "-v"],
                                backend=BackendOptions(), settings=PodmanOptions(), cwd="/w", fs=FS, name="n1",
                                uid_gid=(1000, 100))
    assert plan.argv == [
        "podman", "run", "--rm", "--name", "n1", "--replace", "--network", "none", "--user", "1000:100",
        "--workdir", "/w", "--volume", "/data:/data:ro", "--volume", "/out:/out:rw",
        "--volume", "::EPH0:::/tmp:rw", "--volume", "/w:/w:rw", "tool:2", "tool", "-v"]
    assert plan.stop_argv(5) == ["podman", "stop", "-t", "5", "n1"]
    assert plan.image_exists_argv == ["podman", "image", "exists", "tool:2"]
    assert plan.rm_argv == ["podman", "rm", "-f", "n1"]


def test_all_settings_from_a_recipe_section():
    problems = Problems()
    opts = parse_backend_options({"default_registry": "reg.local/org", "podman": {
        "root": "~/store", "runroot": "/run/x", "runtime": "runc", "global_options": ["--events-backend", "none"],
        "network": "host", "user": "0:0", "userns": "keep-id", "ulimits": {"nofile": "1024:1024"},
        "memory": "2g", "cpus": 1.5, "devices": ["/dev/fuse"], "pull": "never", "env": {"A": "1"},
        "extra_options": ["--security-opt", "label=disable"], "bind_tmp": False,
        "bind_dirs": {"cache": {"host": "/data", "target": "/cache", "mode": "ro"}}}})
    settings = engine_options(opts, "podman", problems=problems)
    assert not problems, [str(p) for p in problems]
    plan = podman_argv_for_step(_cab(ImageSpec(name="tool", version="2")), {}, ["tool"], backend=opts,
                                settings=settings, cwd="/w", fs=FS, name="n", extra_env={"B": "2"})
    assert plan.base == ["podman", "--root", "/root/store", "--runroot", "/run/x", "--runtime", "runc",
                         "--events-backend", "none"]
    assert plan.argv[len(plan.base):] == [
        "run", "--rm", "--name", "n", "--replace", "--network", "host", "--user", "0:0", "--userns", "keep-id",
        "--ulimit", "nofile=1024:1024", "--memory", "2g", "--cpus", "1.5", "--device", "/dev/fuse",
        "--pull", "never", "--workdir", "/w", "--env", "A=1", "--env", "B=2",
        "--volume", "/data:/cache:ro", "--volume", "/w:/w:rw", "--security-opt", "label=disable",
        "reg.local/org/tool:2", "tool"]


def test_docker_is_the_same_plan_on_another_executable():
    settings = PodmanOptions(runtime="runc", root="/ignored", user="none", network=None)
    plan = podman_argv_for_step(_cab(), {}, ["tool"], backend=BackendOptions(), settings=settings, cwd="/w", fs=FS,
                                name="n", engine="docker")
    assert plan.argv[:6] == ["docker", "run", "--rm", "--name", "n", "--runtime"]
    assert "--user" not in plan.argv and "--network" not in plan.argv and "--replace" not in plan.argv
    assert plan.image_exists_argv[:3] == ["docker", "image", "inspect"]


def test_unknown_keys_warn_and_prebuilt_images_are_refused():
    problems = Problems()
    engine_options(parse_backend_options({"podman": {"bogus": 1}}), "podman", problems=problems)
    assert [p.key for p in problems.warnings] == ["backend.podman.bogus"]
    with pytest.raises(ImageError, match="prebuilt Singularity image"):
        podman_argv_for_step(_cab(ImageSpec(name="x", path="/i/x.sif")), {}, [], backend=BackendOptions(),
                             settings=PodmanOptions(), cwd="/w", fs=FS, name="n")


def test_selection_knows_podman_and_docker():
    opts = parse_backend_options({"select": "podman,native", "podman": {"enable": False}})
    assert select_backend(opts, _cab()) == ("native", {"podman": "disabled"})
    opts = parse_backend_options({"select": ["docker", "native"]})
    assert select_backend(opts, _cab())[0] == "docker"
    assert select_backend(opts, _cab(image=None))[0] == "native"


def test_container_names_are_deterministic_and_valid():
    a = container_name("dag", "task.x", "manual__2024-01-01T00:00:00+00:00", -1, 1)
    assert a == container_name("dag", "task.x", "manual__2024-01-01T00:00:00+00:00", -1, 1)
    assert a != container_name("dag", "task.x", "manual__2024-01-01T00:00:00+00:00", -1, 2)
    assert a.startswith("stepcab-dag-task.x-manual__2024-01-01T00-00-00-00-00--1-1-") or a.startswith("stepcab-")
    assert all(c.isalnum() or c in "_.-" for c in a) and len(container_name("x" * 500)) <= 100
