"""Accounting records (sacct text, rusage) and the retry_resources rules: pure, no cluster."""

from __future__ import annotations

import sys

import pytest

from airflow_provider_stepcab.plan import escalate as E
from airflow_provider_stepcab.plan import slurm as P
from airflow_provider_stepcab.runtime import accounting as A

# sacct --parsable2 of a 2-CPU job that ran 2 minutes after 30 s in the queue (Slurm 22.05 layout)
SACCT = "\n".join([
    "42|align|OUT_OF_MEMORY|0:125|00:02:00|120|03:00.000||4G|2|node7|2026-01-02T10:00:00|2026-01-02T10:00:30|"
    "2026-01-02T10:02:30|01:00:00|1",
    "42.batch|batch|OUT_OF_MEMORY|0:125|00:02:00|120|02:59.500|3145728K||2|node7|2026-01-02T10:00:30|"
    "2026-01-02T10:00:30|2026-01-02T10:02:30||1",
    "42.extern|extern|COMPLETED|0:0|00:02:00|120|00:00.500|1024K||2|node7|2026-01-02T10:00:30|"
    "2026-01-02T10:00:30|2026-01-02T10:02:30||1",
    "43|other|COMPLETED|0:0|00:00:01|1|00:01.000|||1|node1|2026-01-02T10:00:00|2026-01-02T10:00:00|"
    "2026-01-02T10:00:01|00:10:00|1",
])


def test_sacct_record_with_seff_efficiencies():
    rec = A.parse_sacct_accounting(SACCT, "42")
    assert rec["state"] == "OUT_OF_MEMORY" and rec["exit_code"] == "0:125" and rec["nodelist"] == "node7"
    assert rec["elapsed_s"] == 120 and rec["total_cpu_s"] == 180.0 and rec["alloc_cpus"] == 2
    assert rec["queue_wait_s"] == 30.0
    assert rec["max_rss_bytes"] == 3 << 30 and rec["req_mem_bytes"] == 4 << 30     # the largest step's RSS
    assert rec["cpu_efficiency"] == 75.0          # 180 s CPU / (2 CPUs x 120 s)
    assert rec["memory_efficiency"] == 75.0       # 3 GiB of 4 GiB
    assert A.accounting_final(rec)
    assert A.parse_sacct_accounting(SACCT, "44") is None


def test_old_per_cpu_req_mem_and_unfinished_records():
    line = SACCT.splitlines()[0].replace("|4G|", "|1Gc|")
    assert A.parse_sacct_accounting(line, "42")["req_mem_bytes"] == 2 << 30       # per CPU x 2 CPUs
    running = SACCT.splitlines()[0].replace("OUT_OF_MEMORY", "RUNNING").replace("2026-01-02T10:02:30", "Unknown")
    assert not A.accounting_final(A.parse_sacct_accounting(running, "42"))
    garbled = SACCT.replace("|4G|", "|16?|")  # what sacct can print just after the end
    assert not A.accounting_final(A.parse_sacct_accounting(garbled, "42"))


@pytest.mark.parametrize("text,seconds", [("00:02.075", 2.075), ("01:02:03", 3723), ("1-00:00:01", 86401),
                                          ("", None), ("UNLIMITED", None)])
def test_sacct_durations(text, seconds):
    assert A.parse_duration(text) == seconds


def test_rusage_record_of_a_real_process(tmp_path):
    from airflow_provider_stepcab.runtime.native import NativeRunner

    script = "b = bytearray(64 << 20); b[::4096] = b'x' * len(b[::4096]); import time; t = time.process_time()\n" \
             "while time.process_time() - t < 0.5: pass\n"
    result = NativeRunner().run([sys.executable, "-c", script], log=lambda *a: None)
    rec = result.usage
    assert result.exit_code == 0 and rec["source"] == "rusage" and rec["state"] == "COMPLETED"
    assert rec["max_rss_bytes"] > 64 << 20           # the child's 64 MiB, seen through wait4
    assert rec["total_cpu_s"] >= 0.5
    # the record's figures are rounded to ms: the efficiency agrees to within that rounding
    assert rec["cpu_efficiency"] == pytest.approx(100 * rec["total_cpu_s"] / (rec["alloc_cpus"] * rec["elapsed_s"]),
                                                  abs=0.1)


def test_rusage_is_the_commands_own_not_the_workers():
    """Linux counts the image ``exec`` replaced in ``ru_maxrss``: a command forked from a big worker
    would report the worker's size. The measuring leader keeps the figures the command's own."""
    from airflow_provider_stepcab.runtime.native import NativeRunner

    ballast = bytearray(300 << 20)
    ballast[::4096] = b"x" * len(ballast[::4096])  # this "worker" is now 300 MiB resident
    small = NativeRunner().run([sys.executable, "-S", "-c", "pass"], log=lambda *a: None)
    assert small.exit_code == 0 and small.usage["max_rss_bytes"] < 100 << 20
    # exit statuses pass through the leader unchanged, signals included
    assert NativeRunner().run(["sh", "-c", "exit 3"], log=lambda *a: None).exit_code == 3
    for sig in (9, 15):
        assert NativeRunner().run(["sh", "-c", f"kill -{sig} $$"], log=lambda *a: None).exit_code == -sig
    del ballast


