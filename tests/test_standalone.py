"""A real ``airflow standalone``: API up, DAGs listed and runs triggered over REST."""

from __future__ import annotations

import pytest

from airflow_harness import EXAMPLE_RECIPES, have_loader

pytestmark = [pytest.mark.slow, pytest.mark.airflow]


def test_health_reports_every_component(standalone):
    health = standalone.health()
    assert health is not None
    for component in ("metadatabase", "scheduler", "dag_processor", "triggerer"):
        assert health[component]["status"] == "healthy", (component, health)


def test_harness_dag_runs_with_conf(standalone):
    standalone.wait_dag("harness_param")
    run_id = standalone.trigger("harness_param", conf={"greeting": "bonjour", "times": 3})
    run = standalone.wait_dag_run("harness_param", run_id, timeout=180)
    assert run["state"] == "success", standalone.failure_report("harness_param", run_id)
    assert run["conf"] == {"greeting": "bonjour", "times": 3}
    log = standalone.task_log("harness_param", run_id, "say")
    assert log.splitlines().count("GREETING=bonjour") == 3, log


# --- the real recipe loader over example_recipes/ ----------------------------------------------------
needs_loader = pytest.mark.skipif(not have_loader(), reason="dags/stepcab_dags.py or example_recipes/ not there yet")
NATIVE_DAG = "text-pipeline"  # example_recipes/text-pipeline.yml: coreutils cabs, runs natively


def example_stems() -> list[str]:
    from airflow_provider_stepcab.dag_factory.naming import file_stem, sanitize_id

    return sorted(sanitize_id(file_stem(str(p))) for p in EXAMPLE_RECIPES.glob("*.y*ml"))


@needs_loader
def test_example_recipes_are_listed_over_rest(standalone):
    standalone.wait_dag(NATIVE_DAG)
    errors = standalone.api("GET", "/importErrors")["import_errors"]
    assert errors == [], errors
    dags = {d["dag_id"]: d for d in standalone.api("GET", "/dags", params={"limit": 1000, "tags": ["stepcab"]})["dags"]}
    for stem in example_stems():
        assert any(d == stem or d.startswith(stem + "__") for d in dags), (stem, sorted(dags))
    details = standalone.api("GET", f"/dags/{NATIVE_DAG}/details")
    params = details["params"]
    assert params["prefix"]["value"] == "demo"
    assert params["prefix"]["description"] == "prefix of every file written"
    assert params["words"]["value"] == ["pear", "apple", "fig", "apple", "kiwi", "pear"]


@needs_loader
def test_native_example_recipe_runs_with_conf_over_rest(standalone):
    standalone.wait_dag(NATIVE_DAG)
    conf = {"prefix": "rest", "words": ["b", "a", "b", "c"]}
    run_id = standalone.trigger(NATIVE_DAG, conf=conf)
    run = standalone.wait_dag_run(NATIVE_DAG, run_id, timeout=300)
    assert run["state"] == "success", standalone.failure_report(NATIVE_DAG, run_id)
    states = standalone.task_states(NATIVE_DAG, run_id)
    assert states["report"] == "success" and states["shout"] == "skipped", states
    log = standalone.task_log(NATIVE_DAG, run_id, "report")
    assert "rest: 3 unique words, sha256 " in log, log
