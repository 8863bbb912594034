"""``stepcab report DAG_ID RUN_ID``: one DAG run as a self-contained HTML page.

A timeline (one row per task, time across; queue wait hatched before the run, bars coloured by
state) drawn as inline SVG by :func:`render_html`, and a table of the ``stepcab_resources``
records (:mod:`.runtime.accounting`: Slurm's ``sacct`` figures or a process group's ``rusage``)
with CPU and memory efficiencies. No network, no JavaScript, no plotting library.

:func:`collect_run` reads the run's task instances and their ``stepcab_resources`` XComs from the
Airflow metadata database (the configured ``AIRFLOW_HOME``). A task without a record (not a
stepcab step, or a backend without accounting) is drawn from its task instance's start and end.
Times in ``sacct`` records carry no zone; they are read in this machine's local zone.
"""

from __future__ import annotations

import argparse
import datetime as dt
import html
from dataclasses import dataclass
from typing import Any, Optional, Sequence

#: the XCom key of the records (``runtime.accounting.XCOM_KEY``; not imported: the CLI parser stays light)
XCOM_KEY = "stepcab_resources"


def format_duration(seconds: Any) -> str:
    from .runtime.accounting import format_duration as fmt

    return fmt(seconds)


def format_size(nbytes: Any) -> str:
    from .runtime.accounting import format_size as fmt

    return fmt(nbytes)

STATE_COLOURS = {
    "success": "#2e9e44", "COMPLETED": "#2e9e44", "failed": "#d1342f", "FAILED": "#d1342f",
    "upstream_failed": "#f0a04b", "OUT_OF_MEMORY": "#8e44ad", "OOMKilled": "#8e44ad", "TIMEOUT": "#e67e22", "CANCELLED": "#7f8c8d",
    "running": "#3498db", "RUNNING": "#3498db", "skipped": "#c9a0dc", "up_for_retry": "#f1c40f",
    "queued": "#95a5a6", "PENDING": "#95a5a6", "NODE_FAIL": "#c0392b", "PREEMPTED": "#16a085",
}
DEFAULT_COLOUR = "#5d6d7e"


@dataclass
class Row:
    """One task of the run: its times (epoch seconds, ``None`` if unknown) and its record."""

    task: str
    state: str
    try_number: int
    submit: Optional[float]
    start: Optional[float]
    end: Optional[float]
    record: Optional[dict] = None

    @property
    def colour_state(self) -> str:
        """Slurm's verdict when there is one (``OUT_OF_MEMORY`` says more than ``failed``)."""
        return (self.record or {}).get("state") or self.state


def _epoch(value: Any) -> Optional[float]:
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        return value.timestamp()
    try:
        parsed = dt.datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.astimezone()).timestamp()


def row_for(task: str, state: str, try_number: int, ti_start: Any, ti_end: Any, record: Optional[dict]) -> Row:
    """A :class:`Row` from a task instance and its record (the record's times win)."""
    rec = record or {}
    start = _epoch(rec.get("start")) or _epoch(ti_start)
    end = _epoch(rec.get("end")) or _epoch(ti_end)
    submit = _epoch(rec.get("submit")) or start
    return Row(task, state, try_number, submit, start, end, record)


def collect_run(dag_id: str, run_id: str, session: Any = None) -> list:
    """The run's task instances with their ``stepcab_resources`` XComs, in start order.

    :param session: a metadata-database session (the API server's, for the UI's Report view);
        ``None``: a new one.
    :raises LookupError: no such run.
    """
    import contextlib

    from airflow.utils.session import create_session

    with (contextlib.nullcontext(session) if session is not None else create_session()) as db:
        return _collect(db, dag_id, run_id)


