"""Killing a running step task (SIGTERM → ``on_kill``) leaves no process of the step behind.

Airflow's task runner answers SIGTERM by calling the operator's ``on_kill``; the native
operator then kills the step's whole process group (the shell *and* its background children).
The task runs in-process through ``dag.test()``, so the test sends SIGTERM to itself once the
step has started, restoring the previous handler afterwards.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from test_native_operator import failure, group_alive, hand, run_dag, wait_group_gone  # noqa: F401

pytestmark = pytest.mark.airflow


def test_sigterm_kills_the_whole_process_group(hand, tmp_path):  # noqa: F811
    dag, _ = hand
    pid_file = tmp_path / "long.pid"
    seen: dict = {}

    def kill_when_started() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not pid_file.exists():
            time.sleep(0.1)
        time.sleep(0.5)  # let the shell start its background sleeps
        if pid_file.exists():
            seen["pgid"] = int(pid_file.read_text())
            seen["alive_before"] = group_alive(seen["pgid"])
            os.kill(os.getpid(), signal.SIGTERM)

    previous = signal.getsignal(signal.SIGTERM)
    killer = threading.Thread(target=kill_when_started, daemon=True)
    killer.start()
    started = time.monotonic()
    try:
        run, states = run_dag(dag, tmp_path, {"select": ["long"]})
    finally:
        signal.signal(signal.SIGTERM, previous)
        killer.join(timeout=5)
    assert seen.get("alive_before"), "the step never started"
    assert states["long"] == "failed", states
    assert time.monotonic() - started < 120  # not the 300 s the step would take
    assert wait_group_gone(seen["pgid"]), f"process group {seen['pgid']} survived on_kill"
    assert "was killed" in failure(tmp_path, "long")
