"""The DAG factory picks each step's operator class from its merged backend settings."""

import textwrap

import pytest

pytestmark = pytest.mark.airflow

RECIPE = """
opts:
  backend:
    select: native
cabs:
  plain:
    command: "true"
  imaged:
    command: "true"
    image: {registry: LOCAL, name: busybox, version: "1"}
choices:
  steps:
    a-native:
      cab: plain
    b-kube:
      cab: imaged
      backend: {select: kube}
    c-kube-no-image:
      cab: plain
      backend: {select: "kube,native"}
    d-singularity:
      cab: imaged
      backend: {select: [singularity, native]}
    e-podman:
      cab: imaged
      backend: {select: podman}
    f-slurm:
      cab: plain
      backend: {slurm: {enable: true}}
    g-inner:
      recipe:
        backend: {select: kube}
        steps:
          h-inherits-kube:
            cab: imaged
"""


def test_operator_class_per_step(tmp_path):
    from airflow_provider_stepcab.dag_factory import build_dags

    path = tmp_path / "choices.yml"
    path.write_text(textwrap.dedent(RECIPE))
    dags = build_dags(folders=[str(tmp_path)], files=[str(path)])
    dag = dags["choices"]
    kinds = {t.task_id: type(t).__name__ for t in dag.tasks}
    assert kinds == {
        "a-native": "StepcabNativeOperator",
        "b-kube": "StepcabKubernetesOperator",
        "c-kube-no-image": "StepcabNativeOperator",  # kube needs an image: next in select
        "d-singularity": "StepcabSingularityOperator",
        "e-podman": "StepcabPodmanOperator",
        "f-slurm": "StepcabSlurmOperator",
        "g-inner.h-inherits-kube": "StepcabKubernetesOperator",
    }


def test_slurm_steps_get_one_retry_unless_the_recipe_says(tmp_path):
    from airflow_provider_stepcab.dag_factory import build_dags

    path = tmp_path / "choices.yml"
    path.write_text(textwrap.dedent(RECIPE))
    dag = build_dags(folders=[str(tmp_path)], files=[str(path)])["choices"]
    assert dag.get_task("f-slurm").retries == 1 and dag.get_task("a-native").retries == 0
    path.write_text(textwrap.dedent(RECIPE).replace("opts:\n", "opts:\n  airflow: {retries: 0}\n", 1))
    dag = build_dags(folders=[str(tmp_path)], files=[str(path)])["choices"]
    assert dag.get_task("f-slurm").retries == 0
