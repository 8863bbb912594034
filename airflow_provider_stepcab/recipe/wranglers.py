"""Output wranglers: regex-triggered actions applied to each line a cab prints.

A cab's ``management.wranglers`` maps a regular expression to one action (a
string) or a list of actions. For every output line, each pattern is searched
in turn (``re.search``) on the current text of the line; when it matches, its
actions run in order. The actions, with Stimela 2.1.4 semantics:

``REPLACE:x``
    ``pattern.sub(x, text)`` (``\\1``/``\\g<name>`` references allowed).
``HIGHLIGHT:style``
    Display hint only: the text is unchanged, :attr:`LineResult.style` is set.
``SEVERITY:LVL``
    ``LVL`` is one of ``DEBUG INFO WARNING ERROR CRITICAL FATAL``. The line's
    level becomes ``max(level, LVL)``: like Stimela, a severity can only be raised.
``SUPPRESS``
    The line is not displayed (its side effects still happen).
``WARNING:msg``
    ``msg`` is recorded as a warning (literally) and the line shows at WARNING.
``ERROR[:msg]``
    The step is marked failed even when it exits with 0; ``msg`` may use
    ``{group}`` names of the pattern. The line shows at ERROR.
``DECLARE_SUCCESS``
    The step counts as successful even with a non-zero exit code (unless an
    ``ERROR`` action fired at any point).
``PARSE_OUTPUT:[name:]group:type``
    Output ``name`` (default: the group name) is the ()-group ``group`` (a
    name or a number) converted with ``type``: ``str int float bool complex``
    (Python constructors, so ``bool("False")`` is ``True``), ``json``/``JSON``
    or ``yaml``/``YAML``. A conversion failure marks the step failed and keeps
    the raw string.
``PARSE_JSON_OUTPUTS``
    Every named group that matched is ``json.loads``-ed into the output of that name.
``PARSE_JSON_OUTPUT_DICT``
    Group 1 is a JSON object whose items become outputs.

Python flavours add a built-in wrangler for lines starting with
:data:`CAB_OUTPUT_PREFIX` (see :meth:`Wranglers.for_cab`). This module is
pure: no I/O, no Airflow.
"""

from __future__ import annotations

import abc
import json
import logging
import re
from dataclasses import field
from typing import Any, Iterable, Optional

import yaml

from .errors import UNKNOWN_LOC, Loc, Problems
from .records import record
from .yamlio import loc_of

#: What Python flavours print in front of the JSON of their outputs.
CAB_OUTPUT_PREFIX = "### YIELDING CAB OUTPUT ## "

#: The error pattern the ``casa-task`` flavour always adds (``MeasTable::dUTC`` noise excluded).
CASA_ERROR_PATTERN = (
    r"(?P<content>(\tSEVERE\s+(?!([a-z]+::)?MeasTable::dUTC)|ABORTING|\*\*\* Error \*\*\*)(.*))$"
)

LEVELS = {"DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARNING": logging.WARNING,
          "ERROR": logging.ERROR, "CRITICAL": logging.CRITICAL, "FATAL": logging.FATAL}

_LOADERS = {"str": str, "bool": bool, "int": int, "float": float, "complex": complex,
            "json": json.loads, "JSON": json.loads, "yaml": yaml.safe_load, "YAML": yaml.safe_load}


@record
class LineResult:
    """What the wranglers made of one line.

    :param text: the line to display, or ``None`` when suppressed.
    :param level: a :mod:`logging` level (INFO unless raised by an action).
    :param errors: failure messages (``ERROR`` actions, unparsable outputs).
    :param warnings: ``WARNING:msg`` messages.
    :param declare_success: a ``DECLARE_SUCCESS`` action fired.
    :param outputs: outputs parsed from this line.
    :param style: display hint (``HIGHLIGHT`` style, ``bold red`` for errors ...).
    """

    text: Optional[str]
    level: int = logging.INFO
    errors: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    declare_success: bool = False
    outputs: dict = field(default_factory=dict)
    style: Optional[str] = None


