"""Memory sizes, time limits and Kubernetes quantities: the one parser of each. Pure, no I/O.

Used wherever a recipe, a trigger-time override or a scheduler's answer carries an amount:
``retry_resources`` (:mod:`.escalate`), the trigger-time limits (:mod:`..operators.trigger_policy`),
pod resources (:mod:`.pod`) and the accounting records (:mod:`..runtime.accounting`).

* **sizes** (Slurm ``--mem``, ``sacct``'s ``MaxRSS``/``ReqMem``, podman ``--memory``): binary units
  ``K``/``M``/``G``/``T``/``P`` (``Ki``/``KiB`` spellings too), a bare number in ``default_unit``;
* **time limits** (Slurm ``--time``): ``M``, ``M:S``, ``H:M:S``, ``D-H``, ``D-H:M``, ``D-H:M:S`` (a bare
  number is minutes, as ``sbatch`` reads it); **durations** (``sacct``'s ``Elapsed``/``TotalCPU``):
  ``[DD-][HH:]MM:SS[.mmm]``;
* **Kubernetes quantities** (``500m``, ``512Mi``, ``4G`` = 4·10⁹, ``1e3``).
"""

from __future__ import annotations

import re
from typing import Any, Optional

_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}
_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([KMGTP]?)(i?B?)?\s*([nc]?)\s*$", re.I)
_TIME_LIMIT = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")
_NO_LIMIT = ("UNLIMITED", "INFINITE", "INVALID", "PARTITION_LIMIT")
_QUANTITY = re.compile(r"^\+?(?P<num>[0-9]+(\.[0-9]*)?|\.[0-9]+)(?P<unit>m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei|[eE][0-9]+)?$")
_QUANTITY_UNITS = {"": 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
                   "Ki": 2 ** 10, "Mi": 2 ** 20, "Gi": 2 ** 30, "Ti": 2 ** 40, "Pi": 2 ** 50, "Ei": 2 ** 60}


def parse_size(text: Any, default_unit: str = "") -> Optional[int]:
    """A size → bytes (binary units): ``66024K``, ``100M``, ``2G``, ``4Gi``, ``1.5G``, ``1000Mn``/
    ``250Mc`` (sacct's old per-node / per-CPU ``ReqMem``: the suffix is ignored here); a number is
    in ``default_unit``. ``None`` when ``text`` is not a size (empty, ``16?``, words)."""
    if isinstance(text, bool):
        return None
    if isinstance(text, (int, float)):
        return int(text * _UNITS[default_unit.upper()])
    m = _SIZE.match(str(text or ""))
    if not m:
        return None
    unit = (m.group(2) or default_unit).upper()
    return int(float(m.group(1)) * _UNITS[unit])


def memory_bytes(text: Any, default_unit: str = "M") -> int:
    """:func:`parse_size` for a value that must be a size (a bare number is MiB, as for ``--mem``).

    :raises ValueError: ``'lots' is not a memory size (a number with K, M, G or T)``.
    """
    value = parse_size(text, default_unit)
    if value is None or str(text).strip()[-1:].lower() in ("n", "c"):
        raise ValueError(f"'{text}' is not a memory size (a number with K, M, G or T)")
    return value


def format_size(nbytes: Optional[float]) -> str:
    """Bytes → Slurm's size syntax in the largest whole-ish unit (``512M``, ``1.5G``)."""
    if nbytes is None:
        return ""
    for unit in ("T", "G", "M", "K"):
        if nbytes >= _UNITS[unit]:
            value = nbytes / _UNITS[unit]
            return (f"{value:.0f}" if value >= 100 or value == int(value) else f"{value:.1f}".rstrip("0")) + unit
    return f"{int(nbytes)}"


