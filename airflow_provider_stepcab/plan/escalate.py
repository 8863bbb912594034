"""Retry with more resources: ``backend.slurm.retry_resources``. Pure: no I/O, no Airflow.

After a try ends ``OUT_OF_MEMORY`` (Slurm) or ``OOMKilled`` (pod), the next try asks for more
memory; after ``TIMEOUT``, for more time. Any other failure retries with the same request. The
rule is the recipe's, per resource (nf-core's ``check_max(6.GB * task.attempt, 'memory')`` is the
model: grow with the attempt, never above a ceiling)::

    backend:
      slurm:
        srun_opts: {mem: 1G, time: "00:30:00"}
        retry_resources:
          mem: {factor: 2, max: 16G}          # 1G, then 2G, 4G ... (never above 16G)
          time: ["01:00:00", "04:00:00"]      # or a ladder: the 1st raise, the 2nd, then stays

``k`` counts the earlier tries of this task that failed *for that resource* (an OOM raises memory
only, a TIMEOUT time only): a factor gives ``base * factor**k`` (capped at ``max``), a ladder its
``k``-th entry (the last once exhausted). The base is the step's own request; without one, the
request the failed job actually had (from accounting).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from ..runtime.accounting import format_duration, format_size, parse_size

#: which failure raises which resource
CAUSES = {"mem": ("OUT_OF_MEMORY", "OOMKilled"), "time": ("TIMEOUT",)}
RESOURCES = tuple(CAUSES)


class EscalationError(ValueError):
    """Invalid ``retry_resources`` (the message names the key)."""


def parse_time_limit(text: Any) -> Optional[float]:
    """Slurm ``--time`` values → seconds: ``M``, ``M:S``, ``H:M:S``, ``D-H``, ``D-H:M``, ``D-H:M:S``
    (a bare number is minutes, as ``sbatch`` reads it); ``None`` for ``UNLIMITED``/empty."""
    text = str(text if text is not None else "").strip()
    if not text or text.upper() in ("UNLIMITED", "INFINITE", "INVALID", "PARTITION_LIMIT"):
        return None
    m = re.match(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$", text)
    if not m:
        raise EscalationError(f"'{text}' is not a Slurm time limit ([D-]HH:MM:SS, MM, MM:SS ...)")
    days, a, b, c = m.groups()
    nums = [int(x) for x in (a, b, c) if x is not None]
    if days is not None:  # D-H, D-H:M, D-H:M:S
        h, mi, s = (nums + [0, 0])[:3]
        return int(days) * 86400 + h * 3600 + mi * 60 + s
    if len(nums) == 1:
        return nums[0] * 60.0
    if len(nums) == 2:
        return nums[0] * 60.0 + nums[1]
    return nums[0] * 3600.0 + nums[1] * 60 + nums[2]


def _amount(resource: str, value: Any, key: str) -> float:
    try:
        amount = parse_size(value, "M") if resource == "mem" else parse_time_limit(value)
    except EscalationError as exc:
        raise EscalationError(f"{key}: {exc}") from None
    if amount is None or amount <= 0:
        raise EscalationError(f"{key}: '{value}' is not a {'memory size' if resource == 'mem' else 'time limit'}")
    return float(amount)


def _render(resource: str, amount: float) -> str:
    return format_size(amount) if resource == "mem" else format_duration(amount)


@dataclass(frozen=True)
class Rule:
    """How one resource grows: ``factor`` (with ``ceiling``) or a ``ladder`` of amounts."""

    resource: str
    factor: Optional[float] = None
    ceiling: Optional[float] = None
    ladder: tuple = ()

    def amount(self, base: Optional[float], k: int) -> Optional[float]:
        """The request after ``k`` failures for this resource (``None``: nothing to raise from)."""
        if k <= 0:
            return base
        if self.ladder:
            return self.ladder[min(k, len(self.ladder)) - 1]
        if base is None:
            return None
        value = base * (self.factor or 1) ** k
        return min(value, self.ceiling) if self.ceiling else value


def parse_retry_resources(section: Any, where: str = "backend.slurm.retry_resources") -> dict:
    """``retry_resources`` mapping → ``{resource: Rule}``; raises :class:`EscalationError`."""
    if section in (None, {}):
        return {}
    if not isinstance(section, Mapping):
        raise EscalationError(f"{where}: expected a mapping of mem/time rules, got {section!r}")
    rules = {}
    for resource, spec in section.items():
        key = f"{where}.{resource}"
        if resource not in RESOURCES:
            raise EscalationError(f"{key}: unknown resource (one of {', '.join(RESOURCES)})")
        if isinstance(spec, (list, tuple)):
            if not spec:
                raise EscalationError(f"{key}: an empty ladder")
            rules[resource] = Rule(resource, ladder=tuple(_amount(resource, v, f"{key}[{i}]") for i, v in enumerate(spec)))
            continue
        if not isinstance(spec, Mapping) or "factor" not in spec:
            raise EscalationError(f"{key}: expected {{factor: N, max: ...}} or a list of amounts, got {spec!r}")
        extra = set(spec) - {"factor", "max"}
        if extra:
            raise EscalationError(f"{key}.{sorted(extra)[0]}: unknown key (factor, max)")
        factor = spec["factor"]
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or factor < 1:
            raise EscalationError(f"{key}.factor: expected a number >= 1, got {factor!r}")
        ceiling = _amount(resource, spec["max"], f"{key}.max") if spec.get("max") is not None else None
        rules[resource] = Rule(resource, factor=float(factor), ceiling=ceiling)
    return rules


def failure_counts(states: Any) -> dict:
    """``{resource: k}`` from the final states of the earlier tries (``["OUT_OF_MEMORY", "FAILED"]``)."""
    states = list(states)
    return {r: sum(1 for s in states if s in causes) for r, causes in CAUSES.items()}


def escalate(rules: Mapping[str, Rule], requested: Mapping[str, Any], counts: Mapping[str, int],
             fallback: Optional[Mapping[str, Any]] = None) -> dict:
    """The raised requests for this try → ``{resource: {"from", "to", "why"}}`` (only those raised).

    :param requested: the step's own ``mem``/``time`` options (Slurm syntax; missing: unknown).
    :param counts: :func:`failure_counts` of the earlier tries.
    :param fallback: the failed job's actual request (``{"mem": "1G", "time": "00:10:00"}``), used
        as the base when the step sets none (then it counts as already raised ``k - 1`` times).
    """
    out = {}
    for resource, rule in rules.items():
        k = int(counts.get(resource, 0))
        if k <= 0:
            continue
        text = requested.get(resource)
        base = _amount(resource, text, resource) if text not in (None, "") else None
        kk = k
        if base is None and fallback and fallback.get(resource) not in (None, ""):
            try:
                base, kk = _amount(resource, fallback[resource], resource), 1
            except EscalationError:
                base = None
        new = rule.amount(base, kk)
        if new is None or (base is not None and new <= base):
            continue
        why = f"{k} earlier {'/'.join(CAUSES[resource])} " + ("try" if k == 1 else "tries")
        rule_text = (f"ladder {[_render(resource, a) for a in rule.ladder]}" if rule.ladder else
                     f"factor {rule.factor:g}" + (f", max {_render(resource, rule.ceiling)}" if rule.ceiling else ""))
        out[resource] = {"from": _render(resource, base) if base is not None else "unset",
                         "to": _render(resource, new), "why": f"{why}; rule {rule_text}"}
    return out


__all__ = ["Rule", "EscalationError", "parse_retry_resources", "parse_time_limit", "failure_counts", "escalate",
           "CAUSES", "RESOURCES"]
