"""Typed backend option models, mirroring Stimela 2.1.4's backend schema (``StimelaBackendOptions``).

Field names, types and defaults follow Stimela; parsing and merging live in :mod:`.backends`.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import field
from typing import Any, Dict, List, Optional, Union

from .records import record

DEFAULT_SELECT = ["singularity", "native"]


def _choices(*values: str) -> dict:
    return {"choices": values}


@record
class NativeOptions:
    """``backend.native``: how a step runs as a local process."""
    enable: bool = True
    virtual_env: Optional[str] = None


@record
class BindDir:
    """One entry of ``singularity.bind_dirs``: a host path bound into the container."""
    host: Optional[str] = None
    target: Optional[str] = None
    mode: str = field(default="rw", metadata=_choices("rw", "ro"))
    mkdir: bool = False
    conditional: Union[bool, str] = True


@record
class SingularityOptions:
    """``backend.singularity``: image building and ``exec`` settings."""
    enable: bool = True
    image_dir: str = os.path.expanduser("~/.singularity")
    auto_build: bool = True
    rebuild: bool = False
    executable: Optional[str] = None
    remote_only: bool = False
    contain: bool = True
    containall: bool = False
    bind_tmp: Union[bool, str] = True
    clean_tmp: bool = True
    bind_dirs: Dict[str, BindDir] = field(default_factory=dict)
    env: Dict[str, str] = field(default_factory=dict)
    ephemeral: Dict[str, str] = field(default_factory=dict)
    # stepcab extensions (Stimela 2.1.4 rejects these keys)
    nv: bool = False                                        # --nv (NVIDIA GPUs)
    extra_options: List[str] = field(default_factory=list)  # more `exec` options, before the binds


@record
class PodmanOptions:
    """stepcab's ``podman`` (and ``docker``) backend section (not part of Stimela).

    Binds, ``env``, ``bind_tmp`` and ``ephemeral`` mean what they mean for Singularity.
    """

    enable: bool = True
    executable: Optional[str] = None          # default: the section name (podman / docker) on PATH
    root: Optional[str] = None                # podman --root (storage)
    runroot: Optional[str] = None             # podman --runroot
    runtime: Optional[str] = None             # podman --runtime, e.g. runc
    global_options: List[str] = field(default_factory=list)   # before `run`, e.g. [--cgroup-manager, cgroupfs]
    network: Optional[str] = "none"
    user: Optional[str] = "auto"              # auto: --user <uid>:<gid> of the worker; "" / none: image default
    userns: Optional[str] = None
    ulimits: Dict[str, str] = field(default_factory=dict)     # {nofile: "1024:1024"} -> --ulimit nofile=1024:1024
    memory: Optional[str] = None              # --memory
    cpus: Optional[str] = None                # --cpus
    devices: List[str] = field(default_factory=list)          # --device
    pull: Optional[str] = None                # --pull (always|missing|never|newer)
    auto_pull: bool = True                    # pull a missing image before the run
    extra_options: List[str] = field(default_factory=list)    # more `run` options, before the image
    stop_timeout: int = 10                    # seconds `stop -t` waits when the task is killed
    bind_tmp: Union[bool, str] = True
    clean_tmp: bool = True
    bind_dirs: Dict[str, BindDir] = field(default_factory=dict)
    env: Dict[str, str] = field(default_factory=dict)
    ephemeral: Dict[str, str] = field(default_factory=dict)


@record
class PodLimits:
    """A resource request or limit (``memory``/``cpu``) of a pod."""
    request: Optional[str] = None
    limit: Optional[str] = None


@record
class KubePodSpec:
    """A pod's type (node selection), memory/CPU requests and limits and custom spec (``job_pod`` etc.)."""
    type: Optional[str] = None
    memory: PodLimits = field(default_factory=PodLimits)
    cpu: PodLimits = field(default_factory=PodLimits)
    custom_pod_spec: Dict[str, Any] = field(default_factory=dict)


_EXIST = _choices("must_exist", "allow_reuse", "recreate", "cant_exist")


@record
class KubeVolume:
    """One entry of ``kube.volumes``: a persistent volume claim mounted into pods."""
    name: Optional[str] = None
    capacity: Optional[str] = None
    storage_class_name: Optional[str] = None
    access_modes: List[str] = field(default_factory=lambda: ["ReadWriteOnce"])
    provision_timeout: int = 1200
    mount: Optional[str] = None
    from_snapshot: Optional[str] = None
    at_start: str = field(default="allow_reuse", metadata=_EXIST)
    at_step: str = field(default="allow_reuse", metadata=_EXIST)
    init_commands: List[str] = field(default_factory=list)
    step_init_commands: List[str] = field(default_factory=list)
    lifecycle: str = field(default="session", metadata=_choices("persist", "session", "step"))
    append_id: bool = True


@record
class DaskCluster:
    """``kube.dask_cluster``: Stimela's Dask cluster settings (parsed, not acted on here)."""
    enable: bool = False
    capture_logs: bool = True
    capture_logs_style: Optional[str] = "blue"
    name: Optional[str] = None
    num_workers: int = 1
    threads_per_worker: int = 1
    memory_limit: Optional[str] = None
    worker_pod: KubePodSpec = field(default_factory=KubePodSpec)
    scheduler_pod: KubePodSpec = field(default_factory=KubePodSpec)
    forward_dashboard_port: int = 8787


