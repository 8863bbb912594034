"""Stimela parameter types (``dtype`` strings), parsed without ``eval``.

Stimela evaluates ``dtype`` strings as Python type expressions over :mod:`typing`
plus ``scabha.basetypes`` and validates values with pydantic v1 (non-strict).
This module parses the same expressions with a small tokenizer and a recursive
descent parser and reproduces pydantic v1's coercions:

* ``int`` accepts ints, bools (→ 0/1), floats (truncated) and numeric strings;
* ``float`` accepts anything ``float()`` takes; ``str`` accepts str, int, float, bool;
* ``bool`` accepts bools, 0/1 and ``true/false/yes/no/on/off/t/f/y/n/1/0`` strings;
* ``List``/``Tuple`` accept lists and tuples (never a bare string), ``Dict`` a mapping;
* ``Union`` tries its members in order; ``Optional[X]`` is ``Union[X, None]``.

Top-level ``File``/``Directory``/``MS``/``URI`` and ``List`` of them get Stimela's
extra file handling: a string holding a YAML list (``"[a, b]"``) is split, a single
file may be given as a one-element list, and paths can be normalised the way
Stimela prints them (relative to the working directory) when ``cwd`` is given.
"""

from __future__ import annotations

import os
import re
from typing import Any, Optional
from urllib.parse import urlsplit

import yaml

from .records import record

SCALARS = ("str", "int", "float", "bool", "complex", "Any", "None")
FILE_TYPES = ("File", "Directory", "MS", "URI")
GENERICS = ("List", "Tuple", "Dict", "Union", "Optional")
# lower-case spellings accepted by eval() in Stimela and what they mean here
ALIASES = {"list": "List", "dict": "Dict", "tuple": "Tuple", "any": "Any", "NoneType": "None",
           "Sequence": "List", "Mapping": "Dict"}

_TOKEN = re.compile(r"\s*(?:(?P<name>[A-Za-z_][A-Za-z_0-9]*(?:\.[A-Za-z_][A-Za-z_0-9]*)*)"
                    r"|(?P<ellipsis>\.\.\.)|(?P<punct>[\[\],]))")
_BOOL_TRUE = {"1", "on", "t", "true", "y", "yes"}
_BOOL_FALSE = {"0", "off", "f", "false", "n", "no"}


