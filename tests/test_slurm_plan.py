"""Pure parts of the Slurm mechanism: settings → job spec, squeue/sacct parsing, the trigger's
verdict logic and the event payloads (no cluster needed)."""

from __future__ import annotations

import pytest

from airflow_provider_stepcab.plan import slurm as P
from airflow_provider_stepcab.plan.sbatch import build_sbatch_script, job_name


def test_parse_options_defaults_and_types():
    opts, unknown = P.parse_slurm_options({"enable": True, "srun_opts": {"mem": "8G"}, "ssh_conn_id": "c",
                                           "remote_dependencies": "module load x", "poll_interval": "2",
                                           "stream_logs": "no", "cleanup": "on_success", "bogus": 1})
    assert opts.ssh_conn_id == "c" and opts.remote_dependencies == ("module load x",)
    assert opts.poll_interval == 2.0 and opts.stream_logs is False and opts.cleanup == "on_success"
    assert unknown == ["bogus"]
    assert P.parse_slurm_options(None)[0] == P.SlurmSubmitOptions()


@pytest.mark.parametrize("section, key", [
    ({"cleanup": "sometimes"}, "cleanup"), ({"poll_interval": "fast"}, "poll_interval"),
    ({"remote_dependencies": [1]}, "remote_dependencies"), ({"sbatch_opts": "x"}, "sbatch_opts"),
    ({"stream_logs": "maybe"}, "stream_logs"), ({"ssh_conn_id": 3}, "ssh_conn_id")])
def test_bad_values_name_the_key(section, key):
    with pytest.raises(P.SlurmPlanError, match=f"backend.slurm.{key}"):
        P.parse_slurm_options(section)


def test_srun_opts_become_sbatch_options_and_sbatch_opts_win():
    opts, _ = P.parse_slurm_options({"srun_opts": {"mem": "8G", "cpus-per-task": 4, "time": "1:00:00",
                                                   "partition": "main", "gres": "gpu:1"},
                                     "sbatch_opts": {"mem": "16G", "qos": "long"},
                                     "remote_dependencies": ["module load apptainer"]})
    spec = P.build_job_spec(opts, argv=["echo", "hi there"], name="sc-x", directory="/scratch/j", workdir="/data")
    script = build_sbatch_script(spec)
    for line in ("#SBATCH --mem=16G", "#SBATCH --cpus-per-task=4", "#SBATCH --time=1:00:00",
                 "#SBATCH --partition=main", "#SBATCH --gres=gpu:1", "#SBATCH --qos=long"):
        assert line in script
    assert "--signal" not in script                 # Slurm's own limit → TIMEOUT in sacct
    assert script.index("module load apptainer") < script.index("setsid echo 'hi there'")
    assert "cd /data ||" in script


def test_reserved_options_and_kube_are_errors():
    opts, _ = P.parse_slurm_options({"srun_opts": {"J": "mine"}})
    with pytest.raises(P.SlurmPlanError, match="srun_opts.J"):
        P.sbatch_options(opts)
    with pytest.raises(P.SlurmPlanError, match="kube"):
        P.build_job_spec(P.SlurmSubmitOptions(), argv=["x"], name="n", directory="/d", workdir=None,
                         backend_name="kube")
    with pytest.raises(P.SlurmPlanError, match="not absolute"):
        P.build_job_spec(P.SlurmSubmitOptions(), argv=["x"], name="n", directory="rel", workdir=None)


def test_job_dir_and_try_names():
    d = P.job_dir("/s/", "dag", "manual__2024-01-01T00:00:00+00:00", "task", 3, 2)
    assert d == "/s/dag/manual__2024-01-01T00_00_00_00_00/task.3/try-2"
    names = P.try_names("dag", "run", "task", -1, 3)
    assert list(names) == [3, 2, 1]
    assert names[2] == job_name("dag", "run", "task", -1, 2)
    assert len(P.try_names("d", "r", "t", -1, 50)) == P.REATTACH_TRIES


def test_squeue_sacct_parsing_and_merge():
    from airflow_provider_stepcab.hooks.slurm import merge_views, parse_sacct, parse_sbatch, parse_squeue

    q = parse_squeue("12|sc-a|RUNNING|None\n13|sc-b|TIMEOUT|TimeLimit\n")
    a = parse_sacct("13|sc-b|TIMEOUT|0:0|None\n13.batch|batch|CANCELLED|0:15|\n14|sc-c|CANCELLED by 1001|0:0|None\n")
    assert q["12"].active and not q["13"].active
    assert a["14"].state == "CANCELLED" and "13.batch" not in a
    merged = merge_views(q, a)
    assert merged["12"].source == "squeue" and merged["13"].source == "sacct"
    assert "TIMEOUT" in merged["13"].explain() and "time limit" in merged["13"].explain()
    assert parse_sbatch("42;cluster\n") == "42"
    with pytest.raises(ValueError):
        parse_sbatch("sbatch: error: oops")


def _trigger(**kw):
    from airflow_provider_stepcab.triggers.slurm import SlurmJobTrigger

    return SlurmJobTrigger(ssh_conn_id="c", job_id="7", job_dir="/j", poll_interval=1, exit_grace=60,
                           missing_grace=30, **kw)


