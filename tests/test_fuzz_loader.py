"""Bounded fuzzing of the recipe loader, its directives and formulas (issue 15).

Hypothesis generates YAML texts (anchor/alias heavy, syntax noise, recipe-shaped trees with
``_include``/``_use``/``_scrub`` between several files) and formula/substitution strings. Each case
runs in one long-lived worker interpreter with an address-space limit (``RLIMIT_AS``) and a time
limit per case; the test asserts for every case:

- it ends within the time limit and without exhausting the memory limit;
- the only failures are our own: :class:`~.errors.RecipeError` problems (never an ``internal``
  error, never a cab that "could not be built" because of an exception) naming an existing file
  and, for YAML syntax, its line; :class:`~.errors.FormulaError` for formulas;
- the worker never dies (a segmentation fault in libyaml would end it).
"""

from __future__ import annotations

import json
import os
import resource
import select
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parent.parent
MEMORY = 1536 * 1024 ** 2
CASE_SECONDS = 10.0  # generous for a loaded 2-core machine; a bounded case takes milliseconds
#: STEPCAB_FUZZ_EXAMPLES=5000 explores further, with fresh random cases each run
EXPLORE = int(os.environ.get("STEPCAB_FUZZ_EXAMPLES", "0"))
CASES = settings(max_examples=EXPLORE or 100, deadline=None, derandomize=not EXPLORE,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                        HealthCheck.function_scoped_fixture])

WORKER = textwrap.dedent(r'''
    import json, os, signal, sys, tempfile, time, traceback
    from airflow_provider_stepcab.recipe.api import load_file
    from airflow_provider_stepcab.recipe.errors import FormulaError, RecipeError
    from airflow_provider_stepcab.recipe.formula import evaluate_formula
    from airflow_provider_stepcab.recipe.subst import substitute

    class Overtime(BaseException):
        pass

    def alarm(signum, frame):
        raise Overtime()

    signal.signal(signal.SIGALRM, alarm)
    NS = {"recipe": {"x": "a", "n": 3, "l": [1, 2, "b"], "d": {"k": "v"}, "f": 1.5, "s": "{recipe.x}"},
          "current": {"x": "c"}, "steps": {}, "config": {"run": {"env": {}}}}
    CRASH_CODES = {"internal"}

    def run(case):
        kind = case["kind"]
        if kind == "files":
            with tempfile.TemporaryDirectory() as d:
                for name, text in case["files"].items():
                    with open(os.path.join(d, name), "w", encoding="utf-8") as fh:
                        fh.write(text)
                main = os.path.join(d, case["main"])
                result = load_file(main, persist=False)
                problems = []
                for p in result.problems:
                    crash = p.code in CRASH_CODES or "could not be built" in p.message
                    problems.append({"file": os.path.relpath(p.loc.file, d) if p.loc.file.startswith(d)
                                     else p.loc.file, "line": p.loc.line, "code": p.code, "text": str(p),
                                     "crash": crash})
                return {"status": "ok", "problems": problems}
        try:
            if kind == "formula":
                value = evaluate_formula(case["text"], NS)
            else:
                value = substitute(case["text"], NS)
            return {"status": "ok", "size": len(repr(value))}
        except (FormulaError, RecipeError) as exc:
            return {"status": "error", "type": type(exc).__name__, "text": str(exc)[:500]}

    for line in sys.stdin:
        case = json.loads(line)
        start = time.process_time()
        signal.setitimer(signal.ITIMER_REAL, float(sys.argv[1]))
        try:
            out = run(case)
        except Overtime:
            out = {"status": "overtime"}
        except BaseException as exc:  # noqa: BLE001 - what the test is looking for
            out = {"status": "crash", "type": type(exc).__name__,
                   "traceback": traceback.format_exc()[-3000:]}
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        out["cpu"] = time.process_time() - start
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()
''')


def _limits() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))


