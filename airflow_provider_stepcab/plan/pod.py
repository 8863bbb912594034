"""The Kubernetes pod of one cab step, as a plain dict (pure: no Airflow import, no I/O).

What goes into the pod (Stimela 2.1.4's ``kube`` backend, minus its shell wrapper):

* one container named :data:`CONTAINER_NAME` running the cab's image with the cab's argv as
  ``command`` — a list, never a shell string (no ``/bin/bash -c``, no NSS injection);
  ``imagePullPolicy`` is ``Always`` with ``kube.always_pull_images`` else ``IfNotPresent``;
* ``workingDir``: ``kube.dir``, else the run's working directory when a volume mount covers it;
* ``env``: ``kube.env`` then the cab's ``management.environment`` (later wins), ``HOME`` from
  ``kube.user.home``;
* a container ``securityContext`` with ``runAsUser``/``runAsGroup`` (``kube.user.uid/gid``, else the
  caller's fallback — Stimela uses the submitting user's ids) and ``runAsNonRoot`` when uid ≠ 0;
* ``serviceAccountName: kube.service_account``, ``restartPolicy: Never``, ``namespace: kube.namespace``;
* ``predefined_pod_specs[job_pod.type]`` then ``job_pod.custom_pod_spec`` merged into the pod spec
  (mappings merge recursively, lists replace — OmegaConf semantics — except ``containers``, whose
  items merge into the container at the same index so the step's container survives);
* then the memory/cpu ``request``/``limit`` of ``job_pod`` as container ``resources``;
* every ``kube.volumes`` entry as a ``persistentVolumeClaim`` volume (claim ``name`` or the entry's
  key; PVCs must exist — nothing is provisioned) mounted at its ``mount``;
* labels ``stepcab.io/{dag,task,run,step,cab,map-index}`` sanitised to label syntax (originals in
  ``stepcab.io/*`` annotations); the name is the step's fqname made DNS-safe (the operator adds a
  random suffix).

Files: a pod sees only its mounts, so every File/Directory/MS parameter value (relative ones
against ``workingDir``) must lie under a volume mount, else :class:`PodPlanError` names the
parameter and the mounts. :func:`validate_pod` deserialises the dict into the kubernetes client's
``V1Pod`` and reports fields the model does not know (typos in ``custom_pod_spec``).
"""

from __future__ import annotations

import copy
import hashlib
import posixpath
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

from .quantities import kube_quantity

CONTAINER_NAME = "step"
LABEL_PREFIX = "stepcab.io/"
_LABEL_OK = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


class PodPlanError(ValueError):
    """The step cannot run as a pod as configured (message says which setting)."""


@dataclass(frozen=True)
class PodIdentity:
    """Who the pod belongs to (labels and annotations)."""

    dag_id: str = ""
    task_id: str = ""
    run_id: str = ""
    step: str = ""          # the step's fqname, e.g. ``recipe.cal.flag``
    cab: str = ""
    map_index: int = -1


@dataclass
class PodPlan:
    """A planned pod: the manifest, its mounts (volume name → mount path) and warnings."""

    pod: dict
    mounts: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)

    @property
    def container(self) -> dict:
        return self.pod["spec"]["containers"][0]


# ----------------------------------------------------------------------------- names and labels

def label_value(text: Any) -> str:
    """``text`` as a valid label value (≤ 63 chars); altered values get a short hash of the original."""
    text = "" if text is None else str(text)
    if len(text) <= 63 and _LABEL_OK.match(text):
        return text
    digest = hashlib.sha1(text.encode()).hexdigest()[:8]
    safe = re.sub(r"[^-A-Za-z0-9_.]+", "-", text)[:54].strip("-_.")
    return f"{safe}-{digest}" if safe else digest


