"""A fake one-node Kubernetes cluster for tests: the pods API over HTTP, containers run by podman.

Usage::

    with KubeFake(claims={"data": str(tmp_path)}) as kube:
        os.environ.update(kube.env())         # AIRFLOW_CONN_<ID> + KUBECONFIG-free setup
        ...                                   # KubernetesPodOperator(kubernetes_conn_id=kube.conn_id)
        kube.cluster.created                  # every pod body as the client sent it
        kube.cluster.requests                 # (method, path, query) of every call

:class:`KubeFake` writes a real kubeconfig pointing at the server and offers an Airflow
``kubernetes`` connection (``AIRFLOW_CONN_…`` JSON with ``kube_config_path`` and ``namespace``),
so operators reach the fake through the real kubernetes / kubernetes_asyncio clients.
The test image is built once with ``scripts/podman-test-image.sh`` into a podman storage of its
own (``/var/tmp/stepcab-kube-fake``), so other tests' rebuilds do not disturb it.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Optional

from .api import FakeApiServer
from .cluster import FakeCluster
from .podman import IMAGE, ROOT, RUNROOT, available, image_exists, podman_base

REPO = Path(__file__).resolve().parents[2]
IMAGE_SCRIPT = REPO / "scripts" / "podman-test-image.sh"

__all__ = ["KubeFake", "FakeCluster", "IMAGE", "ensure_image", "available"]


def ensure_image(image: str = IMAGE) -> str:
    """Build the busybox test image into the fake's podman storage when missing."""
    base = podman_base()
    if image_exists(image, base):
        return image
    env = dict(os.environ, STEPCAB_PODMAN_ROOT=ROOT, STEPCAB_PODMAN_RUNROOT=RUNROOT, STEPCAB_PODMAN_IMAGE=image)
    out = subprocess.run(["bash", str(IMAGE_SCRIPT)], env=env, capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        raise RuntimeError(f"{IMAGE_SCRIPT} failed:\n{out.stdout}\n{out.stderr}")
    return image


class KubeFake:
    """Start the fake cluster + API server; write a kubeconfig; describe the Airflow connection.

    :param claims: PVC name → host directory.
    :param namespace: the connection's default namespace.
    :param conn_id: the Airflow connection id (``AIRFLOW_CONN_<CONN_ID>``).
    """

    def __init__(self, *, claims: Optional[dict] = None, namespace: str = "stepcab", conn_id: str = "kube_fake",
                 workdir: Optional[str] = None, **cluster_kw):
        self.cluster = FakeCluster(claims=claims, **cluster_kw)
        self.server = FakeApiServer(self.cluster)
        self.namespace, self.conn_id = namespace, conn_id
        self.dir = Path(workdir or tempfile.mkdtemp(prefix="kube-fake-cfg-"))
        self.kubeconfig = self.dir / "kubeconfig"

    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> "KubeFake":
        self.server.start()
        self.kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "tester", "user": {"token": "fake-token"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "tester",
                                                      "namespace": self.namespace}}]}))
        return self

    def connection(self) -> dict:
        """The Airflow connection as a dict (``conn_type`` kubernetes)."""
        return {"conn_type": "kubernetes",
                "extra": {"kube_config_path": str(self.kubeconfig), "namespace": self.namespace}}

    def env(self) -> dict:
        """Environment that defines the connection for Airflow (``AIRFLOW_CONN_<ID>``)."""
        return {f"AIRFLOW_CONN_{self.conn_id.upper()}": json.dumps(self.connection())}

    def stop(self) -> None:
        self.cluster.stop()
        self.server.stop()

    def __enter__(self) -> "KubeFake":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ test helpers
    def created_pods(self) -> list:
        return list(self.cluster.created)

    def calls(self, method: Optional[str] = None, contains: str = "") -> list:
        return [r for r in self.cluster.requests if (method is None or r[0] == method) and contains in r[1]]
