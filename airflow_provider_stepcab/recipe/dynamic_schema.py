"""Cabs with a ``dynamic_schema``: inputs/outputs that depend on the step's parameter values.

A cab's ``dynamic_schema: module.function`` names a hook that Stimela 2.1.4 calls as
``function(params, inputs, outputs) -> (inputs, outputs)`` with the step's set parameters (unset
values and the cab's implicit parameters left out) and the cab's own static schema. Stimela calls
it when a step is finalised (with the step's params as written) and again at prevalidation (with
their values substituted), then validates the step against the schema the hook returned, so a
parameter that the hook does not add is an *unknown parameter* error, like any other.

How a hook is run here, in this order:

1. its own module, imported as Stimela does. Hooks may import ``scabha.cargo.Parameter``; where
   the real ``scabha`` is absent (it comes with Stimela, which pins pydantic<2 and can't live
   beside Airflow 3), a stand-in offering only ``scabha.cargo.Parameter`` is importable while the
   hook module is imported and run, and removed afterwards. cult-cargo's wsclean hook runs so.
2. a reproduction of cult-cargo's own hooks whose module needs more than that (OmegaConf and
   ``scabha.schema_utils``): quartical (``{term}.{option}`` inputs for each of ``solver.terms``)
   and cubical (``{jones}.{option}`` inputs for each of ``sol.jones``), built from the schema files
   that cult-cargo ships beside those hooks (:data:`REPRODUCED`).
3. otherwise :class:`DynamicSchemaUnavailable`: validation reports it once per cab, as a warning
   (its parameters can then be neither checked nor passed on the command line).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import importlib
import importlib.util
import os
import sys
import types
from typing import Any, Callable, Iterator, Mapping, Optional

from .data import is_data
from .errors import ERROR, Loc, Problem, Problems, RecipeError
from .model import UNSET, Cab, Parameter
from .deferred import contains_deferred
from .params import PARAM_FIELDS, build_parameter, flatten_into, parse_schema

QUARTICAL_HOOK = "cultcargo.genesis.quartical.external.make_stimela_schema"
CUBICAL_HOOK = "cultcargo.genesis.cubical.make_stimela_schema.make_stimela_schema"


class DynamicSchemaUnavailable(RecipeError, ImportError):
    """The hook's module (or something it imports) can't be imported here, and isn't reproduced."""

    @property
    def reason(self) -> str:
        return self.problems[0].message if self.problems else str(self)


# ----------------------------------------------------------------------------- scabha stand-in
class _ShimParameter:
    """Stand-in for ``scabha.cargo.Parameter``: keeps the fields a hook gives it."""

    def __init__(self, **kw: Any):
        unknown = set(kw) - set(PARAM_FIELDS)
        if unknown:
            raise TypeError(f"unexpected Parameter field(s): {', '.join(sorted(unknown))}")
        self.__dict__.update(kw)
        self._fields = dict(kw)


def _scabha_shim() -> dict:
    scabha = types.ModuleType("scabha")
    cargo = types.ModuleType("scabha.cargo")
    cargo.Parameter = _ShimParameter  # type: ignore[attr-defined]
    scabha.cargo = cargo  # type: ignore[attr-defined]
    scabha.__path__ = []  # type: ignore[attr-defined]
    return {"scabha": scabha, "scabha.cargo": cargo}


def module_findable(module: str) -> bool:
    """Can ``module`` be found (without importing it; its parent packages are imported)?"""
    if module in sys.modules:
        return True
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


@contextlib.contextmanager
def scabha_importable() -> Iterator[None]:
    """While active, ``import scabha.cargo`` works (the real one, else the stand-in, removed after)."""
    shim = {} if module_findable("scabha") else _scabha_shim()
    added = [k for k in shim if k not in sys.modules]
    sys.modules.update({k: shim[k] for k in added})
    try:
        yield
    finally:
        for k in added:
            sys.modules.pop(k, None)


# ----------------------------------------------------------------------------- reproductions
def _package_file(package: str, name: str) -> str:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DynamicSchemaUnavailable(f"package '{package}' is not installed")
    path = os.path.join(list(spec.submodule_search_locations)[0], name)
    if not os.path.exists(path):
        raise DynamicSchemaUnavailable(f"'{path}' is missing")
    return path


@functools.lru_cache(maxsize=8)
def _schema_file(package: str, name: str, section: tuple) -> tuple:
    """``(name, Parameter)`` pairs of one section of a schema file that a package ships."""
    from .yamlio import load_yaml_file
    path = _package_file(package, name)
    node = load_yaml_file(path)
    key_path = name
    for key in section:
        node = node.get(key) if isinstance(node, dict) else None
        key_path = f"{key_path}:{key}"
    problems = Problems()
    schema = parse_schema(node, key_path, problems)
    if problems.errors:
        raise DynamicSchemaUnavailable(f"can't read '{path}': {problems.errors[0]}")
    return tuple(schema.items())


