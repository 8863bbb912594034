"""Values as the resolver sees them: :class:`Unresolved` placeholders for what only a run can
know, the :class:`NS`/:class:`LazyNS` namespaces formulas and ``{}`` substitutions walk, and the
evaluation of one value or one parameter set against them (:func:`evaluate`,
:func:`evaluate_params`). :mod:`.resolve` walks recipes with these.

Nothing here does I/O (``GLOB``/``EXISTS`` only with ``allow_io``, at run time).
"""

from __future__ import annotations

import copy
import re
from typing import Any, Iterator, Mapping, Optional

from .data import ConfValue, is_data
from .errors import FormulaError, Loc
from .model import UNSET
from .sources import written_source as _written
from .validate import is_deferred, is_formula_text

_RUNTIME_FUNCS = r"\b(GLOB|EXISTS)\s*\("  # compiled by ``re`` on first use
_MISSING = object()
CLI_LOC = Loc("<command line>", 0)


class Unresolved:
    """A value only known at run time: ``text`` as written, ``reason`` why."""

    def __init__(self, text: Any, reason: str):
        self.text = text
        self.reason = reason

    def __str__(self) -> str:
        return str(self.text)

    def __repr__(self) -> str:
        return f"Unresolved({self.text!r}: {self.reason})"

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, Unresolved) and (self.text, self.reason) == (other.text, other.reason)

    def __hash__(self) -> int:
        return hash((str(self.text), self.reason))


class NS(dict):
    """A namespace dict where dotted keys (``input_ms.path``, ``step.param``) are also reachable
    one component at a time (``ns["input_ms"]["path"]``), as formulas and substitutions walk them."""

    def _sub(self, key: str) -> Optional["NS"]:
        prefix = f"{key}."
        sub = NS({k[len(prefix):]: v for k, v in self.items() if isinstance(k, str) and k.startswith(prefix)})
        return sub or None

    def __contains__(self, key: object) -> bool:
        return dict.__contains__(self, key) or (isinstance(key, str) and self._sub(key) is not None)

    def __getitem__(self, key: Any) -> Any:
        if dict.__contains__(self, key):
            return dict.__getitem__(self, key)
        sub = self._sub(key) if isinstance(key, str) else None
        if sub is None:
            raise KeyError(key)
        return sub

    def get(self, key: Any, default: Any = None) -> Any:
        return self[key] if key in self else default


