"""What the Recipe view shows of one recipe, as plain data, cached like the DAG specs.

:func:`recipe_summary` gives::

    {"recipe", "file", "line", "info", "files": [every file read, includes too],
     "lines": [[depth, text, file, line], ...],    # the recipe as loaded, one row per key/item
     "steps": [{"path", "label", "depth", "kind": "cab"|"recipe", "cab", "recipe", "info",
                "file", "line", "loop": {"var", "over", "scatter"} | None}, ...],
     "sub_recipes": {name: rows},                 # the lib recipes its steps use, as loaded
     "problems": [[file, line, key, message, severity], ...]}

It is built once per content of the files the recipe was read from (the content-validated
:mod:`~airflow_provider_stepcab.diskcache`, as :mod:`..dag_factory.spec` caches the DAG specs):
the API server never loads a recipe again for a request while its files are unchanged.
No Airflow import.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from airflow_provider_stepcab import diskcache

FORMAT = 1
#: longest scalar shown on one row of the loaded recipe
MAX_TEXT = 300

_memory: dict = {}
_lock = threading.Lock()


def _scalar(value: Any) -> str:
    text = repr(value) if not isinstance(value, str) else value
    text = " ".join(text.split()) if "\n" in text else text
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + "…"


def tree_rows(node: Any, depth: int = 0) -> list:
    """``[[depth, text, file, line], ...]``: ``node`` (a loaded mapping/list) one key or item a row,
    each with the file and line it came from (includes resolved)."""
    rows: list = []
    if isinstance(node, dict):
        for key, value in node.items():
            loc = node.key_loc(key) if hasattr(node, "key_loc") else getattr(node, "loc", None)
            nested = isinstance(value, (dict, list)) and value
            text = f"{key}:" if nested else f"{key}: {_scalar(value)}"
            rows.append([depth, text, getattr(loc, "file", None), getattr(loc, "line", None)])
            if nested:
                rows.extend(tree_rows(value, depth + 1))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            loc = node.item_loc(index) if hasattr(node, "item_loc") else getattr(node, "loc", None)
            nested = isinstance(value, (dict, list)) and value
            rows.append([depth, "-" if nested else f"- {_scalar(value)}", getattr(loc, "file", None),
                         getattr(loc, "line", None)])
            if nested:
                rows.extend(tree_rows(value, depth + 1))
    return rows


def _loc(obj: Any) -> tuple:
    loc = getattr(obj, "loc", None)
    return getattr(loc, "file", None), getattr(loc, "line", None)


def step_rows(recipe: Any, prefix: tuple = ()) -> list:
    """The steps of ``recipe`` in order, sub-recipes' steps after their step (module docstring)."""
    out = []
    for label, step in recipe.steps.items():
        path = prefix + (label,)
        file, line = _loc(step)
        sub = step.recipe
        loop = None
        if sub is not None and sub.for_loop is not None:
            fl = sub.for_loop
            loop = {"var": fl.var, "over": fl.over if isinstance(fl.over, (str, int, float)) else list(fl.over),
                    "scatter": fl.scatter}
        out.append({"path": ".".join(path), "label": label, "depth": len(prefix),
                    "kind": "cab" if step.cab is not None else "recipe",
                    "cab": step.cab_name or getattr(step.cab, "name", None) if step.cab is not None else None,
                    "recipe": step.recipe_name or getattr(sub, "name", None) if sub is not None else None,
                    "info": step.info or "", "file": file, "line": line, "loop": loop})
        if sub is not None:
            out.extend(step_rows(sub, path))
    return out


def _build(file: str, name: str) -> tuple[dict, list]:
    from airflow_provider_stepcab.recipe.api import load_recipe_result

    result = load_recipe_result(file, name)
    config = result.config
    tree = getattr(config, "tree", None) or {}
    node = ((tree.get("lib") or {}).get("recipes") or {}).get(name)
    if node is None:
        node = tree.get(name)
    recipe = result.recipe
    summary_steps = step_rows(recipe) if recipe is not None else []
    problems = [[p.loc.file, p.loc.line, p.key, p.message, p.severity] for p in result.problems]
    file_, line = _loc(recipe) if recipe is not None else (file, None)
    lib = (tree.get("lib") or {}).get("recipes") or {}
    used = [row["recipe"] for row in summary_steps if row["recipe"] in lib and row["recipe"] != name]
    summary = {"recipe": name, "file": file_ or file, "line": line,
               "info": getattr(recipe, "info", "") or "",
               "files": list(getattr(config, "files", None) or [file]),
               "lines": tree_rows(node) if node is not None else [],
               "steps": summary_steps,
               "sub_recipes": {sub: tree_rows(lib[sub]) for sub in dict.fromkeys(used)},
               "problems": problems}
    return summary, summary["files"]


def recipe_summary(file: str, name: str) -> dict:
    """The summary of recipe ``name`` of ``file`` (module docstring), from memory, disk or built."""
    key = ("ui-recipe", FORMAT, os.path.abspath(file), name, os.environ.get("STIMELA_INCLUDE", ""))
    with _lock:
        hit = _memory.get(key)
    if hit is not None and all(diskcache.digest(f) == d for f, d in hit[0].items()):
        return hit[1]
    found, value, digests = diskcache.get(key)
    if not found:
        value, files = _build(file, name)
        digests = {f: diskcache.digest(f) for f in files}
        diskcache.put(key, value, digests)
    with _lock:
        _memory[key] = (digests, value)
    return value
