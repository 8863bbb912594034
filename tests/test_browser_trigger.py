"""The Airflow UI's trigger form, driven in Debian's chromium by Playwright (headless).

Log in to the session's ``airflow standalone``, open a DAG's trigger form, find a run parameter with
its default and description, change it, trigger, and check in the task log that the run used it.

Needs ``/usr/bin/chromium`` (``scripts/install-test-system-deps.sh``) and the ``playwright`` wheel (its
bundled driver only: no ``playwright install``).  Missing either skips locally and fails on CI.
A screenshot and the page HTML land in the test's tmp dir on failure.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import pytest

from airflow_harness import Standalone, StandaloneError, have_loader
from needs import missing

pytestmark = [pytest.mark.slow, pytest.mark.airflow, pytest.mark.browser]

CHROMIUM = os.environ.get("STEPCAB_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
UI_TIMEOUT_MS = 60_000


def _require_browser():
    problem = None
    if not os.access(CHROMIUM, os.X_OK):
        problem = f"{CHROMIUM} missing (run scripts/install-test-system-deps.sh)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            problem = "python package playwright missing (pip install playwright)"
    if problem:
        missing(f"browser test cannot run here: {problem}")


@pytest.fixture(scope="module")
def ui(request, tmp_path_factory):
    """``(page, standalone)``: a logged-in chromium page on the standalone UI.

    The browser is checked before the session's standalone is started (tests must not ask for the
    session-scoped ``standalone`` fixture themselves: pytest would set it up first).
    """
    _require_browser()
    standalone: Standalone = request.getfixturevalue("standalone")
    from playwright.sync_api import sync_playwright

    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(str(profile), executable_path=CHROMIUM, headless=True,
                                                   args=CHROMIUM_ARGS)
        ctx.set_default_timeout(UI_TIMEOUT_MS)
        page = ctx.pages[0] if ctx.pages else ctx.new_page()
        try:
            with on_failure_snapshot(page, profile.parent / "login"):
                page.goto(standalone.url)
                page.locator("input[name=username]").fill("admin")
                page.locator("input[name=password]").fill(standalone.password)
                page.locator("button[type=submit]").click()
                page.wait_for_url(lambda url: "/auth/login" not in url)
            yield page, standalone
        finally:
            ctx.close()


@contextlib.contextmanager
def on_failure_snapshot(page, stem: Path):
    """On any failure save ``<stem>.png`` and ``<stem>.html`` and say where they are."""
    try:
        yield
    except BaseException as exc:
        notes = []
        with contextlib.suppress(Exception):
            page.screenshot(path=f"{stem}.png", full_page=True)
            notes.append(f"{stem}.png")
        with contextlib.suppress(Exception):
            Path(f"{stem}.html").write_text(page.content())
            notes.append(f"{stem}.html")
        if notes and hasattr(exc, "add_note"):
            exc.add_note(f"page at {page.url}; saved {', '.join(notes)}")
        raise


def trigger_with_form(page, sa: Standalone, dag_id: str, param: str, *, default: str, help_text: str,
                      value: str) -> str:
    """Open *dag_id*'s trigger form, check *param*'s default and description, set *value*, trigger.

    :return: the run id of the new run (found over REST by its conf).
    """
    sa.wait_dag(dag_id)
    page.goto(f"{sa.url}/dags/{dag_id}")
    page.get_by_test_id("trigger-dag-button").click()
    field = page.locator('[data-scope="field"][data-part="root"]').filter(
        has=page.locator(f'[name="element_{param}"]'))
    box = field.locator(f'[name="element_{param}"]')
    box.wait_for()
    assert box.input_value() == default
    assert field.locator('[data-part="helper-text"]').inner_text().strip() == help_text
    box.fill(value)
    page.get_by_test_id("trigger-dag-submit").click()

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        runs = sa.api("GET", f"/dags/{dag_id}/dagRuns",
                      params={"limit": 20, "order_by": "-run_after", "run_type": "manual"})["dag_runs"]
        for run in runs:
            if (run.get("conf") or {}).get(param) == value:
                return run["dag_run_id"]
        time.sleep(1)
    raise StandaloneError(f"no run of {dag_id} with conf {param}={value!r} after triggering from the UI")


def test_trigger_form_of_harness_dag(ui, tmp_path):
    page, standalone = ui
    with on_failure_snapshot(page, tmp_path / "harness_param"):
        run_id = trigger_with_form(page, standalone, "harness_param", "greeting", default="hello",
                                   help_text="What the task says", value="hola-from-chromium")
    run = standalone.wait_dag_run("harness_param", run_id, timeout=240)
    assert run["state"] == "success", standalone.failure_report("harness_param", run_id)
    log = standalone.task_log("harness_param", run_id, "say")
    assert log.splitlines().count("GREETING=hola-from-chromium") == 2, log


@pytest.mark.skipif(not have_loader(), reason="dags/stepcab_dags.py or example_recipes/ not there yet")
def test_trigger_form_of_example_recipe(ui, tmp_path):
    """example_recipes/text-pipeline.yml: input ``prefix`` (default ``demo``) shown with its ``info``."""
    page, standalone = ui
    dag_id = "text-pipeline"
    with on_failure_snapshot(page, tmp_path / dag_id):
        run_id = trigger_with_form(page, standalone, dag_id, "prefix", default="demo",
                                   help_text="prefix of every file written", value="chromium")
    run = standalone.wait_dag_run(dag_id, run_id, timeout=300)
    assert run["state"] == "success", standalone.failure_report(dag_id, run_id)
    # the other inputs kept their defaults: 6 words, 4 unique
    assert run["conf"]["words"] == ["pear", "apple", "fig", "apple", "kiwi", "pear"], run["conf"]
    log = standalone.task_log(dag_id, run_id, "report")
    assert "chromium: 4 unique words, sha256 " in log, log
