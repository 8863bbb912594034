"""Parameter schemas (cab/recipe ``inputs`` and ``outputs``).

Follows scabha's ``Cargo.flatten_schemas``:

* a string is shorthand: ``"MS"``, ``"str*"`` (required), ``'int = 3 "doc"'``
  (type, default, info; the default keeps quotes stripped);
* a mapping whose keys are all :class:`~.model.Parameter` fields is a parameter;
* any other mapping is a subsection, flattened to dotted names (``input_ms.path``);
* the key ``subsection`` is ignored.

Where Stimela fails with an opaque message (a mapping with a misspelled field),
we report the unknown field as a warning (an error with ``strict``) and keep the
parameter.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from .coerce import coerce, type_name
from .dtypes import DType, parse_dtype
from .errors import Loc, Problems
from .model import POLICY_FIELDS, UNSET, Parameter, PathPolicies, Policies
from .suggest import unknown_key_message
from .yamlio import loc_of, to_plain

# Fields a schema mapping may use (Stimela's Parameter dataclass).
PARAM_FIELDS = (
    "info", "writable", "dtype", "implicit", "tags", "required", "choices", "element_choices", "default",
    "aliases", "mkdir", "path_policies", "remove_if_exists", "access_parent_dir", "write_parent_dir",
    "must_exist", "skip_freshness_checks", "nom_de_guerre", "policies", "category", "metavar",
    "abbreviation", "metadata", "suppress_cli_default",
)
CATEGORIES = ("Required", "Optional", "Implicit", "Obscure", "Hidden")
_BOOL_FIELDS = ("writable", "required", "mkdir", "must_exist", "skip_freshness_checks", "suppress_cli_default")
_STR_FIELDS = ("info", "nom_de_guerre", "metavar", "abbreviation")
_LIST_FIELDS = ("tags", "choices", "element_choices", "aliases")
_DEPRECATED_PATH = {"remove_if_exists": "remove_if_exists", "access_parent_dir": "access_parent",
                    "write_parent_dir": "write_parent"}
_POLICY_TYPES = {  # as scabha's ParameterPolicies declares them
    "key_value": bool, "positional": bool, "positional_head": bool, "skip": bool, "skip_implicits": bool,
    "disable_substitutions": bool, "pass_missing_as_none": bool, "repeat": str, "prefix": str,
    "explicit_true": str, "explicit_false": str, "split": str, "format": str,
    "replace": Dict[str, str], "format_list": List[str], "format_list_scalar": List[str],
}


def _report(problems: Problems, strict: bool, loc: Loc, key: str, msg: str, code: str) -> None:
    (problems.error if strict else problems.warning)(loc, key, msg, code)


def parse_policies(node: Any, key_path: str, problems: Problems, *, strict: bool = False) -> Policies:
    """Parse a ``policies`` mapping (parameter or cab level)."""
    pol = Policies()
    if node is None:
        return pol
    if not isinstance(node, dict):
        problems.error(loc_of(node), key_path, "policies must be a mapping", "bad-policies")
        return pol
    for key, value in node.items():
        loc = loc_of(node, key)
        if key not in POLICY_FIELDS:
            _report(problems, strict, loc, f"{key_path}.{key}",
                    unknown_key_message("policy", key, POLICY_FIELDS, f"known: {', '.join(POLICY_FIELDS)}"),
                    "unknown-policy")
            continue
        if value is None:
            continue
        try:  # OmegaConf's conversions, as Stimela reads policies (repeat: false -> "False")
            value = coerce(_POLICY_TYPES[key], value)
        except ValueError:
            problems.error(loc, f"{key_path}.{key}", f"policy '{key}' must be a "
                           f"{type_name(_POLICY_TYPES[key])}, got {to_plain(value)!r}", "bad-policy")
            continue
        setattr(pol, key, value)
    return pol


def _parse_path_policies(node: Any, key_path: str, problems: Problems, strict: bool) -> PathPolicies:
    pp = PathPolicies()
    if not isinstance(node, dict):
        problems.error(loc_of(node), key_path, "path_policies must be a mapping", "bad-field")
        return pp
    for key, value in node.items():
        if key not in PathPolicies.__dataclass_fields__:
            _report(problems, strict, loc_of(node, key), f"{key_path}.{key}",
                    f"unknown path policy '{key}'", "unknown-field")
        elif value is not None and not isinstance(value, bool):
            problems.error(loc_of(node, key), f"{key_path}.{key}", f"'{key}' must be true or false", "bad-field")
        else:
            setattr(pp, key, value)
    return pp


def parse_shorthand(text: str) -> dict:
    """Split a shorthand string into schema fields (``dtype``, ``default``, ``info``, ``required``)."""
    schema: dict = {}
    value = text.strip()
    if value.endswith('"') and '"' in value[:-1]:
        value, info, _ = value.rsplit('"', 2)
        value = value.strip()
        schema["info"] = info
    if "=" in value:
        value, default = value.split("=", 1)
        value, default = value.strip(), default.strip()
        if len(default) >= 2 and default[0] == default[-1] and default[0] in "\"'":
            default = default[1:-1]
        schema["default"] = default
    elif value.endswith("*"):
        schema["required"] = True
        value = value[:-1]
    schema["dtype"] = value
    return schema


def _coerce_default(dtype: Optional[DType], value: Any) -> Any:
    """Shorthand defaults are strings; coerce literal ones (never formulas or ``{}`` templates)."""
    if dtype is None or not isinstance(value, str) or value.startswith("=") or "{" in value:
        return value
    try:
        return dtype.validate(value)
    except ValueError:
        return value


def build_parameter(name: str, fields: dict, loc: Loc, key_path: str, problems: Problems, *,
                    is_output: bool = False, strict: bool = False, field_locs: Any = None) -> Parameter:
    """Make a :class:`Parameter` from a mapping of schema fields (unknown fields reported)."""
    p = Parameter(name=name, is_output=is_output, loc=loc)
    given = []
    floc = (lambda k: loc_of(field_locs, k)) if field_locs is not None else (lambda k: loc)
    for key, value in fields.items():
        kp = f"{key_path}.{key}"
        if key not in PARAM_FIELDS:
            _report(problems, strict, floc(key), kp, unknown_key_message(
                "parameter field", key, PARAM_FIELDS, f"known: {', '.join(PARAM_FIELDS)}"), "unknown-field")
            continue
        given.append(key)
        if key == "dtype":
            if value is None:
                continue
            if not isinstance(value, str):
                problems.error(floc(key), kp, f"dtype must be a string, got {value!r}", "bad-dtype")
                continue
            p.dtype_str = value
        elif key in _BOOL_FIELDS:
            if value is None and key in ("must_exist", "skip_freshness_checks", "required"):
                continue
            try:  # OmegaConf's conversions ("yes" -> True), as Stimela reads schemas
                value = coerce(bool, value)
            except ValueError:
                problems.error(floc(key), kp, f"'{key}' must be true or false, got {value!r}", "bad-field")
                continue
            setattr(p, key, value)
        elif key in _STR_FIELDS:
            if value is None:
                continue
            if isinstance(value, (dict, list)):
                problems.error(floc(key), kp, f"'{key}' must be a string", "bad-field")
                continue
            setattr(p, key, str(value))
        elif key in _LIST_FIELDS:
            if value is None:
                continue
            if not isinstance(value, (list, tuple)):
                problems.error(floc(key), kp, f"'{key}' must be a list, got {value!r}", "bad-field")
                continue
            setattr(p, key, list(value))
        elif key in ("default", "implicit"):
            if key == "implicit" and value is None:
                continue
            setattr(p, key, value)
        elif key == "policies":
            p.policies = parse_policies(value, kp, problems, strict=strict)
        elif key == "path_policies":
            p.path_policies = _parse_path_policies(value, kp, problems, strict)
        elif key in _DEPRECATED_PATH:
            if value is not None:
                setattr(p.path_policies, _DEPRECATED_PATH[key], bool(value))
        elif key == "category":
            if value is None:
                continue
            names = {c.lower(): c for c in CATEGORIES}
            if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(CATEGORIES):
                p.category = CATEGORIES[value]
            elif isinstance(value, str) and value.lower() in names:
                p.category = names[value.lower()]
            else:
                problems.error(floc(key), kp, f"unknown category {value!r} (one of {', '.join(CATEGORIES)})",
                               "bad-field")
        elif key == "metadata":
            if value is not None and not isinstance(value, dict):
                problems.error(floc(key), kp, "'metadata' must be a mapping", "bad-field")
            else:
                p.metadata = dict(value or {})
    try:
        p.dtype = parse_dtype(p.dtype_str)
    except ValueError as exc:
        problems.error(floc("dtype"), f"{key_path}.dtype", str(exc), "bad-dtype")
    p.default = _coerce_default(p.dtype, p.default) if "default" in fields else UNSET
    p.given_fields = frozenset(given)
    return p


def _could_be_subsection(node: dict) -> bool:
    """Stimela only fails on a subsection whose entries are neither strings nor mappings."""
    return all(isinstance(v, (str, dict)) for k, v in node.items() if k != "subsection")


def parse_schema(node: Any, key_path: str, problems: Problems, *, is_output: bool = False,
                 strict: bool = False, prefix: str = "",
                 into: Optional[dict] = None) -> dict[str, Parameter]:
    """Parse an ``inputs``/``outputs`` mapping into ``{dotted name: Parameter}`` in schema order.

    :param key_path: dotted path of ``node`` for messages (``cabs.wsclean.inputs``).
    :param is_output: mark the parameters as outputs.
    :param strict: report unknown fields as errors instead of warnings.
    """
    out: dict[str, Parameter] = {} if into is None else into
    if node is None:
        return out
    if not isinstance(node, dict):
        problems.error(loc_of(node), key_path, f"a schema mapping is expected, got {type(node).__name__}",
                       "bad-schema")
        return out
    for key, value in node.items():
        if key == "subsection":
            continue
        name = f"{prefix}{key}"
        kp = f"{key_path}.{key}"
        loc = loc_of(node, key)
        if isinstance(value, Parameter):
            out[name] = value
        elif isinstance(value, str):
            fields = parse_shorthand(value)
            out[name] = build_parameter(name, fields, loc, kp, problems, is_output=is_output, strict=strict)
        elif isinstance(value, dict):
            unknown = [k for k in value if k not in PARAM_FIELDS]
            if not unknown:
                out[name] = build_parameter(name, value, loc, kp, problems, is_output=is_output,
                                            strict=strict, field_locs=value)
            elif len(unknown) < len(value) and not _could_be_subsection(value):
                # a parameter with a misspelled field (Stimela would fail to load it)
                out[name] = build_parameter(name, value, loc, kp, problems, is_output=is_output,
                                            strict=strict, field_locs=value)
            else:
                n_errors = len(problems.errors)
                parse_schema(value, kp, problems, is_output=is_output, strict=strict,
                             prefix=f"{name}.", into=out)
                if len(problems.errors) > n_errors and len(unknown) < len(value):
                    problems.error(loc, kp, f"'{key}' was read as a nested section because of its "
                                   f"key(s) {', '.join(map(repr, unknown))}; if it is a parameter, "
                                   f"those fields are misspelled", "nested-section")
        else:
            problems.error(loc, kp, f"not a valid parameter definition: expected a type string or a "
                           f"mapping, got {value!r}", "bad-schema")
    return out


def flatten_into(d: dict, prefix: str, schema: dict, labels: set, out: dict, locs: dict) -> None:
    """Flatten step params ``{a: {b: 1}}`` into ``out`` as ``{"a.b": 1}`` where ``schema`` has ``a.*``
    names (or, at the top, ``a`` is a sub-step label in ``labels``); their locations into ``locs``."""
    # a module-level function, not a recursive closure: a closure that calls itself is a reference
    # cycle, left for the cyclic garbage collector once per step
    for k, v in d.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict) and name not in schema and (
                any(s.startswith(f"{name}.") for s in schema) or (not prefix and name in labels)):
            flatten_into(v, f"{name}.", schema, labels, out, locs)
            continue
        out[name] = v
        locs[name] = loc_of(d, k)
