"""What a step task does when it runs: the run-time half of
:class:`~airflow_provider_stepcab.operators.base.StepcabBaseOperator`.

A step task carries only its identity (``recipe_file``, ``recipe_name``, ``step_path``); a DAG
parse needs nothing more, so the operator classes stay small and this module is imported only
when a task runs. A task (:meth:`~.base.StepcabBaseOperator.execute`) calls :func:`resolve_or_skip`,
:func:`run_resolved` and :func:`finish_step`:

1. re-loads the recipe (:func:`~airflow_provider_stepcab.recipe.api.load_recipe`, cached);
2. builds the namespaces level by level down ``step_path``: ``recipe`` (defaults,
   DAG params / conf, ``assign``, the loop variable and ``<var>@index``),
   ``previous``/``steps.<label>`` (the XCom ``stepcab_params`` of earlier step tasks)
   and recipe outputs known through aliases;
3. applies trigger-time overrides (:mod:`.overrides`), evaluates ``skip``,
   tags, step selection and ``skip_if_outputs`` (→ ``AirflowSkipException``: the
   task ends *skipped*; the default ``none_failed`` trigger rule lets later steps run);
4. resolves formulas and ``{}`` substitutions, validates inputs (dtype, choices,
   ``must_exist``, ``mkdir``) inside the run's working directory (:mod:`..runtime.workdir`);
5. hands a ``ResolvedStep`` to the operator's ``run_step`` (its own mechanism) or to the runner of
   a backend chosen at trigger time (:data:`~.registry.LOCAL_RUNNERS`, :func:`backend_runner`);
6. afterwards (:func:`finish_step`) merges parsed outputs, checks required outputs and
   ``must_exist``, pushes XCom (``stepcab_params``: all params; ``return_value``: the outputs) and
   emits File/Directory/MS outputs as ``file://`` Assets through the task's ``AssetAlias``.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from typing import Any, Callable, Iterator, Optional

from airflow.sdk import Asset, AssetAlias
from airflow.sdk.exceptions import AirflowException, AirflowSkipException

from airflow_provider_stepcab.operators import resolve as R
from airflow_provider_stepcab.operators import step_cache
from airflow_provider_stepcab.operators.resolve import plain_params  # noqa: F401 - used by build/loops
from airflow_provider_stepcab.operators.registry import BACKEND_RUNNERS, LOCAL_RUNNERS, XCOM_PARAMS_KEY
from airflow_provider_stepcab.recipe.errors import FormulaError, RecipeError
from airflow_provider_stepcab.ui.capture import note_executed, push_step_record


def _installed(executable: Optional[str]) -> bool:
    if executable is None:
        return True
    from airflow_provider_stepcab.runtime.containers import RuntimeMissing, find_engine, find_singularity

    try:
        find_singularity() if executable == "singularity" else find_engine(executable)
    except RuntimeMissing:
        return False
    return True


def runnable_backends() -> set:
    """Backends this worker can run a step with: the registered runners and the local ones whose
    executable is on ``PATH``."""
    return {*BACKEND_RUNNERS, *(name for name, (_, exe) in LOCAL_RUNNERS.items() if _installed(exe))}


def backend_runner(name: str) -> Optional[Callable[..., Any]]:
    """The runner of backend ``name`` on this worker, or ``None``."""
    if name in BACKEND_RUNNERS:
        return BACKEND_RUNNERS[name]
    entry = LOCAL_RUNNERS.get(name)
    if entry is None or not _installed(entry[1]):
        return None
    module, _, func = entry[0].partition(":")
    return getattr(importlib.import_module(module), func)


def task_logger(op: Any) -> Callable[[int, str], None]:
    """``log(level, text)`` writing into the task log of ``op``."""
    task_log = op.log

    def show(level: int, line: str) -> None:
        task_log.log(level, "%s", line)

    return show


@contextlib.contextmanager
def attached(op: Any, runner: Any, *, passthrough: tuple = ()) -> Iterator[Any]:
    """While the block runs, ``runner`` is the one ``op.on_kill`` stops; any exception but
    ``passthrough`` ones (Airflow's timeout, SIGTERM ...) kills it before going on, so that no
    process or container is left behind."""
    op._runner = runner
    try:
        yield runner
    except passthrough:
        raise
    except BaseException:
        runner.kill()
        raise
    finally:
        op._runner = None


def run_in_container(op: Any, step: Any, plan: Any, runner: Any, command: list, *,
                     clean_tmp: bool, before: tuple = ()) -> Any:
    """Run a container ``plan`` of ``step`` with ``runner`` (``attached`` to ``op``): its mounts
    prepared, ``before`` commands run quietly first, output through the cab's wranglers into the
    task log; container errors become task failures."""
    from airflow_provider_stepcab.recipe.wranglers import Wranglers
    from airflow_provider_stepcab.runtime import containers as C

    show = task_logger(op)
    timeout = op.execution_timeout.total_seconds() if op.execution_timeout else None
    try:
        with attached(op, runner, passthrough=(C.ContainerError,)):
            for argv in before:
                C.run_quiet(argv)
            with C.prepared_mounts(plan, clean_tmp=clean_tmp, log=show) as argv:
                note_executed(step, argv=command or [], command=argv)
                op.log.info("running: %s", " ".join(argv))
                return C.run_container(argv, runner=runner, log=show, cwd=str(step.workdir.path),
                                       env=dict(os.environ), timeout=timeout,
                                       wranglers=Wranglers.for_cab(step.cab),
                                       command_name=os.path.basename(command[0]) if command else None)
    except C.ContainerError as exc:
        raise AirflowException(f"step {step.fqname}: {exc}") from None


def run_resolved(op: Any, step: R.ResolvedStep, context: Any) -> Any:
    """Run the resolved ``step`` (its outputs' folders made first) with ``op``'s own mechanism or
    with the runner of the step's backend; return the ``RunResult``."""
    op.log.info("step %s (%s) on backend %s in %s", step.fqname, step.cab.name,
                step.backend_name, step.workdir.path)
    for name, value in step.params.items():
        op.log.info("  %s = %r", name, value)
    with R.chdir(step.workdir.path):
        R.prepare_outputs(step)
    return dispatch(op, step, context)


def resolve_or_skip(op: Any, context: Any, *, finishing: bool = False) -> R.ResolvedStep:
    """:func:`resolve_step` with recipe errors as task failures; a skipped step pushes its params
    and raises ``AirflowSkipException`` (unless ``finishing``: resuming after a deferral)."""
    try:
        step = resolve_step(op, context)
    except AirflowSkipException:
        raise
    except (RecipeError, FormulaError, ValueError) as exc:
        raise AirflowException(f"step {'.'.join(op.step_path)}: {exc}") from None
    if step.skip_reason and not finishing:
        push_params(context["ti"], step.params)
        push_step_record(op, step, context)
        op.log.info("skipping step %s: %s", step.fqname, step.skip_reason)
        step_cache.forward(op, step, context)
        raise AirflowSkipException(f"step {step.fqname}: {step.skip_reason}")
    if not finishing:
        step_cache.before_run(op, step, context, push_params=push_params)  # a cache hit raises AirflowSkipException
    return step


def finish_step(op: Any, step: R.ResolvedStep, result: Any, context: Any) -> Optional[dict]:
    """Every mechanism's epilogue, given its ``RunResult``: merge parsed outputs, fail with the
    reason and the last output lines, check/finalise outputs, push the ``stepcab_params`` XCom and
    emit file outputs as Assets. Returns the outputs (``None`` for a cab without outputs)."""
    push_step_record(op, step, context)
    report_usage(op, result, context)
    if result.outputs:
        step.params.update(result.outputs)
    if not result.success:
        tail = "\n".join(result.tail or [])
        why = "; ".join(result.errors or []) or f"exit code {result.exit_code}"
        raise AirflowException(f"step {step.fqname} failed: {why}\n--- last output lines ---\n{tail}")
    with R.chdir(step.workdir.path):
        try:
            R.finalize_outputs(step)
        except (RecipeError, FormulaError, ValueError) as exc:
            raise AirflowException(f"step {step.fqname}: {exc}") from None
    push_params(context["ti"], step.params)
    step_cache.after_success(op, step, context)
    emit_assets(op, step, context)
    if not step.cab.outputs:
        return None  # nothing to return: no ``return_value`` XCom (one request less per task)
    return {k: v for k, v in R.plain(step.params).items() if k in step.cab.outputs}


def report_usage(op: Any, result: Any, context: Any) -> None:
    """Accounting: a run's own resource record (``RunResult.usage``) as the last lines of the task
    log and the ``stepcab_resources`` XCom (:func:`.slurm_resources.report_run_usage`)."""
    from airflow_provider_stepcab.operators.slurm_resources import report_run_usage

    report_run_usage(op, result, context)


def dispatch(op: Any, step: R.ResolvedStep, context: Any) -> Any:
    """Run ``step`` with ``op``'s own mechanism, or with the runner of the step's backend."""
    if step.backend_name == op.mechanism:
        return op.run_step(step, context)
    runner = backend_runner(step.backend_name)
    if runner is None:
        known = ", ".join(op.available_backends())
        raise AirflowException(f"step {step.fqname}: backend '{step.backend_name}' is not available "
                               f"to this task (available: {known})")
    return runner(op, step, context)


def resolve_step(op: Any, context: Any) -> R.ResolvedStep:
    """Resolve ``op``'s step for the running DAG run (see the module docstring)."""
    from airflow_provider_stepcab.operators.overrides import parse_overrides
    from airflow_provider_stepcab.recipe.api import load_recipe
    from airflow_provider_stepcab.runtime.workdir import WORKDIR_PARAM, choose_workdir, recipe_workdir_setting

    recipe, loaded = load_recipe(op.recipe_file, op.recipe_name)
    dag_run = context.get("dag_run")
    conf = dict(getattr(dag_run, "conf", None) or {})
    params = R.plain_params(context.get("params"))
    overrides = parse_overrides(conf, recipe, params, config_tree=loaded.tree)
    ti = context["ti"]
    workdir = choose_workdir(
        dag_id=ti.dag_id, run_id=ti.run_id, recipe=op.recipe_name,
        conf_value=conf.get(WORKDIR_PARAM) or params.get(WORKDIR_PARAM),
        recipe_value=recipe_workdir_setting((loaded.tree or {}).get("opts")),
        config_value=_airflow_config_workdir())
    map_index = getattr(ti, "map_index", -1)
    xcom = XComReader(op, ti, map_index)
    with R.chdir(workdir.path):
        return R.resolve(recipe=recipe, loaded=loaded, step_path=op.step_path,
                         recipe_params=overrides.recipe_params, overrides=overrides,
                         loop_value=op.loop_value, loop_index=map_index if map_index >= 0 else None,
                         loop_indices=loop_indices_of(op),
                         fetch=xcom.fetch, backend_pref=op.backend,
                         available=op.available_backends(), workdir=workdir,
                         recipe_name=op.recipe_name, run_values=R.dag_run_values(dag_run))


def loop_indices_of(op: Any) -> dict:
    """``{path of a looping recipe: iteration}`` of the unrolled loops around ``op``'s step."""
    return {tuple(k.split(".")) if k else (): v for k, v in (getattr(op, "loop_indices", None) or {}).items()}


def push_params(ti: Any, params: dict) -> None:
    """Push every resolved parameter as the ``stepcab_params`` XCom."""
    ti.xcom_push(key=XCOM_PARAMS_KEY, value=R.plain(params))


def emit_assets(op: Any, step: R.ResolvedStep, context: Any) -> None:
    """Add a ``file://`` Asset event per File/Directory/MS output to ``op``'s AssetAlias outlets."""
    paths = R.file_outputs(step)
    if not paths:
        return
    events = context.get("outlet_events")
    for alias in op.outlets:
        if not isinstance(alias, AssetAlias) or events is None:
            continue
        for path in paths:
            events[alias].add(Asset(uri=f"file://{path}", name=path),
                              extra={"step": step.fqname, "cab": step.cab.name})
            op.log.info("output asset file://%s", path)


class XComReader:
    """Fetch the ``stepcab_params`` XCom of another step task (None when absent)."""

    def __init__(self, op: Any, ti: Any, map_index: int):
        self.op, self.ti, self.map_index = op, ti, map_index

    def fetch(self, step_path: tuple, *, same_loop: bool, in_loop: bool, map_index: Optional[int] = None) -> Any:
        """``map_index``: that iteration of a mapped step (else this task's own, when ``same_loop``)."""
        from airflow_provider_stepcab.dag_factory.naming import task_id_for

        loops = getattr(self.op, "dag_loops", None)
        if loops:  # unrolled loops in the DAG: iterations are TaskGroups, not map indices
            task_id, mapped = self._unrolled_id(tuple(step_path), loops, map_index)
            if not mapped:
                map_index, in_loop, same_loop = None, False, False
        else:
            task_id = task_id_for(self.op.recipe_name, step_path)
        if map_index is not None:
            return self.ti.xcom_pull(task_ids=task_id, key=XCOM_PARAMS_KEY, map_indexes=map_index)
        if in_loop and same_loop and self.map_index >= 0:
            return self.ti.xcom_pull(task_ids=task_id, key=XCOM_PARAMS_KEY, map_indexes=self.map_index)
        if in_loop:  # a mapped step seen from outside its loop: every iteration, in order
            values = self.ti.xcom_pull(task_ids=[task_id], key=XCOM_PARAMS_KEY)
            return [v for v in (values or []) if v is not None] or None
        return self.ti.xcom_pull(task_ids=task_id, key=XCOM_PARAMS_KEY, map_indexes=None)

    def _unrolled_id(self, step_path: tuple, loops: dict, index: Optional[int]) -> tuple:
        """``(task id, in a mapped loop?)`` of ``step_path`` in a DAG with unrolled loops: its unrolled
        loops take this task's iteration, or for the innermost loop around it, ``index``."""
        from airflow_provider_stepcab.dag_factory.naming import task_id_for

        def around(key: str) -> bool:
            parts = key.split(".") if key else []
            return len(parts) < len(step_path) and list(step_path[:len(parts)]) == parts

        enclosing = sorted((k for k in loops if around(k)), key=lambda k: len(k.split(".")) if k else 0)
        innermost = enclosing[-1] if enclosing else None
        own = getattr(self.op, "loop_indices", {}) or {}
        unrolled = {k: own[k] for k in enclosing if not loops[k] and k in own}
        if innermost is not None and not loops[innermost] and index is not None:
            unrolled[innermost] = index
        return task_id_for(self.op.recipe_name, step_path, unrolled), bool(innermost is not None and loops[innermost])


def _airflow_config_workdir() -> Optional[str]:
    try:
        from airflow.configuration import conf as airflow_conf

        return airflow_conf.get("stepcab", "workdir", fallback=None) or None
    except Exception:  # pragma: no cover - config unavailable outside a deployment
        return os.environ.get("AIRFLOW__STEPCAB__WORKDIR") or None
