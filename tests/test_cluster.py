"""The test cluster is real: jobs submitted over SSH run under Slurm and show in accounting."""

import time

import pytest

from slurm_cluster import slurm_cluster  # noqa: F401 - fixture

pytestmark = pytest.mark.slow


def _run(hook, command: str) -> tuple[int, str, str]:
    with hook.get_conn() as client:
        code, out, err = hook.exec_ssh_client_command(client, command, get_pty=False, environment=None,
                                                       timeout=60)
    return code, out.decode(), err.decode()


def test_sbatch_over_ssh_runs_and_is_accounted(slurm_cluster):  # noqa: F811
    from airflow.providers.ssh.hooks.ssh import SSHHook

    hook = SSHHook(ssh_conn_id=slurm_cluster.conn_id)
    code, out, err = _run(hook, f"cd {slurm_cluster.work_dir} && sbatch --parsable "
                                "-o probe-%j.out --wrap 'echo hello from $(whoami); exit 3'")
    assert code == 0, err
    job_id = out.strip().split(";")[0]
    deadline = time.monotonic() + 60
    state = ""
    while time.monotonic() < deadline:
        _, out, _ = _run(hook, f"sacct -X -n -P -j {job_id} --format=State,ExitCode")
        state = out.strip()
        if state.startswith(("FAILED", "COMPLETED")):
            break
        time.sleep(0.5)
    assert state == "FAILED|3:0"
    _, out, _ = _run(hook, f"cat {slurm_cluster.work_dir}/probe-{job_id}.out")
    assert out.strip() == f"hello from {slurm_cluster.user}"
