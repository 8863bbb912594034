"""What one recipe file turns into, as plain data, cached across parses, and the DAGs made from it.

Airflow re-parses the DAGs folder every 30 s in fresh processes, and nearly always nothing has
changed. :func:`file_spec` therefore caches, per recipe file, the *compiled* result: the spec of
each DAG (below), the file's errors and warnings. A warm parse reads that entry,
checks the SHA-256 of every file the recipe was built from (includes and cult-cargo's config too,
see :mod:`~airflow_provider_stepcab.diskcache`) and materialises the DAGs; the recipe layer
is not even imported. Any edit to one of those files, to a module of this package that built the
entry, ``STIMELA_INCLUDE`` or the working directory is a miss: the file is compiled again and the
entry replaced.

A file spec is a dict::

    {"dags": [{"dag_id", "recipe", "loc": (file, line), "spec": <DAG spec> | None,
               "errors": [problem], "warnings": [problem]}, ...],
     "errors": [problem],     # file-level errors when no recipe could even be named
     "warnings": [problem]}   # load warnings of the file

where a problem is the tuple ``(file, line, key, message, severity, code)``
(:func:`to_problems` makes :class:`~airflow_provider_stepcab.recipe.errors.Problem` objects).

**DAG specs** (made by :mod:`.builder`, turned into DAGs by :func:`materialize`): a warm parse
runs only this module besides file discovery and the cache store; it imports nothing from the
recipe layer, only Airflow's SDK and the operator classes the spec names (each once per
process). A DAG spec is a dict:

- ``dag_id``, ``dag_kwargs`` (keyword arguments of ``DAG``), ``params`` (see :func:`make_params`);
- ``body``: the top level, a *level* or, for a looping top recipe, a *loop* node;
- ``build``: keyword arguments of the image build task, or ``None``.

Nodes (all dicts, key ``k`` is the kind):

- ``task``: ``cls`` (``"module:Class"``), ``kw`` (operator kwargs), ``loop`` (True: the task gets the
  enclosing mapped group's ``loop_value``);
- ``group``: a TaskGroup with ``id``, ``tooltip`` and a ``level``;
- ``loop``: a mapped TaskGroup with ``id``, ``prefix``, ``tooltip``, ``values`` (a literal list) or
  ``values_task`` (kwargs of a :class:`~.loops.StepcabLoopValuesOperator` whose XCom is mapped over),
  and a ``level``.

A *level* is ``{"nodes": [[label, node], ...], "edges": [[up_label, down_label], ...]}``.

Cold misses are compiled by :mod:`.compile`.
"""

from __future__ import annotations

import importlib
import os
import threading
from typing import Any, Callable, Optional

from airflow_provider_stepcab import diskcache

FORMAT = 1

_memory: dict[Any, tuple[dict, dict]] = {}
_lock = threading.Lock()


def to_problems(items: list) -> list:
    """:class:`~airflow_provider_stepcab.recipe.errors.Problem` objects from problem tuples."""
    from airflow_provider_stepcab.recipe.errors import Loc, Problem

    return [Problem(Loc(f, line), key, msg, severity, code) for f, line, key, msg, severity, code in items]


def _key(file: str, class_key: Optional[str]) -> tuple:
    return ("dagspec", FORMAT, os.path.abspath(file), class_key,
            os.environ.get("STIMELA_INCLUDE", ""), os.getcwd())


def class_path(cls: Any) -> str:
    """``"module:Class"`` of an operator class (or the dotted path given as a string)."""
    if isinstance(cls, str):
        return cls
    return f"{cls.__module__}:{cls.__qualname__}"


def file_spec(file: str, operator_class: Any = None, *, compiler: Callable[[str, Any], tuple]) -> dict:
    """The file spec of ``file`` (module docstring): from memory, the disk cache, or compiled.

    :param operator_class: ``None`` (per-step choice), a ``"module:Class"`` path, or a class; a
        class that cannot be imported by its name (defined in a function) is never cached on disk.
    :param compiler: ``compiler(file, operator_class) -> (file spec, files read, cacheable)`` for a
        miss (:func:`.compile.compile_file`; passed in so that this module never imports it).
    """
    persist = True
    class_key = None
    if operator_class is not None:
        class_key = class_path(operator_class)
        persist = "<locals>" not in class_key
    key = _key(file, class_key)
    with _lock:
        hit = _memory.get(key)
    if hit is not None and all(diskcache.digest(f) == d for f, d in hit[0].items()):
        return hit[1]
    found, value, digests = diskcache.get(key) if persist else (False, None, {})
    if not found:
        value, files, cacheable = compiler(file, operator_class)
        digests = {f: diskcache.digest(f) for f in files}
        if not cacheable:
            return value
        if persist:
            diskcache.put(key, value, digests)
    with _lock:
        _memory[key] = (digests, value)
    return value


