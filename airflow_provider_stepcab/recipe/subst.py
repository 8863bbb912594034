"""``{}``-substitutions over namespaces, as Stimela 2.1.4 does them.

A string containing ``{`` is formatted like :meth:`str.format`, except that a
field name is looked up in the namespaces ``ns`` (a mapping of namespace name to
nested mappings: ``recipe``, ``root``, ``parent``, ``current``, ``previous``,
``steps``, ``info``/``self``, ``config`` ...)::

    substitute("{recipe.prefix}-{current.size:05d}.fits", ns)

Rules (matching Stimela):

* ``{{`` and ``}}`` are literal braces; a string without ``{`` is returned as is
  (so a lone ``}`` is harmless).
* Lookups are dotted (``{recipe.phase-calibrators}``: names may contain ``-``)
  and may index (``{recipe.files[0]}``).
* A ``*`` or ``?`` in a name that is not itself a key picks the alphanumerically
  *last* matching key (``{steps.image-*.x}``).
* A looked-up string that contains ``{`` is itself substituted (cycles are errors).
* A missing name raises :class:`MissingNameError` naming it, unless ``forgive``
  is given, in which case the field is replaced by that text.

:func:`.values.evaluate_value` is the single entry point for "a parameter value as
written in YAML" (``=...`` formulas, ``==...`` escapes, ``{}`` strings, lists/dicts element-wise).
"""

from __future__ import annotations

import _string  # stdlib helper behind str.format's field-name parsing
import fnmatch
import string
from collections.abc import Mapping
from typing import Any, Iterable, Optional

from .errors import FormulaError

__all__ = [
    "MissingNameError", "substitute", "subst_references", "lookup",
    "split_field_name",
]

_MISSING = object()


class MissingNameError(FormulaError):
    """A name used by a formula or ``{}``-substitution is not defined.

    :ivar name: the dotted name as written (``recipe.x``).
    """

    def __init__(self, name: str, message: Optional[str] = None):
        self.name = name
        super().__init__(message or f"missing name '{name}'")


def _is_mapping(obj: Any) -> bool:
    return isinstance(obj, Mapping) or (hasattr(obj, "keys") and hasattr(obj, "__getitem__")
                                        and not isinstance(obj, (str, bytes, list, tuple)))


def _mapping_get(obj: Any, key: Any) -> Any:
    """``obj[key]`` for a mapping, with ``*``/``?`` globs; :data:`_MISSING` if absent."""
    try:
        if key in obj:
            return obj[key]
    except TypeError:
        return _MISSING
    if isinstance(key, str) and ("*" in key or "?" in key):
        names = sorted(k for k in fnmatch.filter([k for k in obj.keys() if isinstance(k, str)], key))
        if names:
            return obj[names[-1]]
    return _MISSING


def lookup(ns: Any, parts: Iterable[Any], name: Optional[str] = None) -> Any:
    """Follow ``parts`` (keys, or ints for sequence indices) down from ``ns``.

    :raises MissingNameError: when a part is not there (the message says which).
    """
    parts = list(parts)
    name = name or ".".join(str(p) for p in parts)
    value = ns
    for i, part in enumerate(parts):
        if _is_mapping(value):
            found = _mapping_get(value, part)
        elif isinstance(part, int) and isinstance(value, (list, tuple)):
            found = value[part] if -len(value) <= part < len(value) else _MISSING
        else:
            found = _MISSING
        if found is _MISSING:
            where = ".".join(str(p) for p in parts[:i + 1])
            if where == name:
                raise MissingNameError(name)
            raise MissingNameError(name, f"missing name '{name}' ('{where}' is not defined)")
        value = found
    return value


def split_field_name(field: str) -> tuple[str, list[tuple[bool, Any]]]:
    """Split a ``str.format`` field name into its first name and ``(is_attr, key)`` parts."""
    try:
        first, rest = _string.formatter_field_name_split(field)
        return first, list(rest)
    except ValueError as exc:
        raise FormulaError(f"invalid substitution field '{{{field}}}': {exc}") from None


def _field_parts(field: str) -> list[Any]:
    first, rest = split_field_name(field)
    if isinstance(first, int) or first == "":
        raise FormulaError(f"positional field '{{{field}}}' in a substitution: use a name such as "
                           "'{recipe.x}'")
    return [first] + [key for _, key in rest]


#: widths/precisions and results up to these sizes never need the configured limits looked up
_SMALL_WIDTH = 100
_SMALL_RESULT = 10_000


def _check_spec(format_spec: str) -> None:
    """Refuse a width or precision above ``max_format_width`` (``{x:>999999999}`` would build a
    gigabyte string)."""
    widest, run = 0, 0
    for ch in format_spec:
        run = run * 10 + ord(ch) - 48 if "0" <= ch <= "9" else 0
        widest = max(widest, run)
    if widest > _SMALL_WIDTH:
        from .limits import current_limits, setting_names

        limit = current_limits().max_format_width
        if widest > limit:
            raise FormulaError(f"format width/precision {widest} in '{{:{format_spec}}}' is larger than "
                               f"{limit} ({setting_names('max_format_width')})")


