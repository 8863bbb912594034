"""``stepcab plan --script``: the generated shell script runs the recipe (native; containers via podman
and the Apptainer stand-in)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from container_helpers import IMAGE, PODMAN_SETTINGS, STANDINS, ensure_test_image, standin_env

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "example_recipes"


def _script(*args: str, cwd: Path) -> str:
    out = subprocess.run([sys.executable, "-m", "airflow_provider_stepcab", "plan", *args, "--script",
                          "--workdir", str(cwd)], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def _run(script: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    path = cwd / "run.sh"
    path.write_text(script)
    return subprocess.run(["sh", str(path)], capture_output=True, text=True, cwd=cwd, timeout=300,
                          env={**os.environ, **(env or {})})


def test_native_example_runs_from_the_script(tmp_path):
    script = _script(str(EXAMPLES / "text-pipeline.yml"), "-b", "native", cwd=tmp_path)
    assert script.startswith("#!/bin/sh\n") and "set -e" in script
    assert "# skipped (skip: true)" in script  # shout is off by default
    out = _run(script, tmp_path)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "demo-sorted.txt").read_text().split() == ["apple", "fig", "kiwi", "pear"]
    digest = hashlib.sha256((tmp_path / "demo-sorted.txt").read_bytes()).hexdigest()
    assert digest in out.stdout and "4 demo-sorted.txt" in out.stdout
    assert [line for line in out.stderr.splitlines() if line.startswith("==> ")][:2] == [
        "==> text-pipeline.make-words", "==> text-pipeline.sort-words"]


def test_loops_are_unrolled_and_params_quoted(tmp_path):
    script = _script(str(EXAMPLES / "loop.yml"), "-b", "native", "-p", "names=[a b, \"q'x\", $HOME]", cwd=tmp_path)
    assert "# unresolved at plan time: files:" in script  # gather uses GLOB(...), a run-time function
    out = _run(script.split("# 7. loop.gather")[0], tmp_path)
    assert out.returncode == 0, out.stderr
    for name in ("a b", "q'x", "$HOME"):
        assert (tmp_path / f"part-{name}.txt").read_text().splitlines()[0] == name
    assert script.count("==> loop.fan-out.") >= 6


def test_failing_step_stops_the_script(tmp_path):
    recipe = tmp_path / "r.yml"
    recipe.write_text("cabs: {sh: {command: sh -c, inputs: {s: {dtype: str, policies: {positional: true}}}}}\n"
                      "r: {steps: {a: {cab: sh, params: {s: 'exit 4'}}, b: {cab: sh, params: {s: 'touch b'}}}}\n")
    out = _run(_script(str(recipe), "-b", "native", cwd=tmp_path), tmp_path)
    assert out.returncode == 4 and not (tmp_path / "b").exists()


CONTAINER_RECIPE = """
opts:
  backend:
    podman: {settings}
    singularity: {{image_dir: {images}}}
cabs:
  upper:
    image: {{registry: LOCAL, name: {image}}}
    command: sh -c 'tr a-z A-Z < "$0" > "$1"; ls -d /tmp > "$1.tmp"'
    inputs: {{infile: {{dtype: File, policies: {{positional: true}}}}}}
    outputs: {{outfile: {{dtype: File, policies: {{positional: true}}}}}}
c:
  steps:
    up: {{cab: upper, params: {{infile: {src}, outfile: out/UP.txt}}}}
"""


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["podman", "singularity"])
def test_container_scripts_run(tmp_path, backend):
    ensure_test_image()
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "in.txt").write_text("abc\n")
    work = tmp_path / "work"
    work.mkdir()
    recipe = tmp_path / "c.yml"
    recipe.write_text(CONTAINER_RECIPE.format(settings=json.dumps(PODMAN_SETTINGS), images=tmp_path / "img",
                                              image=IMAGE.rsplit(":", 1)[0], src=tmp_path / "data" / "in.txt"))
    script = _script(str(recipe), "-b", backend, cwd=work)
    env = {}
    if backend == "singularity":
        env = {**standin_env(), "STEPCAB_SINGULARITY": str(STANDINS / "apptainer")}
        assert " build " in script
    out = _run(script, work, env)
    assert out.returncode == 0, (script, out.stderr)
    assert (work / "out" / "UP.txt").read_text() == "ABC\n"
    assert not list(Path("/tmp").glob("tmp*/UP.txt"))