def dns_label(text: str, max_length: int = 50) -> str:
    """Lower-case DNS label from ``text`` (``.``/``_``/others → ``-``), cut to ``max_length``."""
    name = re.sub(r"[^a-z0-9-]+", "-", str(text).lower())
    name = re.sub(r"-{2,}", "-", name)[:max_length].strip("-")
    return name or "step"


def pod_labels(identity: PodIdentity) -> dict:
    labels = {"dag": identity.dag_id, "task": identity.task_id, "run": identity.run_id,
              "step": identity.step, "cab": identity.cab}
    out = {LABEL_PREFIX + k: label_value(v) for k, v in labels.items() if v}
    if identity.map_index is not None and identity.map_index >= 0:
        out[LABEL_PREFIX + "map-index"] = str(identity.map_index)
    return out


def pod_annotations(identity: PodIdentity) -> dict:
    """The identity unabridged (labels may be shortened)."""
    return {LABEL_PREFIX + k: str(v) for k, v in (("dag-id", identity.dag_id), ("task-id", identity.task_id),
                                                  ("run-id", identity.run_id), ("step", identity.step)) if v}


# ----------------------------------------------------------------------------- merging and resources

def merge_fragment(base: Any, fragment: Any, path: str = "spec") -> Any:
    """Merge a pod-spec ``fragment`` into ``base`` (copies): see the module docstring."""
    if isinstance(base, Mapping) and isinstance(fragment, Mapping):
        out = dict(copy.deepcopy(base))
        for key, value in fragment.items():
            out[key] = merge_fragment(out[key], value, f"{path}.{key}") if key in out else copy.deepcopy(value)
        return out
    if path in ("spec.containers", "spec.initContainers") and isinstance(base, list) and isinstance(fragment, list):
        merged = [copy.deepcopy(c) for c in base]
        for i, item in enumerate(fragment):
            if i < len(merged):
                merged[i] = merge_fragment(merged[i], item, f"{path}[{i}]")
            else:
                merged.append(copy.deepcopy(item))
        return merged
    return copy.deepcopy(fragment)


def parse_quantity(value: Any, what: str) -> float:
    """A Kubernetes quantity (``500m``, ``4Gi``, ``1.5``) as a number; :class:`PodPlanError` if malformed."""
    try:
        return kube_quantity(value)
    except ValueError as exc:
        raise PodPlanError(f"{what}: {exc}") from None


def pod_resources(job_pod: Any) -> dict:
    """``resources`` of the step container from ``job_pod.memory``/``cpu`` (``request``/``limit``)."""
    res: dict = {}
    for kind in ("memory", "cpu"):
        limits = getattr(job_pod, kind, None)
        request, limit = getattr(limits, "request", None), getattr(limits, "limit", None)
        where = f"backend.kube.job_pod.{kind}"
        if request not in (None, ""):
            parse_quantity(request, f"{where}.request")
            res.setdefault("requests", {})[kind] = str(request)
        if limit not in (None, ""):
            parse_quantity(limit, f"{where}.limit")
            res.setdefault("limits", {})[kind] = str(limit)
        if request not in (None, "") and limit not in (None, ""):
            if parse_quantity(request, where) > parse_quantity(limit, where):
                raise PodPlanError(f"{where}: request {request} is larger than limit {limit}")
    return res


# ----------------------------------------------------------------------------- files under mounts

def _under(path: str, mount: str) -> bool:
    mount = posixpath.normpath(mount)
    return path == mount or path.startswith(mount.rstrip("/") + "/")


