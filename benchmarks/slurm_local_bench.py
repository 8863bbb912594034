"""Many waiting Slurm tasks at once: scheduler queries per poll interval and memory per waiting job.

    .venv/bin/python benchmarks/slurm_local_bench.py [--jobs 200] [--local-jobs 50] [--interval 2]
                                                     [--window 10] [--mode both]

What 200 mapped Slurm tasks of a DAG cost while their jobs wait in the queue, measured against the
project's test cluster (``scripts/cluster/cluster.sh up``; not a timed test). The jobs are submitted
**held** (``#SBATCH --hold``): they stay ``PENDING`` in the real queue however small the shared 2-CPU
node is and occupy none of it (other users' jobs keep running). After ``--window`` poll intervals of
waiting they are ``scancel``\\ led at once: every wait ends through ``sacct`` (gone from squeue).

``--mode ssh`` (the deferred path): N :class:`SlurmJobTrigger`\\ s over SSH in one event loop, as the
triggerer holds N deferred tasks. Counted: the poller's own ``squeue``/``sacct`` counters and,
independently, **slurmctld's** RPC counters (``sdiag``: the SSH login's RPCs, and all
``REQUEST_JOB_INFO``: squeue's request) over the waiting window; memory: triggerer RSS growth / N.

``--mode local`` (``ssh_conn_id: local``, Edge worker on the login node): N forked processes each
waiting on its own job, as N worker task processes do, sharing one poll
(:class:`~airflow_provider_stepcab.hooks.slurm_local.SharedJobPoll`). Counted: invocations of
``squeue``/``sacct`` by **wrappers put first on PATH** (independent of the code under test);
memory: the RSS of one waiting process (the real cost of a local wait is a worker process).

Prints a markdown table (for ``bench.py --slurm`` and ``results/``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import resource
import shutil
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


def sdiag(command: tuple = ("sdiag",)) -> dict:
    """slurmctld's (or, with ``sacctmgr show stats``, slurmdbd's) RPC counters:
    ``{message type: count}`` and ``{"user:<name>": count}``."""
    out = subprocess.run(list(command), capture_output=True, text=True).stdout
    counts, section = {}, None
    for line in out.splitlines():
        if "by message type" in line:
            section = "type"
        elif "by user" in line:
            section = "user"
        elif line.strip() and not line.startswith("\t") and not line.startswith(" "):
            section = None if "Pending" in line or "*" in line else section
        m = re.match(r"^\s+(\S+)\s+\(\s*\d+\)\s+count:(\d+)", line)
        if m and section:
            counts[(m.group(1) if section == "type" else f"user:{m.group(1)}")] = int(m.group(2))
    return counts


def delta(after: dict, before: dict, key: str) -> int:
    return after.get(key, 0) - before.get(key, 0)


DBD = ("sacctmgr", "show", "stats")


def submit_all(hook, n: int, tag: str) -> list:
    from airflow_provider_stepcab.plan import slurm as P
    from airflow_provider_stepcab.plan.sbatch import build_sbatch_script

    options, _ = P.parse_slurm_options({"srun_opts": {"mem": "20M", "cpus-per-task": 1, "hold": True}})
    out = []
    for i in range(n):
        name = f"sc-bench-{tag}-{os.getpid()}-{i}"
        directory = P.job_dir(hook.absolute("stepcab-bench"), "bench", tag, "t", i, 1)
        spec = P.build_job_spec(options, argv=["true"], name=name, directory=directory, workdir=None)
        hook.write_text(f"{directory}/job.sbatch", build_sbatch_script(spec), 0o755)
        out.append((hook.submit(f"{directory}/job.sbatch"), directory, name))
    return out


def cancel_all(hook, jobs: list) -> None:
    ids = [j for j, _, _ in jobs]
    for i in range(0, len(ids), 100):
        hook.run("scancel " + " ".join(ids[i:i + 100]), check=False)


async def first(trigger):
    async for event in trigger.run():
        return event.payload


def path_wrappers(log: str) -> str:
    """A directory with ``squeue``/``sacct`` wrappers that log each call, then run the real tool."""
    wrap = tempfile.mkdtemp(prefix="stepcab-bench-path-")
    for tool in ("squeue", "sacct"):
        real = shutil.which(tool)
        script = Path(wrap) / tool
        script.write_text(f"#!/bin/sh\necho {tool} >> {log}\nexec {real} \"$@\"\n")
        script.chmod(0o755)
    return wrap


def bench_local(n: int, interval: float, window: int) -> str:
    from airflow_provider_stepcab.hooks.slurm_local import LocalSlurmHook
    from airflow_provider_stepcab.triggers.slurm import SlurmJobTrigger

    state = tempfile.mkdtemp(prefix="stepcab-bench-poll-")
    os.environ["STEPCAB_SLURM_POLL_DIR"] = state
    calls = os.path.join(state, "calls.log")
    hook = LocalSlurmHook()
    jobs = submit_all(hook, n, "local")
    os.environ["PATH"] = path_wrappers(calls) + os.pathsep + os.environ["PATH"]
    pids, reader, writer = [], *os.pipe()
    for job_id, directory, name in jobs:
        pid = os.fork()
        if pid == 0:
            os.close(reader)
            trig = SlurmJobTrigger(ssh_conn_id="local", job_id=job_id, job_dir=directory, job_name=name,
                                   poll_interval=interval, stream_logs=False, missing_grace=600, exit_grace=0)

            async def wait_and_measure():
                task = asyncio.ensure_future(first(trig))
                await asyncio.sleep((window + 1) * interval)   # still waiting: its RSS now
                rss = rss_mib()
                return (await task)["status"], rss

            status, rss = asyncio.run(wait_and_measure())
            os.write(writer, f"{status} {rss:.1f}\n".encode())
            os._exit(0)
        pids.append(pid)
    os.close(writer)
    time.sleep(interval)                                   # every process has asked once
    start_calls = _count(calls)
    time.sleep(window * interval)
    in_window = _count(calls)
    waiting = [dict(zip(("squeue", "sacct"), (in_window[0] - start_calls[0], in_window[1] - start_calls[1])))]
    time.sleep(interval * 1.5)
    cancel_all(hook, jobs)
    ended = time.time()
    for pid in pids:
        os.waitpid(pid, 0)
    took = time.time() - ended
    results = [r for r in os.read(reader, 1 << 20).decode().split("\n") if r]
    rss = sorted(float(r.split()[1]) for r in results)
    statuses = {r.split()[0] for r in results}
    after = _count(calls)
    w = waiting[0]
    return (f"local (N processes) | {n} | {window} x {interval:g} s | {w['squeue'] / window:.2f} | "
            f"{w['sacct'] / window:.2f} | PATH wrappers | {after[0]} / {after[1]} | "
            f"{rss[len(rss) // 2]:.0f} MiB RSS per waiting process | {took:.1f} s, {'/'.join(sorted(statuses))}")


def _count(path: str) -> tuple:
    try:
        lines = Path(path).read_text().split()
    except FileNotFoundError:
        return 0, 0
    return lines.count("squeue"), lines.count("sacct")


def bench_ssh(n: int, interval: float, window: int) -> str:
    from airflow_provider_stepcab.hooks.slurm import SlurmHook
    from airflow_provider_stepcab.triggers.slurm import SlurmJobTrigger, get_poller

    conn = subprocess.run(["bash", str(ROOT / "scripts/cluster/cluster.sh"), "conn"], check=True,
                          capture_output=True, text=True).stdout.strip()
    os.environ["AIRFLOW_CONN_STEPCAB_CLUSTER"] = conn
    login = re.search(r'"login":\s*"([^"]+)"', conn).group(1)
    hook = SlurmHook("stepcab_cluster")
    jobs = submit_all(hook, n, "ssh")

    async def run_all():
        before = rss_mib()
        triggers = [SlurmJobTrigger(ssh_conn_id="stepcab_cluster", job_id=j, job_dir=d, job_name=nm,
                                    poll_interval=interval, stream_logs=False, missing_grace=600, exit_grace=0)
                    for j, d, nm in jobs]
        tasks = [asyncio.ensure_future(first(t)) for t in triggers]
        await asyncio.sleep(2 * interval)                  # connected, every job registered
        poller = get_poller("stepcab_cluster")
        s0, c0, d0 = dict(poller.stats), sdiag(), sdiag(DBD)
        await asyncio.sleep(window * interval)
        s1, c1, d1 = dict(poller.stats), sdiag(), sdiag(DBD)
        during = rss_mib()
        await asyncio.to_thread(cancel_all, hook, jobs)
        ended = time.time()
        events = await asyncio.gather(*tasks)
        return events, before, during, s0, s1, c0, c1, d0, d1, time.time() - ended, dict(poller.stats)

    events, before, during, s0, s1, c0, c1, d0, d1, took, final = asyncio.run(run_all())
    cycles = s1["cycles"] - s0["cycles"]
    statuses = {e["status"] for e in events}
    hook.close()
    return (f"ssh (one triggerer loop) | {n} | {cycles} cycles of {interval:g} s | "
            f"{(s1['squeue'] - s0['squeue']) / max(cycles, 1):.2f} | {(s1['sacct'] - s0['sacct']) / max(cycles, 1):.2f} | "
            f"slurmctld: {delta(c1, c0, 'user:' + login) / 2 / max(cycles, 1):.2f} squeue of `{login}` per cycle "
            f"({delta(c1, c0, 'user:' + login)} RPCs, 2 per squeue); slurmdbd: "
            f"{delta(d1, d0, 'DBD_GET_JOBS_COND') / max(cycles, 1):.2f} sacct per cycle (all users) | "
            f"{final['squeue']} / {final['sacct']} | "
            f"+{during - before:.1f} MiB = {1024 * (during - before) / n:.0f} KiB per waiting job (peak "
            f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB) | {took:.1f} s, {'/'.join(sorted(statuses))}")


HEADER = ("mode | jobs | measured over | squeue per interval | sacct per interval | independent count | "
          "squeue / sacct in all | memory while waiting | end after scancel: s, verdict\n"
          "--- | --- | --- | --- | --- | --- | --- | --- | ---")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", type=int, default=200, help="waiting jobs of the ssh (triggerer) run")
    ap.add_argument("--local-jobs", type=int, default=50, help="waiting processes of the local run")
    ap.add_argument("--interval", type=float, default=2.0)
    ap.add_argument("--window", type=int, default=10, help="poll intervals measured while all jobs wait")
    ap.add_argument("--mode", choices=("local", "ssh", "both"), default="both")
    args = ap.parse_args()
    import logging

    logging.disable(logging.INFO)
    subprocess.run(["bash", str(ROOT / "scripts/cluster/cluster.sh"), "up"], check=True, capture_output=True)
    rows = []
    if args.mode in ("ssh", "both"):
        rows.append(bench_ssh(args.jobs, args.interval, args.window))
    if args.mode in ("local", "both"):
        rows.append(bench_local(args.local_jobs, args.interval, args.window))
    print(f"waiting Slurm tasks (held jobs, poll interval {args.interval:g} s)\n\n{HEADER}")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
