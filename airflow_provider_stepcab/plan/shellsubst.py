"""``{}``-substitution into a cab command that runs a shell script (``sh -c '... {recipe.x}'``).

Stimela substitutes a binary cab's ``command`` as text and then splits it into words. When the
command is a shell running a script (``sh -c SCRIPT``, ``bash -ec SCRIPT``, ``command: bash`` with
``args: [-c, SCRIPT]``), a substituted value lands inside shell code: ``x = "a; rm -rf ~"`` would
run ``rm``. Here such a script is substituted field by field, each value quoted for the place it
lands in (unquoted, inside ``'...'``, inside ``"..."``, in ``$(...)``/backticks, in a comment), so
that the script sees the value as one word of data and never as code. A field inside a
here-document cannot be quoted and is refused. Every other command is substituted as Stimela does.

Pure: no I/O.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import string
from typing import Any, Callable, Optional, Sequence

from ..recipe.errors import RecipeError

#: shells whose ``-c`` argument is a script
SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "busybox"})
_WORD_BREAK = " \t\n;&|()<>"


class ShellSubstitutionError(RecipeError):
    """A value cannot be substituted safely into a shell script (e.g. inside a here-document)."""


def script_index(words: Sequence[str]) -> Optional[int]:
    """Index of the word a shell runs as its script (``sh -c SCRIPT`` → 2), or ``None``.

    ``env [VAR=value ...]`` before the shell is skipped; option clusters such as ``-ec`` count.
    """
    i = 0
    if words and os.path.basename(words[0]) == "env":
        i = 1
        while i < len(words) and ("=" in words[i] or words[i].startswith("-")):
            i += 1
    if i >= len(words) or os.path.basename(words[i]) not in SHELLS:
        return None
    if os.path.basename(words[i]) == "busybox":
        i += 1
        if i >= len(words) or words[i] not in SHELLS:
            return None
    for j in range(i + 1, len(words)):
        word = words[j]
        if word.startswith("--"):       # long options (bash --norc -c ...)
            continue
        if not word.startswith("-") or word == "-":
            return None                 # a script file, not -c
        if "c" in word[1:]:
            return j + 1 if j + 1 < len(words) else None
    return None


class _Scanner:
    """Tracks the shell's quoting context through the literal parts of a script."""

    def __init__(self) -> None:
        self.stack: list = []          # outer contexts of $( ) / backticks
        self.state: Optional[str] = None   # None, "'", "$'", '"', "#" (comment), "<<" (here-document)
        self.escaped = False
        self.prev = ""
        self.depth = 0                 # parentheses inside the innermost $( )
        self.dollar = False            # the previous character was an unquoted, unescaped ``$``

    def feed(self, text: str) -> None:
        i = 0
        while i < len(text):
            c = text[i]
            nxt = text[i + 1] if i + 1 < len(text) else ""
            n = self._step(c, nxt)
            self.prev = text[i + n - 1]
            i += n

    def _step(self, c: str, nxt: str) -> int:
        was_dollar, self.dollar = self.dollar, False
        if self.escaped:
            self.escaped = False
            return 1
        state = self.state
        if state == "<<":
            return 1
        if state == "#":
            if c == "\n":
                self.state = None
            return 1
        if state == "'":
            if c == "'":
                self.state = None
            return 1
        if state == "$'":
            if c == "\\":
                self.escaped = True
            elif c == "'":
                self.state = None
            return 1
        if c == "\\":
            self.escaped = True
            for entry in reversed(self.stack):
                if entry[0] == "`":  # the shell removes some backslashes before it reads the inner
                    entry[2] = True  # text: quoting there is not tracked (see quote())
                    break
            return 1
        if c == "`":
            if self.stack and self.stack[-1][0] == "`":
                self.state = self.stack.pop()[1]
            else:
                self.stack.append(["`", state, False])
                self.state = None
            return 1
        if c == "$" and nxt == "(":
            self.stack.append(("$(", state, self.depth))
            self.state, self.depth = None, 0
            return 2
        if state == '"':
            if c == '"':
                self.state = None
            return 1
        return self._unquoted(c, nxt, was_dollar)

    def _unquoted(self, c: str, nxt: str, was_dollar: bool) -> int:
        if c == "$":
            self.dollar = True
        elif c == "'" and was_dollar:
            self.state = "$'"
        elif c in "'\"":
            self.state = c
        elif c == "#" and (self.prev == "" or self.prev in _WORD_BREAK):
            self.state = "#"
        elif c == "<" and nxt == "<":
            self.state = "<<"  # a here-document (or a here-string: refused too, to stay simple)
            return 2
        elif c == "(":
            self.depth += 1
        elif c == ")":
            if self.depth:
                self.depth -= 1
            elif self.stack and self.stack[-1][0] == "$(":
                _, self.state, self.depth = self.stack.pop()
        return 1

    def quote(self, value: str, field: str) -> str:
        """``value`` written so that the current context reads it as exactly that text (inside
        backticks, escaped once more per level: the shell finds the closing backtick first)."""
        if any(entry[0] == "`" and entry[2] for entry in self.stack):
            raise ShellSubstitutionError(f"cannot substitute {{{field}}} inside backticks that hold a backslash "
                                         "escape (write $(...) instead)")
        text = self._quote(value, field)
        for _ in range(sum(1 for entry in self.stack if entry[0] == "`")):
            text = "".join("\\" + c if c in "\\`$" else c for c in text)
        return text

    def _quote(self, value: str, field: str) -> str:
        if self.state == "<<":
            raise ShellSubstitutionError(f"cannot substitute {{{field}}} into a shell here-document safely")
        if self.escaped and self.state != "#":
            raise ShellSubstitutionError(f"cannot substitute {{{field}}} right after a backslash in a shell script")
        self.prev = "a"  # the value is (part of) a word
        if self.state == "#":
            return "".join(c if c.isprintable() else repr(c)[1:-1] for c in value)
        if self.state == "'":
            return "'" + shlex.quote(value) + "'"
        if self.state == "$'":
            return "".join(c if c.isalnum() or c in " ,.-_/:=+@%^" else f"\\U{ord(c):08x}" for c in value)
        if self.state == '"':
            return "".join("\\" + c if c in '\\"$`' else c for c in value)
        return shlex.quote(value)


