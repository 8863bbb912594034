"""DAG and task identifiers derived from recipe files, recipe names and step labels.

Pure functions (no Airflow import): the operators use them too, to map a task back to its step.

**Sanitising rule** (:func:`sanitize_id`): every character outside ``[A-Za-z0-9_-]`` becomes ``_``
(dots too: Airflow uses ``.`` to join TaskGroup ids, and group ids may not contain dots); an empty
result becomes ``_``. Ids longer than :data:`MAX_ID_LENGTH` are cut and get an 8-hex-digit hash of
the original text appended, so distinct long names stay distinct.

**DAG ids** (:func:`dag_id_for`), with ``stem`` the recipe file name without ``.yml``/``.yaml``:

- the file sets ``DEFAULT: name`` → only that recipe becomes a DAG, with dag_id ``sanitize(stem)``;
- otherwise every recipe of the file becomes a DAG with dag_id ``sanitize(stem)`` when the recipe's
  sanitised name equals the sanitised stem, else ``sanitize(stem) + "__" + sanitize(recipe)``.
  Adding a recipe to a file therefore never renames the DAGs it already had.
- ``opts.airflow.dag_id`` (see :mod:`.settings`) overrides the rule; it is sanitised too.

**Task ids** (:func:`task_id_for`): a cab step at ``step_path`` (labels from the top recipe down,
e.g. ``("cal", "flag")``) is task ``"cal.flag"`` after sanitising each label: every nested recipe
is a TaskGroup whose group id is its sanitised label, and Airflow joins group and task ids with
``.``. The DAG factory reports two sibling labels that sanitise to the same id (``a.b`` and ``a_b``)
as a recipe error instead of inventing suffixes, so that the operators can always compute a step's
task id from its path alone.
"""

from __future__ import annotations

import hashlib
import os
import re
from typing import Iterable, Mapping, Optional

from airflow_provider_stepcab.dag_factory.discovery import RECIPE_SUFFIXES

#: Airflow limits ids to 250 characters.
MAX_ID_LENGTH = 250
_BAD = r"[^A-Za-z0-9_-]"
_GOOD = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


def sanitize_id(text: str, *, max_length: int = MAX_ID_LENGTH) -> str:
    """Turn ``text`` into a valid Airflow dag/task/group id (see the module docstring).

    :param text: a file stem, recipe name or step label.
    :param max_length: longest id returned.
    :return: the sanitised id.
    """
    text = str(text)
    # most labels are already valid: no regular expression (its compilation costs every parse)
    ident = (text if _GOOD.issuperset(text) else re.sub(_BAD, "_", text)) or "_"
    if len(ident) > max_length:
        digest = hashlib.sha1(str(text).encode()).hexdigest()[:8]
        ident = ident[: max_length - 9] + "_" + digest
    return ident


def file_stem(path: str) -> str:
    """Return the file name of ``path`` without a ``.yml``/``.yaml`` suffix."""
    name = os.path.basename(path)
    for suffix in RECIPE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def dag_id_for(recipe_file: str, recipe_name: str, *, is_default: bool = False,
               override: str | None = None) -> str:
    """Return the dag_id of recipe ``recipe_name`` of ``recipe_file``.

    :param recipe_file: path of the recipe file.
    :param recipe_name: the recipe's top-level key.
    :param is_default: the recipe is the file's ``DEFAULT`` (the file gives only this DAG).
    :param override: ``opts.airflow.dag_id`` when set.
    """
    if override:
        return sanitize_id(override)
    stem = sanitize_id(file_stem(recipe_file))
    if is_default or sanitize_id(recipe_name) == stem:
        return stem
    return sanitize_id(f"{stem}__{sanitize_id(recipe_name)}")


def dag_id_may_come_from(dag_id: str, recipe_file: str) -> bool:
    """Tell whether ``recipe_file`` can produce ``dag_id`` by the default rule (no override).

    Used with ``get_parsing_context()`` to skip loading unrelated files when one DAG is wanted.
    """
    stem = sanitize_id(file_stem(recipe_file))
    return dag_id == stem or dag_id.startswith(stem + "__")


def task_id_for(recipe_name: str, step_path: Iterable[str], unrolled: Optional[Mapping[str, int]] = None) -> str:
    """Return the full task id (group prefixes included) of the step at ``step_path``.

    :param recipe_name: the top recipe (unused by the current rule; kept for future rules).
    :param step_path: step labels from the top recipe down to the step.
    :param unrolled: ``{dotted path of a looping recipe ("" for the top): iteration}`` for loops
        unrolled into one TaskGroup per iteration (group id: the iteration), which are on the path.
    """
    path = list(step_path)
    parts = []
    for i, label in enumerate(path):
        index = (unrolled or {}).get(".".join(path[:i]))
        if index is not None:
            parts.append(str(index))
        parts.append(sanitize_id(label))
    return ".".join(parts)


def id_collisions(labels: Iterable[str]) -> list[tuple[str, str]]:
    """Pairs ``(earlier, later)`` of labels that sanitise to the same id."""
    seen: dict[str, str] = {}
    out = []
    for label in labels:
        ident = sanitize_id(label)
        if ident in seen:
            out.append((seen[ident], label))
        else:
            seen[ident] = label
    return out
