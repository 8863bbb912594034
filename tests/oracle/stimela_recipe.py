"""Oracle (runs INSIDE .oracle-venv): what Stimela 2.1.4 executes for a whole recipe.

Usage::

    .oracle-venv/bin/python tests/oracle/stimela_recipe.py SPEC.json OUT.json

``SPEC.json``::

    {"files": ["/abs/recipe.yml", ...],   # recipe files, as given to ``stimela run``
     "recipe": "name" | null, "params": {"name": value, ...} (given as NAME=VALUE, YAML-typed),
     "args": ["-s", "x"],                 # extra ``stimela run`` options
     "executables": ["echo", ...],        # command names replaced by a recorder
     "dirs": ["msdir/a.ms"], "touch": ["in.txt"],   # created in the scratch dir first
     "cwd": "work",                        # run directory inside the scratch dir (created)
     "venvs": [".venv/ddf"],               # virtualenvs (under $HOME = the scratch dir) holding recorders
     "creates": {"DDF.py": {"--Output-Name": ["{}.app.restored.fits"]}}}   # files a recorder makes
                                           # (after recording): {} = the value following the option

Recorders of the project's own tests may also (environment) log the Airflow task that ran them
(``ORACLE_TASK_OUT``: ``[task_id, command, arg, ...]`` lines) and then run the real tool found
further down ``PATH`` (``ORACLE_PASS_THROUGH``: a JSON list of the commands to pass on; none: exit 0).

``OUT.json`` gets ``{"rc": int, "calls": [[command, arg, ...], ...], "log": tail}``: one entry per
command Stimela ran, in order (a recorder replaces every listed executable on ``PATH`` and appends
its argv). Nothing here imports the project.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile

try:
    import yaml
except ImportError:  # imported by the project's tests for prepare()/recorded() only
    yaml = None

RECORDER = """#!{python}
import json, os, sys
name = os.path.basename(sys.argv[0])
with open(os.environ["ORACLE_ARGV_OUT"], "a") as fh:
    fh.write(json.dumps([name] + sys.argv[1:]) + "\\n")
if os.environ.get("ORACLE_TASK_OUT"):  # which Airflow task ran it (the task runner exports its id)
    with open(os.environ["ORACLE_TASK_OUT"], "a") as fh:
        fh.write(json.dumps([os.environ.get("AIRFLOW_CTX_TASK_ID"), name] + sys.argv[1:]) + "\\n")
rules = json.loads(os.environ.get("ORACLE_CREATES") or "{{}}").get(name, {{}})
for option, templates in rules.items():
    args = sys.argv[1:]
    if option in args and args.index(option) + 1 < len(args):
        for template in templates:
            path = template.replace("{{}}", args[args.index(option) + 1])
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            open(path, "a").close()
if name in json.loads(os.environ.get("ORACLE_PASS_THROUGH") or "[]"):  # then the real tool, if there is one
    here = os.path.dirname(os.path.abspath(sys.argv[0]))
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        real = os.path.join(folder, name)
        if folder and os.path.abspath(folder) != here and os.access(real, os.X_OK) and not os.path.isdir(real):
            os.execv(real, [real] + sys.argv[1:])
"""


def prepare(scratch: str, spec: dict, python: str = sys.executable) -> tuple:
    """Lay out ``scratch`` for ``spec`` (recorders, venvs, dirs, files); returns ``(cwd, env)``:
    the run directory and the environment variables a run there needs. Also used by the tests to
    give stepcab the very same layout."""
    bindir = os.path.join(scratch, "bin")
    venv_bins = [os.path.join(scratch, v, "bin") for v in spec.get("venvs", [])]
    for folder in [bindir] + venv_bins:
        os.makedirs(folder)
        for exe in spec.get("executables", []):
            path = os.path.join(folder, exe)
            with open(path, "w") as fh:
                fh.write(RECORDER.format(python=python))
            os.chmod(path, 0o755)
    for folder in venv_bins:
        open(os.path.join(folder, "activate"), "w").close()
    cwd = os.path.join(scratch, spec.get("cwd") or "work")
    os.makedirs(cwd, exist_ok=True)
    for d in spec.get("dirs", []):
        os.makedirs(os.path.join(cwd, d), exist_ok=True)
    for f in spec.get("touch", []):
        path = os.path.join(cwd, f)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        open(path, "a").close()
    env = {"ORACLE_ARGV_OUT": os.path.join(scratch, "calls.jsonl"),
           "ORACLE_CREATES": json.dumps(spec.get("creates") or {}),
           "PATH": bindir + os.pathsep + os.environ["PATH"], "HOME": scratch}
    return cwd, env


def recorded(env: dict) -> list:
    """The calls the recorders of a :func:`prepare` layout saw, in order."""
    if not os.path.exists(env["ORACLE_ARGV_OUT"]):
        return []
    with open(env["ORACLE_ARGV_OUT"]) as fh:
        return [json.loads(line) for line in fh if line.strip()]


def run(spec: dict) -> dict:
    scratch = tempfile.mkdtemp(prefix="stepcab-oracle-recipe-")
    try:
        cwd, env_vars = prepare(scratch, spec)
        env = dict(os.environ, **env_vars)
        cmd = [os.path.join(os.path.dirname(sys.executable), "stimela"), "run"] + list(spec.get("args", []))
        cmd += list(spec["files"])
        if spec.get("recipe"):
            cmd.append(spec["recipe"])
        for name, value in (spec.get("params") or {}).items():
            text = value if isinstance(value, str) else yaml.safe_dump(value, default_flow_style=True).strip()
            if text.endswith("\n..."):
                text = text[:-4].strip()
            cmd.append(f"{name}={text}")
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
        log = (proc.stdout + proc.stderr)[-6000:]
        return {"rc": proc.returncode, "calls": recorded(env_vars), "log": log, "cmd": cmd, "scratch": scratch}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def main() -> None:
    with open(sys.argv[1]) as fh:
        spec = json.load(fh)
    result = run(spec)
    with open(sys.argv[2], "w") as fh:
        json.dump(result, fh, indent=1)


if __name__ == "__main__":
    main()
