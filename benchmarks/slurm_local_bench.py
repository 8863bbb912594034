"""Local (login-node) Slurm waits at scale: queries per interval and memory (not a timed test).

    .venv/bin/python benchmarks/slurm_local_bench.py [--jobs 200] [--interval 2] [--mode both]

``--mode local``: N forked processes, each waiting on its own job with a local ``SlurmJobTrigger``
in its own event loop — what N Edge-worker task processes on a login node do (``ssh_conn_id:
local``). They share :class:`~airflow_provider_stepcab.hooks.slurm_local.SharedJobPoll`; printed:
``squeue``/``sacct`` calls per poll interval for all of them (target: 1 per cluster) and the RSS of
one waiting process (the real cost of a local wait: a worker process each).

``--mode ssh``: N ``SlurmJobTrigger``\\ s over SSH in one event loop (the triggerer); printed: the
poller's queries per cycle and the triggerer's memory per waiting job (RSS growth / N).

Jobs are ``sleep 2`` with 1 CPU and 50M: on the 2-CPU test node most of them queue.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="stepcab-bench-"))


def rss_mib(pid: str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def submit_all(hook, n: int, tag: str) -> list:
    from airflow_provider_stepcab.plan import slurm as P
    from airflow_provider_stepcab.plan.sbatch import build_sbatch_script

    options, _ = P.parse_slurm_options({"srun_opts": {"mem": "50M", "cpus-per-task": 1}})
    out = []
    for i in range(n):
        name = f"sc-bench-{tag}-{os.getpid()}-{i}"
        directory = P.job_dir(hook.absolute("stepcab-bench"), "bench", tag, "t", i, 1)
        spec = P.build_job_spec(options, argv=["sleep", "2"], name=name, directory=directory, workdir=None)
        hook.write_text(f"{directory}/job.sbatch", build_sbatch_script(spec), 0o755)
        out.append((hook.submit(f"{directory}/job.sbatch"), directory, name))
    return out


async def first(trigger):
    async for event in trigger.run():
        return event.payload


def bench_local(n: int, interval: float) -> None:
    from airflow_provider_stepcab.hooks.slurm_local import LocalSlurmHook, SharedJobPoll
    from airflow_provider_stepcab.triggers.slurm import SlurmJobTrigger

    state = tempfile.mkdtemp(prefix="stepcab-bench-poll-")
    os.environ["STEPCAB_SLURM_POLL_DIR"] = state
    jobs = submit_all(LocalSlurmHook(), n, "local")
    start = time.time()
    pids, reader, writer = [], *os.pipe()
    for job_id, directory, name in jobs:
        pid = os.fork()
        if pid == 0:
            os.close(reader)
            trig = SlurmJobTrigger(ssh_conn_id="local", job_id=job_id, job_dir=directory, job_name=name,
                                   poll_interval=interval, stream_logs=False, missing_grace=600)
            status = asyncio.run(first(trig))["status"]
            os.write(writer, f"{status} {rss_mib():.1f}\n".encode())
            os._exit(0)
        pids.append(pid)
    os.close(writer)
    for pid in pids:
        os.waitpid(pid, 0)
    results = os.read(reader, 1 << 20).decode().split("\n")
    took = time.time() - start
    stats = SharedJobPoll(os.path.join(state, os.listdir(state)[0])).stats()
    ok = sum(1 for r in results if r.startswith("success"))
    rss = sorted(float(r.split()[1]) for r in results if r)
    print(f"local: {n} waiting processes, {ok} succeeded in {took:.0f} s; squeue {stats['squeue']}, "
          f"sacct {stats['sacct']} in {took / interval:.0f} intervals of {interval:g} s "
          f"-> {stats['squeue'] / (took / interval):.2f} squeue per interval; "
          f"RSS of one waiting process: median {rss[len(rss) // 2]:.0f} MiB")


def bench_ssh(n: int, interval: float) -> None:
    from airflow_provider_stepcab.hooks.slurm import SlurmHook
    from airflow_provider_stepcab.triggers.slurm import SlurmJobTrigger, get_poller

    conn = subprocess.run(["bash", str(ROOT / "scripts/cluster/cluster.sh"), "conn"], check=True,
                          capture_output=True, text=True).stdout.strip()
    os.environ["AIRFLOW_CONN_STEPCAB_CLUSTER"] = conn
    hook = SlurmHook("stepcab_cluster")
    jobs = submit_all(hook, n, "ssh")
    before = rss_mib()

    async def run_all():
        triggers = [SlurmJobTrigger(ssh_conn_id="stepcab_cluster", job_id=j, job_dir=d, job_name=nm,
                                    poll_interval=interval, stream_logs=False, missing_grace=600)
                    for j, d, nm in jobs]
        tasks = [asyncio.ensure_future(first(t)) for t in triggers]
        await asyncio.sleep(3 * interval)
        during = rss_mib()
        events = await asyncio.gather(*tasks)
        return events, during, dict(get_poller("stepcab_cluster").stats)

    start = time.time()
    events, during, stats = asyncio.run(run_all())
    took = time.time() - start
    ok = sum(1 for e in events if e["status"] == "success")
    print(f"ssh: {n} triggers in one loop, {ok} succeeded in {took:.0f} s; squeue {stats['squeue']} / "
          f"{stats['cycles']} cycles, sacct {stats['sacct']}; triggerer RSS +{during - before:.1f} MiB while "
          f"waiting = {1024 * (during - before) / n:.0f} KiB per job (peak RSS "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB)")
    hook.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", type=int, default=200)
    ap.add_argument("--interval", type=float, default=2.0)
    ap.add_argument("--mode", choices=("local", "ssh", "both"), default="both")
    args = ap.parse_args()
    subprocess.run(["bash", str(ROOT / "scripts/cluster/cluster.sh"), "up"], check=True, capture_output=True)
    if args.mode in ("local", "both"):
        bench_local(args.jobs, args.interval)
    if args.mode in ("ssh", "both"):
        bench_ssh(args.jobs, args.interval)


if __name__ == "__main__":
    main()
