"""OmegaConf-style ``${...}`` interpolation, applied to each YAML file right after parsing.

Stimela 2.1.4 loads every file with ``OmegaConf.load`` and immediately resolves
all interpolations of that file alone (``to_container(resolve=True)``), before
any ``_include``/``_use`` is processed. So ``${...}`` can only see the raw
content of the same file. Supported here, as OmegaConf/Stimela do:

- ``${a.b.c}`` absolute keys, ``${.x}``/``${..x}`` relative to the mapping
  holding the value (and its parents), list items as ``${l.0}`` or ``${l[0]}``;
- a string that is exactly one interpolation takes the referenced value (any
  type); otherwise values are converted with ``str()`` and concatenated;
- resolvers ``${self:path}``, ``${self:dirname}``, ``${self:basename}`` (Stimela's,
  about the file being loaded), ``${oc.env:VAR[,default]}``, ``${oc.select:key[,default]}``;
- ``\\${`` is a literal ``${``; ``\\\\${x}`` is a backslash followed by the value.

Other OmegaConf resolvers (``oc.decode``, ``oc.create``, ``oc.dict.*``) are
reported as unsupported. Failures are recorded as problems (Stimela would
refuse the whole file) and leave the string unchanged.
"""

from __future__ import annotations

import copy
import os
import re
from typing import Any

from .errors import Problems
from .limits import current_limits, setting_names
from .yamlio import count_nodes, loc_of, to_plain

_TOKEN = r"\[([^\]]*)\]|([^.\[\]]+)"  # compiled by ``re`` on first use (run time)


class InterpError(Exception):
    """An interpolation could not be resolved (message is user-facing)."""


def _count_backslashes(text: str, end: int) -> int:
    n = 0
    while end - n - 1 >= 0 and text[end - n - 1] == "\\":
        n += 1
    return n


def _find_close(text: str, start: int) -> int:
    """Index of the ``}`` closing the ``${`` whose body starts at ``start`` (-1 if none)."""
    depth, quote, i = 1, "", start
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return -1


def _split_args(text: str) -> list[str]:
    args, depth, quote, cur = [], 0, "", []
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == "," and depth == 0:
            args.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    args.append("".join(cur))
    return [a.strip() for a in args]


