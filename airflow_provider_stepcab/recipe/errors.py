"""Problems found while loading or validating recipes.

Every problem names where it comes from (file and line) and the dotted key
path inside the document, so that a user can jump straight to the culprit.
Loading never stops at the first problem: callers collect :class:`Problem`
objects in a :class:`Problems` list and decide afterwards whether the result
is usable.
"""

from __future__ import annotations

from dataclasses import field
from typing import Iterable, Iterator, NamedTuple

from .records import record


class Loc(NamedTuple):
    """A position in a source file (``line`` is 1-based, 0 when unknown)."""

    file: str
    line: int = 0

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file


UNKNOWN_LOC = Loc("<unknown>", 0)

ERROR = "error"
WARNING = "warning"
#: not a problem with the file, but something the user must still do (e.g. give a value at run time)
NOTE = "note"


@record(frozen=True)
class Problem:
    """One error or warning about a recipe, cab or config file.

    :param loc: where the offending value is written.
    :param key: dotted key path inside the document (``recipe.steps.s1.params.x``).
    :param message: what is wrong, in words a user understands.
    :param severity: :data:`ERROR`, :data:`WARNING` or :data:`NOTE`.
    :param code: a short machine-readable kind (``missing-include``, ``unknown-param`` ...).
    """

    loc: Loc
    key: str
    message: str
    severity: str = ERROR
    code: str = ""

    def __str__(self) -> str:
        key = f" {self.key}:" if self.key else ""
        tag = "" if self.severity == ERROR else f" {self.severity}:"
        return f"{self.loc}:{key}{tag} {self.message}"

    @property
    def is_error(self) -> bool:
        return self.severity == ERROR


@record
class Problems:
    """An ordered, de-duplicated collection of :class:`Problem`."""

    items: list[Problem] = field(default_factory=list)

    def add(self, problem: Problem) -> None:
        if problem not in self.items:
            self.items.append(problem)

    def error(self, loc: Loc, key: str, message: str, code: str = "") -> None:
        self.add(Problem(loc, key, message, ERROR, code))

    def warning(self, loc: Loc, key: str, message: str, code: str = "") -> None:
        self.add(Problem(loc, key, message, WARNING, code))

    def note(self, loc: Loc, key: str, message: str, code: str = "") -> None:
        self.add(Problem(loc, key, message, NOTE, code))

    def extend(self, problems: Iterable[Problem]) -> None:
        for p in problems:
            self.add(p)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.items if p.is_error]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.items if p.severity == WARNING]

    @property
    def notes(self) -> list[Problem]:
        return [p for p in self.items if p.severity == NOTE]

    def __iter__(self) -> Iterator[Problem]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def __bool__(self) -> bool:
        return bool(self.items)

    def raise_if_errors(self) -> None:
        if self.errors:
            raise RecipeError(self.errors)


class RecipeError(Exception):
    """Raised when a recipe cannot be used; carries every error found."""

    def __init__(self, problems: Iterable[Problem] | Problem | str):
        if isinstance(problems, (Problem, str)):
            problems = [problems]  # type: ignore[list-item]
        self.problems: list[Problem] = [
            p if isinstance(p, Problem) else Problem(UNKNOWN_LOC, "", str(p)) for p in problems
        ]
        super().__init__("\n".join(str(p) for p in self.problems))


class FormulaError(Exception):
    """A formula or ``{}`` substitution could not be parsed or evaluated."""