def _check_length(result: str) -> str:
    if len(result) > _SMALL_RESULT:
        from .limits import current_limits, setting_names

        limit = current_limits().max_string_length
        if len(result) > limit:
            raise FormulaError(f"substitution result of {len(result)} characters is longer than {limit} "
                               f"({setting_names('max_string_length')})")
    return result


class _Formatter(string.Formatter):
    """A :class:`string.Formatter` that resolves field names in the namespaces.

    A looked-up string that is itself substituted is done once per top-level call (``memo``), so
    strings referring to each other many times cost linear time.
    """

    def __init__(self, ns: Any, forgive: Optional[str], stack: list[str], memo: dict):
        self.ns, self.forgive, self.stack, self.memo = ns, forgive, stack, memo

    def get_field(self, field_name, args, kwargs):  # noqa: D401 - Formatter API
        parts = _field_parts(field_name)
        name = ".".join(str(p) for p in parts)
        try:
            value = lookup(self.ns, parts, name)
        except MissingNameError:
            if self.forgive is None:
                raise
            return _Forgiven(self.forgive), field_name
        if isinstance(value, str) and "{" in value and not _is_data(value):
            key = (name, value)
            done = self.memo.get(key)
            if done is None:
                done = self.memo[key] = _substitute(value, self.ns, self.forgive, self.stack, name, self.memo)
            value = done
        return value, field_name

    def convert_field(self, value, conversion):
        return value if isinstance(value, _Forgiven) else super().convert_field(value, conversion)

    def format_field(self, value, format_spec):
        if isinstance(value, _Forgiven):
            return str(value)
        if format_spec:
            _check_spec(format_spec)
        return format(value, format_spec)


class _Forgiven(str):
    """The text standing in for an unresolved field (format spec and conversion ignored)."""


def _substitute(text: str, ns: Any, forgive: Optional[str], stack: list[str], name: str = "",
                memo: Optional[dict] = None) -> str:
    if name:
        if name in stack:
            chain = " -> ".join(stack[stack.index(name):] + [name])
            raise FormulaError(f"cyclic substitution: {chain}")
        stack.append(name)
    try:
        return _check_length(_Formatter(ns, forgive, stack, {} if memo is None else memo).vformat(text, (), {}))
    finally:
        if name:
            stack.pop()


def substitute(text: str, ns: Any, *, forgive: Optional[str] = None) -> str:
    """Perform ``{}``-substitutions on ``text`` using namespaces ``ns``.

    :param text: the string; returned unchanged unless it contains ``{``.
    :param ns: mapping of namespace name to (nested) mappings.
    :param forgive: if given, an unresolved field is replaced by this text instead of raising.
    :raises MissingNameError: a name is not defined.
    :raises FormulaError: bad syntax, bad format spec, cyclic substitution.
    """
    if not isinstance(text, str) or "{" not in text:
        return text
    try:
        return _substitute(text, ns, forgive, [])
    except FormulaError as exc:
        if isinstance(exc, MissingNameError):
            raise MissingNameError(exc.name, f"{exc} in '{text}'") from None
        raise FormulaError(f"{exc} in '{text}'") from None
    except RecursionError:
        raise FormulaError(f"substitution nested too deeply in '{text}'") from None
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        raise FormulaError(f"substitution of '{text}' failed: {type(exc).__name__}: {exc}") from None


def _dotted(field: str) -> str:
    """The dotted name a field reads: string keys join with dots, an int index ends it."""
    first, rest = split_field_name(field)
    parts = [str(first)]
    for _, key in rest:
        if isinstance(key, int):
            break
        parts.append(str(key))
    return ".".join(parts)


def _collect(text: str, out: set[str], depth: int = 0) -> None:
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise FormulaError(f"invalid substitution '{text}': {exc}") from None
    for _literal, field, spec, _conv in parsed:
        if field is None:
            continue
        if field == "" or field[0].isdigit():
            continue  # positional: not a name (substitute() would reject it)
        out.add(_dotted(field))
        if spec and "{" in spec and depth < 2:
            _collect(spec, out, depth + 1)


def subst_references(text: str) -> set[str]:
    """Dotted names read by the ``{}``-substitutions in ``text`` (e.g. ``{"recipe.ms"}``).

    Globs are kept as written (``steps.image-*.x``); an index ends the name
    (``{recipe.files[0]}`` reads ``recipe.files``). Positional fields (``{0}``, ``{}``, as in
    cab ``format`` policies) are not names and are ignored.

    :raises FormulaError: the text is not a valid format string (unbalanced braces ...).
    """
    out: set[str] = set()
    if isinstance(text, str) and "{" in text:
        _collect(text, out)
    return out


def _is_data(value: str) -> bool:
    """A trigger-time value (:mod:`.data`): never substituted again."""
    from .data import is_data
    return is_data(value)
