"""Tests for recipe/subst.py: {}-substitutions and evaluate_value."""

from __future__ import annotations

from collections import OrderedDict
from types import MappingProxyType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_provider_stepcab.recipe.errors import FormulaError, Loc
from airflow_provider_stepcab.recipe.model import UNSET
from airflow_provider_stepcab.recipe.subst import (
    MissingNameError, lookup, subst_references, substitute,
)
from airflow_provider_stepcab.recipe.values import evaluate_value
from airflow_provider_stepcab.recipe.yamlio import CList, CMap

NS = {
    "recipe": {"ms": "obs.ms", "prefix": "img", "phase-calibrators": ["J1", "J2"], "n": 3,
               "f": 0.5, "nested": {"deep": {"er": "x"}}, "files": ["a.fits", "b.fits"],
               "ref": "{recipe.prefix}-ref", "loop1": "{recipe.loop2}", "loop2": "{recipe.loop1}",
               "self": "{recipe.self}", "none": None, "flag": True},
    "current": {"size": 7, "name": "step-out"},
    "previous": {"out": "prev.fits"},
    "steps": {"image-1": {"x": "one"}, "image-2": {"x": "two"}, "image-10": {"x": "ten"},
              "cal": {"table": "cal.tab"}},
    "info": {"fqname": "recipe.s1", "taskname": "s1", "label": "s1-a", "label_parts": ["s1", "a"],
             "suffix": "a"},
    "config": {"run": {"date": "20240101", "ncpu": 8, "env": {"HOME": "/home/u"}}},
}


def sub(text, ns=NS, **kw):
    return substitute(text, ns, **kw)


# ------------------------------------------------------------------ substitute

@pytest.mark.parametrize("text,expected", [
    ("{recipe.ms}", "obs.ms"),
    ("{recipe.prefix}-{current.size}.fits", "img-7.fits"),
    ("{current.size:05d}", "00007"),
    ("{recipe.f:.3f}|{recipe.n:>4}|{recipe.n:<3}|", "0.500|   3|3  |"),
    ("{recipe.ms!r}", "'obs.ms'"),
    ("{recipe.n:{current.size}d}", "      3"),
    ("{{literal}}", "{literal}"),
    ("{{{recipe.n}}}", "{3}"),
    ("a }} b {recipe.n}", "a } b 3"),
    ("{recipe.phase-calibrators}", "['J1', 'J2']"),
    ("{recipe.phase-calibrators[1]}", "J2"),
    ("{recipe.files[0]}", "a.fits"),
    ("{recipe.nested.deep.er}", "x"),
    ("{recipe.nested[deep][er]}", "x"),
    ("{steps.image-*.x}", "two"),        # alphanumerically last: image-2 > image-10 > image-1
    ("{steps.image-1?.x}", "ten"),
    ("{steps.image-?.x}", "two"),
    ("{steps.cal.table}", "cal.tab"),
    ("{previous.out}", "prev.fits"),
    ("{info.fqname}/{info.taskname}/{info.label}/{info.suffix}", "recipe.s1/s1/s1-a/a"),
    ("{info.label_parts[0]}", "s1"),
    ("{config.run.date}-{config.run.ncpu}-{config.run.env.HOME}", "20240101-8-/home/u"),
    ("{recipe.ref}", "img-ref"),           # looked-up strings are substituted in turn
    ("{recipe.none}", "None"),
    ("{recipe.flag}", "True"),
])
def test_substitute(text, expected):
    assert sub(text) == expected


@pytest.mark.parametrize("text", ["", "plain", "no braces at all", "lone } brace", "}}", "=x", "a}b}"])
def test_strings_without_open_brace_are_returned_as_is(text):
    assert sub(text) == text


def test_non_strings_are_returned_as_is():
    assert sub(5) == 5 and sub(None) is None