def _collect(session: Any, dag_id: str, run_id: str) -> list:
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel
    from sqlalchemy import select

    run = session.scalar(select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id))
    if run is None:
        raise LookupError(f"no run {run_id!r} of DAG {dag_id!r} in the metadata database")
    tis = session.scalars(select(TaskInstance).where(TaskInstance.dag_id == dag_id,
                                                     TaskInstance.run_id == run_id)).all()
    records = {}
    for xcom in session.scalars(select(XComModel).where(XComModel.dag_id == dag_id, XComModel.run_id == run_id,
                                                        XComModel.key == XCOM_KEY)).all():
        records[(xcom.task_id, xcom.map_index)] = XComModel.deserialize_value(xcom)
    rows = []
    for ti in tis:
        label = ti.task_id if ti.map_index is None or ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"
        state = str(getattr(ti.state, "value", ti.state) or "none")
        rows.append(row_for(label, state, ti.try_number or 0, ti.start_date, ti.end_date,
                            records.get((ti.task_id, ti.map_index))))
    rows.sort(key=lambda r: (r.submit if r.submit is not None else float("inf"), r.task))
    return rows


# --------------------------------------------------------------------------- drawing

LABEL_W, ROW_H, BAR_H, PLOT_W, TOP, BOTTOM = 220, 26, 16, 760, 30, 40


