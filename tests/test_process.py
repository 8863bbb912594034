"""runtime.process: real processes, process groups, streaming, timeouts, kills."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import pytest

from airflow_provider_stepcab.runtime.process import (
    ExecutableNotFound, ProcessHandle, ProcessTimeout, run_streaming,
)


def collect(argv, **kw):
    lines = []
    rc = run_streaming(argv, on_line=lambda s, t: lines.append((s, t)), **kw)
    return rc, lines


def gone(pid: int, timeout: float = 15.0) -> bool:
    """The pid no longer exists (or is a zombie waiting for init to reap it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except OSError:
            return True
        time.sleep(0.05)
    return False


def live_members(pgid: int) -> list:
    """Non-zombie processes of the group."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                out.append(int(entry))
    return out


def group_gone(pgid: int, timeout: float = 60.0) -> bool:
    """No live member within 15 s, and none at all (zombies reaped by init, slow under load) later."""
    deadline = time.monotonic() + 15
    while live_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if live_members(pgid):
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def test_exit_code_streams_and_partial_last_line():
    rc, lines = collect(["bash", "-c", "echo out1; echo err1 >&2; printf 'no newline'; exit 3"])
    assert rc == 3
    assert [t for s, t in lines if s == "stdout"] == ["out1", "no newline"]
    assert [t for s, t in lines if s == "stderr"] == ["err1"]


def test_order_preserved_per_stream():
    script = "for i in $(seq 1 3000); do echo o$i; echo e$i >&2; done"
    rc, lines = collect(["bash", "-c", script])
    assert rc == 0
    assert [t for s, t in lines if s == "stdout"] == [f"o{i}" for i in range(1, 3001)]
    assert [t for s, t in lines if s == "stderr"] == [f"e{i}" for i in range(1, 3001)]


def test_lines_arrive_in_real_time():
    seen = {}
    start = time.monotonic()

    def on_line(stream, text):
        seen[text] = time.monotonic() - start

    rc = run_streaming([sys.executable, "-u", "-c",
                        "import time, sys; print('first'); sys.stderr.write('err\\n'); time.sleep(2); print('second')"],
                       on_line=on_line)
    assert rc == 0
    assert seen["first"] < 1.5 and seen["err"] < 1.5 and seen["second"] >= 2.0


def test_undecodable_bytes_and_crlf():
    rc, lines = collect(["bash", "-c", r"printf 'a\xff\xfeb\r\nok\n'"])
    assert lines == [("stdout", "a\ufffd\ufffdb"), ("stdout", "ok")]


def test_long_line_is_not_truncated():
    rc, lines = collect([sys.executable, "-c", "print('x' * 300000)"])
    assert "".join(t for _, t in lines) == "x" * 300000


def test_env_and_cwd(tmp_path):
    rc, lines = collect(["bash", "-c", "echo $FOO; pwd"], env={"FOO": "bar", "PATH": os.environ["PATH"]},
                        cwd=str(tmp_path))
    assert [t for _, t in lines] == ["bar", str(tmp_path)]


def test_runs_in_its_own_process_group():
    handles = []
    rc, lines = collect([sys.executable, "-c", "import os; print(os.getpgrp(), os.getpid(), os.getsid(0))"],
                        on_start=handles.append)
    pgrp, pid, sid = map(int, lines[0][1].split())
    assert pgrp == pid == sid == handles[0].pgid and pgrp != os.getpgrp()


def test_missing_executable_is_named():
    with pytest.raises(ExecutableNotFound, match="no-such-tool-xyz"):
        run_streaming(["no-such-tool-xyz", "--help"], on_line=lambda s, t: None)


def test_not_executable(tmp_path):
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    with pytest.raises(ExecutableNotFound, match="permission denied"):
        run_streaming([str(script)], on_line=lambda s, t: None)


def test_timeout_kills_grandchild():
    lines = []
    start = time.monotonic()
    with pytest.raises(ProcessTimeout) as info:
        run_streaming(["bash", "-c", "sleep 100 & echo $!; wait"], timeout=1.0,
                      on_line=lambda s, t: lines.append(t), kill_grace=2.0)
    assert time.monotonic() - start < 5
    assert info.value.returncode == -signal.SIGTERM
    assert gone(int(lines[0]))


def test_timeout_escalates_to_sigkill():
    lines, handles = [], []
    start = time.monotonic()
    with pytest.raises(ProcessTimeout):
        # TERM is ignored by bash and, inherited, by the sleep: only SIGKILL ends them
        run_streaming(["bash", "-c", "trap '' TERM; sleep 100 & echo $!; wait"], timeout=0.5,
                      on_line=lambda s, t: lines.append(t), kill_grace=0.5, on_start=handles.append)
    assert time.monotonic() - start < 5
    assert gone(int(lines[0])) and group_gone(handles[0].pgid)


def test_kill_from_another_thread_kills_whole_group():
    handles = []
    started = threading.Event()

    def on_start(h: ProcessHandle):
        handles.append(h)
        started.set()

    result = {}

    def target():
        result["rc"] = run_streaming(["bash", "-c", "sleep 100 & sleep 100"], on_line=lambda s, t: None,
                                     on_start=on_start)

    t = threading.Thread(target=target)
    t.start()
    assert started.wait(10)
    time.sleep(0.3)
    handle = handles[0]
    os.killpg(handle.pgid, 0)  # alive now
    killer = threading.Thread(target=handle.kill)
    killer.start()
    t.join(15)
    killer.join(15)
    assert not t.is_alive()
    assert result["rc"] == -signal.SIGTERM and handle.killed
    assert group_gone(handle.pgid)
    with pytest.raises(ProcessLookupError):
        os.killpg(handle.pgid, 0)
    handle.kill()  # harmless afterwards


def test_orphan_holding_pipes_does_not_hang():
    lines = []
    start = time.monotonic()
    rc = run_streaming(["bash", "-c", "sleep 100 & echo $!; exit 0"], on_line=lambda s, t: lines.append(t),
                       linger=0.5)
    assert rc == 0 and time.monotonic() - start < 5
    assert gone(int(lines[0]))


def test_callback_exception_kills_group():
    handles = []

    def boom(stream, text):
        raise RuntimeError("callback failed")

    with pytest.raises(RuntimeError, match="callback failed"):
        run_streaming(["bash", "-c", "echo hi; sleep 100"], on_line=boom, on_start=handles.append)
    assert group_gone(handles[0].pgid)


def test_preexec_fn_runs_in_child():
    rc, lines = collect(["bash", "-c", "umask"], preexec_fn=lambda: os.umask(0o077))
    assert rc == 0 and lines == [("stdout", "0077")]


def test_stdout_tty_is_a_terminal_and_keeps_the_bytes():
    """With ``stdout_tty`` the child sees a terminal on stdout only, and its lines arrive unchanged
    (no ``\\r`` added), the last one without a newline too, as with a pipe."""
    code = ("import os, sys; print(os.isatty(1), os.isatty(2)); print('a\\tb'); sys.stderr.write('e\\n');"
            "sys.stdout.write('tail'); sys.stdout.flush()")
    rc, lines = collect([sys.executable, "-c", code], stdout_tty=True)
    assert rc == 0
    assert [t for s, t in lines if s == "stdout"] == ["True False", "a\tb", "tail"]
    assert [t for s, t in lines if s == "stderr"] == ["e"]
    rc, lines = collect([sys.executable, "-c", code])
    assert [t for s, t in lines if s == "stdout"][0] == "False False"


def test_stdout_tty_waits_for_background_holders_like_a_pipe():
    rc, lines = collect(["bash", "-c", "(sleep 0.5; echo late) & echo early"], stdout_tty=True)
    assert rc == 0 and [t for s, t in lines if s == "stdout"] == ["early", "late"]
