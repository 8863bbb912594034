"""The base class of every step operator: what a DAG parse needs of a step task.

A step task carries only its identity (``recipe_file``, ``recipe_name``, ``step_path``), a
parse-time backend preference and, inside a mapped loop, its ``loop_value``. Everything it does
when it runs (re-load the recipe, resolve the step, run it, push XCom and Assets) lives in
:mod:`.running`, imported only then: every parse of the DAGs folder creates these operators, and
none of them runs anything.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, Sequence

from airflow.sdk import AssetAlias, BaseOperator

if TYPE_CHECKING:  # the run-time modules are imported when a step runs, not when a DAG is parsed
    from airflow_provider_stepcab.operators.resolve import ResolvedStep


def asset_alias_name(dag_id: str, task_id: str) -> str:
    """Name of the :class:`AssetAlias` a step task reports its file outputs through."""
    return f"stepcab:{dag_id}:{task_id}"


def _running() -> Any:
    from airflow_provider_stepcab.operators import running

    return running


class StepcabBaseOperator(BaseOperator):
    """Base of the step operators (one subclass per execution mechanism).

    :param recipe_file: absolute path of the recipe's main file.
    :param recipe_name: the recipe inside that file.
    :param step_path: labels from the top recipe down to this cab step, e.g. ``("cal", "flag")``.
    :param backend: parse-time backend preference (name or ``select`` list); a trigger-time
        ``conf.steps.<step>.backend`` wins over it.
    :param loop_value: the ``for_loop`` value of this (mapped) task, for steps inside a looping recipe.
    :param loop_indices: ``{dotted path of a looping recipe: iteration}`` of the loops around this
        task that the DAG unrolled into one TaskGroup per iteration (``dag_factory/builder.py``).
    :param dag_loops: with ``loop_indices``: ``{dotted path: mapped?}`` of every loop of the DAG
        (which earlier steps' XComs are per map index, which in an iteration's TaskGroup).
    :param asset_outputs: ``False`` when the step's cab has no File/Directory/MS output: the task
        then declares no :class:`AssetAlias` outlet (the DAG factory decides; an outlet costs
        Airflow work at the end of every task even when it carries no event).
    """

    template_fields: Sequence[str] = ()
    ui_color = "#e8f4ea"
    #: the backend name this class runs itself (subclasses set it)
    mechanism: str = ""

    def __init__(self, *, recipe_file: str, recipe_name: str, step_path: Sequence[str],
                 backend: Any = None, loop_value: Any = None, asset_outputs: bool = True,
                 loop_indices: Optional[Mapping[str, int]] = None, dag_loops: Optional[Mapping[str, bool]] = None,
                 **kwargs: Any) -> None:
        kwargs.setdefault("trigger_rule", "none_failed")
        super().__init__(**kwargs)
        self.recipe_file = str(recipe_file)
        self.recipe_name = recipe_name
        self.step_path = tuple(step_path)
        self.backend = backend
        self.loop_value = loop_value
        self.loop_indices = dict(loop_indices or {})
        self.dag_loops = dict(dag_loops or {})
        #: the runtime runner of the step while it runs (set by the backend runner; see on_kill)
        self._runner: Any = None
        if asset_outputs and not self.outlets:
            dag_id = self.dag.dag_id if getattr(self, "has_dag", lambda: False)() else recipe_name
            self.outlets = [AssetAlias(name=asset_alias_name(dag_id, self.task_id))]

    def run_step(self, step: ResolvedStep, context: Any) -> Any:
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

    def execute(self, context: Any) -> Any:
        """The one flow of a step task: resolve the step, plan and run it, publish its outputs.

        :returns: the step's outputs (the task's ``return_value``); ``None`` for a cab without outputs.
        """
        step = self.resolve_or_skip(context)
        return self.finish_step(step, self.run_resolved(step, context), context)

    def resolve_or_skip(self, context: Any, *, finishing: bool = False) -> ResolvedStep:
        """Resolve this task's step for the running DAG run; recipe errors as task failures, a
        skipped step as ``AirflowSkipException`` unless ``finishing`` (:func:`.running.resolve_or_skip`)."""
        return _running().resolve_or_skip(self, context, finishing=finishing)

    def run_resolved(self, step: ResolvedStep, context: Any) -> Any:
        """Plan and run ``step`` with this class's mechanism (:meth:`run_step`) or the runner of the
        backend its trigger-time conf chose (:func:`.running.run_resolved`); return the ``RunResult``."""
        return _running().run_resolved(self, step, context)

    def finish_step(self, step: ResolvedStep, result: Any, context: Any) -> Optional[dict]:
        """Publish the step, given its ``RunResult`` (:func:`.running.finish_step`).

        :returns: the step's outputs (the task's ``return_value``); ``None`` for a cab without outputs.
        :raises AirflowException: the step failed or its outputs are wrong.
        """
        return _running().finish_step(self, step, result, context)

    def available_backends(self) -> list:
        """Backends a step of this task may select: this class's mechanism and the registered runners."""
        return sorted({self.mechanism, *_running().runnable_backends()})
