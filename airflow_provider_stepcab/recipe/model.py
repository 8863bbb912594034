"""The in-memory model of cabs, recipes and steps.

These are plain dataclasses built by :mod:`.cab`, :mod:`.recipes` and
:mod:`.params` from the merged YAML tree; nothing here does I/O. Values that
are formulas (``=...``) or contain ``{}`` substitutions are kept as strings and
evaluated later (plan time or task run time) by :mod:`.formula`/:mod:`.subst`.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any, Optional

from .errors import UNKNOWN_LOC, Loc
from .records import record


class _Unset:
    """Sentinel: a parameter that has no value (distinct from ``None``)."""

    _instance: Optional["_Unset"] = None

    def __new__(cls) -> "_Unset":
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNSET"

    def __bool__(self) -> bool:
        return False

    def __reduce__(self):
        return (_Unset, ())


UNSET: Any = _Unset()

# Policy names as Stimela spells them; every field defaults to None = "not set here".
POLICY_FIELDS = (
    "key_value", "positional", "positional_head", "repeat", "prefix", "skip", "skip_implicits",
    "disable_substitutions", "explicit_true", "explicit_false", "split", "replace", "format",
    "format_list", "format_list_scalar", "pass_missing_as_none",
)


@record
class Policies:
    """Command-line policies (parameter level overrides cab level overrides defaults)."""

    key_value: Optional[bool] = None
    positional: Optional[bool] = None
    positional_head: Optional[bool] = None
    repeat: Optional[str] = None
    prefix: Optional[str] = None
    skip: Optional[bool] = None
    skip_implicits: Optional[bool] = None
    disable_substitutions: Optional[bool] = None
    explicit_true: Optional[str] = None
    explicit_false: Optional[str] = None
    split: Optional[str] = None
    replace: Optional[dict] = None
    format: Optional[str] = None
    format_list: Optional[list] = None
    format_list_scalar: Optional[list] = None
    pass_missing_as_none: Optional[bool] = None

    def merged_over(self, base: "Policies") -> "Policies":
        """Return a copy where every unset field falls back to ``base``."""
        return Policies(**{f: (getattr(self, f) if getattr(self, f) is not None else getattr(base, f))
                           for f in POLICY_FIELDS})


@record
class PathPolicies:
    """How a File/Directory parameter's path is checked and prepared (``path_policies``)."""
    mkdir_parent: Optional[bool] = None
    access_parent: Optional[bool] = None
    write_parent: Optional[bool] = None
    remove_if_exists: Optional[bool] = None


@record
class Parameter:
    """One input or output of a cab or recipe.

    ``dtype`` is the parsed type (:class:`.dtypes.DType`); ``dtype_str`` the text as written.
    ``default``/``implicit`` are :data:`UNSET` when absent.
    """

    name: str
    dtype_str: str = "str"
    dtype: Any = None
    info: str = ""
    required: bool = False
    default: Any = UNSET
    implicit: Any = UNSET
    choices: Optional[list] = None
    element_choices: Optional[list] = None
    writable: bool = False
    must_exist: Optional[bool] = None
    mkdir: bool = False
    path_policies: PathPolicies = field(default_factory=PathPolicies)
    skip_freshness_checks: Optional[bool] = None
    nom_de_guerre: Optional[str] = None
    policies: Policies = field(default_factory=Policies)
    aliases: list = field(default_factory=list)
    tags: list = field(default_factory=list)
    category: Optional[str] = None
    metavar: Optional[str] = None
    abbreviation: Optional[str] = None
    metadata: dict = field(default_factory=dict)
    suppress_cli_default: bool = False
    is_output: bool = False
    given_fields: frozenset = frozenset()  # schema fields written explicitly (for alias merging)
    loc: Loc = UNKNOWN_LOC

    @property
    def is_named_output(self) -> bool:
        """An output that is a file type and not implicit: passed on the command line."""
        return bool(self.is_output and self.dtype is not None and self.dtype.is_file
                    and (self.implicit is UNSET or not self.implicit))


