"""Recipe inputs → Airflow ``Param`` objects (the trigger form), plus the stepcab control params.

**Recipe inputs.** Every input of the top recipe that a user may set (not ``implicit``) becomes a
``Param`` keyed by the input's name (dotted names of nested sections included), except optional
inputs of category ``Obscure``/``Hidden`` (:data:`FORM_HIDDEN_CATEGORIES`): those include Stimela's
auto-aliases of every unset optional step parameter (``step.param``), about ten per step, which
would make the form unusable and the DAG quadratic to build and serialise in the number of steps.
They stay settable through the run conf (``{"step.param": value}`` or ``steps.<step>.params``),
which the operators validate against the recipe, not against the DAG params.

**Required or not.** Airflow 3.3's trigger form marks a field required (red asterisk, trigger
refused while empty) when its JSON schema has a ``type`` that does not include ``"null"``. So
exactly the inputs a run cannot go without get a ``type`` without ``null`` and no default: the
required inputs that nothing in the recipe sets
(:func:`~airflow_provider_stepcab.recipe.requirements.required_unset`: no default, not assigned by
``assign`` or any case of ``assign_based_on``), auto-aliased ``step.param`` ones included (shown
whatever their category). Every other param allows ``null`` ("not given"):

- an input with a literal **default** (the recipe's ``defaults`` or the parameter's own) shows it;
  emptied, the recipe's default applies;
- a required input that ``assign``/``assign_based_on`` fills (``dir_out`` set from ``obs``) has
  the default ``None`` and says so in its description;
- a default that is a formula (``=...``) or a ``{}`` substitution is evaluated at run time by the
  operators, so the form shows ``None`` and the description says ``computed: =...``;
- an optional input without default gets ``None``;
- an input whose default lays out the DAG (the values of an unrolled ``for_loop``,
  :func:`~.unrolling.fixed_inputs`) shows its default and says that a run can't change it;
- the control params below (an empty ``select`` means every step).

The schema: ``type``/``items``/... from ``dtype.json_schema()`` — an input without ``dtype``
(Stimela's ``str``, which also takes numbers and booleans, as text) accepts
:data:`UNTYPED_JSON_TYPES`, and a literal default the dtype accepts is always valid
(``ncpu: {default: 64}`` untyped, or ``dtype: str`` with ``default: 64``); ``enum`` from ``choices``
(``items.enum`` from ``element_choices`` for lists); ``description`` from ``info``; ``title`` is
the input name.

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
    stepcab_cache: null               # the step cache for this run: on, off or refresh (docs/cache.md)

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
    "select": ([], {"type": ["array", "null"], "items": {"type": "string"}},
               "Run only these steps (dotted step paths or globs, like stimela -s); empty: all."),
    "skip_steps": ([], {"type": ["array", "null"], "items": {"type": "string"}},
                   "Skip these steps (dotted step paths or globs)."),
    "tags": ([], {"type": ["array", "null"], "items": {"type": "string"}},
             "Run only steps with one of these tags (like stimela -t); empty: all."),
    "skip_tags": ([], {"type": ["array", "null"], "items": {"type": "string"}},
                  "Skip steps with one of these tags (like stimela --skip-tags)."),
    "steps": ({}, {"type": ["object", "null"]},
              'Per-step overrides: {"<step path|glob|*>": {"params": {...}, '
              '"backend": {"select": "native"}, "skip": true}}.'),
    "stepcab_workdir": (None, {"type": ["null", "string"]},
                        "Working directory of this run (default: one fresh directory per run)."),
    "stepcab_cache": (None, {"type": ["null", "string"], "enum": [None, "on", "off", "refresh"]},
                      "Step cache for this run: on (skip steps whose inputs, command and image are "
                      "unchanged), off, or refresh (run every step, record the results); empty: as the "
                      "recipe says (opts.airflow.cache)."),
}
#: input categories left out of the trigger form unless the input is required (see above)
FORM_HIDDEN_CATEGORIES = frozenset({"Obscure", "Hidden"})
_FALLBACK_TYPES = {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}
#: what an untyped input (Stimela's dtype ``str``) accepts: text, and numbers and booleans, which
#: Stimela (pydantic v1) turns into text; Airflow 3.3's form shows a field taking JSON or text
UNTYPED_JSON_TYPES = ("string", "integer", "number", "boolean")
_JSON_TYPE_OF = ((bool, "boolean"), (int, "integer"), (float, "number"), (str, "string"), (list, "array"),
                 (dict, "object"))


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
    if "dtype" not in param.given_fields and param.dtype_str == "str" and schema.get("type") == "string":
        schema["type"] = list(UNTYPED_JSON_TYPES)
    if param.choices:
        schema["enum"] = [_literal(c) for c in param.choices]
    if param.element_choices and schema.get("type") == "array":
        schema["items"] = {**schema.get("items", {}), "enum": [_literal(c) for c in param.element_choices]}
    return schema


def _admitting(schema: dict, param: Parameter, default: Any) -> dict:
    """``schema`` with the JSON type of ``default`` added when the input's dtype accepts that value
    (a ``dtype: str`` input with ``default: 64``: Stimela passes ``"64"``), so the form's own
    validation does not refuse the recipe's default."""
    kind = next((name for cls, name in _JSON_TYPE_OF if isinstance(default, cls)), None)
    types = schema.get("type")
    if kind is None or types is None or "enum" in schema:
        return schema
    types = types if isinstance(types, list) else [types]
    if kind in types or (kind == "integer" and "number" in types):
        return schema
    try:
        if param.dtype is not None:
            param.dtype.validate(default)
    except (ValueError, TypeError):
        return schema
    return {**schema, "type": [*types, kind]}


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


