"""Compile one recipe into the plain-data spec of its Airflow DAG (:func:`compile_dag`).

The spec is what the parse cache stores (:mod:`.spec`); :func:`~.spec.materialize` turns it into
the DAG, so a warm parse never touches the recipe. :func:`build_dag` does both. Shape of the DAG:

- one task per **cab step** (task id: :func:`.naming.task_id_for`), created with
  ``operator_class(task_id=..., recipe_file=..., recipe_name=..., step_path=[labels...],
  backend=opts.airflow.backend, loop_value=..., trigger_rule="none_failed", **per-task settings)``;
- a **nested recipe** step is a ``TaskGroup`` (group id = sanitised label) holding its steps;
- a recipe with a **for_loop** is a *mapped* TaskGroup expanded over the loop values: a literal
  ``over`` list at parse time, else over the XCom of a :class:`.loops.StepcabLoopValuesOperator`
  task placed right before the group. Each task in it gets ``loop_value`` (resolved per map index)
  and ``max_active_tis_per_dagrun`` from ``scatter`` (0 → 1 at a time, N > 0 → N, -1 → unlimited).
  A looping *top* recipe makes one mapped group around all steps with ``prefix_group_id=False``, so
  task ids stay those of :func:`.naming.task_id_for`. A loop holding another loop and iterating over
  values known at parse time (a literal list, or an input of the top recipe with a literal default:
  :mod:`.unrolling`) is *unrolled* instead: a TaskGroup per value, its tasks told their iteration
  (``loop_indices``); a loop nested in a mapped one is an error;
- order: steps are chained in recipe order (Stimela runs them one by one); with
  ``opts.airflow.parallel: dataflow`` only the edges of :mod:`.dataflow` are kept;
- trigger rule ``none_failed`` everywhere: a step the operator skips at run time (``skip``, tags,
  step selection) does not skip the steps after it, a failed step stops them;
- with ``opts.airflow.build_images: true`` a first task ``stepcab_build_images``
  (:class:`~airflow_provider_stepcab.operators.build.StepcabBuildImagesOperator`) builds/pulls the
  steps' container images and is upstream of every task that had no upstream (so of every step).
"""

from __future__ import annotations

from typing import Any, Optional

from airflow_provider_stepcab.dag_factory.dataflow import infer_dependencies
from airflow_provider_stepcab.dag_factory.loops import map_index_template
from airflow_provider_stepcab.dag_factory.naming import MAX_ID_LENGTH, id_collisions, sanitize_id, task_id_for
from airflow_provider_stepcab.dag_factory.params import FORM_HIDDEN_CATEGORIES, param_specs
from airflow_provider_stepcab.dag_factory.settings import RUNTIME_TASK_KEYS, AirflowSettings, task_settings
from airflow_provider_stepcab.dag_factory.spec import class_path
from airflow_provider_stepcab.dag_factory.unrolling import parse_time_values, unrolls
from airflow_provider_stepcab.recipe.errors import Problems
from airflow_provider_stepcab.recipe.model import UNSET

TRIGGER_RULE = "none_failed"
TOP_LOOP_TASK = "stepcab_for_loop"
LOOP_TASK_SUFFIX = "__for_loop"
BUILD_TASK = "stepcab_build_images"   # = operators.build.BUILD_TASK_ID (not imported: parse cost)