@record
class Flavour:
    """How a cab's command is run: ``binary``, ``python``, ``python-code`` or ``casa-task``."""

    kind: str = "binary"
    options: dict = field(default_factory=dict)


@record
class ImageSpec:
    """A container image reference as written in a cab (string or mapping form)."""

    registry: Optional[str] = None
    name: Optional[str] = None
    version: Optional[str] = None
    path: Optional[str] = None


@record
class Management:
    """A cab's ``management`` section: environment, cleanup and wranglers."""
    environment: dict = field(default_factory=dict)
    cleanup: dict = field(default_factory=dict)
    wranglers: dict = field(default_factory=dict)


@record
class Cab:
    """A tool: its command, flavour, image, typed inputs/outputs and command-line policies."""
    name: str
    command: str
    info: str = ""
    args: list = field(default_factory=list)
    flavour: Flavour = field(default_factory=Flavour)
    image: Optional[ImageSpec] = None
    inputs: dict = field(default_factory=dict)      # name -> Parameter, schema order
    outputs: dict = field(default_factory=dict)     # name -> Parameter, schema order
    defaults: dict = field(default_factory=dict)
    policies: Policies = field(default_factory=Policies)
    backend: dict = field(default_factory=dict)
    parameter_passing: str = "args"
    management: Management = field(default_factory=Management)
    dynamic_schema: Optional[str] = None
    preamble: dict = field(default_factory=dict)
    epilogue: dict = field(default_factory=dict)
    extra_info: dict = field(default_factory=dict)
    loc: Loc = UNKNOWN_LOC

    @property
    def schema(self) -> dict:
        """Inputs then outputs, in schema order (the order the command line walks)."""
        return {**self.inputs, **self.outputs}


@record
class ForLoop:
    """A recipe's ``for_loop``: the loop variable, what it runs over and ``scatter``."""
    var: str
    over: Any  # a literal list or the name of an input
    scatter: int = 0
    display_status: Optional[str] = None
    output_elements: dict = field(default_factory=dict)
    loc: Loc = UNKNOWN_LOC


@record
class Step:
    """One step of a recipe: a cab or a nested recipe, its params and run conditions."""
    label: str
    cab: Optional[Cab] = None
    recipe: Optional["Recipe"] = None
    cab_name: Optional[str] = None      # as referenced (for display / dataflow)
    recipe_name: Optional[str] = None
    params: dict = field(default_factory=dict)
    param_locs: dict = field(default_factory=dict)  # param name -> Loc
    info: str = ""
    tags: list = field(default_factory=list)
    skip: Any = False
    skip_if_outputs: Optional[str] = None
    backend: dict = field(default_factory=dict)
    assign: dict = field(default_factory=dict)
    assign_based_on: dict = field(default_factory=dict)
    preamble: dict = field(default_factory=dict)
    epilogue: dict = field(default_factory=dict)
    loc: Loc = UNKNOWN_LOC

    @property
    def cargo(self) -> Any:
        return self.cab if self.cab is not None else self.recipe


@record
class Recipe:
    """A recipe: inputs/outputs, ordered steps, aliases, assignments and an optional loop."""
    name: str
    info: str = ""
    inputs: dict = field(default_factory=dict)
    outputs: dict = field(default_factory=dict)
    defaults: dict = field(default_factory=dict)
    steps: dict = field(default_factory=dict)       # label -> Step, in execution order
    assign: dict = field(default_factory=dict)
    assign_based_on: dict = field(default_factory=dict)
    aliases: dict = field(default_factory=dict)     # recipe param -> list of "step.param" targets
    backend: dict = field(default_factory=dict)
    for_loop: Optional[ForLoop] = None
    dynamic_schema: Optional[str] = None
    extra_info: dict = field(default_factory=dict)
    loc: Loc = UNKNOWN_LOC

    @property
    def schema(self) -> dict:
        return {**self.inputs, **self.outputs}
