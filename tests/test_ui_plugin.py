"""The UI plugin against a real ``airflow standalone``: it is listed by Airflow, its endpoints
follow the auth manager (simple auth manager users ``admin``, ``viewer`` and ``outsider`` with no
role), and in Debian's chromium: the trigger form of ``example_recipes/loop.yml`` does not mark the
optional ``select`` list required, a run triggered from it with a per-step override finishes, its
Step view shows the argv the task ran and the overridden value with its source (``run conf``), a
mapped loop instance lists its siblings by loop value, and the Recipe view lists the steps.
Screenshots land in the test's tmp folder (docs/ui.md).

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
        "stepcab-step": "task_instance", "stepcab-recipe": "dag", "stepcab-report": "dag_run"}
    assert "stepcab" in sa.cli("plugins").stdout


def test_endpoints_follow_the_auth_manager(sa, loop_run):
    step = f"/stepcab/api/step/loop/{quote(loop_run, safe='')}/gather/-1"
    recipe = "/stepcab/api/recipe/loop"
    report = f"/stepcab/report/loop/{quote(loop_run, safe='')}"
    for path in (step, recipe, step.replace("/api/", "/"), recipe.replace("/api/", "/"), report):
        assert get(sa, path, "admin").status_code == 200, path
        assert get(sa, path, "viewer").status_code == 200, path
        assert get(sa, path, "outsider").status_code == 403, path
        assert get(sa, path, None).status_code == 401, path
    # the same verdict as Airflow's own API for that user
    assert get(sa, "/api/v2/dags/loop", "outsider").status_code == 403
    rec = get(sa, step, "viewer").json()["record"]
    assert rec["sources"]["out"] == "run conf" and rec["params"]["out"] == "merged.txt"
    assert get(sa, "/stepcab/api/step/loop/nope/gather/-1", "admin").status_code == 404
    # the Report view: the run's tasks on a timeline with their resources (as `stepcab report`)
    page = get(sa, report, "viewer").text
    assert "<h2>Timeline</h2>" in page and "<svg" in page and "gather" in page and "fan-out.write[1]" in page
    assert get(sa, "/stepcab/report/loop/nope", "admin").status_code == 404


#: the per-step override typed into the trigger form's ``steps`` field (a JSON editor)
FORM_OUT = "from-the-form.txt"


def trigger_loop_from_form(page, sa: Standalone, shot: Path) -> str:
    """Open ``loop``'s trigger form, check that the optional ``select`` list is not marked
    required, type ``{"gather": {"params": {"out": FORM_OUT}}}`` into ``steps``, trigger.

    :param shot: where to save a screenshot of the filled form.
    :return: the new run's id (found over REST by its conf).
    """
    sa.wait_dag("loop")
    page.goto(f"{sa.url}/dags/loop")
    page.get_by_test_id("trigger-dag-button").click()
    fields = page.locator('[data-scope="field"][data-part="root"]')
    select = fields.filter(has=page.locator("#element_select"))
    select.wait_for()
    # empty means every step: no red asterisk, nothing the browser insists on
    assert select.locator('[data-part="required-indicator"]').count() == 0
    assert select.get_attribute("data-required") is None
    assert select.locator("[required], [aria-required=true]").count() == 0
    editor = fields.filter(has=page.get_by_text("Per-step overrides", exact=False)).locator(".monaco-editor")
    editor.click()
    page.keyboard.press("ControlOrMeta+A")
    page.keyboard.press("Delete")
    page.keyboard.insert_text(json.dumps({"gather": {"params": {"out": FORM_OUT}}}))
    page.screenshot(path=str(shot), full_page=True)
    page.get_by_test_id("trigger-dag-submit").click()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        runs = sa.api("GET", "/dags/loop/dagRuns", params={"limit": 20, "order_by": "-run_after",
                                                           "run_type": "manual"})["dag_runs"]
        for run in runs:
            given = ((run.get("conf") or {}).get("steps") or {}).get("gather") or {}
            if (given.get("params") or {}).get("out") == FORM_OUT:
                return run["dag_run_id"]
        time.sleep(1)
    raise AssertionError(f"no run of loop with steps.gather.params.out={FORM_OUT!r} after triggering from the form")


def frame_of(page):
    """The plugin view's iframe (the external view's page) once its body has loaded."""
    frame = page.frame_locator("iframe")
    frame.locator("h1").first.wait_for()
    return frame


@pytest.mark.browser
def test_step_and_recipe_views_in_chromium(sa, tmp_path):
    """Trigger ``loop`` from the form, then read its Step and Recipe views in chromium
    (screenshots: ``step-view.png``, ``loop-instance.png``, ``recipe-view.png`` in the test's
    tmp folder)."""
    _require_browser()
    from playwright.sync_api import sync_playwright

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
                run_id = trigger_loop_from_form(page, sa, tmp_path / "trigger-form.png")
                run = sa.wait_dag_run("loop", run_id, timeout=300)
                assert run["state"] == "success", sa.failure_report("loop", run_id)
                run_path = f"{sa.url}/dags/loop/runs/{quote(run_id, safe='')}"
                log = sa.task_log("loop", run_id, "gather")
                [ran] = [line.split("running: ", 1)[1] for line in log.splitlines() if "running: " in line]

                page.goto(f"{run_path}/tasks/gather")
                page.get_by_role("link", name="Step").click()
                frame = frame_of(page)
                shown = frame.locator("#argv").inner_text()
                # the argv shown is the one the task executed (its log line), copyable as one line
                assert " ".join(shlex.split(shown)) == ran
                assert FORM_OUT in shlex.split(shown)
                row = frame.locator('#params tr[data-param="out"]')
                assert row.locator("td").nth(1).inner_text() == FORM_OUT
                assert row.locator(".source").inner_text() == "run conf"
                files = frame.locator('#params tr[data-param="files"] .source').inner_text()
                assert files == "formula"
                page.screenshot(path=str(tmp_path / "step-view.png"), full_page=True)

                page.goto(f"{run_path}/tasks/fan-out.write/mapped/1/plugin/stepcab-step")
                frame = frame_of(page)
                frame.locator("#loop-instances li a").first.wait_for()
                names = frame.locator("#loop-instances li a").all_inner_texts()
                assert names == ["name=alpha", "name=beta", "name=gamma"], names
                assert frame.locator("#loop-instances li.here a").inner_text() == "name=beta"
                page.screenshot(path=str(tmp_path / "loop-instance.png"), full_page=True)

                page.goto(f"{sa.url}/dags/loop")
                page.get_by_role("link", name="Recipe").click()
                frame = frame_of(page)
                frame.locator("#steps tbody tr").nth(4).wait_for()
                steps = frame.locator("#steps tbody tr").evaluate_all("rows => rows.map(r => r.dataset.step)")
                assert steps == ["fan-out", "fan-out.write", "fan-out.hash", "gather", "count"], steps
                page.screenshot(path=str(tmp_path / "recipe-view.png"), full_page=True)
        finally:
            browser.close()