@record(frozen=True)
class DType:
    """A parsed dtype. ``kind`` is a scalar/file name or ``List/Tuple/Dict/Union``.

    ``args`` holds element types (``None`` for bare ``List``/``Dict``/``Tuple``);
    ``variadic`` marks ``Tuple[X, ...]``.
    """

    kind: str
    args: Optional[tuple] = None
    variadic: bool = False

    # ----------------------------------------------------------------- display
    def __str__(self) -> str:
        if self.args is None:
            return self.kind
        if self.kind == "Union" and len(self.args) == 2 and DType("None") in self.args:
            other = self.args[0] if self.args[1] == DType("None") else self.args[1]
            return f"Optional[{other}]"
        inner = ", ".join(str(a) for a in self.args)
        return f"{self.kind}[{inner}{', ...' if self.variadic else ''}]"

    def __repr__(self) -> str:
        return f"DType({str(self)!r})"

    # -------------------------------------------------------------- predicates
    @property
    def is_file(self) -> bool:
        """A single ``File``/``Directory``/``MS``/``URI``."""
        return self.kind in FILE_TYPES

    @property
    def is_file_list(self) -> bool:
        """``List`` of a file type (Stimela's ``is_file_list_type``)."""
        return self.kind == "List" and self.args is not None and self.args[0].is_file

    @property
    def is_file_type(self) -> bool:
        """A file type or a ``List`` of one (these get paths checked and mounted)."""
        return self.is_file or self.is_file_list

    @property
    def is_list(self) -> bool:
        return self.kind in ("List", "Tuple")

    @property
    def is_bool(self) -> bool:
        return self.kind == "bool"

    def contains_files(self) -> bool:
        """True if a file type appears anywhere inside (e.g. ``Union[str, List[File]]``)."""
        return self.is_file or any(a.contains_files() for a in (self.args or ()))

    # ------------------------------------------------------------- validation
    def validate(self, value: Any, *, cwd: Optional[str] = None) -> Any:
        """Coerce ``value`` to this type as Stimela (pydantic v1) does.

        :param cwd: if given, file-type paths are normalised as Stimela prints them
            (resolved, and relative to ``cwd`` when inside it).
        :raises ValueError: with a readable reason.
        """
        if self.is_file_type:
            return self._validate_files(value, cwd)
        return self._check(value)

    def _validate_files(self, value: Any, cwd: Optional[str]) -> Any:
        if isinstance(value, str):
            files = [value]
            try:
                loaded = yaml.safe_load(value)
                if type(loaded) is list:
                    files = loaded
            except yaml.YAMLError:
                pass
        elif isinstance(value, (list, tuple)):
            files = list(value)
        else:
            raise ValueError(f"expected a path (or list of paths) for {self}, got {_show(value)}")
        out = []
        for f in files:
            if not isinstance(f, str):
                raise ValueError(f"expected a path for {self}, got {_show(f)}")
            out.append(normalize_path(f, cwd) if cwd is not None else f)
        if self.is_file:
            if len(out) > 1:
                raise ValueError(f"multiple files given for {self} ({value})")
            return out[0] if out else ""
        return out

    def _check(self, v: Any) -> Any:  # noqa: C901 - one branch per kind
        k = self.kind
        if k == "Any":
            return v
        if k == "None":
            if v is None:
                return None
            raise ValueError(f"expected None, got {_show(v)}")
        if v is None and k != "Union":
            raise ValueError("none is not an allowed value")
        if k in ("str",) + FILE_TYPES:
            if isinstance(v, str):
                return str(v)
            if isinstance(v, (int, float)):  # bool is an int: str(True) == "True"
                return str(v)
            if isinstance(v, bytes):
                return v.decode()
            raise ValueError(f"expected a string, got {_show(v)}")
        if k == "int":
            if isinstance(v, int) and not isinstance(v, bool):
                return v
            try:
                return int(v)
            except (TypeError, ValueError, OverflowError):
                raise ValueError(f"expected an integer, got {_show(v)}") from None
        if k == "float":
            if isinstance(v, float):
                return v
            try:
                return float(v)
            except (TypeError, ValueError, OverflowError):
                raise ValueError(f"expected a number, got {_show(v)}") from None
        if k == "complex":
            try:
                return v if isinstance(v, complex) else complex(v)
            except (TypeError, ValueError):
                raise ValueError(f"expected a complex number, got {_show(v)}") from None
        if k == "bool":
            return _to_bool(v)
        if k == "List":
            items = _as_sequence(v, "list")
            if self.args is None:
                return items
            return [_at(i, self.args[0], x) for i, x in enumerate(items)]
        if k == "Tuple":
            items = _as_sequence(v, "tuple")
            if self.args is None:
                return tuple(items)
            if self.variadic:
                return tuple(_at(i, self.args[0], x) for i, x in enumerate(items))
            if len(items) != len(self.args):
                raise ValueError(f"wrong tuple length {len(items)}, expected {len(self.args)}")
            return tuple(_at(i, t, x) for i, (t, x) in enumerate(zip(self.args, items)))
        if k == "Dict":
            if not isinstance(v, dict):
                raise ValueError(f"expected a mapping, got {_show(v)}")
            if self.args is None:
                return dict(v)
            kt, vt = self.args
            return {_at(key, kt, key): _at(key, vt, x) for key, x in v.items()}
        if k == "Union":
            reasons = []
            for member in self.args or ():
                try:
                    return member._check(v)
                except ValueError as exc:
                    reasons.append(f"{member}: {exc}")
            raise ValueError(f"{_show(v)} matches none of {self}: " + "; ".join(reasons))
        raise ValueError(f"cannot validate dtype {self}")  # pragma: no cover

    # ------------------------------------------------------------ JSON schema
    def json_schema(self) -> dict:
        """A JSON schema fragment (for Airflow ``Param`` forms)."""
        k = self.kind
        simple = {"str": "string", "int": "integer", "float": "number", "bool": "boolean", "None": "null"}
        if k in simple:
            return {"type": simple[k]}
        if k == "complex":
            return {"type": "string"}
        if k == "Any":
            return {}
        if k in FILE_TYPES:
            return {"type": "string", "format": "uri" if k == "URI" else "path"}
        if k == "List" or (k == "Tuple" and (self.args is None or self.variadic)):
            return {"type": "array", **({"items": self.args[0].json_schema()} if self.args else {})}
        if k == "Tuple":
            n = len(self.args)
            return {"type": "array", "prefixItems": [a.json_schema() for a in self.args],
                    "minItems": n, "maxItems": n}
        if k == "Dict":
            return {"type": "object",
                    **({"additionalProperties": self.args[1].json_schema()} if self.args else {})}
        members = [a.json_schema() for a in self.args]
        if any(m == {} for m in members):
            return {}
        if all(set(m) == {"type"} and isinstance(m["type"], str) for m in members):
            return {"type": list(dict.fromkeys(m["type"] for m in members))}
        return {"anyOf": members}


