"""Checking parameter values against a schema, and formulas for syntax, collecting every problem.

Only values that are known when the recipe is read are checked: formulas (``=...``) and strings
with ``{}`` substitutions are checked for *syntax* here and evaluated later (plan time or run time).
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Optional

from .deferred import contains_deferred, has_substitution, is_deferred, is_formula_text  # noqa: F401 - re-exported
from .errors import FormulaError, Loc, Problems
from .model import UNSET, Parameter, Step
from .suggest import did_you_mean
from .yamlio import loc_of


def check_expression(value: Any, *, key_path: str, loc: Loc, problems: Problems) -> bool:
    """Check the syntax of a formula or a ``{}`` substitution; record an error if it is bad.

    :returns: ``True`` if the value is fine (or is not an expression at all).
    """
    try:
        if is_formula_text(value):
            from .formula import parse_formula
            parse_formula(value)
        elif has_substitution(value):
            from .subst import subst_references
            subst_references(value)
    except (FormulaError, ValueError, SyntaxError) as exc:
        kind = "formula" if is_formula_text(value) else "substitution"
        problems.error(loc, key_path, f"bad {kind} {value!r}: {exc}", "bad-formula")
        return False
    return True


def check_expressions(tree: Any, *, key_path: str, loc: Loc, problems: Problems) -> None:
    """Walk a mapping/list and check every formula and substitution in it."""
    if isinstance(tree, Mapping):
        for k, v in tree.items():
            check_expressions(v, key_path=f"{key_path}.{k}" if key_path else str(k),
                              loc=loc_of(tree, k) if hasattr(tree, "key_locs") else loc, problems=problems)
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            check_expressions(v, key_path=f"{key_path}[{i}]",
                              loc=loc_of(tree, i) if hasattr(tree, "item_locs") else loc, problems=problems)
    else:
        check_expression(tree, key_path=key_path, loc=loc, problems=problems)


def check_value(schema: Parameter, value: Any, *, key_path: str, loc: Loc, problems: Problems) -> Any:
    """Check one literal value against its parameter schema (dtype, choices, element_choices).

    :returns: the coerced value, or the value unchanged if it can't be checked or is wrong.
    """
    if value is UNSET or value is None:
        return value
    if is_deferred(value):
        check_expression(value, key_path=key_path, loc=loc, problems=problems)
        return value
    if contains_deferred(value):  # e.g. a list with a formula inside: check syntax only
        check_expressions(value, key_path=key_path, loc=loc, problems=problems)
        return value
    dtype = schema.dtype
    if dtype is not None and hasattr(dtype, "validate"):
        try:
            value = dtype.validate(value)
        except (ValueError, TypeError) as exc:
            problems.error(loc, key_path, f"invalid value {value!r} for dtype {schema.dtype_str}: {exc}",
                           "wrong-dtype")
            return value
    if schema.choices and value not in schema.choices:
        problems.error(loc, key_path, f"{value!r} is not one of the allowed choices "
                       f"{list(schema.choices)}", "bad-choice")
    if schema.element_choices and isinstance(value, (list, tuple)):
        bad = [v for v in value if v not in schema.element_choices]
        if bad:
            problems.error(loc, key_path, f"element(s) {bad!r} not among the allowed choices "
                           f"{list(schema.element_choices)}", "bad-choice")
    return value


def validate_params(schema: Mapping[str, Parameter], params: Mapping[str, Any], *, key_path: str,
                    loc: Loc, problems: Problems, strict_unknown: bool = True,
                    locs: Optional[Mapping[str, Loc]] = None, check_required: bool = False,
                    allowed_extra: Iterable[str] = (), unknown_note: str = "") -> dict:
    """Check ``params`` against ``schema`` and record every problem.

    :param schema: name → :class:`Parameter` (inputs and outputs).
    :param params: name → value, as written (formulas allowed).
    :param key_path: dotted path of the ``params`` section (``rec.steps.s1.params``).
    :param loc: location used when a parameter's own location is unknown.
    :param strict_unknown: unknown names are errors (else warnings).
    :param locs: per-parameter locations (else taken from ``params`` if it is a ``CMap``).
    :param check_required: report required parameters that have no value and no default.
    :param allowed_extra: names not in the schema that are fine (``sub.param`` already checked).
    :param unknown_note: appended to the message for an unknown name.
    :returns: the params with literal values coerced.
    """
    out = {}
    extra = set(allowed_extra)
    for name, value in params.items():
        ploc = (locs or {}).get(name) or (loc_of(params, name) if hasattr(params, "key_locs") else loc)
        kpath = f"{key_path}.{name}"
        p = schema.get(name)
        if p is None:
            if name not in extra:
                hint = did_you_mean(name, schema)
                msg = f"unknown parameter '{name}'" + (f" ({hint})" if hint else "") + unknown_note
                if strict_unknown:
                    problems.error(ploc, kpath, msg, "unknown-param")
                else:
                    problems.warning(ploc, kpath, msg, "unknown-param")
            out[name] = value
            continue
        out[name] = check_value(p, value, key_path=kpath, loc=ploc, problems=problems)
    if check_required:
        for name in missing_required(schema, out):
            problems.error(loc, f"{key_path}.{name}", f"missing required parameter '{name}'",
                           "missing-param")
    return out


def missing_required(schema: Mapping[str, Parameter], params: Mapping[str, Any],
                     defaults: Mapping[str, Any] = {}) -> list:
    """Names of required, non-implicit parameters with neither a value nor a default."""
    missing = []
    for name, p in schema.items():
        if not p.required or p.implicit is not UNSET and p.implicit is not None:
            continue
        if params.get(name, UNSET) is not UNSET or name in defaults or p.default is not UNSET:
            continue
        missing.append(name)
    return missing


def check_step_params(step: Step, key_path: str, problems: Problems) -> None:
    """Unknown names, literal dtypes/choices and expression syntax of a step's params."""
    cargo = step.cargo
    if cargo is None:
        for name, value in step.params.items():
            check_expressions(value, key_path=f"{key_path}.params.{name}",
                              loc=step.param_locs.get(name, step.loc), problems=problems)
        return
    extra = []
    if step.recipe is not None:
        for name, value in step.params.items():
            if name in cargo.schema or "." not in name:
                continue
            label, sub = name.split(".", 1)
            sub_step = step.recipe.steps.get(label)
            if sub_step is None or sub_step.cargo is None:
                continue
            extra.append(name)
            _check_nested(sub_step, sub, value, f"{key_path}.params.{name}",
                          step.param_locs.get(name, step.loc), problems)
    schema, pending, note = cargo.schema, [], ""
    params, locs = step.params, step.param_locs
    if step.cab is not None and step.cab.dynamic_schema:
        from .dynamic_schema import step_schema
        schema, pending, params, locs = step_schema(step.cab, step.params, problems, step.param_locs)
        cab_name = step.cab.name
        note = (f": cab '{cab_name}' has a dynamic schema that can't be run here" if pending == ["*"] else
                f": the dynamic schema of cab '{cab_name}' may add it once the value of "
                f"{', '.join(pending)} is known" if pending else
                f" (nor added by the dynamic schema of cab '{cab_name}' for these values)")
    elif getattr(cargo, "dynamic_schema", None):  # a recipe's dynamic schema: not run here
        pending = ["*"]
    validate_params(schema, params, key_path=f"{key_path}.params", loc=step.loc, problems=problems,
                    strict_unknown=not pending, locs=locs, allowed_extra=extra, unknown_note=note)
    for name, value in params.items():
        p = schema.get(name)
        if p is not None and p.implicit is not UNSET and p.implicit is not None and not p.is_output:
            problems.error(locs.get(name, step.loc), f"{key_path}.params.{name}",
                           f"implicit parameter '{name}' cannot be set", "implicit-param")


def _check_nested(step: Step, name: str, value: Any, key_path: str, loc: Loc, problems: Problems) -> None:
    cargo = step.cargo
    if name in cargo.schema:
        validate_params({name: cargo.schema[name]}, {name: value}, key_path=key_path.rsplit(".", 1)[0],
                        loc=loc, problems=problems, locs={name: loc})
    elif step.recipe is not None and "." in name and name.split(".", 1)[0] in step.recipe.steps:
        label, sub = name.split(".", 1)
        sub_step = step.recipe.steps[label]
        if sub_step.cargo is not None:
            _check_nested(sub_step, sub, value, key_path, loc, problems)
    elif not getattr(cargo, "dynamic_schema", None):
        problems.error(loc, key_path, f"'{name}' is not a known parameter of step '{step.label}'", "unknown-param")
