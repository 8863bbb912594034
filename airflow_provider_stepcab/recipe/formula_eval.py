"""Evaluator for parsed Stimela formulas (see :mod:`.formula_parser` for the grammar).

Undefined names do not raise at once: they evaluate to a :class:`Missing` value
that propagates through operators and ordinary functions (as Stimela's
``Unresolved`` does when it evaluates step parameters). Tolerant functions
(``IFSET``, ``IF``'s condition, ``VALID``, ``TRY``) act on it; if it reaches the
top, :func:`evaluate` raises :class:`~.subst.MissingNameError` naming the name.
"""

from __future__ import annotations

import glob as _glob
import logging
import operator
import os.path
from typing import Any, Callable, Optional

from . import formula_bounds
from .data import ConfValue
from .errors import FormulaError
from .formula_parser import (Binary, Call, Const, Empty, Expr, Index, Lookup, SelfRef, Str, Unary,
                             Unset)
from .model import UNSET
from .subst import MissingNameError, lookup, substitute

__all__ = ["AbortError", "Missing", "Evaluator", "LOG_NAMESPACE_KEY"]

#: an ``ns`` key that may hold the logger for ``LOG*()``: a :class:`logging.Logger`-like object
#: or a callable ``(level: str, message: str)``.
LOG_NAMESPACE_KEY = "__log__"
_DEFAULT_LOG = logging.getLogger("airflow_provider_stepcab.formula")
_LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
_LOG_OPTIONS = {"no-repeat", "summary", "no-summary", "only-summary"}


class AbortError(FormulaError):
    """Raised by ``ABORT(msg)``: the step should be aborted."""


class Missing:
    """An undefined value (unknown name, failed substitution, no matching CASES)."""

    __slots__ = ("name", "message")

    def __init__(self, name: str, message: str):
        self.name, self.message = name, message

    def __repr__(self) -> str:
        return f"Missing({self.message})"

    def error(self) -> FormulaError:
        return MissingNameError(self.name, self.message) if self.name else FormulaError(self.message)


def _missing_from(exc: FormulaError) -> Missing:
    return Missing(getattr(exc, "name", ""), str(exc))


def _not(x: Any) -> bool:
    return x is UNSET or not x


_UNARY: dict[str, Callable[[Any], Any]] = {
    "+": operator.pos, "-": operator.neg, "~": operator.invert, "not": _not,
}
_BINARY: dict[str, Callable[[Any, Any], Any]] = {
    "**": formula_bounds.power, "*": formula_bounds.mul, "/": operator.truediv, "//": operator.floordiv,
    "%": operator.mod, "+": operator.add, "-": operator.sub, "<<": formula_bounds.lshift,
    ">>": operator.rshift, "&": operator.and_, "^": operator.xor, "|": operator.or_,
    "==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt,
    ">=": operator.ge, "in": lambda x, y: x in y, "not in": lambda x, y: x not in y,
    "and": lambda x, y: x and y, "or": lambda x, y: x or y,
}
#: name -> (min args, max args or None, callable) for functions that evaluate all their
#: arguments and return the first Missing one, if any
_SIMPLE: dict[str, tuple[int, Optional[int], Callable[..., Any]]] = {
    "LIST": (0, None, lambda *x: list(x)),
    "LEN": (1, 1, len),
    "RANGE": (1, 3, formula_bounds.bounded_range),
    "MIN": (1, None, min),
    "MAX": (1, None, max),
    "GETITEM": (2, 2, lambda x, y: x[y]),
    "IS_STR": (1, 1, lambda x: isinstance(x, str)),
    "IS_NUM": (1, 1, lambda x: isinstance(x, (bool, int, float, complex))),
}


def _nargs(name: str, args: tuple, lo: int, hi: Optional[int]) -> None:
    if len(args) < lo or (hi is not None and len(args) > hi):
        if hi is None:
            want = f"at least {lo}"
        elif lo == hi:
            want = str(lo)
        else:
            want = f"{lo} to {hi}"
        raise FormulaError(f"{name}() expects {want} argument(s), got {len(args)}")


