"""Stimela 2 formulas: values written as ``=expression``.

Public API (others code against it)::

    is_formula("=recipe.x")                      -> True
    parse_formula("=IF(recipe.x, 1, 2)")         -> Expr (cached; FormulaSyntaxError with column)
    evaluate_formula("=recipe.x + 1", ns)        -> value, possibly model.UNSET
    formula_references("=IFSET(recipe.ms)")      -> {"recipe.ms"}

``text`` may be given with or without its leading ``=``; ``==text`` is Stimela's
escape for the literal string ``=text``. The grammar is in
:mod:`.formula_parser`, the functions in :mod:`.formula_eval`. A formula that
evaluates to :data:`~.model.UNSET` means "unset this parameter".

Errors are all :class:`~.errors.FormulaError`; subclasses tell them apart:
:class:`FormulaSyntaxError` (``.column``, ``.text``), :class:`MissingNameError`
(``.name``), :class:`AbortError` (``ABORT()`` was called).
"""

from __future__ import annotations

import functools
from typing import Any, Optional

from .errors import FormulaError
from .formula_eval import LOG_NAMESPACE_KEY, AbortError, Evaluator
from .formula_parser import (FUNCTIONS, Call, Expr, FormulaSyntaxError, Index, Lookup, Str, Unary,
                             Binary, parse)
from .subst import MissingNameError, subst_references, substitute

__all__ = [
    "is_formula", "parse_formula", "evaluate_formula", "formula_references", "FormulaError",
    "FormulaSyntaxError", "MissingNameError", "AbortError", "FUNCTIONS", "LOG_NAMESPACE_KEY", "Expr",
]


def is_formula(v: Any) -> bool:
    """True for a string starting with ``=`` but not ``==`` (the escape for a literal ``=``)."""
    return isinstance(v, str) and v.startswith("=") and not v.startswith("==")


def _check_str(text: Any) -> None:
    if not isinstance(text, str):
        raise FormulaError(f"a formula must be a string, not {type(text).__name__}: {text!r}")


def _is_escape(text: Any) -> bool:
    return isinstance(text, str) and text.startswith("==")


def parse_formula(text: str) -> Expr:
    """Parse a formula (with or without its leading ``=``); results are cached.

    :raises FormulaSyntaxError: (a :class:`FormulaError`) naming the 1-based column and the text.
    """
    _check_str(text)
    return parse(text)


def evaluate_formula(text: str, ns: Any, *, cwd: Optional[str] = None, log: Any = None) -> Any:
    """Evaluate a formula over namespaces ``ns``.

    :param text: ``"=expr"`` or ``"expr"``; ``"==x"`` gives the literal ``"=x"`` (substituted).
    :param ns: mapping of namespaces (``recipe``, ``current``, ``steps`` ...), nested mappings.
    :param cwd: directory that relative ``GLOB``/``EXISTS`` patterns are relative to.
    :param log: logger for ``LOG*()``: a :class:`logging.Logger`-like object or a callable
        ``(level, message)``; default ``ns["__log__"]``, else the module logger.
    :returns: the value; :data:`~.model.UNSET` means "unset the parameter".
    :raises MissingNameError: an undefined name reached the result (``.name`` says which).
    :raises AbortError: ``ABORT()`` was evaluated.
    :raises FormulaError: any other failure (syntax, ``ERROR()``, bad operand types ...).
    """
    _check_str(text)
    if _is_escape(text):
        return substitute(text[1:], ns)
    node = parse(text)
    try:
        return Evaluator(ns, cwd=cwd, log=log).evaluate(node)
    except AbortError:
        raise
    except MissingNameError as exc:
        raise MissingNameError(exc.name, f"{exc} (in formula '{text}')") from None
    except FormulaError as exc:
        raise FormulaError(f"{exc} (in formula '{text}')") from None
    except RecursionError:
        raise FormulaError(f"evaluation of '{text}' nested too deeply") from None
    except Exception as exc:  # operator/function errors: TypeError, ZeroDivisionError ...
        raise FormulaError(f"evaluation of '{text}' failed: {type(exc).__name__}: {exc}") from None


def _walk(node: Any, out: set[str], nosubst: bool = False) -> None:
    kind = type(node)
    if kind is Lookup:
        out.add(node.name)
    elif kind is Str:
        if not nosubst:
            out.update(subst_references(node.text))
    elif kind is Binary:
        _walk(node.left, out)
        _walk(node.right, out)
    elif kind is Unary:
        _walk(node.operand, out)
    elif kind is Index:
        _walk(node.base, out)
        _walk(node.index, out)
    elif kind is Call:
        for arg in node.args:
            _walk(arg, out, nosubst=node.name == "NOSUBST")


@functools.lru_cache(maxsize=4096)
def _references(text: str) -> frozenset:
    out: set[str] = set()
    if _is_escape(text):
        return frozenset(subst_references(text[1:]))
    _walk(parse(text), out)
    return frozenset(out)


def formula_references(text: str) -> set[str]:
    """Dotted names a formula reads, e.g. ``{"recipe.ms", "previous.out", "steps.s1.x"}``.

    Includes names inside ``{}`` in its string literals (except under ``NOSUBST``); globs are
    kept as written (``steps.image-*.x``); ``x[i]`` reads ``x``. Names read indirectly (through a
    looked-up string that itself holds ``{...}``) cannot be known here.

    :raises FormulaSyntaxError: the formula does not parse.
    """
    _check_str(text)
    return set(_references(text))