def check_structure(recipe: Any, problems: Problems, prefix: tuple = (), in_loop: bool = False,
                    key_path: Optional[str] = None) -> None:
    """Record errors for recipes the DAG shape cannot express (id clashes, nested loops, long ids).

    :param in_loop: inside a mapped loop (Airflow does not map a TaskGroup inside a mapped one).
    """
    key_path = key_path or recipe.name
    looping = in_loop or (recipe.for_loop is not None and not unrolls(recipe, top=not prefix))
    if in_loop and recipe.for_loop is not None:
        problems.error(recipe.for_loop.loc, f"{key_path}.for_loop",
                       "a for_loop inside another for_loop whose values are known only at run time "
                       f"(over: {recipe.for_loop.over!r} here) cannot be mapped to Airflow tasks: Airflow does "
                       "not map a TaskGroup inside a mapped one; give the outer loop a literal list of values, or make "
                       "it loop over an input of the top recipe with a literal default (it is then unrolled "
                       "into one TaskGroup per value)", "airflow-nested-loop")
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
    """Markdown for the DAG page: recipe info, extra ``doc_md``, inputs/outputs tables, steps.

    The inputs' "required" column says ``yes`` for the inputs a run needs a value for (as the
    trigger form, :mod:`.params`), ``filled by the recipe`` for required ones the recipe assigns.
    """
    from airflow_provider_stepcab.recipe.requirements import required_unset

    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    needed = {name for name, _ in required_unset(recipe)}
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
            if p.category in FORM_HIDDEN_CATEGORIES and name not in needed:
                hidden += 1  # e.g. the auto-aliased step.param inputs (see params.py)
                continue
            default = recipe.defaults.get(name, p.default)
            default = "" if default is UNSET else f"`{cell(default)}`"
            required = "yes" if name in needed else ("filled by the recipe" if p.required and not default else "")
            out.append(f"| `{cell(name)}` | `{cell(p.dtype_str)}` | {default} | {required} | {cell(p.info)} |")
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
    """The operator arguments among the step's ``tasks.<pattern>`` settings."""
    return {k: v for k, v in task_settings(settings, path).items() if k not in RUNTIME_TASK_KEYS}


#: retries of a Slurm step when the recipe sets none (see _Compiler.task)
DEFERRED_DEFAULT_RETRIES = 1


def _has_file_outputs(step: Any) -> bool:
    """True when the step's cab has a File/Directory/MS output (emitted as an Asset at run time)."""
    from airflow_provider_stepcab.operators.checks import is_file

    outputs = getattr(step.cab, "outputs", None) or {}
    return any(is_file(p) for p in outputs.values())


