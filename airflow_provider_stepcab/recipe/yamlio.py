"""Safe YAML loading that remembers where every key and list item came from.

Mappings load as :class:`CMap` and sequences as :class:`CList`; both are
plain ``dict``/``list`` subclasses, so ordinary code works on them, but they
also carry the :class:`~.errors.Loc` of the container and of each key / item.
Scalars stay plain Python values; ask their container for their location with
:func:`loc_of`.

Only the safe subset of YAML is constructed (no Python object tags), using
libyaml's C parser when it is available.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import yaml

from .errors import UNKNOWN_LOC, Loc, Problem, RecipeError

try:  # libyaml is much faster; fall back to the pure-Python loader
    _BaseLoader = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - depends on the PyYAML build
    _BaseLoader = yaml.SafeLoader  # type: ignore[misc]


class CMap(dict):
    """A mapping that knows its own location and the location of each key."""

    __slots__ = ("loc", "key_locs")

    def __init__(self, *args: Any, loc: Loc = UNKNOWN_LOC, **kw: Any):
        super().__init__(*args, **kw)
        self.loc = loc
        self.key_locs: dict[Any, Loc] = {}

    def key_loc(self, key: Any) -> Loc:
        """Location of ``key`` (falls back to the mapping's own location)."""
        return self.key_locs.get(key, self.loc)

    def set(self, key: Any, value: Any, loc: Loc | None = None) -> None:
        """Set ``key`` and record where the value came from."""
        self[key] = value
        if loc is not None:
            self.key_locs[key] = loc

    def __deepcopy__(self, memo: dict) -> "CMap":
        return _copy(self, memo)

    def __reduce__(self):  # keep locations through pickling (parse caches)
        return (_rebuild_cmap, (dict(self), self.loc, self.key_locs))


class CList(list):
    """A list that knows its own location and the location of each item."""

    __slots__ = ("loc", "item_locs")

    def __init__(self, *args: Any, loc: Loc = UNKNOWN_LOC):
        super().__init__(*args)
        self.loc = loc
        self.item_locs: list[Loc] = []

    def item_loc(self, index: int) -> Loc:
        try:
            return self.item_locs[index]
        except IndexError:
            return self.loc

    def __deepcopy__(self, memo: dict) -> "CList":
        return _copy(self, memo)

    def __reduce__(self):
        return (_rebuild_clist, (list(self), self.loc, self.item_locs))


#: types copied by reference (immutable)
_ATOMIC = frozenset({str, int, float, bool, type(None), bytes, Loc})


def _copy(value: Any, memo: dict) -> Any:
    """Deep copy of a YAML tree, much faster than :func:`copy.deepcopy`'s generic dispatch.

    Containers seen twice (YAML anchors and aliases) stay shared, as with ``deepcopy``; values
    of other types go through :func:`copy.deepcopy`.
    """
    cls = type(value)
    if cls in _ATOMIC:
        return value
    key = id(value)
    done = memo.get(key)
    if done is not None:
        return done
    if cls is CMap or cls is dict:
        new: Any = CMap(loc=value.loc) if cls is CMap else {}
        memo[key] = new
        for k, v in value.items():
            new[k] = v if type(v) in _ATOMIC else _copy(v, memo)
        if cls is CMap:
            new.key_locs = dict(value.key_locs)
        return new
    if cls is CList or cls is list:
        new = CList(loc=value.loc) if cls is CList else []
        memo[key] = new
        new.extend([v if type(v) in _ATOMIC else _copy(v, memo) for v in value])
        if cls is CList:
            new.item_locs = list(value.item_locs)
        return new
    return copy.deepcopy(value, memo)


def copy_tree(value: Any) -> Any:
    """A deep copy of ``value`` (a tree of :class:`CMap`/:class:`CList`/plain values)."""
    return value if type(value) in _ATOMIC else _copy(value, {})


# Unpickling (the parse caches) keeps the Loc objects as pickled: rebuilding every location
# was the largest part of loading a cached recipe.
def _rebuild_cmap(data: dict, loc: Loc, key_locs: dict) -> CMap:
    m = CMap(data, loc=loc)
    m.key_locs = key_locs
    return m


def _rebuild_clist(data: list, loc: Loc, item_locs: list) -> CList:
    c = CList(data, loc=loc)
    c.item_locs = item_locs
    return c


def loc_of(container: Any, key: Any = None) -> Loc:
    """Best known location of ``container[key]`` (or of the container itself)."""
    if key is None:
        return getattr(container, "loc", UNKNOWN_LOC)
    if isinstance(container, CMap):
        return container.key_loc(key)
    if isinstance(container, CList) and isinstance(key, int):
        return container.item_loc(key)
    return getattr(container, "loc", UNKNOWN_LOC)


class _OmegaConfResolver(_BaseLoader):  # type: ignore[misc, valid-type]
    """Plain scalars typed as Stimela sees them (it parses YAML through OmegaConf's loader):
    ``1e-7``/``5E3`` (an exponent without a dot) are floats, and dates/timestamps stay strings."""


_OmegaConfResolver.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in _BaseLoader.yaml_implicit_resolvers.items()
}
_OmegaConfResolver.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