def clear_memory() -> None:
    """Forget the in-process entries (tests)."""
    with _lock:
        _memory.clear()


# ------------------------------------------------------------------ materialisation
LOOP_VALUES_CLASS = "airflow_provider_stepcab.dag_factory.loops:StepcabLoopValuesOperator"
BUILD_CLASS = "airflow_provider_stepcab.operators.build:StepcabBuildImagesOperator"

#: "module:Class" -> class, filled as specs are materialised (import once per process)
_classes: dict[str, Any] = {}


def register_class(path: str, cls: Any) -> None:
    """Make ``path`` resolve to ``cls`` without importing (classes not importable by name)."""
    _classes[path] = cls


def operator_class(path: str) -> Any:
    """The class named by ``"package.module:Class"`` (or ``package.module.Class``)."""
    cls = _classes.get(path)
    if cls is None:
        module, sep, name = path.partition(":")
        if not sep:
            module, _, name = path.rpartition(".")
        cls = _classes[path] = getattr(importlib.import_module(module), name)
    return cls


def make_params(specs: list) -> dict:
    """``{name: Param}`` from ``[name, has_default, default, description, schema], ...]``."""
    from airflow.sdk import Param

    out = {}
    for name, has_default, default, description, schema in specs:
        out[name] = Param(default, description=description, **schema) if has_default \
            else Param(description=description, **schema)
    return out


def _task(node: dict, loop_value: Any) -> Any:
    kwargs = dict(node["kw"])
    if node.get("loop"):
        kwargs["loop_value"] = loop_value
    op = operator_class(node["cls"])(**kwargs)
    if node.get("loop") and "loop_value" not in op.template_fields:
        # the mapped value must be resolved per map index like a templated field
        op.template_fields = (*op.template_fields, "loop_value")
    return op


def _level(level: dict, loop_value: Any) -> tuple:
    """Create the nodes of ``level`` and wire its edges; return ``(heads, tails)``."""
    made: dict[str, tuple] = {}
    for label, node in level["nodes"]:
        kind = node["k"]
        if kind == "task":
            t = _task(node, loop_value)
            made[label] = (t, t)
        elif kind == "loop":
            made[label] = _loop(node)
        else:
            from airflow.sdk import TaskGroup

            with TaskGroup(group_id=node["id"], tooltip=node.get("tooltip") or "") as group:
                _level(node["level"], loop_value)
            made[label] = (group, group)
    has_up, has_down = set(), set()
    for up, down in level["edges"]:
        made[up][1] >> made[down][0]
        has_up.add(down)
        has_down.add(up)
    heads = [made[lbl][0] for lbl in made if lbl not in has_up]
    tails = [made[lbl][1] for lbl in made if lbl not in has_down]
    return heads, tails


def _loop(node: dict) -> tuple:
    """A mapped TaskGroup; returns ``(head, tail)``."""
    from airflow.sdk import task_group

    values_task = None
    if node.get("values_task") is not None:
        values_task = operator_class(LOOP_VALUES_CLASS)(**node["values_task"])
        values: Any = values_task.output
    else:
        values = list(node["values"])

    def body(loop_value: Any) -> None:
        _level(node["level"], loop_value)

    body.__name__ = node["id"]
    group = task_group(group_id=node["id"], prefix_group_id=node["prefix"],
                       tooltip=node.get("tooltip") or "")(body).expand(loop_value=values)
    if values_task is not None:
        values_task >> group
    return (values_task or group), group


def materialize(spec: dict, *, dag_class: Optional[Any] = None) -> Any:
    """Create the Airflow DAG described by ``spec`` (see the module docstring)."""
    if dag_class is None:
        from airflow.sdk import DAG as dag_class  # noqa: N811

    dag = dag_class(dag_id=spec["dag_id"], auto_register=False, **spec["dag_kwargs"])
    with dag:
        body = spec["body"]
        if body.get("k") == "loop":
            _loop(body)
        else:
            _level(body, None)
        if spec.get("build") is not None:
            roots = list(dag.roots)
            build = operator_class(BUILD_CLASS)(**spec["build"])
            for root in roots:
                build >> root
    # Params go on the DAG only now: every operator created inside a DAG deep-copies the DAG's
    # params into its own (once per class of its hierarchy), which is quadratic in recipe size.
    # Airflow merges DAG params into the task context at run time (``process_params``: dag.params,
    # then task.params, then conf), so tasks without a copy behave the same and serialise smaller.
    dag.params = make_params(spec["params"])
    return dag
