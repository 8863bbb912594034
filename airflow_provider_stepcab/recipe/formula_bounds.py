"""Formula operators whose result size the operands choose: bounded (see :mod:`.limits`).

``"x" * 10**9``, ``9 ** 9 ** 9``, ``1 << 10**10`` and ``RANGE(10**9)`` are each a few characters
of a recipe and would take minutes, or all the memory, to evaluate. The results may hold at most
``max_string_length`` items (characters, list items) or integer digits; anything bigger is a
:class:`~.errors.FormulaError` naming the limit.
"""

from __future__ import annotations

import operator
from typing import Any

from .errors import FormulaError

#: results up to this size never need the configured limits looked up
_SMALL = 10_000


def _limit() -> int:
    from .limits import current_limits

    return current_limits().max_string_length


def _refuse(what: str, size: int, limit: int) -> FormulaError:
    from .limits import setting_names

    return FormulaError(f"{what} would have about {size} items/digits, more than {limit} "
                        f"({setting_names('max_string_length')})")


def _check(what: str, size: int) -> None:
    if size > _SMALL:
        limit = _limit()
        if size > limit:
            raise _refuse(what, size, limit)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def mul(left: Any, right: Any) -> Any:
    """``left * right``; a sequence repeated at most to ``max_string_length`` items."""
    for seq, count in ((left, right), (right, left)):
        if isinstance(seq, (str, list, tuple)) and _is_int(count):
            _check("repetition", len(seq) * max(count, 0))
    return operator.mul(left, right)


def power(left: Any, right: Any) -> Any:
    """``left ** right``; an integer result of at most ``max_string_length`` digits."""
    if _is_int(left) and _is_int(right) and right > 0 and abs(left) > 1:
        _check("power", (abs(left).bit_length() - 1) * right * 3 // 10)
    return operator.pow(left, right)


def lshift(left: Any, right: Any) -> Any:
    """``left << right``; at most ``max_string_length`` digits."""
    if _is_int(left) and _is_int(right) and left:
        _check("shift", (left.bit_length() + right) * 3 // 10)
    return operator.lshift(left, right)


def bounded_range(*args: Any) -> list:
    """``list(range(*args))`` of at most ``max_string_length`` items."""
    values = range(*args)
    _check("RANGE()", len(values))
    return list(values)
