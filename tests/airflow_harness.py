"""Run a real ``airflow standalone`` for tests and talk to it over REST.

Usage from tests (the fixture is re-exported by ``conftest.py``)::

    def test_x(standalone):
        standalone.wait_dag("my_dag")
        run_id = standalone.trigger("my_dag", conf={"x": 1})
        run = standalone.wait_dag_run("my_dag", run_id, timeout=120)
        assert run["state"] == "success"
        assert "x=1" in standalone.task_log("my_dag", run_id, "task")

One instance serves the whole session (startup ~12 s idle, 2-3 min on a busy 2-core box).  It runs in its own process group in a
temporary ``AIRFLOW_HOME`` on a free port; teardown stops the whole group.  The dags folder holds the
harness's own small DAGs (:data:`HARNESS_DAGS`) plus, once it exists, a copy of the repo's
``dags/stepcab_dags.py``; ``example_recipes/`` is the recipe folder (``STEPCAB_RECIPE_FOLDERS``).

No Airflow import here: it must not fix Airflow's configuration of the test process.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
LOADER = REPO / "dags" / "stepcab_dags.py"
EXAMPLE_RECIPES = REPO / "example_recipes"
TERMINAL = {"success", "failed"}
#: tries of an idempotent REST read that times out (each waits up to the client's 60 s)
READ_ATTEMPTS = 3

#: Hand-written DAGs proving the harness independently of the recipe loader.
HARNESS_DAGS = '''
import pendulum
from airflow.sdk import DAG, Param
from airflow.providers.standard.operators.bash import BashOperator

with DAG("harness_param", schedule=None, tags=["harness"],
         params={"greeting": Param("hello", type="string", description="What the task says"),
                 "times": Param(2, type="integer", description="How many times")}):
    BashOperator(task_id="say",
                 bash_command="for i in $(seq {{ params.times }}); do echo GREETING={{ params.greeting }}; done")

with DAG("harness_daily", schedule="@daily", catchup=False, tags=["harness"],
         start_date=pendulum.datetime(2024, 1, 1, tz="UTC")):
    BashOperator(task_id="stamp", bash_command="echo DS={{ ds }}")
'''

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def have_loader() -> bool:
    """True once the real DAG loader and at least one example recipe exist."""
    return LOADER.is_file() and any(EXAMPLE_RECIPES.glob("*.y*ml"))


class StandaloneError(AssertionError):
    pass


class Standalone:
    """One ``airflow standalone`` process group plus a REST client."""

    def __init__(self, base: Path, dags_folder: Path, *, env: dict[str, str] | None = None,
                 parallelism: int = 4) -> None:
        self.base = Path(base)
        self.home = self.base / "home"
        self.dags_folder = Path(dags_folder)
        self.port = free_port()
        self.url = f"http://localhost:{self.port}"
        self.log_path = self.home / "standalone.log"
        self.proc: subprocess.Popen | None = None
        self.password: str | None = None
        self._client: httpx.Client | None = None
        self.env = self._make_env(parallelism, env or {})

    # -- process -----------------------------------------------------------------------------
    def _make_env(self, parallelism: int, extra: dict[str, str]) -> dict[str, str]:
        # Drop the test process's Airflow settings (conftest's in-process home) but keep the rest.
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        work = self.base / "work"
        env.update({
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            # SQLite waits up to 60 s for a lock (default 5 s: "database is locked" under load)
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.home}/airflow.db?timeout=60",
            "AIRFLOW__CORE__PARALLELISM": str(parallelism),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.port),
            # tasks reach the execution API through base_url (default http://localhost:8080)
            "AIRFLOW__API__BASE_URL": self.url,
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            # generous parse limits: CI machines and a busy 2-core box parse slowly
            "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "120",
            "AIRFLOW__DAG_PROCESSOR__DAG_FILE_PROCESSOR_TIMEOUT": "180",
            # task -> execution API calls (default 5 s) time out when SQLite is busy under load; the
            # retry then meets a state already changed (HTTP 400) and the task fails spuriously
            "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "90",
            "STEPCAB_RECIPE_FOLDERS": str(EXAMPLE_RECIPES),
            "AIRFLOW__STEPCAB__RECIPE_FOLDERS": str(EXAMPLE_RECIPES),
            "AIRFLOW__STEPCAB__WORKDIR": str(work),
            "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONUNBUFFERED": "1",
            "NO_COLOR": "1",
        })
        env.update(extra)
        return env

    def start(self, timeout: float = 300) -> "Standalone":
        self.home.mkdir(parents=True, exist_ok=True)
        Path(self.env["AIRFLOW__STEPCAB__WORKDIR"]).mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "wb")
        # start_new_session: own process group (pgid == pid) so teardown can stop every child.
        self.proc = subprocess.Popen([str(VENV_BIN / "airflow"), "standalone"], env=self.env,
                                     cwd=self.base, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True,
                                     preexec_fn=_interrupt_when_parent_dies)
        log.close()
        try:
            self._wait_healthy(timeout)
            self.password = self._read_password(timeout=30)
            self._login()
        except BaseException:
            self.stop()
            raise
        return self

    def _fail(self, message: str) -> None:
        raise StandaloneError(f"{message}\n--- last lines of {self.log_path} ---\n{self.log_tail()}")

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def health(self) -> dict[str, Any] | None:
        try:
            r = httpx.get(f"{self.url}/api/v2/monitor/health", timeout=3)
            return r.json() if r.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            return None

    def _wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._fail(f"airflow standalone exited early with {self.proc.returncode}")
            h = self.health()
            if h and all(h.get(k, {}).get("status") == "healthy"
                         for k in ("metadatabase", "scheduler", "dag_processor")):
                return
            time.sleep(0.5)
        self._fail(f"airflow standalone not healthy after {timeout:.0f} s (last: {self.health()})")

    def _read_password(self, timeout: float) -> str:
        path = self.home / "simple_auth_manager_passwords.json.generated"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                return json.loads(path.read_text())["admin"]
            except (OSError, ValueError, KeyError):
                time.sleep(0.2)
        self._fail(f"no admin password in {path}")

    def _login(self) -> None:
        r = httpx.post(f"{self.url}/auth/token", json={"username": "admin", "password": self.password},
                       timeout=30)
        if r.status_code not in (200, 201):
            self._fail(f"POST /auth/token -> {r.status_code} {r.text[:300]}")
        token = r.json()["access_token"]
        self._client = httpx.Client(base_url=self.url, timeout=60,
                                    headers={"Authorization": f"Bearer {token}"})

    def stop(self, grace: float = 20) -> None:
        """Stop the whole process group: SIGINT (standalone's own clean stop), SIGTERM, SIGKILL."""
        if self._client is not None:
            self._client.close()
            self._client = None
        if self.proc is None:
            return
        pgid = self.proc.pid
        for sig, wait in ((signal.SIGINT, grace), (signal.SIGTERM, 10), (signal.SIGKILL, 5)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, sig)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and _group_alive(pgid):
                self.proc.poll()
                time.sleep(0.2)
            if not _group_alive(pgid):
                break
        self.proc.poll()
        self.proc = None

    # -- REST --------------------------------------------------------------------------------
    def api(self, method: str, path: str, json: Any = None, *, params: dict | None = None,
            headers: dict | None = None, ok: tuple[int, ...] = (200, 201, 204)) -> Any:
        """Call ``/api/v2`` + *path*; return parsed JSON (or text); raise unless status is in *ok*."""
        if self._client is None:
            raise StandaloneError("standalone is not running")
        if not path.startswith("/"):
            path = "/" + path
        if not path.startswith(("/api/", "/auth/")):
            path = "/api/v2" + path
        r = self._request(method, path, json=json, params=params, headers=headers)
        if ok and r.status_code not in ok:
            raise StandaloneError(f"{method} {path} -> {r.status_code}: {r.text[:2000]}")
        if not r.content:
            return None
        try:
            return r.json()
        except ValueError:
            return r.text

    def _request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        """One HTTP call; reads (GET) that time out or lose their connection are retried.

        Under load the single-process API server of ``airflow standalone`` on SQLite can stall for
        a minute (it also serves the tasks' execution API); a GET is safe to repeat, a write is not.
        """
        attempts = READ_ATTEMPTS if method.upper() == "GET" else 1
        for attempt in range(1, attempts + 1):
            try:
                return self._client.request(method, path, **kw)
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                if attempt == attempts:
                    self._fail(f"{method} {path}: {exc!r} on attempt {attempt}/{attempts}")
                time.sleep(2)
        raise AssertionError("unreachable")

    def dag_ids(self) -> list[str]:
        return [d["dag_id"] for d in self.api("GET", "/dags", params={"limit": 1000})["dags"]]

    def wait_dag(self, dag_id: str, timeout: float = 120) -> dict:
        """Wait until the DAG processor has parsed *dag_id*; return its DAG details."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = self._request("GET", f"/api/v2/dags/{dag_id}/details")
            if r.status_code == 200:
                return r.json()
            time.sleep(1)
        errors = self.api("GET", "/importErrors").get("import_errors", [])
        raise StandaloneError(f"DAG {dag_id!r} not parsed after {timeout:.0f} s; known: {self.dag_ids()}; "
                              f"import errors: {json_dumps(errors)}")

    def unpause(self, dag_id: str) -> None:
        self.api("PATCH", f"/dags/{dag_id}", {"is_paused": False})

    def trigger(self, dag_id: str, conf: dict | None = None, *, unpause: bool = True,
                run_id: str | None = None) -> str:
        if unpause:
            self.unpause(dag_id)
        body: dict[str, Any] = {"logical_date": None, "conf": conf or {}}
        if run_id:
            body["dag_run_id"] = run_id
        return self.api("POST", f"/dags/{dag_id}/dagRuns", body)["dag_run_id"]

    def wait_dag_run(self, dag_id: str, run_id: str, timeout: float = 180) -> dict:
        """Poll until the run is success/failed; return the run.  Times out with task states."""
        deadline = time.monotonic() + timeout
        while True:
            run = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}")
            if run["state"] in TERMINAL:
                return run
            if time.monotonic() > deadline:
                raise StandaloneError(f"run {dag_id}/{run_id} still {run['state']} after {timeout:.0f} s; "
                                      f"tasks: {self.task_states(dag_id, run_id)}")
            time.sleep(1)

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        return self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances",
                        params={"limit": 1000})["task_instances"]

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        out = {}
        for ti in self.task_instances(dag_id, run_id):
            key = ti["task_id"] if ti.get("map_index", -1) < 0 else f"{ti['task_id']}[{ti['map_index']}]"
            out[key] = ti["state"]
        return out

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1, *,
                 map_index: int = -1) -> str:
        """The task's log as text, one ``event`` per line (REST answers 406 to text/plain)."""
        params = {"full_content": "true"}
        if map_index >= 0:
            params["map_index"] = str(map_index)
        r = self._request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}",
                          params=params, headers={"Accept": "application/x-ndjson"})
        if r.status_code != 200:
            raise StandaloneError(f"task log {dag_id}/{run_id}/{task_id} -> {r.status_code}: {r.text[:500]}")
        lines = []
        for raw in r.text.splitlines():
            if not raw.strip():
                continue
            try:
                rec = json.loads(raw)
            except ValueError:
                lines.append(raw)
                continue
            lines.extend(_events(rec))
        return "\n".join(lines)

    def failure_report(self, dag_id: str, run_id: str) -> str:
        """States and logs of every task of a run, for assertion messages."""
        parts = []
        for ti in self.task_instances(dag_id, run_id):
            parts.append(f"--- {ti['task_id']} [{ti.get('map_index')}] {ti['state']}")
            try:
                parts.append(self.task_log(dag_id, run_id, ti["task_id"], max(ti.get("try_number") or 1, 1),
                                           map_index=ti.get("map_index", -1)))
            except StandaloneError as e:
                parts.append(str(e))
        parts.append(f"--- last lines of {self.log_path}\n{self.log_tail(30)}")
        return "\n".join(parts)

    # -- CLI ---------------------------------------------------------------------------------
    def cli(self, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
        """Run ``airflow <args>`` against this instance's home/database."""
        out = subprocess.run([str(VENV_BIN / "airflow"), *args], env=self.env, cwd=self.base,
                             capture_output=True, text=True, timeout=timeout)
        if check and out.returncode != 0:
            raise StandaloneError(f"airflow {' '.join(args)} -> {out.returncode}\n{out.stdout}\n{out.stderr}")
        return out


def _events(rec: Any) -> list[str]:
    """Text lines of one ndjson log record (structured logs carry ``event``; older ones ``content``)."""
    if isinstance(rec, dict):
        if "event" in rec:
            return [str(rec["event"])]
        if "content" in rec:
            return [x for item in rec["content"] for x in _events(item)] \
                if isinstance(rec["content"], list) else [str(rec["content"])]
    return [json.dumps(rec)]


def _interrupt_when_parent_dies() -> None:
    """In the child: SIGINT when the test process dies without teardown (killed by a CI timeout).

    ``airflow standalone`` takes SIGINT like Ctrl-C and stops its components; nothing is orphaned.
    """
    # a shell's background job starts with SIGINT ignored, and an ignored signal stays ignored
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None).prctl(1, int(signal.SIGINT))  # PR_SET_PDEATHSIG (Linux)


def _group_alive(pgid: int) -> bool:
    """True while a non-zombie process of group *pgid* exists."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False


def json_dumps(value: Any) -> str:
    return json.dumps(value, indent=1, default=str)[:4000]


def make_dags_folder(path: Path, *, with_loader: bool | None = None) -> Path:
    """Fill *path* with the harness DAGs and (when present) a copy of the repo's recipe loader."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "harness_dags.py").write_text(HARNESS_DAGS)
    if with_loader is None:
        with_loader = have_loader()
    if with_loader:
        shutil.copy2(LOADER, path / LOADER.name)
    return path


@pytest.fixture(scope="session")
def standalone(tmp_path_factory) -> Standalone:
    """The session's ``airflow standalone`` (harness DAGs + the repo's recipe loader when present)."""
    base = tmp_path_factory.mktemp("standalone")
    dags = make_dags_folder(base / "dags")
    sa = Standalone(base, dags)
    sa.start()
    try:
        yield sa
    finally:
        sa.stop()
