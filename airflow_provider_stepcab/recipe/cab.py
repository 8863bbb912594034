"""Cab definitions (``cabs.<name>`` in the merged config) → :class:`~.model.Cab`.

Mirrors Stimela 2.1.4's ``Cargo``/``Cab`` dataclasses: unknown keys, which Stimela
rejects, are warnings here (errors with ``strict``); the spelling ``flavor`` is
always an error, as in Stimela.  ``dynamic_schema`` hooks (``module.function``)
are imported lazily by :func:`apply_dynamic_schema`; :func:`build_cab` only checks
that the module can be found and warns if not.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import importlib
import importlib.util
import sys
import types
from typing import Any, Callable, Iterator, Optional

from .errors import Loc, Problems, RecipeError
from .model import Cab, Flavour, ImageSpec, Management, Parameter
from .params import PARAM_FIELDS, build_parameter, parse_policies, parse_schema
from .yamlio import loc_of, to_plain

CAB_FIELDS = (
    "name", "fqname", "info", "extra_info", "inputs", "outputs", "defaults", "backend", "dynamic_schema",
    "preamble", "epilogue", "image", "command", "args", "flavour", "parameter_passing", "management",
    "policies",
)
# options each flavour kind accepts (Stimela's flavour dataclasses)
_INTERP = ("interpreter_binary", "interpreter_command", "pre_commands", "post_commands")
FLAVOUR_OPTIONS = {
    "binary": (),
    "python": ("output_dict", "output") + _INTERP,
    "python-code": ("input_dict", "input_vars", "output_vars", "subst") + _INTERP,
    "casa-task": ("output_dict", "output", "path", "opts", "wrapper"),
}
IMAGE_FIELDS = ("name", "registry", "version", "path")


def _report(problems: Problems, strict: bool, loc: Loc, key: str, msg: str, code: str) -> None:
    (problems.error if strict else problems.warning)(loc, key, msg, code)


def parse_image(value: Any, loc: Loc, key_path: str, problems: Problems, strict: bool = False
                ) -> Optional[ImageSpec]:
    """``registry/name:version`` (version defaults to ``latest``) or a mapping."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        spec, version = value.rsplit(":", 1) if ":" in value else (value, "latest")
        registry, name = spec.rsplit("/", 1) if "/" in spec else (None, spec)
        return ImageSpec(registry=registry, name=name, version=version)
    if isinstance(value, dict):
        img = ImageSpec()
        for key, v in value.items():
            if key not in IMAGE_FIELDS:
                _report(problems, strict, loc_of(value, key), f"{key_path}.{key}",
                        f"unknown image field '{key}' (known: {', '.join(IMAGE_FIELDS)})", "unknown-field")
            elif v is not None:
                setattr(img, key, str(v))
        if not img.name:
            if not img.path:
                problems.error(loc, key_path, "image name or path must be specified", "bad-image")
                return None
            img.name = img.path.rstrip("/").rsplit("/", 1)[-1]
        return img
    problems.error(loc, key_path, f"invalid image setting {value!r}: a string or a mapping is expected",
                   "bad-image")
    return None


def parse_flavour(value: Any, loc: Loc, key_path: str, problems: Problems, strict: bool = False) -> Flavour:
    """A flavour name, or a mapping with ``kind`` and that kind's options."""
    if value is None:
        return Flavour()
    if isinstance(value, str):
        if value not in FLAVOUR_OPTIONS:
            problems.error(loc, key_path, f"unknown flavour '{value}' (one of {', '.join(FLAVOUR_OPTIONS)})",
                           "bad-flavour")
            return Flavour()
        return Flavour(kind=value)
    if not isinstance(value, dict):
        problems.error(loc, key_path, "flavour must be a string or a mapping", "bad-flavour")
        return Flavour()
    kind = value.get("kind")
    if kind is None:
        problems.error(loc, key_path, "flavour.kind not specified", "bad-flavour")
        return Flavour()
    if kind not in FLAVOUR_OPTIONS:
        problems.error(loc_of(value, "kind"), f"{key_path}.kind",
                       f"unknown flavour.kind '{kind}' (one of {', '.join(FLAVOUR_OPTIONS)})", "bad-flavour")
        return Flavour()
    options = {}
    for key, v in value.items():
        if key == "kind":
            continue
        if key not in FLAVOUR_OPTIONS[kind]:
            _report(problems, strict, loc_of(value, key), f"{key_path}.{key}",
                    f"unknown option '{key}' for flavour '{kind}'", "unknown-field")
        else:
            options[key] = to_plain(v)
    if options.get("output") and options.get("output_dict"):
        problems.error(loc, key_path, "can't specify both 'output_dict' and 'output'", "bad-flavour")
    return Flavour(kind=kind, options=options)


