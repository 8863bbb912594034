"""Parser for Stimela formulas (the text after ``=``), written from scratch.

Grammar, loosest binding first (Stimela 2.1.4 precedence, which differs from
Python in places: ``and``/``or`` share one level, ``**`` and comparisons
associate to the left and do not chain)::

    expr     := notexpr (("and" | "or") notexpr)*          # case-insensitive keywords
    notexpr  := "not" notexpr | inexpr
    inexpr   := cmp (("in" | "not" "in") cmp)*
    cmp      := bor (("==" | "!=" | "<=" | ">=" | "<" | ">") bor)*
    bor      := bxor ("|" bxor)*;  bxor := band ("^" band)*;  band := shift ("&" shift)*
    shift    := sum (("<<" | ">>") sum)*
    sum      := term (("+" | "-") term)*
    term     := unary (("*" | "/" | "//" | "%") unary)*
    unary    := ("+" | "-" | "~") unary | power
    power    := postfix ("**" ("+" | "-" | "~")* postfix)*
    postfix  := atom ("[" expr "]")*
    atom     := NUMBER | STRING | True | true | False | false | UNSET | EMPTY
              | NAME ("." FIELD)+                          # a namespace lookup
              | FUNC "(" [arg ("," arg)*] ")" | "(" expr ")"
    arg      := expr | SELF

``NAME`` is ``[A-Za-z_][A-Za-z0-9_@*?-]*`` and ``FIELD`` may also start with
``*``/``?``: as in Stimela, ``recipe.a-1`` is the lookup of a field named
``a-1``, and ``recipe.n*2`` a glob lookup; write ``recipe.a - 1``. Strings are
quoted with ``"`` or ``'``, have no escapes except that ``\\t \\n \\f \\r`` become
whitespace. ``GLOB``, ``EXISTS``, ``ERROR`` and ``ABORT`` also accept unquoted text
(``GLOB(*.fits)``) up to the closing parenthesis.
"""

from __future__ import annotations

import functools
import re
from typing import Any, Optional, Union

from .errors import FormulaError
from .records import record

__all__ = [
    "FUNCTIONS", "RAW_ARG_FUNCTIONS", "FormulaSyntaxError", "Expr", "Const", "Str", "Unset",
    "Empty", "SelfRef", "Lookup", "Index", "Unary", "Binary", "Call", "parse",
]

FUNCTIONS = frozenset({
    "IF", "IFSET", "CASES", "ERROR", "ABORT", "LOG", "LOG_INFO", "LOG_WARNING", "LOG_ERROR",
    "LOG_CRITICAL", "LIST", "LEN", "RANGE", "VALID", "TRY", "MIN", "MAX", "GETITEM", "IS_STR",
    "IS_NUM", "GLOB", "EXISTS", "DIRNAME", "BASENAME", "EXTENSION", "STRIPEXT", "NOSUBST", "SORT",
    "RSORT",
})
RAW_ARG_FUNCTIONS = frozenset({"GLOB", "EXISTS", "ERROR", "ABORT"})


class FormulaSyntaxError(FormulaError):
    """A formula could not be parsed.

    :ivar column: 1-based column of the problem in :attr:`text`.
    :ivar text: the formula text as given.
    """

    def __init__(self, text: str, column: int, message: str):
        self.text, self.column, self.reason = text, column, message
        super().__init__(f"syntax error at column {column} in formula '{text}': {message}")


# ---------------------------------------------------------------- AST (immutable, hashable)

@record(frozen=True)
class Const:
    """A literal (number, boolean, ``None``)."""
    value: Any
    pos: int = 0


@record(frozen=True)
class Str:
    """A quoted string."""
    text: str
    pos: int = 0


@record(frozen=True)
class Unset:
    """``UNSET``: the value that removes a parameter."""
    pos: int = 0


@record(frozen=True)
class Empty:
    """``EMPTY``: the empty string."""
    pos: int = 0


@record(frozen=True)
class SelfRef:
    """``SELF``: the parameter's own current value."""
    pos: int = 0


@record(frozen=True)
class Lookup:
    """A dotted name such as ``recipe.ms`` or ``previous.out``."""
    parts: tuple
    pos: int = 0

    @property
    def name(self) -> str:
        return ".".join(self.parts)


@record(frozen=True)
class Index:
    """``base[index]``."""
    base: Any
    index: Any
    pos: int = 0


@record(frozen=True)
class Unary:
    """A unary operator (``not``, ``-``, ``+``) and its operand."""
    op: str
    operand: Any
    pos: int = 0


@record(frozen=True)
class Binary:
    """A binary operator and its operands."""
    op: str
    left: Any
    right: Any
    pos: int = 0


@record(frozen=True)
class Call:
    """A function call such as ``IFSET(x)``."""
    name: str
    args: tuple
    pos: int = 0


Expr = Union[Const, Str, Unset, Empty, SelfRef, Lookup, Index, Unary, Binary, Call]

