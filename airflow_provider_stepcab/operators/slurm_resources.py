"""Resources of a step's job: raise them on retry, account for them afterwards.

* :func:`escalated_options`: before a retry submits, the final Slurm states of the task's earlier
  tries (found by their deterministic job names) decide whether ``mem``/``time`` grow by the
  recipe's ``retry_resources`` rule (:mod:`..plan.escalate`); the change is logged and kept in
  the ``slurm_job`` XCom, then shown in the accounting.
* :func:`job_resources` / :func:`report_resources`: after the job, ``sacct``'s figures with seff's
  efficiencies (:mod:`..runtime.accounting`) as the task log's last lines and the
  ``stepcab_resources`` XCom.
* :func:`report_run_usage`: the same record for a native/container step (its process group's
  ``rusage``) or a pod, carried in ``RunResult.usage``: called by the epilogue of :mod:`.running`.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping, Optional

from airflow_provider_stepcab.plan import escalate as E
from airflow_provider_stepcab.plan import slurm as P
from airflow_provider_stepcab.runtime import accounting as A

#: how long to wait for slurmdbd to have a finished job's final figures
ACCOUNTING_PATIENCE = 20.0


def escalated_options(opts: P.SlurmSubmitOptions, earlier: Mapping[int, Mapping[str, str]], *,
                      accounting: Callable[[str], Optional[dict]], log: Any) -> tuple:
    """``(options for this try, raised)``; ``raised`` is ``{resource: {"from", "to", "why"}}``.

    :param earlier: ``{try_number: {"job_id", "state"}}`` of the earlier tries' jobs.
    :param accounting: ``job_id -> record`` (used only when the step sets no base request).
    """
    rules = E.parse_retry_resources(opts.retry_resources)
    if not rules or not earlier:
        return opts, {}
    counts = E.failure_counts(j["state"] for j in earlier.values())
    if not any(counts.get(r) for r in rules):
        return opts, {}
    requested = P.requested_resources(opts)
    fallback = None
    if any(requested.get(r) in (None, "") and counts.get(r) for r in rules):
        latest = earlier[max(earlier)]
        record = accounting(latest["job_id"]) or {}
        fallback = {"mem": record.get("req_mem"), "time": record.get("timelimit")}
    raised = E.escalate(rules, requested, counts, fallback)
    for resource, change in raised.items():
        log.info("retry with more resources: %s %s -> %s (%s)", resource, change["from"], change["to"], change["why"])
    return P.with_resources(opts, raised), raised


def job_resources(hook: Any, job_id: str, *, patience: float = ACCOUNTING_PATIENCE) -> Optional[dict]:
    """The accounting record of a finished job; waits up to ``patience`` s for slurmdbd's final figures."""
    deadline = time.monotonic() + patience
    record = None
    while True:
        rc, out, _ = hook.run(A.sacct_accounting_command(str(job_id)), check=False)
        if rc == 0:
            record = A.parse_sacct_accounting(out, str(job_id))
        if A.accounting_final(record) or time.monotonic() > deadline:
            return record
        time.sleep(1.0)


def report_resources(record: Optional[dict], *, log: Any, ti: Any, job: Optional[Mapping[str, Any]] = None) -> None:
    """Log ``record`` as the task log's last lines and push it as the ``stepcab_resources`` XCom."""
    if record is None:
        log.warning("no accounting record for this step (sacct unavailable?)")
        return
    if job:
        record = dict(record, attempt=job.get("try_number"), escalated=dict(job.get("escalated") or {}))
    for line in A.format_lines(record):
        log.info("%s", line)
    ti.xcom_push(key=A.XCOM_KEY, value=record)


def resources_xcom(result: Any) -> Optional[dict]:
    """The ``stepcab_resources`` record a local run carries (``RunResult.usage``: a native or
    container process group's ``rusage``, a pod's figures), or ``None``."""
    usage = getattr(result, "usage", None)
    return dict(usage) if usage else None


def report_run_usage(op: Any, result: Any, context: Any) -> None:
    """The epilogue's accounting (:func:`.running.finish_step`): a run that carries its own record
    (:func:`resources_xcom`) ends the task log with it and pushes it as ``stepcab_resources``, with
    this try's number and what ``retry_resources`` raised for it. Slurm steps report ``sacct``'s
    record themselves (their ``RunResult`` carries none)."""
    record = resources_xcom(result)
    if record is None:
        return
    ti = context["ti"]
    job = {"try_number": getattr(ti, "try_number", None), "escalated": record.get("escalated")}
    report_resources(record, log=op.log, ti=ti, job=job)


__all__ = ["escalated_options", "job_resources", "report_resources", "report_run_usage", "resources_xcom", "ACCOUNTING_PATIENCE"]
