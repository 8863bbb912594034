"""Cab definitions (``cabs.<name>`` in the merged config) → :class:`~.model.Cab`.

Mirrors Stimela 2.1.4's ``Cargo``/``Cab`` dataclasses: unknown keys, which Stimela
rejects, are warnings here (errors with ``strict``); the spelling ``flavor`` is
always an error, as in Stimela.  ``dynamic_schema`` hooks (``module.function``)
are run by :func:`.dynamic_schema.apply_dynamic_schema` (re-exported here);
:func:`build_cab` only checks that the module can be found: a warning if not
(an error with ``strict``, as Stimela can't load such a cab).
"""

from __future__ import annotations

from typing import Any, Optional

from .dynamic_schema import (  # noqa: F401 - re-exported
    REPRODUCED, DynamicSchemaUnavailable, apply_dynamic_schema, load_dynamic_schema, module_findable, unavailable_message,
)
from .errors import Loc, Problems
from .model import Cab, Flavour, ImageSpec, Management
from .params import parse_policies, parse_schema
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
            if dyn not in REPRODUCED and not module_findable(module):  # Stimela can't load such a cab
                _report(problems, strict, dloc, f"{key_path}.dynamic_schema",
                        unavailable_message(cab, f"module '{module}' is not installed"),
                        "dynamic-schema-unavailable")
    return cab
