"""The FastAPI app of the stepcab UI plugin, mounted by Airflow's API server under
:data:`URL_PREFIX`.

Pages (HTML, shown in the Airflow UI through the plugin's external views) and the same data as
JSON:

- ``GET /step/{dag_id}/{run_id}/{task_id}/{map_index}`` and ``GET /api/step/...``: a task instance;
- ``GET /recipe/{dag_id}`` and ``GET /api/recipe/{dag_id}``: the recipe behind a DAG;
- ``GET /report/{dag_id}/{run_id}``: a DAG run as ``stepcab report`` draws it (timeline of queue
  wait and run time per task, table of resource efficiencies: :mod:`..report`).

Access is Airflow's: every route depends on ``requires_access_dag`` of the API server's security
module, so the configured auth manager decides with the caller's token (the UI's session cookie
or a bearer token) whether they may read that DAG (and, for a step, its task instances and
XComs). Refused: 401 without a valid token, 403 without the permission.
"""

# no ``from __future__ import annotations``: FastAPI reads the routes' annotations (SessionDep,
# imported inside create_app) at definition time
from typing import Any

#: where Airflow mounts the app (``fastapi_apps[].url_prefix``)
URL_PREFIX = "/stepcab"


def map_index_of(text: str) -> int:
    """The map index in a view's URL: the UI leaves ``{MAP_INDEX}`` unfilled for an unmapped task
    instance (-1)."""
    try:
        return int(text)
    except ValueError:
        if text.strip("{}") == "MAP_INDEX":
            return -1
        raise


def create_app() -> Any:
    """A new FastAPI app serving the views (module docstring)."""
    from fastapi import Depends, FastAPI, HTTPException
    from fastapi.responses import HTMLResponse

    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
    from airflow.api_fastapi.common.db.common import SessionDep
    from airflow.api_fastapi.core_api.security import requires_access_dag

    from airflow_provider_stepcab.ui import data as D
    from airflow_provider_stepcab.ui import render as H
    from airflow_provider_stepcab.ui.data import NotFound

    app = FastAPI(title="stepcab", description="Step and Recipe views of stepcab DAGs")
    step_access = [Depends(requires_access_dag("GET", DagAccessEntity.TASK_INSTANCE)),
                   Depends(requires_access_dag("GET", DagAccessEntity.XCOM))]
    dag_access = [Depends(requires_access_dag("GET"))]

    def _step(session: Any, dag_id: str, run_id: str, task_id: str, map_index: str) -> dict:
        try:
            return D.step_data(session, dag_id, run_id, task_id, map_index_of(map_index))
        except ValueError:
            raise HTTPException(404, f"map index {map_index!r} is not a number") from None
        except NotFound as exc:
            raise HTTPException(404, str(exc)) from None

    def _recipe(session: Any, dag_id: str) -> dict:
        try:
            return D.recipe_data(session, dag_id)
        except NotFound as exc:
            raise HTTPException(404, str(exc)) from None

    @app.get("/api/step/{dag_id}/{run_id}/{task_id}/{map_index}", dependencies=step_access)
    def step_json(dag_id: str, run_id: str, task_id: str, map_index: str, session: SessionDep) -> dict:
        """What the Step view shows, as JSON."""
        return _step(session, dag_id, run_id, task_id, map_index)

    @app.get("/step/{dag_id}/{run_id}/{task_id}/{map_index}", dependencies=step_access,
             response_class=HTMLResponse)
    def step_view(dag_id: str, run_id: str, task_id: str, map_index: str, session: SessionDep) -> Any:
        """The Step view of a task instance."""
        try:
            found = _step(session, dag_id, run_id, task_id, map_index)
        except HTTPException as exc:
            return HTMLResponse(H.error_page(exc.status_code, str(exc.detail)), status_code=exc.status_code)
        return HTMLResponse(H.step_page(found, prefix=URL_PREFIX))

    @app.get("/api/recipe/{dag_id}", dependencies=dag_access)
    def recipe_json(dag_id: str, session: SessionDep) -> dict:
        """What the Recipe view shows, as JSON."""
        return _recipe(session, dag_id)

    @app.get("/recipe/{dag_id}", dependencies=dag_access, response_class=HTMLResponse)
    def recipe_view(dag_id: str, session: SessionDep) -> Any:
        """The Recipe view of a DAG."""
        try:
            found = _recipe(session, dag_id)
        except HTTPException as exc:
            return HTMLResponse(H.error_page(exc.status_code, str(exc.detail)), status_code=exc.status_code)
        return HTMLResponse(H.recipe_page(found))

    @app.get("/report/{dag_id}/{run_id}", dependencies=step_access, response_class=HTMLResponse)
    def report_view(dag_id: str, run_id: str, session: SessionDep) -> Any:
        """The Report view of a DAG run (the page ``stepcab report`` writes)."""
        from airflow_provider_stepcab.report import collect_run, render_html

        try:
            rows = collect_run(dag_id, run_id, session=session)
        except LookupError as exc:
            return HTMLResponse(H.error_page(404, str(exc)), status_code=404)
        return HTMLResponse(render_html(dag_id, run_id, rows))

    return app