def _show(v: Any) -> str:
    text = repr(v)
    return (text[:60] + "...") if len(text) > 63 else text


def _to_bool(v: Any) -> bool:
    if v is True or v is False:
        return v
    if isinstance(v, bytes):
        v = v.decode()
    key = v.lower() if isinstance(v, str) else v
    if isinstance(key, str):
        if key in _BOOL_TRUE:
            return True
        if key in _BOOL_FALSE:
            return False
    elif isinstance(key, (int, float)) and key in (0, 1):
        return bool(key)
    raise ValueError(f"value could not be parsed to a boolean: {_show(v)}")


def _as_sequence(v: Any, what: str) -> list:
    if isinstance(v, (list, tuple, set, frozenset)):
        return list(v)
    raise ValueError(f"expected a {what}, got {_show(v)}")


def _at(index: Any, dtype: DType, value: Any) -> Any:
    try:
        return dtype._check(value)
    except ValueError as exc:
        raise ValueError(f"item {index!r}: {exc}") from None


def normalize_path(path: str, cwd: Optional[str] = None) -> str:
    """Normalise a path like Stimela's ``URI``: remote URIs as given; local paths resolved,
    then made relative to ``cwd`` (default: the process working directory) when inside it."""
    parts = urlsplit(path)
    if len(parts.scheme) > 1 and parts.scheme != "file":
        return path
    local = parts.path if parts.scheme == "file" else path
    base = os.path.realpath(cwd or os.getcwd())
    full = os.path.realpath(os.path.join(base, os.path.expanduser(local)))
    if full == base:
        return "."
    return os.path.relpath(full, base) if full.startswith(base.rstrip(os.sep) + os.sep) else full