def format_mem_option(nbytes: float) -> str:
    """Bytes → a ``--mem`` value Slurm accepts: a whole number in the largest unit that divides
    it exactly, else whole MiB rounded up (``sbatch`` refuses ``1.5G``)."""
    nbytes = int(-(-float(nbytes) // 1))
    for unit in ("T", "G", "M"):
        if nbytes % _UNITS[unit] == 0:
            return f"{nbytes // _UNITS[unit]}{unit}"
    return f"{-(-nbytes // _UNITS['M'])}M"


def time_limit_seconds(text: Any) -> Optional[int]:
    """A Slurm ``--time`` value → seconds; ``None`` for ``UNLIMITED``/empty.

    :raises ValueError: ``'soon' is not a Slurm time limit ...``.
    """
    if isinstance(text, bool):
        raise ValueError(f"'{text}' is not a Slurm time limit (minutes, MM:SS, HH:MM:SS or D-HH:MM:SS)")
    text = str(text if text is not None else "").strip()
    if not text or text.upper() in _NO_LIMIT:
        return None
    m = _TIME_LIMIT.match(text)
    if not m:
        raise ValueError(f"'{text}' is not a Slurm time limit (minutes, MM:SS, HH:MM:SS or D-HH:MM:SS)")
    days, first, second, third = m.groups()
    nums = [int(x) for x in (first, second, third) if x is not None]
    if days is not None:  # D-H, D-H:M, D-H:M:S
        h, mi, s = (nums + [0, 0])[:3]
        return int(days) * 86400 + h * 3600 + mi * 60 + s
    if len(nums) == 1:
        return nums[0] * 60
    if len(nums) == 2:
        return nums[0] * 60 + nums[1]
    return nums[0] * 3600 + nums[1] * 60 + nums[2]


def parse_duration(text: str) -> Optional[float]:
    """sacct durations → seconds: ``[DD-][HH:]MM:SS[.mmm]`` (``00:02.075``, ``1-02:03:04``);
    ``None`` for empty / ``UNLIMITED`` / ``INVALID``."""
    text = (text or "").strip()
    if not text or not re.match(r"^[0-9:.\-]+$", text):
        return None
    days = 0
    if "-" in text:
        d, text = text.split("-", 1)
        days = int(d)
    parts = [float(p) for p in text.split(":")]
    while len(parts) < 3:
        parts.insert(0, 0.0)
    h, m, s = parts[-3:]
    return days * 86400 + h * 3600 + m * 60 + s


def format_duration(seconds: Optional[float]) -> str:
    """Seconds → ``[D-]HH:MM:SS`` (Slurm's ``--time`` syntax; whole seconds, rounded up)."""
    if seconds is None:
        return ""
    total = int(-(-float(seconds) // 1))
    days, rest = divmod(total, 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    return (f"{days}-" if days else "") + f"{h:02d}:{m:02d}:{s:02d}"


def kube_quantity(value: Any) -> float:
    """A Kubernetes quantity (``500m``, ``4Gi``, ``1.5``, ``4G``) as a number.

    :raises ValueError: ``'lots' is not a Kubernetes quantity (e.g. 500m, 2, 512Mi, 4Gi)``.
    """
    m = _QUANTITY.match(str(value).strip()) if not isinstance(value, bool) else None
    if not m:
        raise ValueError(f"'{value}' is not a Kubernetes quantity (e.g. 500m, 2, 512Mi, 4Gi)")
    unit = m.group("unit") or ""
    scale = 10 ** int(unit[1:]) if unit[:1] in ("e", "E") and len(unit) > 1 else _QUANTITY_UNITS[unit]
    return float(m.group("num")) * scale


def format_kube_memory(nbytes: float) -> str:
    """Bytes → a memory quantity: whole ``Gi``/``Mi``/``Ki`` when exact, else ``Mi`` rounded up."""
    nbytes = int(-(-float(nbytes) // 1))
    for unit in ("Ti", "Gi", "Mi", "Ki"):
        if nbytes % _QUANTITY_UNITS[unit] == 0:
            return f"{nbytes // int(_QUANTITY_UNITS[unit])}{unit}"
    return f"{-(-nbytes // (1 << 20))}Mi"


__all__ = ["parse_size", "memory_bytes", "format_size", "format_mem_option", "time_limit_seconds",
           "parse_duration", "format_duration", "kube_quantity", "format_kube_memory"]