@record
class KubeDebug:
    """``kube.debug``: verbosity and pod-keeping switches for troubleshooting."""
    verbose: int = 0
    pause_on_start: bool = False
    pause_on_cleanup: bool = False
    save_spec: Optional[str] = None
    log_events: bool = False
    event_format: str = ("=NOSUBST('\\[k8s event type: {event.type}, reason: {event.reason}] "
                         "{event.message}')")
    event_colors: Dict[str, str] = field(
        default_factory=lambda: {"warning": "blue", "error": "yellow", "default": "grey50"})


@record
class KubeUser:
    """``kube.user``: the identity (name, uid/gid, home) a pod runs as."""
    name: Optional[str] = None
    group: Optional[str] = None
    uid: Optional[int] = None
    gid: Optional[int] = None
    gecos: Optional[str] = None
    home: Optional[str] = None
    home_ramdisk: bool = True
    inject_nss: bool = True


@record
class KubeOnExit:
    """``kube.infrastructure.on_exit``: clean up the session's pods at the end."""
    cleanup_pods: bool = True


@record
class KubeOnStartup:
    """``kube.infrastructure.on_startup``: report/clean up leftover pods and PVCs at the start."""
    report_pods: bool = True
    cleanup_pods: bool = True
    report_pvcs: bool = True
    cleanup_pvcs: bool = True


@record
class KubeInfrastructure:
    """``kube.infrastructure``: start-up and exit housekeeping of pods and PVCs."""
    on_exit: KubeOnExit = field(default_factory=KubeOnExit)
    on_startup: KubeOnStartup = field(default_factory=KubeOnStartup)


@record
class KubeOptions:
    """``backend.kube``: running steps as Kubernetes pods."""
    enable: bool = True
    infrastructure: KubeInfrastructure = field(default_factory=KubeInfrastructure)
    context: Optional[str] = None
    namespace: Optional[str] = None
    dask_cluster: DaskCluster = field(default_factory=DaskCluster)
    service_account: str = "compute-runner"
    kubectl_path: str = "kubectl"
    volumes: Dict[str, KubeVolume] = field(default_factory=dict)
    env: Dict[str, str] = field(default_factory=dict)
    dir: Optional[str] = None
    provisioning_timeout: int = 600
    connection_timeout: int = 60
    always_pull_images: bool = False
    debug: KubeDebug = field(default_factory=KubeDebug)
    job_pod: KubePodSpec = field(default_factory=KubePodSpec)
    capture_logs_style: Optional[str] = "blue"
    user: KubeUser = field(default_factory=KubeUser)
    predefined_pod_specs: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    # stepcab: raise the memory of a retry after an OOMKilled try (plan/escalate.py; docs/kubernetes.md)
    retry_resources: Dict[str, Any] = field(default_factory=dict)


@record
class SlurmOptions:
    """``backend.slurm``: wrapping a step's command in an sbatch job."""
    enable: bool = False
    srun_path: Optional[str] = None
    srun_opts: Dict[str, str] = field(default_factory=dict)
    srun_opts_build: Optional[Dict[str, str]] = None
    build_local: bool = True
    # stepcab's remote submission over SSH (Stimela 2.1.4 rejects these keys). The defaults here
    # are the only ones: plan/slurm.py's SlurmSubmitOptions takes them from this class and is the
    # one parser and checker of the values (docs/slurm.md). Types stay as lenient as that parser.
    ssh_conn_id: Optional[str] = "ssh_default"
    remote_dir: str = "stepcab-jobs"
    remote_workdir: Optional[str] = None
    remote_dependencies: Union[List[str], str] = field(default_factory=list)   # shell lines
    sbatch_opts: Dict[str, Any] = field(default_factory=dict)
    poll_interval: float = 10.0
    stream_logs: bool = True
    cleanup: Union[str, bool] = "never"         # never | on_success | always (true = always)
    exit_grace: float = 120.0
    missing_grace: float = 120.0
    ssh_patience: float = 3600.0
    term_grace: int = 10
    log_chunk_size: int = 65536
    retry_resources: Dict[str, Any] = field(default_factory=dict)   # plan/escalate.py (mem/time rules)


@record
class BackendOptions:
    """The merged, typed backend settings of one step (``StimelaBackendOptions`` in Stimela)."""

    select: List[str] = field(default_factory=lambda: list(DEFAULT_SELECT))
    default_registry: str = "quay.io/stimela2"
    override_registries: Dict[str, str] = field(default_factory=dict)
    singularity: SingularityOptions = field(default_factory=SingularityOptions)
    kube: KubeOptions = field(default_factory=KubeOptions)
    native: NativeOptions = field(default_factory=NativeOptions)
    slurm: SlurmOptions = field(default_factory=SlurmOptions)
    rlimits: Dict[str, Any] = field(default_factory=dict)
    verbose: int = 0
    extras: Dict[str, Any] = field(default_factory=dict)  # docker / podman / airflow, unvalidated

    @property
    def wrapper(self) -> Optional[str]:
        """``"slurm"`` when the slurm wrapper is enabled."""
        return "slurm" if self.slurm.enable is True else None

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        extras = d.pop("extras")
        d.update(extras)
        return d
