"""Every shell text stepcab generates reads an interpolated value as data (issue 15), for any value.

Hypothesis feeds arbitrary strings (quotes, ``$()``, backticks, newlines, control characters, ``;``,
``&&``, ``#``, globs, unicode ...) through each generator of shell text; the text is then run by the
real shell in a scratch directory, with the commands it would run replaced by ``printf`` recorders.
Each case asserts that the values arrive intact, one argument each, and that nothing an injected
payload would do happened (a ``PWNED`` file, extra output). A generator that refuses a value (a
control character in a name or an ``#SBATCH`` line) must refuse it with an error naming it.

The ``#SBATCH`` lines are read back by the real ``sbatch`` (its ``-v`` option list, printed before it
gives up on reaching a controller); the test fails under CI when sbatch is missing.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from needs import missing

from airflow_provider_stepcab.plan.flavours import venv_wrap
from airflow_provider_stepcab.plan.sbatch import SlurmJobSpec, build_sbatch_script
from airflow_provider_stepcab.plan.script import quote_argv, recipe_script
from airflow_provider_stepcab.plan.shellsubst import ShellSubstitutionError, substitute_command
from airflow_provider_stepcab.plan.slurm import ImageCheck, image_lines, parse_prepare_output, singularity_prepare_script
from airflow_provider_stepcab.recipe.api import load_recipe_result
from airflow_provider_stepcab.runtime.accounting import sacct_accounting_command
from airflow_provider_stepcab.runtime.commands import run_command

CASES = settings(max_examples=60, deadline=None, derandomize=True,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
FEW = settings(CASES, max_examples=25)

#: what an attacker would type; each would leave a PWNED file or print PWNED if it ran
PAYLOADS = ["$(touch PWNED)", "`touch PWNED`", "; touch PWNED", "&& touch PWNED", "|| touch PWNED;",
            "| tee PWNED", "\ntouch PWNED\n", "'; touch PWNED; '", '"; touch PWNED; "', "$'\\n'touch PWNED",
            "\\", "\\'", '\\"', "$HOME", "${PATH}", "$((6*7))", "$1", "$@", "*", "?", "[a]", "~", "~root",
            "!", "!!", "{a,b}", "%s", "%n", "%", "--uid=0", "-e", "-", "#", " # x", "\r", "\t", "\x1b[31m",
            "\x7f", "é", "日本", "\u2028", "\u00a0", "\ufeff", "😀", ">PWNED", "<(touch PWNED)", "echo PWNED",
            "' '", '""', "''", "::EPH0::", "=recipe.x", "{recipe.x}", "EOF", "<<EOF\n", ")", "(", "&", "'", '"',
            "`", "$", "\x01", "\x1f"]
#: any text except NUL (argv and files cannot hold it) and lone surrogates (not UTF-8)
ANY_CHAR = st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",))
hostile = st.lists(st.one_of(st.sampled_from(PAYLOADS), st.text(ANY_CHAR, max_size=8)), max_size=5).map("".join)
printable = hostile.filter(str.isprintable)
#: a path component (no "/", short enough for NAME_MAX in UTF-8)
component = hostile.map(lambda s: "z" + s.replace("/", "_")[:50])
printable_component = component.filter(str.isprintable)

RECORDER = ["printf", "%s\\0", "START"]


def _env(home: Path) -> dict:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LC_ALL": "C.UTF-8"}


@contextmanager
def scratch():
    """A fresh directory to run one case in (``work/`` is the current directory of the shell)."""
    with tempfile.TemporaryDirectory(prefix="stepcab-shell-") as d:
        root = Path(d)
        (root / "work").mkdir()
        yield root


def recorded(stdout: bytes) -> list:
    """What :data:`RECORDER` printed: its arguments after ``START``."""
    parts = stdout.split(b"\0")
    assert parts[-1] == b"", stdout
    words = [p.decode("utf-8") for p in parts[:-1]]
    assert words[:1] == ["START"], words
    return words[1:]


def assert_no_injection(root: Path, *texts: bytes) -> None:
    found = [str(p.relative_to(root)) for p in root.rglob("PWNED")]
    assert not found, found
    for text in texts:
        assert b"PWNED" not in text.replace(b"touch PWNED", b"").replace(b"tee PWNED", b"") \
            .replace(b"echo PWNED", b"").replace(b">PWNED", b""), text


def run(argv: list, root: Path, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, cwd=root / "work", env=_env(root), timeout=timeout)


# --------------------------------------------------------------------------- native virtual_env wrapper

@CASES
@given(values=st.lists(hostile, max_size=4), venv=component)
def test_venv_wrapper_passes_every_argument_as_one_word(values, venv):
    with scratch() as root:
        env_dir = root / "envs" / venv
        (env_dir / "bin").mkdir(parents=True)
        (env_dir / "bin" / "activate").write_text("export STEPCAB_ACTIVATED=yes\n")
        argv = venv_wrap(["bash", "-c", 'printf "%s\\0" START "$STEPCAB_ACTIVATED" "$@"', "rec", *values],
                         str(env_dir))
        out = run(argv, root)
        assert out.returncode == 0, out.stderr
        assert recorded(out.stdout) == ["yes", *values]
        assert_no_injection(root, out.stdout, out.stderr)


# --------------------------------------------------------------------------- sh -c cab substitution

#: (script template, what the recorder prints for value v) in every quoting context of a shell script
CONTEXTS = [
    ("printf '%s\\0' START {v}", lambda v: [v]),
    ("printf '%s\\0' START pre{v}post", lambda v: ["pre" + v + "post"]),
    ("printf '%s\\0' START '{v}'", lambda v: [v]),
    ("printf '%s\\0' START \"{v}\"", lambda v: [v]),
    ("printf '%s\\0' START \"a {v} b\"", lambda v: [f"a {v} b"]),
    ("printf '%s\\0' START \"$(printf '%s' {v})\"", lambda v: [v.rstrip("\n")]),
    ("printf '%s\\0' START \"$(printf '%s' \"{v}\")\"", lambda v: [v.rstrip("\n")]),
    ("printf '%s\\0' START \"`printf '%s' {v}`\"", lambda v: [v.rstrip("\n")]),
    ("printf '%s\\0' START \"`printf '%s' \\\"{v}\\\"`\"", None),  # refused: \" inside backticks
    ("x={v}; printf '%s\\0' START \"$x\"", lambda v: [v]),
    ("printf '%s\\0' START ok # {v}\nprintf '%s\\0' after", lambda v: ["ok", "after"]),
    ("printf '%s\\0' START $'{v}'", lambda v: [v]),
    ("case {v} in *) printf '%s\\0' START {v};; esac", lambda v: [v]),
]


@CASES
@given(value=hostile, context=st.sampled_from(range(len(CONTEXTS))), shell=st.sampled_from(["bash", "sh"]),
       in_args=st.booleans())
def test_shell_script_substitution_reads_values_as_data(value, context, shell, in_args):
    template, expected = CONTEXTS[context]
    assume(not (shell == "sh" and "$'" in template))  # $'...' is bash (dash has no such quoting)
    subst = {"{v}": value}.__getitem__
    if expected is None:
        with pytest.raises(ShellSubstitutionError, match=r"cannot substitute \{v\} inside backticks"):
            substitute_command(shell, ["-c", template], subst)
        return
    if in_args:  # command: bash, args: [-c, SCRIPT]
        command, args = substitute_command(shell, ["-c", template], subst)
        argv = shlex.split(command) + args
    else:  # command: "bash -c 'SCRIPT'"
        command, args = substitute_command(f"{shell} -c {shlex.quote(template)}", [], subst)
        argv = shlex.split(command)
    with scratch() as root:
        out = run(argv, root)
        assert out.returncode == 0, (argv, out.stderr)
        assert recorded(out.stdout) == expected(value), argv
        assert_no_injection(root, out.stdout, out.stderr)


def test_a_field_in_a_here_document_is_refused_with_its_name():
    with pytest.raises(ShellSubstitutionError, match=r"cannot substitute \{v\} into a shell here-document"):
        substitute_command("sh -c 'cat <<EOF\n{v}\nEOF'", [], {"{v}": "x"}.__getitem__)


# --------------------------------------------------------------------------- stepcab plan --script

@CASES
@given(values=st.lists(hostile, max_size=4))
def test_script_argument_lines_keep_every_value(values):
    """:func:`quote_argv` is how ``plan --script`` writes every command (``::EPHn::`` aside)."""
    values = [v.replace("::EPH", "::E_PH") for v in values]
    with scratch() as root:
        out = run(["sh", "-c", quote_argv([*RECORDER, *values])], root)
        assert out.returncode == 0, out.stderr
        assert recorded(out.stdout) == values
        assert_no_injection(root, out.stdout, out.stderr)


#: a recipe value is Stimela code ({}-substituted, =formulas): keep those out of the values here
plain_value = hostile.map(lambda s: s.replace("{", "(").replace("}", ")").lstrip("="))


def _recipe(root: Path, recipe: str, step: str, cab: str, param: str, value: str) -> Path:
    doc = {"cabs": {cab: {"command": "printf %s\\\\0", "args": ["START"],
                          "inputs": {param: {"dtype": "str", "policies": {"positional": True}}}}},
           recipe: {"info": "property test", "steps": {step: {"cab": cab, "params": {param: value}}}}}
    path = root / "recipe.yml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=False))
    return path


names = st.one_of(hostile, st.sampled_from(["r", "s", "x"])).filter(
    lambda s: s.strip() and not s.startswith(("_", "=")) and "." not in s and s not in ("cabs", "lib", "opts"))


@FEW
@given(recipe=names, step=names, cab=names, param=names, value=plain_value)
def test_plan_script_comments_and_commands_are_inert(recipe, step, cab, param, value):
    assume(len({recipe, step, cab, param}) == 4)
    with scratch() as root:
        path = _recipe(root, recipe, step, cab, param, value)
        result = load_recipe_result(str(path), recipe)
        bad = [n for n in (recipe, step, cab, param) if not n.isprintable()]
        errors = [str(p) for p in result.problems.errors]
        if bad:  # refused, saying why
            assert result.recipe is None or errors, (bad, errors)
            assert any("has a control character" in e for e in errors), errors
            return
        assert not errors and result.recipe is not None, errors
        text, problems = recipe_script(result.recipe, result.config, {}, cwd=str(root / "work"),
                                       backend="native", header=f"files: {recipe}")
        assert not problems.errors, [str(p) for p in problems]
        script = root / "run.sh"
        script.write_text(text)
        out = run(["sh", str(script)], root)
        assert out.returncode == 0, (text, out.stderr)
        assert recorded(out.stdout) == [value], text
        assert_no_injection(root, out.stdout)


def _engine_recorder(root: Path) -> Path:
    """A stand-in for podman/apptainer in ``plan --script``: prints ``ENGINE`` and its arguments."""
    path = root / "engine-recorder"
    path.write_text("#!/bin/sh\nprintf '%s\\0' ENGINE \"$@\"\n")
    path.chmod(0o755)
    return path


@FEW
@given(value=plain_value, workdir=component, backend=st.sampled_from(["podman", "docker", "singularity"]))
def test_plan_script_container_lines_are_inert(value, workdir, backend):
    """The container backends' lines of ``plan --script`` (image build, mkdir, ephemeral dirs, the
    engine's argv) pass a hostile value and working directory as data."""
    with scratch() as root:
        path = _recipe(root, "r", "s", "c", "v", value)
        doc = yaml.safe_load(path.read_text())
        doc["cabs"]["c"]["image"] = {"name": "example/tool", "version": "1"}
        path.write_text(yaml.safe_dump(doc, allow_unicode=False))
        result = load_recipe_result(str(path), "r")
        assert not result.problems.errors and result.recipe is not None, [str(p) for p in result.problems]
        cwd = root / "work" / workdir
        cwd.mkdir()
        from airflow_provider_stepcab.runtime.containers import LocalFs

        text, problems = recipe_script(result.recipe, result.config, {}, cwd=str(cwd), backend=backend,
                                       fs=LocalFs())
        assert not problems.errors, [str(p) for p in problems]
        script = root / "run.sh"
        script.write_text(text)
        engine = str(_engine_recorder(root))
        out = subprocess.run(["sh", str(script)], capture_output=True, cwd=cwd, timeout=20,
                             env={**_env(root), "STEPCAB_PODMAN": engine, "STEPCAB_SINGULARITY": engine})
        assert out.returncode == 0, (text, out.stderr)
        words = [w.decode("utf-8") for w in out.stdout.split(b"\0")[:-1]]
        runs = [i for i, w in enumerate(words) if w == "ENGINE"]
        assert runs, (text, words)
        last = words[runs[-1] + 1:]  # the run (after a build, for singularity)
        assert last[-len(RECORDER) - 1:] == [*RECORDER, value], (text, last)
        assert_no_injection(root, out.stdout, out.stderr)


