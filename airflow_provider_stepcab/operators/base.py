"""Run-time resolution of one recipe step, shared by every execution mechanism.

A step task carries only its identity (``recipe_file``, ``recipe_name``,
``step_path``). When it runs, :class:`StepcabBaseOperator`:

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
5. hands a :class:`ResolvedStep` to :meth:`StepcabBaseOperator.run_step` of the subclass (or
   to the runner of a backend chosen at trigger time, see :data:`LOCAL_RUNNERS`);
6. afterwards merges parsed outputs, checks required outputs and ``must_exist``,
   pushes XCom (``stepcab_params``: all params; ``return_value``: the outputs) and emits
   File/Directory/MS outputs as ``file://`` Assets through the task's :class:`AssetAlias`.
"""

from __future__ import annotations

import importlib
import logging
import os
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

from airflow.sdk import AssetAlias, BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowSkipException

if TYPE_CHECKING:  # the run-time modules are imported when a step runs, not when a DAG is parsed
    from airflow_provider_stepcab.operators import resolve as R

#: XCom key holding every resolved parameter (inputs and outputs) of a step.
XCOM_PARAMS_KEY = "stepcab_params"

#: The local backends any step task can run a step with when the trigger-time conf picks one other
#: than its class's mechanism: name -> (``"module:function"`` of the runner
#: ``(operator, step: ResolvedStep, context) -> RunResult``, the executable it needs or ``None``).
#: Imported and probed (on the worker's ``PATH``) only when a step is resolved.
LOCAL_RUNNERS: dict[str, tuple[str, Optional[str]]] = {
    "native": ("airflow_provider_stepcab.operators.native:run_native", None),
    "singularity": ("airflow_provider_stepcab.operators.singularity:run_singularity", "singularity"),
    "podman": ("airflow_provider_stepcab.operators.podman:run_podman", "podman"),
    "docker": ("airflow_provider_stepcab.operators.podman:run_docker", "docker"),
}

#: Extra runners (name -> callable) added with :func:`register_backend_runner`; they win over
#: :data:`LOCAL_RUNNERS`.
BACKEND_RUNNERS: dict[str, Callable[..., Any]] = {}

log = logging.getLogger(__name__)


def register_backend_runner(name: str, runner: Callable[..., Any]) -> None:
    """Make ``runner`` run steps whose effective backend is ``name``."""
    BACKEND_RUNNERS[name] = runner


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


def asset_alias_name(dag_id: str, task_id: str) -> str:
    """Name of the :class:`AssetAlias` a step task reports its file outputs through."""
    return f"stepcab:{dag_id}:{task_id}"


