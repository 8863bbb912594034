"""Regenerate the golden ``singularity exec`` command lines with Stimela 2.1.4 itself.

Runs INSIDE a throwaway venv holding ``stimela==2.1.4`` and ``cult-cargo==0.2.1`` (e.g. the
project's ``.oracle-venv``, made by ``make oracle``)::

    .oracle-venv/bin/python tests/golden/singularity/generate.py [ID ...]

For every case of ``cases.yml`` it makes a scratch root under ``/var/tmp`` (the tests make theirs
there too, so paths sort the same way), builds the case's file tree, writes a one-step recipe
selecting the singularity backend, puts a fake ``singularity`` first on ``PATH`` (``--version``
prints a version, ``build`` creates the image file, ``exec`` records its argv as JSON and exits 0)
and runs ``stimela run``. The recorded argv is normalised: the executable becomes ``singularity``,
the scratch root ``{ROOT}``, and the fresh temporary directories Stimela makes for ``/tmp`` and
ephemeral binds ``EPHEMERAL``. Output: ``<id>.json`` next to this file with the recipe text, the
tree, the working directory and the argv (or the error Stimela reported).

Stimela is GPL: it is only *run* here, as an oracle.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
FAKE = """#!{python}
import json, os, sys
args = sys.argv[1:]
if args[:1] == ["--version"]:
    print("singularity-ce version 3.11.4-fake")
elif args[:1] == ["build"]:
    os.makedirs(os.path.dirname(args[1]), exist_ok=True)
    open(args[1], "w").write("fake image " + args[2] + "\\n")
elif args[:1] == ["exec"]:
    with open(os.environ["SGOLD_OUT"], "a") as fh:
        fh.write(json.dumps(sys.argv) + "\\n")
else:
    sys.exit("fake singularity: unexpected " + " ".join(args))
"""


def merge(a, b):
    out = dict(a)
    for k, v in (b or {}).items():
        out[k] = merge(out[k], v) if isinstance(out.get(k), dict) and isinstance(v, dict) else v
    return out


def recipe_text(case, cabs):
    backend = merge({"select": "singularity", "singularity": {"image_dir": "{ROOT}/images"}}, case.get("backend"))
    doc = {}
    if case.get("include"):
        doc["_include"] = list(case["include"])
    doc["cabs"] = cabs
    doc["opts"] = {"backend": backend, "log": {"dir": "{ROOT}/logs"}}
    doc["golden"] = {"info": "golden singularity case", "steps": {"step": {"cab": case["cab"],
                                                                          "params": case.get("params") or {}}}}
    return yaml.safe_dump(doc, sort_keys=False)


def make_tree(root, tree):
    for d in tree.get("dirs", []):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    for f in tree.get("files", []):
        os.makedirs(os.path.dirname(os.path.join(root, f)), exist_ok=True)
        open(os.path.join(root, f), "w").close()
    for link, target in (tree.get("links") or {}).items():
        path = os.path.join(root, link)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.symlink(target.replace("{ROOT}", root), path)


def normalise(argv, root, eph_dirs):
    out = ["singularity"]
    pat = re.compile(r"^(%s)/tmp[A-Za-z0-9_]{8}$" % "|".join(re.escape(d) for d in eph_dirs))
    for i, arg in enumerate(argv[1:], 1):
        if argv[i - 1] == "--bind":
            src, rest = arg.split(":", 1)
            if pat.match(src):
                arg = "EPHEMERAL:" + rest
        out.append(arg.replace(root, "{ROOT}"))
    return out


def run_case(case, cabs):
    root = tempfile.mkdtemp(prefix="stepcab-sgold-", dir="/var/tmp")
    try:
        make_tree(root, case.get("tree") or {})
        cwd = os.path.join(root, case.get("cwd", "work"))
        os.makedirs(cwd, exist_ok=True)
        os.makedirs(os.path.join(root, "bin"))
        fake = os.path.join(root, "bin", "singularity")
        with open(fake, "w") as fh:
            fh.write(FAKE.format(python=sys.executable))
        os.chmod(fake, 0o755)
        if case.get("image_exists"):
            path = case["image_exists"].replace("{ROOT}", root)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            open(path, "w").close()
        text = recipe_text(case, cabs)
        recipe = os.path.join(root, "recipe.yml")
        with open(recipe, "w") as fh:
            fh.write(text.replace("{ROOT}", root))
        out = os.path.join(root, "argv.jsonl")
        env = dict(os.environ, SGOLD_OUT=out, PATH=os.path.join(root, "bin") + os.pathsep + os.environ["PATH"])
        stimela = os.path.join(os.path.dirname(sys.executable), "stimela")
        proc = subprocess.run([stimela, "run", recipe, "golden"], cwd=cwd, env=env, capture_output=True, text=True)
        eph = dict(((case.get("backend") or {}).get("singularity") or {}).get("ephemeral") or {"tmp": "/tmp"})
        eph_dirs = [d.replace("{ROOT}", root) for d in eph.values()]
        record = {"id": case["id"], "recipe": text, "tree": case.get("tree") or {},
                  "cwd": case.get("cwd", "work"), "image_exists": case.get("image_exists")}
        lines = open(out).read().splitlines() if os.path.exists(out) else []
        if proc.returncode == 0 and lines:
            record["argv"] = normalise(json.loads(lines[0]), root, eph_dirs)
        else:
            log = proc.stdout + proc.stderr
            errs = [ln.strip() for ln in log.splitlines() if "rror" in ln]
            record["error"] = (" | ".join(errs[-4:]) or log[-600:]).replace(root, "{ROOT}")
        return record
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main():
    with open(os.path.join(HERE, "cases.yml")) as fh:
        spec = yaml.safe_load(fh)
    only = set(sys.argv[1:])
    for case in spec["cases"]:
        if only and case["id"] not in only:
            continue
        record = run_case(case, spec.get("cabs") or {})
        with open(os.path.join(HERE, f"{case['id']}.json"), "w") as fh:
            json.dump(record, fh, indent=1)
            fh.write("\n")
        print(case["id"], record.get("error") or " ".join(record["argv"]))


if __name__ == "__main__":
    main()
