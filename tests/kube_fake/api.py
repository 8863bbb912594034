"""The pods API of the fake cluster over HTTP (``http.server`` in a thread, HTTP/1.1).

Endpoints (what the KubernetesPodOperator's sync path and its deferrable trigger call):

* ``GET/POST /api/v1/namespaces/{ns}/pods`` — list (``labelSelector``: ``k=v``, ``k==v``,
  ``k!=v``, ``k``, ``!k``) / create;
* ``GET/PATCH/DELETE /api/v1/namespaces/{ns}/pods/{name}`` — read / merge-patch / delete;
* ``GET …/pods/{name}/log`` — ``container``, ``follow``, ``timestamps`` (RFC3339 prefix),
  ``sinceSeconds``, ``tailLines``; streamed with chunked encoding while following;
* ``GET /api/v1/namespaces/{ns}/events`` — ``fieldSelector=involvedObject.name=X``, and
  ``watch=true`` (JSON lines until ``timeoutSeconds`` or the pod ends);
* ``GET /api/v1/namespaces/{ns}``, ``/version``.

Every call is recorded in :attr:`.cluster.FakeCluster.requests`.
"""

from __future__ import annotations

import datetime
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional
from urllib.parse import parse_qs, urlsplit

from .cluster import FakeCluster, status_obj

_POD = re.compile(r"^/api/v1/namespaces/([^/]+)/pods(?:/([^/]+))?(?:/(log|status))?$")
_EVENTS = re.compile(r"^/api/v1/namespaces/([^/]+)/events$")
_NS = re.compile(r"^/api/v1/namespaces/([^/]+)$")


