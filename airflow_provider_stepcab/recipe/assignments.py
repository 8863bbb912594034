"""Stimela's ``assign`` / ``assign_based_on`` model (Stimela 2.1.4 ``Recipe.update_assignments``).

A recipe keeps one mutable ``recipe`` namespace while it runs. Every time assignments are
updated (once when the recipe starts, and for every step: the recipe's own, then the step's, then
the recipe's again after the step), Stimela:

1. merges the ``assign`` block *as written* into the namespace, then evaluates its entries in
   order, each result replacing its raw value (so later entries see earlier results);
2. for each ``assign_based_on`` base variable, in order, looks its value up (the namespace, then the
   input's default, then ``config.``), picks the matching case (or ``DEFAULT``) and does the same
   with that block — so a value assigned in step 1 selects a case, and a case can provide what an
   ``assign`` entry needs at the next update;
3. evaluates everything accumulated once more, and dispatches each resolved value: a recipe input →
   the input's default, ``step.param`` → that step's parameter, ``config.x`` → the config, ``log.x`` →
   log options; anything else lives only in the namespace. :attr:`Assigned.kinds` remembers which
   block (``assign`` or ``assign_based_on``) gave each dispatched key its value (the Step view
   shows it as the value's source).

Because the namespace persists, values settle over successive updates exactly as they do in
Stimela (e.g. an ``assign`` that needs a value ``assign_based_on`` provides resolves at the next
step). Pure: no I/O.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional

from .errors import Loc, Problems

_MISSING = object()


class Assigned:
    """Where dispatched assignments of one recipe level go (step 3 above)."""

    __slots__ = ("defaults", "to_steps", "config", "kinds")

    def __init__(self, defaults: Optional[dict] = None):
        self.defaults: dict = dict(defaults or {})       # recipe input -> assigned default
        self.to_steps: dict = {}                          # step label -> {param: value}
        self.config: dict = {}                            # dotted config key -> value
        self.kinds: dict = {}                             # dispatched key -> "assign" | "assign_based_on"


def _lookup(ns: Mapping, dotted: str) -> Any:
    node: Any = ns
    for part in dotted.split("."):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        else:
            return _MISSING
    return node


def update_assignments(*, recipe: Any, whose: Any, rec: dict, ns: dict, assigned: Assigned,
                       evaluate: Callable[[Any, dict], Any], is_unresolved: Callable[[Any], bool],
                       problems: Optional[Problems] = None, key_path: str = "",
                       loop_var: Optional[str] = None, strict: bool = False) -> None:
    """Apply ``whose``'s (the recipe's or a step's) assignments to the namespace ``rec``.

    :param recipe: the recipe whose namespace ``rec`` is (its schema decides where values go).
    :param ns: the full namespace set (``recipe`` is ``rec``; ``info`` is the current step's).
    :param evaluate: ``evaluate(value, ns)`` → value or an unresolved marker.
    :param strict: report a base variable without value or case (Stimela does at run time; it
        tolerates them while prevalidating).
    """
    assign = getattr(whose, "assign", None) or {}
    based_on = getattr(whose, "assign_based_on", None) or {}
    if not assign and not based_on:
        return
    acc: dict = {}
    kinds: dict = {}
    where = getattr(whose, "loc", None) or getattr(recipe, "loc", None) or Loc("<recipe>", 0)

    def do_assign(block: Mapping, kind: str) -> None:
        rec.update(block)
        for key, raw in block.items():
            value = evaluate(raw, ns)
            rec[key] = value
            acc[key] = value
            kinds[key] = kind

    do_assign(assign, "assign")
    for basevar, cases in based_on.items():
        if basevar in rec:
            value = str(rec[basevar])
        elif loop_var is not None and basevar == loop_var:
            continue
        elif basevar in recipe.schema and recipe.schema[basevar].default is not _unset():
            value = str(recipe.schema[basevar].default)
        elif basevar.startswith("config."):
            found = _lookup(ns.get("config") or {}, basevar[len("config."):])
            value = None if found is _MISSING or found is None else str(found)
        else:
            value = None
        if value is None or is_unresolved(rec.get(basevar)):
            if strict and problems is not None and value is None:
                problems.warning(where, f"{key_path}.assign_based_on.{basevar}",
                                 f"'{basevar}' has no value here (not an input, a variable or a config "
                                 "item): its cases are ignored", "assign-based-on")
            continue
        if not isinstance(cases, Mapping):
            continue
        if value not in cases:
            if "DEFAULT" not in cases:
                if problems is not None:
                    problems.error(where, f"{key_path}.assign_based_on.{basevar}",
                                   f"neither the '{basevar}={value}' case nor a DEFAULT case is defined",
                                   "assign-based-on")
                continue
            value = "DEFAULT"
        block = cases.get(value)
        if isinstance(block, Mapping) and block:
            do_assign(block, "assign_based_on")
    for key in list(acc):
        value = acc[key]
        if not is_unresolved(value):
            value = evaluate(value, ns)
            rec[key] = acc[key] = value
    for key, value in acc.items():
        if is_unresolved(value):
            continue
        head, _, sub = key.partition(".")
        assigned.kinds[key] = kinds[key]
        if key in recipe.schema:
            if value is _unset():
                assigned.defaults.pop(key, None)
            else:
                assigned.defaults[key] = value
        elif sub and head in recipe.steps:
            assigned.to_steps.setdefault(head, {})[sub] = value
        elif sub and head == "config":
            assigned.config[sub] = value


def _unset() -> Any:
    from .model import UNSET
    return UNSET


__all__ = ["Assigned", "update_assignments"]
