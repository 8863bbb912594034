"""runtime.native: wranglers on real output, verdicts, rlimits, flavours executed for real."""

from __future__ import annotations

import logging
import os
import resource
import sys
import threading
import time
from pathlib import Path

import pytest

from airflow_provider_stepcab.plan.flavours import build_flavour_argv
from airflow_provider_stepcab.recipe.model import Cab, Flavour, Management, Parameter
from airflow_provider_stepcab.recipe.wranglers import Wranglers
from airflow_provider_stepcab.runtime import ExecutableNotFound, NativeRunner, RlimitError

INFO, WARNING, ERROR = logging.INFO, logging.WARNING, logging.ERROR


class Log(list):
    def __call__(self, level, text):
        self.append((level, text))

    @property
    def texts(self):
        return [t for _, t in self]


def run(argv, wranglers=None, **kw):
    log = Log()
    runner = kw.pop("runner", None) or NativeRunner()
    result = runner.run(argv, log=log, wranglers=Wranglers.from_spec(wranglers or {}), **kw)
    return result, log


def test_success_and_tail():
    result, log = run(["bash", "-c", "for i in $(seq 1 30); do echo line $i; done; echo err >&2"])
    assert result.success and result.exit_code == 0 and not result.errors
    assert len(log) == 31 and all(level == INFO for level, _ in log)
    # cross-stream order is not defined: "err" may come anywhere
    assert result.tail == log.texts[-20:] and "line 30" in result.tail


def test_nonzero_exit_fails():
    result, log = run(["bash", "-c", "echo boom; exit 3"])
    assert not result.success and result.exit_code == 3
    assert result.errors[0].startswith("bash returns error code 3 after 0:00:0")


def test_trailing_whitespace_stripped_before_wrangling():
    result, log = run(["bash", "-c", "echo 'done   '"], {"done$": "SEVERITY:WARNING"})
    assert log == [(WARNING, "done")]


def test_declare_success_overrides_exit_code():
    result, log = run(["bash", "-c", "echo 'all good'; exit 1"], {"all good": "DECLARE_SUCCESS"})
    assert result.success and result.declared_success and result.exit_code == 1 and not result.errors


def test_error_wrangler_fails_despite_exit_zero():
    result, log = run(["bash", "-c", "echo 'ERROR: disk full'; echo 'all good'"],
                      {"ERROR: (?P<msg>.*)": "ERROR:tool said {msg}", "all good": "DECLARE_SUCCESS"})
    assert not result.success and result.exit_code == 0
    assert result.errors == ["declaring 'bash' as failed based on its output", "tool said disk full"]
    assert (ERROR, "ERROR: disk full") in log


def test_suppress_replace_severity_warning_outputs():
    script = "echo 'secret=abc'; echo 'noise'; echo 'WARN x'; echo 'count=7'; echo 'flux: 1.5 Jy'"
    result, log = run(["bash", "-c", script], {
        "secret=\\S+": "REPLACE:secret=***", "noise": "SUPPRESS", "WARN": "WARNING:saw a warning",
        "count=(?P<count>\\d+)": "PARSE_OUTPUT:count:int",
        "flux: (?P<flux>[\\d.]+)": ["PARSE_OUTPUT:1:float", "SEVERITY:DEBUG"]})
    assert result.success
    assert log == [(INFO, "secret=***"), (WARNING, "WARN x"), (INFO, "count=7"), (INFO, "flux: 1.5 Jy")]
    assert result.outputs == {"count": 7, "1": 1.5}
    assert result.warnings == ["saw a warning"]


def test_unparsable_output_fails():
    result, _ = run(["bash", "-c", "echo n=abc"], {"n=(?P<n>.*)": "PARSE_OUTPUT:n:int"})
    assert not result.success and result.outputs == {"n": "abc"}


def test_missing_executable():
    with pytest.raises(ExecutableNotFound, match="not-a-real-binary"):
        run(["not-a-real-binary"])


