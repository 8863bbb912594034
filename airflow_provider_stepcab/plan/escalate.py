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

Pods use the same rules (``backend.kube.retry_resources``, memory only, in Kubernetes quantities)
through :func:`raise_pod_memory`: after an ``OOMKilled`` try the container's memory limit (and
request) grows. Amounts are parsed by :mod:`.quantities` (:data:`SLURM_UNITS`, :data:`KUBE_UNITS`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from . import quantities as Q

#: which failure raises which resource
CAUSES = {"mem": ("OUT_OF_MEMORY", "OOMKilled"), "time": ("TIMEOUT",)}
RESOURCES = tuple(CAUSES)


class EscalationError(ValueError):
    """Invalid ``retry_resources`` (the message names the key)."""


def parse_time_limit(text: Any) -> Optional[float]:
    """Slurm ``--time`` values → seconds (:func:`.quantities.time_limit_seconds`); ``None`` for
    ``UNLIMITED``/empty; :class:`EscalationError` when malformed."""
    try:
        return Q.time_limit_seconds(text)
    except ValueError as exc:
        raise EscalationError(str(exc)) from None


@dataclass(frozen=True)
class Units:
    """How a scheduler writes each resource: ``{resource: (parse to a number, render)}``."""

    name: str
    parsers: Mapping[str, Any]

    def amount(self, resource: str, value: Any, key: str) -> float:
        parse, _render = self.parsers[resource]
        try:
            amount = parse(value)
        except ValueError as exc:
            raise EscalationError(f"{key}: {exc}") from None
        if amount is None or amount <= 0:
            what = "memory size" if resource == "mem" else "time limit"
            raise EscalationError(f"{key}: '{value}' is not a {what}")
        return float(amount)

    def render(self, resource: str, amount: float) -> str:
        return self.parsers[resource][1](amount)


#: Slurm: ``--mem`` sizes (bare number = MiB, binary units) and ``--time`` limits
SLURM_UNITS = Units("slurm", {"mem": (lambda v: Q.memory_bytes(v, "M"), Q.format_mem_option),
                              "time": (Q.time_limit_seconds, Q.format_duration)})
#: Kubernetes: memory quantities (``512Mi``, ``4Gi``; ``4G`` = 4·10⁹ bytes); pods have no time limit to raise
KUBE_UNITS = Units("kube", {"mem": (Q.kube_quantity, Q.format_kube_memory)})


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


def parse_retry_resources(section: Any, where: str = "backend.slurm.retry_resources",
                          units: Units = SLURM_UNITS) -> dict:
    """``retry_resources`` mapping → ``{resource: Rule}`` (amounts in ``units``' syntax);
    raises :class:`EscalationError`."""
    if section in (None, {}):
        return {}
    if not isinstance(section, Mapping):
        raise EscalationError(f"{where}: expected a mapping of mem/time rules, got {section!r}")
    rules = {}
    for resource, spec in section.items():
        key = f"{where}.{resource}"
        if resource not in units.parsers:
            raise EscalationError(f"{key}: unknown resource (one of {', '.join(units.parsers)})")
        if isinstance(spec, (list, tuple)):
            if not spec:
                raise EscalationError(f"{key}: an empty ladder")
            rules[resource] = Rule(resource, ladder=tuple(units.amount(resource, v, f"{key}[{i}]") for i, v in enumerate(spec)))
            continue
        if not isinstance(spec, Mapping) or "factor" not in spec:
            raise EscalationError(f"{key}: expected {{factor: N, max: ...}} or a list of amounts, got {spec!r}")
        extra = set(spec) - {"factor", "max"}
        if extra:
            raise EscalationError(f"{key}.{sorted(extra)[0]}: unknown key (factor, max)")
        factor = spec["factor"]
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or factor < 1:
            raise EscalationError(f"{key}.factor: expected a number >= 1, got {factor!r}")
        ceiling = units.amount(resource, spec["max"], f"{key}.max") if spec.get("max") is not None else None
        rules[resource] = Rule(resource, factor=float(factor), ceiling=ceiling)
    return rules


def failure_counts(states: Any) -> dict:
    """``{resource: k}`` from the final states of the earlier tries (``["OUT_OF_MEMORY", "FAILED"]``)."""
    states = list(states)
    return {r: sum(1 for s in states if s in causes) for r, causes in CAUSES.items()}


def escalate(rules: Mapping[str, Rule], requested: Mapping[str, Any], counts: Mapping[str, int],
             fallback: Optional[Mapping[str, Any]] = None, units: Units = SLURM_UNITS) -> dict:
    """The raised requests for this try → ``{resource: {"from", "to", "why"}}`` (only those raised).

    :param requested: the step's own ``mem``/``time`` requests (``units``' syntax; missing: unknown).
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
        base = units.amount(resource, text, resource) if text not in (None, "") else None
        kk = k
        if base is None and fallback and fallback.get(resource) not in (None, ""):
            try:
                base, kk = units.amount(resource, fallback[resource], resource), 1
            except EscalationError:
                base = None
        new = rule.amount(base, kk)
        if new is None or (base is not None and new <= base):
            continue
        why = f"{k} earlier {'/'.join(CAUSES[resource])} " + ("try" if k == 1 else "tries")
        rule_text = (f"ladder {[units.render(resource, a) for a in rule.ladder]}" if rule.ladder else
                     f"factor {rule.factor:g}" + (f", max {units.render(resource, rule.ceiling)}" if rule.ceiling else ""))
        out[resource] = {"from": units.render(resource, base) if base is not None else "unset",
                         "to": units.render(resource, new), "why": f"{why}; rule {rule_text}"}
    return out


def raise_pod_memory(rules: Mapping[str, Rule], resources: Mapping[str, Any], oom_tries: int) -> tuple:
    """A pod container's ``resources`` after ``oom_tries`` earlier ``OOMKilled`` tries →
    ``(resources, raised)`` (``raised`` as :func:`escalate` gives it; ``{}``: unchanged).

    The base is the memory **limit** (what the kernel enforces; the request when no limit is set).
    The limit becomes the raised amount and the request grows by the same ratio, never above the
    new limit (a ladder without any base sets the limit alone). ``rules`` come from
    :func:`parse_retry_resources` with :data:`KUBE_UNITS`.
    """
    limits, requests = dict(resources.get("limits") or {}), dict(resources.get("requests") or {})
    base_text = limits.get("memory") or requests.get("memory")
    raised = escalate({k: v for k, v in rules.items() if k == "mem"}, {"mem": base_text}, {"mem": oom_tries},
                      units=KUBE_UNITS)
    if not raised:
        return dict(resources), {}
    new = KUBE_UNITS.amount("mem", raised["mem"]["to"], "mem")
    out = copy.deepcopy(dict(resources))
    if limits.get("memory") or not requests.get("memory"):
        out.setdefault("limits", {})["memory"] = raised["mem"]["to"]
    if requests.get("memory"):
        base = KUBE_UNITS.amount("mem", base_text, "mem")
        request = KUBE_UNITS.amount("mem", requests["memory"], "mem")
        out.setdefault("requests", {})["memory"] = Q.format_kube_memory(min(request * new / base, new))
    return out, raised


__all__ = ["Rule", "Units", "SLURM_UNITS", "KUBE_UNITS", "raise_pod_memory", "EscalationError", "parse_retry_resources", "parse_time_limit", "failure_counts", "escalate",
           "CAUSES", "RESOURCES"]