def selector_matches(selector: str, labels: dict) -> bool:
    for term in filter(None, (t.strip() for t in (selector or "").split(","))):
        if "!=" in term:
            k, v = term.split("!=", 1)
            if labels.get(k.strip()) == v.strip():
                return False
        elif "=" in term:
            k, v = term.replace("==", "=").split("=", 1)
            if labels.get(k.strip()) != v.strip():
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def _parse_ts(ts: str) -> float:
    return datetime.datetime.strptime(ts[:26], "%Y-%m-%dT%H:%M:%S.%f").replace(
        tzinfo=datetime.timezone.utc).timestamp()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    cluster: FakeCluster

    def log_message(self, fmt: str, *args: Any) -> None:  # quiet
        pass

    # ------------------------------------------------------------------ plumbing
    def _query(self) -> tuple[str, dict]:
        parts = urlsplit(self.path)
        q = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        self.cluster.requests.append((self.command, parts.path, q, time.monotonic()))
        return parts.path, q

    def _body(self) -> Any:
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        return json.loads(raw) if raw.strip() else None

    def _json(self, code: int, obj: Any) -> None:
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _start_chunked(self, ctype: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _chunk(self, data: bytes) -> None:
        if data:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

    def _end_chunked(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _not_found(self, what: str = "the server could not find the requested resource") -> None:
        self._json(404, status_obj(404, "NotFound", what))

    # ------------------------------------------------------------------ verbs
    def do_GET(self) -> None:
        path, q = self._query()
        if path == "/version":
            return self._json(200, {"major": "1", "minor": "30", "gitVersion": "v1.30.0-stepcab-fake"})
        if m := _EVENTS.match(path):
            return self._events(m.group(1), q)
        if m := _NS.match(path):
            return self._json(200, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": m.group(1)},
                                    "status": {"phase": "Active"}})
        m = _POD.match(path)
        if not m:
            return self._not_found()
        ns, name, sub = m.groups()
        if name is None:
            items = [self.cluster.snapshot(r) for (n, _), r in list(self.cluster.pods.items()) if n == ns]
            items = [p for p in items if selector_matches(q.get("labelSelector", ""), p["metadata"].get("labels") or {})]
            return self._json(200, {"apiVersion": "v1", "kind": "PodList", "items": items,
                                    "metadata": {"resourceVersion": self.cluster.rv()}})
        rec = self.cluster.get(ns, name)
        if rec is None:
            return self._not_found(f'pods "{name}" not found')
        if sub == "log":
            return self._log(rec, q)
        return self._json(200, self.cluster.snapshot(rec))

    def do_POST(self) -> None:
        path, _q = self._query()
        m = _POD.match(path)
        if not m or m.group(2):
            return self._not_found()
        code, obj = self.cluster.create(m.group(1), self._body() or {})
        self._json(code, obj)

    def do_PATCH(self) -> None:
        path, _q = self._query()
        m = _POD.match(path)
        body = self._body()
        if not m or not m.group(2):
            return self._not_found()
        rec = self.cluster.get(m.group(1), m.group(2))
        if rec is None:
            return self._not_found(f'pods "{m.group(2)}" not found')
        if isinstance(body, list):
            return self._json(415, status_obj(415, "UnsupportedMediaType", "json-patch is not supported"))
        with self.cluster.lock:
            meta = merge_patch(rec.body["metadata"], (body or {}).get("metadata") or {})
            rec.body["metadata"] = meta
            rec.body["metadata"]["resourceVersion"] = self.cluster.rv()
            out = self.cluster.snapshot(rec)
        self._json(200, out)

    def do_DELETE(self) -> None:
        path, q = self._query()
        m = _POD.match(path)
        body = self._body() or {}
        if not m or not m.group(2):
            return self._not_found()
        grace = body.get("gracePeriodSeconds", q.get("gracePeriodSeconds"))
        code, obj = self.cluster.delete(m.group(1), m.group(2), None if grace is None else float(grace))
        self._json(code, obj)

    # ------------------------------------------------------------------ logs and events
    def _log(self, rec: Any, q: dict) -> None:
        containers = [c["name"] for c in rec.body["spec"].get("containers") or []]
        container = q.get("container") or (containers[0] if len(containers) == 1 else None)
        if container is None:
            return self._json(400, status_obj(400, "BadRequest", "a container name must be specified"))
        if container not in rec.runs:
            if container not in containers + [c["name"] for c in rec.body["spec"].get("initContainers") or []]:
                return self._json(400, status_obj(400, "BadRequest", f"container {container} is not valid for pod {rec.name}"))
            waiting = "ContainerCreating"
            for st in rec.body["status"].get("containerStatuses") or []:
                if st["name"] == container and "waiting" in st["state"]:
                    waiting = st["state"]["waiting"].get("reason", waiting)
            return self._json(400, status_obj(400, "BadRequest",
                                              f'container "{container}" in pod "{rec.name}" is waiting to start: {waiting}'))
        follow = q.get("follow", "").lower() in ("true", "1")
        stamps = q.get("timestamps", "").lower() in ("true", "1")
        since = float(q["sinceSeconds"]) if q.get("sinceSeconds") else None
        cutoff = time.time() - since if since is not None else None
        tail = int(q["tailLines"]) if q.get("tailLines") else None
        run = rec.runs[container]

        def render(lines: list) -> bytes:
            out = []
            for ts, text in lines:
                if cutoff is not None and _parse_ts(ts) < cutoff:
                    continue
                out.append(f"{ts} {text}\n" if stamps else f"{text}\n")
            return "".join(out).encode()

        with rec.cond:
            lines = list(rec.logs.get(container, []))
        if tail is not None:
            lines = lines[-tail:] if tail > 0 else []
        if not follow:
            data = render(lines)
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        self._start_chunked("text/plain")
        sent = len(rec.logs.get(container, [])) if tail is not None else 0
        if tail is not None:
            self._chunk(render(lines))
        try:
            while True:
                with rec.cond:
                    done = run.exit_code is not None and run.finished_at is not None
                    lines = list(rec.logs.get(container, []))[sent:]
                    if not lines and not done:
                        rec.cond.wait(timeout=0.5)
                        continue
                sent += len(lines)
                self._chunk(render(lines))
                if done and not lines:
                    break
            self._end_chunked()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _events(self, ns: str, q: dict) -> None:
        sel = q.get("fieldSelector", "")
        name = sel.split("involvedObject.name=", 1)[1].split(",")[0] if "involvedObject.name=" in sel else None

        def matching(after: Optional[int] = None) -> list:
            with self.cluster.lock:
                evs = [e for e in self.cluster.events if e["metadata"]["namespace"] == ns
                       and (name is None or e["involvedObject"]["name"] == name)]
            if after is not None:
                evs = [e for e in evs if int(e["metadata"]["resourceVersion"]) > after]
            return evs

        if q.get("watch", "").lower() not in ("true", "1"):
            return self._json(200, {"apiVersion": "v1", "kind": "EventList", "items": matching(),
                                    "metadata": {"resourceVersion": self.cluster.rv()}})
        rv = int(q["resourceVersion"]) if q.get("resourceVersion", "").isdigit() else None
        deadline = time.monotonic() + float(q.get("timeoutSeconds") or 30)
        self._start_chunked("application/json")
        try:
            while time.monotonic() < deadline:
                for e in matching(rv):
                    self._chunk((json.dumps({"type": "ADDED", "object": e}) + "\n").encode())
                    rv = int(e["metadata"]["resourceVersion"])
                rec = self.cluster.get(ns, name) if name else None
                if name and (rec is None or rec.body["status"].get("phase") in ("Succeeded", "Failed")):
                    break
                time.sleep(0.2)
            self._end_chunked()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


class FakeApiServer:
    """The HTTP server thread around a :class:`FakeCluster` (``url`` once started)."""

    def __init__(self, cluster: FakeCluster):
        self.cluster = cluster
        handler = type("BoundHandler", (Handler,), {"cluster": cluster})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                       name="kube-fake-api", daemon=True)

    def start(self) -> "FakeApiServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