class _Compiler:
    """Emits the plain-data spec of one DAG (:mod:`.spec` documents its shape)."""

    def __init__(self, recipe: Any, recipe_file: str, settings: AirflowSettings, operator_class: Any,
                 config_tree: Any = None):
        self.recipe, self.file, self.settings = recipe, recipe_file, settings
        self.op_class = operator_class
        self.dag_loops: dict = {}  # dotted path of every loop -> mapped? (dag_loops)
        self.config_tree = config_tree

    def _class_for(self, chain: tuple, step: Any) -> tuple[str, str]:
        """``(class path, mechanism)`` of a step's operator."""
        if self.op_class is not None:
            return class_path(self.op_class), getattr(self.op_class, "mechanism", "")
        from airflow_provider_stepcab.dag_factory.operator_choice import class_path_for, mechanism_for

        mechanism = mechanism_for(self.config_tree, chain, step, self.settings.backend)
        return class_path_for(mechanism), mechanism

    def _loop_kwargs(self, unrolled: dict) -> dict:
        """What a task inside unrolled loops needs to find its iteration and its siblings' XComs."""
        if not unrolled:
            return {}
        return {"loop_indices": dict(unrolled), "dag_loops": dict(self.dag_loops)}

    def task(self, path: tuple, in_loop: bool, scatter: Any, chain: tuple = (), step: Any = None,
             unrolled: Optional[dict] = None) -> dict:
        kwargs = dict(task_id=sanitize_id(path[-1]), recipe_file=self.file, recipe_name=self.recipe.name,
                      step_path=list(path), backend=self.settings.backend, trigger_rule=TRIGGER_RULE,
                      **self._loop_kwargs(unrolled or {}))
        kwargs.update(_task_settings(self.settings, path))
        if in_loop:
            kwargs["max_active_tis_per_dagrun"] = scatter
            kwargs.setdefault("map_index_template", map_index_template(self.loop_var))
        if not _has_file_outputs(step):
            kwargs["asset_outputs"] = False
        cls, mechanism = self._class_for(chain, step)
        if mechanism == "slurm" and self.settings.retries is None and "retries" not in kwargs:
            # A retry of a Slurm step re-attaches to its job instead of submitting again, so one
            # retry is free; it also covers Airflow 3.3.2 failing a task whose trigger fires before
            # the scheduler has recorded the deferral (apache/airflow#67287).
            kwargs["retries"] = DEFERRED_DEFAULT_RETRIES
        return {"k": "task", "cls": cls, "kw": kwargs, "loop": in_loop}

    def level(self, recipe: Any, prefix: tuple, in_loop: bool = False, scatter: Any = None,
              chain: tuple = (), unrolled: Optional[dict] = None) -> dict:
        """The nodes and edges of ``recipe``'s steps (``unrolled``: iterations of the unrolled loops
        around them, by dotted recipe path)."""
        nodes: list = []
        chain = chain + (recipe,)
        for label, step in recipe.steps.items():
            path = prefix + (label,)
            if step.cab is not None:
                node = self.task(path, in_loop, scatter, chain, step, unrolled)
            elif step.recipe.for_loop is not None and not in_loop:
                node = self.loop(step.recipe, path, sanitize_id(label), prefix_group_id=True, chain=chain,
                                 unrolled=unrolled)
            else:
                node = {"k": "group", "id": sanitize_id(label), "tooltip": step.info or "",
                        "level": self.level(step.recipe, path, in_loop, scatter, chain, unrolled)}
            nodes.append([label, node])
        labels = [label for label, _ in nodes]
        if self.settings.parallel == "dataflow":
            deps = infer_dependencies(recipe)
        else:
            deps = {lbl: ([labels[i - 1]] if i else []) for i, lbl in enumerate(labels)}
        edges = [[up, label] for label, upstream in deps.items() for up in upstream]
        return {"nodes": nodes, "edges": edges}

    def loop(self, recipe: Any, path: tuple, group_id: str, *, prefix_group_id: bool, chain: tuple = (),
             unrolled: Optional[dict] = None) -> dict:
        """A mapped TaskGroup over ``recipe.for_loop``, or, when it :func:`unrolls`, a TaskGroup
        holding one TaskGroup per value (group id: the iteration), run one after the other unless
        ``scatter`` lets them run together."""
        loop = recipe.for_loop
        unrolled = dict(unrolled or {})
        if unrolls(recipe, top=not path):
            key = ".".join(path)
            nodes = [[str(i), {"k": "group", "id": str(i), "tooltip": f"{loop.var}={value}",
                               "level": self.level(recipe, path, False, None, chain, {**unrolled, key: i})}]
                     for i, value in enumerate(parse_time_values(recipe, top=not path))]
            edges = [] if loop.scatter not in (0, 1, None) else \
                [[str(i - 1), str(i)] for i in range(1, len(nodes))]
            return {"k": "group", "id": group_id, "tooltip": recipe.info or "",
                    "level": {"nodes": nodes, "edges": edges}}
        self.loop_var = loop.var  # a mapped loop holds no other mapped loop (check_structure)
        scatter = 1 if loop.scatter in (0, 1, None) else (None if loop.scatter < 0 else int(loop.scatter))
        node: dict = {"k": "loop", "id": group_id, "prefix": prefix_group_id, "tooltip": recipe.info or "",
                      "values": None, "values_task": None}
        if isinstance(loop.over, (list, tuple)):
            node["values"] = list(loop.over)
        else:
            task_id = TOP_LOOP_TASK if not path else sanitize_id(path[-1]) + LOOP_TASK_SUFFIX
            node["values_task"] = dict(task_id=task_id, recipe_file=self.file, recipe_name=self.recipe.name,
                                       step_path=list(path), trigger_rule=TRIGGER_RULE,
                                       **self._loop_kwargs(unrolled))
        node["level"] = self.level(recipe, path, True, scatter, chain, unrolled)
        return node


def _dag_kwargs(recipe: Any, recipe_file: str, settings: AirflowSettings) -> dict:
    info_line = (recipe.info or "").strip().splitlines()
    optional = {k: getattr(settings, k) for k in ("max_active_runs", "max_active_tasks", "end_date",
                                                   "dagrun_timeout") if getattr(settings, k) is not None}
    return dict(
        schedule=settings.schedule,
        start_date=settings.start_date,
        catchup=settings.catchup,
        default_args=settings.default_args(),
        tags=sorted({"stepcab", *settings.tags}),
        description=settings.description or (info_line[0][:200] if info_line else None),
        doc_md=doc_md(recipe, recipe_file, settings),
        **optional,
    )


