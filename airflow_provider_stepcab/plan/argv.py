"""Command lines for ``binary`` cabs, exactly as Stimela 2.1.4 builds them.

Rules (``Cab.build_command_line``/``build_argument_list``):

1. ``shlex.split(command) + args + arguments`` (``command``/``args`` already substituted).
2. Parameters are walked in schema order (inputs, then outputs). A parameter is dropped when
   ``skip`` is true, or ``skip`` is unset and it is implicit and ``skip_implicits`` is true, or it
   is an output other than a named file output and ``skip`` isn't explicitly false.
3. A missing required parameter is an error; ``None`` values are dropped.
4. The option is ``prefix`` (default ``--``) + (``nom_de_guerre`` or the name after ``replace``).
5. ``dtype: bool``: true → ``opt``; false → nothing; with ``explicit_true``/``explicit_false`` →
   ``opt VALUE``; with ``key_value`` → ``opt=VALUE``.
6. Lists (anything iterable but a ``str``) are formatted with ``format_list``, else ``format``
   per element, else ``str``; scalars with ``format_list_scalar`` (giving a list), else ``format``.
   ``split`` turns a string into a list first.
7. Lists are laid out by ``repeat``: ``list`` → ``opt x y``; ``[]`` → ``opt [x,y]``; ``repeat`` →
   ``opt x opt y``; any other string joins them; unset → error.
8. Result: ``positional_head`` values, options, then ``positional`` values.

Only names in ``cab.schema`` are used. Others are rejected before an argv is built: by
validation, and for a ``dynamic_schema`` cab by validating against the cab that
:func:`..recipe.dynamic_schema.apply_dynamic_schema` returns (build the argv from that cab, with
the params flattened by :func:`..recipe.dynamic_schema.flatten_params`). Only a hook that can't
run here leaves names out, with a warning (docs/divergences.md).
"""

from __future__ import annotations

import itertools
import shlex
from typing import Any, Callable, Optional

import yaml

from ..recipe.errors import Problem, RecipeError, UNKNOWN_LOC
from ..recipe.model import UNSET, Cab, Parameter


class CommandLineError(RecipeError):
    """A command line can't be formed from the cab and parameters (names the parameter)."""

    def __init__(self, message: str, param: str = "", cab: Optional[Cab] = None):
        self.param = param
        loc = UNKNOWN_LOC
        if cab is not None:
            schema = cab.schema.get(param)
            loc = schema.loc if schema is not None else cab.loc
        key = f"cabs.{cab.name}.{param}" if cab is not None and param else param
        super().__init__(Problem(loc, key, message, code="command-line"))


def _policy(cab: Cab, schema: Parameter, name: str, default: Any = None) -> Any:
    value = getattr(schema.policies, name)
    if value is None:
        value = getattr(cab.policies, name)
    return default if value is None else value


def _is_implicit(schema: Parameter) -> bool:
    return schema.implicit is not UNSET and bool(schema.implicit)


def fill_defaults(cab: Cab, params: dict, *, implicits: bool = True) -> dict:
    """``params`` plus defaults for anything missing: cab ``defaults`` win over schema defaults.

    With ``implicits``, implicit values are filled too (as written: formulas and ``{}`` templates
    are left for the caller to evaluate). A default of ``"UNSET"`` counts as none. Keys keep the
    caller's order, then schema order.
    """
    out = dict(params)
    for name, schema in cab.schema.items():
        if name in out:
            continue
        if implicits and schema.implicit is not UNSET and schema.implicit is not None:
            out[name] = schema.implicit
        elif name in cab.defaults:
            out[name] = cab.defaults[name]
        elif schema.default is not UNSET and schema.default != "UNSET":
            out[name] = schema.default
    return out


def filter_params(cab: Cab, params: dict) -> dict:
    """The parameters Stimela passes to a cab (inputs and named outputs, not skipped), schema order."""
    out = {}
    for name, schema in cab.schema.items():
        skip = _policy(cab, schema, "skip")
        if skip is None and _is_implicit(schema):
            skip = _policy(cab, schema, "skip_implicits")
        if skip:
            continue
        if schema.is_output and not schema.is_named_output and skip is not False:
            continue
        if name in params and params[name] is not UNSET:
            out[name] = params[name]
        elif _policy(cab, schema, "pass_missing_as_none"):
            out[name] = None
    return out