def _parse_management(value: Any, key_path: str, problems: Problems, strict: bool) -> Management:
    mgmt = Management()
    if value is None:
        return mgmt
    if not isinstance(value, dict):
        problems.error(loc_of(value), key_path, "management must be a mapping", "bad-field")
        return mgmt
    for key, v in value.items():
        if key not in ("environment", "cleanup", "wranglers"):
            _report(problems, strict, loc_of(value, key), f"{key_path}.{key}",
                    f"unknown management field '{key}' (known: environment, cleanup, wranglers)",
                    "unknown-field")
        elif v is not None and not isinstance(v, dict):
            problems.error(loc_of(value, key), f"{key_path}.{key}", f"management.{key} must be a mapping",
                           "bad-field")
        else:
            setattr(mgmt, key, v if v is not None else {})
    return mgmt


def flatten_defaults(defaults: dict, schema: dict, prefix: str = "") -> dict:
    """Flatten nested ``defaults`` mappings whose prefix names schema entries (``a: {b: 1}`` → ``a.b``)."""
    out: dict = {}
    for key, value in defaults.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and any(k.startswith(f"{name}.") for k in schema):
            out.update(flatten_defaults(value, schema, f"{name}."))
        else:
            out[name] = value
    return out


def build_cab(name: str, node: Any, key_path: str, problems: Problems, *, strict: bool = False) -> Cab:
    """Build a :class:`Cab` from its (merged) definition, recording problems with file:line."""
    loc = loc_of(node)
    if not isinstance(node, dict):
        problems.error(loc, key_path, f"cab definition must be a mapping, got {type(node).__name__}", "bad-cab")
        return Cab(name=name, command="", loc=loc)
    for key in node:
        if key == "flavor":
            problems.error(loc_of(node, key), f"{key_path}.flavor",
                           "'flavor' is not a cab field: spell it 'flavour'", "flavor-spelling")
        elif key not in CAB_FIELDS:
            _report(problems, strict, loc_of(node, key), f"{key_path}.{key}",
                    f"unknown cab field '{key}' (known: {', '.join(CAB_FIELDS)})", "unknown-field")
    command = node.get("command")
    if command is None or command == "":
        problems.error(loc, f"{key_path}.command", "cab has no 'command'", "missing-command")
        command = ""
    elif not isinstance(command, str):
        problems.error(loc_of(node, "command"), f"{key_path}.command", "'command' must be a string", "bad-field")
        command = str(command)
    cab = Cab(name=name, command=command, loc=loc)
    info = node.get("info")
    cab.info = "" if info is None else str(info)
    args = node.get("args")
    if args is not None:
        if isinstance(args, str) or not isinstance(args, list):
            problems.error(loc_of(node, "args"), f"{key_path}.args", "'args' must be a list of strings", "bad-field")
        else:
            cab.args = [str(a) for a in args]
    cab.flavour = parse_flavour(node.get("flavour"), loc_of(node, "flavour"), f"{key_path}.flavour",
                                problems, strict)
    cab.image = parse_image(node.get("image"), loc_of(node, "image"), f"{key_path}.image", problems, strict)
    cab.inputs = parse_schema(node.get("inputs"), f"{key_path}.inputs", problems, strict=strict)
    cab.outputs = parse_schema(node.get("outputs"), f"{key_path}.outputs", problems, is_output=True, strict=strict)
    for pname in cab.inputs:
        if pname in cab.outputs:
            problems.error(cab.outputs[pname].loc, f"{key_path}.outputs.{pname}",
                           f"parameter '{pname}' appears in both inputs and outputs", "duplicate-param")
    for section in ("defaults", "backend", "extra_info", "preamble", "epilogue"):
        value = node.get(section)
        if value is None:
            continue
        if not isinstance(value, dict):
            problems.error(loc_of(node, section), f"{key_path}.{section}", f"'{section}' must be a mapping",
                           "bad-field")
            continue
        setattr(cab, section, value)
    cab.defaults = flatten_defaults(cab.defaults, cab.schema)
    for section in ("preamble", "epilogue"):
        for key, value in getattr(cab, section).items():
            if not isinstance(value, list):
                problems.error(loc_of(getattr(cab, section), key), f"{key_path}.{section}.{key}",
                               f"{section}.{key} must be a list of expressions", "bad-field")
    cab.policies = parse_policies(node.get("policies"), f"{key_path}.policies", problems, strict=strict)
    passing = node.get("parameter_passing")
    if passing is not None:
        if passing not in ("args", "yaml"):
            problems.error(loc_of(node, "parameter_passing"), f"{key_path}.parameter_passing",
                           f"parameter_passing must be 'args' or 'yaml', got {passing!r}", "bad-field")
        else:
            cab.parameter_passing = passing
    cab.management = _parse_management(node.get("management"), f"{key_path}.management", problems, strict)
    dyn = node.get("dynamic_schema")
    if dyn is not None:
        dloc = loc_of(node, "dynamic_schema")
        if not isinstance(dyn, str) or "." not in dyn:
            problems.error(dloc, f"{key_path}.dynamic_schema", f"{dyn!r}: 'module_name.function_name' expected",
                           "bad-dynamic-schema")
        else:
            cab.dynamic_schema = dyn
            module = dyn.rsplit(".", 1)[0]
            if not _module_findable(module):
                problems.warning(dloc, f"{key_path}.dynamic_schema",
                                 f"dynamic schema module '{module}' is not importable here: inputs/outputs it "
                                 f"would add at run time are unknown", "dynamic-schema-unavailable")
    return cab