def _renamed(p: Parameter, name: str) -> Parameter:
    return dataclasses.replace(p, name=name)


def _quartical(params: dict, inputs: dict, outputs: dict) -> tuple[dict, dict]:
    """cult-cargo's quartical hook: every gain-term option as ``{term}.{option}``."""
    inputs = dict(inputs)
    solver = params.get("solver")
    terms = solver.get("terms") if isinstance(solver, Mapping) else params.get("solver.terms")
    if terms is None:
        default = dict(_schema_file("cultcargo.genesis.quartical", "argument_schema.yaml", ()))
        terms = default["solver.terms"].default
    gain = _schema_file("cultcargo.genesis.quartical", "gain_schema.yaml", ("gain",))
    for term in terms:
        for key, p in gain:
            inputs[f"{term}.{key}"] = _renamed(p, f"{term}.{key}")
    return inputs, outputs


def _cubical(params: dict, inputs: dict, outputs: dict) -> tuple[dict, dict]:
    """cult-cargo's cubical hook: every Jones-term option as ``{jones}.{option}`` (lower case)."""
    inputs = dict(inputs)
    template = _schema_file("cultcargo.genesis.cubical", "schema_JONES_TEMPLATE.yaml", ("JONES_TEMPLATE",))
    for jones in params.get("sol.jones", []):
        for key, p in template:
            inputs[f"{jones.lower()}.{key}"] = _renamed(p, f"{jones.lower()}.{key}")
    return inputs, outputs


#: hooks of cult-cargo 0.2.1 reproduced here, for when their own module can't be imported
REPRODUCED: dict[str, Callable] = {QUARTICAL_HOOK: _quartical, CUBICAL_HOOK: _cubical}


# ----------------------------------------------------------------------------- running a hook
def _import_hook(spec: str) -> Callable:
    module_name, func_name = spec.rsplit(".", 1)
    with scabha_importable():
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise DynamicSchemaUnavailable(f"can't import dynamic schema module '{module_name}': {exc}") from exc
    func = getattr(module, func_name, None)
    if not callable(func):
        raise DynamicSchemaUnavailable(f"'{spec}' is not a callable in module '{module_name}'")
    return func


def load_dynamic_schema(spec: str) -> Callable:
    """The hook ``module.function``: its own code if it imports here, else its reproduction.

    :raises DynamicSchemaUnavailable: (a :class:`RecipeError` and an :class:`ImportError`) naming
        the module, if neither.
    """
    try:
        return _import_hook(spec)
    except DynamicSchemaUnavailable:
        if spec in REPRODUCED:
            return REPRODUCED[spec]
        raise


def hook_params(cab: Cab, params: Mapping[str, Any]) -> dict:
    """What Stimela hands a hook: set values only, without the cab's implicit parameters."""
    implicit = {n for n, p in cab.schema.items() if p.implicit is not UNSET and p.implicit is not None}
    return {k: v for k, v in params.items() if v is not UNSET and k not in implicit}


def _fields_of(value: Any) -> dict:
    if isinstance(value, _ShimParameter):
        return value._fields
    if isinstance(value, dict):
        return value
    if hasattr(value, "__dataclass_fields__"):  # a real scabha Parameter
        fields = {f: getattr(value, f) for f in PARAM_FIELDS if hasattr(value, f)}
        return {k: v for k, v in fields.items() if v not in (None, (), "<UNSET DEFAULT VALUE>")}
    return {k: value[k] for k in value} if hasattr(value, "keys") else {}


def _to_parameter(name: str, value: Any, is_output: bool, problems: Problems, key_path: str) -> Parameter:
    from .yamlio import to_plain
    if isinstance(value, Parameter):
        return value if value.is_output == is_output and value.name == name else \
            dataclasses.replace(value, name=name, is_output=is_output)
    fields = to_plain({k: (dict(v) if hasattr(v, "keys") and not isinstance(v, dict) else v)
                       for k, v in _fields_of(value).items()})
    return build_parameter(name, fields, Loc(f"<dynamic schema {key_path}>"), f"{key_path}.{name}", problems,
                           is_output=is_output)


