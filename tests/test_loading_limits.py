"""Loading limits (issue 15): a hostile recipe file is reported with its file and line, in bounded
time and memory, and never crashes the interpreter, blocks, or echoes the content of a file that
is not a recipe.

Cases that used to hang or crash run in a fresh interpreter with a time and memory limit, so that a
regression fails the test instead of the test run.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import hostile_files as hf
from airflow_provider_stepcab.recipe import limits as limits_mod
from airflow_provider_stepcab.recipe.config import load_documents
from airflow_provider_stepcab.recipe.api import load_file, load_recipe_result
from airflow_provider_stepcab.recipe.errors import FormulaError, Loc, RecipeError
from airflow_provider_stepcab.recipe.formula import evaluate_formula
from airflow_provider_stepcab.recipe.subst import substitute
from airflow_provider_stepcab.recipe.yamlguard import depth_bound
from airflow_provider_stepcab.recipe.yamlio import load_yaml_text

REPO = Path(__file__).resolve().parent.parent
MEMORY = 2 * 1024 ** 3

LOAD = textwrap.dedent('''
    import json, sys, time
    from airflow_provider_stepcab.recipe.config import load_documents
    start = time.monotonic()
    conf = load_documents([sys.argv[1]])
    print("RESULT " + json.dumps({"seconds": time.monotonic() - start,
                                  "problems": [[p.loc.file, p.loc.line, p.code, str(p)] for p in conf.problems.errors]}))
''')


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))


def load_isolated(path: Path, timeout: float = 30, **env: str) -> dict:
    """``load_documents([path])`` in a fresh interpreter (2 GB, ``timeout`` s): its errors."""
    try:
        out = subprocess.run([sys.executable, "-c", LOAD, str(path)], capture_output=True, text=True,
                             timeout=timeout, preexec_fn=_limit_memory, cwd=path.parent,
                             env=dict(os.environ, PYTHONPATH=str(REPO), **env))
    except subprocess.TimeoutExpired:
        pytest.fail(f"loading {path.name} took more than {timeout} s")
    assert out.returncode == 0, f"exit {out.returncode}: {out.stderr[-2000:]}"
    line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def only_error(result: dict) -> list:
    assert len(result["problems"]) >= 1, result
    return result["problems"][0]


# ------------------------------------------------------------------------------- expansion bombs

def test_alias_bomb_is_refused_quickly_at_its_line(tmp_path):
    path = hf.alias_bomb(tmp_path)
    result = load_isolated(path)
    file, line, code, text = only_error(result)
    assert (file, line, code) == (str(path), 6, "alias-limit"), result
    assert "YAML aliases expand to more than 100000 nodes" in text and "STEPCAB_MAX_ALIAS_NODES" in text
    assert result["seconds"] < 5


def test_aliases_within_the_limit_still_share_content(tmp_path):
    path = tmp_path / "ok.yml"
    path.write_text("vars:\n  common: &c {threads: 4, mem: 8G}\n  a: *c\n  b: {<<: *c, gpus: 1}\n")
    conf = load_documents([str(path)])
    assert not conf.problems.errors
    assert conf.tree["vars"]["a"] == {"threads": 4, "mem": "8G"}
    assert conf.tree["vars"]["b"] == {"threads": 4, "mem": "8G", "gpus": 1}


def test_alias_limit_is_configurable(tmp_path):
    path = tmp_path / "few.yml"
    path.write_text("vars:\n  a: &a [1, 2, 3, 4]\n  b: [*a, *a, *a]\nr: {steps: {}}\n")
    assert load_isolated(path)["problems"] == []
    file, line, code, text = only_error(load_isolated(path, STEPCAB_MAX_ALIAS_NODES="9"))
    assert (line, code) == (3, "alias-limit") and "more than 9 nodes" in text


@pytest.mark.parametrize("writer, line, words", [
    (hf.interp_bomb, None, "interpolations copy more than 100000 nodes"),
    (hf.string_bomb, None, "characters is longer than 1000000"),
    (hf.use_bomb, None, "_use and _include copy more than 100000 nodes"),
])
def test_interpolation_and_use_bombs_are_refused_quickly(tmp_path, writer, line, words):
    result = load_isolated(writer(tmp_path))
    assert any(words in p[3] and p[1] > 0 for p in result["problems"]), result["problems"][:3]
    assert result["seconds"] < 5


def test_nested_includes_of_one_file_count_against_the_limit(tmp_path):
    (tmp_path / "leaf.yml").write_text("v: {" + ", ".join(f"k{i}: {i}" for i in range(9)) + "}\n")
    prev = "leaf"
    for name in "abcdefgh":
        (tmp_path / f"{name}.yml").write_text(
            "\n".join(f"x{i}: {{_include: {prev}.yml}}" for i in range(9)) + "\n")
        prev = name
    top = tmp_path / "top.yml"
    top.write_text("_include: h.yml\nr: {steps: {}}\n")
    result = load_isolated(top)
    assert any("copy more than 100000 nodes" in p[3] for p in result["problems"]), result["problems"][:3]
    assert result["seconds"] < 5


# ------------------------------------------------------------------------------- nesting depth

@pytest.mark.parametrize("writer", [hf.deep_flow, hf.deep_block])
def test_deep_nesting_is_an_error_not_a_crash(tmp_path, writer):
    path = writer(tmp_path)
    file, line, code, text = only_error(load_isolated(path))
    assert (file, code) == (str(path), "too-deep") and line >= 1
    assert "nested more than 100 deep" in text and "STEPCAB_MAX_NESTING_DEPTH" in text


@pytest.mark.parametrize("opener, closer", [("[", "]"), ("{a: ", "}"), ("- ", "")])
def test_nesting_within_the_limit_loads(opener, closer):
    depth = 90
    text = "x: " + opener * depth + "1" + closer * depth if opener != "- " else \
        "".join("  " * i + "-\n" for i in range(depth)) + "  " * depth + "1\n"
    tree = load_yaml_text(text, "ok.yml")
    assert tree is not None


def test_depth_just_over_the_limit_names_the_line():
    text = "a: 1\nb:\n  c: " + "[" * 101 + "]" * 101 + "\n"
    with pytest.raises(RecipeError) as exc:
        load_yaml_text(text, "f.yml")
    assert str(exc.value).startswith("f.yml:3: mappings/lists nested more than 100 deep")


def test_python_stack_exhaustion_is_an_error_with_the_line(tmp_path):
    code = textwrap.dedent('''
        import sys
        from airflow_provider_stepcab.recipe.yamlio import load_yaml_text
        from airflow_provider_stepcab.recipe.errors import RecipeError
        def deep(n):
            if n:
                return deep(n - 1)
            try:
                load_yaml_text("a:\\n  b: " + "[" * 95 + "]" * 95 + "\\n", "f.yml")
            except RecipeError as exc:
                print("ERROR", exc)
        sys.setrecursionlimit(300)
        deep(150)
    ''')
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert out.returncode == 0, out.stderr[-2000:]
    assert "ERROR f.yml:2: mappings/lists nested too deep for the Python stack" in out.stdout


def test_depth_bound_is_never_below_libyamls_depth():
    """The cheap bound decides whether libyaml's recursive composer may run: it must never be less
    than the depth libyaml actually builds, whatever character precedes each bracket."""
    import yaml

    def depth(node) -> int:
        if isinstance(node, yaml.SequenceNode):
            return 1 + max([depth(n) for n in node.value] or [0])
        if isinstance(node, yaml.MappingNode):
            return 1 + max([max(depth(k), depth(v)) for k, v in node.value] or [0])
        return 0

    chars = [chr(c) for c in range(1, 128)] + ["\x85", "\xa0", "\u2028", "\u2029", "\ufeff", "\u3000"]
    for sep in chars:
        for opener, closer in (("[", "]"), ("{", "}")):
            for text in (f"{opener}{sep}" * 6 + closer * 6, f"k: {sep}{opener}" * 1 + closer,
                         f"[a{sep}{opener}{opener}1{closer}{closer}]", f"- &a{sep}{opener}{opener}{closer}{closer}"):
                try:
                    node = yaml.compose(text, Loader=yaml.CSafeLoader)
                except yaml.YAMLError:
                    continue
                if node is not None:
                    assert depth_bound(text) >= depth(node), repr(text)


# ------------------------------------------------------------------------------- files

def test_a_fifo_is_refused_without_blocking(tmp_path):
    path = hf.fifo(tmp_path)
    file, line, code, text = only_error(load_isolated(path, timeout=20))
    assert (file, code) == (str(path), "not-regular-file") and "FIFO" in text


@pytest.mark.parametrize("writer, says", [
    (hf.include_fifo, "pipe.yml is a FIFO (named pipe), not a regular file"),
    (hf.include_dir, "adir.yml is a directory, not a regular file"),
    (hf.include_loop, "loop_a.yml is a symbolic link loop"),
])
def test_includes_that_are_not_regular_files_are_named_as_such(tmp_path, writer, says):
    path = writer(tmp_path)
    problems = load_isolated(path, timeout=20)["problems"]
    assert len(problems) == 1 and problems[0][1] == 2, problems
    assert says in problems[0][3] and "not found" not in problems[0][3]


def test_a_file_over_the_size_limit_is_refused_without_parsing(tmp_path):
    path = hf.huge(tmp_path)
    start = time.monotonic()
    conf = load_documents([str(path)])
    assert time.monotonic() - start < 2
    [error] = conf.problems.errors
    assert error.code == "file-too-large" and error.loc.file == str(path)
    assert f"file is {path.stat().st_size} bytes, larger than the 2097152 byte limit" in error.message
    assert "STEPCAB_MAX_FILE_SIZE" in error.message


def test_size_limit_is_configurable(tmp_path):
    path = tmp_path / "r.yml"
    path.write_text("r:\n  steps: {}\n" + "# padding\n" * 200)
    assert load_isolated(path)["problems"] == []
    def own(problems: list) -> list:  # cult-cargo's files are over 1 KiB too
        return [p for p in problems if p[0] == str(path)]

    [(file, line, code, text)] = own(load_isolated(path, STEPCAB_MAX_FILE_SIZE="1K")["problems"])
    assert code == "file-too-large" and "1024 byte limit" in text
    [(_, _, code, _)] = own(load_isolated(path, AIRFLOW__STEPCAB__MAX_FILE_SIZE="1k")["problems"])
    assert code == "file-too-large"


def test_loading_time_is_linear_in_the_number_of_steps(tmp_path):
    def recipe(n: int) -> Path:
        path = tmp_path / f"r{n}.yml"
        path.write_text("cabs:\n  c: {command: echo, inputs: {x: {dtype: int}}}\nr:\n  steps:\n"
                        + "".join(f"    s{i}: {{cab: c, params: {{x: {i}}}}}\n" for i in range(n)))
        return path

    def seconds(path: Path) -> float:
        best = 1e9
        for _ in range(3):
            start = time.process_time()
            load_documents([str(path)])
            best = min(best, time.process_time() - start)
        return best

    small, large = seconds(recipe(2000)), seconds(recipe(16000))
    assert large < 8 * small * 2, (small, large)  # 8x the steps: ~8x the time, never quadratic


def test_not_utf8_names_the_line_and_quotes_nothing(tmp_path):
    path = hf.not_utf8(tmp_path)
    [error] = load_documents([str(path)]).problems.errors
    assert str(error) == f"{path}:3: not UTF-8 (byte 0xe9 at column 13)"


def test_validate_reports_not_utf8_without_a_traceback(tmp_path):
    path = hf.not_utf8(tmp_path)
    out = subprocess.run([sys.executable, "-m", "airflow_provider_stepcab", "validate", str(path)],
                         capture_output=True, text=True, timeout=60, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert out.returncode == 1
    assert f"{path}:3: not UTF-8" in out.stdout + out.stderr
    assert "Traceback" not in out.stderr and "caf" not in out.stdout + out.stderr


@pytest.mark.parametrize("writer", [hf.include_secret, hf.include_secret_yml])
def test_errors_never_quote_a_file_that_is_not_a_recipe(tmp_path, writer):
    path = writer(tmp_path)
    problems = load_documents([str(path)]).problems
    assert problems.errors
    text = "\n".join(str(p) for p in problems)
    for word in hf.SECRET_WORDS:
        assert word not in text, text


def test_an_included_yaml_file_that_is_not_a_recipe_is_named_not_quoted(tmp_path):
    path = hf.include_foreign_yml(tmp_path)
    for problems in (load_file(str(path), persist=False).problems,
                     load_recipe_result(str(path), "leak3").problems):
        text = "\n".join(str(p) for p in problems)
        for word in hf.SECRET_WORDS:
            assert word not in text, text
        [summary] = [p for p in problems if p.code == "foreign-include"]
        assert summary.loc == Loc(str(tmp_path / "accounts.yml"), 1)
        assert f"included at {path}:3 (cabs.c._include) and 2 other place(s)" in summary.message
        assert "none of its 2 top-level key(s) is valid in that place" in summary.message
        assert "unknown-key" in summary.message and "its content is not quoted" in summary.message


def test_an_included_fragment_with_a_typo_keeps_its_precise_message(tmp_path):
    (tmp_path / "cab.yml").write_text("command: echo\ncomand: ls\n")
    path = tmp_path / "r.yml"
    path.write_text("cabs:\n  c: {_include: cab.yml}\nr:\n  steps: {s: {cab: c}}\n")
    [warning] = load_file(str(path), persist=False).problems.warnings
    assert warning.loc == Loc(str(tmp_path / "cab.yml"), 2) and "unknown cab field 'comand'" in warning.message


def test_an_included_file_without_a_yaml_suffix_is_refused(tmp_path):
    path = hf.include_secret(tmp_path)
    [error] = load_documents([str(path)]).problems.errors
    assert error.loc.line == 2 and "is not a .yml/.yaml file" in error.message


# ------------------------------------------------------------------------------- substitutions, formulas

NS = {"recipe": {"x": "a", "n": 3}}


@pytest.mark.parametrize("text", ["{recipe.x:>999999999}", "{recipe.x:.999999999}", "{recipe.n:0999999999d}",
                                  "{recipe.x:>{recipe.n}000000}"])
def test_format_widths_and_precisions_are_capped(text):
    start = time.monotonic()
    with pytest.raises(FormulaError, match="larger than 1000 .STEPCAB_MAX_FORMAT_WIDTH"):
        substitute(text, NS)
    assert time.monotonic() - start < 1


def test_ordinary_format_specs_still_work():
    assert substitute("{recipe.n:05d}-{recipe.x:>4}|{recipe.n:.2f}", NS) == "00003-   a|3.00"


def test_format_width_limit_is_configurable(monkeypatch):
    monkeypatch.setenv("STEPCAB_MAX_FORMAT_WIDTH", "5000")
    assert len(substitute("{recipe.x:>4000}", NS)) == 4000
    monkeypatch.setenv("STEPCAB_MAX_FORMAT_WIDTH", "150")
    with pytest.raises(FormulaError, match="larger than 150"):
        substitute("{recipe.x:>160}", NS)


def test_strings_substituting_each_other_take_linear_time():
    ns = {"recipe": {"v0": ""}}
    for i in range(1, 40):
        ns["recipe"][f"v{i}"] = "{recipe.v%d}{recipe.v%d}" % (i - 1, i - 1)
    start = time.monotonic()
    assert substitute("{recipe.v39}", ns) == ""
    assert time.monotonic() - start < 1


def test_substitution_results_are_capped():
    ns = {"recipe": {"v0": "x" * 1000}}
    for i in range(1, 20):
        ns["recipe"][f"v{i}"] = "{recipe.v%d}" % (i - 1) * 4
    with pytest.raises(FormulaError, match="longer than 1000000"):
        substitute("{recipe.v19}", ns)


@pytest.mark.parametrize("formula", ['="x" * 1000000000', "=9 ** (9 ** 9)", "=1 << 10000000000",
                                     "=RANGE(1000000000)"])
def test_formulas_cannot_build_huge_values(formula):
    start = time.monotonic()
    with pytest.raises(FormulaError, match="STEPCAB_MAX_STRING_LENGTH"):
        evaluate_formula(formula, NS)
    assert time.monotonic() - start < 1


def test_small_formula_results_are_unchanged():
    assert evaluate_formula('="ab" * 3', NS) == "ababab"
    assert evaluate_formula("=2 ** 10", NS) == 1024
    assert evaluate_formula("=RANGE(3)", NS) == [0, 1, 2]


# ------------------------------------------------------------------------------- settings

def test_limits_come_from_env_then_airflow_config_then_defaults(monkeypatch):
    for name in limits_mod.Limits._fields:
        monkeypatch.delenv(f"STEPCAB_{name.upper()}", raising=False)
        monkeypatch.delenv(f"AIRFLOW__STEPCAB__{name.upper()}", raising=False)
    assert limits_mod.current_limits() == limits_mod.DEFAULTS
    monkeypatch.setenv("AIRFLOW__STEPCAB__MAX_FILE_SIZE", "3M")
    monkeypatch.setenv("AIRFLOW__STEPCAB__MAX_ALIAS_NODES", "77")
    monkeypatch.setenv("STEPCAB_MAX_ALIAS_NODES", "55")
    got = limits_mod.current_limits()
    assert (got.max_file_size, got.max_alias_nodes) == (3 * 1024 ** 2, 55)
    monkeypatch.setenv("STEPCAB_MAX_NESTING_DEPTH", "100000")  # above what the C composer survives
    assert limits_mod.current_limits().max_nesting_depth == limits_mod.DEPTH_CEILING
    monkeypatch.setenv("STEPCAB_MAX_FORMAT_WIDTH", "lots")  # unusable: the default
    assert limits_mod.current_limits().max_format_width == limits_mod.DEFAULTS.max_format_width
