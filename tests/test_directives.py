"""Load-time directives and ${} interpolation (recipe/directives.py, recipe/interp.py)."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from airflow_provider_stepcab.recipe.config import load_documents
from airflow_provider_stepcab.recipe.directives import (
    IncludeError, Resolver, find_include, include_specs, package_dir, split_flags,
)
from airflow_provider_stepcab.recipe.errors import Loc, Problems
from airflow_provider_stepcab.recipe.interp import interpolate
from airflow_provider_stepcab.recipe.yamlio import load_yaml_text, to_plain

DATA = Path(__file__).parent / "data" / "loader"


def write(base: Path, name: str, text: str) -> str:
    path = base / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return str(path)


def errors(cfg) -> list[str]:
    return [str(p) for p in cfg.problems.errors]


def recipe(cfg, name):
    return to_plain(cfg.tree["lib"]["recipes"][name])


# ----------------------------------------------------------------------------- _include

def test_include_forms_and_merge_order(tmp_path):
    write(tmp_path, "one.yml", "r: {info: one, a: 1, b: 1}\n")
    write(tmp_path, "two.yaml", "r: {info: two, b: 2, c: 2}\n")
    write(tmp_path, "pkg/three.yml", "r: {c: 3, d: 3}\n")
    write(tmp_path, "post.yml", "r: {info: post}\n")
    main = write(tmp_path, "main.yml", """\
        _include:
          - one.yml
          - two             # implicit .yaml
          - pkg:
              - three       # nested prefix -> pkg/three
        _include_post: post.yml
        r:
          info: own
          a: own
          steps: {}
        """)
    cfg = load_documents([main])
    assert errors(cfg) == []
    # includes in order (later wins), then own content, then _include_post
    assert recipe(cfg, "r") == {"info": "post", "a": "own", "b": 2, "c": 3, "d": 3, "steps": {}}
    assert set(cfg.files) >= {str(tmp_path / f) for f in ("main.yml", "one.yml", "two.yaml", "pkg/three.yml")}


def test_fixture_tree_includes_use_scrub():
    cfg = load_documents([str(DATA / "main.yml")])
    assert errors(cfg) == []
    tree = to_plain(cfg.tree)
    assert tree["cabs"]["echo"] == {
        "policies": {"prefix": "-"},
        "image": {"registry": "quay.io/stimela2", "version": "cc0.2.1", "name": "echo"},
        "command": "echo"}
    assert tree["cabs"]["shout"]["inputs"] == {"words": "List[str]"}
    assert tree["lib"]["recipes"]["demo"]["inputs"] == {
        "ms": {"required": True}, "threshold": {"dtype": "float", "default": 1e-7}}
    # values keep the file and line they were written at, through includes and _use
    shout = cfg.tree["cabs"]["shout"]
    assert shout.key_loc("command") == Loc(str(DATA / "sub" / "cabs.yml"), 4)
    assert shout["inputs"].key_loc("words") == Loc(str(DATA / "sub" / "shout-inputs.yaml"), 2)
    demo_inputs = cfg.tree["lib"]["recipes"]["demo"]["inputs"]
    assert demo_inputs.key_loc("threshold") == Loc(str(DATA / "lib" / "params.yml"), 7)
    assert demo_inputs.key_loc("ms") == Loc(str(DATA / "main.yml"), 24)


def test_include_relative_to_includer_not_cwd(tmp_path, monkeypatch):
    write(tmp_path, "d/inc.yml", "x: {steps: {}}\n")
    main = write(tmp_path, "d/main.yml", "_include: inc.yml\n")
    monkeypatch.chdir("/")
    assert load_documents([main]).recipe_names == ["x"]


def test_dot_module_is_includer_dir_only(tmp_path, monkeypatch):
    write(tmp_path, "elsewhere/inc.yml", "x: {steps: {}}\n")
    main = write(tmp_path, "d/main.yml", "_include: (.)inc.yml\n")
    cfg = load_documents([main], include_dirs=[str(tmp_path / "elsewhere")])
    [err] = errors(cfg)
    assert f"{main}:1: _include: cannot include '(.)inc.yml'" in err
    assert str(tmp_path / "d" / "inc.yml") in err


def test_include_dirs_and_stimela_include(tmp_path, monkeypatch):
    write(tmp_path, "I/a.yml", "a: {steps: {}}\n")
    write(tmp_path, "E/b.yml", "b: {steps: {}}\n")
    main = write(tmp_path, "d/main.yml", "_include: [a.yml, b]\n")
    monkeypatch.setenv("STIMELA_INCLUDE", f"/nonexistent:{tmp_path / 'E'}")
    cfg = load_documents([main], include_dirs=[str(tmp_path / "I")])
    assert errors(cfg) == [] and cfg.recipe_names == ["a", "b"]


def test_missing_include_names_spec_file_line_and_search_path(tmp_path):
    main = write(tmp_path, "main.yml", """\
        cabs:
          c:
            inputs:
              _include:
                - nope.yml
            command: x
        """)
    cfg = load_documents([main], include_dirs=["/my/include/dir"])
    [err] = errors(cfg)
    assert err.startswith(f"{main}:5: cabs.c.inputs._include: cannot include 'nope.yml': not found; searched ")
    assert str(tmp_path) in err and "/my/include/dir" in err and "/usr/local/lib/stimela" in err
    assert cfg.tree["cabs"]["c"]["command"] == "x"  # the rest still loads


def test_missing_package_and_file_in_package():
    cfg = load_documents([str(DATA / "missing.yml")])
    errs = errors(cfg)
    missing = str(DATA / "missing.yml")
    assert any(e.startswith(f"{missing}:3: _include: cannot include 'no-such-file.yml': not found") for e in errs)
    assert f"{missing}:4: _include: cannot include '(tartcargo)tart2ms.yml': package 'tartcargo' is not installed" in errs
    [old] = [e for e in errs if "casa-flag" in e]
    assert old.startswith(f"{missing}:5: _include: cannot include '(cultcargo)casa-flag.yml': ")
    assert os.path.join("cultcargo", "casa-flag.yml") in old and "does not exist" in old
    assert len(errs) == 3
    [warn] = [str(p) for p in cfg.problems.warnings]
    assert f"{missing}:7:" in warn and "warned-thing.yml" in warn
    assert cfg.recipe_names == ["still-loaded"]
    assert "common" in cfg.tree["lib"]["params"]


def test_strict_turns_warn_include_into_error():
    cfg = load_documents([str(DATA / "missing.yml")], strict=True)
    assert any("warned-thing.yml" in e for e in errors(cfg))
    assert not any("optional-thing" in str(p) for p in cfg.problems)


def test_include_cycle_shows_chain():
    cfg = load_documents([str(DATA / "cycle_a.yml")])
    a, b = str(DATA / "cycle_a.yml"), str(DATA / "cycle_b.yml")
    assert errors(cfg) == [f"{b}:1: _include: '(.)cycle_a.yml' is included recursively: {a} -> {b} -> {a}"]
    assert cfg.recipe_names == ["b", "a"]


def test_self_include_cycle(tmp_path):
    main = write(tmp_path, "m.yml", "_include: m.yml\nr: {steps: {}}\n")
    [err] = errors(load_documents([main]))
    assert f"is included recursively: {main} -> {main}" in err


def test_included_file_with_bad_yaml_reported_with_its_line(tmp_path):
    write(tmp_path, "bad.yml", "a: [1,\n")
    main = write(tmp_path, "main.yml", "_include: bad.yml\nr: {steps: {}}\n")
    cfg = load_documents([main])
    [err] = errors(cfg)
    assert err.startswith(f"{tmp_path / 'bad.yml'}:") and "invalid YAML" in err
    assert cfg.recipe_names == ["r"]


def test_invalid_include_entries(tmp_path):
    main = write(tmp_path, "main.yml", "_include: [5, '']\n")
    errs = errors(load_documents([main]))
    assert any("invalid entry of type int" in e and f"{main}:1:" in e for e in errs)
    assert any("empty _include specifier" in e for e in errs)


def test_include_helpers(tmp_path):
    assert split_flags("a.yml[optional, WARN]") == ("a.yml", True, True)
    assert split_flags("a.yml") == ("a.yml", False, False)
    specs = include_specs(load_yaml_text("- (m):\n    - a\n    - sub: [b]\n- c\n"), Loc("f", 1), Problems(), "k")
    assert [s for s, _ in specs] == ["(m)/a", "(m)/sub/b", "c"]
    ccdir = package_dir("cultcargo")
    assert os.path.isfile(os.path.join(ccdir, "wsclean.yml"))
    assert package_dir("cultcargo.genesis.cubical") == os.path.join(ccdir, "genesis", "cubical")
    assert find_include("(cultcargo)/wsclean", "/x/y.yml", []) == os.path.join(ccdir, "wsclean.yml")
    with pytest.raises(IncludeError, match="package 'tartcargo' is not installed"):
        package_dir("tartcargo.sub")
    with pytest.raises(IncludeError, match="has no 'nope'"):
        package_dir("cultcargo.nope")
    with pytest.raises(IncludeError, match="does not exist"):
        find_include(str(tmp_path / "abs"), "/x/y.yml", [])


# ----------------------------------------------------------------------------- _use / _scrub

def test_use_lookup_order_list_and_post(tmp_path):
    main = write(tmp_path, "main.yml", """\
        lib:
          steps:
            one: {a: 1, b: 1, list: [1]}
            two: {b: 2, c: 2}
            post: {c: post}
        r:
          steps:
            s1:
              _use: [lib.steps.one, lib.steps.two]
              _use_post: lib.steps.post
              a: own
              c: own
        """)
    cfg = load_documents([main])
    assert errors(cfg) == []
    assert recipe(cfg, "r")["steps"]["s1"] == {"a": "own", "b": 2, "list": [1], "c": "post"}


def test_use_from_system_config_and_earlier_file():
    cfg = load_documents([str(DATA / "main.yml"), str(DATA / "second.yml")])
    assert errors(cfg) == []
    assert recipe(cfg, "third")["ms"] == "MS"
    assert cfg.tree["cabs"]["echo"]["command"] == "/bin/echo"
    assert cfg.recipe_names == ["demo", "other", "third"]


def test_use_nested_use_and_directives_in_list_items(tmp_path):
    main = write(tmp_path, "main.yml", """\
        vars:
          base: {x: 1}
          derived: {_use: vars.base, y: 2}
        r:
          items:
            - _use: vars.derived
              z: 3
        """)
    cfg = load_documents([main])
    assert errors(cfg) == []
    assert recipe(cfg, "r")["items"] == [{"x": 1, "y": 2, "z": 3}]
    assert to_plain(cfg.tree["vars"]["derived"]) == {"x": 1, "y": 2}


def test_use_errors(tmp_path):
    main = write(tmp_path, "main.yml", """\
        vars:
          s: scalar
        r:
          x:
            _use: vars.nothing
          y:
            _use: vars.s
        """)
    errs = errors(load_documents([main]))
    assert errs == [
        f"{main}:5: r.x._use: 'vars.nothing' not found (looked in this file, then the loaded config)",
        f"{main}:7: r.y._use: 'vars.s' is a str, not a section"]


def test_use_cycle_through_loaded_config():
    problems = Problems()
    other = load_yaml_text("v:\n  a: {_use: v.b}\n  b: {_use: v.a}\n", "other.yml")
    conf = load_yaml_text("r:\n  _use: v.a\n", "f.yml")
    Resolver(lambda *a: None, problems, []).resolve(conf, pathname="f.yml", location="",
                                                    use_sources=[conf, other], stack=["f.yml"], top=True)
    assert [str(p) for p in problems] == ["other.yml:3: r._use._use._use: 'v.a' is used recursively: v.a -> v.b -> v.a"]


def test_scrub_with_include_and_post_and_errors(tmp_path):
    write(tmp_path, "inc.yml", "p: {a: 1, b: 1, old1: 1, old2: 1, sub: {k: 1, j: 1}}\n")
    write(tmp_path, "post.yml", "p: {z: 1, y: 1}\n")
    main = write(tmp_path, "main.yml", """\
        _include: inc.yml
        _scrub: [p.a, p.old*, p.sub.k]
        _include_post: post.yml
        _scrub_post: p.z
        lonely:
          _scrub: x
          steps: {}
        other:
          _use: p
          _scrub: [b, missing]
        """)
    cfg = load_documents([main])
    assert recipe(cfg, "p") == {"b": 1, "sub": {"j": 1}, "y": 1}
    assert recipe(cfg, "other") == {"sub": {"j": 1}, "y": 1}
    errs = errors(cfg)
    assert errs == [f"{main}:10: other._scrub: cannot scrub: no entry matching 'missing'"]
    [warn] = [str(p) for p in cfg.problems.warnings]
    assert warn == f"{main}:6: lonely._scrub: warning: _scrub has no effect without an _include or _use"


def test_included_use_resolved_in_includer_context(tmp_path):
    write(tmp_path, "lib.yml", "cabs: {c: {_use: vars.here, command: x}}\n")
    main = write(tmp_path, "main.yml", "_include: lib.yml\nvars: {here: {image: img}}\n")
    cfg = load_documents([main])
    assert errors(cfg) == [] and to_plain(cfg.tree["cabs"]["c"]) == {"image": "img", "command": "x"}


# ----------------------------------------------------------------------------- _requires / _contingent

def test_requires_and_contingent(tmp_path):
    main = write(tmp_path, "main.yml", """\
        vars: {have: 1}
        r:
          steps:
            keep:
              _requires: vars.have
              cab: x
            gone:
              _contingent: vars.missing
              cab: y
            rel:
              _contingent: .cab
              cab: z
          items:
            - {_contingent: vars.nope, a: 1}
            - {b: 2}
        needs:
          _requires: [vars.have, vars.missing]
          steps: {}
        """)
    cfg = load_documents([main])
    assert list(recipe(cfg, "r")["steps"]) == ["keep", "rel"]
    assert recipe(cfg, "r")["items"] == [{"b": 2}]
    assert errors(cfg) == [f"{main}:17: needs._requires: section 'needs' has missing requirement 'vars.missing'"]
    assert "_requires" not in recipe(cfg, "needs")


def test_top_level_contingent_is_an_error(tmp_path):
    main = write(tmp_path, "main.yml", "_contingent: vars.nope\nr: {steps: {}}\n")
    assert any("top-level configuration is contingent" in e for e in errors(load_documents([main])))


# ----------------------------------------------------------------------------- ${} interpolation

def interp(text: str, path: str = "/data/recipes/f.yml"):
    problems = Problems()
    tree = interpolate(load_yaml_text(text, path), path, problems)
    return to_plain(tree), [str(p) for p in problems]


def test_interpolation_like_omegaconf():
    tree, probs = interp(r"""