def apply_dynamic_schema(cab: Cab, params: Mapping[str, Any], problems: Optional[Problems] = None) -> Cab:
    """A copy of ``cab`` with the inputs/outputs its ``dynamic_schema`` hook gives for ``params``.

    Call it for every step of such a cab once the step's parameter values are known (Stimela does
    so at prevalidation), then validate the step's params against the returned cab's schema
    (a name it doesn't have is an unknown parameter) and build the argv from the returned cab.

    :param params: the step's values by name, formulas and substitutions evaluated; unset values
        and the cab's implicit parameters are left out before the hook sees them.
    :returns: ``cab`` itself when it has no hook, else a new :class:`Cab`.
    :raises DynamicSchemaUnavailable: the hook's module can't be imported (and isn't reproduced).
    :raises RecipeError: the hook failed, or returned something that isn't a schema.
    """
    if not cab.dynamic_schema:
        return cab
    problems = problems if problems is not None else Problems()
    key_path = f"cabs.{cab.name}.dynamic_schema"
    try:
        func = load_dynamic_schema(cab.dynamic_schema)
    except DynamicSchemaUnavailable as exc:
        raise DynamicSchemaUnavailable(Problem(cab.loc, key_path, exc.reason, ERROR,
                                               "dynamic-schema-unavailable")) from exc
    try:
        with scabha_importable():
            inputs, outputs = func(hook_params(cab, params), dict(cab.inputs), dict(cab.outputs))
        new = copy.copy(cab)
        new.inputs = {n: _to_parameter(n, v, False, problems, key_path) for n, v in inputs.items()}
        new.outputs = {n: _to_parameter(n, v, True, problems, key_path) for n, v in outputs.items()}
    except Exception as exc:  # noqa: BLE001 - a user hook may raise anything
        problems.error(cab.loc, key_path, f"error evaluating dynamic schema '{cab.dynamic_schema}': "
                       f"{type(exc).__name__}: {exc}", "dynamic-schema")
        raise RecipeError(problems.errors) from exc
    problems.raise_if_errors()
    return new


def unavailable_message(cab: Cab, reason: Any) -> str:
    """The one warning for a cab whose hook can't run here."""
    return (f"cab '{cab.name}': dynamic schema '{cab.dynamic_schema}' can't be run here ({reason}): the "
            f"parameters it would add can't be checked, and are not passed on the command line")


def flatten_params(params: Mapping[str, Any], schema: Mapping[str, Any],
                   locs: Optional[Mapping[str, Loc]] = None) -> tuple[dict, dict]:
    """Params with nested mappings flattened to dotted names where ``schema`` has such names.

    Stimela gives a dynamic-schema hook the step's params as written (``K: {type: delay}``) and
    flattens them with the schema the hook returned (``K.type``). Call this with the schema of
    :func:`apply_dynamic_schema`'s cab before validating and building the argv.

    :param locs: locations of ``params`` by name (kept; flattened names get their own or their parent's).
    :returns: ``(params, locs)``.
    """
    out: dict = {}
    out_locs: dict = {}
    flatten_into(dict(params), "", schema, set(), out, out_locs)  # what every step gets at build time
    locs = locs or {}
    for name in out:
        parent = next((p for p in locs if name == p or name.startswith(f"{p}.")), None)
        if parent is not None and (name == parent or not out_locs.get(name) or not out_locs[name].line):
            out_locs[name] = locs[parent]
    return out, out_locs


def step_schema(cab: Cab, params: Mapping[str, Any], problems: Problems,
                locs: Optional[Mapping[str, Loc]] = None) -> tuple[dict, list, dict, dict]:
    """The schema to check a step's params against before they are evaluated (``stepcab validate``).

    The hook runs with the values known now (literals, and data: :func:`.data.is_data`); formulas
    and substitutions are left out.
    A hook that can't run here is reported once per cab, as a warning (by :func:`.cab.build_cab`
    when its module isn't installed at all).

    :returns: ``(schema, pending, params, locs)``: the schema; the names whose values were left out
        (or ``["*"]`` if the hook could not run): while ``pending`` is not empty, a name missing
        from the schema may still be added once those values are known, so it is not an error yet;
        and the params (and their locations) flattened with the schema (:func:`flatten_params`).
    """
    pending = [name for name, value in params.items() if contains_deferred(value) and not is_data(value)]
    known = {name: value for name, value in params.items() if name not in pending}
    try:
        schema = apply_dynamic_schema(cab, known).schema
    except DynamicSchemaUnavailable as exc:
        module = str(cab.dynamic_schema).rsplit(".", 1)[0]
        if module_findable(module):  # else build_cab said it already
            problems.warning(cab.loc, f"cabs.{cab.name}.dynamic_schema", unavailable_message(cab, exc.reason),
                             "dynamic-schema-unavailable")
        return cab.schema, ["*"], dict(params), dict(locs or {})
    except RecipeError as exc:
        if not pending:  # else it may fail only for want of the values left out
            problems.extend(exc.problems)
        return cab.schema, pending or [], dict(params), dict(locs or {})
    flat, flat_locs = flatten_params(params, schema, locs)
    return schema, pending, flat, flat_locs
