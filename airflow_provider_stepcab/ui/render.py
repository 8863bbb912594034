"""HTML of the Step and Recipe views (plain server-side HTML shown in the Airflow UI's iframe).

Every value goes through :func:`esc` (``html.escape`` with quotes): params and run conf are
user input and are only ever shown as text, never as markup. The one script on a page copies
the text content of an element; it never reads values into HTML.
"""

from __future__ import annotations

import json
import shlex
from html import escape
from typing import Any, Iterable, Optional
from urllib.parse import quote

from airflow_provider_stepcab.ui.static import PAGE_SCRIPT, PAGE_STYLE


def esc(value: Any) -> str:
    """``value`` as HTML text (``None`` → empty)."""
    return "" if value is None else escape(str(value), quote=True)


def show(value: Any) -> str:
    """A parameter value as the text shown: strings as they are, anything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value, default=str)


def command_line(argv: Iterable[str]) -> str:
    """``argv`` as one shell-quoted line (what a user pastes into a terminal)."""
    return shlex.join(str(a) for a in argv)


def page(title: str, body: str) -> str:
    """A whole HTML page."""
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{esc(title)}</title>"
            f"<style>{PAGE_STYLE}</style></head><body>{body}<script>{PAGE_SCRIPT}</script></body></html>")


def _table(rows: Iterable[tuple], *, ident: str, header: Optional[tuple] = None, cls: str = "") -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header) if header else ""
    out = [f"<table id=\"{ident}\" class=\"{cls}\">" + (f"<thead><tr>{head}</tr></thead>" if head else "")
           + "<tbody>"]
    for row in rows:
        attrs, cells = (row[0], row[1:]) if isinstance(row[0], dict) else ({}, row)
        attr = "".join(f" {k}=\"{esc(v)}\"" for k, v in attrs.items())
        out.append(f"<tr{attr}>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _pre(ident: str, text: str, *, copy: bool = False) -> str:
    button = (f"<button type=\"button\" class=\"copy\" data-copy=\"{ident}\">Copy</button>" if copy else "")
    return f"<div class=\"block\">{button}<pre id=\"{ident}\">{esc(text)}</pre></div>"


def step_url(dag_id: str, run_id: str, task_id: str, map_index: int, *, prefix: str) -> str:
    """The Step view's URL of a task instance."""
    parts = (quote(dag_id, safe=""), quote(run_id, safe=""), quote(task_id, safe=""), str(map_index))
    return f"{prefix}/step/" + "/".join(parts)


#: Slurm job facts shown in their own sections (the command line, the sbatch script)
_SHOWN_APART = ("argv", "script")


def step_page(data: dict, *, prefix: str) -> str:
    """The Step view of one task instance (``data`` from :func:`.data.step_data`)."""
    rec = data.get("record") or {}
    name = data.get("name")
    title = rec.get("fqname") or data["task_id"]
    parts = [f"<h1>{esc(title)}{' <span class=loopname>' + esc(name) + '</span>' if name else ''}</h1>"]
    facts = [("DAG", data["dag_id"]), ("run", data["run_id"]), ("task", data["task_id"]),
             ("map index", data["map_index"] if data["map_index"] >= 0 else None), ("state", data["state"]),
             ("try", data["try_number"]), ("host", data["hostname"]), ("started", data["start_date"]),
             ("ended", data["end_date"]), ("cab", rec.get("cab")), ("backend", rec.get("backend")),
             ("image", rec.get("image")), ("working directory", rec.get("workdir")),
             ("pod", rec.get("pod_name")), ("pod phase", rec.get("pod_phase")),
             ("skipped because", rec.get("skip_reason")), ("step cache", rec.get("cache"))]
    parts.append(_table([({"data-fact": k}, esc(k), esc(v)) for k, v in facts if v not in (None, "")],
                        ident="facts", cls="facts"))
    if not rec:
        parts.append("<p class=\"note\" id=\"no-record\">This task has not published its step record "
                     "(XCom <code>stepcab_step</code>) yet: it has not run, or ran before the provider "
                     "recorded steps.</p>")
    if rec.get("argv"):
        parts.append("<h2>Command line</h2>" + _pre("argv", command_line(rec["argv"]), copy=True))
    if rec.get("command"):
        parts.append("<h2>Container command</h2>" + _pre("command", command_line(rec["command"]), copy=True))
    if rec.get("script"):
        parts.append("<h2>sbatch script</h2>" + _pre("script", rec["script"], copy=True))
    if rec.get("pod"):
        parts.append("<h2>Pod spec</h2>" + _pre("pod", json.dumps(rec["pod"], indent=2, sort_keys=True), copy=True))
    job = {k: v for k, v in (data.get("slurm") or {}).items() if k not in _SHOWN_APART}
    for ident, heading, facts_ in (("slurm", "Slurm job", job),
                                   ("resources", "Resources (accounting)", data.get("resources"))):
        if isinstance(facts_, dict) and facts_:
            parts.append(f"<h2>{heading}</h2>" + _table(
                [({"data-fact": k}, esc(k), esc(show(v))) for k, v in facts_.items()], ident=ident, cls="facts"))
    params = rec.get("params") or data.get("params") or {}
    sources = rec.get("sources") or {}
    if params:
        parts.append("<h2>Parameters</h2>" + _table(
            [({"data-param": k}, f"<code>{esc(k)}</code>", f"<code>{esc(show(v))}</code>",
              f"<span class=\"source\">{esc(sources.get(k, ''))}</span>") for k, v in params.items()],
            ident="params", header=("name", "value", "source")))
    outputs, assets = rec.get("outputs") or [], data.get("assets") or []
    if outputs or assets:
        by_path = {a["uri"][len("file://"):]: a for a in assets if str(a["uri"]).startswith("file://")}
        rows = [({"data-output": p}, f"<code>{esc(p)}</code>",
                 esc(by_path[p]["uri"]) if p in by_path else "") for p in outputs]
        rows += [({"data-output": a["uri"]}, "", esc(a["uri"])) for a in assets
                 if a["uri"][len("file://"):] not in outputs]
        parts.append("<h2>Outputs</h2>" + _table(rows, ident="outputs", header=("file", "Asset")))
    loops = data.get("loop_instances") or []
    if loops:
        items = []
        for inst in loops:
            label = inst["name"] or f"[{inst['map_index']}]"
            url = step_url(data["dag_id"], data["run_id"], data["task_id"], inst["map_index"], prefix=prefix)
            here = " class=\"here\"" if inst["map_index"] == data["map_index"] else ""
            items.append(f"<li{here} data-map-index=\"{inst['map_index']}\"><a href=\"{esc(url)}\">{esc(label)}</a>"
                         f" <span class=\"state\">{esc(inst['state'])}</span></li>")
        parts.append("<h2>Loop instances</h2><ul id=\"loop-instances\">" + "".join(items) + "</ul>")
    if rec.get("doc"):
        parts.append("<h2>Cab</h2>" + _pre("doc", rec["doc"]))
    return page(f"{title} - step", "".join(parts))


