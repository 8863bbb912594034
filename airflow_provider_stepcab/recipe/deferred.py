"""Which values are only known after evaluation: formulas (``=...``, not the ``==`` escape) and
``{}``-substitutions, alone or inside a list/mapping.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def is_formula_text(value: Any) -> bool:
    """``=...`` but not the ``==...`` escape."""
    return isinstance(value, str) and value.startswith("=") and not value.startswith("==")


def has_substitution(value: Any) -> bool:
    """A string that Stimela passes through ``{}``-substitution (any ``{``; ``{{`` is an escape)."""
    return isinstance(value, str) and not is_formula_text(value) and "{" in value


def is_deferred(value: Any) -> bool:
    """True for values that are only known after evaluation."""
    return is_formula_text(value) or has_substitution(value)


def contains_deferred(value: Any) -> bool:
    """A formula or substitution, or a list/mapping with one inside."""
    if isinstance(value, (list, tuple)):
        return any(contains_deferred(v) for v in value)
    if isinstance(value, Mapping):
        return any(contains_deferred(v) for v in value.values())
    return is_deferred(value)