# ---------------------------------------------------------------- lexer helpers

_WS = re.compile(r"\s*")
_NUMBER = re.compile(r"(?:\d+\.\d*|\.\d+)(?:[eE][+-]?\d+)?|\d+[eE][+-]?\d+|\d+")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_@*?\-]*")
_FIELD = re.compile(r"[A-Za-z_*?][A-Za-z0-9_@*?\-]*")
_CORE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OPS = ("**", "//", "<<", ">>", "==", "!=", "<=", ">=",
        "+", "-", "~", "*", "/", "%", "<", ">", "&", "^", "|", "(", ")", "[", "]", ",")
_LEVELS = (  # binary levels from loosest (after and/or, in, not) to tightest
    ("==", "!=", "<=", ">=", "<", ">"),
    ("|",), ("^",), ("&",), ("<<", ">>"), ("+", "-"), ("*", "/", "//", "%"),
)
_WS_ESCAPES = (("\\t", "\t"), ("\\n", "\n"), ("\\f", "\f"), ("\\r", "\r"))
_CONSTANTS = {"True": True, "true": True, "False": False, "false": False}


class _Parser:
    def __init__(self, text: str, offset: int):
        self.text, self.offset, self.pos = text, offset, 0

    # -- low level
    def error(self, message: str, pos: Optional[int] = None) -> FormulaSyntaxError:
        pos = self.pos if pos is None else pos
        return FormulaSyntaxError(self.text, pos + self.offset + 1, message)

    def skip(self) -> None:
        self.pos = _WS.match(self.src, self.pos).end()

    def peek_op(self) -> Optional[str]:
        self.skip()
        for op in _OPS:
            if self.src.startswith(op, self.pos):
                return op
        return None

    def take_op(self, *ops: str) -> Optional[str]:
        op = self.peek_op()
        if op in ops:
            self.pos += len(op)
            return op
        return None

    def peek_word(self) -> Optional[str]:
        """The next identifier-ish word (letters, digits, underscore), lower-cased."""
        self.skip()
        m = _CORE.match(self.src, self.pos)
        return m.group().lower() if m else None

    def take_word(self, word: str) -> bool:
        if self.peek_word() == word:
            self.pos += len(word)
            return True
        return False

    def found(self) -> str:
        self.skip()
        return repr(self.src[self.pos:self.pos + 12]) if self.pos < len(self.src) else "end of formula"

    def expect(self, op: str, what: str) -> None:
        if self.take_op(op) is None:
            raise self.error(f"expected {what}, found {self.found()}")

    # -- grammar
    def parse(self) -> Expr:
        self.src = self.text[self.offset:]
        node = self.expr()
        self.skip()
        if self.pos < len(self.src):
            raise self.error(f"unexpected {self.found()} (expected an operator or end of formula)")
        return node

    def expr(self) -> Expr:
        node = self.notexpr()
        while True:
            pos = self.pos
            word = self.peek_word()
            if word not in ("and", "or"):
                return node
            self.pos += len(word)
            node = Binary(word, node, self.notexpr(), pos)

    def notexpr(self) -> Expr:
        pos = self.pos
        if self.peek_word() == "not":
            save = self.pos
            self.pos += 3
            if self.peek_word() == "in":  # "not in" where an operand is expected
                self.pos = save
                raise self.error("expected an operand before 'not in'")
            return Unary("not", self.notexpr(), pos)
        return self.inexpr()

    def inexpr(self) -> Expr:
        node = self.binary(0)
        while True:
            pos = self.pos
            save = self.pos
            if self.take_word("in"):
                op = "in"
            elif self.take_word("not") and self.take_word("in"):
                op = "not in"
            else:
                self.pos = save
                return node
            node = Binary(op, node, self.binary(0), pos)

    def binary(self, level: int) -> Expr:
        if level == len(_LEVELS):
            return self.unary()
        node = self.binary(level + 1)
        while True:
            op = self.peek_op()
            if op not in _LEVELS[level]:
                return node
            pos = self.pos
            self.pos += len(op)
            node = Binary(op, node, self.binary(level + 1), pos)

    def unary(self) -> Expr:
        op = self.peek_op()
        if op in ("+", "-", "~"):
            pos = self.pos
            self.pos += 1
            return Unary(op, self.unary(), pos)
        return self.power()

    def power(self) -> Expr:
        node = self.postfix()
        while self.peek_op() == "**":
            pos = self.pos
            self.pos += 2
            node = Binary("**", node, self.power_operand(), pos)
        return node

    def power_operand(self) -> Expr:
        op = self.peek_op()
        if op in ("+", "-", "~"):
            pos = self.pos
            self.pos += 1
            return Unary(op, self.power_operand(), pos)
        return self.postfix()

    def postfix(self) -> Expr:
        node = self.atom()
        while self.peek_op() == "[":
            pos = self.pos
            self.pos += 1
            index = self.expr()
            self.expect("]", "']'")
            node = Index(node, index, pos)
        return node

    def atom(self) -> Expr:
        self.skip()
        pos, src = self.pos, self.src
        if pos >= len(src):
            raise self.error("unexpected end of formula (expected a value)")
        ch = src[pos]
        if ch in "\"'":
            end = src.find(ch, pos + 1)
            newline = src.find("\n", pos + 1)
            if end < 0 or 0 <= newline < end:
                raise self.error(f"unterminated string starting with {ch}")
            text = src[pos + 1:end]
            for esc, ws in _WS_ESCAPES:
                text = text.replace(esc, ws)
            self.pos = end + 1
            return Str(text, pos)
        m = _NUMBER.match(src, pos)
        if m:
            self.pos = m.end()
            num = m.group()
            return Const(float(num) if any(c in num for c in ".eE") else int(num), pos)
        if self.take_op("("):
            node = self.expr()
            self.expect(")", "')'")
            return node
        m = _NAME.match(src, pos)
        if not m:
            hint = " ({}-substitutions go inside a quoted string: \"{x.y}\")" if ch == "{" else ""
            raise self.error(f"expected a value, found {self.found()}{hint}")
        return self.name_atom(m.group(), pos)

    def name_atom(self, name: str, pos: int) -> Expr:
        after = _WS.match(self.src, pos + len(name)).end()
        if self.src.startswith(".", after):
            return self.lookup(name, pos)
        core = _CORE.match(self.src, pos).group()
        self.pos = pos + len(core)
        if core in _CONSTANTS:
            return Const(_CONSTANTS[core], pos)
        if core == "UNSET":
            return Unset(pos)
        if core == "EMPTY":
            return Empty(pos)
        if core == "SELF":
            raise self.error("SELF can only be used as a function argument", pos)
        if self.peek_op() == "(":
            if core not in FUNCTIONS:
                raise self.error(f"unknown function '{core}'", pos)
            self.pos += 1
            return self.call(core, pos)
        if core in FUNCTIONS:
            raise self.error(f"function {core} must be called with '(...)'", pos)
        if core.lower() in ("and", "or", "not", "in"):
            raise self.error(f"expected a value, found keyword '{core}'", pos)
        raise self.error(f"bare name '{name}': a lookup needs a namespace, e.g. 'recipe.{name}'", pos)

    def lookup(self, first: str, pos: int) -> Expr:
        parts = [first]
        self.pos = pos + len(first)
        while self.take_op_dot():
            self.skip()
            m = _FIELD.match(self.src, self.pos)
            if not m:
                raise self.error(f"expected a field name after '.', found {self.found()}")
            parts.append(m.group())
            self.pos = m.end()
        return Lookup(tuple(parts), pos)

    def take_op_dot(self) -> bool:
        self.skip()
        if self.src.startswith(".", self.pos):
            self.pos += 1
            return True
        return False

    def call(self, name: str, pos: int) -> Expr:
        if name in RAW_ARG_FUNCTIONS:
            return Call(name, (self.raw_arg(name),), pos)
        args = []
        if self.take_op(")"):
            return Call(name, (), pos)
        while True:
            args.append(self.arg())
            if self.take_op(")"):
                return Call(name, tuple(args), pos)
            self.expect(",", f"',' or ')' in arguments of {name}()")

    def arg(self) -> Expr:
        self.skip()
        m = _CORE.match(self.src, self.pos)
        if m and m.group() == "SELF":
            after = _WS.match(self.src, m.end()).end()
            if after >= len(self.src) or self.src[after] in ",)":
                self.pos = m.end()
                return SelfRef(m.start())
        return self.expr()

    def raw_arg(self, name: str) -> Expr:
        """One argument: an expression, else unquoted text up to ``,``/``)`` (Stimela's quirk)."""
        self.skip()
        start = self.pos
        try:
            node = self.expr()
            if self.take_op(")"):
                return node
        except FormulaSyntaxError:
            pass
        self.pos = start
        end = start
        while end < len(self.src) and self.src[end] not in ",)":
            end += 1
        if end == start:
            raise self.error(f"{name}() expects one argument")
        if end >= len(self.src) or self.src[end] != ")":
            raise self.error(f"{name}() expects one argument, then ')'", end)
        self.pos = end + 1
        return Str(self.src[start:end], start)


@functools.lru_cache(maxsize=4096)
def parse(text: str) -> Expr:
    """Parse a formula. A single leading ``=`` is skipped (columns still count it).

    :raises FormulaSyntaxError: with the 1-based column and the text.
    """
    if not isinstance(text, str):
        raise FormulaError(f"a formula must be a string, not {type(text).__name__}")
    offset = 1 if text.startswith("=") else 0
    try:
        return _Parser(text, offset).parse()
    except RecursionError:
        raise FormulaSyntaxError(text, 1, "formula nested too deeply") from None
