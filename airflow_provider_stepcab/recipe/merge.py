"""OmegaConf-style merging of location-aware YAML trees, and dotted-path helpers.

Stimela merges config sections with OmegaConf's ``unsafe_merge``: mappings merge
recursively (keys of the override are added or replace), while scalars and lists
are replaced wholesale. :func:`merge` does the same on :class:`~.yamlio.CMap`
trees and keeps, for every key, the location of whichever side supplied it.

Deliberate differences from OmegaConf: merging a mapping over a list (or the
reverse) raises ``TypeError`` in OmegaConf; here the override simply wins. An
override value of ``"???"`` (OmegaConf's *missing* marker) keeps the base value,
as OmegaConf does.
"""

from __future__ import annotations

import fnmatch
from typing import Any, Iterable, Sequence

from .errors import UNKNOWN_LOC, Loc
from .yamlio import CMap, copy_tree

MISSING = "???"

_RAISE = object()


def _loc(node: Any) -> Loc:
    return getattr(node, "loc", UNKNOWN_LOC)


def _key_loc(node: Any, key: Any) -> Loc:
    if isinstance(node, CMap):
        return node.key_loc(key)
    return _loc(node)


def merge(base: Any, override: Any, *, own_base: bool = False, own_override: bool = False) -> Any:
    """Merge ``override`` onto ``base`` and return a new tree (inputs are not changed).

    Both sides mappings: a new :class:`CMap` holding the keys of ``base`` (in their
    order) followed by the new keys of ``override``; keys present on both sides are
    merged recursively when both values are mappings, otherwise the override value
    replaces the base one. Anything else: a deep copy of ``override``. A top-level
    ``override`` of ``None`` means "nothing to merge" and returns a copy of ``base``.

    :param base: the lower-priority tree.
    :param override: the higher-priority tree.
    :param own_base: the caller gives ``base`` away (never uses it again): its subtrees are
        reused in the result instead of copied. Loading merges freshly parsed private trees
        several times per file; copying them each time was most of a cold parse.
    :param own_override: the same for ``override``.
    :returns: the merged tree; its own location is the override's when known.
    """
    if override is None:
        return base if own_base else copy_tree(base)
    if not (isinstance(base, dict) and isinstance(override, dict)):
        return override if own_override else copy_tree(override)
    oloc = _loc(override)
    out = CMap(loc=oloc if oloc != UNKNOWN_LOC else _loc(base))
    for key, value in base.items():
        if key in override and not (override[key] == MISSING and isinstance(override[key], str)):
            new = override[key]
            if isinstance(value, dict) and isinstance(new, dict):
                out[key] = merge(value, new, own_base=own_base, own_override=own_override)
            else:
                out[key] = new if own_override else copy_tree(new)
            out.key_locs[key] = _key_loc(override, key)
        else:
            out[key] = value if own_base else copy_tree(value)
            out.key_locs[key] = _key_loc(base, key)
    for key, value in override.items():
        if key not in base:
            out[key] = value if own_override else copy_tree(value)
            out.key_locs[key] = _key_loc(override, key)
    return out


def merge_all(trees: Iterable[Any], base: Any = None) -> CMap:
    """Merge several trees left to right (later ones win), starting from ``base`` or ``{}``."""
    result: Any = CMap() if base is None else base
    for tree in trees:
        result = merge(result, tree)
    return result


def split_path(path: str | Sequence[Any]) -> list[Any]:
    """``"a.b.c"`` → ``["a", "b", "c"]``; a list/tuple of keys is returned as a list.

    Pass a sequence when a key itself contains dots (e.g. cab ``casa.flagdata``).
    """
    if isinstance(path, str):
        return path.split(".") if path else []
    return list(path)


def _step(node: Any, key: Any) -> Any:
    if isinstance(node, dict):
        if key in node:
            return node[key]
        if isinstance(key, str) and key.lstrip("-").isdigit() and int(key) in node:
            return node[int(key)]
        raise KeyError(key)
    if isinstance(node, list):
        try:
            return node[int(key)]
        except (ValueError, IndexError):
            raise KeyError(key) from None
    raise KeyError(key)


