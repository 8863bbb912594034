"""``stepcab run``: Airflow's in-process execution API, built for the one API version it is asked in.

``dag.test()`` runs every task through the real Task SDK runner, which talks to a real Execution
API app served in-process (``airflow.sdk.execution_time.supervisor.in_process_api_server``). That
app is a Cadwyn app: on its first request it generates the routes and schemas of *every* API
version Airflow still serves (nine in Airflow 3.3), ~5 s on a 2-core machine, although the only
client in the process is this Airflow's own Task SDK, which always asks for the newest version.

:func:`prebuild` makes the process's in-process API app up front with only that newest version
(same routes, same schemas, same handlers, same database: the newest version's routes are the
head routes; older versions only add request/response conversions). Routes that exist only in
older versions are left out, as the newest version does not have them. The first request then
costs ~0.5 s. If anything about Airflow's or Cadwyn's internals is not as expected, nothing is
changed and ``dag.test()`` builds the full app as usual (one warning line).
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def prebuild() -> bool:
    """Build (once per process) the in-process Execution API app with the newest version only.

    :return: ``True`` when the lighter app is in place, ``False`` when Airflow's default is kept.
    """
    try:
        return _prebuild()
    except Exception as exc:  # noqa: BLE001 - an optimisation: fall back to Airflow's own app
        log.warning("stepcab run: keeping Airflow's full in-process execution API (%s)", exc)
        return False


def _prebuild() -> bool:
    from airflow.api_fastapi.execution_api import versions
    from airflow.sdk.api.client import API_VERSION
    from airflow.sdk.execution_time.supervisor import in_process_api_server
    from cadwyn import HeadVersion, Version, VersionBundle
    from cadwyn.route_generation import _DELETED_ROUTE_TAG

    api = in_process_api_server()  # lru_cache'd: the object dag.test()'s tasks use
    if getattr(api, "_app", None) is not None:
        return False  # already built (by Airflow or an earlier call)
    full = versions.bundle
    newest = full.versions[0].value
    if str(newest) != str(API_VERSION) or full.head_version.changes:
        return False  # the Task SDK would ask for a version we would not serve
    versions.bundle = VersionBundle(HeadVersion(), Version(newest))
    try:
        app = api.app  # Airflow's own factory, reading the one-version bundle
    finally:
        versions.bundle = full
    router: Any = app._latest_version_router
    router.routes[:] = [r for r in router.routes if _DELETED_ROUTE_TAG not in (getattr(r, "tags", None) or ())]
    return True