x: 5
q: {k: 1}
abs: ${x}
typed: ${q}
text: "a ${x} b ${q.k}"
esc: \${x}
bs: \\${x}
n: {r: 3, s: '${.r}', t: '${..x}', u: [1, '${..r}']}
me: ${self:dirname}/${self:basename} ${self:path}
env: ${oc.env:STEPCAB_NOPE_VAR,dflt}
sel: ${oc.select:nope,zz}
l: [a, b]
idx: ${l[1]}${l.0}
""")
    assert probs == []
    assert tree["abs"] == 5 and tree["typed"] == {"k": 1} and tree["text"] == "a 5 b 1"
    assert tree["esc"] == "${x}" and tree["bs"] == "\\5"
    assert tree["n"] == {"r": 3, "s": 3, "t": 5, "u": [1, 3]}
    assert tree["me"] == "/data/recipes/f.yml /data/recipes/f.yml"
    assert tree["env"] == "dflt" and tree["sel"] == "zz" and tree["idx"] == "ba"


def test_interpolation_errors_have_file_line_and_key():
    tree, probs = interp("a: 1\nb:\n  c: 'echo ${HOME}'\nd: ${self:nope}\ne: ${oc.decode:1}\nf: '${'\n", "f.yml")
    assert probs[0] == "f.yml:3: b.c: interpolation key 'HOME' not found"
    assert "invalid '${self:nope}'" in probs[1] and probs[1].startswith("f.yml:4: d:")
    assert "not supported" in probs[2] and "unterminated" in probs[3]
    assert tree["b"]["c"] == "echo ${HOME}"  # left as written


def test_interpolation_is_per_file(tmp_path):
    write(tmp_path, "inc.yml", "vars: {v: '${vars.only_in_main}'}\n")
    main = write(tmp_path, "main.yml", "_include: inc.yml\nvars: {only_in_main: 1, w: '${vars.only_in_main}'}\n")
    cfg = load_documents([main])
    assert cfg.tree["vars"]["w"] == 1
    [err] = errors(cfg)
    assert err.startswith(f"{tmp_path / 'inc.yml'}:1: vars.v: interpolation key 'vars.only_in_main' not found")


def test_files_are_interpolated_even_when_the_text_hides_the_dollar(tmp_path):
    # loading skips the interpolation walk for text without "${"; a YAML escape can still make one
    main = write(tmp_path, "main.yml", 'vars: {x: 7, y: "\\x24{vars.x}", w: plain}\n')
    cfg = load_documents([main])
    assert (cfg.tree["vars"]["y"], cfg.tree["vars"]["w"]) == (7, "plain")


def test_recursive_interpolation():
    _, probs = interp("a: ${b}\nb: ${a}\n", "f.yml")
    assert probs and "recursive interpolation" in probs[0]
