"""What the views read, on the API server: task state and XCom from the metadata database, the
recipe behind a DAG from its serialised DAG and the cached DAG spec (:mod:`..dag_factory.spec`).

Nothing here runs a step or parses a recipe per request: a step's record is the XCom its task
pushed (:mod:`.records`), a recipe's structure the cached spec and :mod:`.recipe_view`.
"""

from __future__ import annotations

import json
import re
from typing import Any, Optional

from sqlalchemy import select

from airflow_provider_stepcab.ui.records import RESOURCES_KEY, SLURM_KEY, STEP_KEY

#: XCom keys a step's view reads (stepcab_params: every resolved parameter)
STEP_KEYS = (STEP_KEY, SLURM_KEY, RESOURCES_KEY, "stepcab_params", "return_value")
#: where the DAG factory's doc_md names the recipe file (dag_factory/builder.py ``doc_md``)
_RECIPE_FILE = re.compile(r"^Recipe file: `(?P<file>[^`]+)`$", re.M)


class NotFound(LookupError):
    """The DAG, run, task instance or recipe asked for does not exist (HTTP 404)."""


def _xcom_value(row: Any) -> Any:
    from airflow.models.xcom import XComModel

    value = row.value
    if isinstance(value, (str, bytes)):
        try:
            value = json.loads(value)
        except ValueError:
            return value
    try:
        return XComModel.deserialize_value(row) if not isinstance(value, (dict, list)) else value
    except Exception:  # noqa: BLE001 - show what is stored
        return value


def task_instance(session: Any, dag_id: str, run_id: str, task_id: str, map_index: int) -> Any:
    """The task instance, or :class:`NotFound`."""
    from airflow.models.taskinstance import TaskInstance as TI

    ti = session.scalar(select(TI).where(TI.dag_id == dag_id, TI.run_id == run_id, TI.task_id == task_id,
                                         TI.map_index == map_index))
    if ti is None:
        raise NotFound(f"no task instance {dag_id}/{run_id}/{task_id}[{map_index}]")
    return ti


def step_xcoms(session: Any, dag_id: str, run_id: str, task_id: str, map_index: int) -> dict:
    """``{key: value}`` of the XComs in :data:`STEP_KEYS` the task instance pushed."""
    from airflow.models.xcom import XComModel

    rows = session.scalars(select(XComModel).where(
        XComModel.dag_id == dag_id, XComModel.run_id == run_id, XComModel.task_id == task_id,
        XComModel.map_index == map_index, XComModel.key.in_(STEP_KEYS)))
    return {row.key: _xcom_value(row) for row in rows}


def loop_instances(session: Any, dag_id: str, run_id: str, task_id: str) -> list:
    """``[{"map_index", "name", "state"}]`` of every mapped instance of the task (empty: not mapped)."""
    from airflow.models.taskinstance import TaskInstance as TI

    rows = session.scalars(select(TI).where(TI.dag_id == dag_id, TI.run_id == run_id, TI.task_id == task_id,
                                            TI.map_index >= 0).order_by(TI.map_index))
    return [{"map_index": ti.map_index, "name": ti.rendered_map_index, "state": _state(ti)} for ti in rows]


def _state(ti: Any) -> Optional[str]:
    state = ti.state
    return getattr(state, "value", state)


def asset_events(session: Any, dag_id: str, run_id: str, task_id: str, map_index: int) -> list:
    """``[{"uri", "name", "timestamp"}]`` of the Asset events the task instance emitted."""
    from airflow.models.asset import AssetEvent, AssetModel

    rows = session.execute(select(AssetModel.uri, AssetModel.name, AssetEvent.timestamp)
                           .join(AssetModel, AssetModel.id == AssetEvent.asset_id)
                           .where(AssetEvent.source_dag_id == dag_id, AssetEvent.source_run_id == run_id,
                                  AssetEvent.source_task_id == task_id,
                                  AssetEvent.source_map_index == map_index)
                           .order_by(AssetEvent.timestamp))
    return [{"uri": uri, "name": name, "timestamp": str(ts)} for uri, name, ts in rows]


