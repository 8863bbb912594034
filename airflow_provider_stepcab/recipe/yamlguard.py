"""Bounds checked on YAML input before it becomes Python objects (see :mod:`.limits`).

- **Reading**: only regular files are opened for reading (a FIFO, device or directory is refused
  without blocking), no larger than ``max_file_size``; bytes that are not UTF-8 are reported with
  their line, never with the file's content.
- **Nesting depth**: libyaml's C composer recurses once per nesting level and overflows the C stack
  (a segmentation fault, no exception) somewhere past ~3,000 levels on a 1 MiB stack.
  :func:`depth_bound` is a cheap upper bound of a text's depth; only a text whose bound is above
  :data:`C_COMPOSER_SAFE_DEPTH` has its depth measured exactly first, from libyaml's event stream
  (the parser is a state machine, it does not recurse). Below that, the limit itself is enforced
  while the document is built (:func:`.yamlio.load_yaml_text`).
- **Aliases**: a composed document shares an anchored node between all its aliases, but every
  later stage (directives, interpolation, merging, the recipe model) walks and copies the expanded
  tree: :func:`check_aliases` counts the nodes each alias stands for ("billion laughs").
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Any

import yaml

from .errors import Loc, Problem, RecipeError
from .limits import DEPTH_CEILING, setting_names

#: a text whose :func:`depth_bound` is at most this goes straight to the C composer
C_COMPOSER_SAFE_DEPTH = 2000
assert DEPTH_CEILING <= C_COMPOSER_SAFE_DEPTH

# An opening bracket that libyaml can take as the start of a flow collection: at the start of the
# text or after whitespace, another bracket, ",", ":" or "?" (tested over every ASCII character and
# the Unicode line breaks; after anything else it is part of a scalar, as in "{recipe.x}").
_OPENER_AFTER = frozenset(",:?[{\ufeff")
_regex: list = []


class LimitError(RecipeError):
    """A file exceeds a loading limit or cannot be read as text (one :class:`Problem`)."""

    def __init__(self, file: str, line: int, message: str, code: str):
        super().__init__(Problem(Loc(file, line), "", message, code=code))


# ------------------------------------------------------------------------------- reading

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
          (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"))


def file_kind(mode: int) -> str:
    """``"a directory"``, ``"a FIFO (named pipe)"`` ... for a ``st_mode`` that is not a regular file."""
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def os_reason(exc: OSError) -> str:
    """A short reason for an :class:`OSError` on a path (never the path's content)."""
    if exc.errno == errno.ELOOP:
        return "symbolic link loop"
    if exc.errno == errno.ENOENT:
        return "does not exist"
    return exc.strerror or type(exc).__name__


def read_bytes(path: str, max_size: int) -> bytes:
    """The bytes of ``path``, which must be a regular file of at most ``max_size`` bytes.

    Opened non-blocking, so a FIFO never blocks (it is refused after ``fstat``).

    :raises LimitError: not readable, not a regular file, or too large.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise LimitError(path, 0, f"cannot read file: {os_reason(exc)}", "io") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise LimitError(path, 0, f"cannot read file: {file_kind(st.st_mode)}, not a regular file",
                             "not-regular-file")
        if st.st_size > max_size:
            raise _too_large(path, st.st_size, max_size)
        chunks, size = [], 0
        while size <= max_size:
            chunk = os.read(fd, min(max_size + 1 - size, max(st.st_size - size, 0) + 65536))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > max_size:  # grew while being read
            raise _too_large(path, size, max_size)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)
    except OSError as exc:
        raise LimitError(path, 0, f"cannot read file: {os_reason(exc)}", "io") from None
    finally:
        os.close(fd)


def _too_large(path: str, size: int, max_size: int) -> LimitError:
    return LimitError(path, 0, f"file is {size} bytes, larger than the {max_size} byte limit "
                      f"({setting_names('max_file_size')})", "file-too-large")


def decode_text(data: bytes, path: str) -> str:
    """``data`` decoded as UTF-8.

    :raises LimitError: ``file:line: not UTF-8`` with the line and column of the first bad byte.
    """
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise LimitError(path, line, f"not UTF-8 (byte 0x{data[exc.start]:02x} at column {column})",
                         "not-utf8") from None


# ------------------------------------------------------------------------------- nesting depth

def depth_bound(text: str) -> int:
    """An upper bound of the nesting depth of the YAML document(s) in ``text``.

    Flow collections: at most one level per opening bracket that can open one. Block collections:
    a nested block collection starts in a column right of its parent's, except a sequence that is a
    mapping's value (same column, its items right of it), so at most two levels per column.
    """
    longest = max(map(len, text.split("\n")))
    flow = text.count("[") + text.count("{")
    if flow + 2 * longest + 2 > C_COMPOSER_SAFE_DEPTH:  # count only the brackets that can open
        if not _regex:
            import re

            _regex.append(re.compile(r"[\[{]"))
        flow = 0
        for match in _regex[0].finditer(text):
            i = match.start()
            if i == 0 or text[i - 1] in _OPENER_AFTER or text[i - 1].isspace():
                flow += 1
    return flow + 2 * longest + 2


def check_depth(text: str, filename: str, limit: int, loader_cls: type) -> None:
    """Measure the nesting depth of ``text`` exactly from the parser's events (no recursion).

    :raises LimitError: deeper than ``limit``, at the line of the first collection too deep.
    :raises yaml.YAMLError: the text is not valid YAML.
    """
    starts = (yaml.MappingStartEvent, yaml.SequenceStartEvent)
    ends = (yaml.MappingEndEvent, yaml.SequenceEndEvent)
    loader = loader_cls(text)
    depth = 0
    try:
        while loader.check_event():
            event = loader.get_event()
            if isinstance(event, starts):
                depth += 1
                if depth > limit:
                    raise too_deep(filename, event.start_mark.line + 1, limit)
            elif isinstance(event, ends):
                depth -= 1
    finally:
        loader.dispose()


def too_deep(filename: str, line: int, limit: int) -> LimitError:
    return LimitError(filename, line, f"mappings/lists nested more than {limit} deep "
                      f"({setting_names('max_nesting_depth')})", "too-deep")


# ------------------------------------------------------------------------------- aliases

def check_aliases(root: yaml.Node, filename: str, limit: int) -> None:
    """Count the nodes YAML aliases add to the expanded document (an alias counts every node of
    what it refers to); iterative, linear in the distinct nodes.

    :raises LimitError: more than ``limit``, at the line of the collection holding the alias that
        went over; or a recursive alias.
    """
    sizes: dict[int, int] = {}  # id(node) -> nodes of its expansion, once finished
    if not isinstance(root, yaml.CollectionNode):
        return
    added = 0
    stack: list[list[Any]] = [[root, _children(root), 1]]
    sizes_active = {id(root)}
    while stack:
        frame = stack[-1]
        node, children = frame[0], frame[1]
        for child in children:
            key = id(child)
            if key in sizes:  # a node met before: this reference is an alias
                added += sizes[key]
                frame[2] += sizes[key]
                if added > limit:
                    raise LimitError(filename, node.start_mark.line + 1,
                                     f"YAML aliases expand to more than {limit} nodes "
                                     f"({setting_names('max_alias_nodes')})", "alias-limit")
            elif key in sizes_active:
                raise LimitError(filename, child.start_mark.line + 1, "recursive YAML alias", "alias-limit")
            elif isinstance(child, yaml.CollectionNode):
                sizes_active.add(key)
                stack.append([child, _children(child), 1])
                break
            else:
                sizes[key] = 1
                frame[2] += 1
        else:
            stack.pop()
            sizes_active.discard(id(node))
            sizes[id(node)] = frame[2]
            if stack:
                stack[-1][2] += frame[2]


def _children(node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        return (n for pair in node.value for n in pair)
    return iter(node.value)