def compile_dag(*, dag_id: str, recipe: Any, recipe_file: str, settings: AirflowSettings,
                operator_class: Any, problems: Problems, config_tree: Any = None) -> Optional[dict]:
    """The spec of ``recipe``'s DAG (see the module docstring and :mod:`.spec`).

    :param operator_class: one operator class (or ``"module:Class"``) for every step, or ``None``
        to choose per step from its backend settings (:mod:`.operator_choice`).
    :param config_tree: the merged config of the recipe's file (its ``opts.backend``).
    :param problems: receives shape problems; when it holds errors afterwards, ``None`` is returned.
    """
    check_structure(recipe, problems)
    if settings.build_images:
        clash = [label for label in recipe.steps if sanitize_id(label) == BUILD_TASK]
        for label in clash:
            problems.error(recipe.steps[label].loc, f"{recipe.name}.steps.{label}",
                           f"step id '{BUILD_TASK}' is the image build task's (opts.airflow.build_images); "
                           "rename the step", "airflow-id-clash")
    if problems.errors:
        return None
    params = param_specs(recipe, problems)
    if settings.schedule is not None:
        missing = [name for name, has_default, default, _, schema in params
                   if not has_default or not _valid_default(default, schema)]
        if missing:
            problems.error(recipe.loc, f"{recipe.name}.inputs",
                           f"required input(s) without default: {', '.join(missing)}; a scheduled DAG "
                           f"(opts.airflow.schedule={settings.schedule!r}) needs a default for each",
                           "airflow-schedule-params")
            return None
    compiler = _Compiler(recipe, recipe_file, settings, operator_class, config_tree)
    compiler.dag_loops = dag_loops(recipe)
    if recipe.for_loop is not None and unrolls(recipe, top=True):
        body = compiler.loop(recipe, (), "for_loop", prefix_group_id=False)["level"]  # groups "0", "1", ...
    elif recipe.for_loop is not None:
        body = compiler.loop(recipe, (), "for_loop", prefix_group_id=False)
    else:
        body = compiler.level(recipe, ())
    build = None
    if settings.build_images:
        build = dict(task_id=BUILD_TASK, recipe_file=recipe_file, recipe_name=recipe.name,
                     backend=settings.backend)
    return {"dag_id": dag_id, "dag_kwargs": _dag_kwargs(recipe, recipe_file, settings), "params": params,
            "body": body, "build": build}


def dag_loops(recipe: Any, prefix: tuple = ()) -> dict:
    """``{dotted path ("" for the top): mapped?}`` of every looping recipe (else unrolled)."""
    out = {".".join(prefix): not unrolls(recipe, top=not prefix)} if recipe.for_loop is not None else {}
    for label, step in recipe.steps.items():
        if step.recipe is not None:
            out.update(dag_loops(step.recipe, prefix + (label,)))
    return out


def _valid_default(default: Any, schema: dict) -> bool:
    """True if ``default`` satisfies the param's JSON schema (as ``Param.resolve`` checks it)."""
    from airflow.sdk import Param

    try:
        Param(default, **schema).resolve(suppress_exception=False)
    except Exception:  # noqa: BLE001 - ParamValidationError: no (valid) default
        return False
    return True


def build_dag(*, dag_id: str, recipe: Any, recipe_file: str, settings: AirflowSettings,
              operator_class: Any, problems: Problems, config_tree: Any = None) -> Any:
    """Create the DAG of ``recipe``: :func:`compile_dag`, then :func:`~.spec.materialize`.

    :return: the DAG, or ``None`` when the recipe cannot be turned into one (see ``problems``).
    """
    from airflow_provider_stepcab.dag_factory.spec import materialize, register_class

    if operator_class is not None and not isinstance(operator_class, str):
        register_class(class_path(operator_class), operator_class)
    spec = compile_dag(dag_id=dag_id, recipe=recipe, recipe_file=recipe_file, settings=settings,
                       operator_class=operator_class, problems=problems, config_tree=config_tree)
    return None if spec is None else materialize(spec)