def check_file_params(cab: Any, params: Mapping[str, Any], *, cwd: Optional[str],
                      mounts: Mapping[str, str]) -> None:
    """Every file-type parameter value must lie under a mount (relative ones against ``cwd``).

    :raises PodPlanError: naming each offending parameter and the mounts.
    """
    from .singularity import file_values

    problems = []
    for name, p in {**cab.inputs, **cab.outputs}.items():
        dtype = getattr(p, "dtype", None)
        if name not in params or dtype is None or not dtype.contains_files():
            continue
        for value in file_values(dtype, params[name]):
            if not value or "://" in value:
                continue
            if not posixpath.isabs(value) and not cwd:
                problems.append(f"parameter '{name}' = '{value}' is relative and the pod has no working "
                                "directory (set backend.kube.dir)")
                continue
            path = posixpath.normpath(posixpath.join(cwd or "/", value))
            if not any(_under(path, m) for m in mounts.values()):
                problems.append(f"parameter '{name}' = '{value}' ({path}) is not under a volume mount")
    if problems:
        where = ", ".join(f"{k} at {v}" for k, v in mounts.items()) or "none (set backend.kube.volumes)"
        raise PodPlanError("; ".join(problems) + f"; mounts: {where}")


# ----------------------------------------------------------------------------- the pod

def build_pod(*, cab: Any, params: Mapping[str, Any], argv: Sequence[str], image: str, kube: Any,
              identity: PodIdentity, workdir: Optional[str] = None, env: Optional[Mapping[str, Any]] = None,
              slurm: bool = False, fallback_uid: Optional[int] = None,
              fallback_gid: Optional[int] = None) -> PodPlan:
    """Plan the pod that runs ``cab`` (see the module docstring).

    :param argv: the command to run, as a list (e.g. :func:`.flavours.build_flavour_argv`).
    :param image: the resolved image reference (:func:`.images.resolve_cab_image`).
    :param kube: the step's :class:`~..recipe.backends.KubeOptions`.
    :param workdir: the run's working directory (``workingDir`` when a mount covers it).
    :param env: extra environment (the cab's ``management.environment``).
    :param slurm: the slurm wrapper is enabled (an error: slurm wraps native/singularity only).
    :param fallback_uid: uid when ``kube.user.uid`` is unset (Stimela: the submitting user).
    :raises PodPlanError: unsupported or inconsistent settings, files outside the mounts.
    """
    if slurm:
        raise PodPlanError("backend.slurm.enable with the kube backend: the slurm wrapper runs native or "
                           "singularity steps only; disable slurm or select another backend")
    if getattr(getattr(kube, "dask_cluster", None), "enable", False):
        raise PodPlanError("backend.kube.dask_cluster.enable is not supported by stepcab")
    if not argv:
        raise PodPlanError(f"cab '{cab.name}' has an empty command line")
    warnings: list = []
    container: dict = {"name": CONTAINER_NAME, "image": image,
                       "imagePullPolicy": "Always" if kube.always_pull_images else "IfNotPresent",
                       "command": [str(a) for a in argv]}
    user = kube.user
    uid = user.uid if user.uid is not None else fallback_uid
    gid = user.gid if user.gid is not None else fallback_gid
    if uid is not None or gid is not None:
        sc: dict = {}
        if uid is not None:
            sc.update(runAsUser=int(uid), runAsNonRoot=int(uid) != 0)
        if gid is not None:
            sc["runAsGroup"] = int(gid)
        container["securityContext"] = sc
    spec: dict = {"containers": [container], "restartPolicy": "Never"}
    if kube.service_account:
        spec["serviceAccountName"] = kube.service_account

    job_pod = kube.job_pod
    if job_pod.type is not None:
        fragment = (kube.predefined_pod_specs or {}).get(job_pod.type)
        if fragment is None:
            known = ", ".join(sorted(kube.predefined_pod_specs or {})) or "none defined"
            raise PodPlanError(f"backend.kube.job_pod.type '{job_pod.type}' not found in "
                               f"backend.kube.predefined_pod_specs ({known})")
        spec = merge_fragment(spec, fragment)
    if job_pod.custom_pod_spec:
        spec = merge_fragment(spec, job_pod.custom_pod_spec)
    container = spec["containers"][0]
    resources = pod_resources(job_pod)
    if resources:
        res = container.setdefault("resources", {})
        for section, values in resources.items():
            res.setdefault(section, {}).update(values)

    environ = {str(k): v for k, v in (kube.env or {}).items()}
    environ.update({str(k): v for k, v in (env or {}).items()})
    if user.home and "HOME" not in environ:
        environ["HOME"] = user.home
    if environ:
        container["env"] = [e for e in container.get("env") or [] if e.get("name") not in environ] + [
            {"name": k, "value": "" if v is None else str(v)} for k, v in environ.items()]

    mounts: dict = {}
    for key, vol in (kube.volumes or {}).items():
        if not vol.mount:
            raise PodPlanError(f"backend.kube.volumes.{key}: no mount path (set 'mount')")
        if not posixpath.isabs(vol.mount):
            raise PodPlanError(f"backend.kube.volumes.{key}.mount: '{vol.mount}' is not an absolute path")
        vname = dns_label(key, 63)
        spec.setdefault("volumes", []).append(
            {"name": vname, "persistentVolumeClaim": {"claimName": vol.name or key}})
        container.setdefault("volumeMounts", []).append({"name": vname, "mountPath": vol.mount})
        mounts[vname] = vol.mount
        unsupported = [k for k in ("init_commands", "step_init_commands") if getattr(vol, k, None)]
        if unsupported or vol.capacity or vol.from_snapshot:
            warnings.append(f"backend.kube.volumes.{key}: PVC '{vol.name or key}' must already exist; "
                            "stepcab provisions no volumes and runs no init commands")

    cwd = kube.dir or None
    if cwd is None and workdir and any(_under(posixpath.normpath(str(workdir)), m) for m in mounts.values()):
        cwd = str(workdir)
    if cwd:
        container["workingDir"] = cwd
    check_file_params(cab, params, cwd=cwd, mounts=mounts)

    metadata: dict = {"name": dns_label(identity.step or cab.name), "labels": pod_labels(identity),
                      "annotations": pod_annotations(identity)}
    if kube.namespace:
        metadata["namespace"] = kube.namespace
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}
    return PodPlan(pod=pod, mounts=mounts, warnings=warnings)