def _stringify(cab: Cab, name: str, value: Any, schema: Parameter, values: dict,
               option: Optional[str] = None) -> Any:
    """One parameter → ``None``, a string, or a list of strings (Stimela's ``stringify_argument``)."""
    pol = lambda p: _policy(cab, schema, p)  # noqa: E731
    if value is None:
        return None
    if schema.dtype_str == "bool" and not value and pol("explicit_false") is None:
        return None
    is_list = hasattr(value, "__iter__") and not isinstance(value, str)
    split = pol("split")
    if isinstance(value, str) and split:
        value = value.split(split or None)
        is_list = True
    try:
        if is_list:
            if pol("format_list"):
                value = [fmt.format(*value, **values) for fmt in pol("format_list")]
            elif pol("format"):
                value = [pol("format").format(x, **values) for x in value]
            else:
                value = [str(x) for x in value]
        elif pol("format_list_scalar"):
            value = [fmt.format(value, **values) for fmt in pol("format_list_scalar")]
            is_list = True
        elif pol("format"):
            value = pol("format").format(value, **values)
        else:
            value = str(value)
    except (IndexError, KeyError, ValueError, AttributeError) as exc:
        raise CommandLineError(f"parameter '{name}': formatting failed: {type(exc).__name__}: {exc}",
                               name, cab) from None
    if not is_list:
        return [option, value] if option else [value]
    repeat = pol("repeat")
    if repeat == "list":
        if pol("key_value"):
            raise CommandLineError(f"repeat policy 'list' is incompatible with policy 'key_value' for "
                                   f"parameter '{name}'", name, cab)
        return [option] + list(value) if option else list(value)
    if repeat == "[]":
        joined = "[" + ",".join(value) + "]"
        return [option, joined] if option else joined
    if repeat == "repeat":
        return list(itertools.chain.from_iterable([option, x] for x in value)) if option else list(value)
    if isinstance(repeat, str):
        return [option, repeat.join(value)] if option else repeat.join(value)
    raise CommandLineError(f"list-type parameter '{name}' does not have a repeat policy set", name, cab)


def build_arguments(cab: Cab, params: dict) -> list[str]:
    """The arguments Stimela appends after the command (no command, no ``args``)."""
    values = filter_params(cab, params)
    if cab.parameter_passing == "yaml":
        return [yaml.safe_dump(values)]
    head: list[str] = []
    tail: list[str] = []
    for name, schema in cab.schema.items():
        if schema.required and name not in values:
            raise CommandLineError(f"required parameter '{name}' is missing", name, cab)
        if name in values:
            first = _policy(cab, schema, "positional_head")
            if _policy(cab, schema, "positional") or first:
                value = _stringify(cab, name, values[name], schema, values)
                target = head if first else tail
                if type(value) is list:
                    target += value
                elif value is not None:
                    target.append(value)
                values.pop(name)
    args: list[str] = []
    for name, value in list(values.items()):
        schema = cab.schema[name]
        key_value = _policy(cab, schema, "key_value")
        opt_name = name
        for rep_from, rep_to in (_policy(cab, schema, "replace") or {}).items():
            opt_name = opt_name.replace(rep_from, rep_to)
        option = _policy(cab, schema, "prefix", "--") + (schema.nom_de_guerre or opt_name)
        if schema.dtype_str == "bool":
            if value is None:  # Stimela crashes here (explicit_none); we drop it like other Nones
                continue
            if not isinstance(value, bool):
                raise CommandLineError(f"parameter '{name}': bool value expected, got {value!r}", name, cab)
            explicit = _policy(cab, schema, "explicit_" + str(value).lower())
            strval = str(value) if explicit is None else str(explicit)
            if key_value:
                args.append(f"{option}={strval}")
            else:
                args += [option, strval] if explicit is not None else ([option] if value else [])
            continue
        out = _stringify(cab, name, value, schema, values, option=option)
        if type(out) is list:
            if key_value:
                if len(out) != 2:
                    raise CommandLineError(f"parameter '{name}': policy 'key_value' needs exactly one value "
                                           f"(got {len(out) - 1})", name, cab)
                out = [f"{out[0]}={out[1]}"]
            args += out
        elif out is not None:
            args.append(out)
    return head + args + tail


def build_argv(cab: Cab, params: dict, subst: Optional[Callable[[str], str]] = None) -> list[str]:
    """Full argv for a ``binary`` cab: ``shlex.split(command) + args + arguments``.

    :param params: resolved, validated values with defaults filled in (see :func:`fill_defaults`).
    :param subst: optional ``{}``-substitution applied to ``command`` and each of ``args`` (the
        script of a ``sh -c`` command field by field, each value quoted: :mod:`.shellsubst`).
    :raises CommandLineError: for a missing required parameter, a list without a repeat policy ...
    """
    command, args = cab.command, list(cab.args)
    if subst:  # a shell's script word gets its values quoted (plan/shellsubst.py)
        from .shellsubst import substitute_command

        command, args = substitute_command(command, args, subst)
    return shlex.split(command) + list(args) + build_arguments(cab, params)