def substitute_script(script: str, subst: Callable[[str], Any]) -> str:
    """Substitute every ``{}`` field of a shell ``script``, each value quoted for its context.

    :param subst: substitutes a template text (called with one field at a time, ``"{recipe.x:>4}"``).
    :raises ShellSubstitutionError: a field inside a here-document.
    """
    if "{" not in script:
        return subst(script)
    out: list = []
    scanner = _Scanner()
    for literal, field, spec, conversion in string.Formatter().parse(script):
        out.append(literal)
        scanner.feed(literal)
        if field is None:
            continue
        template = "{" + field + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
        out.append(scanner.quote(str(subst(template)), field))
    return "".join(out)


def substitute_command(command: str, args: Sequence[Any], subst: Callable[[str], Any]) -> tuple[str, list]:
    """``(command, args)`` of a binary cab with ``{}`` substituted: a shell's script word quoted
    field by field (:func:`substitute_script`), everything else as Stimela does it (``command``
    substituted as text, then split into words by the caller)."""
    def plain(text: Any) -> Any:
        return subst(text) if isinstance(text, str) and "{" in text else text

    has_field = "{" in command or any(isinstance(a, str) and "{" in a for a in args)
    try:
        words = shlex.split(command) if has_field else []
    except ValueError:
        words = []
    at = script_index(words + [str(a) for a in args]) if words else None
    if at is None:
        return plain(command), [plain(a) for a in args]
    # the script word is substituted only field by field (never as a whole: a value could not be
    # looked up, or be substituted unquoted, in a text that is thrown away)
    if at < len(words):
        out = [substitute_script(w, subst) if i == at else plain(w) for i, w in enumerate(words)]
        return shlex.join(out), [plain(a) for a in args]
    at -= len(words)
    return plain(command), [substitute_script(str(a), subst) if i == at else plain(a) for i, a in enumerate(args)]


def substituted_cab(cab: Any, subst: Callable[[str], Any]) -> Any:
    """A copy of binary ``cab`` with ``command``/``args`` substituted (:func:`substitute_command`)."""
    command, args = substitute_command(cab.command, list(cab.args), subst)
    return dataclasses.replace(cab, command=command, args=args)


__all__ = ["SHELLS", "ShellSubstitutionError", "script_index", "substitute_script", "substitute_command",
           "substituted_cab"]