class LazyNS(NS):
    """An :class:`NS` whose content is loaded the first time it is read (run time: the published
    params of an earlier step task, one request each, so only steps a formula names are fetched).

    Every read goes through :meth:`_fill` first; since ``__iter__`` is overridden, ``dict(x)``,
    ``{**x}`` and pickle copy through ``keys()``/``[]`` too. Only C code reading the dict's size
    directly (``json.dumps``) sees an unloaded one as empty: convert with ``dict(x)`` first.
    """

    __slots__ = ("_load",)

    def __init__(self, load: Any):
        super().__init__()
        self._load = load

    def _fill(self) -> "LazyNS":
        load, self._load = self._load, None
        if load is not None:
            dict.update(self, load() or {})
        return self

    def __getitem__(self, key: Any) -> Any:
        return NS.__getitem__(self._fill(), key)

    def __contains__(self, key: object) -> bool:
        return NS.__contains__(self._fill(), key)

    def __iter__(self):
        return dict.__iter__(self._fill())

    def __len__(self) -> int:
        return dict.__len__(self._fill())

    def __eq__(self, other: Any) -> bool:
        return dict.__eq__(self._fill(), other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return dict.__repr__(self._fill())

    def __reduce__(self):
        return (dict, (dict(self._fill()),))

    def keys(self):
        return dict.keys(self._fill())

    def values(self):
        return dict.values(self._fill())

    def items(self):
        return dict.items(self._fill())

    def copy(self) -> dict:
        return dict(self._fill())


def given_source(value: Any) -> str:
    """Where ``value``, as given to the resolver, comes from (:mod:`.sources`): ``run conf`` for
    trigger-time data (:func:`~.data.as_data`: a :class:`~.data.ConfValue` in it)."""
    return _written(value, data=_holds(value, ConfValue))


def _holds(value: Any, kind: type) -> bool:
    """``value`` is, or holds in a list/tuple item or mapping value, an instance of ``kind``."""
    if isinstance(value, kind):
        return True
    if isinstance(value, (list, tuple)):
        return any(_holds(v, kind) for v in value)
    if isinstance(value, Mapping):
        return any(_holds(v, kind) for v in value.values())
    return False


def _contains_unresolved(value: Any) -> bool:
    return _holds(value, Unresolved)


def _walk(ns: Any, ref: str) -> Any:
    node = ns
    for part in ref.split("."):
        if isinstance(node, Unresolved):
            return node
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        else:
            return _MISSING
    return node


def references(value: Any) -> set:
    """Dotted names read by a value (formula or substitution), recursively."""
    from .subst import subst_references
    if isinstance(value, str):
        if is_formula_text(value):
            from .formula import formula_references
            return set(formula_references(value))
        return set(subst_references(value)) if "{" in value else set()
    if isinstance(value, (list, tuple)):
        return set().union(*[references(v) for v in value]) if value else set()
    if isinstance(value, Mapping):
        return set().union(*[references(v) for v in value.values()]) if value else set()
    return set()


def _has_runtime_funcs(value: Any) -> bool:
    if isinstance(value, str):
        return is_formula_text(value) and bool(re.search(_RUNTIME_FUNCS, value))
    if isinstance(value, (list, tuple)):
        return any(_has_runtime_funcs(v) for v in value)
    if isinstance(value, Mapping):
        return any(_has_runtime_funcs(v) for v in value.values())
    return False


def _deferred(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return any(_deferred(v) for v in value)
    if isinstance(value, Mapping):
        return any(_deferred(v) for v in value.values())
    return is_deferred(value) or (isinstance(value, str) and value.startswith("=="))


def evaluate(value: Any, ns: Mapping, *, allow_io: bool = False) -> Any:
    """Evaluate a value as written, or return :class:`Unresolved` when it depends on run time.
    Data (:func:`.data.is_data`: trigger-time values) is returned as it is."""
    if isinstance(value, Unresolved) or not _deferred(value) or is_data(value):
        return value
    if not allow_io and _has_runtime_funcs(value):
        return Unresolved(value, "uses the filesystem (GLOB/EXISTS): evaluated at run time")
    try:
        refs = references(value)
    except FormulaError as exc:
        return Unresolved(value, f"bad expression: {exc}")
    for ref in sorted(refs):
        if not allow_io and (ref.startswith("config.run.") or ref == "config.run"):
            return Unresolved(value, f"'{ref}' is known at run time")
        hit = _walk(ns, ref)
        if isinstance(hit, Unresolved) or _contains_unresolved(hit):
            return Unresolved(value, f"depends on '{ref}', known at run time")
    from .values import evaluate_value
    try:
        return evaluate_value(value, ns)
    except FormulaError as exc:
        name = getattr(exc, "name", None)
        reason = f"'{name}' is not known before running" if name else str(exc)
        return Unresolved(value, reason)
    except Exception as exc:  # noqa: BLE001 - evaluation errors are reported, not raised
        return Unresolved(value, f"{type(exc).__name__}: {exc}")


def evaluate_params(raw: Mapping[str, Any], base_ns: Mapping[str, Any], *, allow_io: bool = False) -> dict:
    """Evaluate every parameter; ``current.x`` references are resolved first (lazily)."""
    done: dict = {}
    busy: set = set()
    current = NS(raw)

    def get(name: str) -> Any:
        if name in done:
            return done[name]
        if name in busy:
            return Unresolved(raw[name], "circular reference")
        busy.add(name)
        value = raw[name]
        try:
            refs = references(value) if _deferred(value) and not is_data(value) else set()
        except FormulaError:
            refs = set()
        for ref in refs:
            head, _, rest = ref.partition(".")
            if head == "current" and rest:
                for key in raw:
                    if rest == key or rest.startswith(f"{key}."):
                        current[key] = get(key)
        ns = dict(base_ns, current=current)
        result = evaluate(value, ns, allow_io=allow_io)
        busy.discard(name)
        done[name] = current[name] = result
        return result

    for name in list(raw):
        get(name)
    return {k: v for k, v in done.items() if v is not UNSET}