class StepcabBaseOperator(BaseOperator):
    """Base of the step operators (one subclass per execution mechanism).

    :param recipe_file: absolute path of the recipe's main file.
    :param recipe_name: the recipe inside that file.
    :param step_path: labels from the top recipe down to this cab step, e.g. ``("cal", "flag")``.
    :param backend: parse-time backend preference (name or ``select`` list); a trigger-time
        ``conf.steps.<step>.backend`` wins over it.
    :param loop_value: the ``for_loop`` value of this (mapped) task, for steps inside a looping recipe.
    :param asset_outputs: ``False`` when the step's cab has no File/Directory/MS output: the task
        then declares no :class:`AssetAlias` outlet (the DAG factory decides; an outlet costs
        Airflow work at the end of every task even when it carries no event).
    """

    template_fields: Sequence[str] = ()
    ui_color = "#e8f4ea"
    #: the backend name this class runs itself (subclasses set it)
    mechanism: str = ""

    def __init__(self, *, recipe_file: str, recipe_name: str, step_path: Sequence[str],
                 backend: Any = None, loop_value: Any = None, asset_outputs: bool = True, **kwargs: Any) -> None:
        kwargs.setdefault("trigger_rule", "none_failed")
        super().__init__(**kwargs)
        self.recipe_file = str(recipe_file)
        self.recipe_name = recipe_name
        self.step_path = tuple(step_path)
        self.backend = backend
        self.loop_value = loop_value
        #: the runtime runner of the step while it runs (set by the backend runner; see on_kill)
        self._runner: Any = None
        if asset_outputs and not self.outlets:
            dag_id = self.dag.dag_id if getattr(self, "has_dag", lambda: False)() else recipe_name
            self.outlets = [AssetAlias(name=asset_alias_name(dag_id, self.task_id))]

    # ----------------------------------------------------------------- hooks for subclasses

    def run_step(self, step: "R.ResolvedStep", context: Any) -> Any:
        """Run ``step`` with this class's mechanism; return a runtime ``RunResult``.

        The base has no mechanism: use a subclass (one per execution mechanism).
        """
        raise TypeError(f"{type(self).__name__} has no execution mechanism: use a subclass of "
                        "StepcabBaseOperator that defines run_step")

    def on_kill(self) -> None:
        """Kill the running step: its whole process group, and its container if it has one."""
        runner = self._runner
        if runner is not None:
            self.log.info("on_kill: stopping the step (%s)", type(runner).__name__)
            runner.kill()

    # ----------------------------------------------------------------- execute

    def execute(self, context: Any) -> Any:
        step = self.resolve_or_skip(context)
        self.log.info("step %s (%s) on backend %s in %s", step.fqname, step.cab.name,
                      step.backend_name, step.workdir.path)
        for name, value in step.params.items():
            self.log.info("  %s = %r", name, value)

        from airflow_provider_stepcab.operators import resolve as R

        with R.chdir(step.workdir.path):
            R.prepare_outputs(step)
        return self.finish_step(step, self._dispatch(step, context), context)

    def resolve_or_skip(self, context: Any, *, finishing: bool = False) -> "R.ResolvedStep":
        """:meth:`resolve_step` with recipe errors as task failures; a skipped step pushes its
        params and raises ``AirflowSkipException`` (unless ``finishing``: resuming after a deferral)."""
        from airflow_provider_stepcab.recipe.errors import FormulaError, RecipeError

        try:
            step = self.resolve_step(context)
        except AirflowSkipException:
            raise
        except (RecipeError, FormulaError, ValueError) as exc:
            raise AirflowException(f"step {'.'.join(self.step_path)}: {exc}") from None
        if step.skip_reason and not finishing:
            self._push_params(context["ti"], step.params)
            self.log.info("skipping step %s: %s", step.fqname, step.skip_reason)
            raise AirflowSkipException(f"step {step.fqname}: {step.skip_reason}")
        return step

    def finish_step(self, step: "R.ResolvedStep", result: Any, context: Any) -> dict:
        """Every mechanism's epilogue, given its ``RunResult``: merge parsed outputs, fail with
        the reason and the last output lines, check/finalise outputs, push the ``stepcab_params``
        XCom and emit file outputs as Assets.

        :returns: the step's outputs (the task's ``return_value``); ``None`` for a cab without outputs.
        :raises AirflowException: the step failed or its outputs are wrong.
        """
        from airflow_provider_stepcab.operators import resolve as R
        from airflow_provider_stepcab.recipe.errors import FormulaError, RecipeError

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
        self._push_params(context["ti"], step.params)
        self._emit_assets(step, context)
        if not step.cab.outputs:
            return None  # nothing to return: no ``return_value`` XCom (one request less per task)
        return {k: v for k, v in R.plain(step.params).items() if k in step.cab.outputs}

    def _dispatch(self, step: "R.ResolvedStep", context: Any) -> Any:
        if step.backend_name == self.mechanism:
            return self.run_step(step, context)
        runner = backend_runner(step.backend_name)
        if runner is None:
            known = ", ".join(self.available_backends())
            raise AirflowException(f"step {step.fqname}: backend '{step.backend_name}' is not available "
                                   f"to this task (available: {known})")
        return runner(self, step, context)

    # ----------------------------------------------------------------- resolution

    def available_backends(self) -> list:
        """Backends a step of this task may select: this class's mechanism and the registered runners."""
        return sorted({self.mechanism, *runnable_backends()})

    def resolve_step(self, context: Any) -> "R.ResolvedStep":
        """Resolve this task's step for the running DAG run (see the module docstring)."""
        from airflow_provider_stepcab.operators import resolve as R
        from airflow_provider_stepcab.operators.overrides import parse_overrides
        from airflow_provider_stepcab.recipe.api import load_recipe
        from airflow_provider_stepcab.runtime.workdir import (WORKDIR_PARAM, choose_workdir,
                                                              recipe_workdir_setting)

        recipe, loaded = load_recipe(self.recipe_file, self.recipe_name)
        dag_run = context.get("dag_run")
        conf = dict(getattr(dag_run, "conf", None) or {})
        params = _plain_params(context.get("params"))
        overrides = parse_overrides(conf, recipe, params)
        ti = context["ti"]
        workdir = choose_workdir(
            dag_id=ti.dag_id, run_id=ti.run_id, recipe=self.recipe_name,
            conf_value=conf.get(WORKDIR_PARAM) or params.get(WORKDIR_PARAM),
            recipe_value=recipe_workdir_setting((loaded.tree or {}).get("opts")),
            config_value=_airflow_config_workdir())
        map_index = getattr(ti, "map_index", -1)
        xcom = _XComReader(self, ti, map_index)
        with R.chdir(workdir.path):
            return R.resolve(recipe=recipe, loaded=loaded, step_path=self.step_path,
                             recipe_params=overrides.recipe_params, overrides=overrides,
                             loop_value=self.loop_value, loop_index=map_index if map_index >= 0 else None,
                             fetch=xcom.fetch, backend_pref=self.backend,
                             available=self.available_backends(), workdir=workdir,
                             recipe_name=self.recipe_name, run_values=R.dag_run_values(dag_run))

    # ----------------------------------------------------------------- XCom and assets

    def _push_params(self, ti: Any, params: dict) -> None:
        from airflow_provider_stepcab.operators import resolve as R

        ti.xcom_push(key=XCOM_PARAMS_KEY, value=R.plain(params))

    def _emit_assets(self, step: "R.ResolvedStep", context: Any) -> None:
        from airflow.sdk import Asset

        from airflow_provider_stepcab.operators import resolve as R

        paths = R.file_outputs(step)
        if not paths:
            return
        events = context.get("outlet_events")
        for alias in self.outlets:
            if not isinstance(alias, AssetAlias) or events is None:
                continue
            for path in paths:
                events[alias].add(Asset(uri=f"file://{path}", name=path),
                                  extra={"step": step.fqname, "cab": step.cab.name})
                self.log.info("output asset file://%s", path)


