"""merge(), path helpers, scrub and lookup (recipe/merge.py)."""

from __future__ import annotations

import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_provider_stepcab.recipe.errors import Loc
from airflow_provider_stepcab.recipe.merge import (
    del_path, get_path, has_path, lookup, merge, merge_all, scrub, set_path, split_path,
)
from airflow_provider_stepcab.recipe.yamlio import CMap, load_yaml_text, to_plain


def y(text: str, name: str = "f.yml"):
    return load_yaml_text(text, name)


# ----------------------------------------------------------------------------- examples

def test_mappings_merge_recursively_scalars_and_lists_replace():
    base = y("a: {x: 1, y: [1, 2], z: {p: 1}}\nb: 2\n")
    over = y("a: {y: [3], z: {q: 2}, w: new}\nc: 3\n")
    assert to_plain(merge(base, over)) == {
        "a": {"x": 1, "y": [3], "z": {"p": 1, "q": 2}, "w": "new"}, "b": 2, "c": 3}


def test_key_order_base_then_new_keys():
    assert list(merge(y("b: 1\na: 1\n"), y("c: 1\na: 2\n"))) == ["b", "a", "c"]


def test_none_and_scalar_replace_mapping_and_back():
    assert merge(y("a: {x: 1}"), y("a: null"))["a"] is None
    assert merge(y("a: {x: 1}"), y("a: 5"))["a"] == 5
    assert to_plain(merge(y("a: 5"), y("a: {x: 1}"))) == {"a": {"x": 1}}
    # OmegaConf raises for list <-> mapping; here the override simply wins
    assert to_plain(merge(y("a: [1]"), y("a: {x: 1}"))) == {"a": {"x": 1}}


def test_missing_marker_keeps_base():
    assert merge(y("a: 1"), y("a: '???'"))["a"] == 1


def test_inputs_not_mutated_and_result_shares_nothing():
    base, over = y("a: {x: [1]}"), y("a: {y: {z: 1}}")
    b0, o0 = copy.deepcopy(base), copy.deepcopy(over)
    out = merge(base, over)
    out["a"]["x"].append(2)
    out["a"]["y"]["z"] = 9
    assert base == b0 and over == o0


def test_locations_of_the_winning_side():
    base = y("a:\n  x: 1\n  y: 2\n", "base.yml")
    over = y("a:\n  y: 3\n", "over.yml")
    out = merge(base, over)
    assert out["a"].key_loc("x") == Loc("base.yml", 2)
    assert out["a"].key_loc("y") == Loc("over.yml", 2)
    assert out.key_loc("a") == Loc("over.yml", 1)
    assert isinstance(out["a"], CMap)


def test_top_level_none_override_is_nothing():
    assert to_plain(merge(y("a: 1"), None)) == {"a": 1}


def test_merge_all():
    assert to_plain(merge_all([y("a: 1"), y("b: 2"), y("a: 3")])) == {"a": 3, "b": 2}


# ----------------------------------------------------------------------------- paths

def test_path_helpers():
    tree = y("a: {b: {c: 1}, l: [x, {k: v}]}\nn: null\n")
    assert get_path(tree, "a.b.c") == 1
    assert get_path(tree, "a.l.1.k") == "v"
    assert get_path(tree, ["a", "b"]) == {"c": 1}
    assert get_path(tree, "a.zz", None) is None
    with pytest.raises(KeyError):
        get_path(tree, "a.b.d")
    assert has_path(tree, "n") and not has_path(tree, "m")
    set_path(tree, "a.new.deep", 5, Loc("x.yml", 3))
    assert tree["a"]["new"]["deep"] == 5 and tree["a"]["new"].key_loc("deep") == Loc("x.yml", 3)
    set_path(tree, ["cabs", "casa.flag"], {"command": "x"})
    assert tree["cabs"]["casa.flag"] == {"command": "x"}
    assert del_path(tree, "a.b.c") and tree["a"]["b"] == {}
    assert del_path(tree, "a.l.0") and tree["a"]["l"] == [{"k": "v"}]
    assert not del_path(tree, "a.nope") and not del_path(tree, "zz.y")
    assert split_path("") == [] and split_path(("a.b",)) == ["a.b"]


def test_scrub():
    tree = y("inputs: {a: 1, b: 2, old-x: 1, old-y: 2, sub: {p: 1, q: 2}, s: 1}")
    assert scrub(tree["inputs"], ["a", "old-*", "sub.p", "nomatch*"]) == []
    assert to_plain(tree) == {"inputs": {"b": 2, "sub": {"q": 2}, "s": 1}}
    assert scrub(tree["inputs"], "zz") == ["no entry matching 'zz'"]
    assert scrub(tree["inputs"], "s.x") == ["'s' does not refer to a subsection"]
    assert scrub(tree["inputs"], "sub.zz") == ["no entry matching 'zz'"]


def test_lookup_first_source_wins_and_none_is_absent():
    a, b = y("x: {y: null, z: 1}"), y("x: {y: 2}")
    assert lookup("x.y", [a, b]) == 2
    assert lookup("x.z", [a, b]) == 1
    assert lookup("x.q", [a, b]) is None
    assert lookup("x.z.w", [a]) is None


# ----------------------------------------------------------------------------- properties

scalars = st.one_of(st.integers(-3, 3), st.booleans(), st.text("ab", max_size=2), st.none(),
                    st.lists(st.integers(0, 2), max_size=2))
keys = st.sampled_from(["a", "b", "c", "d"])
trees = st.recursive(scalars, lambda kids: st.dictionaries(keys, kids, max_size=4), max_leaves=12)
maps = st.dictionaries(keys, trees, max_size=4)

# "mappings-only" trees: a key is always a section (a..c) or always a leaf (x, y),
# so two trees never disagree about whether a path is a mapping.
leaf_keys = st.sampled_from(["x", "y"])
typed = st.recursive(
    st.dictionaries(leaf_keys, st.integers(0, 3), max_size=2),
    lambda kids: st.builds(lambda a, b: {**a, **b}, st.dictionaries(leaf_keys, st.integers(0, 3), max_size=2),
                           st.dictionaries(st.sampled_from(["a", "b", "c"]), kids, max_size=3)),
    max_leaves=10)


@given(maps)
def test_prop_identity(a):
    assert merge(a, {}) == a
    assert merge({}, a) == a
    assert merge(a, a) == a


@given(maps, maps)
def test_prop_keys_union_and_override_wins(a, b):
    out = merge(a, b)
    assert set(out) == set(a) | set(b)
    for k, v in b.items():
        if not (isinstance(v, dict) and isinstance(a.get(k), dict)):
            assert out[k] == v
    for k, v in a.items():
        if k not in b:
            assert out[k] == v


@given(maps, maps)
def test_prop_no_mutation(a, b):
    a0, b0 = copy.deepcopy(a), copy.deepcopy(b)
    merge(a, b)
    assert a == a0 and b == b0


@settings(max_examples=200)
@given(typed, typed, typed)
def test_prop_associative_for_mapping_trees(a, b, c):
    assert merge(merge(a, b), c) == merge(a, merge(b, c))
