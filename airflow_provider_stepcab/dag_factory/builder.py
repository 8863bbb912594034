"""Build one Airflow DAG from one recipe.

Shape of the DAG:

- one task per **cab step** (task id: :func:`.naming.task_id_for`), created with
  ``operator_class(task_id=..., recipe_file=..., recipe_name=..., step_path=[labels...],
  backend=opts.airflow.backend, loop_value=..., trigger_rule="none_failed", **per-task settings)``;
- a **nested recipe** step is a ``TaskGroup`` (group id = sanitised label) holding its steps;
- a recipe with a **for_loop** is a *mapped* TaskGroup expanded over the loop values: a literal
  ``over`` list at parse time, else over the XCom of a :class:`.loops.StepcabLoopValuesOperator`
  task placed right before the group. Each task in it gets ``loop_value`` (resolved per map index)
  and ``max_active_tis_per_dagrun`` from ``scatter`` (0 → 1 at a time, N > 0 → N, -1 → unlimited).
  A looping *top* recipe makes one mapped group around all steps with ``prefix_group_id=False``, so
  task ids stay those of :func:`.naming.task_id_for`. Nested for_loops are not supported (error);
- order: steps are chained in recipe order (Stimela runs them one by one); with
  ``opts.airflow.parallel: dataflow`` only the edges of :mod:`.dataflow` are kept;
- trigger rule ``none_failed`` everywhere: a step the operator skips at run time (``skip``, tags,
  step selection) does not skip the steps after it, a failed step stops them;
- with ``opts.airflow.build_images: true`` a first task ``stepcab_build_images``
  (:class:`~airflow_provider_stepcab.operators.build.StepcabBuildImagesOperator`) builds/pulls the
  steps' container images and is upstream of every task that had no upstream (so of every step).
"""

from __future__ import annotations

import fnmatch
from typing import Any, Callable, Optional

from airflow_provider_stepcab.dag_factory.dataflow import infer_dependencies
from airflow_provider_stepcab.dag_factory.naming import MAX_ID_LENGTH, id_collisions, sanitize_id, task_id_for
from airflow_provider_stepcab.dag_factory.params import FORM_HIDDEN_CATEGORIES, build_params
from airflow_provider_stepcab.dag_factory.settings import AirflowSettings
from airflow_provider_stepcab.recipe.errors import Problems
from airflow_provider_stepcab.recipe.model import UNSET

TRIGGER_RULE = "none_failed"
TOP_LOOP_TASK = "stepcab_for_loop"
LOOP_TASK_SUFFIX = "__for_loop"
BUILD_TASK = "stepcab_build_images"   # = operators.build.BUILD_TASK_ID (not imported: parse cost)


def check_structure(recipe: Any, problems: Problems, prefix: tuple = (), in_loop: bool = False,
                    key_path: Optional[str] = None) -> None:
    """Record errors for recipes the DAG shape cannot express (id clashes, nested loops, long ids)."""
    key_path = key_path or recipe.name
    looping = in_loop or recipe.for_loop is not None
    if in_loop and recipe.for_loop is not None:
        problems.error(recipe.for_loop.loc, f"{key_path}.for_loop",
                       "a for_loop inside another for_loop cannot be mapped to Airflow tasks "
                       "(nested dynamic task mapping is not supported)", "airflow-nested-loop")
    labels = list(recipe.steps)
    extra = [f"{label}{LOOP_TASK_SUFFIX}" for label in labels
             if recipe.steps[label].recipe is not None and recipe.steps[label].recipe.for_loop is not None]
    for first, second in id_collisions(labels + extra):
        step = recipe.steps.get(second) or recipe.steps.get(first)
        problems.error(step.loc if step else recipe.loc, f"{key_path}.steps.{second}",
                       f"steps '{first}' and '{second}' map to the same Airflow id '{sanitize_id(second)}'; "
                       "rename one", "airflow-id-clash")
    for label, step in recipe.steps.items():
        path = prefix + (label,)
        if step.cab is None and step.recipe is None:
            problems.error(step.loc, f"{key_path}.steps.{label}", "step has neither a cab nor a recipe",
                           "airflow-bad-step")
        if len(task_id_for(recipe.name, path)) > MAX_ID_LENGTH:
            problems.error(step.loc, f"{key_path}.steps.{label}",
                           f"task id '{task_id_for(recipe.name, path)}' is longer than {MAX_ID_LENGTH}",
                           "airflow-id-length")
        if step.recipe is not None:
            check_structure(step.recipe, problems, path, looping, f"{key_path}.steps.{label}")