def _ticks(span: float, count: int = 6) -> list:
    """Round tick steps (seconds) covering ``span``."""
    for step in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400):
        if span / step <= count:
            return [i * step for i in range(int(span // step) + 1)]
    step = 86400 * (int(span / 86400 / count) + 1)
    return [i * step for i in range(int(span // step) + 1)]


def timeline_svg(rows: Sequence[Row]) -> str:
    """Steps × time: a hatched queue-wait bar (submit → start), then the run bar (start → end)."""
    timed = [r for r in rows if r.start is not None]
    t0 = min((r.submit or r.start for r in timed), default=0.0)
    t1 = max((r.end or r.start for r in timed), default=t0 + 1)
    span = max(t1 - t0, 1.0)
    scale = PLOT_W / span
    height = TOP + ROW_H * len(rows) + BOTTOM
    width = LABEL_W + PLOT_W + 20
    e = html.escape
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="timeline" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
             '<defs><pattern id="wait" width="6" height="6" patternUnits="userSpaceOnUse" '
             'patternTransform="rotate(45)"><rect width="6" height="6" fill="#ecf0f1"/>'
             '<line x1="0" y1="0" x2="0" y2="6" stroke="#95a5a6" stroke-width="3"/></pattern></defs>']
    for tick in _ticks(span):
        x = LABEL_W + tick * scale
        parts.append(f'<line x1="{x:.1f}" y1="{TOP - 5}" x2="{x:.1f}" y2="{height - BOTTOM}" stroke="#ddd"/>')
        parts.append(f'<text x="{x:.1f}" y="{height - BOTTOM + 15}" text-anchor="middle">+{e(format_duration(tick))}</text>')
    for i, row in enumerate(rows):
        y = TOP + i * ROW_H
        parts.append(f'<text x="{LABEL_W - 8}" y="{y + BAR_H - 3}" text-anchor="end" class="label">{e(row.task)}</text>')
        if row.start is None:
            continue
        colour = STATE_COLOURS.get(row.colour_state, DEFAULT_COLOUR)
        if row.submit is not None and row.start > row.submit:
            x = LABEL_W + (row.submit - t0) * scale
            w = max((row.start - row.submit) * scale, 1.0)
            parts.append(f'<rect class="wait" x="{x:.1f}" y="{y}" width="{w:.1f}" height="{BAR_H}" fill="url(#wait)">'
                         f'<title>{e(row.task)}: queued {e(format_duration(row.start - row.submit))}</title></rect>')
        x = LABEL_W + (row.start - t0) * scale
        end = row.end if row.end is not None else t1
        w = max((end - row.start) * scale, 1.0)
        parts.append(f'<rect class="run" data-state="{e(row.colour_state)}" x="{x:.1f}" y="{y}" width="{w:.1f}" '
                     f'height="{BAR_H}" fill="{colour}"><title>{e(row.task)}: {e(row.colour_state)}, ran '
                     f'{e(format_duration(end - row.start))}</title></rect>')
    parts.append("</svg>")
    return "".join(parts)


def _pct(value: Any) -> str:
    return "" if value is None else f"{value:.1f}%"


def table_html(rows: Sequence[Row]) -> str:
    """The efficiency table: one line per task with a record."""
    e = html.escape
    head = ("task", "try", "state", "job", "nodes", "queue wait", "elapsed", "CPUs", "CPU time", "CPU eff.",
            "MaxRSS", "requested", "mem eff.", "raised")
    lines = ["<table><thead><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr></thead><tbody>"]
    for row in rows:
        r = row.record
        if not r:
            continue
        raised = "; ".join(f"{k} {v['from']}→{v['to']}" for k, v in (r.get("escalated") or {}).items())
        cells = (row.task, r.get("attempt") or row.try_number, r.get("state"), r.get("job_id") or "", r.get("nodelist"),
                 format_duration(r.get("queue_wait_s")), format_duration(r.get("elapsed_s")), r.get("alloc_cpus"),
                 r.get("total_cpu"), _pct(r.get("cpu_efficiency")), format_size(r.get("max_rss_bytes")),
                 format_size(r.get("req_mem_bytes")), _pct(r.get("memory_efficiency")), raised)
        lines.append("<tr>" + "".join(f"<td>{e(str(c if c is not None else ''))}</td>" for c in cells) + "</tr>")
    lines.append("</tbody></table>")
    return "".join(lines)


def render_html(dag_id: str, run_id: str, rows: Sequence[Row]) -> str:
    """The whole report page (inline SVG and CSS only)."""
    e = html.escape
    legend = "".join(f'<span class="key"><i style="background:{STATE_COLOURS[s]}"></i>{e(s)}</span>'
                     for s in ("COMPLETED", "FAILED", "OUT_OF_MEMORY", "TIMEOUT", "CANCELLED"))
    return (
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\">"
        f"<title>stepcab report: {e(dag_id)} {e(run_id)}</title><style>"
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;font-size:13px}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}td:first-child{text-align:left}"
        ".key{margin-right:1em}.key i{display:inline-block;width:12px;height:12px;margin-right:4px}"
        "</style></head><body>"
        f"<h1>{e(dag_id)}</h1><p>run <code>{e(run_id)}</code>: {len(rows)} task(s)</p>"
        f"<h2>Timeline</h2><p>{legend}<span class=\"key\">hatched: queue wait (submit → start)</span></p>"
        f"{timeline_svg(rows)}<h2>Resources</h2>{table_html(rows)}</body></html>\n")


def cmd_report(args: argparse.Namespace) -> int:
    """``stepcab report``: write the page, print its path."""
    try:
        rows = collect_run(args.dag_id, args.run_id)
    except LookupError as exc:
        print(f"stepcab report: {exc}")
        return 1
    out = args.output or f"{args.dag_id}.{args.run_id}.html".replace("/", "_").replace(":", "_")
    with open(out, "w", encoding="utf-8") as fh:
        fh.write(render_html(args.dag_id, args.run_id, rows))
    print(out)
    return 0


def add_parser(sub: Any) -> None:
    """Register ``report`` on the ``stepcab`` command's subparsers."""
    p = sub.add_parser("report", help="draw a DAG run as an HTML timeline with a table of resource efficiencies")
    p.add_argument("dag_id")
    p.add_argument("run_id")
    p.add_argument("-o", "--output", help="HTML file to write (default: DAG_ID.RUN_ID.html)")
    p.set_defaults(func=cmd_report)


__all__ = ["Row", "collect_run", "row_for", "render_html", "timeline_svg", "table_html", "cmd_report", "add_parser"]
