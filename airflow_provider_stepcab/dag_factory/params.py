"""Recipe inputs → Airflow ``Param`` objects (the trigger form), plus the stepcab control params.

**Recipe inputs.** Every input of the top recipe that a user may set (not ``implicit``) becomes a
``Param`` keyed by the input's name (dotted names of nested sections included), except optional
inputs of category ``Obscure``/``Hidden`` (:data:`FORM_HIDDEN_CATEGORIES`): those include Stimela's
auto-aliases of every unset step parameter (``step.param``), about ten per step, which would make
the form unusable and the DAG quadratic to build and serialise in the number of steps. They stay
settable through the run conf (``{"step.param": value}`` or ``steps.<step>.params``), which the
operators validate against the recipe, not against the DAG params. Required inputs always get a
``Param``.

- JSON schema ``type``/``items``/... from ``dtype.json_schema()``;
- ``enum`` from ``choices`` (``items.enum`` from ``element_choices`` for lists);
- ``description`` from ``info``; ``title`` is the input name;
- **default**: the recipe's ``defaults``/the parameter's ``default`` when it is a literal value;
- an input with **no default** is *required* in the form when the recipe marks it ``required``; an
  optional input without default gets the default ``None`` (``null`` is added to its type);
- a default that is a formula (``=...``) or a ``{}`` substitution is evaluated at run time by the
  operators, so the form shows ``None`` and the description says ``computed: =...``.

**Contract with the operators** (``operators/base.py``): a DAG param whose value is ``None`` means
"not given: use the recipe's own default/formula or leave unset". Params go into ``context["params"]``
and, when the run is triggered from the form, into ``dag_run.conf`` too.

**Control params** (names equal the conf keys of ``operators/overrides.py``, so that values from the
trigger form and a hand-written ``conf`` mean the same)::

    select:      ["cal", "image.*"]   # run only these steps (Stimela -s), default []
    skip_steps:  ["cal.flag"]         # skip these, default []
    tags:        ["quick"]            # run only steps with these tags (Stimela -t), default []
    skip_tags:   ["slow"]             # skip steps with these tags, default []
    steps:       {"<step path|glob|*>": {"params": {...}, "backend": {"select": "native"}, "skip": bool}}
    stepcab_workdir: null             # working directory of the run (runtime/workdir.py)

``steps`` is validated at run time by the operator (unknown steps/params fail the task with a
message naming the key). A recipe input with one of these names keeps the name for itself and the
control param is left out (warning).
"""

from __future__ import annotations

from typing import Any, Optional

from airflow_provider_stepcab.recipe.errors import Problems
from airflow_provider_stepcab.recipe.model import UNSET, Parameter
from airflow_provider_stepcab.recipe.yamlio import to_plain

#: control params: name -> (default, JSON schema, description)
CONTROL_PARAMS: dict[str, tuple[Any, dict, str]] = {
    "select": ([], {"type": "array", "items": {"type": "string"}},
               "Run only these steps (dotted step paths or globs, like stimela -s); empty: all."),
    "skip_steps": ([], {"type": "array", "items": {"type": "string"}},
                   "Skip these steps (dotted step paths or globs)."),
    "tags": ([], {"type": "array", "items": {"type": "string"}},
             "Run only steps with one of these tags (like stimela -t); empty: all."),
    "skip_tags": ([], {"type": "array", "items": {"type": "string"}},
                  "Skip steps with one of these tags (like stimela --skip-tags)."),
    "steps": ({}, {"type": "object"},
              'Per-step overrides: {"<step path|glob|*>": {"params": {...}, '
              '"backend": {"select": "native"}, "skip": true}}.'),
    "stepcab_workdir": (None, {"type": ["null", "string"]},
                        "Working directory of this run (default: one fresh directory per run)."),
}
#: input categories left out of the trigger form unless the input is required (see above)
FORM_HIDDEN_CATEGORIES = frozenset({"Obscure", "Hidden"})
_FALLBACK_TYPES = {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}


def is_computed(value: Any) -> bool:
    """True for values evaluated at run time: formulas (``=x``, not ``==x``) and ``{}`` strings."""
    if isinstance(value, str):
        if value.startswith("=="):
            return "{" in value
        return value.startswith("=") or "{" in value
    if isinstance(value, (list, tuple)):
        return any(is_computed(v) for v in value)
    if isinstance(value, dict):
        return any(is_computed(v) for v in value.values())
    return False


