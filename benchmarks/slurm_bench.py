"""Slurm mechanism benchmark against the project's cluster (not a timed test).

    .venv/bin/python benchmarks/slurm_bench.py [--jobs 1,5,10,20] [--interval 1]

For N concurrent jobs (each ``sleep 3-6``) run N :class:`SlurmJobTrigger`\\ s in one event loop (as the
triggerer does) and print, per N:

* cluster queries per poll interval: ``squeue`` and ``sacct`` calls divided by poll cycles
  (shared polling keeps this at <= 1 whatever N is), plus the file-status commands;
* job end → trigger event latency: the wrapper's ``exitcode`` mtime (the job's end) to the
  moment the trigger fired (median / max). The task-success latency adds one worker round trip
  (``execute_complete``) on top, which is scheduler-dependent.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="stepcab-bench-"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", default="1,5,10,20")
    ap.add_argument("--interval", type=float, default=1.0)
    args = ap.parse_args()
    subprocess.run(["bash", str(ROOT / "scripts/cluster/cluster.sh"), "up"], check=True, capture_output=True)
    conn = subprocess.run(["bash", str(ROOT / "scripts/cluster/cluster.sh"), "conn"], check=True,
                          capture_output=True, text=True).stdout.strip()
    os.environ["AIRFLOW_CONN_STEPCAB_CLUSTER"] = conn
    import logging

    logging.disable(logging.INFO)
    from airflow_provider_stepcab.hooks.slurm import SlurmHook
    from airflow_provider_stepcab.plan import slurm as P
    from airflow_provider_stepcab.plan.sbatch import build_sbatch_script
    from airflow_provider_stepcab.triggers.slurm import SlurmJobTrigger, get_poller

    hook = SlurmHook("stepcab_cluster")
    base = hook.absolute("stepcab-jobs/bench")
    opts, _ = P.parse_slurm_options({"srun_opts": {"mem": "20M"}, "poll_interval": args.interval})
    rows = []
    for n in [int(x) for x in args.jobs.split(",")]:
        triggers = []
        for i in range(n):
            name = f"sc-bench-{n}-{i}-{time.monotonic_ns()}"
            d = f"{base}/{name}"
            spec = P.build_job_spec(opts, argv=["sleep", str(3 + i % 4)], name=name, directory=d, workdir=None)
            hook.write_text(f"{d}/job.sbatch", build_sbatch_script(spec), 0o755)
            job_id = hook.submit(f"{d}/job.sbatch")
            triggers.append(SlurmJobTrigger(ssh_conn_id="stepcab_cluster", job_id=job_id, job_dir=d,
                                            job_name=name, poll_interval=args.interval, stream_logs=False))
        fired: dict = {}
        stats: dict = {}

        async def wait(t):
            async for ev in t.run():
                fired[t.job_dir] = (time.time(), ev.payload["status"])
                return

        async def run_all():
            await asyncio.gather(*(wait(t) for t in triggers))
            stats.update(get_poller("stepcab_cluster").stats)

        start = time.time()
        asyncio.run(run_all())
        wall = time.time() - start
        dirs = " ".join(t.job_dir for t in triggers)
        _, out, _ = hook.run(f"for d in {dirs}; do echo \"$d $(stat -c %.9Y $d/exitcode)\"; done")
        ends = dict(line.rsplit(" ", 1) for line in out.splitlines())
        lat = [fired[d][0] - float(ends[d]) for d in fired]
        ok = sum(1 for v in fired.values() if v[1] == "success")
        cycles = max(stats["cycles"], 1)
        rows.append((n, ok, cycles, stats["squeue"] / cycles, stats["sacct"] / cycles, stats["files"] / cycles,
                     statistics.median(lat), max(lat), wall))
        hook.run(f"rm -rf {base}")
    hook.close()
    head = ("jobs", "ok", "cycles", "squeue/cycle", "sacct/cycle", "files/cycle", "end→event med s",
            "max s", "wall s")
    print(f"poll interval {args.interval:g} s")
    print(" | ".join(head))
    print(" | ".join("---" for _ in head))
    for r in rows:
        print(f"{r[0]} | {r[1]} | {r[2]} | {r[3]:.2f} | {r[4]:.2f} | {r[5]:.2f} | {r[6]:.2f} | {r[7]:.2f} | {r[8]:.1f}")


if __name__ == "__main__":
    main()