def test_missing_names_raise_naming_the_name():
    with pytest.raises(MissingNameError) as info:
        sub("x-{recipe.nope}.fits")
    assert info.value.name == "recipe.nope"
    assert "recipe.nope" in str(info.value) and "x-{recipe.nope}.fits" in str(info.value)
    with pytest.raises(MissingNameError) as info:
        sub("{nonamespace.a.b}")
    assert info.value.name == "nonamespace.a.b" and "'nonamespace' is not defined" in str(info.value)
    with pytest.raises(MissingNameError, match="recipe.files.2"):
        sub("{recipe.files[2]}")
    with pytest.raises(MissingNameError, match="steps.nomatch"):
        sub("{steps.nomatch*.x}")
    with pytest.raises(MissingNameError):
        sub("{recipe.ms.x}")                  # can't look into a string


def test_forgive_replaces_unresolved_fields():
    assert sub("a-{recipe.nope}-{recipe.n}", forgive="?") == "a-?-3"
    assert sub("{recipe.nope:05d}", forgive="") == ""


def test_errors_are_formula_errors():
    for bad in ("{recipe.ms:05d}", "{", "{recipe.n", "x}{recipe.n}", "{}", "{0}", "{recipe.n!z}",
                "{recipe.loop1}", "{recipe.self}"):
        with pytest.raises(FormulaError):
            sub(bad)


def test_cycles_are_reported():
    with pytest.raises(FormulaError, match="cyclic substitution: recipe.loop1 -> recipe.loop2 -> recipe.loop1"):
        sub("{recipe.loop1}")


def test_mapping_like_namespaces():
    ns = MappingProxyType({"recipe": MappingProxyType({"a": 1}), "o": OrderedDict(b=2),
                           "c": CMap({"d": 3})})
    assert sub("{recipe.a}{o.b}{c.d}", ns) == "123"


def test_lookup_helper():
    assert lookup(NS, ["recipe", "files", 1]) == "b.fits"
    assert lookup(NS, ["steps", "image-*", "x"]) == "two"
    with pytest.raises(MissingNameError):
        lookup(NS, ["recipe", "files", 5])


# ------------------------------------------------------------------ subst_references

@pytest.mark.parametrize("text,refs", [
    ("plain", set()),
    ("{{not.a.ref}}", set()),
    ("{recipe.ms}", {"recipe.ms"}),
    ("{recipe.a}-{current.b:05d}-{previous.c!r}", {"recipe.a", "current.b", "previous.c"}),
    ("{recipe.files[0]}", {"recipe.files"}),
    ("{recipe.d[key].e}", {"recipe.d.key.e"}),
    ("{steps.image-*.x}", {"steps.image-*.x"}),
    ("{recipe.phase-calibrators}", {"recipe.phase-calibrators"}),
    ("{recipe.n:{current.w}d}", {"recipe.n", "current.w"}),
    ("}} only", set()),
    ("--stack={0}:FREQ {} {recipe.a}", {"recipe.a"}),     # positional fields are not names
])
def test_subst_references(text, refs):
    assert subst_references(text) == refs


@pytest.mark.parametrize("bad", ["{", "{recipe.a", "a } {b.c}", "{a.b!"])
def test_subst_references_rejects_bad_text(bad):
    with pytest.raises(FormulaError):
        subst_references(bad)


# ------------------------------------------------------------------ evaluate_value

def test_evaluate_value_dispatch():
    assert evaluate_value("=recipe.n + 1", NS) == 4
    assert evaluate_value("==recipe.n", NS) == "=recipe.n"
    assert evaluate_value("=={recipe.n}", NS) == "=3"
    assert evaluate_value("{recipe.prefix}.fits", NS) == "img.fits"
    assert evaluate_value("plain", NS) == "plain"
    assert evaluate_value("=IFSET(recipe.nope)", NS) is UNSET
    for v in (3, 2.5, None, True, UNSET):
        assert evaluate_value(v, NS) is v


