"""Resource accounting of one step: Slurm's ``sacct`` figures or a process group's ``rusage``.

Pure parsing and arithmetic, no Airflow and no I/O (the caller runs the commands). The record is
a flat JSON-able dict, the same keys for every backend (``None`` where a figure is unknown):

``source``            ``"sacct"``, ``"rusage"`` or ``"kube"`` (a pod's status: no CPU time or MaxRSS)
``job_id``            the Slurm job id (``None`` for a process)
``state``             Slurm's base state (``COMPLETED``, ``OUT_OF_MEMORY`` ...) or ``COMPLETED``/``FAILED``
``exit_code``         ``"rc:signal"`` as sacct prints it, or the process's exit code as text
``elapsed_s``         wall-clock seconds of the job (``Elapsed``)
``total_cpu_s``       user + system CPU seconds of all its steps (``TotalCPU``)
``max_rss_bytes``     the largest resident set of any step (``MaxRSS``)
``req_mem_bytes``     memory requested for the job (``ReqMem``; ``None`` for a process)
``alloc_cpus``        CPUs allocated (``AllocCPUS``; for a process: the CPUs it could use)
``nodelist``          where it ran (``NodeList``, or the host name)
``submit`` / ``start`` / ``end``   ISO times (``Submit``, ``Start``, ``End``)
``queue_wait_s``      ``Start - Submit``
``cpu_efficiency``    percent, as ``seff`` computes it: ``TotalCPU / (AllocCPUS * Elapsed) * 100``
``memory_efficiency`` percent, as ``seff`` computes it: ``MaxRSS / ReqMem * 100`` (the largest
                      step's MaxRSS over the job's whole request; Slurm >= 21.08 prints ``ReqMem`` as
                      the job's total, older versions' ``n``/``c`` suffixes are per node / per CPU)
``timelimit``         ``Timelimit`` as sacct prints it
``note``              (optional) what the figures do not cover (``rusage`` of a podman/docker client)
``attempt``/``escalated``  added by the operator: the try number and what ``retry_resources`` raised

:func:`format_lines` renders the record for the end of a task log; the operator pushes it as the
``stepcab_resources`` XCom (:data:`XCOM_KEY`).
"""

from __future__ import annotations

import datetime as _dt
import re
import shlex
from typing import Any, Mapping, Optional

from ..plan.quantities import format_duration, format_size, parse_duration, parse_size

XCOM_KEY = "stepcab_resources"
SACCT_FIELDS = ("JobIDRaw", "JobName", "State", "ExitCode", "Elapsed", "ElapsedRaw", "TotalCPU", "MaxRSS",
                "ReqMem", "AllocCPUS", "NodeList", "Submit", "Start", "End", "Timelimit", "NNodes")


def sacct_accounting_command(job_id: str) -> str:
    """One ``sacct`` printing the job and all its steps with every figure of the record."""
    cmd = ["sacct", "--noheader", "--parsable2", f"--jobs={job_id}", "--format=" + ",".join(SACCT_FIELDS)]
    return " ".join(shlex.quote(c) for c in cmd)


def _iso(text: str) -> Optional[str]:
    text = (text or "").strip()
    return text if re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d$", text) else None


def _seconds_between(a: Optional[str], b: Optional[str]) -> Optional[float]:
    if not a or not b:
        return None
    return (_dt.datetime.fromisoformat(b) - _dt.datetime.fromisoformat(a)).total_seconds()


def _req_mem(text: str, alloc_cpus: Optional[int], nnodes: Optional[int]) -> Optional[int]:
    """``ReqMem`` → the job's total request (old ``c``/``n`` suffixes: per CPU / per node)."""
    value = parse_size(text, "M")
    if value is None:
        return None
    suffix = (text or "").strip()[-1:].lower()
    if suffix == "c" and alloc_cpus:
        return value * alloc_cpus
    if suffix == "n" and nnodes:
        return value * nnodes
    return value


def efficiency(used: Optional[float], available: Optional[float]) -> Optional[float]:
    """``used / available * 100`` rounded to 2 decimals (``None`` when either is unknown or 0)."""
    if used is None or not available:
        return None
    return round(100.0 * used / available, 2)


def cpu_efficiency(total_cpu_s: Optional[float], alloc_cpus: Optional[int], elapsed_s: Optional[float]) -> Optional[float]:
    """seff's CPU efficiency: CPU time over core-walltime (``AllocCPUS * Elapsed``)."""
    if alloc_cpus is None or elapsed_s is None:
        return None
    return efficiency(total_cpu_s, alloc_cpus * elapsed_s)