#: (scalar text, implicit flags) -> tag: PyYAML resolves every plain scalar with a chain of
#: regular expressions in Python; recipes repeat the same scalars a lot
_SCALAR_TAGS: dict = {}
_SCALAR_TAGS_MAX = 65536


def _resolve_cached(self: Any, kind: Any, value: Any, implicit: Any) -> str:
    if kind is yaml.ScalarNode:
        key = (value, implicit)
        tag = _SCALAR_TAGS.get(key)
        if tag is None:
            tag = _BaseLoader.resolve(self, kind, value, implicit)
            if len(_SCALAR_TAGS) >= _SCALAR_TAGS_MAX:
                _SCALAR_TAGS.clear()
            _SCALAR_TAGS[key] = tag
        return tag
    return _BaseLoader.resolve(self, kind, value, implicit)


_OmegaConfResolver.resolve = _resolve_cached  # type: ignore[method-assign]


_STR_TAG = "tag:yaml.org,2002:str"


def _make_loader(filename: str) -> type:
    class _Loader(_OmegaConfResolver):  # type: ignore[misc, valid-type]
        pass

    def _loc(node: yaml.Node) -> Loc:
        return Loc(filename, node.start_mark.line + 1)

    def construct_map(loader: yaml.SafeLoader, node: yaml.MappingNode) -> CMap:
        loader.flatten_mapping(node)
        m = CMap(loc=_loc(node))
        for key_node, value_node in node.value:
            # fast path for the commonest node, a plain string (PyYAML's generic dispatch per scalar
            # was a large part of loading a big recipe)
            key = key_node.value if key_node.tag == _STR_TAG and type(key_node) is yaml.ScalarNode \
                else loader.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark,
                    "found an unhashable key", key_node.start_mark)
            if key in m:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark,
                    f"found duplicate key {key!r}", key_node.start_mark)
            m[key] = value_node.value if value_node.tag == _STR_TAG and type(value_node) is yaml.ScalarNode \
                else loader.construct_object(value_node, deep=True)
            m.key_locs[key] = _loc(key_node)
        return m

    def construct_seq(loader: yaml.SafeLoader, node: yaml.SequenceNode) -> CList:
        c = CList(loc=_loc(node))
        for item in node.value:
            c.append(loader.construct_object(item, deep=True))
            c.item_locs.append(_loc(item))
        return c

    _Loader.add_constructor("tag:yaml.org,2002:map", construct_map)
    _Loader.add_constructor("tag:yaml.org,2002:seq", construct_seq)
    return _Loader


def load_yaml_text(text: str, filename: str = "<string>") -> Any:
    """Parse YAML ``text`` safely into :class:`CMap`/:class:`CList` trees.

    :raises RecipeError: with the file and line of a syntax error.
    """
    try:
        return yaml.load(text, Loader=_make_loader(filename))  # noqa: S506 - safe loader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 0
        msg = " ".join(s for s in (exc.context, exc.problem) if s) or str(exc)
        raise RecipeError(Problem(Loc(filename, line), "", f"invalid YAML: {msg}", code="yaml")) from None
    except yaml.YAMLError as exc:
        raise RecipeError(Problem(Loc(filename, 0), "", f"invalid YAML: {exc}", code="yaml")) from None


def load_yaml_file(path: str) -> Any:
    """Read and parse a YAML file (see :func:`load_yaml_text`)."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise RecipeError(Problem(Loc(path, 0), "", f"cannot read file: {exc.strerror}", code="io")) from None
    return load_yaml_text(text, path)


def to_plain(value: Any) -> Any:
    """Strip location wrappers (for JSON output and hashing)."""
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_plain(v) for v in value]
    return value
