"""Dependency inference between the steps of one recipe (``opts.airflow.parallel: dataflow``).

Stimela runs steps one after the other. With ``parallel: dataflow`` the DAG factory instead links
a step only to the earlier steps it needs, so independent steps run concurrently. Step ``B``
depends on an earlier step ``A`` of the same recipe when (statically, at parse time):

1. a value of ``B`` (its ``params`` or its ``skip`` formula, lists/dicts searched) reads
   ``previous.*`` (``A`` is the step right before ``B``) or ``steps.A.*`` (globs such as
   ``steps.image-*.x`` match every earlier label), through a formula (``=...``) or a ``{}``
   substitution;
2. ``B`` reads ``recipe.X`` where the recipe parameter ``X`` is an alias of an *output* of ``A``
   (``aliases: {X: [A.out]}``) or a recipe output;
3. ``A`` and ``B`` use the same file and at least one of them writes it. Files are the values of
   file-typed parameters (``File``, ``Directory``, ``MS``, ``URI`` and lists of them): outputs and
   ``writable`` inputs write, other inputs read. A value is compared as a normalised literal path
   or, when it is computed, by the ``recipe.*`` names it reads (``ms: =recipe.ms`` in two steps
   is the same file); an alias ``X: [A.ms, B.ms]`` makes ``A.ms`` and ``B.ms`` the same file too.
   Read-after-write, write-after-write and write-after-read all order the two steps. An
   ``implicit`` file output (``{current.prefix}-image.fits``) names the file its value gives with
   the step's literal params (a ``=GLOB(...)`` one: every path its pattern matches).

A ``dynamic_schema`` cab's parameters are those its hook gives for the step's literal values, with
nested params flattened (cult-cargo's wsclean adds its image outputs, quartical its ``K.*`` terms):
the schema ``stepcab validate`` checks the step against (:func:`step_schema_and_params`).

A value that cannot be analysed (a formula that does not parse) makes ``B`` depend on every
earlier step. ``root.*``/``parent.*`` name outer recipes (handled at the outer level, where the
nested recipe is one unit); ``current``, ``info``, ``self`` and ``config`` never create edges.
The result is transitively reduced.
"""

from __future__ import annotations

import fnmatch
import os
import re
from typing import Any, Iterable

from airflow_provider_stepcab.recipe.model import UNSET

_FILE_WORDS = ("File", "Directory", "MS", "URI")
_GLOB = re.compile(r"^=\s*GLOB\s*\((.*)\)\s*$", re.DOTALL)


def value_references(value: Any) -> set[str]:
    """Dotted names read by a recipe value (formula, ``{}`` string, or containers of them).

    :raises Exception: (any) when a formula or substitution does not parse.
    """
    from airflow_provider_stepcab.recipe.formula import formula_references
    from airflow_provider_stepcab.recipe.subst import subst_references

    out: set[str] = set()
    if isinstance(value, str):
        if value.startswith("=") and not value.startswith("=="):
            out |= formula_references(value)
        elif "{" in value:
            out |= subst_references(value[1:] if value.startswith("==") else value)
    elif isinstance(value, (list, tuple)):
        for v in value:
            out |= value_references(v)
    elif isinstance(value, dict):
        for v in value.values():
            out |= value_references(v)
    return out


def _is_file_param(param: Any) -> bool:
    dtype = getattr(param, "dtype", None)
    if dtype is not None and hasattr(dtype, "contains_files"):
        try:
            return bool(dtype.contains_files())
        except Exception:  # noqa: BLE001
            pass
    text = str(getattr(param, "dtype_str", "") or "")
    return any(w in text.replace("[", " ").replace("]", " ").replace(",", " ").split() for w in _FILE_WORDS)


def _alias_targets(recipe: Any) -> dict[tuple[str, str], str]:
    """``(step label, param) -> recipe param`` for every alias of ``recipe``."""
    out: dict[tuple[str, str], str] = {}
    for alias, targets in (getattr(recipe, "aliases", None) or {}).items():
        for target in targets if isinstance(targets, (list, tuple)) else [targets]:
            label, _, pname = str(target).partition(".")
            for lbl in recipe.steps:
                if lbl == label or fnmatch.fnmatchcase(lbl, label):
                    out[(lbl, pname)] = alias
    return out


def _file_tokens(value: Any, refs: set[str]) -> set[str]:
    tokens = {"recipe." + r.split(".")[1] for r in refs if r.startswith("recipe.")}
    if not refs:
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(v, str) and v and not v.startswith("="):
                tokens.add("path:" + os.path.normpath(v))
    return tokens


def step_schema_and_params(step: Any) -> tuple[dict, set, dict]:
    """``(schema, output names, params)`` of a step as its parameters are checked: a ``dynamic_schema`` cab's
    schema is the one its hook gives for the step's literal values, with the params flattened by it
    (``K: {type: delay}`` -> ``K.type``), by the function ``stepcab validate`` uses
    (:func:`~airflow_provider_stepcab.recipe.dynamic_schema.step_schema`)."""
    params = dict(step.params or {})
    cargo = step.cargo
    if cargo is None:
        return {}, set(), params
    if step.cab is not None and step.cab.dynamic_schema:
        from airflow_provider_stepcab.recipe.dynamic_schema import step_schema
        from airflow_provider_stepcab.recipe.errors import Problems

        schema, _, params, _ = step_schema(step.cab, params, Problems(), step.param_locs)
        return dict(schema), {n for n, p in schema.items() if p.is_output}, params
    return dict(cargo.schema), set(cargo.outputs), params


