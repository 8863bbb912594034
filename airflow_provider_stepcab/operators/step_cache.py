"""The step cache in a running step task (``docs/cache.md``): look up before running, record after.

:func:`before_run` (from :func:`.running.resolve_or_skip`, once the step is resolved and will
run) computes the step's key (:mod:`..plan.cache_key`) from its resolved params, its cab and
backend, and the provenance of its File/Directory/MS inputs: the ``stepcab_cache`` XCom of its
upstream tasks maps every path earlier steps used to the key of the last one that used it. On a
hit (a record of that key, every output it left still there — on the cluster for Slurm steps)
it publishes the recorded ``stepcab_params``/``return_value`` again, says which run and task
produced the result, and raises ``AirflowSkipException``. On a miss it logs what changed
against the step's newest record. :func:`after_success` (from :func:`.running.finish_step`)
writes the record. Every step of a run that uses the cache publishes ``stepcab_cache``
(:func:`forward` for steps skipped for other reasons), so descendants chain keys.

Which steps use it: ``opts.airflow.cache`` / ``opts.airflow.tasks.<glob>.cache`` and the run
conf's ``stepcab_cache`` (``on``/``off``/``refresh``; :data:`.trigger_policy.CACHE_PARAM`).
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from airflow.sdk.exceptions import AirflowSkipException

from airflow_provider_stepcab.operators import resolve as R
from airflow_provider_stepcab.operators.trigger_policy import CACHE_PARAM
from airflow_provider_stepcab.plan import cache_key as K
from airflow_provider_stepcab.runtime import step_cache as S
from airflow_provider_stepcab.ui.capture import push_step_record

#: XCom of every step of a run using the cache: ``{"key", "step", "paths": {path: {"key", "step"}}}``
XCOM_CACHE_KEY = "stepcab_cache"
#: XCom of a deferring step's key document until it finishes (another process may finish it)
XCOM_PENDING_KEY = "stepcab_cache_pending"
_DEFERRING = ("slurm", "kube")


@dataclass
class Choice:
    """How one step uses the cache in this run: ``lookup`` (a hit skips it), ``write`` (record
    its result), ``content_hash`` (raw inputs by content), ``store`` (records' directory)."""

    lookup: bool
    write: bool
    content_hash: bool
    store: Path


@dataclass
class KeyState:
    """A step's key while it runs."""

    choice: Choice
    key: str
    document: dict
    ident: str
    provenance: dict = field(default_factory=dict)
    params_before: dict = field(default_factory=dict)


def run_mode(context: Any) -> Optional[str]:
    """``on``/``off``/``refresh`` from the run conf (or the trigger form), ``None`` when unset."""
    conf = getattr(context.get("dag_run"), "conf", None) or {}
    value = conf.get(CACHE_PARAM)
    if value is None:
        params = context.get("params") or {}
        try:
            value = params[CACHE_PARAM] if CACHE_PARAM in params else None
        except Exception:  # noqa: BLE001 - a param that does not resolve counts as unset
            value = None
    if value is True:
        return "on"
    if value is False:
        return "off"
    return value or None


def configured_store() -> Optional[str]:
    """``$STEPCAB_STEP_CACHE_DIR``, else Airflow config ``[stepcab] step_cache_dir``."""
    value = os.environ.get(S.ENV_DIR)
    if value:
        return value
    try:
        from airflow.configuration import conf as airflow_conf

        return airflow_conf.get("stepcab", S.CONFIG_KEY, fallback=None) or None
    except Exception:  # pragma: no cover - no Airflow config outside a deployment
        return os.environ.get("AIRFLOW__STEPCAB__STEP_CACHE_DIR") or None


def choice_for(op: Any, step: R.ResolvedStep, context: Any) -> Optional[Choice]:
    """How ``step`` uses the cache in this run, ``None`` when the run does not use it at all."""
    from airflow_provider_stepcab.dag_factory.settings import airflow_section, parse_settings, task_settings
    from airflow_provider_stepcab.recipe.errors import Problems

    mode = run_mode(context)
    if mode == "off":
        return None
    settings = parse_settings(airflow_section(getattr(step.config, "tree", None) or {}), op.recipe_name, Problems())
    own = task_settings(settings, step.step_path).get("cache")
    in_run = mode is not None or settings.cache or any(v.get("cache") for v in settings.tasks.values())
    if not in_run:
        return None
    on = own if own is not None else settings.cache
    if mode is not None and own is not False:
        on = True
    store = S.store_dir(workdir=step.workdir.path, source=step.workdir.source, configured=configured_store(),
                        airflow_home=os.environ.get("AIRFLOW_HOME"))
    return Choice(lookup=bool(on) and mode != "refresh", write=bool(on), content_hash=settings.cache_hash,
                  store=store)


def _ident(op: Any, step: R.ResolvedStep, context: Any) -> str:
    map_index = getattr(context["ti"], "map_index", -1)
    return S.step_ident(op.recipe_name, tuple(step.step_path), map_index)


def upstream_provenance(op: Any, context: Any) -> dict:
    """The merged ``stepcab_cache`` maps of ``op``'s upstream tasks (same loop iteration for
    upstream tasks in the same mapped group, every iteration otherwise)."""
    ti = context["ti"]
    map_index = getattr(ti, "map_index", -1)
    mine = _mapped_group(op)
    maps = []
    for task_id in sorted(op.upstream_task_ids):
        same = False
        if mine is not None and map_index is not None and map_index >= 0:
            try:
                theirs = _mapped_group(op.dag.get_task(task_id))
                same = theirs is not None and theirs.group_id == mine.group_id
            except Exception:  # noqa: BLE001 - unknown task: treat as outside the loop
                same = False
        if same:
            values = [ti.xcom_pull(task_ids=task_id, key=XCOM_CACHE_KEY, map_indexes=map_index)]
        else:
            values = ti.xcom_pull(task_ids=[task_id], key=XCOM_CACHE_KEY) or []
        maps += [v.get("paths") for v in values if isinstance(v, dict)]
    return K.merge_provenance(maps)


def _mapped_group(task: Any) -> Any:
    try:
        return task.get_closest_mapped_task_group()
    except Exception:  # noqa: BLE001
        return None


def key_state(op: Any, step: R.ResolvedStep, context: Any, choice: Choice,
              provenance: Optional[dict] = None) -> KeyState:
    """The key of ``step`` as resolved now (before it runs)."""
    provenance = upstream_provenance(op, context) if provenance is None else provenance
    params = R.plain(step.params)
    native = getattr(step.backend, "native", None)
    from airflow_provider_stepcab.plan.images import images_section

    image = K.image_of(step.cab, step.backend_name, step.backend, images_section(step.config))
    document = K.key_document(
        cab=step.cab, backend=step.backend_name, params=params, workdir=str(step.workdir.path),
        provenance=provenance, describe=lambda p: S.describe_path(p, content_hash=choice.content_hash),
        image=image, image_digest=S.image_digest(step.backend_name, image),
        virtual_env=getattr(native, "virtual_env", None) if step.backend_name == "native" else None,
        env=dict(step.env or {}))
    return KeyState(choice=choice, key=K.step_key(document), document=document, ident=_ident(op, step, context),
                    provenance=provenance, params_before=params)


def _publish_provenance(ti: Any, state: KeyState, params: dict, workdir: str, cab: Any) -> None:
    paths = [K.absolute(p, workdir) for ps in K.file_params(cab, params).values() for p in ps]
    ti.xcom_push(key=XCOM_CACHE_KEY, value={"key": state.key, "step": state.ident,
                                             "paths": K.with_step(state.provenance, paths, state.key, state.ident)})


def _missing_outputs(op: Any, step: R.ResolvedStep, paths: list) -> list:
    if getattr(step.backend, "wrapper", None) == "slurm" and hasattr(op, "cache_missing_outputs"):
        return op.cache_missing_outputs(step, paths)
    return S.missing_paths(paths)


def note(op: Any, step: R.ResolvedStep, decision: str) -> None:
    """Log the cache's ``decision`` for ``step`` and keep it for the step record (the Step view)."""
    step.cache_decision = decision
    op.log.info("cache: %s %s", step.fqname, decision)


def before_run(op: Any, step: R.ResolvedStep, context: Any, *, push_params: Any) -> None:
    """Look the step up (module docstring); ``push_params(ti, params)`` publishes ``stepcab_params``.

    :raises AirflowSkipException: a hit (its XComs published again from the record).
    """
    choice = choice_for(op, step, context)
    if choice is None:
        return
    state = key_state(op, step, context, choice)
    op._stepcab_cache = state
    ti = context["ti"]
    if choice.lookup:
        record = S.StepCache(choice.store).get(state.key)
        if record is not None:
            missing = _missing_outputs(op, step, list(record.get("outputs") or []))
            if not missing:
                _replay(op, step, context, state, record, push_params)
            note(op, step, f"runs: the record of key {state.key[:12]} (run {record.get('run_id')}) lists outputs "
                       f"that are gone: {', '.join(missing[:5])}")
        else:
            latest = S.StepCache(choice.store).latest(state.ident)
            reasons = K.explain(latest.get("document") if latest else None, state.document)
            since = f" (against its newest record: run {latest.get('run_id')}, {latest.get('finished')})" if latest else ""
            note(op, step, f"runs{since}: {'; '.join(reasons)}")
    elif choice.write:
        note(op, step, "runs: stepcab_cache=refresh (a new record is written)")
    _publish_provenance(ti, state, state.params_before, str(step.workdir.path), step.cab)
    if choice.write and op.mechanism in _DEFERRING:
        ti.xcom_push(key=XCOM_PENDING_KEY, value={"key": state.key, "document": state.document,
                                                   "ident": state.ident, "params": state.params_before,
                                                   "provenance": state.provenance})


def _replay(op: Any, step: R.ResolvedStep, context: Any, state: KeyState, record: dict, push_params: Any) -> None:
    """A hit: publish the recorded XComs (current values, and what the run produced), then skip."""
    ti = context["ti"]
    recorded = dict(record.get("params") or {})
    params = {**recorded, **state.params_before}
    params.update({k: recorded[k] for k in record.get("produced") or [] if k in recorded})
    push_params(ti, params)
    if step.cab.outputs:
        ti.xcom_push(key="return_value", value={k: v for k, v in params.items() if k in step.cab.outputs})
    _publish_provenance(ti, state, params, str(step.workdir.path), step.cab)
    where = (f"run {record.get('run_id')} of DAG {record.get('dag_id')}, task {record.get('task_id')}"
             + (f"[{record['map_index']}]" if isinstance(record.get("map_index"), int) and record["map_index"] >= 0
                else ""))
    message = (f"cached: the result of {where}, finished {record.get('finished')} on {record.get('host')} "
               f"(key {state.key[:12]})")
    note(op, step, message)
    push_step_record(op, step, context)
    raise AirflowSkipException(f"step {step.fqname}: {message}")


def forward(op: Any, step: R.ResolvedStep, context: Any) -> None:
    """A step skipped for another reason passes its upstream provenance on (when the run uses the cache)."""
    try:
        choice = choice_for(op, step, context)
    except Exception:  # noqa: BLE001 - a skipped step never fails for the cache
        return
    if choice is not None:
        context["ti"].xcom_push(key=XCOM_CACHE_KEY, value={"key": None, "step": _ident(op, step, context),
                                                            "paths": upstream_provenance(op, context)})


def _pending(op: Any, step: R.ResolvedStep, context: Any) -> Optional[KeyState]:
    state = getattr(op, "_stepcab_cache", None)
    if state is not None or op.mechanism not in _DEFERRING:
        return state
    ti = context["ti"]
    value = ti.xcom_pull(task_ids=ti.task_id, key=XCOM_PENDING_KEY, map_indexes=getattr(ti, "map_index", -1))
    if not isinstance(value, dict):
        return None
    choice = choice_for(op, step, context)
    if choice is None:
        return None
    return KeyState(choice=choice, key=value["key"], document=value["document"], ident=value["ident"],
                    provenance=value.get("provenance") or {}, params_before=value.get("params") or {})


def _present_outputs(op: Any, step: R.ResolvedStep) -> list:
    """The File/Directory/MS outputs a hit needs (absolute local paths): those that exist here,
    or, for a Slurm step, on the cluster."""
    if getattr(step.backend, "wrapper", None) != "slurm" or not hasattr(op, "cache_missing_outputs"):
        return R.file_outputs(step)
    workdir = str(step.workdir.path)
    declared = {n: v for n, v in K.file_params(step.cab, R.plain(step.params)).items() if n in step.cab.outputs}
    paths = [K.absolute(p, workdir) for ps in declared.values() for p in ps]
    gone = set(op.cache_missing_outputs(step, paths))
    return [p for p in paths if p not in gone]


def after_success(op: Any, step: R.ResolvedStep, context: Any) -> None:
    """Record the finished step (and publish its final provenance) when the run uses the cache."""
    state = _pending(op, step, context)
    if state is None:
        return
    ti = context["ti"]
    params = R.plain(step.params)
    if params != state.params_before:
        _publish_provenance(ti, state, params, str(step.workdir.path), step.cab)
    if not state.choice.write:
        return
    produced = sorted(k for k, v in params.items() if state.params_before.get(k, object()) != v)
    outputs = _present_outputs(op, step)
    record = {"key": state.key, "ident": state.ident, "document": state.document, "recipe": op.recipe_name,
              "recipe_file": op.recipe_file, "step": step.fqname, "step_path": list(step.step_path),
              "dag_id": ti.dag_id, "run_id": ti.run_id, "task_id": ti.task_id,
              "map_index": getattr(ti, "map_index", -1), "try_number": getattr(ti, "try_number", None),
              "finished": S.utc_now(), "host": platform.node(), "params": params, "produced": produced,
              "outputs": outputs, "remote": getattr(step.backend, "wrapper", None) == "slurm"}
    try:
        path = S.StepCache(state.choice.store).put(record)
    except OSError as exc:
        op.log.warning("cache: could not record step %s in %s: %s", step.fqname, state.choice.store, exc)
        return
    op.log.info("cache: recorded %s as key %s (%s)", step.fqname, state.key[:12], path)


__all__ = ["XCOM_CACHE_KEY", "Choice", "KeyState", "run_mode", "choice_for", "before_run", "after_success",
           "forward", "upstream_provenance", "key_state"]