# ------------------------------------------------------------------- parser
class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.tokens: list[tuple[str, str, int]] = []
        pos = 0
        stripped = text.rstrip()
        while pos < len(stripped):
            m = _TOKEN.match(stripped, pos)
            if not m:
                raise self._error(f"unexpected character {stripped[pos:].lstrip()[:1]!r}",
                                  len(stripped[:pos]) + len(stripped[pos:]) - len(stripped[pos:].lstrip()))
            kind = m.lastgroup or ""
            self.tokens.append((kind, m.group(kind), m.start(kind)))
            pos = m.end()
        self.i = 0

    def _error(self, msg: str, pos: Optional[int] = None) -> ValueError:
        where = f" at column {pos + 1}" if pos is not None else ""
        return ValueError(f"invalid dtype {self.text!r}: {msg}{where}")

    def peek(self) -> Optional[tuple[str, str, int]]:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def expect(self, value: str) -> None:
        tok = self.peek()
        if tok is None or tok[1] != value:
            raise self._error(f"expected {value!r}" + (f", found {tok[1]!r}" if tok else " before the end"),
                              tok[2] if tok else len(self.text))
        self.i += 1

    def parse(self) -> DType:
        if not self.tokens:
            raise ValueError("invalid dtype: empty string")
        result = self.type_expr()
        tok = self.peek()
        if tok is not None:
            raise self._error(f"unexpected {tok[1]!r}", tok[2])
        return result

    def type_expr(self) -> DType:
        tok = self.peek()
        if tok is None or tok[0] != "name":
            raise self._error("expected a type name" + (f", found {tok[1]!r}" if tok else ""),
                              tok[2] if tok else len(self.text))
        self.i += 1
        name = tok[1].split(".")[-1] if tok[1].startswith(("typing.", "scabha.basetypes.")) else tok[1]
        name = ALIASES.get(name, name)
        if name not in SCALARS + FILE_TYPES + GENERICS:
            raise self._error(f"unknown type {tok[1]!r} (known: {', '.join(SCALARS + FILE_TYPES + GENERICS)})",
                              tok[2])
        nxt = self.peek()
        if nxt is None or nxt[1] != "[":
            if name in ("Union", "Optional"):
                raise self._error(f"{name} needs arguments: {name}[...]", tok[2])
            return DType(name)
        if name in SCALARS + FILE_TYPES:
            raise self._error(f"{name} takes no arguments", nxt[2])
        self.i += 1
        args, variadic = self.arg_list()
        self.expect("]")
        return self._build(name, args, variadic, tok[2])

    def arg_list(self) -> tuple[list, bool]:
        args: list[DType] = [self.type_expr()]
        variadic = False
        while self.peek() is not None and self.peek()[1] == ",":
            self.i += 1
            tok = self.peek()
            if tok is not None and tok[0] == "ellipsis":
                self.i += 1
                variadic = True
                break
            if tok is not None and tok[1] == "]":  # trailing comma
                break
            args.append(self.type_expr())
        return args, variadic

    def _build(self, name: str, args: list, variadic: bool, pos: int) -> DType:
        if variadic and not (name == "Tuple" and len(args) == 1):
            raise self._error("'...' is only allowed as Tuple[X, ...]", pos)
        if name == "List":
            if len(args) != 1:
                raise self._error(f"List takes one argument, got {len(args)}", pos)
            return DType("List", tuple(args))
        if name == "Dict":
            if len(args) != 2:
                raise self._error(f"Dict takes two arguments, got {len(args)}", pos)
            return DType("Dict", tuple(args))
        if name == "Tuple":
            return DType("Tuple", tuple(args), variadic)
        if name == "Optional":
            if len(args) != 1:
                raise self._error(f"Optional takes one argument, got {len(args)}", pos)
            args = [args[0], DType("None")]
        return make_union(args)


def make_union(members: list) -> DType:
    """``Union`` with typing's rules: nested unions flatten, duplicates go, one member is itself."""
    flat: list[DType] = []
    for m in members:
        for x in (m.args if m.kind == "Union" else (m,)):
            if x not in flat:
                flat.append(x)
    return flat[0] if len(flat) == 1 else DType("Union", tuple(flat))


_cache: dict[str, DType] = {}


def parse_dtype(text: str) -> DType:
    """Parse a Stimela dtype string (``"List[File]"``, ``"Optional[int]"`` ...).

    :raises ValueError: for unknown names or bad syntax, naming the column.
    """
    if not isinstance(text, str):
        raise ValueError(f"invalid dtype {text!r}: a type expression string is expected")
    try:
        return _cache[text]
    except KeyError:
        pass
    result = _Parser(text).parse()
    if len(_cache) < 4096:
        _cache[text] = result
    return result
