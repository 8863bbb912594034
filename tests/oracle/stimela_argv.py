"""Oracle (runs INSIDE .oracle-venv): the argv Stimela 2.1.4 itself builds for cab steps.

Usage::

    .oracle-venv/bin/python tests/oracle/stimela_argv.py CASES.yml OUT_DIR [ID ...]

``CASES.yml`` holds ``cases: [{id, include: [...], cab, params, files: [...], dirs: [...],
expect_error: bool}]``; include entries are Stimela include specs (``(cultcargo)wsclean.yml``) or
paths relative to ``CASES.yml``. For each case, ``OUT_DIR/<id>.json`` gets::

    {"id", "cab", "params", "cab_def": <the cab as Stimela resolved it>, "argv": [...]}   # or "error": msg

How: a recipe with one step per case runs under ``stimela run`` (native backend) in a scratch
directory, with a fake executable for every cab command that appends its argv to a file.
``files``/``dirs`` are created first (inputs must exist; so must some implicit outputs).
A batch that fails is re-run one case at a time; ``expect_error`` cases always run alone.
``executables`` (top level of CASES.yml) lists the command names to fake.
"""

import json
import re
import os
import shlex
import subprocess
import sys
import tempfile

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
CAB_DEFS = {}  # case id -> cab definition as Stimela resolved it
FAKE = """#!{python}
import json, os, sys
with open(os.environ["ORACLE_ARGV_OUT"], "a") as fh:
    fh.write(json.dumps([os.path.basename(sys.argv[0])] + sys.argv[1:]) + "\\n")
"""


def _include(spec, base):
    if spec.startswith("(") or os.path.isabs(spec):
        return spec
    return os.path.join(base, spec)


def _stimela(workdir, cases, base, dump=True):
    """Run the cases as one recipe; returns (returncode, argv lines, log text)."""
    includes = []
    for case in cases:
        for inc in case.get("include", []):
            inc = _include(inc, base)
            if inc not in includes:
                includes.append(inc)
    steps = {case["id"]: {"cab": case["cab"], "params": case.get("params") or {}} for case in cases}
    recipe = {"_include": includes, "opts": {"backend": {"select": "native"}},
              "oracle": {"info": "oracle", "steps": steps}}
    path = os.path.join(workdir, "oracle-recipe.yml")
    with open(path, "w") as fh:
        yaml.safe_dump(recipe, fh, sort_keys=False)
    out = os.path.join(workdir, "argv.jsonl")
    if os.path.exists(out):
        os.unlink(out)
    env = dict(os.environ, ORACLE_ARGV_OUT=out, PATH=os.path.join(workdir, "bin") + os.pathsep + os.environ["PATH"])
    cmd = [os.path.join(os.path.dirname(sys.executable), "stimela"), "run"]
    cmd += (["-dc"] if dump else []) + [path, "oracle"]
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True)
    lines = []
    dumped = os.path.join(workdir, "stimela.recipe.config.yaml")
    if os.path.exists(dumped):
        with open(dumped) as fh:
            cabs = yaml.safe_load(fh).get("cabs") or {}
        os.unlink(dumped)
        CAB_DEFS.update({case["id"]: cabs[case["cab"]] for case in cases if case["cab"] in cabs})
        CAB_DEFS.update({("cab", case["cab"]): cabs[case["cab"]] for case in cases if case["cab"] in cabs})
    if os.path.exists(out):
        with open(out) as fh:
            lines = [json.loads(line) for line in fh if line.strip()]
    return proc.returncode, lines, proc.stdout + proc.stderr


def _error_text(log):
    """The error report Stimela prints (the tree after 'detailed error report follows')."""
    lines = [line.rstrip() for line in log.splitlines()]
    start = next((i for i, line in enumerate(lines) if "detailed error report follows" in line), None)
    if start is None:
        keep = [line for line in lines if "ERROR" in line]
    else:
        keep = [line.strip() for line in lines[start + 1:] if line.strip() and "Warning" not in line][:12]
    return " | ".join(keep)[-1200:] or log[-1200:]


def _cab_def_by_name(cab):
    """A case that fails before Stimela dumps its config reuses the definition seen in another case."""
    return CAB_DEFS.get(("cab", cab))


def main():
    cases_file, out_dir = sys.argv[1], sys.argv[2]
    only = set(sys.argv[3:])
    base = os.path.dirname(os.path.abspath(cases_file))
    with open(cases_file) as fh:
        spec = yaml.safe_load(fh)
    cases = spec["cases"]
    if only:
        cases = [c for c in cases if c["id"] in only]
    os.makedirs(out_dir, exist_ok=True)
    workdir = tempfile.mkdtemp(prefix="stepcab-oracle-")
    os.makedirs(os.path.join(workdir, "bin"))
    for case in cases:
        for d in case.get("dirs", []):
            os.makedirs(os.path.join(workdir, d), exist_ok=True)
        for f in case.get("files", []):
            os.makedirs(os.path.dirname(os.path.join(workdir, f)) or workdir, exist_ok=True)
            open(os.path.join(workdir, f), "a").close()
    # fake executables for every command (listed in CASES.yml: `executables`)
    for exe in spec.get("executables", []):
        fake = os.path.join(workdir, "bin", exe)
        with open(fake, "w") as fh:
            fh.write(FAKE.format(python=sys.executable))
        os.chmod(fake, 0o755)
    # 2. run: good cases in batches, error cases alone
    results = {}
    pending = [c for c in cases if not c.get("expect_error")]
    while pending:
        rc, lines, log = _stimela(workdir, pending, base)
        for case, argv in zip(pending, lines):
            results[case["id"]] = {"argv": argv}
        if rc == 0 and len(lines) == len(pending):
            break
        done = len(lines)
        bad = re.search(r"error validating step '([^']+)'", log)
        if done == 0 and bad and len(pending) > 1 and bad.group(1) in {c["id"] for c in pending}:
            # prevalidation of the whole recipe failed on one step: record it, re-run the others
            results[bad.group(1)] = {"error": _error_text(log)}
            pending = [c for c in pending if c["id"] != bad.group(1)]
            continue
        if done < len(pending):
            # run the first unfinished case alone to get its own verdict
            case = pending[done]
            rc1, lines1, log1 = _stimela(workdir, [case], base)
            results[case["id"]] = {"argv": lines1[0]} if rc1 == 0 and lines1 else {"error": _error_text(log1)}
            pending = pending[done + 1:]
        else:
            break
    for case in cases:
        if case.get("expect_error"):
            rc, lines, log = _stimela(workdir, [case], base)
            results[case["id"]] = {"argv": lines[0]} if rc == 0 and lines else {"error": _error_text(log)}
    for case in cases:
        record = {"id": case["id"], "cab": case["cab"], "params": case.get("params") or {},
                  "cab_def": CAB_DEFS.get(case["id"]) or _cab_def_by_name(case["cab"]), **results.get(case["id"], {"error": "not run"})}
        with open(os.path.join(out_dir, f"{case['id']}.json"), "w") as fh:
            json.dump(record, fh, indent=1)
            fh.write("\n")
        print(case["id"], "error" if "error" in record else " ".join(record["argv"]))


if __name__ == "__main__":
    main()
