"""``stepcab run``'s terminal progress (run_logs.Progress): lines on a terminal only."""

from __future__ import annotations

import io

from airflow_provider_stepcab.run_logs import Progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_lines_on_a_terminal_count_steps_done_of_total():
    out = _Terminal()
    progress = Progress(total=2, out=out)
    progress.start("prep")
    progress.finish("prep", "success")
    progress.total = 4  # a mapped loop expanded (run_cli counts the run's task instances)
    progress.start("loop.p[0]")
    progress.finish("loop.p[0]", "skipped")
    assert out.getvalue().splitlines() == [
        "stepcab run: [0/2] running prep", "stepcab run: [1/2] prep: success",
        "stepcab run: [1/4] running loop.p[0]", "stepcab run: [2/4] loop.p[0]: skipped"]


def test_no_progress_lines_when_not_a_terminal():
    out = io.StringIO()
    progress = Progress(total=1, out=out)
    progress.start("prep")
    progress.finish("prep", "success")
    assert out.getvalue() == "" and progress.done == 1
