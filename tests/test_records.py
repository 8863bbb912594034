"""``@record`` (recipe/records.py) must behave like ``@dataclass`` wherever the recipe layer relies
on it: same repr text, value equality, hashing, frozenness, dataclasses helpers."""

from __future__ import annotations

import copy
import dataclasses
import pickle
import time
from dataclasses import field
from typing import Any, Optional

import pytest

from airflow_provider_stepcab.recipe.errors import Loc, Problem
from airflow_provider_stepcab.recipe.records import record


def twins(frozen: bool):
    """The same class body as a dataclass and as a record."""
    def body():
        class Point:
            """A point."""

            x: int
            y: Any = None
            tags: list = field(default_factory=list)
            note: str = field(default="", repr=False, compare=False)
        return Point

    return dataclasses.dataclass(frozen=frozen)(body()), record(frozen=frozen)(body())


@pytest.mark.parametrize("frozen", [False, True])
def test_behaves_like_a_dataclass(frozen):
    D, R = twins(frozen)
    d, r = D(1, "a", [2], note="n"), R(1, "a", [2], note="n")
    assert repr(r) == repr(d) == "twins.<locals>.body.<locals>.Point(x=1, y='a', tags=[2])"
    assert r == R(1, "a", [2], note="other note"), "fields with compare=False are not compared"
    assert r != R(1, "b", [2]) and r != R(2, "a", [2])
    assert (r == d) is False, "instances of another class are never equal"
    assert [f.name for f in dataclasses.fields(r)] == ["x", "y", "tags", "note"]
    assert dataclasses.replace(r, y="z") == R(1, "z", [2])
    assert dataclasses.asdict(r) == dataclasses.asdict(d)
    assert R(5).tags == [] and R(5).tags is not R(5).tags


def test_frozen_records_hash_by_value_and_refuse_assignment():
    D, R = twins(True)
    r = R(1, "a", (2,))
    assert hash(r) == hash(R(1, "a", (2,), note="x")) and len({r, R(1, "a", (2,))}) == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.x = 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        del r.y
    assert copy.deepcopy(r) == r and copy.copy(r) == r
    p = Problem(Loc("f.yml", 3), "k", "m")  # a module-level frozen record: picklable
    assert pickle.loads(pickle.dumps(p)) == p
    with pytest.raises(dataclasses.FrozenInstanceError):
        pickle.loads(pickle.dumps(p)).key = "other"


def test_mutable_records_are_unhashable_like_dataclasses():
    D, R = twins(False)
    with pytest.raises(TypeError):
        hash(D(1))
    with pytest.raises(TypeError):
        hash(R(1))
    r = R(1)
    r.x = 2
    assert r == R(2)


def test_methods_the_class_defines_are_kept():
    @record
    class Named:
        """Has its own repr and equality."""

        name: str
        other: Optional[str] = None

        def __repr__(self) -> str:
            return f"<{self.name}>"

        def __eq__(self, other: Any) -> bool:
            return isinstance(other, Named) and other.name == self.name

        def __hash__(self) -> int:
            return hash(self.name)

    assert repr(Named("a")) == "<a>"
    assert Named("a", "x") == Named("a", "y") and hash(Named("a", "x")) == hash(Named("a"))


def test_recursive_structures_do_not_recurse_forever():
    @record
    class Node:
        """A node."""

        child: Any = None

    n = Node()
    n.child = n
    assert repr(n) == "test_recursive_structures_do_not_recurse_forever.<locals>.Node(child=...)"


def test_problems_keep_their_value_semantics():
    a = Problem(Loc("f.yml", 3), "r.steps.s", "bad", "error", "code")
    b = Problem(Loc("f.yml", 3), "r.steps.s", "bad", "error", "code")
    assert a == b and hash(a) == hash(b) and a in [b] and len({a, b}) == 1
    assert a != Problem(Loc("f.yml", 4), "r.steps.s", "bad", "error", "code")


def test_defining_a_record_is_cheaper_than_a_dataclass():
    """The reason records exist: import time of ~40 classes (measured, both ways, same classes)."""
    def define(decorator, n=30):
        t = time.perf_counter()
        for _ in range(n):
            class Many:
                """Many fields."""

                a: int = 0
                b: str = ""
                c: float = 0.0
                d: Any = None
                e: list = field(default_factory=list)
                f: dict = field(default_factory=dict)
            decorator(Many)
        return time.perf_counter() - t

    dc = min(define(dataclasses.dataclass(frozen=True)) for _ in range(3))
    rec = min(define(record(frozen=True)) for _ in range(3))
    assert rec < 0.8 * dc, (rec, dc)


def test_init_is_compiled_by_the_first_instance_with_dataclass_arguments():
    _, R = twins(True)
    placeholder = R.__init__
    assert R(1).tags == []  # the first instance compiles it
    assert R.__init__ is not placeholder and R.__init__.__qualname__.endswith("Point.__init__")
    compiled = R.__init__
    assert R(2, "b").y == "b" and R.__init__ is compiled, "compiled once"
    with pytest.raises(TypeError, match="missing 1 required positional argument: 'x'"):
        R()
    with pytest.raises(TypeError, match="takes from 2 to 5 positional arguments"):
        R(1, 2, 3, 4, 5)
    with pytest.raises(TypeError, match="unexpected keyword argument 'z'"):
        R(1, z=2)


def test_init_false_fields_and_post_init_work_as_in_dataclasses():
    for decorator in (dataclasses.dataclass, record):
        @decorator
        class Job:
            name: str
            state: str = field(default="new", init=False)
            log: list = field(default_factory=list, init=False)

            def __post_init__(self) -> None:
                self.log.append(f"made {self.name}")

        j = Job("a")
        assert (j.state, j.log) == ("new", ["made a"]) and Job("b").log is not j.log
        with pytest.raises(TypeError):
            Job("a", "running")


def test_definitions_dataclasses_refuse_are_refused_when_defined():
    with pytest.raises(TypeError, match="non-default argument 'b' follows default argument"):
        @record
        class Bad:
            a: int = 1
            b: int
    with pytest.raises(TypeError, match="plain fields only"):
        @record
        class WithInitVar:
            a: int
            b: dataclasses.InitVar[int] = 0
