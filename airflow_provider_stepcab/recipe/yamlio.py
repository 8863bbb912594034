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
import gc
import re
from typing import Any

import yaml

from .errors import UNKNOWN_LOC, Loc, Problem, RecipeError
from .limits import Limits, current_limits
from .yamlguard import (
    C_COMPOSER_SAFE_DEPTH,
    LimitError,
    check_aliases,
    check_depth,
    decode_text,
    depth_bound,
    read_bytes,
    too_deep,
)

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


def count_nodes(value: Any, stop: int) -> int:
    """Nodes of the tree ``value`` (every mapping, list and scalar counts one; a shared subtree
    counts at each place), counting no further once past ``stop``."""
    if not isinstance(value, (dict, list)):
        return 1
    count, todo = 0, [value]
    while todo and count <= stop:
        node = todo.pop()
        count += 1
        for item in (node.values() if isinstance(node, dict) else node):
            if isinstance(item, (dict, list)):
                todo.append(item)
            else:
                count += 1
    return count


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


class _TooDeep(Exception):
    """Raised inside construction (past the depth limit, or out of Python stack) with the line."""

    def __init__(self, line: int, recursion: bool = False):
        super().__init__(line)
        self.line, self.recursion = line, recursion


def _make_loader(filename: str, depth_limit: int | None = None) -> type:
    """A loader class for ``filename``; building a document stops past ``depth_limit`` nested
    collections (:class:`_TooDeep`)."""
    class _Loader(_OmegaConfResolver):  # type: ignore[misc, valid-type]
        pass

    def _loc(node: yaml.Node) -> Loc:
        return Loc(filename, node.start_mark.line + 1)

    limit = depth_limit if depth_limit is not None else 1 << 30
    depth = 0

    def construct_map(loader: yaml.SafeLoader, node: yaml.MappingNode) -> CMap:
        nonlocal depth
        depth += 1
        try:
            if depth > limit:
                raise _TooDeep(node.start_mark.line + 1)
            loader.flatten_mapping(node)
            m = CMap(loc=_loc(node))
            for key_node, value_node in node.value:
                # fast path for the commonest node, a plain string (PyYAML's generic dispatch per
                # scalar was a large part of loading a big recipe)
                key = key_node.value if key_node.tag == _STR_TAG and type(key_node) is yaml.ScalarNode \
                    else loader.construct_object(key_node, deep=True)
                try:
                    hash(key)
                except TypeError:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping", node.start_mark,
                        "found an unhashable key", key_node.start_mark) from None
                if key in m:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping", node.start_mark,
                        "found a duplicate key", key_node.start_mark)
                m[key] = value_node.value if value_node.tag == _STR_TAG and type(value_node) is yaml.ScalarNode \
                    else loader.construct_object(value_node, deep=True)
                m.key_locs[key] = _loc(key_node)
            return m
        except RecursionError:  # the caller's stack was already deep
            raise _TooDeep(node.start_mark.line + 1, recursion=True) from None
        finally:
            depth -= 1

    def construct_seq(loader: yaml.SafeLoader, node: yaml.SequenceNode) -> CList:
        nonlocal depth
        depth += 1
        try:
            if depth > limit:
                raise _TooDeep(node.start_mark.line + 1)
            c = CList(loc=_loc(node))
            for item in node.value:
                c.append(loader.construct_object(item, deep=True))
                c.item_locs.append(_loc(item))
            return c
        except RecursionError:
            raise _TooDeep(node.start_mark.line + 1, recursion=True) from None
        finally:
            depth -= 1

    _Loader.add_constructor("tag:yaml.org,2002:map", construct_map)
    _Loader.add_constructor("tag:yaml.org,2002:seq", construct_seq)
    return _Loader


def _yaml_problem(filename: str, exc: yaml.YAMLError, text: str = "") -> Problem:
    """A YAML error as a problem: its position and PyYAML's description, no snippet of the text."""
    if isinstance(exc, yaml.reader.ReaderError):  # a character YAML does not allow (no mark)
        at = exc.position if isinstance(exc.position, int) else 0
        if _BaseLoader is not yaml.SafeLoader:  # libyaml counts UTF-8 bytes
            line = text.encode("utf-8", "surrogatepass")[:at].count(b"\n") + 1
        else:
            line = text.count("\n", 0, at) + 1
        char = f"#x{exc.character:04x}" if isinstance(exc.character, int) else "a character"
        return Problem(Loc(filename, line), "", f"invalid YAML: unacceptable character {char} ({exc.reason})",
                       code="yaml")
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 0
        msg = " ".join(s for s in (exc.context, exc.problem) if s) or "syntax error"
    else:
        line, msg = 0, type(exc).__name__
    return Problem(Loc(filename, line), "", f"invalid YAML: {msg}", code="yaml")