class _Interpolator:
    def __init__(self, root: Any, path: str, problems: Problems, location: str):
        self.root = root
        self.path = path
        self.problems = problems
        self.location = location
        self.done: set[tuple[int, Any]] = set()
        self.active: set[tuple[int, Any]] = set()
        self.walked: set[int] = set()
        self.paths: dict[int, str] = {}
        limits = current_limits()
        self.max_nodes, self.max_length = limits.max_alias_nodes, limits.max_string_length
        self.copied = 0  # nodes added by copying sections into other places
        self._index(root, location)

    def _index(self, node: Any, keypath: str) -> None:
        self.paths[id(node)] = keypath
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, value in items:
            if isinstance(value, (dict, list)):
                self._index(value, self._sub(node, keypath, key))

    @staticmethod
    def _sub(node: Any, keypath: str, key: Any) -> str:
        if isinstance(node, list):
            return f"{keypath}[{key}]"
        return f"{keypath}.{key}" if keypath else str(key)

    # -- tree walk -----------------------------------------------------------------
    def walk(self, chain: list[Any]) -> None:
        node = chain[-1]
        if id(node) in self.walked:
            return
        self.walked.add(id(node))
        keypath = self.paths.get(id(node), "")
        keys = list(node.keys()) if isinstance(node, dict) else range(len(node))
        for key in keys:
            try:
                self.value_at(chain, key)
            except InterpError as exc:
                self.problems.error(loc_of(node, key), self._sub(node, keypath, key), str(exc),
                                    code="interpolation")
            value = node[key]
            if isinstance(value, (dict, list)):
                self.walk(chain + [value])

    def value_at(self, chain: list[Any], key: Any) -> Any:
        """Resolved value of ``chain[-1][key]`` (resolving and storing it in place)."""
        node = chain[-1]
        value = node[key]
        ident = (id(node), key)
        if not isinstance(value, str) or "${" not in value or ident in self.done:
            return value
        if ident in self.active:
            raise InterpError(f"recursive interpolation in {value!r}")
        self.active.add(ident)
        try:
            result = self.resolve_string(value, chain)
        finally:
            self.active.discard(ident)
        node[key] = result
        self.done.add(ident)
        return result

    # -- string parsing ------------------------------------------------------------
    def resolve_string(self, text: str, chain: list[Any]) -> Any:
        parts: list[Any] = []
        literal: list[str] = []
        i = 0
        while True:
            j = text.find("${", i)
            if j < 0:
                literal.append(text[i:])
                break
            nbs = _count_backslashes(text, j)
            literal.append(text[i:j - nbs] + "\\" * (nbs // 2))
            if nbs % 2:  # escaped: a literal "${"
                literal.append("${")
                i = j + 2
                continue
            close = _find_close(text, j + 2)
            if close < 0:
                raise InterpError(f"unterminated interpolation in {text!r}")
            value = self.resolve_body(text[j + 2:close], chain)
            parts.append("".join(literal))
            literal = []
            parts.append((value,))
            i = close + 1
        parts.append("".join(literal))
        pieces = [p for p in parts if p != ""]
        if len(pieces) == 1 and isinstance(pieces[0], tuple):
            result = self._copy(pieces[0][0])
            self._mark_walked(result)  # already resolved: never resolve a copy twice
            return result
        result = "".join(p if isinstance(p, str) else self._to_str(p[0]) for p in parts)
        if len(result) > self.max_length:
            raise InterpError(f"interpolation result of {len(result)} characters is longer than "
                              f"{self.max_length} ({setting_names('max_string_length')})")
        return result

    def _copy(self, value: Any) -> Any:
        """A deep copy of a resolved value, counted against ``max_alias_nodes`` (a section
        interpolated at many places multiplies the document, as YAML aliases do)."""
        if not isinstance(value, (dict, list)):
            return value
        self.copied += count_nodes(value, self.max_nodes - self.copied)
        if self.copied > self.max_nodes:
            raise InterpError(f"interpolations copy more than {self.max_nodes} nodes "
                              f"({setting_names('max_alias_nodes')})")
        return copy.deepcopy(value)

    def _mark_walked(self, value: Any) -> None:
        if isinstance(value, (dict, list)):
            self.walked.add(id(value))
            for v in (value.values() if isinstance(value, dict) else value):
                self._mark_walked(v)

    @staticmethod
    def _to_str(value: Any) -> str:
        return str(to_plain(value))

    def _expand(self, text: str, chain: list[Any]) -> str:
        return str(self.resolve_string(text, chain)) if "${" in text else text

    def resolve_body(self, body: str, chain: list[Any]) -> Any:
        body = body.strip()
        head = body.split("${", 1)[0]
        if ":" in head:
            name, _, argtext = body.partition(":")
            args = [self._unquote(self._expand(a, chain)) for a in _split_args(argtext)] if argtext.strip() else []
            return self.call_resolver(name.strip(), args, chain)
        return self.lookup(self._expand(body, chain), chain)

    @staticmethod
    def _unquote(arg: str) -> str:
        if len(arg) >= 2 and arg[0] == arg[-1] and arg[0] in "'\"":
            return arg[1:-1]
        return arg

    # -- references and resolvers --------------------------------------------------
    def lookup(self, ref: str, chain: list[Any], default: Any = InterpError) -> Any:
        ndots = len(ref) - len(ref.lstrip("."))
        if ndots == 0:
            cur_chain = [self.root]
        elif ndots <= len(chain):
            cur_chain = chain[: len(chain) - ndots + 1]
        else:
            raise InterpError(f"interpolation key {ref!r} goes above the top of the document")
        rest = ref[ndots:]
        if not rest:
            return self._copy(self._resolve_container(cur_chain))
        for m in re.finditer(_TOKEN, rest):
            key = m.group(1) if m.group(1) is not None else m.group(2)
            node = cur_chain[-1]
            k = self._match_key(node, key)
            if k is None:
                if default is not InterpError:
                    return default
                raise InterpError(f"interpolation key {ref!r} not found")
            value = self.value_at(cur_chain, k)
            cur_chain = cur_chain + [value]
        return self._copy(self._resolve_container(cur_chain))

    def _resolve_container(self, chain: list[Any]) -> Any:
        value = chain[-1]
        if isinstance(value, (dict, list)):
            self.walk(chain)
        return value

    @staticmethod
    def _match_key(node: Any, key: str) -> Any:
        if isinstance(node, dict):
            if key in node:
                return key
            for k in node:
                if str(k) == key:
                    return k
            return None
        if isinstance(node, list):
            try:
                idx = int(key)
            except ValueError:
                return None
            return idx if -len(node) <= idx < len(node) else None
        return None

    def call_resolver(self, name: str, args: list[str], chain: list[Any]) -> Any:
        if name == "self":
            ns = {"path": self.path, "dirname": os.path.dirname(self.path),
                  "basename": os.path.basename(self.path)}
            if len(args) != 1 or args[0] not in ns:
                raise InterpError(f"invalid '${{self:{','.join(args)}}}' substitution in {self.path}"
                                  " (use self:path, self:dirname or self:basename)")
            return ns[args[0]]
        if name == "oc.env":
            if not args:
                raise InterpError("oc.env needs a variable name")
            if args[0] in os.environ:
                return os.environ[args[0]]
            if len(args) > 1:
                return None if args[1] == "null" else args[1]
            raise InterpError(f"environment variable '{args[0]}' not found")
        if name == "oc.select":
            if not args:
                raise InterpError("oc.select needs a key")
            default = args[1] if len(args) > 1 else InterpError
            return self.lookup(args[0], chain, default=default)
        if name.startswith("oc."):
            raise InterpError(f"OmegaConf resolver '{name}' is not supported by stepcab")
        raise InterpError(f"unsupported interpolation type '{name}'")


def interpolate(tree: Any, path: str, problems: Problems, location: str = "") -> Any:
    """Resolve every ``${...}`` in ``tree`` (in place) as OmegaConf would for file ``path``.

    :param tree: a freshly parsed document (:class:`~.yamlio.CMap`/``CList``).
    :param path: the file the tree came from (for ``${self:...}`` and messages).
    :param problems: where failures are recorded (``file:line: key: message``).
    :param location: dotted key prefix for messages.
    :returns: ``tree`` itself (possibly changed in place).
    """
    if not isinstance(tree, (dict, list)) or not _has_interp(tree):
        return tree
    _Interpolator(tree, path, problems, location).walk([tree])
    return tree


def _has_interp(node: Any) -> bool:
    if isinstance(node, str):
        return "${" in node
    if isinstance(node, dict):
        return any(_has_interp(v) for v in node.values())
    if isinstance(node, list):
        return any(_has_interp(v) for v in node)
    return False