class _XComReader:
    """Fetch the ``stepcab_params`` XCom of another step task (None when absent)."""

    def __init__(self, op: StepcabBaseOperator, ti: Any, map_index: int):
        self.op, self.ti, self.map_index = op, ti, map_index

    def fetch(self, step_path: tuple, *, same_loop: bool, in_loop: bool) -> Any:
        from airflow_provider_stepcab.dag_factory.naming import task_id_for

        task_id = task_id_for(self.op.recipe_name, step_path)
        if in_loop and same_loop and self.map_index >= 0:
            return self.ti.xcom_pull(task_ids=task_id, key=XCOM_PARAMS_KEY, map_indexes=self.map_index)
        if in_loop:  # a mapped step seen from outside its loop: every iteration, in order
            values = self.ti.xcom_pull(task_ids=[task_id], key=XCOM_PARAMS_KEY)
            return [v for v in (values or []) if v is not None] or None
        return self.ti.xcom_pull(task_ids=task_id, key=XCOM_PARAMS_KEY, map_indexes=None)


def _plain_params(params: Any) -> dict:
    if not params:
        return {}
    try:
        return {k: params[k] for k in params}
    except Exception:  # pragma: no cover - defensive: some params fail to resolve
        return dict(params)


def _airflow_config_workdir() -> Optional[str]:
    try:
        from airflow.configuration import conf as airflow_conf

        return airflow_conf.get("stepcab", "workdir", fallback=None) or None
    except Exception:  # pragma: no cover - config unavailable outside a deployment
        return os.environ.get("AIRFLOW__STEPCAB__WORKDIR") or None