def param_spec(name: str, param: Parameter, recipe_default: Any = UNSET, *, needs_value: Optional[bool] = None,
               assigned: bool = False) -> dict:
    """Keyword arguments for ``Param`` describing recipe input ``name`` (see the module docstring).

    :param needs_value: the run cannot go without a value from the user (the input is in
        :func:`~..recipe.requirements.required_unset`); default: ``param.required`` and no default.
    :param assigned: the recipe's ``assign``/``assign_based_on`` gives the input a value.
    :return: ``{"default": ..., "description": ..., "title": ..., **schema}``; ``default`` is
        absent (and ``null`` not allowed) only when the input needs a value.
    """
    default = recipe_default if recipe_default is not UNSET else param.default
    if needs_value is None:
        needs_value = bool(param.required) and default is UNSET and not assigned
    schema = json_schema_for(param)
    description = (param.info or "").strip()
    spec: dict = {"title": name}
    if needs_value:
        pass  # no default, no null: the trigger form requires a value
    elif default is not UNSET and default is not None and not is_computed(default):
        spec["default"] = _literal(default)
        schema = _nullable(_admitting(schema, param, spec["default"]))  # left empty: the recipe's own default applies
    else:
        spec["default"] = None
        schema = _nullable(schema)
        if default is not UNSET and is_computed(default):
            description = (description + " " if description else "") + f"(computed: {default})"
        elif assigned:
            description = (description + " " if description else "") + \
                "(set by the recipe's assign/assign_based_on when not given)"
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
    from airflow_provider_stepcab.dag_factory.unrolling import fixed_input_note, fixed_inputs
    from airflow_provider_stepcab.recipe.requirements import (
        assigned_names,
        required_unset,
    )

    out: list = []
    names: set = set()
    defaults = getattr(recipe, "defaults", {}) or {}
    needed = {name for name, _ in required_unset(recipe)}
    assigned = assigned_names(recipe)
    fixed = fixed_inputs(recipe)
    for name, param in recipe.inputs.items():
        if param.implicit is not UNSET:
            continue
        if name not in needed and param.category in FORM_HIDDEN_CATEGORIES:
            continue
        spec = param_spec(name, param, defaults.get(name, UNSET), needs_value=name in needed,
                          assigned=name in assigned)
        description = spec.pop("description")
        if name in fixed:
            description = (description + " " if description else "") + \
                f"(fixed for this DAG, a run can't change it: {fixed_input_note(name)})"
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