def _module_findable(module: str) -> bool:
    if module in sys.modules:
        return True
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


# ----------------------------------------------------------------- dynamic schemas
class _ShimParameter:
    """Stand-in for ``scabha.cargo.Parameter`` so hooks importing it work without Stimela."""

    def __init__(self, **kw: Any):
        unknown = set(kw) - set(PARAM_FIELDS)
        if unknown:
            raise TypeError(f"unexpected Parameter field(s): {', '.join(sorted(unknown))}")
        self.__dict__.update(kw)
        self._fields = dict(kw)


def _scabha_shim() -> dict:
    """Fake ``scabha``/``scabha.cargo`` modules (only used when the real scabha is missing)."""
    scabha = types.ModuleType("scabha")
    cargo = types.ModuleType("scabha.cargo")
    cargo.Parameter = _ShimParameter  # type: ignore[attr-defined]
    scabha.cargo = cargo  # type: ignore[attr-defined]
    scabha.__path__ = []  # type: ignore[attr-defined]
    return {"scabha": scabha, "scabha.cargo": cargo}


@contextlib.contextmanager
def _scabha_importable() -> Iterator[None]:
    """While active, ``import scabha.cargo`` works (the real one, else a shim removed afterwards)."""
    shim = {} if _module_findable("scabha") else _scabha_shim()
    added = [k for k in shim if k not in sys.modules]
    sys.modules.update({k: shim[k] for k in added})
    try:
        yield
    finally:
        for k in added:
            sys.modules.pop(k, None)


def load_dynamic_schema(spec: str) -> Callable:
    """Import ``module.function``; ``scabha.cargo.Parameter`` is shimmed if scabha is absent.

    :raises ImportError: naming the module when it (or one of its imports) is unavailable.
    """
    module_name, func_name = spec.rsplit(".", 1)
    with _scabha_importable():
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ImportError(f"can't import dynamic schema module '{module_name}': {exc}") from exc
    func = getattr(module, func_name, None)
    if not callable(func):
        raise ImportError(f"'{spec}' is not a callable in module '{module_name}'")
    return func


def _to_parameter(name: str, value: Any, is_output: bool, problems: Problems, key_path: str) -> Parameter:
    if isinstance(value, Parameter):
        return dataclasses.replace(value, name=name, is_output=is_output)
    if isinstance(value, _ShimParameter):
        fields = value._fields
    elif isinstance(value, dict):
        fields = value
    elif hasattr(value, "__dataclass_fields__"):  # a real scabha Parameter
        fields = {f: getattr(value, f) for f in PARAM_FIELDS if hasattr(value, f)}
        fields = {k: v for k, v in fields.items() if v not in (None, (), "<UNSET DEFAULT VALUE>")}
    else:
        fields = {k: value[k] for k in value} if hasattr(value, "keys") else {}
    fields = to_plain({k: (dict(v) if hasattr(v, "keys") and not isinstance(v, dict) else v)
                       for k, v in fields.items()})
    return build_parameter(name, fields, Loc(f"<dynamic schema {key_path}>"), f"{key_path}.{name}", problems,
                           is_output=is_output)


def apply_dynamic_schema(cab: Cab, params: dict, problems: Optional[Problems] = None) -> Cab:
    """Return a copy of ``cab`` whose inputs/outputs the cab's ``dynamic_schema`` hook produced.

    ``params`` are the step's values (unset ones left out). Without a hook, ``cab`` is returned.

    :raises RecipeError: if the hook can't be imported or fails.
    """
    if not cab.dynamic_schema:
        return cab
    problems = problems if problems is not None else Problems()
    key_path = f"cabs.{cab.name}.dynamic_schema"
    try:
        func = load_dynamic_schema(cab.dynamic_schema)
        with _scabha_importable():
            inputs, outputs = func(dict(params), dict(cab.inputs), dict(cab.outputs))
    except Exception as exc:  # noqa: BLE001 - a user hook may raise anything
        problems.error(cab.loc, key_path, f"error evaluating dynamic schema '{cab.dynamic_schema}': "
                       f"{type(exc).__name__}: {exc}", "dynamic-schema")
        raise RecipeError(problems.errors) from exc
    new = copy.copy(cab)
    new.inputs = {n: _to_parameter(n, v, False, problems, key_path) for n, v in inputs.items()}
    new.outputs = {n: _to_parameter(n, v, True, problems, key_path) for n, v in outputs.items()}
    problems.raise_if_errors()
    return new