def test_factor_rule_grows_per_failure_up_to_the_ceiling():
    rules = E.parse_retry_resources({"mem": {"factor": 2, "max": "3G"}, "time": {"factor": 1.5}})
    assert E.escalate(rules, {"mem": "1G", "time": "1:00:00"}, {"mem": 1, "time": 0}) == {
        "mem": {"from": "1G", "to": "2G", "why": "1 earlier OUT_OF_MEMORY/OOMKilled try; rule factor 2, max 3G"}}
    assert E.escalate(rules, {"mem": "1G"}, {"mem": 2})["mem"]["to"] == "3G"          # 4G capped
    assert E.escalate(rules, {"time": "40"}, {"time": 1})["time"]["to"] == "01:00:00"  # 40 min x 1.5
    assert E.escalate(rules, {"mem": "1G"}, {"mem": 0}) == {}                          # other failures: unchanged


def test_ladder_rule_and_fallback_to_the_failed_jobs_request():
    rules = E.parse_retry_resources({"mem": ["2G", "8G"]})
    assert [E.escalate(rules, {"mem": "1G"}, {"mem": k})["mem"]["to"] for k in (1, 2, 3)] == ["2G", "8G", "8G"]
    factor = E.parse_retry_resources({"mem": {"factor": 2}})
    assert E.escalate(factor, {}, {"mem": 2}, {"mem": "512M"})["mem"] == {
        "from": "512M", "to": "1G", "why": "2 earlier OUT_OF_MEMORY/OOMKilled tries; rule factor 2"}


def test_failure_counts_and_options_carry_the_raise():
    assert E.failure_counts(["OUT_OF_MEMORY", "FAILED", "TIMEOUT", "OUT_OF_MEMORY"]) == {"mem": 2, "time": 1}
    opts, _ = P.parse_slurm_options({"srun_opts": {"mem": "1G", "t": "10"}, "retry_resources": {"time": {"factor": 3}}})
    raised = E.escalate(E.parse_retry_resources(opts.retry_resources), P.requested_resources(opts), {"time": 1})
    assert P.sbatch_options(P.with_resources(opts, raised)) == {"signal": None, "mem": "1G", "time": "00:30:00"}


@pytest.mark.parametrize("section,message", [
    ({"cpu": {"factor": 2}}, "backend.slurm.retry_resources.cpu: unknown resource"),
    ({"mem": {"factor": 0.5}}, "backend.slurm.retry_resources.mem.factor: expected a number >= 1"),
    ({"mem": {"factor": 2, "max": "lots"}}, "backend.slurm.retry_resources.mem.max: 'lots' is not a memory size"),
    ({"time": ["1:00:00", "soon"]}, "backend.slurm.retry_resources.time[1]"),
    ({"mem": {"factor": 2, "cap": "1G"}}, "backend.slurm.retry_resources.mem.cap: unknown key"),
])
def test_bad_rules_name_the_key(section, message):
    with pytest.raises(P.SlurmPlanError, match=message.replace("[", r"\[").replace("]", r"\]")):
        P.parse_slurm_options({"retry_resources": section})


def test_slurm_time_syntax():
    assert [E.parse_time_limit(t) for t in ("5", "5:30", "1:00:00", "2-3", "2-3:04", "2-03:04:05")] == [
        300, 330, 3600, 2 * 86400 + 3 * 3600, 2 * 86400 + 3 * 3600 + 240, 2 * 86400 + 3 * 3600 + 245]


def test_pod_memory_rule_raises_limit_and_request():
    rules = E.parse_retry_resources({"mem": {"factor": 2, "max": "1Gi"}}, "backend.kube.retry_resources", E.KUBE_UNITS)
    res = {"requests": {"memory": "256Mi", "cpu": "1"}, "limits": {"memory": "512Mi"}}
    assert E.raise_pod_memory(rules, res, 0) == (res, {})                      # no OOMKilled try: unchanged
    raised, why = E.raise_pod_memory(rules, res, 2)                            # 512Mi x 4 = 2Gi, capped at 1Gi
    assert raised == {"requests": {"memory": "512Mi", "cpu": "1"}, "limits": {"memory": "1Gi"}}
    assert why["mem"]["from"] == "512Mi" and why["mem"]["to"] == "1Gi"
    ladder = E.parse_retry_resources({"mem": ["3G"]}, "backend.kube.retry_resources", E.KUBE_UNITS)
    assert E.raise_pod_memory(ladder, {}, 1)[0] == {"limits": {"memory": "2862Mi"}}   # 3e9 B, whole Mi rounded up
    with pytest.raises(E.EscalationError, match=r"backend.kube.retry_resources.time: unknown resource \(one of mem\)"):
        E.parse_retry_resources({"time": {"factor": 2}}, "backend.kube.retry_resources", E.KUBE_UNITS)


def test_one_parser_of_amounts():
    from airflow_provider_stepcab.plan import quantities as Q

    assert Q.format_mem_option(1.5 * (1 << 30)) == "1536M" and Q.format_mem_option(2 << 30) == "2G"
    assert Q.kube_quantity("4G") == 4e9 and Q.kube_quantity("4Gi") == 4 << 30 and Q.kube_quantity("500m") == 0.5
    assert Q.memory_bytes("8000") == 8000 << 20 and Q.memory_bytes("512m", "") == 512 << 20
    assert Q.time_limit_seconds("2-03") == 2 * 86400 + 3 * 3600 and Q.time_limit_seconds("UNLIMITED") is None
    for bad, call in (("lots", Q.memory_bytes), ("1000Mc", Q.memory_bytes), ("soon", Q.time_limit_seconds)):
        with pytest.raises(ValueError, match="'" + bad + "' is not a"):
            call(bad)