def test_timeout_result():
    result, _ = run(["bash", "-c", "echo start; sleep 30"], timeout=0.5)
    assert result.timed_out and not result.success
    assert "timed out after 0.5s" in result.errors[-1] and result.tail == ["start"]


def test_kill_from_another_thread():
    runner = NativeRunner(kill_grace=1.0)
    out = {}
    t = threading.Thread(target=lambda: out.update(r=run(["bash", "-c", "sleep 100 & sleep 100"], runner=runner)))
    t.start()
    time.sleep(0.5)
    runner.kill()
    t.join(15)
    result, _ = out["r"]
    assert result.killed and not result.success and "was killed" in result.errors[-1]


# ---------------------------------------------------------------- rlimits

def test_rlimits_apply_in_child_only():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    result, log = run(["bash", "-c", "ulimit -n; ulimit -S -c"], rlimits={"NOFILE": 256, "CORE": 0})
    assert result.success and log.texts == ["256", "0"]
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (soft, hard)
    runner = NativeRunner(rlimits={"NOFILE": 300})
    _, log = run(["bash", "-c", "ulimit -n"], runner=runner)
    assert log.texts == ["300"]
    _, log = run(["bash", "-c", "ulimit -n"], runner=runner, rlimits={"NOFILE": 200})
    assert log.texts == ["200"]


def test_bad_rlimits():
    with pytest.raises(RlimitError, match="unknown resource limit 'backend.rlimits.BOGUS'"):
        run(["true"], rlimits={"BOGUS": 1})
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY:
        with pytest.raises(RlimitError, match="hard limit"):
            run(["true"], rlimits={"NOFILE": hard + 1})
        with pytest.raises(RlimitError, match="unlimited"):
            run(["true"], rlimits={"NOFILE": None})


# ---------------------------------------------------------------- flavours, executed

def param(name, dtype="str", **kw):
    return Parameter(name=name, dtype_str=dtype, **kw)


@pytest.fixture
def pymodule(tmp_path):
    pkg = tmp_path / "mypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "tasks.py").write_text(
        "def scale(factor, in_ms, d__e=None, **rest):\n"
        "    print('scaling', in_ms, 'by', factor)\n"
        "    return {'scaled': factor * 2, 'extra': d__e, 'ms': in_ms}\n"
        "def total(values):\n"
        "    print('summing')\n"
        "    return sum(values)\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    return tmp_path, env


def test_python_flavour_output_dict(pymodule):
    path, env = pymodule
    cab = Cab(name="scale", command="mypkg.tasks.scale", flavour=Flavour("python", {"output_dict": True}),
              inputs={"factor": param("factor", "int"), "in-ms": param("in-ms", "MS"), "d.e": param("d.e")},
              outputs={"scaled": param("scaled", "int", is_output=True)})
    argv = build_flavour_argv(cab, {"factor": 21, "in-ms": "a.ms", "d.e": "x"})
    assert argv[:3] == ["python3", "-u", "-c"]
    log = Log()
    result = NativeRunner().run(argv, env=env, cwd=str(path), log=log, wranglers=Wranglers.for_cab(cab))
    assert result.success, (result.errors, log)
    assert result.outputs == {"scaled": 42, "extra": "x", "ms": "a.ms"}
    assert log.texts == ["scaling a.ms by 21"]  # the YIELDING line is suppressed


def test_python_flavour_single_output_verbose(pymodule):
    path, env = pymodule
    cab = Cab(name="total", command="mypkg.tasks.total", flavour=Flavour("python", {"output": "sum"}),
              inputs={"values": param("values", "List[int]")}, outputs={"sum": param("sum", "int", is_output=True)})
    argv = build_flavour_argv(cab, {"values": [1, 2, 3]}, python=sys.executable, verbose=True)
    log = Log()
    result = NativeRunner().run(argv, env=env, cwd=str(path), log=log,
                                wranglers=Wranglers.for_cab(cab, verbose=True))
    assert result.success and result.outputs == {"sum": 6}
    assert log.texts[0] == "## importing mypkg.tasks.total"
    assert "### YIELDING CAB OUTPUT ## 6" in log.texts and "summing" in log.texts