def parse_sacct_accounting(text: str, job_id: str) -> Optional[dict]:
    """The record of ``job_id`` from :func:`sacct_accounting_command`'s output (``None`` if absent).

    The job line gives the state, times, request and ``TotalCPU`` (the sum over its steps);
    ``MaxRSS`` is the largest of its steps' (``batch``, ``extern``, ``0`` ...).
    """
    job: Optional[dict] = None
    max_rss: Optional[int] = None
    for line in text.splitlines():
        parts = line.rstrip("\n").split("|")
        if len(parts) < len(SACCT_FIELDS):
            continue
        row = dict(zip(SACCT_FIELDS, parts))
        raw = row["JobIDRaw"].strip()
        if raw.split(".")[0] != str(job_id):
            continue
        rss = parse_size(row["MaxRSS"], "K")
        if rss is not None:
            max_rss = rss if max_rss is None else max(max_rss, rss)
        if raw == str(job_id):
            job = row
    if job is None:
        return None
    alloc = int(job["AllocCPUS"]) if job["AllocCPUS"].strip().isdigit() else None
    nnodes = int(job["NNodes"]) if job["NNodes"].strip().isdigit() else None
    elapsed = float(job["ElapsedRaw"]) if job["ElapsedRaw"].strip().isdigit() else parse_duration(job["Elapsed"])
    total_cpu = parse_duration(job["TotalCPU"])
    req = _req_mem(job["ReqMem"], alloc, nnodes)
    submit, start, end = _iso(job["Submit"]), _iso(job["Start"]), _iso(job["End"])
    return {
        "source": "sacct", "job_id": str(job_id), "job_name": job["JobName"],
        "state": (job["State"].split() or [""])[0].rstrip("+").upper(), "exit_code": job["ExitCode"],
        "elapsed_s": elapsed, "elapsed": job["Elapsed"], "total_cpu_s": total_cpu, "total_cpu": job["TotalCPU"],
        "max_rss_bytes": max_rss, "req_mem_bytes": req, "req_mem": job["ReqMem"], "alloc_cpus": alloc,
        "nodelist": job["NodeList"], "submit": submit, "start": start, "end": end,
        "queue_wait_s": _seconds_between(submit, start), "timelimit": job["Timelimit"],
        "cpu_efficiency": cpu_efficiency(total_cpu, alloc, elapsed),
        "memory_efficiency": efficiency(max_rss, req),
    }


def accounting_final(record: Optional[dict]) -> bool:
    """Whether slurmdbd has the finished job's final figures: a terminal state, ``End``, a
    readable ``ReqMem`` and, for a job that started, its steps' ``MaxRSS`` (right after the end
    sacct can show the job without its steps, or ``ReqMem`` as ``16?``)."""
    if not record or not record.get("end") or record.get("state") in ("PENDING", "RUNNING", "COMPLETING"):
        return False
    return record.get("req_mem_bytes") is not None and (record.get("max_rss_bytes") is not None
                                                        or not record.get("start"))


def rusage_record(usage: Any, *, exit_code: Optional[int], started: float, ended: float,
                  cpus: Optional[int] = None, host: str = "", mem_limit: Optional[int] = None) -> dict:
    """The same record for a local process group from ``os.wait4``'s ``resource.struct_rusage``.

    ``ru_maxrss`` (KiB on Linux) is the largest resident set of the leader and the descendants it
    waited for; CPU time is user + system of the same processes. ``started``/``ended`` are epoch
    seconds; ``cpus`` the CPUs it could use (its affinity); ``mem_limit`` an ``RLIMIT_AS``/container
    limit when one was set (else memory efficiency is unknown). Queue wait is 0: nothing queues.
    """
    total_cpu = float(usage.ru_utime + usage.ru_stime) if usage is not None else None
    max_rss = int(usage.ru_maxrss) * 1024 if usage is not None else None
    elapsed = max(0.0, ended - started)

    def iso(t: float) -> str:
        return _dt.datetime.fromtimestamp(t).replace(microsecond=0).isoformat()

    ok = exit_code == 0
    return {
        "source": "rusage", "job_id": None, "job_name": "", "state": "COMPLETED" if ok else "FAILED",
        "exit_code": None if exit_code is None else str(exit_code), "elapsed_s": round(elapsed, 3),
        "elapsed": format_duration(elapsed), "total_cpu_s": None if total_cpu is None else round(total_cpu, 3),
        "total_cpu": format_duration(total_cpu), "max_rss_bytes": max_rss, "req_mem_bytes": mem_limit,
        "req_mem": format_size(mem_limit), "alloc_cpus": cpus, "nodelist": host, "submit": iso(started),
        "start": iso(started), "end": iso(ended), "queue_wait_s": 0.0, "timelimit": "",
        "cpu_efficiency": cpu_efficiency(total_cpu, cpus, elapsed), "memory_efficiency": efficiency(max_rss, mem_limit),
    }