def doc_md(recipe: Any, recipe_file: str, settings: AirflowSettings) -> str:
    """Markdown for the DAG page: recipe info, extra ``doc_md``, inputs/outputs tables, steps."""
    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    out = [f"# {recipe.name}", "", recipe.info.strip() or "(no info)", ""]
    if settings.doc_md:
        out += [settings.doc_md.strip(), ""]
    out += [f"Recipe file: `{recipe_file}`", ""]
    for title, schema in (("Inputs", recipe.inputs), ("Outputs", recipe.outputs)):
        if not schema:
            continue
        out += [f"## {title}", "", "| name | type | default | required | description |", "|---|---|---|---|---|"]
        hidden = 0
        for name, p in schema.items():
            if p.category in FORM_HIDDEN_CATEGORIES and not p.required:
                hidden += 1  # e.g. the auto-aliased step.param inputs (see params.py)
                continue
            default = recipe.defaults.get(name, p.default)
            default = "" if default is UNSET else f"`{cell(default)}`"
            out.append(f"| `{cell(name)}` | `{cell(p.dtype_str)}` | {default} | {'yes' if p.required else ''} "
                       f"| {cell(p.info)} |")
        if hidden:
            out += ["", f"{hidden} more optional {title.lower()} (Obscure/Hidden, e.g. `step.param` aliases "
                        "of unset step parameters) are left out; inputs can be set through the run conf."]
        out.append("")
    out += ["## Steps", ""]
    for label, step in recipe.steps.items():
        what = f"cab `{step.cab_name or getattr(step.cab, 'name', '')}`" if step.cab is not None \
            else f"recipe `{step.recipe_name or getattr(step.recipe, 'name', '')}`"
        out.append(f"1. **{cell(label)}** ({what}){': ' + cell(step.info) if step.info else ''}")
    return "\n".join(out) + "\n"


def _task_settings(settings: AirflowSettings, path: tuple) -> dict:
    dotted = ".".join(path)
    ranked = []
    for pattern, values in settings.tasks.items():
        if pattern == dotted:
            ranked.append((2, values))
        elif fnmatch.fnmatchcase(dotted, pattern):
            ranked.append((0 if pattern == "*" else 1, values))
    out: dict = {}
    for _, values in sorted(ranked, key=lambda x: x[0]):
        out.update(values)
    return out


#: retries of a Slurm step when the recipe sets none (see _Builder.task)
DEFERRED_DEFAULT_RETRIES = 1


class _Builder:
    def __init__(self, recipe: Any, recipe_file: str, settings: AirflowSettings, operator_class: Any,
                 config_tree: Any = None):
        self.recipe, self.file, self.settings, self.op_class = recipe, recipe_file, settings, operator_class
        self.config_tree = config_tree

    def _class_for(self, chain: tuple, step: Any) -> Any:
        if self.op_class is not None:
            return self.op_class
        from airflow_provider_stepcab.dag_factory.operator_choice import choose_operator_class

        return choose_operator_class(self.config_tree, chain, step, self.settings.backend)

    def task(self, path: tuple, loop_value: Any, scatter: Any, chain: tuple = (), step: Any = None) -> Any:
        kwargs = dict(task_id=sanitize_id(path[-1]), recipe_file=self.file, recipe_name=self.recipe.name,
                      step_path=list(path), backend=self.settings.backend, trigger_rule=TRIGGER_RULE)
        kwargs.update(_task_settings(self.settings, path))
        if loop_value is not None:
            kwargs["loop_value"] = loop_value
            kwargs["max_active_tis_per_dagrun"] = scatter
        op_class = self._class_for(chain, step)
        if op_class.mechanism == "slurm" and self.settings.retries is None and "retries" not in kwargs:
            # A retry of a Slurm step re-attaches to its job instead of submitting again, so one
            # retry is free; it also covers Airflow 3.3.2 failing a task whose trigger fires before
            # the scheduler has recorded the deferral (apache/airflow#67287).
            kwargs["retries"] = DEFERRED_DEFAULT_RETRIES
        op = op_class(**kwargs)
        if loop_value is not None and "loop_value" not in op.template_fields:
            # the mapped value must be resolved per map index like a templated field
            op.template_fields = (*op.template_fields, "loop_value")
        return op

    def level(self, recipe: Any, prefix: tuple, loop_value: Any = None, scatter: Any = None,
              chain: tuple = ()) -> tuple:
        """Build the steps of ``recipe``; return ``(heads, tails)`` node lists for outer wiring."""
        nodes: dict[str, tuple[Any, Any]] = {}
        chain = chain + (recipe,)
        for label, step in recipe.steps.items():
            path = prefix + (label,)
            if step.cab is not None:
                t = self.task(path, loop_value, scatter, chain, step)
                nodes[label] = (t, t)
            elif step.recipe.for_loop is not None and loop_value is None:
                nodes[label] = self.loop_group(step.recipe, path, sanitize_id(label), prefix_group_id=True,
                                               chain=chain)
            else:
                from airflow.sdk import TaskGroup

                with TaskGroup(group_id=sanitize_id(label), tooltip=step.info or "") as group:
                    self.level(step.recipe, path, loop_value, scatter, chain)
                nodes[label] = (group, group)
        labels = list(nodes)
        if self.settings.parallel == "dataflow":
            deps = infer_dependencies(recipe)
        else:
            deps = {lbl: ([labels[i - 1]] if i else []) for i, lbl in enumerate(labels)}
        for label, upstream in deps.items():
            for up in upstream:
                nodes[up][1] >> nodes[label][0]
        has_down = {u for ups in deps.values() for u in ups}
        heads = [nodes[lbl][0] for lbl in labels if not deps.get(lbl)]
        tails = [nodes[lbl][1] for lbl in labels if lbl not in has_down]
        return heads, tails

    def loop_group(self, recipe: Any, path: tuple, group_id: str, *, prefix_group_id: bool,
                   chain: tuple = ()) -> tuple:
        """A mapped TaskGroup over ``recipe.for_loop``; returns ``(head, tail)``."""
        from airflow.sdk import task_group

        from airflow_provider_stepcab.dag_factory.loops import StepcabLoopValuesOperator

        loop = recipe.for_loop
        scatter = 1 if loop.scatter in (0, 1, None) else (None if loop.scatter < 0 else int(loop.scatter))
        values_task = None
        if isinstance(loop.over, (list, tuple)):
            values: Any = list(loop.over)
        else:
            task_id = TOP_LOOP_TASK if not path else sanitize_id(path[-1]) + LOOP_TASK_SUFFIX
            values_task = StepcabLoopValuesOperator(task_id=task_id, recipe_file=self.file,
                                                    recipe_name=self.recipe.name, step_path=list(path),
                                                    trigger_rule=TRIGGER_RULE)
            values = values_task.output

        def body(loop_value: Any) -> None:
            self.level(recipe, path, loop_value, scatter, chain)

        body.__name__ = group_id
        group = task_group(group_id=group_id, prefix_group_id=prefix_group_id,
                           tooltip=recipe.info or "")(body).expand(loop_value=values)
        if values_task is not None:
            values_task >> group
        return (values_task or group), group


