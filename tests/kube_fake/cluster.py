"""State of the fake cluster: pods, their lifecycle (really run with podman) and events.

A created pod goes through what a one-node cluster would do:

1. **scheduling** — ``nodeSelector`` must match :attr:`FakeCluster.node_labels`, cpu/memory
   requests must fit the node, every ``persistentVolumeClaim`` must be a known claim; otherwise
   the pod stays ``Pending`` with ``PodScheduled=False`` and a ``FailedScheduling`` event;
2. **image** — the image must exist in the local podman storage (``imagePullPolicy: Always``
   always tries a registry, and none is reachable): else the container waits with
   ``ErrImagePull`` then ``ImagePullBackOff`` and the pod stays ``Pending``;
3. **running** — init containers one by one, then the containers, each a real ``podman run``;
   phase ``Running``; log lines are stored as they arrive;
4. **terminated** — ``exitCode``, ``reason`` (``Completed``/``Error``/``OOMKilled``), phase
   ``Succeeded`` or ``Failed`` (``restartPolicy: Never``).

Deleting a pod stops its containers (``podman stop`` with the grace period) and removes it.
"""

from __future__ import annotations

import copy
import itertools
import os
import tempfile
import threading
import time
import uuid
from typing import Any, Optional

from .podman import ContainerRun, image_exists, now_rfc3339, podman_base

NODE = "stepcab-fake"


def parse_quantity(value: Any) -> float:
    from airflow_provider_stepcab.plan.pod import parse_quantity as pq

    return pq(value, "quantity")


class PodRec:
    """One pod: its object (``body``), logs per container, container runs, lifecycle flags."""

    def __init__(self, body: dict):
        self.body = body
        self.logs: dict = {}
        self.runs: dict = {}
        self.cond = threading.Condition()
        self.deleting: Optional[float] = None   # grace seconds once deletion was asked
        self.finished = False                  # no container will write any more

    @property
    def name(self) -> str:
        return self.body["metadata"]["name"]

    def add_line(self, container: str, ts: str, text: str) -> None:
        with self.cond:
            self.logs.setdefault(container, []).append((ts, text))
            self.cond.notify_all()