def pod_record(*, pod: str, state: str, exit_code: Optional[int], created: Any, started: Any, finished: Any,
               node: str = "", mem_limit: Optional[float] = None, cpus: Optional[float] = None) -> dict:
    """The record of a pod's step container from its status (no metrics API: ``MaxRSS`` and CPU
    time are unknown). ``created``/``started``/``finished`` are datetimes (any zone; written as this
    machine's local time, like sacct's); ``state`` ``COMPLETED``, ``OOMKilled``, ``FAILED`` ...;
    ``mem_limit`` the container's memory limit in bytes, ``cpus`` its CPU limit."""
    def iso(t: Any) -> Optional[str]:
        if not isinstance(t, _dt.datetime):
            return None
        return (t.astimezone() if t.tzinfo else t).replace(tzinfo=None, microsecond=0).isoformat()

    submit, start, end = iso(created), iso(started), iso(finished)
    elapsed = _seconds_between(start, end)
    return {
        "source": "kube", "job_id": None, "job_name": pod, "state": state,
        "exit_code": None if exit_code is None else str(exit_code), "elapsed_s": elapsed,
        "elapsed": format_duration(elapsed), "total_cpu_s": None, "total_cpu": "", "max_rss_bytes": None,
        "req_mem_bytes": None if mem_limit is None else int(mem_limit), "req_mem": format_size(mem_limit),
        "alloc_cpus": cpus, "nodelist": node, "submit": submit, "start": start, "end": end,
        "queue_wait_s": _seconds_between(submit, start), "timelimit": "", "cpu_efficiency": None,
        "memory_efficiency": None,
    }


def format_lines(record: Mapping[str, Any]) -> list:
    """The record as the last lines of a task log (seff-like)."""
    def pct(v: Any) -> str:
        return "n/a" if v is None else f"{v:.2f}%"

    core_wall = (record.get("alloc_cpus") or 0) * (record.get("elapsed_s") or 0)
    lines = ["resources (%s%s):" % (record.get("source"), f", job {record['job_id']}" if record.get("job_id") else "")]
    lines.append(f"  State: {record.get('state')} (exit code {record.get('exit_code')})  Nodes: {record.get('nodelist')}")
    lines.append(f"  Queue wait: {format_duration(record.get('queue_wait_s')) or 'n/a'}  "
                 f"Elapsed: {format_duration(record.get('elapsed_s')) or 'n/a'}  Time limit: {record.get('timelimit') or 'n/a'}")
    lines.append(f"  CPUs: {record.get('alloc_cpus') or 'n/a'}  CPU utilized: {record.get('total_cpu') or 'n/a'}  "
                 f"CPU efficiency: {pct(record.get('cpu_efficiency'))} of {format_duration(core_wall)} core-walltime")
    lines.append(f"  Memory utilized (MaxRSS): {format_size(record.get('max_rss_bytes')) or 'n/a'}  "
                 f"Memory efficiency: {pct(record.get('memory_efficiency'))} of "
                 f"{format_size(record.get('req_mem_bytes')) or 'n/a'}")
    if record.get("escalated"):
        raised = ", ".join(f"{k} {v['from']} -> {v['to']} ({v['why']})" for k, v in record["escalated"].items())
        lines.append(f"  Raised for this try: {raised}")
    if record.get("note"):
        lines.append(f"  Note: {record['note']}")
    return lines


__all__ = ["XCOM_KEY", "SACCT_FIELDS", "sacct_accounting_command", "parse_sacct_accounting", "parse_duration",
           "format_duration", "parse_size", "format_size", "efficiency", "cpu_efficiency", "accounting_final",
           "rusage_record", "pod_record", "format_lines"]
