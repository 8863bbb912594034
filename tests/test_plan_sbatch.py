"""The generated sbatch wrapper, checked as data and by running it with bash."""

import json
import os
import signal
import subprocess
import time

import pytest

from airflow_provider_stepcab.plan.sbatch import (
    EXITCODE, STARTED, STATUS, SlurmJobSpec, build_sbatch_script, job_name, sbatch_directives,
)


def _run_script(tmp_path, spec, **kw):
    script = tmp_path / "job.sbatch"
    script.write_text(build_sbatch_script(spec))
    return subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=60, **kw)


def _spec(tmp_path, argv, **kw):
    return SlurmJobSpec(job_name="t", job_dir=str(tmp_path / "job dir"), argv=argv, **kw)


def test_job_name_is_deterministic_and_distinct():
    a = job_name("dag", "manual__2026-01-01", "grp.step", -1, 1)
    assert a == job_name("dag", "manual__2026-01-01", "grp.step", -1, 1)
    others = {job_name("dag", "manual__2026-01-01", "grp.step", -1, 2),
              job_name("dag", "manual__2026-01-01", "grp.step", 0, 1),
              job_name("dag", "scheduled__2026-01-01", "grp.step", -1, 1)}
    assert a not in others and len(others) == 3
    long = job_name("d" * 300, "r", "t/with spaces;rm -rf", 3, 2)
    assert len(long) <= 120 and all(c.isalnum() or c in "_.-" for c in long)


def test_directives_from_settings():
    spec = SlurmJobSpec(job_name="j", job_dir="/w/j", argv=["true"],
                        sbatch_options={"mem": "8G", "cpus-per-task": 4, "exclusive": True, "gres": None,
                                        "p": "debug"})
    lines = sbatch_directives(spec)
    assert "#SBATCH --mem=8G" in lines and "#SBATCH --cpus-per-task=4" in lines
    assert "#SBATCH --exclusive" in lines and "#SBATCH -p debug" in lines
    assert not any("gres" in line for line in lines)
    assert "#SBATCH --output=/w/j/stdout.log" in lines and "#SBATCH --signal=B:TERM@30" in lines


@pytest.mark.parametrize("opts,msg", [({"job-name": "x"}, "set by stepcab"), ({"mem; rm": 1}, "invalid"),
                                      ({"comment": "a\nb"}, "newline")])
def test_bad_options_are_rejected(opts, msg):
    with pytest.raises(ValueError, match=msg):
        build_sbatch_script(SlurmJobSpec(job_name="j", job_dir="/w", argv=["true"], sbatch_options=opts))


def test_success_records_started_status_and_exit_code(tmp_path):
    spec = _spec(tmp_path, ["sh", "-c", "echo out; echo err >&2"])
    res = _run_script(tmp_path, spec)
    assert res.returncode == 0 and res.stdout == "out\n" and res.stderr == "err\n"
    d = tmp_path / "job dir"
    assert (d / EXITCODE).read_text() == "0\n"
    assert (d / STARTED).read_text().startswith("start=")
    status = json.loads((d / STATUS).read_text())
    assert status["state"] == "finished" and status["exit_code"] == 0
    assert not [p for p in os.listdir(d) if ".tmp." in p]


def test_failure_exit_code_is_recorded(tmp_path):
    res = _run_script(tmp_path, _spec(tmp_path, ["sh", "-c", "exit 7"]))
    assert res.returncode == 7
    assert (tmp_path / "job dir" / EXITCODE).read_text() == "7\n"
    assert json.loads((tmp_path / "job dir" / STATUS).read_text())["exit_code"] == 7


def test_params_reach_the_command_quoted(tmp_path):
    nasty = ["a b", "'q'", '"dq"', "$(touch pwned)", "`touch pwned2`", "*", "x;y"]
    res = _run_script(tmp_path, _spec(tmp_path, ["printf", "%s\\n", *nasty]))
    assert res.stdout.splitlines() == nasty
    assert not (tmp_path / "job dir" / "pwned").exists() and not (tmp_path / "pwned").exists()


def test_dependencies_and_env_run_before_the_command(tmp_path):
    spec = _spec(tmp_path, ["sh", "-c", 'echo "cmd sees $GREETING $(cat dep.txt)"'],
                 remote_dependencies=["echo loaded > dep.txt"], env={"GREETING": "hi there"})
    res = _run_script(tmp_path, spec)
    assert res.stdout == "cmd sees hi there loaded\n", res.stderr


def test_term_is_recorded_and_kills_the_command_group(tmp_path):
    spec = _spec(tmp_path, ["sh", "-c", "sleep 60 & echo $! > child.pid; wait"], term_grace=2)
    script = tmp_path / "job.sbatch"
    script.write_text(build_sbatch_script(spec))
    proc = subprocess.Popen(["bash", str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    d = tmp_path / "job dir"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if (d / "child.pid").exists() and (d / "child.pid").read_text().strip():
            break
        time.sleep(0.05)
    grandchild = int((d / "child.pid").read_text())
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 143
    assert (d / EXITCODE).read_text() == "143\n"
    assert json.loads((d / STATUS).read_text())["state"] == "finished"
    assert _gone(grandchild)


def _gone(pid: int, timeout: float = 5.0) -> bool:
    """True once ``pid`` no longer runs (a zombie waiting for its reaper counts as gone)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                if fh.read().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False