def build_dag(*, dag_id: str, recipe: Any, recipe_file: str, settings: AirflowSettings,
              operator_class: Any, problems: Problems, config_tree: Any = None) -> Any:
    """Create the DAG of ``recipe`` (see the module docstring).

    :param operator_class: one operator class for every step, or ``None`` to choose per step
        from its backend settings (:mod:`.operator_choice`).
    :param config_tree: the merged config of the recipe's file (its ``opts.backend``).
    :param problems: receives shape problems; when it holds errors afterwards, no DAG is returned.
    :return: the DAG, or ``None`` when the recipe cannot be turned into one.
    """
    from airflow.sdk import DAG

    check_structure(recipe, problems)
    if settings.build_images:
        clash = [label for label in recipe.steps if sanitize_id(label) == BUILD_TASK]
        for label in clash:
            problems.error(recipe.steps[label].loc, f"{recipe.name}.steps.{label}",
                           f"step id '{BUILD_TASK}' is the image build task's (opts.airflow.build_images); "
                           "rename the step", "airflow-id-clash")
    if problems.errors:
        return None
    params = build_params(recipe, problems)
    if settings.schedule is not None:
        missing = []
        for name, p in params.items():
            try:
                p.resolve(suppress_exception=False)
            except Exception:  # noqa: BLE001 - ParamValidationError: no (valid) default
                missing.append(name)
        if missing:
            problems.error(recipe.loc, f"{recipe.name}.inputs",
                           f"required input(s) without default: {', '.join(missing)}; a scheduled DAG "
                           f"(opts.airflow.schedule={settings.schedule!r}) needs a default for each",
                           "airflow-schedule-params")
            return None
    info_line = (recipe.info or "").strip().splitlines()
    optional = {k: getattr(settings, k) for k in ("max_active_runs", "max_active_tasks", "end_date",
                                                   "dagrun_timeout") if getattr(settings, k) is not None}
    dag = DAG(
        dag_id=dag_id,
        schedule=settings.schedule,
        start_date=settings.start_date,
        catchup=settings.catchup,
        default_args=settings.default_args(),
        tags=sorted({"stepcab", *settings.tags}),
        description=settings.description or (info_line[0][:200] if info_line else None),
        doc_md=doc_md(recipe, recipe_file, settings),
        auto_register=False,
        **optional,
    )
    builder = _Builder(recipe, recipe_file, settings, operator_class, config_tree)
    with dag:
        if recipe.for_loop is not None:
            builder.loop_group(recipe, (), "for_loop", prefix_group_id=False)
        else:
            builder.level(recipe, ())
        if settings.build_images:
            from airflow_provider_stepcab.operators.build import StepcabBuildImagesOperator

            roots = list(dag.roots)
            build = StepcabBuildImagesOperator(task_id=BUILD_TASK, recipe_file=recipe_file,
                                               recipe_name=recipe.name, backend=settings.backend)
            for root in roots:
                build >> root
    # Params go on the DAG only now: every operator created inside a DAG deep-copies the DAG's
    # params into its own (three times: once per class of the hierarchy), which is quadratic in
    # recipe size (auto-aliased step inputs grow with the steps). Airflow merges DAG params into
    # the task context at run time anyway (``process_params``: dag.params, then task.params, then
    # conf), so tasks without a copy behave the same and serialise smaller.
    dag.params = params
    return dag