class Worker:
    """One interpreter running cases one at a time; replaced after a case kills it."""

    def __init__(self, cache: Path):
        self.cache = cache
        self.proc = None

    def _start(self) -> None:
        env = dict(os.environ, PYTHONPATH=str(REPO), STEPCAB_CACHE_DIR=str(self.cache),
                   STEPCAB_RECIPE_FOLDERS="", AIRFLOW__STEPCAB__RECIPE_FOLDERS="")
        self.proc = subprocess.Popen([sys.executable, "-c", WORKER, str(CASE_SECONDS / 2)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                                     preexec_fn=_limits, text=True)

    def run(self, case: dict) -> dict:
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        self.proc.stdin.write(json.dumps(case) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], CASE_SECONDS + 20)  # + the first imports
        if not ready:
            self.close()
            pytest.fail(f"case took more than {CASE_SECONDS} s (worker killed): {json.dumps(case)[:2000]}")
        line = self.proc.stdout.readline()
        if not line:
            rc = self.proc.wait()
            err = self.proc.stderr.read()[-3000:]
            self.proc = None
            pytest.fail(f"the worker died (exit {rc}) on {json.dumps(case)[:2000]}\n{err}")
        return json.loads(line)

    def close(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    w = Worker(tmp_path_factory.mktemp("cache"))
    yield w
    w.close()


def check(out: dict, case: dict) -> dict:
    assert out["status"] != "overtime", f"case ran over {CASE_SECONDS / 2} s: {json.dumps(case)[:2000]}"
    assert out["status"] != "crash", f"{out['type']} on {json.dumps(case)[:2000]}\n{out['traceback']}"
    return out


def check_files(out: dict, case: dict) -> None:
    check(out, case)
    for p in out["problems"]:
        assert not p["crash"], (p["text"], json.dumps(case)[:3000])
        assert p["file"] in case["files"] or p["file"].startswith("/") and os.path.exists(p["file"]), p
        if p["code"] == "yaml":
            assert p["line"] >= 1, p


# --------------------------------------------------------------------------- YAML texts

WORDS = ["a", "b", "x", "steps", "cabs", "inputs", "dtype", "str", "int", "List[str]", "command", "echo",
         "params", "cab", "_include", "_use", "_scrub", "lib", "opts", "recipe", "=recipe.x", "{recipe.x}",
         "${vars.a}", "${a}", "null", "~", "1e3", "0x1f", "yes", "2026-01-01", "!!str", "!!int", "!!binary",
         "!!python/object:os.system", "!!set", "!!omap", "?", "|", ">", "'q'", '"dq"', "\\", "#c", "<<", "...",
         "---", "%YAML 1.1", "%TAG ! tag:x,1:", "!x", "é", "\t"]
PUNCT = ["&a", "&b", "*a", "*b", "&c", "*c", "<<: *a", ": ", ":", "- ", "[", "]", "{", "}", ", ", "\n", "\n  ",
         "\n    ", "\n- ", "  ", "'", '"', "&", "*", "!"]
noise = st.lists(st.one_of(st.sampled_from(WORDS), st.sampled_from(PUNCT), st.text(max_size=3)),
                 max_size=60).map("".join)


@st.composite
def alias_heavy(draw) -> str:
    """Anchors, aliases, merge keys and flow/block mixes, some of them broken."""
    lines, anchors = [], []
    for i in range(draw(st.integers(1, 12))):
        name = f"k{i}"
        refs = draw(st.lists(st.sampled_from(anchors), max_size=6)) if anchors else []
        items = [f"*{r}" for r in refs] + draw(st.lists(st.sampled_from(["1", "x", "[]", "{}", "=1+1", "~"]),
                                                         max_size=3))
        shape = draw(st.sampled_from(["flow", "map", "block", "merge", "scalar"]))
        anchor = f"a{i}"
        if shape == "flow":
            lines.append(f"{name}: &{anchor} [{', '.join(items)}]")
        elif shape == "map":
            lines.append(f"{name}: &{anchor} {{{', '.join(f'm{j}: {v}' for j, v in enumerate(items))}}}")
        elif shape == "block":
            lines.append(f"{name}: &{anchor}")
            lines += [f"  - {v}" for v in items] or ["  - 0"]
        elif shape == "merge" and refs:
            lines.append(f"{name}: &{anchor}")
            lines += [f"  <<: *{r}" for r in refs[:1]] + [f"  z{j}: {v}" for j, v in enumerate(items)]
        else:
            lines.append(f"{name}: &{anchor} {draw(st.sampled_from(['x', '1', 'null', '*a0', '&a0 y']))}")
        anchors.append(anchor)
    if draw(st.booleans()):
        lines.insert(draw(st.integers(0, len(lines))), draw(noise))
    return "\n".join(lines) + "\n"


@CASES
@given(text=st.one_of(noise, alias_heavy()))
@example(text="\x1f")  # found by this test: each was an internal error, or had no line
@example(text="!!int")
@example(text="!!int\na")
def test_any_yaml_text_loads_or_fails_with_file_and_line(worker, text):
    case = {"kind": "files", "main": "r.yml", "files": {"r.yml": text}}
    check_files(worker.run(case), case)


# --------------------------------------------------------------------------- recipe-shaped files with directives

KEYS = ["cabs", "lib", "opts", "steps", "inputs", "outputs", "params", "cab", "recipe", "dtype", "default",
        "command", "policies", "positional", "backend", "select", "native", "info", "for_loop", "over", "var",
        "assign", "assign_based_on", "aliases", "misc", "s1", "s2", "c1", "r1", "x", "y", "_include", "_use",
        "_scrub", "_include_post", "_use_post", "_scrub_post", "_requires", "_contingent", "DEFAULT", "flavour",
        "kind", "args", "image", "management", "environment", "skip", "tags", "schema_file"]
SCALARS = st.one_of(st.sampled_from(["a.yml", "b.yml", "c.yml", "missing.yml", "(airflow_provider_stepcab)x.yml",
                                     "lib.misc.x", "cabs.c1", "opts", "r1", "str", "int", "List[str]",
                                     "Optional[File]", "echo", "=recipe.x", "=IF(recipe.x, 1, 2)", "{recipe.x}",
                                     "{recipe.x:>9}", "{current.y}", "${opts.x}", "${lib.misc}", "=recipe.x + 1",
                                     "=LIST(1,2)", "=RANGE(3)", "true", "native", "[warn]a.yml", "[optional]b.yml"]),
                    st.integers(-3, 3), st.booleans(), st.none(), st.text(max_size=6))
trees = st.recursive(SCALARS, lambda kids: st.one_of(st.lists(kids, max_size=4),
                                                     st.dictionaries(st.sampled_from(KEYS), kids, max_size=5)),
                     max_leaves=40)
documents = st.dictionaries(st.sampled_from(KEYS), trees, max_size=6)


@CASES
@given(main=documents, a=documents, b=documents, c=st.one_of(documents, noise))
@example(main={"x": {"_include": "a.yml", "_scrub": True}}, a={"y": 1}, b={}, c={})  # was an internal error
def test_directives_between_files_load_or_fail_with_file_and_line(worker, main, a, b, c):
    def dump(doc):
        return doc if isinstance(doc, str) else yaml.safe_dump(doc, sort_keys=False)

    files = {"r.yml": dump(main), "a.yml": dump(a), "b.yml": dump(b), "c.yml": dump(c)}
    case = {"kind": "files", "main": "r.yml", "files": files}
    check_files(worker.run(case), case)


# --------------------------------------------------------------------------- formulas and substitutions

TOKENS = ["recipe.x", "recipe.n", "recipe.l", "recipe.d", "recipe.f", "recipe.s", "current.x", "steps.a.b",
          "recipe.*", "recipe.?", "UNSET", "EMPTY", "SELF", "True", "false", "1", "0", "-1", "2", "10", "1e308",
          "0.5", "999999", "'a'", '"b"', "'%s'", "'%999999999d'", "'%-999999s'", "'%.999999f'", "'{}'", "'\\n'",
          "(", ")", "[", "]", ",", "+", "-", "*", "/", "//", "%", "**", "<<", ">>", "&", "|", "^", "~", "==", "!=",
          "<", "<=", ">", ">=", "in", "not", "and", "or", "IF(", "IFSET(", "CASES(", "LIST(", "LEN(", "RANGE(",
          "MIN(", "MAX(", "GETITEM(", "IS_STR(", "IS_NUM(", "VALID(", "GLOB(", "EXISTS(", "DIRNAME(", "BASENAME(",
          "SORT(", "STRIPEXT(", "ERROR(", "ABORT(", "NOSUBST(", "SUBST(", "LOG(", "DEBUG(", "ARGS(", "*.fits",
          " ", "recipe.", ".", "@", "?"]
formulas = st.lists(st.sampled_from(TOKENS), min_size=1, max_size=25).map(lambda t: "=" + " ".join(t))
formula_noise = st.text(alphabet="=()[],.+-*/%<>&|^~'\"0123456789 abcdefxyzIFLSTrecip", max_size=40).map("=".__add__)


@CASES
@given(text=st.one_of(formulas, formula_noise))
def test_formulas_evaluate_or_fail_with_a_formula_error(worker, text):
    case = {"kind": "formula", "text": text}
    check(worker.run(case), case)


FIELDS = ["recipe.x", "recipe.n", "recipe.l", "recipe.d", "recipe.f", "recipe.s", "recipe.d.k", "recipe.l[0]",
          "recipe.l[9]", "recipe.d[k]", "current.x", "nope.x", "", "0", "recipe", "recipe.x.y"]
SPECS = ["", ":>9", ":<{recipe.n}", ":^999999999", ":.999999999", ":09d", ":,", ":_x", ":%", ":e", ":s",
         ":{recipe.n}{recipe.n}", ":>{recipe.x}", ":=+30", "!r", "!s", "!a", "!x", ":{", ":}", ":>1000", ":.1000f",
         ":>1001", ":{recipe.s}"]
fields = st.tuples(st.sampled_from(FIELDS), st.sampled_from(SPECS)).map(lambda fs: "{" + fs[0] + fs[1] + "}")
templates = st.lists(st.one_of(fields, st.sampled_from(["{", "}", "{{", "}}", "text", " ", "=", "{{recipe.x}}"]),
                             st.text(max_size=3)), max_size=8).map("".join)


@CASES
@given(text=templates)
def test_substitutions_and_format_specs_stay_bounded(worker, text):
    case = {"kind": "subst", "text": text}
    out = check(worker.run(case), case)
    if out["status"] == "ok":
        assert out["size"] < 5000, (text, out)  # widths are capped at 1000 (max_format_width)