class Action(abc.ABC):
    """One wrangler action bound to its pattern. Subclasses implement :meth:`apply`."""

    def __init__(self, regex: re.Pattern, spec: str):
        self.regex, self.spec = regex, spec

    @abc.abstractmethod
    def apply(self, text: str, match: re.Match, res: LineResult) -> Optional[str]:
        """Update ``res``; return the new text, or ``None`` to suppress the line."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.regex.pattern!r}, {self.spec!r})"


class Replace(Action):
    def __init__(self, regex, spec, arg):
        super().__init__(regex, spec)
        self.replacement = arg
        regex.sub(arg, "")  # compiles the template: bad group references fail now

    def apply(self, text, match, res):
        return self.regex.sub(self.replacement, text)


class Highlight(Action):
    def __init__(self, regex, spec, arg):
        super().__init__(regex, spec)
        self.style = arg

    def apply(self, text, match, res):
        res.style = self.style
        return text


class Severity(Action):
    def __init__(self, regex, spec, arg):
        super().__init__(regex, spec)
        self.level = LEVELS[arg]

    def apply(self, text, match, res):
        res.level = max(res.level, self.level)
        return text


class Suppress(Action):
    def apply(self, text, match, res):
        return None


class DeclareWarning(Action):
    def __init__(self, regex, spec, arg):
        super().__init__(regex, spec)
        self.message = arg

    def apply(self, text, match, res):
        res.warnings.append(self.message)
        res.level = max(res.level, logging.WARNING)
        return text


class DeclareError(Action):
    def __init__(self, regex, spec, arg=None):
        super().__init__(regex, spec)
        self.message = arg

    def apply(self, text, match, res):
        if self.message:
            try:
                message = self.message.format(**match.groupdict())
            except (KeyError, IndexError, ValueError):
                message = self.message
        else:
            message = f"cab marked as failed based on encountering '{self.regex.pattern}' in output"
        res.errors.append(message)
        res.level = max(res.level, logging.ERROR)
        res.style = "bold red"
        return text


class DeclareSuccess(Action):
    def apply(self, text, match, res):
        res.declare_success = True
        res.style = "bold green"
        return text


class ParseOutput(Action):
    def __init__(self, regex, spec, name, group, dtype):
        super().__init__(regex, spec)
        self.loader = _LOADERS[dtype]
        self.name = name or group
        if group in regex.groupindex:
            self.group: Any = group
        elif re.fullmatch(r"\d+", group) and int(group) <= regex.groups:
            self.group = int(group)
        else:
            raise ValueError(f"{group} is not a valid ()-group")

    def apply(self, text, match, res):
        value = match[self.group]
        try:
            value = self.loader(value)
        except Exception as exc:
            res.errors.append(f'error parsing string "{value}" for output \'{self.name}\': {exc}')
        res.outputs[self.name] = value
        return text


class ParseJSONOutputs(Action):
    def __init__(self, regex, spec):
        super().__init__(regex, spec)
        if not regex.groupindex:
            raise ValueError("no named ()-groups")

    def apply(self, text, match, res):
        for name, value in match.groupdict().items():
            if value is not None:
                try:
                    res.outputs[name] = json.loads(value)
                except Exception as exc:
                    res.errors.append(f'error parsing string "{value}" for output \'{name}\': {exc}')
        return text


class ParseJSONOutputDict(Action):
    def __init__(self, regex, spec):
        super().__init__(regex, spec)
        if regex.groups < 1:
            raise ValueError("no ()-groups")

    def apply(self, text, match, res):
        try:
            outputs = json.loads(match.group(1))
            if not isinstance(outputs, dict):
                raise ValueError("not a JSON object")
        except Exception as exc:
            res.errors.append(f'error parsing output dict from "{match.group(1)}": {exc}')
        else:
            res.outputs.update(outputs)
        return text


# Tried in this order with re.fullmatch, like Stimela; the first match wins.
_SPECIFIERS: list = [
    (re.compile(r"REPLACE:(?P<arg>.*)"), Replace),
    (re.compile(r"HIGHLIGHT:(?P<arg>.*)"), Highlight),
    (re.compile(r"SEVERITY:(?P<arg>ERROR|WARNING|INFO|DEBUG|CRITICAL|FATAL)"), Severity),
    (re.compile(r"SUPPRESS"), Suppress),
    (re.compile(r"WARNING:(?P<arg>.*)"), DeclareWarning),
    (re.compile(r"ERROR(?::(?P<arg>.*))?"), DeclareError),
    (re.compile(r"DECLARE_SUCCESS"), DeclareSuccess),
    (re.compile(r"PARSE_OUTPUT:((?P<name>.*):)?(?P<group>.*):(?P<dtype>%s)" % "|".join(_LOADERS)),
     ParseOutput),
    (re.compile(r"PARSE_JSON_OUTPUTS"), ParseJSONOutputs),
    (re.compile(r"PARSE_JSON_OUTPUT_DICT"), ParseJSONOutputDict),
]


def make_action(regex: re.Pattern, spec: str) -> Action:
    """Build one action from its specifier; raises :class:`ValueError` with a readable message."""
    if not isinstance(spec, str):
        raise ValueError(f"'{regex.pattern}': {spec!r} is not a valid wrangler specifier (not a string)")
    for specifier, cls in _SPECIFIERS:
        m = specifier.fullmatch(spec)
        if m:
            try:
                return cls(regex, spec, **m.groupdict())
            except (ValueError, re.error) as exc:
                raise ValueError(f"wrangler action '{spec}' for '{regex.pattern}': {exc}") from None
    raise ValueError(f"'{regex.pattern}': '{spec}' is not a valid wrangler specifier")


class Wranglers:
    """An ordered list of ``(compiled pattern, [actions])`` entries."""

    def __init__(self, entries: Iterable = ()):
        self.entries: list = list(entries)

    def __bool__(self) -> bool:
        return bool(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def __add__(self, other: "Wranglers") -> "Wranglers":
        return Wranglers(self.entries + other.entries)

    @classmethod
    def from_spec(cls, spec: Optional[dict], *, loc: Optional[Loc] = None,
                  problems: Optional[Problems] = None, key_path: str = "management.wranglers") -> "Wranglers":
        """Compile ``management.wranglers``.

        Bad regexes, bad actions and non-list entries are reported to ``problems``
        (and the offending entry/action skipped); without ``problems`` a
        :class:`~.errors.RecipeError` is raised listing all of them.
        """
        own = problems is None
        problems = Problems() if own else problems
        entries = []
        if spec is None:
            spec = {}
        if not isinstance(spec, dict):
            problems.error(loc or UNKNOWN_LOC, key_path, "expected a mapping of regex to actions",
                           code="bad-wrangler")
            spec = {}
        for pattern, actions in spec.items():
            where = _loc(spec, pattern, loc)
            key = f"{key_path}.{pattern}"
            try:
                regex = re.compile(pattern)
            except (re.error, TypeError) as exc:
                problems.error(where, key, f"wrangler pattern '{pattern}' is not a valid regular expression: {exc}",
                               code="bad-wrangler")
                continue
            if isinstance(actions, str):
                actions = [actions]
            if not isinstance(actions, (list, tuple)):
                problems.error(where, key, f"wrangler entry '{pattern}': expected list of wranglers",
                               code="bad-wrangler")
                continue
            compiled = []
            for i, action in enumerate(actions):
                try:
                    compiled.append(make_action(regex, action))
                except ValueError as exc:
                    problems.error(_loc(actions, i, where), key, str(exc), code="bad-wrangler")
            entries.append((regex, compiled))
        if own:
            problems.raise_if_errors()
        return cls(entries)

    @classmethod
    def for_cab(cls, cab: Any, *, verbose: bool = False, problems: Optional[Problems] = None) -> "Wranglers":
        """The cab's ``management.wranglers`` followed by its flavour's built-in ones.

        ``python`` with ``output``/``output_dict`` and ``python-code`` parse
        :data:`CAB_OUTPUT_PREFIX` lines into outputs (and suppress them unless
        ``verbose``, like ``stimela -v``); ``casa-task`` fails on CASA errors.
        """
        mgmt = getattr(cab, "management", None)
        spec = getattr(mgmt, "wranglers", None) or {}
        result = cls.from_spec(spec, loc=getattr(cab, "loc", None), problems=problems,
                               key_path=f"cabs.{cab.name}.management.wranglers")
        return result + flavour_wranglers(cab.flavour, verbose=verbose)

    def process(self, line: str, level: int = logging.INFO) -> LineResult:
        """Apply every matching entry to one line (without its newline)."""
        res = LineResult(line, level)
        text = line
        suppress = False
        for regex, actions in self.entries:
            match = regex.search(text)
            if match is None:
                continue
            for action in actions:
                new = action.apply(text, match, res)
                if new is None:
                    suppress = True
                else:
                    text = new
        res.text = None if suppress else text
        return res


def flavour_wranglers(flavour: Any, *, verbose: bool = False) -> Wranglers:
    """Built-in wranglers a flavour adds after the cab's own (Stimela's ``finalize``)."""
    kind = getattr(flavour, "kind", flavour) or "binary"
    options = getattr(flavour, "options", None) or {}
    prefix = re.compile(re.escape(CAB_OUTPUT_PREFIX) + "(.*)")
    actions: list = []
    if kind == "python":
        output = options.get("output")
        if options.get("output_dict"):
            actions = [ParseJSONOutputDict(prefix, "PARSE_JSON")]
        elif output is not None:
            actions = [ParseOutput(prefix, "PARSE_OUTPUT", output, "1", "json")]
    elif kind == "python-code":
        actions = [ParseJSONOutputDict(prefix, "PARSE_JSON")]
    elif kind == "casa-task":
        casa = re.compile(CASA_ERROR_PATTERN)
        return Wranglers([(casa, [DeclareError(casa, "ERROR", "CASA error: {content}")])])
    if not actions:
        return Wranglers()
    if not verbose:
        actions.append(Suppress(prefix, "SUPPRESS"))
    return Wranglers([(prefix, actions)])


class WranglerState:
    """Runs lines through :class:`Wranglers` and accumulates the step's verdict.

    Like Stimela's runtime status: outputs merge (later lines win), any error
    means failure, and ``DECLARE_SUCCESS`` only counts when no error occurred.
    """

    def __init__(self, wranglers: Optional[Wranglers] = None):
        self.wranglers = wranglers or Wranglers()
        self.outputs: dict = {}
        self.errors: list = []
        self.warnings: list = []
        self._declared = False

    def process(self, line: str, level: int = logging.INFO) -> LineResult:
        res = self.wranglers.process(line, level)
        self.outputs.update(res.outputs)
        self.errors.extend(res.errors)
        self.warnings.extend(res.warnings)
        self._declared = self._declared or res.declare_success
        return res

    @property
    def failed(self) -> bool:
        """An ``ERROR`` action fired or an output could not be parsed."""
        return bool(self.errors)

    @property
    def declared_success(self) -> bool:
        """``DECLARE_SUCCESS`` fired and nothing declared failure."""
        return self._declared and not self.errors

    def success(self, exit_code: int) -> bool:
        """Stimela's verdict: exit 0 (or declared success) and no failure declared."""
        return not self.errors and (exit_code == 0 or self._declared)


def _loc(container: Any, key: Any, fallback: Optional[Loc]) -> Loc:
    loc = loc_of(container, key)
    return fallback if loc == UNKNOWN_LOC and fallback is not None else loc
