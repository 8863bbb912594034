"""Slurm hook, trigger, sensor and operator driven directly against the real cluster.

Covers what ``dag.test()`` cannot stage: an external ``scancel``, a user killing the deferred task
(``SlurmJobTrigger.on_kill``), sshd restarting mid-poll, a retry after a worker died (reattach),
20 concurrent jobs sharing one squeue/sacct per interval, and log lines reaching the log before
the job ends.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from slurm_cluster import SCRIPT, slurm_cluster  # noqa: F401

pytestmark = pytest.mark.slow
RECIPE = Path(__file__).resolve().parent.parent / "example_recipes" / "slurm_demo.yml"


class Recorder:
    """Stands in for a trigger's logger: keeps (time, message) of every line."""

    def __init__(self):
        self.lines: list = []

    def _add(self, msg, *args, **_kw):
        self.lines.append((time.time(), msg % args if args else str(msg)))

    info = warning = debug = error = exception = _add

    def texts(self):
        return [m for _, m in self.lines]


@pytest.fixture(scope="module")
def hook(slurm_cluster):  # noqa: F811
    from airflow_provider_stepcab.hooks.slurm import SlurmHook

    h = SlurmHook(slurm_cluster.conn_id)
    yield h
    h.close()


def submit(hook, argv, *, name=None, poll=1.0, **opts):
    """Submit ``argv`` wrapped by stepcab's batch script; return (job_id, job_dir, trigger)."""
    from airflow_provider_stepcab.plan import slurm as P
    from airflow_provider_stepcab.plan.sbatch import build_sbatch_script
    from airflow_provider_stepcab.triggers.slurm import SlurmJobTrigger

    name = name or f"sc-test-{os.getpid()}-{time.monotonic_ns()}"
    options, _ = P.parse_slurm_options({"srun_opts": {"mem": "50M"}, **opts})
    directory = P.job_dir(hook.absolute("stepcab-jobs"), "tests", name, "t", -1, 1)
    spec = P.build_job_spec(options, argv=argv, name=name, directory=directory, workdir=None)
    hook.write_text(f"{directory}/job.sbatch", build_sbatch_script(spec), 0o755)
    job_id = hook.submit(f"{directory}/job.sbatch")
    trig = SlurmJobTrigger(ssh_conn_id=hook.ssh_conn_id, job_id=job_id, job_dir=directory, job_name=name,
                           poll_interval=poll, exit_grace=10, missing_grace=30)
    return job_id, directory, trig


async def first_event(trigger):
    async for ev in trigger.run():
        return ev.payload


class Background:
    """Run a coroutine on its own event loop in a thread (like the triggerer beside the test)."""

    def __init__(self, coro_factory):
        self.result, self.loop = None, asyncio.new_event_loop()
        self.task = None
        self.thread = threading.Thread(target=self._main, args=(coro_factory,), daemon=True)
        self.thread.start()

    def _main(self, factory):
        asyncio.set_event_loop(self.loop)
        self.task = self.loop.create_task(factory())
        try:
            self.result = self.loop.run_until_complete(self.task)
        except asyncio.CancelledError:
            self.result = "cancelled"
        finally:  # like asyncio.run: cancel what is left (the shared poller), then close
            rest = [t for t in asyncio.all_tasks(self.loop) if not t.done()]
            for t in rest:
                t.cancel()
            self.loop.run_until_complete(asyncio.gather(*rest, return_exceptions=True))
            self.loop.close()

    def join(self, timeout=120):
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "trigger did not finish"
        return self.result