# --------------------------------------------------------------------------- sbatch script

def _sbatch_options(script: Path, root: Path) -> dict:
    """The options the real ``sbatch`` reads from ``script``'s ``#SBATCH`` lines (``sbatch -v``
    lists them before it tries to reach a controller; it is stopped there)."""
    conf = root / "slurm.conf"
    # a controller that cannot exist (port 1): nothing is ever submitted, even where a cluster runs
    conf.write_text("ClusterName=t\nSlurmctldHost=localhost\nSlurmctldPort=1\nNodeName=n CPUs=1\n"
                    "PartitionName=p Nodes=n\n")
    proc = subprocess.Popen(["sbatch", "-v", str(script)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            cwd=root / "work", env={**_env(root), "SLURM_CONF": str(conf)})
    options, lines = {}, []
    try:
        for raw in proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            lines.append(line)
            if "end of defined options" in line:
                break
            if line.startswith("sbatch: ") and " : " in line and not line.startswith("sbatch: ---"):
                name, _, value = line[len("sbatch: "):].partition(" : ")
                options[name.strip()] = value
    finally:
        proc.kill()
        proc.wait()
    assert any("end of defined options" in x for x in lines), lines
    return options


def _need(tool: str) -> None:
    if shutil.which(tool) is None:
        missing(f"{tool} is not installed")


@CASES
@given(values=st.lists(hostile, max_size=3), env_value=hostile, name=printable, comment=printable,
       job=printable_component, work=component, eph=component)
def test_sbatch_script_body_runs_values_as_data(values, env_value, name, comment, job, work, eph):
    with scratch() as root:
        workdir = root / "work" / work
        workdir.mkdir()
        (root / "eph" / eph).mkdir(parents=True)
        spec = SlurmJobSpec(
            job_name=name, job_dir=str(root / "jobs" / job), workdir=str(workdir),
            argv=["bash", "-c", 'printf "%s\\0" START "$STEPCAB_V" "$PWD" "$@"', "rec", *values, "::EPH0::"],
            sbatch_options={"comment": comment}, env={"STEPCAB_V": env_value},
            ephemeral={"EPH0": str(root / "eph" / eph)})
        script = root / "job.sbatch"
        script.write_text(build_sbatch_script(spec))
        out = run(["bash", str(script)], root)
        assert out.returncode == 0, out.stderr
        got = recorded(out.stdout)
        assert got[:-1] == [env_value, str(workdir), *values]
        assert got[-1].startswith(str(root / "eph" / eph) + "/stepcab-eph."), got[-1]
        assert (root / "jobs" / job / "exitcode").read_text() == "0\n"
        assert_no_injection(root, out.stdout, out.stderr)


@FEW
@given(name=printable, comment=printable, job=printable_component)
def test_sbatch_reads_each_directive_back_as_one_value(name, comment, job):
    _need("sbatch")
    with scratch() as root:
        job_dir = root / "jobs" / job
        spec = SlurmJobSpec(job_name=name, job_dir=str(job_dir), argv=["true"],
                            sbatch_options={"comment": comment})
        script = root / "job.sbatch"
        script.write_text(build_sbatch_script(spec))
        options = _sbatch_options(script, root)
        assert options.pop("job-name") == name
        assert options.pop("comment") == comment
        assert options.pop("output") == f"{job_dir}/stdout.log"
        assert options.pop("error") == f"{job_dir}/stderr.log"
        assert options.pop("signal") == "B:TERM@30"  # stepcab's own
        options.pop("verbose", None)
        assert options == {}, options  # nothing else: no --uid, no --output of the value's own


@CASES
@given(value=hostile.filter(lambda s: not s.isprintable()), where=st.sampled_from(["name", "comment", "dir"]))
def test_sbatch_refuses_control_characters_in_directives(value, where):
    spec = SlurmJobSpec(job_name=value if where == "name" else "j",
                        job_dir="/w/" + value.replace("/", "_") if where == "dir" else "/w/j", argv=["true"],
                        sbatch_options={"comment": value} if where == "comment" else {})
    key = {"name": "job-name", "comment": "comment", "dir": "output/error (backend.slurm.remote_dir)"}[where]
    with pytest.raises(ValueError, match=re.escape(f"sbatch option '{key}': value ") + ".*"
                       + re.escape("(control characters cannot go into an #SBATCH line)")):
        build_sbatch_script(spec)


# --------------------------------------------------------------------------- commands over SSH / on the login node

def _recorders(root: Path, *names: str) -> None:
    """Executables on the PATH that append their name and arguments to ``root/calls``."""
    bin_dir = root / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name in names:
        path = bin_dir / name
        path.write_text(f"#!/bin/sh\nprintf '%s\\0' {shlex.quote(name)} \"$@\" >> {shlex.quote(str(root / 'calls'))}\n")
        path.chmod(0o755)


def _calls(root: Path) -> list:
    path = root / "calls"
    return path.read_bytes().decode().split("\0")[:-1] if path.exists() else []


def _login_shell(command: str, root: Path) -> tuple:
    """``command`` as the login node runs it (``bash -c``, :mod:`..runtime.commands`), with the
    recorders first on the PATH."""
    old = dict(os.environ)
    try:
        os.environ.clear()
        os.environ.update(_env(root), PATH=f"{root / 'bin'}:{old.get('PATH', '/usr/bin:/bin')}")
        cwd = os.getcwd()
        os.chdir(root / "work")
        try:
            return run_command(command, timeout=20)
        finally:
            os.chdir(cwd)
    finally:
        os.environ.clear()
        os.environ.update(old)


@FEW
@given(value=hostile, job_dirs=st.lists(printable_component.map(lambda c: "/scratch/" + c), min_size=1,
                                        max_size=3))
def test_remote_slurm_commands_quote_paths_ids_and_names(value, job_dirs):
    hooks = pytest.importorskip("airflow_provider_stepcab.hooks.slurm")
    with scratch() as root:
        _recorders(root, "sbatch", "scancel", "squeue", "sacct", "rm")
        job = "j" + value  # job ids and names are never empty
        commands = [
            (hooks.submit_command(value), ["sbatch", "--parsable", value]),
            (hooks.scancel_command(job_id=job), ["scancel", job]),
            (hooks.scancel_command(name=job), ["scancel", f"--user={os.popen('id -un').read().strip()}",
                                                f"--name={job}"]),
            (hooks.remove_dir_command("/scratch/a/b/" + value), ["rm", "-rf", "--", "/scratch/a/b/" + value]),
            (hooks.squeue_command([value], [value]), ["squeue", "--noheader", "--states=all",
                                                      f"--format={hooks.SQUEUE_FORMAT}", f"--jobs={value}",
                                                      f"--name={value}"]),
            (hooks.sacct_command([value], [value]), ["sacct", "--noheader", "--parsable2", "--allocations",
                                                     f"--format={hooks.SACCT_FORMAT}", f"--jobs={value}",
                                                     f"--name={value}", "--starttime=now-7days"]),
            (sacct_accounting_command(value), ["sacct", "--noheader", "--parsable2", f"--jobs={value}",
                                               "--format=" + ",".join(__import__(
                                                   "airflow_provider_stepcab.runtime.accounting",
                                                   fromlist=["x"]).SACCT_FIELDS)]),
        ]
        expected: list = []
        for command, call in commands:
            rc, out, err = _login_shell(command, root)
            assert rc == 0, (command, err)
            expected += call
        assert _calls(root) == expected
        assert_no_injection(root, (root / "calls").read_bytes())


@FEW
@given(dirs=st.lists(printable_component, min_size=1, max_size=3, unique=True), code=st.integers(0, 255))
def test_job_file_query_reads_hostile_directory_names(dirs, code):
    from airflow_provider_stepcab.triggers import slurm as triggers

    with scratch() as root:
        paths = [str(root / "jobs" / d) for d in dirs]
        for p in paths:
            os.makedirs(p)
            Path(p, "exitcode").write_text(f"{code}\n")
        rc, out, err = _login_shell(triggers.files_command(paths), root)
        assert rc == 0, err
        states = triggers.parse_files(out, paths)
        assert sorted(states) == sorted(paths)
        assert all(s.exit_code == code for s in states.values())
        assert_no_injection(root, out.encode(), err.encode())


@FEW
@given(exe=printable_component.filter(lambda s: s == s.strip()), simg=hostile,
       source=hostile.map("docker://".__add__), workdir=component)
def test_singularity_login_node_preparation_quotes_its_words(exe, simg, source, workdir):
    with scratch() as root:
        _recorders(root, exe)
        (root / "work" / workdir).mkdir()
        image = ImageCheck(simg=str(root / "img" / simg.replace("/", "_")), source=source, rebuild=True)
        script = singularity_prepare_script(["true"], executable=exe, image=image,
                                            workdir=str(root / "work" / workdir))
        # as operators/slurm.py sends it: one bash -c word over SSH
        rc, out, err = _login_shell(f"bash -c {shlex.quote(script)}", root)
        assert parse_prepare_output(out) == exe, (out, err)
        calls = _calls(root)
        # the recorder "builds" nothing, so the image move fails: the build call is what counts
        assert calls[:2] == [exe, "build"] and calls[3:] == [source], calls
        assert calls[2].startswith(image.simg + ".stepcab-build."), calls
        assert_no_injection(root, out.encode(), err.encode())


@FEW
@given(exe=component, simg=hostile, source=hostile.map("docker://".__add__))
def test_image_lines_in_the_job_script_quote_image_and_source(exe, simg, source):
    with scratch() as root:
        _recorders(root, exe)
        image = ImageCheck(simg=str(root / "img" / simg.replace("/", "_")), source=source, auto_build=True)
        text = "\n".join(image_lines(shlex.quote(exe), image))
        rc, out, err = _login_shell(f"bash -c {shlex.quote(text)}", root)
        calls = _calls(root)
        assert calls[:2] == [exe, "build"] and calls[3:] == [source], (calls, err)
        assert_no_injection(root, out.encode(), err.encode())
