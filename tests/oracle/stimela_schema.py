"""Oracle (runs INSIDE .oracle-venv): the option schemas of Stimela 2.1.4, as JSON.

Usage::

    .oracle-venv/bin/python tests/oracle/stimela_schema.py > tests/oracle/stimela_schema.json

Dumps field names and types of ``StimelaBackendOptions`` (every backend, nested), scabha's
``ParameterPolicies``, ``PathPolicies`` and ``Parameter``; tests/test_stimela_verdicts.py compares
them with ours, so a field Stimela accepts is never rejected here by accident.
"""

import dataclasses
import json
import typing


def describe(tp):
    """A type as JSON: a dataclass -> {field: type}, Dict -> {"<dict>": value type}, List -> ["list", elt]."""
    if dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        return {f.name: describe(hints[f.name]) for f in dataclasses.fields(tp)}
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union:
        args = [a for a in args if a is not type(None)]
        return describe(args[0]) if len(args) == 1 else "Union[" + ",".join(str(describe(a)) for a in args) + "]"
    if origin is dict and args:
        return {"<dict>": describe(args[1])}
    if origin is list and args:
        return ["list", describe(args[0])]
    return getattr(tp, "__name__", str(tp))


def main():
    from scabha.cargo import Parameter, ParameterPolicies, PathPolicies
    from stimela.backends import StimelaBackendOptions
    print(json.dumps({"backend": describe(StimelaBackendOptions), "policies": describe(ParameterPolicies),
                      "path_policies": describe(PathPolicies),
                      "parameter": [f.name for f in dataclasses.fields(Parameter)]}, indent=1))


if __name__ == "__main__":
    main()