class FakeCluster:
    """Pods and events of a one-node cluster whose containers run under podman.

    :param claims: PVC name → host directory (a mount of that claim binds the directory).
    :param podman_base: the podman command prefix (root/runroot/runtime).
    """

    def __init__(self, *, claims: Optional[dict] = None, base: Optional[list] = None,
                 node_labels: Optional[dict] = None, node_cpu: float = float(os.cpu_count() or 1),
                 node_memory: float = 8 * 2 ** 30, backoff_delay: float = 0.5):
        self.claims = dict(claims or {})
        self.base = list(base or podman_base())
        self.node_labels = {"kubernetes.io/hostname": NODE, "kubernetes.io/os": "linux", **(node_labels or {})}
        self.node_cpu, self.node_memory, self.backoff_delay = node_cpu, node_memory, backoff_delay
        self.pods: dict = {}          # (namespace, name) -> PodRec
        self.events: list = []        # event objects, in order
        self.created: list = []       # every create body as received (deep copies)
        self.requests: list = []      # (method, path, query, monotonic time) of every API call
        self.lock = threading.RLock()
        self._rv = itertools.count(1000)
        self._threads: list = []
        self._tmp = tempfile.mkdtemp(prefix="kube-fake-")

    # ------------------------------------------------------------------ helpers
    def rv(self) -> str:
        return str(next(self._rv))

    def get(self, namespace: str, name: str) -> Optional[PodRec]:
        with self.lock:
            return self.pods.get((namespace, name))

    def snapshot(self, rec: PodRec) -> dict:
        with self.lock:
            return copy.deepcopy(rec.body)

    def _touch(self, rec: PodRec) -> None:
        rec.body["metadata"]["resourceVersion"] = self.rv()
        with rec.cond:
            rec.cond.notify_all()

    def event(self, rec: PodRec, reason: str, message: str, type_: str = "Normal",
              field_path: Optional[str] = None) -> None:
        meta = rec.body["metadata"]
        now = now_rfc3339()[:19] + "Z"
        with self.lock:
            self.events.append({
                "apiVersion": "v1", "kind": "Event",
                "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:12]}", "namespace": meta["namespace"],
                             "uid": str(uuid.uuid4()), "resourceVersion": self.rv(), "creationTimestamp": now},
                "involvedObject": {"kind": "Pod", "name": meta["name"], "namespace": meta["namespace"],
                                   "uid": meta["uid"], "apiVersion": "v1", **({"fieldPath": field_path} if field_path else {})},
                "reason": reason, "message": message, "type": type_, "count": 1,
                "firstTimestamp": now, "lastTimestamp": now, "source": {"component": "kubelet", "host": NODE}})

    def _condition(self, rec: PodRec, type_: str, status: str, reason: Optional[str] = None,
                   message: Optional[str] = None) -> None:
        conds = [c for c in rec.body["status"].setdefault("conditions", []) if c["type"] != type_]
        cond = {"type": type_, "status": status, "lastTransitionTime": now_rfc3339()[:19] + "Z"}
        if reason:
            cond["reason"] = reason
        if message:
            cond["message"] = message
        rec.body["status"]["conditions"] = conds + [cond]

    # ------------------------------------------------------------------ API operations
    def create(self, namespace: str, body: dict) -> tuple[int, dict]:
        self.created.append(copy.deepcopy(body))
        meta = body.setdefault("metadata", {})
        name = meta.get("name") or (meta.get("generateName", "pod-") + uuid.uuid4().hex[:5])
        with self.lock:
            if (namespace, name) in self.pods:
                return 409, status_obj(409, "AlreadyExists", f'pods "{name}" already exists')
            meta.update(name=name, namespace=namespace, uid=str(uuid.uuid4()), resourceVersion=self.rv(),
                        creationTimestamp=now_rfc3339()[:19] + "Z")
            meta.setdefault("labels", {})
            body.setdefault("spec", {}).setdefault("restartPolicy", "Always")
            body["status"] = {"phase": "Pending", "qosClass": "BestEffort"}
            rec = PodRec(body)
            self.pods[(namespace, name)] = rec
        t = threading.Thread(target=self._lifecycle, args=(rec,), name=f"pod-{name}", daemon=True)
        self._threads.append(t)
        t.start()
        return 201, self.snapshot(rec)

    def delete(self, namespace: str, name: str, grace: Optional[float]) -> tuple[int, dict]:
        rec = self.get(namespace, name)
        if rec is None:
            return 404, status_obj(404, "NotFound", f'pods "{name}" not found')
        if grace is None:
            grace = float(rec.body["spec"].get("terminationGracePeriodSeconds", 30))
        with self.lock:
            rec.deleting = grace
            rec.body["metadata"]["deletionTimestamp"] = now_rfc3339()[:19] + "Z"
            rec.body["metadata"]["deletionGracePeriodSeconds"] = int(grace)
            self._touch(rec)
            out = self.snapshot(rec)
            running = [r for r in rec.runs.values() if r.exit_code is None]
        for run in running:
            threading.Thread(target=run.kill, args=(grace,), daemon=True).start()
        if not running:
            self._remove(rec)
        return 200, out

    def _remove(self, rec: PodRec) -> None:
        with self.lock:
            meta = rec.body["metadata"]
            if self.pods.get((meta["namespace"], meta["name"])) is rec:
                del self.pods[(meta["namespace"], meta["name"])]
        with rec.cond:
            rec.finished = True
            rec.cond.notify_all()

    # ------------------------------------------------------------------ lifecycle
    def _lifecycle(self, rec: PodRec) -> None:
        try:
            self._run_pod(rec)
        except Exception as exc:  # pragma: no cover - surfaced through the pod's status
            with self.lock:
                rec.body["status"].update(phase="Failed", reason="FakeClusterError", message=repr(exc))
                self._touch(rec)
        finally:
            with rec.cond:
                rec.finished = True
                rec.cond.notify_all()
            if rec.deleting is not None:
                self._remove(rec)

    def _unschedulable(self, spec: dict) -> Optional[str]:
        for key, value in (spec.get("nodeSelector") or {}).items():
            if self.node_labels.get(key) != str(value):
                return "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector."
        cpu = mem = 0.0
        for c in spec.get("containers") or []:
            req = (c.get("resources") or {}).get("requests") or (c.get("resources") or {}).get("limits") or {}
            cpu += parse_quantity(req["cpu"]) if "cpu" in req else 0
            mem += parse_quantity(req["memory"]) if "memory" in req else 0
        if cpu > self.node_cpu:
            return "0/1 nodes are available: 1 Insufficient cpu."
        if mem > self.node_memory:
            return "0/1 nodes are available: 1 Insufficient memory."
        for vol in spec.get("volumes") or []:
            claim = (vol.get("persistentVolumeClaim") or {}).get("claimName")
            if claim is not None and claim not in self.claims:
                return f'persistentvolumeclaim "{claim}" not found.'
        return None

    def _binds(self, rec: PodRec, container: dict) -> list:
        vols = {v["name"]: v for v in rec.body["spec"].get("volumes") or []}
        binds = []
        for m in container.get("volumeMounts") or []:
            vol = vols.get(m["name"]) or {}
            if "persistentVolumeClaim" in vol:
                host = self.claims[vol["persistentVolumeClaim"]["claimName"]]
            elif "emptyDir" in vol:
                host = os.path.join(self._tmp, rec.body["metadata"]["uid"], m["name"])
                os.makedirs(host, exist_ok=True)
            elif "hostPath" in vol:
                host = vol["hostPath"]["path"]
            else:
                raise ValueError(f"volume {m['name']!r}: only persistentVolumeClaim/emptyDir/hostPath are supported")
            binds.append((host, m["mountPath"], bool(m.get("readOnly"))))
        return binds

    def _run_pod(self, rec: PodRec) -> None:
        spec = rec.body["spec"]
        why = self._unschedulable(spec)
        with self.lock:
            if why:
                self._condition(rec, "PodScheduled", "False", "Unschedulable", why)
                self.event(rec, "FailedScheduling", why, "Warning")
                self._touch(rec)
                return
            self._condition(rec, "PodScheduled", "True")
            rec.body["spec"]["nodeName"] = NODE
            rec.body["status"].update(hostIP="127.0.0.1", podIP="10.0.0.2", startTime=now_rfc3339()[:19] + "Z")
            self.event(rec, "Scheduled", f"Successfully assigned {rec.body['metadata']['namespace']}/{rec.name} to {NODE}")
            self._statuses(rec, "containerStatuses", spec.get("containers") or [],
                           waiting=("ContainerCreating", None))
            self._touch(rec)
        containers = spec.get("containers") or []
        missing = [c for c in (spec.get("initContainers") or []) + containers
                   if c.get("imagePullPolicy") == "Always" or not image_exists(c["image"], self.base)]
        if missing:
            self._pull_failure(rec, missing)
            return
        for init in spec.get("initContainers") or []:
            if rec.deleting is not None:
                return
            runs = self._start(rec, [init], "initContainerStatuses")
            if runs[0].wait() != 0:
                self._terminated(rec, "initContainerStatuses", runs)
                with self.lock:
                    rec.body["status"]["phase"] = "Failed"
                    self._touch(rec)
                return
            self._terminated(rec, "initContainerStatuses", runs)
        if rec.deleting is not None:
            return
        runs = self._start(rec, containers, "containerStatuses")
        with self.lock:
            rec.body["status"]["phase"] = "Running"
            self._condition(rec, "Ready", "True")
            self._touch(rec)
        for run in runs:
            run.wait()
        self._terminated(rec, "containerStatuses", runs)
        with self.lock:
            ok = all(r.exit_code == 0 for r in runs)
            rec.body["status"]["phase"] = "Succeeded" if ok else "Failed"
            self._condition(rec, "Ready", "False", "PodCompleted" if ok else "ContainersNotReady")
            self._touch(rec)

    def _pull_failure(self, rec: PodRec, containers: list) -> None:
        with self.lock:
            for c in containers:
                self.event(rec, "Pulling", f'Pulling image "{c["image"]}"', field_path=f"spec.containers{{{c['name']}}}")
                msg = (f'Failed to pull image "{c["image"]}": no registry is reachable from this node '
                       "(the image is not in the local storage)")
                self.event(rec, "Failed", msg, "Warning", f"spec.containers{{{c['name']}}}")
                self._set_waiting(rec, c["name"], "ErrImagePull", msg)
            self._touch(rec)
        time.sleep(self.backoff_delay)
        with self.lock:
            for c in containers:
                msg = f'Back-off pulling image "{c["image"]}"'
                self.event(rec, "BackOff", msg, "Normal", f"spec.containers{{{c['name']}}}")
                self._set_waiting(rec, c["name"], "ImagePullBackOff", msg)
            self._touch(rec)

    def _statuses(self, rec: PodRec, key: str, containers: list, waiting: tuple) -> None:
        rec.body["status"][key] = [
            {"name": c["name"], "image": c["image"], "imageID": "", "ready": False, "restartCount": 0,
             "started": False, "state": {"waiting": {"reason": waiting[0], **({"message": waiting[1]} if waiting[1] else {})}},
             "lastState": {}} for c in containers]

    def _set_waiting(self, rec: PodRec, name: str, reason: str, message: str) -> None:
        for key in ("containerStatuses", "initContainerStatuses"):
            for st in rec.body["status"].get(key) or []:
                if st["name"] == name:
                    st["state"] = {"waiting": {"reason": reason, "message": message}}

    def _start(self, rec: PodRec, containers: list, key: str) -> list:
        pod_sc = rec.body["spec"].get("securityContext") or {}
        uid8 = rec.body["metadata"]["uid"][:8]
        runs = []
        mem_limit = 0.0
        for c in containers:
            limits = (c.get("resources") or {}).get("limits") or {}
            mem_limit += parse_quantity(limits["memory"]) if "memory" in limits else 0
        with self.lock:
            if key == "initContainerStatuses":
                self._statuses(rec, key, containers, waiting=("PodInitializing", None))
        for c in containers:
            limits = (c.get("resources") or {}).get("limits") or {}
            sc = {**pod_sc, **(c.get("securityContext") or {})}
            user = None
            if sc.get("runAsUser") is not None:
                user = str(sc["runAsUser"]) + (f":{sc['runAsGroup']}" if sc.get("runAsGroup") is not None else "")
            env = {}
            for e in c.get("env") or []:
                ref = ((e.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath")
                env[e["name"]] = (rec.body["metadata"].get(ref.split(".", 1)[1], "") if ref else e.get("value", ""))
            name = c["name"]
            run = ContainerRun(
                name=f"k8s_{name}_{rec.name}_{uid8}"[:250], image=c["image"], command=c.get("command") or [],
                args=c.get("args") or [], env=env, workdir=c.get("workingDir"), user=user,
                binds=self._binds(rec, c), memory_limit=int(mem_limit) or None,
                cpus=parse_quantity(limits["cpu"]) if "cpu" in limits else None, cgroup=f"{uid8}-{name}"[:60],
                on_line=lambda ts, text, n=name: rec.add_line(n, ts, text), base=self.base)
            run.start()
            runs.append(run)
            with self.lock:
                rec.runs[name] = run
                for st in rec.body["status"].get(key) or []:
                    if st["name"] == name:
                        st.update(state={"running": {"startedAt": run.started_at[:19] + "Z"}}, ready=True, started=True,
                                  containerID=f"podman://{run.name}")
                self.event(rec, "Started", f"Started container {name}", field_path=f"spec.containers{{{name}}}")
                self._touch(rec)
        return runs

    def _terminated(self, rec: PodRec, key: str, runs: list) -> None:
        with self.lock:
            for run in runs:
                name = next(n for n, r in rec.runs.items() if r is run)
                for st in rec.body["status"].get(key) or []:
                    if st["name"] == name:
                        term = {"exitCode": run.exit_code, "reason": run.reason,
                                "startedAt": run.started_at[:19] + "Z", "finishedAt": run.finished_at[:19] + "Z",
                                "containerID": f"podman://{run.name}"}
                        if run.message:
                            term["message"] = run.message
                        st.update(state={"terminated": term}, ready=False, started=False)
            self._touch(rec)

    def stop(self) -> None:
        """Kill whatever still runs (fixture teardown)."""
        with self.lock:
            recs = list(self.pods.values())
        for rec in recs:
            self.delete(rec.body["metadata"]["namespace"], rec.name, 0)
        for t in self._threads:
            t.join(timeout=30)


def status_obj(code: int, reason: str, message: str) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}