def get_path(tree: Any, path: str | Sequence[Any], default: Any = _RAISE) -> Any:
    """Value at a dotted ``path`` (``"lib.params.x"``; list items by index, ``"l.0"``).

    :raises KeyError: when the path does not exist and no ``default`` is given.
    """
    node = tree
    try:
        for key in split_path(path):
            node = _step(node, key)
    except KeyError:
        if default is _RAISE:
            raise KeyError(path if isinstance(path, str) else ".".join(map(str, path))) from None
        return default
    return node


def has_path(tree: Any, path: str | Sequence[Any]) -> bool:
    """True when ``path`` exists in ``tree`` (a ``None`` value counts as existing)."""
    marker = object()
    return get_path(tree, path, marker) is not marker


def set_path(tree: dict, path: str | Sequence[Any], value: Any, loc: Loc | None = None) -> None:
    """Set ``tree[a][b][c] = value``, creating intermediate :class:`CMap` sections.

    A non-mapping value in the way is replaced by a new section.
    """
    keys = split_path(path)
    if not keys:
        raise KeyError("empty path")
    node = tree
    for key in keys[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = CMap(loc=loc or _loc(node))
            node[key] = child
            if isinstance(node, CMap) and loc is not None:
                node.key_locs[key] = loc
        node = child
    node[keys[-1]] = value
    if isinstance(node, CMap) and loc is not None:
        node.key_locs[keys[-1]] = loc


def del_path(tree: Any, path: str | Sequence[Any]) -> bool:
    """Delete the entry at ``path``; returns False when it was not there."""
    keys = split_path(path)
    if not keys:
        return False
    try:
        parent = get_path(tree, keys[:-1])
    except KeyError:
        return False
    last = keys[-1]
    if isinstance(parent, dict) and last in parent:
        del parent[last]
        if isinstance(parent, CMap):
            parent.key_locs.pop(last, None)
        return True
    if isinstance(parent, list):
        try:
            idx = int(last)
            del parent[idx]
        except (ValueError, IndexError):
            return False
        locs = getattr(parent, "item_locs", None)
        if locs is not None and -len(locs) <= idx < len(locs):
            del locs[idx]
        return True
    return False


def lookup(name: str, sources: Sequence[Any]) -> Any:
    """First value found at dotted ``name`` in ``sources`` (``None`` counts as absent)."""
    keys = name.split(".")
    for source in sources:
        node = source
        for key in keys:
            node = node.get(key) if isinstance(node, dict) else None
            if node is None:
                break
        if node is not None:
            return node
    return None


def scrub(conf: Any, paths: Any) -> list[str]:
    """Delete dotted ``paths`` (globs allowed per component) from ``conf`` in place.

    A plain name that matches nothing is an error; a pattern matching nothing is not.
    :returns: error messages (empty when all went well).
    """
    errors: list[str] = []
    if paths is not None and not isinstance(paths, (str, list, tuple)):
        return [f"must be a string or a list of strings, not {type(paths).__name__}"]
    for path in [paths] if isinstance(paths, str) else list(paths or []):
        if not isinstance(path, str):
            errors.append(f"invalid entry {path!r}")
            continue
        name, _, rest = path.partition(".")
        is_pattern = "*" in name or "?" in name
        matches = [k for k in list(conf.keys()) if fnmatch.fnmatchcase(str(k), name)]
        if not matches and not is_pattern:
            errors.append(f"no entry matching '{name}'")
        for key in matches:
            if not rest:
                del conf[key]
                if isinstance(conf, CMap):
                    conf.key_locs.pop(key, None)
            elif isinstance(conf[key], dict):
                errors += scrub(conf[key], rest)
            elif not is_pattern:
                errors.append(f"'{name}' does not refer to a subsection")
    return errors