def test_trigger_verdicts():
    from airflow_provider_stepcab.hooks.slurm import JobInfo
    from airflow_provider_stepcab.triggers.slurm import FileState

    t = _trigger()
    running = JobInfo("7", "n", "RUNNING")
    assert t.decide(FileState(0), running, waited=1, verdict_for=0) == ("success", "exit code 0")
    assert t.decide(FileState(None, True), running, waited=1, verdict_for=0) is None
    # non-zero exit while Slurm still says RUNNING: give Slurm a moment, then fail with its state
    assert t.decide(FileState(143), running, waited=1, verdict_for=0) == "wait-verdict"
    status, msg = t.decide(FileState(143), JobInfo("7", "n", "TIMEOUT", exit_code="0:0", source="sacct"),
                           waited=90, verdict_for=0)
    assert status == "failed" and "exit code 143" in msg and "TIMEOUT" in msg
    # requeued: the exit file is stale
    assert t.decide(FileState(143), JobInfo("7", "n", "PENDING"), waited=9, verdict_for=99) is None
    # not yet known to Slurm: grace, then failure
    assert t.decide(None, None, waited=5, verdict_for=0) is None
    assert t.decide(None, None, waited=31, verdict_for=0)[0] == "failed"
    # killed without an exit file: short grace, then the Slurm state explains
    oom = JobInfo("7", "n", "OUT_OF_MEMORY", source="sacct")
    assert t.decide(FileState(None, True), oom, waited=9, verdict_for=0) == "wait-verdict"
    status, msg = t.decide(FileState(None, True), oom, waited=9, verdict_for=6)
    assert status == "failed" and "OUT_OF_MEMORY" in msg
    # cancelled before it started: no exit file will ever come
    assert t.decide(FileState(None, False), JobInfo("7", "n", "CANCELLED"), waited=1, verdict_for=0)[0] == "failed"
    # COMPLETED but the exit file lags (NFS): the full exit_grace
    done = JobInfo("7", "n", "COMPLETED", source="sacct")
    assert t.decide(FileState(None, True), done, waited=9, verdict_for=30) == "wait-verdict"
    assert t.decide(FileState(None, True), done, waited=9, verdict_for=61)[0] == "failed"


def test_foreign_job_state_decides():
    from airflow_provider_stepcab.hooks.slurm import JobInfo
    from airflow_provider_stepcab.triggers.slurm import SlurmJobTrigger

    t = SlurmJobTrigger(ssh_conn_id="c", job_id="7")
    assert t.decide(None, JobInfo("7", "n", "COMPLETED"), waited=1, verdict_for=0)[0] == "success"
    assert t.decide(None, JobInfo("7", "n", "NODE_FAIL"), waited=1, verdict_for=0)[0] == "failed"


def test_trigger_serialises_round_trip():
    from airflow_provider_stepcab.triggers.slurm import SlurmJobTrigger

    path, kwargs = _trigger(log_offsets={"stdout": 5}).serialize()
    assert path == "airflow_provider_stepcab.triggers.slurm.SlurmJobTrigger"
    again = SlurmJobTrigger(**kwargs)
    assert again.serialize() == (path, kwargs) and again.log_offsets == {"stdout": 5, "stderr": 0}


def test_events_round_trip():
    from airflow_provider_stepcab.triggers.events import SlurmJobEvent, StatusFileEvent

    ev = SlurmJobEvent(status="failed", job_id="1", exit_code=3, tail=["a"])
    assert SlurmJobEvent.from_dict({**ev.to_dict(), "future_key": 1}) == ev
    assert StatusFileEvent.from_dict(StatusFileEvent("success", result={"x": 1}).to_dict()).succeeded
    with pytest.raises(ValueError):
        SlurmJobEvent.from_dict("nope")


def test_files_command_parsing(tmp_path):
    from airflow_provider_stepcab.triggers.slurm import files_command, parse_files

    import subprocess

    assert "'/a b/exitcode'" in files_command(["/a b"])
    got = parse_files("S\t10\t/a/stdout.log\nS\t0\t/a/started\nE\t/a/exitcode:0\nbroken\nE\t/c/exitcode:1\n",
                      ["/a", "/b"])
    assert got["/a"].exit_code == 0 and got["/a"].started and got["/a"].sizes == {"stdout": 10, "stderr": -1}
    assert got["/b"].exit_code is None and not got["/b"].started and "/c" not in got
    # the command itself, on real files (one job done, one running, one not started)
    base = tmp_path / "jobs dir"
    for name, files in {"done": {"exitcode": "3\n", "started": "", "stdout.log": "abc", "stderr.log": ""},
                        "running": {"started": "", "stdout.log": "x" * 7}, "queued": {}}.items():
        (base / name).mkdir(parents=True)
        for f, text in files.items():
            (base / name / f).write_text(text)
    dirs = [str(base / n) for n in ("done", "running", "queued")]
    out = subprocess.run(["bash", "-c", files_command(dirs)], capture_output=True, text=True).stdout
    got = parse_files(out, dirs)
    assert (got[dirs[0]].exit_code, got[dirs[0]].started, got[dirs[0]].sizes) == (3, True, {"stdout": 3, "stderr": 0})
    assert (got[dirs[1]].exit_code, got[dirs[1]].started, got[dirs[1]].sizes) == (None, True, {"stdout": 7, "stderr": -1})
    assert (got[dirs[2]].exit_code, got[dirs[2]].started, got[dirs[2]].sizes) == (None, False, {"stdout": -1, "stderr": -1})
