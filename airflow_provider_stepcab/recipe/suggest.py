""""Did you mean ...?" hints for misspelled or stale keys."""

from __future__ import annotations

import difflib
from typing import Iterable


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """``"did you mean 'auto_build'?"`` for the closest known name, or ``""`` if none is close."""
    close = difflib.get_close_matches(str(name), [str(k) for k in known], n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else ""


def unknown_key_message(what: str, name: str, known: Iterable[str], where: str = "") -> str:
    """``unknown backend option 'x' (not in Y; did you mean 'z'?)``."""
    known = list(known)
    hint = did_you_mean(name, known)
    inside = "; ".join(part for part in (where, hint) if part)
    return f"unknown {what} '{name}'" + (f" ({inside})" if inside else "")