def _literal(value: Any) -> Any:
    """A literal default as JSON-able data (``==x`` escapes become ``=x``)."""
    value = to_plain(value)
    if isinstance(value, str) and value.startswith("=="):
        return value[1:]
    if isinstance(value, tuple):
        return list(value)
    return value


def json_schema_for(param: Parameter) -> dict:
    """The JSON schema of ``param`` (type, enum) without default handling."""
    dtype = param.dtype
    schema: dict = {}
    if dtype is not None and hasattr(dtype, "json_schema"):
        try:
            schema = dict(dtype.json_schema())
        except Exception:  # noqa: BLE001 - an exotic dtype: accept anything
            schema = {}
    elif param.dtype_str in _FALLBACK_TYPES:
        schema = {"type": _FALLBACK_TYPES[param.dtype_str]}
    if param.choices:
        schema["enum"] = [_literal(c) for c in param.choices]
    if param.element_choices and schema.get("type") == "array":
        schema["items"] = {**schema.get("items", {}), "enum": [_literal(c) for c in param.element_choices]}
    return schema


def _nullable(schema: dict) -> dict:
    """Allow ``null`` in ``schema`` (for optional inputs whose form value may stay empty)."""
    if not schema:
        return schema
    if "enum" in schema and None not in schema["enum"]:
        schema = {**schema, "enum": [*schema["enum"], None]}
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if "null" not in types:
            schema = {**schema, "type": [*types, "null"]}
        return schema
    if "anyOf" in schema:
        return {**schema, "anyOf": [*schema["anyOf"], {"type": "null"}]}
    return schema


def param_spec(name: str, param: Parameter, recipe_default: Any = UNSET) -> dict:
    """Keyword arguments for ``Param`` describing recipe input ``name`` (see the module docstring).

    :return: ``{"default": ..., "description": ..., "title": ..., **schema}``; ``default`` is
        absent when the input is required and has no literal default.
    """
    default = recipe_default if recipe_default is not UNSET else param.default
    schema = json_schema_for(param)
    description = (param.info or "").strip()
    spec: dict = {"title": name}
    if default is not UNSET and default is not None and not is_computed(default):
        spec["default"] = _literal(default)
    elif default is not UNSET and is_computed(default):
        spec["default"] = None
        schema = _nullable(schema)
        description = (description + " " if description else "") + f"(computed: {default})"
    elif param.required:
        pass  # no default: the trigger form requires a value
    else:
        spec["default"] = None
        schema = _nullable(schema)
    spec["description"] = description or None
    spec.update(schema)
    return spec


def param_specs(recipe: Any, problems: Optional[Problems] = None) -> list:
    """The run params of ``recipe`` as plain data: ``[name, has_default, default, description,
    schema]`` for its settable inputs plus the control params (made into ``Param`` objects by
    :func:`~.spec.make_params`).

    :param recipe: a :class:`~airflow_provider_stepcab.recipe.model.Recipe`.
    :param problems: receives a warning when an input shadows a control param.
    """
    out: list = []
    names: set = set()
    defaults = getattr(recipe, "defaults", {}) or {}
    for name, param in recipe.inputs.items():
        if param.implicit is not UNSET or (param.category in FORM_HIDDEN_CATEGORIES and not param.required):
            continue
        spec = param_spec(name, param, defaults.get(name, UNSET))
        description = spec.pop("description")
        has_default = "default" in spec
        default = spec.pop("default", None)
        out.append([name, has_default, default, description, spec])
        names.add(name)
    for name, (default, schema, description) in CONTROL_PARAMS.items():
        if name in names:
            if problems is not None:
                problems.warning(recipe.inputs[name].loc, f"{recipe.name}.inputs.{name}",
                                 f"input '{name}' shadows the stepcab control param of that name; "
                                 "set the control value through the run conf instead", "param-shadow")
            continue
        out.append([name, True, default, description, dict(schema)])
    return out


def build_params(recipe: Any, problems: Optional[Problems] = None) -> dict:
    """Return ``{name: Param}`` for the recipe's settable inputs plus the control params."""
    from airflow_provider_stepcab.dag_factory.spec import make_params

    return make_params(param_specs(recipe, problems))