# ----------------------------------------------------------------------------- validation

def validate_pod(pod: Mapping[str, Any]) -> Any:
    """Deserialise ``pod`` into the kubernetes client's ``V1Pod`` and return it.

    :raises PodPlanError: a required field is missing/invalid, or fields unknown to the model
        (which the client would silently drop) are present — each named by its path.
    """
    from kubernetes.client import ApiClient

    api = ApiClient()
    try:
        model = api._ApiClient__deserialize(copy.deepcopy(dict(pod)), "V1Pod")
    except (ValueError, TypeError) as exc:
        raise PodPlanError(f"invalid pod spec: {exc}") from None
    unknown = _dropped(dict(pod), api.sanitize_for_serialization(model), "")
    if unknown:
        raise PodPlanError("unknown pod spec field(s): " + ", ".join(unknown)
                           + " (check predefined_pod_specs / custom_pod_spec spelling)")
    return model


def _dropped(given: Any, kept: Any, path: str) -> list:
    out = []
    if isinstance(given, Mapping):
        kept = kept if isinstance(kept, Mapping) else {}
        for k, v in given.items():
            if k not in kept:
                if v not in (None, {}, []):
                    out.append(f"{path}.{k}" if path else str(k))
            else:
                out += _dropped(v, kept[k], f"{path}.{k}" if path else str(k))
    elif isinstance(given, list) and isinstance(kept, list):
        for i, (g, k) in enumerate(zip(given, kept)):
            out += _dropped(g, k, f"{path}[{i}]")
    return out


__all__ = ["CONTAINER_NAME", "PodIdentity", "PodPlan", "PodPlanError", "build_pod", "check_file_params",
           "dns_label", "label_value", "merge_fragment", "parse_quantity", "pod_labels", "pod_resources",
           "validate_pod"]