def load_yaml_text(text: str, filename: str = "<string>", *, limits: Limits | None = None) -> Any:
    """Parse YAML ``text`` safely into :class:`CMap`/:class:`CList` trees, within ``limits``
    (default: :func:`~.limits.current_limits`) on nesting depth and alias expansion.

    :raises RecipeError: with the file and line of a syntax error or of the limit exceeded.
    """
    lim = limits or current_limits()
    bound = depth_bound(text)
    # the document is an acyclic tree, freed by reference counting: automatic collections while it
    # grows only re-walk it (a 20 MB file took 4x longer with them, time growing with the square)
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        if bound > C_COMPOSER_SAFE_DEPTH:
            check_depth(text, filename, lim.max_nesting_depth, _BaseLoader)
        loader = _make_loader(filename, lim.max_nesting_depth if bound > lim.max_nesting_depth else None)(text)
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            if "&" in text:  # no anchor, no alias
                check_aliases(node, filename, lim.max_alias_nodes)
            try:
                return loader.construct_document(node)
            except (ValueError, TypeError, IndexError, KeyError, OverflowError) as exc:
                # a scalar its tag cannot construct (!!int a, an empty !!int, bad !!binary), or an
                # integer of more digits than Python converts (sys.get_int_max_str_digits)
                raise _bad_scalar(filename, node, exc) from None
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise RecipeError(_yaml_problem(filename, exc, text)) from None
    except _TooDeep as exc:
        if exc.recursion:
            raise LimitError(filename, exc.line, "mappings/lists nested too deep for the Python stack",
                             "too-deep") from None
        raise too_deep(filename, exc.line, lim.max_nesting_depth) from None
    except RecursionError:
        raise LimitError(filename, 0, "mappings/lists nested too deep for the Python stack",
                         "too-deep") from None
    finally:
        if gc_was_enabled:
            gc.enable()


def _bad_scalar(filename: str, root: yaml.Node, exc: Exception) -> LimitError:
    """The error for a scalar that cannot be constructed: the first such node's line and tag (its
    value is not quoted). Only on this error path: every scalar is tried again, one by one."""
    probe = _BaseLoader("")
    try:
        todo, seen = [root], set()
        while todo:
            node = todo.pop()
            if id(node) in seen:
                continue
            seen.add(id(node))
            if isinstance(node, yaml.ScalarNode):
                try:
                    probe.construct_object(node, deep=True)
                except Exception as bad:  # noqa: BLE001 - looking for the node that fails
                    return _scalar_error(filename, node, bad)
            elif isinstance(node, yaml.MappingNode):
                todo.extend(n for pair in reversed(node.value) for n in reversed(pair))
            elif isinstance(node, yaml.SequenceNode):
                todo.extend(reversed(node.value))
    finally:
        probe.dispose()
    return _scalar_error(filename, root, exc)


def _scalar_error(filename: str, node: yaml.Node, exc: Exception) -> LimitError:
    tag = node.tag.replace("tag:yaml.org,2002:", "!!")
    if "digits" in str(exc) and tag == "!!int":
        return LimitError(filename, node.start_mark.line + 1, "invalid YAML: an integer too long to convert",
                          "yaml")
    return LimitError(filename, node.start_mark.line + 1, f"invalid YAML: a {tag} value that cannot be read "
                      f"as one ({type(exc).__name__})", "yaml")


def read_text(path: str, *, limits: Limits | None = None) -> str:
    """The text of ``path``: a regular UTF-8 file within the size limit.

    :raises RecipeError: with the reason (never the file's content).
    """
    lim = limits or current_limits()
    return decode_text(read_bytes(path, lim.max_file_size), path)


def load_yaml_file(path: str, *, limits: Limits | None = None) -> Any:
    """Read and parse a YAML file (see :func:`read_text` and :func:`load_yaml_text`)."""
    lim = limits or current_limits()
    return load_yaml_text(read_text(path, limits=lim), path, limits=lim)


def to_plain(value: Any) -> Any:
    """Strip location wrappers (for JSON output and hashing)."""
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_plain(v) for v in value]
    return value
