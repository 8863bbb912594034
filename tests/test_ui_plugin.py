"""The UI plugin against a real ``airflow standalone``: it is listed by Airflow, its endpoints
follow the auth manager (simple auth manager users ``admin``, ``viewer`` and ``outsider`` with no
role), and in Debian's chromium the Step view of a finished run of ``example_recipes/loop.yml``
shows the argv the task ran, a value set at trigger time with its source, the loop instances by
value, and the Recipe view lists the steps. Screenshots land in the test's tmp folder.

The plugin is found through the package's ``airflow.plugins`` entry point. Until the shared
venv's editable install is re-made from this ``pyproject.toml`` its metadata lacks that entry
point; :func:`entry_point_dir` then writes the same entry point (read from ``pyproject.toml``)
into a dist-info folder put on the standalone's ``PYTHONPATH``.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shlex
import time
import tomllib
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from airflow_harness import REPO, Standalone, make_dags_folder
from test_browser_trigger import _require_browser, on_failure_snapshot, CHROMIUM, CHROMIUM_ARGS, UI_TIMEOUT_MS

pytestmark = [pytest.mark.slow, pytest.mark.airflow]
USERS = "admin:admin,viewer:viewer,outsider:"
CONF = {"names": ["alpha", "L"], "steps": {"gather": {"params": {"out": "merged.txt"}}}}


def entry_point_dir(base: Path) -> str | None:
    """A folder holding the ``airflow.plugins`` entry point of ``pyproject.toml`` when the
    installed metadata does not have it yet (module docstring), else ``None``."""
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"]["airflow.plugins"]
    installed = {ep.name for ep in importlib.metadata.entry_points(group="airflow.plugins")}
    if set(declared) <= installed:
        return None
    info = base / "entry-points" / "stepcab_ui_entry_points-0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: stepcab-ui-entry-points\nVersion: 0\n")
    (info / "entry_points.txt").write_text("[airflow.plugins]\n" + "".join(f"{k} = {v}\n" for k, v in declared.items()))
    return str(info.parent)


@pytest.fixture(scope="module")
def sa(tmp_path_factory):
    base = tmp_path_factory.mktemp("ui-standalone")
    path = [str(REPO)] + [p for p in (entry_point_dir(base), os.environ.get("PYTHONPATH")) if p]
    server = Standalone(base, make_dags_folder(base / "dags"),
                        env={"PYTHONPATH": os.pathsep.join(path), "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": USERS})
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def loop_run(sa):
    sa.wait_dag("loop")
    run_id = sa.trigger("loop", conf=CONF)
    run = sa.wait_dag_run("loop", run_id, timeout=300)
    assert run["state"] == "success", sa.failure_report("loop", run_id)
    return run_id


def token(sa: Standalone, user: str) -> str:
    passwords = json.loads((sa.home / "simple_auth_manager_passwords.json.generated").read_text())
    r = httpx.post(f"{sa.url}/auth/token", json={"username": user, "password": passwords[user]}, timeout=60)
    assert r.status_code in (200, 201), r.text
    return r.json()["access_token"]


def get(sa: Standalone, path: str, user: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token(sa, user)}"} if user else {}
    return httpx.get(sa.url + path, headers=headers, timeout=120)


def test_plugin_is_registered(sa):
    plugins = sa.api("GET", "/plugins")["plugins"]
    [plugin] = [p for p in plugins if p["name"] == "stepcab"]
    assert {v["url_route"]: v["destination"] for v in plugin["external_views"]} == {
        "stepcab-step": "task_instance", "stepcab-recipe": "dag"}
    assert "stepcab" in sa.cli("plugins").stdout


def test_endpoints_follow_the_auth_manager(sa, loop_run):
    step = f"/stepcab/api/step/loop/{quote(loop_run, safe='')}/gather/-1"
    recipe = "/stepcab/api/recipe/loop"
    for path in (step, recipe, step.replace("/api/", "/"), recipe.replace("/api/", "/")):
        assert get(sa, path, "admin").status_code == 200, path
        assert get(sa, path, "viewer").status_code == 200, path
        assert get(sa, path, "outsider").status_code == 403, path
        assert get(sa, path, None).status_code == 401, path
    # the same verdict as Airflow's own API for that user
    assert get(sa, "/api/v2/dags/loop", "outsider").status_code == 403
    rec = get(sa, step, "viewer").json()["record"]
    assert rec["sources"]["out"] == "run conf" and rec["params"]["out"] == "merged.txt"
    assert get(sa, "/stepcab/api/step/loop/nope/gather/-1", "admin").status_code == 404


@pytest.mark.browser
def test_step_and_recipe_views_in_chromium(sa, loop_run, tmp_path):
    _require_browser()
    from playwright.sync_api import sync_playwright

    run_path = f"{sa.url}/dags/loop/runs/{quote(loop_run, safe='')}"
    log = sa.task_log("loop", loop_run, "gather")
    [ran] = [line.split("running: ", 1)[1] for line in log.splitlines() if "running: " in line]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(UI_TIMEOUT_MS)
        try:
            with on_failure_snapshot(page, tmp_path / "ui"):
                page.goto(sa.url)
                page.locator("input[name=username]").fill("admin")
                page.locator("input[name=password]").fill(sa.password)
                page.locator("button[type=submit]").click()
                page.wait_for_url(lambda url: "/auth/login" not in url)
                page.goto(f"{run_path}/tasks/gather")
                page.get_by_role("link", name="Step").click()
                frame = page.frame_locator("iframe")
                shown = frame.locator("#argv").inner_text()
                # the argv shown is the one the task executed (its log line), copyable as one line
                assert " ".join(shlex.split(shown)) == ran
                row = frame.locator('#params tr[data-param="out"]')
                assert row.locator("td").nth(1).inner_text() == "merged.txt"
                assert row.locator(".source").inner_text() == "run conf"
                page.screenshot(path=str(tmp_path / "step-view.png"), full_page=True)

                page.goto(f"{run_path}/tasks/fan-out.write/mapped/1/plugin/stepcab-step")
                frame = page.frame_locator("iframe")
                frame.locator("#loop-instances li a").first.wait_for()
                names = frame.locator("#loop-instances li a").all_inner_texts()
                assert names == ["name=alpha", "name=L"], names
                page.screenshot(path=str(tmp_path / "loop-instance.png"), full_page=True)

                page.goto(f"{sa.url}/dags/loop")
                page.get_by_role("link", name="Recipe").click()
                frame = page.frame_locator("iframe")
                frame.locator("#steps").wait_for()
                deadline = time.monotonic() + 30
                steps = []
                while time.monotonic() < deadline and len(steps) < 5:
                    steps = frame.locator("#steps tbody tr").evaluate_all(
                        "rows => rows.map(r => r.dataset.step)")
                assert steps == ["fan-out", "fan-out.write", "fan-out.hash", "gather", "count"], steps
                page.screenshot(path=str(tmp_path / "recipe-view.png"), full_page=True)
        finally:
            browser.close()