def step_data(session: Any, dag_id: str, run_id: str, task_id: str, map_index: int) -> dict:
    """Everything the Step view shows of one task instance (``record`` is ``None`` until the
    task has pushed it)."""
    ti = task_instance(session, dag_id, run_id, task_id, map_index)
    xcoms = step_xcoms(session, dag_id, run_id, task_id, map_index)
    return {
        "dag_id": dag_id, "run_id": run_id, "task_id": task_id, "map_index": map_index,
        "state": _state(ti), "try_number": ti.try_number, "name": ti.rendered_map_index,
        "hostname": ti.hostname or None,
        "start_date": str(ti.start_date) if ti.start_date else None,
        "end_date": str(ti.end_date) if ti.end_date else None,
        "record": xcoms.get(STEP_KEY), "slurm": xcoms.get(SLURM_KEY), "resources": xcoms.get(RESOURCES_KEY),
        "params": xcoms.get("stepcab_params"), "result": xcoms.get("return_value"),
        "assets": asset_events(session, dag_id, run_id, task_id, map_index),
        "loop_instances": loop_instances(session, dag_id, run_id, task_id) if map_index >= 0 else [],
    }


def recipe_file_of(session: Any, dag_id: str) -> tuple[str, Any]:
    """``(recipe file, serialised DAG)`` of a stepcab DAG, from its serialised DAG's ``doc_md``."""
    from airflow.models.serialized_dag import SerializedDagModel

    sdm = SerializedDagModel.get(dag_id, session=session)
    if sdm is None:
        raise NotFound(f"no DAG {dag_id!r}")
    dag = sdm.dag
    found = _RECIPE_FILE.search(getattr(dag, "doc_md", None) or "")
    if found is None:
        raise NotFound(f"DAG {dag_id!r} was not made from a recipe by stepcab")
    return found.group("file"), dag


def _dag_entry(file: str, dag_id: str) -> tuple[dict, dict]:
    from airflow_provider_stepcab.dag_factory import _compile
    from airflow_provider_stepcab.dag_factory.spec import file_spec

    spec = file_spec(file, compiler=_compile)
    for entry in spec.get("dags") or []:
        if entry.get("dag_id") == dag_id:
            return spec, entry
    raise NotFound(f"recipe file {file} defines no DAG {dag_id!r} (any more)")


def _structure(node: dict, prefix: tuple = ()) -> list:
    """Rows ``{"path", "kind", "task_id", "class", "backend", "loop"}`` of a spec body, in order."""
    rows: list = []
    kind = node.get("k")
    if kind == "loop":
        loop = {"values": node.get("values"),
                "values_task": (node.get("values_task") or {}).get("task_id"), "group": node.get("id")}
        for row in _structure_level(node["level"], prefix):
            row["loop"] = row["loop"] or loop
            rows.append(row)
        return rows
    return _structure_level(node, prefix)


def _structure_level(level: dict, prefix: tuple) -> list:
    rows: list = []
    for label, node in level.get("nodes") or []:
        path = prefix + (label,)
        kind = node.get("k")
        if kind == "task":
            kw = node.get("kw") or {}
            rows.append({"path": ".".join(path), "kind": "task", "task_id": kw.get("task_id"),
                         "class": str(node.get("cls", "")).rpartition(":")[2],
                         "backend": kw.get("backend"), "loop": None})
        elif kind == "loop":
            inner = _structure(node, path)
            rows.append({"path": ".".join(path), "kind": "loop", "task_id": node.get("id"), "class": None,
                         "backend": None, "loop": inner[0]["loop"] if inner else None})
            rows.extend(inner)
        else:
            rows.append({"path": ".".join(path), "kind": "group", "task_id": node.get("id"), "class": None,
                         "backend": None, "loop": None})
            rows.extend(_structure_level(node.get("level") or {}, path))
    return rows


def recipe_data(session: Any, dag_id: str) -> dict:
    """Everything the Recipe view shows of a stepcab DAG."""
    from airflow_provider_stepcab.ui.recipe_view import recipe_summary

    file, _ = recipe_file_of(session, dag_id)
    spec, entry = _dag_entry(file, dag_id)
    name = entry.get("recipe") or dag_id
    summary = recipe_summary(file, name)
    body = (entry.get("spec") or {}).get("body") or {}
    structure = {row["path"]: row for row in _structure(body)}
    steps = [{**step, **{k: v for k, v in (structure.get(step["path"]) or {}).items() if k != "path"},
              "loop": step["loop"] or (structure.get(step["path"]) or {}).get("loop")}
             for step in summary["steps"]]
    warnings = [list(p[:4]) for p in (spec.get("warnings") or []) + (entry.get("warnings") or [])]
    errors = [list(p[:4]) for p in (spec.get("errors") or []) + (entry.get("errors") or [])]
    return {"dag_id": dag_id, "recipe": name, "file": file, "info": summary["info"],
            "line": summary["line"], "files": summary["files"], "lines": summary["lines"],
            "sub_recipes": summary.get("sub_recipes") or {}, "steps": steps,
            "warnings": warnings, "errors": errors}