def test_python_flavour_import_error_fails(pymodule):
    path, env = pymodule
    cab = Cab(name="x", command="mypkg.nope.func", flavour=Flavour("python", {}))
    log = Log()
    result = NativeRunner().run(build_flavour_argv(cab, {}), env=env, cwd=str(path), log=log)
    assert not result.success and result.exit_code == 1
    assert any("ModuleNotFoundError" in t for t in result.tail)


def _python_code_cab():
    code = "y = a * 2\nlabel = f'{b_c}-{d__e}'\nprint('computed', y)\n"
    return Cab(name="pc", command=code, flavour=Flavour("python-code", {}),
               inputs={"a": param("a", "int"), "b-c": param("b-c"), "d.e": param("d.e")},
               outputs={"y": param("y", "int", is_output=True), "label": param("label", is_output=True),
                        "img": param("img", "File", is_output=True)})


def test_python_code_flavour_with_scabha_helper(tmp_path):
    # Stimela's exact code imports scabha.cab_utils.yield_output: provide a stand-in package
    (tmp_path / "scabha").mkdir()
    (tmp_path / "scabha" / "__init__.py").write_text("")
    (tmp_path / "scabha" / "cab_utils.py").write_text(
        "import json\nCAB_OUTPUT_PREFIX = '### YIELDING CAB OUTPUT ## '\n"
        "def yield_output(**kw):\n    print(f'{CAB_OUTPUT_PREFIX}{json.dumps(kw)}')\n")
    cab = _python_code_cab()
    argv = build_flavour_argv(cab, {"a": 4, "b-c": "p", "d.e": "q", "img": "o.fits"})
    assert "from scabha.cab_utils import yield_output\n" in argv[3]
    log = Log()
    result = NativeRunner().run(argv, env={**os.environ, "PYTHONPATH": str(tmp_path)}, log=log,
                                wranglers=Wranglers.for_cab(cab))
    assert result.success, result.tail
    assert result.outputs == {"y": 8, "label": "p-q"} and log.texts == ["computed 8"]


def test_python_code_flavour_inline_yield(tmp_path):
    cab = _python_code_cab()
    argv = build_flavour_argv(cab, {"a": 1, "b-c": "p", "d.e": "q"}, inline_yield=True)
    assert "scabha" not in argv[3]
    log = Log()
    result = NativeRunner().run(argv, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
                                cwd=str(tmp_path), log=log, wranglers=Wranglers.for_cab(cab))
    assert result.success, result.tail
    assert result.outputs == {"y": 2, "label": "p-q"}


def test_casa_error_fails_step():
    cab = Cab(name="casa", command="flagdata", flavour=Flavour("casa-task", {}))
    result, log = NativeRunner().run(["bash", "-c", "printf 'x\\tSEVERE\\tflagdata::x  bad table\\n'"],
                                     log=Log(), wranglers=Wranglers.for_cab(cab)), None
    assert not result.success and result.errors[1] == "CASA error: \tSEVERE\tflagdata::x  bad table"


def test_stdout_is_a_terminal_only_for_steps_asking_for_it():
    """``STEPCAB_STDOUT_TTY=1`` in a step's environment (tricolour's cab in the science example)
    gives its stdout a pseudo-terminal; other steps keep a pipe, as in Stimela."""
    code = "import os; print('tty' if os.isatty(1) else 'pipe')"
    seen = {}
    for flag in ("1", None):
        env = dict(os.environ, STEPCAB_STDOUT_TTY=flag) if flag else {k: v for k, v in os.environ.items()
                                                                      if k != "STEPCAB_STDOUT_TTY"}
        lines = []
        result = NativeRunner().run([sys.executable, "-c", code], env=env, log=lambda _lvl, text: lines.append(text))
        assert result.success
        seen[flag] = lines
    assert seen == {"1": ["tty"], None: ["pipe"]}