class Evaluator:
    """Evaluates an :data:`~.formula_parser.Expr` over namespaces ``ns``.

    :param ns: mapping of namespaces.
    :param cwd: directory that ``GLOB``/``EXISTS`` patterns are relative to (default: process cwd).
    :param log: logger for ``LOG*()`` (default: ``ns["__log__"]``, else module logging).
    """

    def __init__(self, ns: Any, *, cwd: Optional[str] = None, log: Any = None):
        self.ns, self.cwd = ns, cwd
        if log is None:
            try:
                log = ns.get(LOG_NAMESPACE_KEY)
            except Exception:  # not a mapping with .get
                log = None
        self.log = log if log is not None else _DEFAULT_LOG

    # ---------------------------------------------------------------- nodes
    def eval(self, node: Expr, nosubst: bool = False) -> Any:
        kind = type(node)
        if kind is Const:
            return node.value
        if kind is Str:
            return self._string(node.text, nosubst)
        if kind is Lookup:
            return self._lookup(node, nosubst)
        if kind is Unset:
            return UNSET
        if kind is Empty:
            return ""
        if kind is Binary:
            left, right = self.eval(node.left), self.eval(node.right)  # both sides, like Stimela
            for v in (left, right):
                if isinstance(v, Missing):
                    return v
            return _BINARY[node.op](left, right)
        if kind is Unary:
            value = self.eval(node.operand)
            return value if isinstance(value, Missing) else _UNARY[node.op](value)
        if kind is Index:
            base, index = self.eval(node.base), self.eval(node.index)
            for v in (base, index):
                if isinstance(v, Missing):
                    return v
            return base[index]
        if kind is Call:
            return getattr(self, "f_" + node.name)(node.name, node.args)
        if kind is SelfRef:
            raise FormulaError("SELF is only meaningful as the second argument of IFSET()")
        raise FormulaError(f"cannot evaluate {node!r}")  # pragma: no cover

    def _string(self, text: str, nosubst: bool = False) -> Any:
        if text == "UNSET":  # Stimela maps this exact string to UNSET
            return UNSET
        if nosubst or "{" not in text:
            return text
        try:
            return substitute(text, self.ns)
        except FormulaError as exc:
            return _missing_from(exc)

    def _lookup(self, node: Lookup, nosubst: bool = False) -> Any:
        try:
            value = lookup(self.ns, node.parts, node.name)
        except MissingNameError as exc:
            missing = _missing_from(exc)
            if any(c in node.parts[-1] for c in "-*"):
                missing.message += (" (note: '-' and '*' are part of a name in a lookup; write"
                                    " 'recipe.a - 1' with spaces to subtract or multiply)")
            return missing
        if isinstance(value, str):  # a trigger-time value (ConfValue) is data: never substituted
            return self._string(value, nosubst or isinstance(value, ConfValue))
        return value

    def _strict(self, node: Expr) -> Any:
        """Evaluate; a Missing result raises."""
        value = self.eval(node)
        if isinstance(value, Missing):
            raise value.error()
        return value

    # ---------------------------------------------------------------- generic functions
    def _simple(self, name: str, args: tuple) -> Any:
        lo, hi, func = _SIMPLE[name]
        _nargs(name, args, lo, hi)
        values = [self.eval(a) for a in args]
        for v in values:
            if isinstance(v, Missing):
                return v
        return func(*values)

    f_LIST = f_LEN = f_RANGE = f_MIN = f_MAX = f_GETITEM = f_IS_STR = f_IS_NUM = _simple

    def _one_path(self, name: str, args: tuple) -> Any:
        _nargs(name, args, 1, 1)
        path = self.eval(args[0])
        if isinstance(path, Missing):
            return path
        if not isinstance(path, str):
            raise FormulaError(f"{name}() expects a string, got a {type(path).__name__}")
        if name == "DIRNAME":
            return os.path.dirname(path)
        if name == "BASENAME":
            return os.path.basename(path)
        return os.path.splitext(path)[1 if name == "EXTENSION" else 0]

    f_DIRNAME = f_BASENAME = f_EXTENSION = f_STRIPEXT = _one_path

    def _sort(self, name: str, args: tuple) -> Any:
        _nargs(name, args, 1, 1)
        values = self.eval(args[0])
        if isinstance(values, Missing):
            return values
        if not isinstance(values, (list, tuple)):
            raise FormulaError(f"{name}() expects a list, got a {type(values).__name__}")
        return sorted(values, reverse=name == "RSORT")

    f_SORT = f_RSORT = _sort

    def _glob(self, name: str, args: tuple) -> Any:
        _nargs(name, args, 1, 1)
        pattern = self.eval(args[0])
        if isinstance(pattern, Missing):
            return pattern
        if self.cwd is not None and isinstance(pattern, str) and not os.path.isabs(pattern):
            found = _glob.glob(pattern, root_dir=self.cwd)
        else:
            found = _glob.glob(pattern)
        return sorted(found) if name == "GLOB" else bool(found)

    f_GLOB = f_EXISTS = _glob

    def f_NOSUBST(self, name: str, args: tuple) -> Any:
        _nargs(name, args, 1, 1)
        return self.eval(args[0], nosubst=True)

    # ---------------------------------------------------------------- control flow (lazy)
    def f_IF(self, name: str, args: tuple) -> Any:
        _nargs(name, args, 2, 4)
        cond = self.eval(args[0])
        if isinstance(cond, Missing):
            return self.eval(args[3]) if len(args) == 4 else cond
        if cond:
            return self.eval(args[1])
        # Stimela 2.1.4: IF(c, x) with a false c gives True
        return self.eval(args[2]) if len(args) > 2 else True

    def f_IFSET(self, name: str, args: tuple) -> Any:
        _nargs(name, args, 1, 3)
        value = self.eval(args[0])
        if isinstance(value, Missing) or value is UNSET:
            return self.eval(args[2]) if len(args) == 3 else UNSET
        if len(args) == 1 or isinstance(args[1], SelfRef) or args[1] == Str("SELF", args[1].pos):
            return value
        return self.eval(args[1])

    def f_CASES(self, name: str, args: tuple) -> Any:
        default = args[-1] if len(args) % 2 else None
        for i in range(0, len(args) - 1, 2):
            cond = self.eval(args[i])
            if isinstance(cond, Missing):
                return cond
            if cond:
                return self.eval(args[i + 1])
        if default is None:
            return Missing("", "no match in CASES()")
        return self.eval(default)

    def f_VALID(self, name: str, args: tuple) -> Any:
        _nargs(name, args, 1, 1)
        try:
            value = self.eval(args[0])
        except (TypeError, ValueError, IndexError):
            return False
        return False if isinstance(value, Missing) else value

    def f_TRY(self, name: str, args: tuple) -> Any:
        _nargs(name, args, 1, None)
        for arg in args:
            value = self.eval(arg)
            if not isinstance(value, Missing):
                return value
        return value

    def f_ERROR(self, name: str, args: tuple) -> Any:
        _nargs(name, args, 1, 1)
        msg = self.eval(args[0])
        raise FormulaError(f"ERROR: {msg.message if isinstance(msg, Missing) else msg}")

    def f_ABORT(self, name: str, args: tuple) -> Any:
        _nargs(name, args, 1, 1)
        msg = self.eval(args[0])
        raise AbortError(f"ABORT: {msg.message if isinstance(msg, Missing) else msg}")

    # ---------------------------------------------------------------- logging
    def f_LOG(self, name: str, args: tuple, extra: tuple = ()) -> Any:
        _nargs(name, args, 1, None)
        msg = self.eval(args[0])
        if isinstance(msg, Missing):
            return msg
        opts: set[str] = set()
        for arg in args[1:]:
            value = self.eval(arg)
            if isinstance(value, Missing):
                return value
            opts |= {o.strip() for o in str(value).split(",")}
        opts |= set(extra)
        levels = opts & set(_LOG_LEVELS)
        if len(levels) > 1:
            raise FormulaError(f"{name}(): multiple levels specified: {sorted(levels)}")
        unknown = opts - set(_LOG_LEVELS) - _LOG_OPTIONS
        if unknown:
            raise FormulaError(f"{name}(): unknown option(s): {sorted(unknown)}")
        level = levels.pop() if levels else "info"
        method = getattr(self.log, level, None)
        if callable(method):
            method(str(msg))
        elif callable(self.log):
            self.log(level, str(msg))
        else:
            raise FormulaError(f"{name}(): the logger {self.log!r} cannot log at level '{level}'")
        return msg

    def f_LOG_INFO(self, name: str, args: tuple) -> Any:
        return self.f_LOG(name, args, ("info",))

    def f_LOG_WARNING(self, name: str, args: tuple) -> Any:
        return self.f_LOG(name, args, ("warning",))

    def f_LOG_ERROR(self, name: str, args: tuple) -> Any:
        return self.f_LOG(name, args, ("error",))

    def f_LOG_CRITICAL(self, name: str, args: tuple) -> Any:
        return self.f_LOG(name, args, ("critical",))

    # ---------------------------------------------------------------- top level
    def evaluate(self, node: Expr) -> Any:
        """Evaluate ``node``; a Missing result raises :class:`~.subst.MissingNameError`."""
        return self._strict(node)