def _implicit_tokens(param: Any, current: dict) -> set[str]:
    """Tokens of an implicit file output (``{current.prefix}-image.fits``, ``=GLOB(...)``): the
    path it names with the step's literal values, a ``glob:`` pattern for a ``GLOB``."""
    from airflow_provider_stepcab.recipe.evaluation import NS, Unresolved, evaluate

    value = param.implicit
    if not isinstance(value, str):
        return set()
    kind = "path:"
    match = _GLOB.match(value)
    if match:
        kind, value = "glob:", match.group(1).strip().strip("'\"")
    result = evaluate(value, {"current": NS(current)})
    if isinstance(result, Unresolved) or not isinstance(result, str) or not result:
        return set()
    return {kind + os.path.normpath(result)}


def _step_io(label: str, step: Any, aliases: dict, schema: dict, outputs: set,
             params: dict) -> tuple[set, set, set, bool]:
    """``(refs, reads, writes, opaque)`` of one step (see the module docstring), given its
    :func:`step_schema_and_params`."""
    from airflow_provider_stepcab.recipe.deferred import contains_deferred

    refs: set[str] = set()
    opaque = False
    aliased = {pname: alias for (lbl, pname), alias in aliases.items() if lbl == label}
    for pname, alias in aliased.items():
        if pname not in params:
            refs.add(f"recipe.{alias}")
    for value in list(params.values()) + ([step.skip] if isinstance(step.skip, str) else []):
        try:
            refs |= value_references(value)
        except Exception:  # noqa: BLE001 - an unparsable value: be conservative
            opaque = True
    reads: set[str] = set()
    writes: set[str] = set()
    if step.cargo is None:
        return refs, reads, writes, opaque
    current = {n: p.default for n, p in schema.items()
               if p.default is not UNSET and p.default is not None and not contains_deferred(p.default)}
    current.update({n: v for n, v in params.items() if not contains_deferred(v)})
    implicit = [n for n, p in schema.items() if n in outputs and isinstance(p.implicit, str) and _is_file_param(p)]
    for pname in dict.fromkeys([*aliased, *params, *implicit]):
        param = schema.get(pname)
        if param is None or not _is_file_param(param):
            continue
        tokens: set[str] = set()
        if pname in aliased:
            tokens.add(f"recipe.{aliased[pname]}")
        value = params.get(pname, UNSET)
        if value is not None and value is not UNSET:
            try:
                tokens |= _file_tokens(value, value_references(value))
            except Exception:  # noqa: BLE001
                pass
        elif pname in implicit:
            tokens |= _implicit_tokens(param, current)
        if pname in outputs or getattr(param, "writable", False):
            writes |= tokens
        else:
            reads |= tokens
    return refs, reads, writes, opaque


def _overlap(a: set, b: set) -> bool:
    """Do two sets of file tokens share a file (a ``glob:`` pattern matches a ``path:``)?"""
    if a & b:
        return True
    globs = [(x[5:], y) for x in a for y in b if x.startswith("glob:") and y.startswith("path:")]
    globs += [(y[5:], x) for x in a for y in b if y.startswith("glob:") and x.startswith("path:")]
    return any(fnmatch.fnmatchcase(path[5:], pattern) for pattern, path in globs)


def infer_dependencies(recipe: Any) -> dict[str, list[str]]:
    """Return ``{label: [upstream labels]}`` for the steps of ``recipe`` (one level, see module doc)."""
    labels = list(recipe.steps)
    aliases = _alias_targets(recipe)
    schemas = {lbl: step_schema_and_params(recipe.steps[lbl]) for lbl in labels}
    output_aliases: dict[str, set[str]] = {}
    for (lbl, pname), alias in aliases.items():
        if pname in schemas[lbl][1]:
            output_aliases.setdefault(alias, set()).add(lbl)
    io = {lbl: _step_io(lbl, recipe.steps[lbl], aliases, *schemas[lbl]) for lbl in labels}
    deps: dict[str, set[str]] = {}
    for i, label in enumerate(labels):
        earlier = labels[:i]
        refs, reads, writes, opaque = io[label]
        need: set[str] = set(earlier) if opaque else set()
        for ref in refs:
            head, _, rest = ref.partition(".")
            if head == "previous" and earlier:
                need.add(earlier[-1])
            elif head == "steps" and rest:
                name = rest.split(".")[0]
                need |= {e for e in earlier if e == name or fnmatch.fnmatchcase(e, name)}
            elif head == "recipe" and rest:
                need |= {e for e in output_aliases.get(rest.split(".")[0], ()) if e in earlier}
        for e in earlier:
            _, r2, w2, _ = io[e]
            if _overlap(w2, reads) or _overlap(w2, writes) or _overlap(r2, writes):
                need.add(e)
        need.discard(label)
        deps[label] = need
    return transitive_reduction(labels, deps)


def transitive_reduction(order: Iterable[str], deps: dict[str, set[str]]) -> dict[str, list[str]]:
    """Drop edges implied by longer paths; keeps ``order`` for the lists."""
    order = list(order)
    closure: dict[str, set[str]] = {}
    for label in order:  # deps only point backwards, so one pass in order builds the closure
        closure[label] = set()
        for d in deps.get(label, ()):
            closure[label] |= {d} | closure.get(d, set())
    out: dict[str, list[str]] = {}
    for label in order:
        direct = deps.get(label, set())
        implied = set().union(*(closure.get(d, set()) for d in direct)) if direct else set()
        out[label] = [d for d in order if d in direct and d not in implied]
    return out
