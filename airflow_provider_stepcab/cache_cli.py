"""``stepcab cache ls | show KEY | clear`` and ``stepcab plan --cache`` (the step cache, ``docs/cache.md``).

No Airflow import. The store is ``--cache-dir``, else ``$STEPCAB_STEP_CACHE_DIR`` (or
``AIRFLOW__STEPCAB__STEP_CACHE_DIR``), else ``<workdir>/.stepcab/step-cache`` with the working
directory ``--workdir`` or the current one — where ``stepcab run`` keeps it.

``stepcab plan --cache`` computes every step's key from its plan-time values (the same key
document a step task computes: :mod:`.plan.cache_key`) and prints, per step, ``cached`` (with the
run and task that produced it) or ``runs: <reason>``; a step whose values are known only at run
time says so (``runs: unknown until run time: ...``). Cached steps' recorded values (parsed
outputs) are fed to the later steps, as a run would publish them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Optional

from .plan import cache_key as K
from .runtime import step_cache as S

EXIT_OK, EXIT_ERRORS = 0, 1


def store_for(cache_dir: Optional[str], workdir: Optional[str]) -> S.StepCache:
    configured = cache_dir or os.environ.get(S.ENV_DIR) or os.environ.get("AIRFLOW__STEPCAB__STEP_CACHE_DIR")
    return S.StepCache(S.store_dir(workdir=os.path.abspath(workdir or os.getcwd()), configured=configured))


# --------------------------------------------------------------------------- cache ls / show / clear

def _matches(record: dict, recipe: Optional[str], step: Optional[str]) -> bool:
    if recipe and record.get("recipe") != recipe:
        return False
    if step:
        import fnmatch

        dotted = ".".join(record.get("step_path") or [])
        return fnmatch.fnmatchcase(dotted, step) or dotted == step
    return True


def cmd_ls(args: argparse.Namespace) -> int:
    store = store_for(args.cache_dir, args.workdir)
    rows = sorted((r for r in store.records() if _matches(r, args.recipe, args.step)),
                  key=lambda r: (str(r.get("recipe")), str(r.get("ident")), str(r.get("finished"))))
    if args.json:
        print(json.dumps([{k: r.get(k) for k in ("key", "ident", "recipe", "step", "dag_id", "run_id", "task_id",
                                                  "finished", "outputs")} for r in rows], indent=2))
        return EXIT_OK
    for r in rows:
        print(f"{r['key'][:16]}  {r.get('finished', '?'):<25}  {r.get('ident')}  (run {r.get('run_id')})")
    print(f"{len(rows)} record(s) in {store.root}", file=sys.stderr)
    return EXIT_OK


def _one(store: S.StepCache, key: str) -> tuple[Optional[dict], str]:
    keys = store.find(key.lower())
    if len(keys) == 1:
        return store.get(keys[0]), ""
    if not keys:
        return None, f"no record with key {key!r} in {store.root}"
    return None, f"key {key!r} is ambiguous ({len(keys)} records): give more of it"


def cmd_show(args: argparse.Namespace) -> int:
    store = store_for(args.cache_dir, args.workdir)
    record, problem = _one(store, args.key)
    if record is None:
        print(f"stepcab cache: {problem}", file=sys.stderr)
        return EXIT_ERRORS
    print(json.dumps(record, indent=2, sort_keys=True, default=str))
    return EXIT_OK


def cmd_clear(args: argparse.Namespace) -> int:
    store = store_for(args.cache_dir, args.workdir)
    if args.key:
        record, problem = _one(store, args.key)
        if record is None:
            print(f"stepcab cache: {problem}", file=sys.stderr)
            return EXIT_ERRORS
        doomed = [record]
    elif args.recipe or args.step or args.all:
        doomed = [r for r in store.records() if _matches(r, args.recipe, args.step)]
    else:
        print("stepcab cache clear: name what to drop: KEY, --recipe NAME, --step PATH or --all", file=sys.stderr)
        return 2
    removed = sum(store.remove(r["key"]) for r in doomed)
    print(f"removed {removed} record(s) from {store.root}", file=sys.stderr)
    return EXIT_OK


def add_parser(sub: Any) -> None:
    """Register ``cache`` on the ``stepcab`` command's subparsers."""
    p = sub.add_parser("cache", help="list, show and drop step cache records")
    verbs = p.add_subparsers(dest="verb", metavar="ls|show|clear")
    verbs.required = True

    def where(q: argparse.ArgumentParser) -> None:
        q.add_argument("--cache-dir", metavar="DIR", help="the store (default: $STEPCAB_STEP_CACHE_DIR, "
                       "else WORKDIR/.stepcab/step-cache)")
        q.add_argument("--workdir", metavar="DIR", help="working directory of the runs (default: here)")

    q = verbs.add_parser("ls", help="one line per record: key, when, step, run")
    q.add_argument("--recipe", metavar="NAME")
    q.add_argument("--step", metavar="PATH", help="dotted step path or glob")
    q.add_argument("--json", action="store_true")
    where(q)
    q.set_defaults(func=cmd_ls)
    q = verbs.add_parser("show", help="a record as JSON (key document, params, outputs, producing run)")
    q.add_argument("key", metavar="KEY", help="a key or its first characters (at least 4)")
    where(q)
    q.set_defaults(func=cmd_show)
    q = verbs.add_parser("clear", help="drop records")
    q.add_argument("key", nargs="?", metavar="KEY")
    q.add_argument("--recipe", metavar="NAME")
    q.add_argument("--step", metavar="PATH", help="dotted step path or glob")
    q.add_argument("--all", action="store_true", help="every record")
    where(q)
    q.set_defaults(func=cmd_clear)