def _where(file: Any, line: Any) -> str:
    return f"{file}:{line}" if file and line else (file or "")


def recipe_page(data: dict) -> str:
    """The Recipe view of one DAG (``data`` from :func:`.data.recipe_data`)."""
    parts = [f"<h1>{esc(data['recipe'])}</h1>"]
    if data.get("info"):
        parts.append(f"<p class=\"info\">{esc(data['info'])}</p>")
    parts.append(f"<p>Recipe file: <code id=\"recipe-file\">{esc(_where(data['file'], data.get('line')))}</code></p>")
    rows = []
    for step in data["steps"]:
        what = step.get("cab") if step["kind"] == "cab" else f"recipe {step.get('recipe') or ''}"
        loop = step.get("loop") or {}
        if loop.get("var"):
            over = loop["over"] if isinstance(loop["over"], str) else json.dumps(loop["over"])
            loop_text = f"for {loop['var']} in {over} (scatter {loop.get('scatter')})"
        elif loop:
            loop_text = "inside the loop"
        else:
            loop_text = ""
        indent = "\u2003" * int(step.get("depth") or 0)
        rows.append(({"data-step": step["path"]}, f"{indent}<code>{esc(step['label'])}</code>", esc(what),
                     esc(step.get("backend") or ""), esc(step.get("class") or ""), esc(loop_text),
                     esc(step.get("info")), f"<code>{esc(_where(step.get('file'), step.get('line')))}</code>"))
    parts.append("<h2>Steps</h2>" + _table(rows, ident="steps",
                                           header=("step", "cab", "backend", "operator", "loop", "info", "where")))
    problems = [("warning", p) for p in data.get("warnings") or []] + [("error", p) for p in data.get("errors") or []]
    if problems:
        items = "".join(f"<li class=\"{kind}\"><code>{esc(_where(p[0], p[1]))}</code>: {esc(p[2])}: {esc(p[3])}</li>"
                        for kind, p in problems)
        parts.append(f"<h2>Warnings</h2><ul id=\"warnings\">{items}</ul>")
    else:
        parts.append("<h2>Warnings</h2><p id=\"warnings\" class=\"note\">none</p>")
    parts.append("<h2>Files read</h2><ul id=\"files\">" + "".join(f"<li><code>{esc(f)}</code></li>"
                                                                 for f in data.get("files") or []) + "</ul>")
    parts.append("<h2>The recipe as loaded</h2>" + _loaded(data.get("lines") or [], "loaded"))
    for name, lines in (data.get("sub_recipes") or {}).items():
        parts.append(f"<h3>recipe {esc(name)}</h3>" + _loaded(lines, f"loaded-{name}"))
    return page(f"{data['recipe']} - recipe", "".join(parts))


def _loaded(lines: list, ident: str) -> str:
    rows = [(f"<code>{'  ' * int(depth)}{esc(text)}</code>", f"<code>{esc(_where(file, line))}</code>")
            for depth, text, file, line in lines]
    return _table(rows, ident=esc(ident), cls="loaded", header=("as loaded", "from"))


def error_page(status: int, message: str) -> str:
    """A page for a missing DAG/run/task instance."""
    return page(f"{status}", f"<h1>{status}</h1><p id=\"error\">{esc(message)}</p>")
