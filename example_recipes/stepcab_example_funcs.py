"""Python functions used by the ``python`` flavour cabs of ``python-cabs.yml``.

Stimela calls ``func(**inputs)`` in a fresh interpreter; the returned value becomes the
cab's output(s). The native backend puts this file's folder on ``PYTHONPATH``.
"""

from __future__ import annotations


def word_stats(file: str, min_length: int = 1) -> dict:
    """Count the words of ``file`` that have at least ``min_length`` letters.

    :returns: ``{"count": ..., "longest": ...}`` (the cab declares ``output_dict: true``).
    """
    with open(file) as f:
        words = [w for w in f.read().split() if len(w) >= min_length]
    print(f"read {len(words)} words from {file}")
    return {"count": len(words), "longest": max(words, key=len) if words else ""}


def scale(value: float, factor: float = 2.0) -> float:
    """Multiply ``value`` by ``factor`` (the cab declares ``output: result``)."""
    return value * factor