def test_evaluate_value_containers_elementwise():
    value = ["=recipe.n", "{recipe.prefix}", 4, ["=current.size"], {"k": "=previous.out"}]
    assert evaluate_value(value, NS) == [3, "img", 4, [7], {"k": "prev.fits"}]
    assert evaluate_value({"a": "{recipe.ms}", "b": {"c": "=1+1"}}, NS) == {"a": "obs.ms", "b": {"c": 2}}
    assert evaluate_value(("=1", "x"), NS) == (1, "x")
    assert evaluate_value({"{recipe.n}": 1}, NS) == {"{recipe.n}": 1}   # keys are left alone


def test_evaluate_value_keeps_unchanged_containers_and_locations():
    same = ["a", 1, {"b": 2}]
    assert evaluate_value(same, NS) is same
    cl = CList(["=recipe.n", "x"], loc=Loc("f.yml", 3))
    cl.item_locs = [Loc("f.yml", 3), Loc("f.yml", 4)]
    out = evaluate_value(cl, NS)
    assert out == [3, "x"] and isinstance(out, CList) and out.loc == Loc("f.yml", 3)
    assert out.item_locs == cl.item_locs and cl == ["=recipe.n", "x"]
    cm = CMap({"a": "=recipe.n"}, loc=Loc("f.yml", 7))
    out = evaluate_value(cm, NS)
    assert out == {"a": 3} and isinstance(out, CMap) and out.loc == Loc("f.yml", 7)


def test_evaluate_value_unset_inside_container_is_an_error():
    with pytest.raises(FormulaError, match="UNSET not allowed"):
        evaluate_value(["=UNSET"], NS)
    with pytest.raises(FormulaError, match="UNSET not allowed"):
        evaluate_value({"a": "=IFSET(recipe.nope)"}, NS)


def test_evaluate_value_errors():
    with pytest.raises(MissingNameError):
        evaluate_value("{recipe.nope}", NS)
    with pytest.raises(MissingNameError):
        evaluate_value(["ok", "=recipe.nope"], NS)
    with pytest.raises(FormulaError):
        evaluate_value("=1 +", NS)


def test_evaluate_value_passes_cwd(tmp_path):
    (tmp_path / "x.fits").write_text("")
    assert evaluate_value("=GLOB(*.fits)", NS, cwd=str(tmp_path)) == ["x.fits"]


# ------------------------------------------------------------------ properties

_no_open_brace = st.text().filter(lambda t: "{" not in t)


@settings(max_examples=300, deadline=None)
@given(_no_open_brace)
def test_text_without_braces_is_unchanged(text):
    assert substitute(text, NS) == text
    assert subst_references(text) == set()


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_escaped_text_round_trips(text):
    escaped = text.replace("{", "{{").replace("}", "}}")
    if "{" in text:
        assert substitute(escaped, NS) == text
        assert subst_references(escaped) == set()
    else:
        assert substitute(escaped, NS) == escaped      # no '{': left alone, like Stimela


_names = st.sampled_from(["recipe.ms", "recipe.n", "current.size", "previous.out", "steps.cal.table",
                          "info.suffix", "config.run.date"])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.text(alphabet="abc -_./", max_size=5), _names.map(lambda n: "{" + n + "}")),
                max_size=8))
def test_substitution_is_concatenation_of_parts(parts):
    expected = "".join(str(lookup(NS, p[1:-1].split("."))) if p.startswith("{") else p for p in parts)
    assert substitute("".join(parts), NS) == expected
    assert subst_references("".join(parts)) == {p[1:-1] for p in parts if p.startswith("{")}


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("{}[]:!.*?-_ab0 recipe.n")), max_size=30))
def test_random_text_only_raises_formula_errors(text):
    for fn in (lambda: substitute(text, NS), lambda: subst_references(text),
               lambda: evaluate_value(text, NS)):
        try:
            fn()
        except FormulaError:
            pass
