"""The Airflow plugin of the provider: Step and Recipe views in the Airflow UI.

Registered through the ``airflow.plugins`` entry point of the package (``pyproject.toml``), so
installing the provider is enough: Airflow loads entry-point plugins in every component, while
plugins announced in the provider info are only loaded with ``[core] lazy_discover_providers =
False``. The FastAPI app (:mod:`.app`) is created the first time Airflow asks for it (the API
server): the scheduler, workers and tasks load the plugin but never import FastAPI code for it.

External views (the UI shows them as tabs, their pages in an iframe):

- **Step** on every task instance: ``/stepcab/step/{DAG_ID}/{RUN_ID}/{TASK_ID}/{MAP_INDEX}``;
- **Recipe** on every DAG: ``/stepcab/recipe/{DAG_ID}``.
"""

from __future__ import annotations

from typing import Any

from airflow.plugins_manager import AirflowPlugin

from airflow_provider_stepcab.ui.app import URL_PREFIX


class _LazyApps:
    """``fastapi_apps``, built on first access (on the class or an instance)."""

    def __init__(self) -> None:
        self._apps: list | None = None

    def __get__(self, obj: Any, owner: type) -> list:
        if self._apps is None:
            from airflow_provider_stepcab.ui.app import create_app

            self._apps = [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "stepcab"}]
        return self._apps


class StepcabPlugin(AirflowPlugin):
    """Step view per task instance and Recipe view per DAG (module docstring)."""

    name = "stepcab"
    fastapi_apps = _LazyApps()
    external_views = [
        {"name": "Step", "href": URL_PREFIX + "/step/{DAG_ID}/{RUN_ID}/{TASK_ID}/{MAP_INDEX}",
         "destination": "task_instance", "url_route": "stepcab-step"},
        {"name": "Recipe", "href": URL_PREFIX + "/recipe/{DAG_ID}", "destination": "dag",
         "url_route": "stepcab-recipe"},
        {"name": "Report", "href": URL_PREFIX + "/report/{DAG_ID}/{RUN_ID}", "destination": "dag_run",
         "url_route": "stepcab-report"},
    ]