# --------------------------------------------------------------------------- plan --cache

def plan_cache_lines(recipe: Any, config: Any, params: dict, *, cwd: str, backend: Any = None,
                     store: S.StepCache) -> list:
    """``[(step fqname, status)]`` for every cab step: ``cached (...)`` or ``runs: <reason>``
    (module docstring). Raw inputs are stat'ed here (content hashed with ``opts.airflow.cache_hash``)."""
    from .dag_factory.settings import airflow_section, parse_settings
    from .plan.images import images_section
    from .plan.steps import plan_step
    from .recipe.errors import Problems
    from .recipe.resolve import CLI_LOC, Resolver, Unresolved, evaluate

    tree = getattr(config, "tree", config)
    problems = Problems()
    settings = parse_settings(airflow_section(tree or {}), recipe.name, Problems())
    res = Resolver(tree, problems, cwd=cwd)
    provenance: dict = {}
    lines = []
    for rs in res.recipe(recipe, dict(params or {}), fqname=recipe.name, locs={k: CLI_LOC for k in params or {}}):
        name = rs.fqname
        if rs.skip is True:
            lines.append((name, "skipped (skip)"))
            continue
        planned = plan_step(rs, tree, Problems(), backend=backend)
        unknown = dict(planned.unresolved)
        env = {}
        for var, value in (rs.step.cab.management.environment or {}).items():
            value = evaluate(value, rs.command_ns)
            if isinstance(value, Unresolved):
                unknown[f"environment {var}"] = value.reason
            env[var] = str(value)
        if isinstance(rs.skip, Unresolved):
            unknown["skip"] = rs.skip.reason
        if unknown:
            what, why = next(iter(unknown.items()))
            lines.append((name, f"runs: unknown until run time ({what}: {why})"))
            continue
        from .recipe.model import UNSET
        values = {k: v for k, v in planned.params.items() if v is not UNSET}
        plain = json.loads(K.dumps(K.canonical(values)))
        opts = planned.settings or {}
        image = K.image_of(rs.step.cab, planned.backend or "native", opts, images_section(tree))
        document = K.key_document(
            cab=rs.step.cab, backend=planned.backend or "native", params=plain, workdir=cwd, provenance=provenance,
            describe=lambda p: S.describe_path(p, content_hash=settings.cache_hash), image=image,
            image_digest=S.image_digest(planned.backend or "native", image),
            virtual_env=((opts.get("native") or {}).get("virtual_env") if planned.backend == "native" else None),
            env=env)
        key = K.step_key(document)
        ident = S.step_ident(recipe.name, tuple(rs.path), rs.loop["index"] if rs.loop else None)
        record = store.get(key)
        paths = [K.absolute(p, cwd) for ps in K.file_params(rs.step.cab, plain).values() for p in ps]
        if record is not None:
            missing = S.missing_paths(record.get("outputs") or [])
            if missing:
                status = f"runs: outputs of its record are gone ({', '.join(missing[:3])})"
            else:
                status = (f"cached (run {record.get('run_id')}, task {record.get('task_id')}, "
                          f"{record.get('finished')})")
                if record.get("remote"):
                    status += " [outputs on the cluster not checked]"
                recorded = record.get("params") or {}
                rs.params.update({k: recorded[k] for k in record.get("produced") or [] if k in recorded})
        else:
            latest = store.latest(ident)
            status = "runs: " + "; ".join(K.explain(latest.get("document") if latest else None, document))
        lines.append((name, status))
        provenance = K.with_step(provenance, paths, key, ident)
    return lines


def print_plan_cache(recipe: Any, config: Any, params: dict, *, cwd: str, backend: Any,
                     cache_dir: Optional[str]) -> int:
    store = store_for(cache_dir, cwd)
    lines = plan_cache_lines(recipe, config, params, cwd=cwd, backend=backend, store=store)
    width = max((len(n) for n, _ in lines), default=4)
    print(f"recipe: {recipe.name}  (step cache: {store.root})")
    for name, status in lines:
        print(f"  {name:<{width}}  {status}")
    return EXIT_OK


__all__ = ["add_parser", "plan_cache_lines", "print_plan_cache", "store_for"]