def wait_for(pred, timeout=60, what="condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def state_of(hook, job_id):
    info = hook.jobs(job_ids=[job_id]).get(job_id)
    return info.state if info else None


# ------------------------------------------------------------------------------------------ tests

def test_external_scancel_reports_cancelled(hook):
    job_id, d, trig = submit(hook, ["sleep", "120"])
    bg = Background(lambda: first_event(trig))
    wait_for(lambda: hook.read_text(f"{d}/started") is not None, what="job start")
    hook.run(f"scancel {job_id}")
    ev = bg.join()
    assert ev["status"] == "failed"
    assert ev["exit_code"] == 143 and ev["slurm_state"] == "CANCELLED"
    assert "CANCELLED" in ev["message"]


def test_killing_the_task_cancels_the_job(hook):
    job_id, d, trig = submit(hook, ["sleep", "120"])
    bg = Background(lambda: first_event(trig))
    wait_for(lambda: hook.read_text(f"{d}/started") is not None, what="job start")
    # what the triggerer does when a user kills/clears/marks the deferred task
    bg.loop.call_soon_threadsafe(bg.task.cancel)
    assert bg.join() == "cancelled"
    asyncio.run(trig.on_kill())
    wait_for(lambda: state_of(hook, job_id) == "CANCELLED", 30, "CANCELLED in sacct")
    _, out, _ = hook.run(f"squeue --noheader --jobs={job_id}", check=False)
    assert out.strip() == ""                      # gone from squeue
    _, acct, _ = hook.run(f"sacct -X -n -P -j {job_id} --format=State")
    assert acct.strip().startswith("CANCELLED")


def test_sshd_restart_mid_poll_still_succeeds(hook, slurm_cluster):  # noqa: F811
    job_id, d, trig = submit(hook, ["sh", "-c", "echo before; sleep 8; echo after"])
    trig._log = Recorder()
    bg = Background(lambda: first_event(trig))
    wait_for(lambda: "before" in trig._log.texts(), what="first poll with output")
    pidfile = Path(slurm_cluster.state_dir) / "run" / "sshd.pid"
    pid = int(pidfile.read_text().split()[0])
    children = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout.split()
    for p in [pid, *map(int, children)]:           # the listener and its per-connection sshds
        try:
            os.kill(p, signal.SIGTERM)
        except ProcessLookupError:
            pass
    time.sleep(4)
    up = subprocess.run(["bash", str(SCRIPT), "up"], capture_output=True, text=True, timeout=300)
    assert up.returncode == 0, up.stderr
    hook.close()
    ev = bg.join(180)
    assert ev["status"] == "success", ev
    assert any("SSH to" in m and "failed" in m for m in trig._log.texts()), trig._log.texts()
    assert "after" in trig._log.texts()


def test_log_lines_stream_before_the_job_ends(hook):
    job_id, d, trig = submit(hook, ["sh", "-c", 'echo early-line; while [ ! -e "$STEPCAB_JOB_DIR/release" ]; '
                                                'do sleep 0.3; done; echo late-line'])
    trig._log = Recorder()
    bg = Background(lambda: first_event(trig))
    wait_for(lambda: "early-line" in trig._log.texts(), what="early line in the log")
    assert state_of(hook, job_id) == "RUNNING"    # the job is still running
    assert hook.read_text(f"{d}/exitcode") is None
    hook.run(f"touch {d}/release")
    ev = bg.join()
    assert ev["status"] == "success"
    assert trig._log.texts().index("early-line") < trig._log.texts().index("late-line")


@pytest.fixture
def counting_wrappers(hook):
    """~stepcab/bin/{squeue,sacct} log each call, then exec the real ones; removed afterwards."""
    log = "/tmp/stepcab-query-count.log"
    hook.run(f"rm -f {log}; mkdir -p ~/bin; cp ~/.bashrc ~/.bashrc.stepcab-test")
    for cmd in ("squeue", "sacct"):
        hook.write_text(f"{hook.home()}/bin/{cmd}",
                        f"#!/bin/sh\necho \"$(date +%s.%N) {cmd} $*\" >> {log}\nexec /usr/bin/{cmd} \"$@\"\n", 0o755)
    hook.run("{ echo 'PATH=\"$HOME/bin:$PATH\"'; cat ~/.bashrc.stepcab-test; } > ~/.bashrc")
    hook.close()
    yield log
    hook.run("mv ~/.bashrc.stepcab-test ~/.bashrc; rm -f ~/bin/squeue ~/bin/sacct; rmdir ~/bin", check=False)
    hook.close()


def test_twenty_concurrent_jobs_share_one_query_per_interval(hook, counting_wrappers):
    from airflow_provider_stepcab.triggers.slurm import get_poller

    jobs = [submit(hook, ["sh", "-c", f"sleep {4 + i % 4}; echo done-{i}"]) for i in range(20)]
    polls = {}

    async def all_of_them():
        results = await asyncio.gather(*(first_event(t) for _, _, t in jobs))
        polls.update(get_poller(hook.ssh_conn_id).stats)
        return results

    start = time.time()
    events = asyncio.run(all_of_them())
    assert [e["status"] for e in events] == ["success"] * 20
    ours = {j[0] for j in jobs}   # only our poller's calls (other sessions may query the same cluster)
    calls = [line.split() for line in (hook.read_text(counting_wrappers) or "").splitlines()
             if ours & set(line.split("--jobs=")[-1].split()[0].split(",")) and "--jobs=" in line]
    squeue = [float(c[0]) for c in calls if c[1] == "squeue" and float(c[0]) >= start]
    sacct = [float(c[0]) for c in calls if c[1] == "sacct" and float(c[0]) >= start]
    assert squeue, calls
    assert len(squeue) == polls["squeue"] == polls["cycles"]    # one squeue per poll cycle for all 20
    assert len(sacct) <= polls["cycles"]
    # one call per 1 s interval: never two within 0.5 s, and about duration / interval in total
    gaps = [b - a for a, b in zip(squeue, squeue[1:])]
    assert min(gaps) > 0.5, gaps
    assert len(squeue) <= (squeue[-1] - squeue[0]) / 1.0 + 2


def _ctx(try_number, work):
    """A minimal task context for calling the operator directly."""
    pushed = {}
    ti = SimpleNamespace(dag_id="stepcab_reattach", run_id=f"manual__{os.getpid()}_{int(time.time())}",
                         task_id="count", try_number=try_number, map_index=-1,
                         xcom_push=lambda key, value: pushed.__setitem__(key, value),
                         xcom_pull=lambda *a, **k: None)
    return {"ti": ti, "dag_run": SimpleNamespace(conf={"stepcab_workdir": str(work)}), "params": {},
            "pushed": pushed}


def test_retry_after_worker_death_reattaches(hook, slurm_cluster, tmp_path):  # noqa: F811
    from airflow.sdk.exceptions import TaskDeferred

    from airflow_provider_stepcab.operators.slurm import StepcabSlurmOperator

    work = Path(slurm_cluster.work_dir) / f"reattach-{os.getpid()}"
    work.mkdir(exist_ok=True)
    work.chmod(0o1777)
    ctx1 = _ctx(1, work)
    op = StepcabSlurmOperator(task_id="count", recipe_file=str(RECIPE), recipe_name="slurm_demo",
                              step_path=["count"])
    with pytest.raises(TaskDeferred) as first:
        op.execute(ctx1)
    job1 = ctx1["pushed"]["slurm_job"]            # recorded before deferring
    assert job1["reattached"] is False
    # the worker dies here: nobody runs the trigger. Airflow retries the task as try 2.
    ctx2 = _ctx(2, work)
    ctx2["ti"].run_id = ctx1["ti"].run_id
    op2 = StepcabSlurmOperator(task_id="count", recipe_file=str(RECIPE), recipe_name="slurm_demo",
                               step_path=["count"])
    with pytest.raises(TaskDeferred) as second:
        op2.execute(ctx2)
    job2 = ctx2["pushed"]["slurm_job"]
    assert job2["reattached"] is True and job2["job_id"] == job1["job_id"]
    assert second.value.trigger.job_id == first.value.trigger.job_id
    event = asyncio.run(first_event(second.value.trigger))
    assert event["status"] == "success"
    assert op2.execute_complete(ctx2, event) is None  # success; the cab has no outputs: no return_value
    names = ",".join(sorted({job1["job_name"], op2_name(ctx2)}))
    _, acct, _ = hook.run(f"sacct -X -n -P --name={names} --starttime=now-1hour --format=JobIDRaw,State")
    assert [line.split("|")[0] for line in acct.split()] == [job1["job_id"]]   # one job for both tries


def op2_name(ctx):
    from airflow_provider_stepcab.plan.sbatch import job_name

    ti = ctx["ti"]
    return job_name(ti.dag_id, ti.run_id, ti.task_id, -1, ti.try_number)


def test_slurm_job_sensor_waits_for_a_foreign_job(hook):
    from airflow.sdk.exceptions import AirflowException, TaskDeferred

    from airflow_provider_stepcab.sensors.slurm import SlurmJobSensor

    name = f"foreign-{os.getpid()}"
    _, out, _ = hook.run(f"sbatch --parsable --job-name={name} --mem=20M --output=/dev/null --wrap='sleep 2'")
    sensor = SlurmJobSensor(task_id="wait", ssh_conn_id=hook.ssh_conn_id, job_name=name, poll_interval=1)
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute({})
    assert deferred.value.trigger.job_id == out.strip()
    assert deferred.value.trigger.cancel_on_kill is False
    event = asyncio.run(first_event(deferred.value.trigger))
    assert sensor.execute_complete({}, event)["slurm_state"] == "COMPLETED"
    _, bad, _ = hook.run(f"sbatch --parsable --mem=20M --output=/dev/null --wrap='exit 3'")
    sensor = SlurmJobSensor(task_id="wait2", ssh_conn_id=hook.ssh_conn_id, job_id=bad.strip(), poll_interval=1)
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute({})
    event = asyncio.run(first_event(deferred.value.trigger))
    with pytest.raises(AirflowException, match="FAILED"):
        sensor.execute_complete({}, event)
