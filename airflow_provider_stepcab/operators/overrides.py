"""Trigger-time overrides from a DAG run's ``conf`` (and the DAG params), checked against the
trigger-time policy (:mod:`.trigger_policy`, ``docs/security.md``).

The conf shape, everything optional::

    {
      "<recipe input>": value,                  # also settable through the trigger form (DAG params)
      "stepcab_workdir": "/path",               # a literal absolute path (runtime/workdir.py)
      "steps": {
        "<step path>": {                        # "cal.flag" (labels from the top recipe), a glob, or "*"
          "params": {"<param>": value},         # replaces the value written in the recipe
          "backend": {"select": "native", ...}, # only what the policy allows: select among the
                                                # backends the files allow, resource knobs within limits
          "skip": true                          # force-skip (false: run it whatever its skip and
                                                # skip_if_outputs say, as Stimela's -e unskip)
        }
      },
      "select": ["cal", "image.*"],             # run only these steps (and their sub-steps)
      "skip_steps": ["cal.flag"],               # skip these
      "tags": ["quick"], "skip_tags": ["slow"], # like stimela -t / --skip-tags
      "enable_steps": ["held"]                  # run these even if the recipe skips them
    }

``select``/``skip_steps``/``tags``/``skip_tags``/``enable_steps`` are ``stimela run``'s
``-s``/``-k``/``-t``/``--skip-tags``/``-e`` with its rules (:mod:`..recipe.selection`, the one
implementation ``stepcab run`` uses too): names relative to the top recipe (``sub.step``),
``A:B`` ranges, globs; a tag applies to the top recipe's steps (``sub.TAG``: to ``sub``'s);
a step tagged ``never`` runs only when selected by name or tag; a ``select`` entry naming one
step unskips it (``skip``, ``skip_if_outputs``), as ``-s STEP`` does. A name or tag that the
recipe does not have fails the run (every task) with a message naming it.

A recipe input whose default lays out the DAG (the values of a ``for_loop`` unrolled into one
TaskGroup per value because it holds another loop, :mod:`..dag_factory.unrolling`) can't be given
another value: the conf is refused, saying why.

More specific keys win: ``"*"`` < globs < the exact path. A key that matches no step,
a parameter unknown to the step (for a ``dynamic_schema`` cab: one its hook does not add for the
values the recipe resolves to in this run, :func:`~..recipe.step_schemas.accepted_schemas`, as
Stimela checks its command line), a value of the wrong dtype, a backend setting the policy keeps
for files, or an unknown top-level key fails the task with a message naming it
(``conf.steps.cal.params.bogus: ...``). Every step task checks the whole conf before it does
anything else, so a refused conf runs nothing.

**Values from the conf and the form are data.** :func:`parse_overrides` wraps them with
:func:`~..recipe.data.as_data` (strings become :class:`~..recipe.data.ConfValue`); the resolver
must take such a value as it is: no ``=formula``, no ``{}`` substitution, no second substitution
when a recipe string refers to it. :attr:`StepOverrides.from_conf` names the recipe inputs that
came from there; every value in :meth:`StepOverrides.params_for` and
:meth:`StepOverrides.backend_for` did. A recipe input the form left at the recipe's own default
is the recipe's value as written (the file's, so trusted and evaluated as usual).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

from airflow_provider_stepcab.operators.trigger_policy import (
    CACHE_PARAM, PolicyViolation, TriggerPolicy, check_backend, check_cache, check_param, check_workdir, recipe_limits)
from airflow_provider_stepcab.recipe.data import ConfValue, as_data, is_data  # noqa: F401 - the resolver's contract
from airflow_provider_stepcab.recipe.errors import RecipeError
from airflow_provider_stepcab.runtime.workdir import WORKDIR_PARAM

STEP_KEYS = ("params", "backend", "skip")
LIST_KEYS = ("select", "skip_steps", "tags", "skip_tags", "enable_steps")
TOP_KEYS = ("steps", WORKDIR_PARAM, CACHE_PARAM) + LIST_KEYS


def _names(cargo: Any) -> set:
    names = set(cargo.inputs) | set(cargo.outputs)
    return names


def _has_dynamic_schema(step: Any) -> bool:
    return step is not None and step.cab is not None and bool(step.cab.dynamic_schema)


def _dynamic_target(recipe: Any, name: str) -> Optional[tuple[tuple, str]]:
    """``(step path, param)`` when ``name`` (``solve.K.type``, ``sub.solve.K.type``) names a
    parameter of a ``dynamic_schema`` cab step that its static schema lacks, else ``None``."""
    cargo, path = recipe, ()
    while "." in name and getattr(cargo, "steps", None):
        head, name = name.split(".", 1)
        step = cargo.steps.get(head)
        if step is None:
            return None
        path += (head,)
        if _has_dynamic_schema(step):
            return (path, name) if not _accepts(step.cargo, name) else None
        cargo = step.recipe
    return None


@dataclass
class _Pending:
    """A trigger-time param that only a step's dynamic schema may add (checked once resolved)."""

    where: str          # the conf key, for messages
    pname: str          # the step's parameter name
    value: Any
    paths: list         # the dynamic-schema cab steps it is meant for
    required: bool      # no step's static schema has it: refused unless a dynamic one adds it
    store: Any          # (mapping, key) where the checked value goes
    conf_key: Optional[str] = None  # its ``steps.<key>``, if given there


def _accepts(cargo: Any, name: str) -> bool:
    """``cargo`` (cab or recipe) has parameter ``name``; recipes also take ``sub.param``."""
    if name in _names(cargo):
        return True
    if getattr(cargo, "steps", None) and "." in name:
        head, rest = name.split(".", 1)
        step = cargo.steps.get(head)
        return step is not None and _accepts(step.cargo, rest)
    return False


@dataclass
class StepOverrides:
    """Validated trigger-time overrides (see the module docstring)."""

    recipe_params: dict = field(default_factory=dict)
    #: names in ``recipe_params`` whose values came from the conf or the form (data)
    from_conf: set = field(default_factory=set)
    steps: dict = field(default_factory=dict)  # key -> {"params": {}, "backend": {}, "skip": bool}
    select: list = field(default_factory=list)
    skip_steps: list = field(default_factory=list)
    tags: list = field(default_factory=list)
    skip_tags: list = field(default_factory=list)
    enable_steps: list = field(default_factory=list)
    #: the step choice of the lists above (:func:`~..recipe.selection.select_steps`)
    choice: Any = None
    #: ``path -> tags`` of the recipe's steps, for the reasons given
    step_tags: dict = field(default_factory=dict)
    #: ``steps`` key -> param -> dotted paths of the steps whose dynamic schema adds that param
    dynamic: dict = field(default_factory=dict)

    def _ranked(self, path: tuple) -> list:
        """``(key, entry)`` of the ``steps`` entries matching ``path``, least specific first."""
        dotted = ".".join(path)
        ranked = []
        for key, value in self.steps.items():
            if key == dotted:
                ranked.append((2, key, value))
            elif key == "*" or fnmatch.fnmatchcase(dotted, key):
                ranked.append((0 if key == "*" else 1, key, value))
        return [(k, v) for _, k, v in sorted(ranked, key=lambda x: x[0])]

    def _matching(self, path: tuple) -> list:
        return [v for _, v in self._ranked(path)]

    def params_for(self, path: tuple, cargo: Any) -> dict:
        """Override values for the step at ``path`` (only names ``cargo`` accepts, or its dynamic
        schema adds: :attr:`dynamic`)."""
        out: dict = {}
        dotted = ".".join(path)
        for key, entry in self._ranked(path):
            added = self.dynamic.get(key, {})
            out.update({k: v for k, v in (entry.get("params") or {}).items()
                        if _accepts(cargo, k) or dotted in added.get(k, ())})
        return out

    def backend_for(self, path: tuple) -> dict:
        """The backend override mapping for ``path`` (later/more specific keys merged on top)."""
        from airflow_provider_stepcab.recipe.backends import merge_backend_layers

        layers = [e.get("backend") for e in self._matching(path)]
        layers = [{"select": b} if isinstance(b, (str, list)) else b for b in layers if b]
        return dict(merge_backend_layers(*layers)) if layers else {}

    def forced_skip(self, path: tuple) -> Optional[bool]:
        """``True``/``False`` when conf forces (not) skipping the step at ``path``: its
        ``steps.<key>.skip``, else ``False`` for a step the selection unskips (Stimela's ``-e``)."""
        result = None
        for entry in self._matching(path):
            if "skip" in entry:
                result = bool(entry["skip"])
        if result is None and self.choice is not None and tuple(path) in self.choice.unskipped:
            return False
        return result

    def selection_skip(self, path: tuple) -> Optional[str]:
        """Why the step at ``path`` is deselected (it or a step containing it is off by Stimela's
        rules for ``select``/``skip_steps``/``tags``/``skip_tags``), or ``None``."""
        if self.choice is None:
            return None
        path = tuple(path)
        for off in (path[:i] for i in range(1, len(path) + 1)):
            if self.choice.enabled.get(off, True):
                continue
            where = "" if off == path else f" (it is part of step {'.'.join(off)})"
            if "never" in self.step_tags.get(off, ()):
                return f"tagged 'never' and not explicitly selected{where}"
            return f"not selected by conf select/skip_steps/tags/skip_tags{where}"
        return None


def _selection(recipe: Any, out: StepOverrides, errors: list) -> None:
    """The run's step choice by :mod:`..recipe.selection` (the rules of ``stimela run -s -k -t
    --skip-tags -e``); a name or tag the recipe does not have is an error of its conf key."""
    from airflow_provider_stepcab.recipe.selection import Selection, SelectionError, select_steps

    fields = {"select": "steps", "skip_steps": "skip_steps", "tags": "tags", "skip_tags": "skip_tags",
              "enable_steps": "enable_steps"}
    given = {fields[k]: tuple(getattr(out, k)) for k in LIST_KEYS}
    try:
        out.choice = select_steps(recipe, Selection(**given))
    except SelectionError:
        for key in LIST_KEYS:
            try:
                select_steps(recipe, Selection(**{fields[key]: tuple(getattr(out, key))}))
            except SelectionError as exc:
                errors.append(f"conf.{key}: {exc}")
        return
    out.step_tags = {path: tuple(step.tags or ()) for path, step, _ in _walk_chain(recipe)}


def _walk_chain(recipe: Any, prefix: tuple = (), chain: tuple = ()) -> Iterator[tuple[tuple, Any, tuple]]:
    """``(path, step, recipe chain)`` of every step, sub-recipe steps included."""
    chain = chain + (recipe,)
    for label, step in recipe.steps.items():
        yield prefix + (label,), step, chain
        if step.recipe is not None:
            yield from _walk_chain(step.recipe, prefix + (label,), chain)


def _schema(cargo: Any, name: str) -> Any:
    """The :class:`Parameter` behind ``name`` of ``cargo`` (``sub.param`` of a recipe included)."""
    found = cargo.inputs.get(name) or cargo.outputs.get(name)
    if found is None and getattr(cargo, "steps", None) and "." in name:
        head, rest = name.split(".", 1)
        step = cargo.steps.get(head)
        return _schema(step.cargo, rest) if step is not None else None
    return found


_NO_DEFAULT = object()


def _form_default(recipe: Any, name: str) -> Any:
    """What the trigger form shows for input ``name`` when untouched (``dag_factory/params.py``)."""
    from airflow_provider_stepcab.dag_factory.params import param_spec
    from airflow_provider_stepcab.recipe.model import UNSET

    param = recipe.inputs.get(name)
    if param is None:
        return _NO_DEFAULT
    return param_spec(name, param, (recipe.defaults or {}).get(name, UNSET)).get("default", _NO_DEFAULT)


def _recipe_value(recipe: Any, name: str, value: Any, key: str, errors: list) -> tuple[Any, bool]:
    """``(value, from the user)`` of a trigger-time recipe input: the recipe's own default when the
    form left it untouched (trusted: it is the file's), else the checked value as data. An input
    that lays out the DAG (:func:`~..dag_factory.unrolling.fixed_inputs`) can't take another value."""
    from airflow_provider_stepcab.dag_factory.unrolling import fixed_input_note, fixed_inputs
    from airflow_provider_stepcab.recipe.model import UNSET
    from airflow_provider_stepcab.recipe.yamlio import to_plain

    default = _form_default(recipe, name)
    if default is not _NO_DEFAULT and default is not None and value == default:
        param = recipe.inputs[name]
        raw = (recipe.defaults or {}).get(name, param.default)
        return (raw, False) if raw is not UNSET else (value, False)
    checked, problems = check_param(key, _schema(recipe, name), value)
    errors.extend(problems)
    fixed = fixed_inputs(recipe)
    if name in fixed and not problems:
        if checked == check_param(key, _schema(recipe, name), fixed[name])[0]:
            return fixed[name], False
        errors.append(f"{key}: {value!r} differs from the recipe's default {to_plain(fixed[name])!r}, and "
                      f"{fixed_input_note(name)}")
    return as_data(checked), True


def _allowed_backends(config_tree: Any, recipe: Any, matched: list) -> dict:
    """``{dotted step path: backend names}`` the files allow for each matched cab step: its merged
    ``select`` (config, recipes, cab, step) plus the DAG's ``opts.airflow.backend``."""
    from airflow_provider_stepcab.dag_factory.settings import airflow_section, parse_settings
    from airflow_provider_stepcab.recipe.backends import DEFAULT_SELECT, effective_backend, select_list
    from airflow_provider_stepcab.recipe.errors import Problems

    pref = parse_settings(airflow_section(config_tree or {}), recipe.name, Problems()).backend
    out = {}
    for path, step, chain in matched:
        if step.cab is None:
            continue
        _, merged = effective_backend(config_tree or {}, chain, step.cab, step)
        try:
            names = select_list(merged.get("select", DEFAULT_SELECT))
        except ValueError:
            names = []
        out[".".join(path)] = list(dict.fromkeys(names + (select_list(pref) if pref else [])))
    return out


def parse_overrides(conf: dict, recipe: Any, params: Optional[dict] = None, *, config_tree: Any = None,
                    policy: Optional[TriggerPolicy] = None) -> StepOverrides:
    """Validate ``conf`` (and DAG ``params``) against ``recipe`` and the trigger-time policy.

    Every value that came from the conf or the form is checked (dtype, choices, limits) and
    wrapped as data (:func:`~..recipe.data.as_data`), except recipe inputs the form left at the
    recipe's own default (those stay the recipe's, as written).

    :param config_tree: the recipe file's merged config (``opts.backend``, ``opts.airflow``): the
        backends and limits the files allow. ``None``: the recipe's own layers only.
    :param policy: the deployer's part (default: read from the Airflow config).
    :raises RecipeError: naming every bad key, e.g. ``conf.steps.nope: no step of recipe ... matches``
        or ``conf.steps.*.backend.native.virtual_env: may only be set in recipe/cab files ...``.
    """
    policy = policy if policy is not None else TriggerPolicy.from_airflow_config()
    errors: list = []
    pending: list = []
    out = StepOverrides()
    conf, params = dict(conf or {}), dict(params or {})
    control = {k for k in TOP_KEYS if not _accepts(recipe, k)}  # a recipe input keeps its name
    for source in (params, conf):  # conf (hand-written or from the form) wins over DAG params
        for name, value in source.items():
            if name in control or value is None:
                continue
            if _accepts(recipe, name):
                value, from_user = _recipe_value(recipe, name, value, f"conf.{name}", errors)
                out.recipe_params[name] = value
                (out.from_conf.add if from_user else out.from_conf.discard)(name)
            elif source is conf and _dynamic_target(recipe, name) is not None:
                path, pname = _dynamic_target(recipe, name)
                out.recipe_params[name] = as_data(value)
                out.from_conf.add(name)
                pending.append(_Pending(f"conf.{name}", pname, value, [path], True, (out.recipe_params, name)))
            elif source is conf:
                known = ", ".join(sorted(_names(recipe))) or "none"
                errors.append(f"conf.{name}: not a parameter of recipe '{recipe.name}' "
                              f"(recipe parameters: {known}; other keys: {', '.join(sorted(control))})")
    settings = {k: v for k, v in {**params, **conf}.items() if k in control and v is not None}
    for key in LIST_KEYS:
        value = settings.get(key)
        if key not in control or value is None:
            continue
        if isinstance(value, str):
            value = [x.strip() for x in value.split(",") if x.strip()]
        if not isinstance(value, list):
            errors.append(f"conf.{key}: expected a list of step paths/tags, got {value!r}")
            continue
        setattr(out, key, [str(v) for v in value])
    _selection(recipe, out, errors)
    if WORKDIR_PARAM in settings:
        errors += check_workdir(f"conf.{WORKDIR_PARAM}", settings[WORKDIR_PARAM])
    if CACHE_PARAM in settings:
        errors += check_cache(f"conf.{CACHE_PARAM}", settings[CACHE_PARAM])
    steps = (settings.get("steps") or {}) if "steps" in control else {}
    if not isinstance(steps, dict):
        errors.append(f"conf.steps: expected a mapping of step path -> overrides, got {steps!r}")
        steps = {}
    if steps:
        _parse_steps(steps, recipe, out, errors, pending, config_tree=config_tree, policy=policy)
    if pending and not errors:
        _check_dynamic(recipe, out, pending, errors, config_tree)
    if errors:
        raise RecipeError(errors)
    return out


def _parse_steps(steps: dict, recipe: Any, out: StepOverrides, errors: list, pending: list, *,
                 config_tree: Any, policy: TriggerPolicy) -> None:
    all_steps = list(_walk_chain(recipe))
    limits: Optional[dict] = None
    for key, entry in steps.items():
        where = f"conf.steps.{key}"
        matched = [(p, s, c) for p, s, c in all_steps
                   if key == "*" or ".".join(p) == key or fnmatch.fnmatchcase(".".join(p), key)]
        if not matched:
            known = ", ".join(".".join(p) for p, _, _ in all_steps)
            errors.append(f"{where}: no step of recipe '{recipe.name}' matches (steps: {known})")
            continue
        if not isinstance(entry, dict):
            errors.append(f"{where}: expected a mapping with keys {', '.join(STEP_KEYS)}")
            continue
        clean: dict = {}
        for sub in entry:
            if sub not in STEP_KEYS:
                errors.append(f"{where}.{sub}: unknown override (use one of {', '.join(STEP_KEYS)})")
        given = entry.get("params") or {}
        if not isinstance(given, dict):
            errors.append(f"{where}.params: expected a mapping of parameter -> value")
            given = {}
        clean["params"] = {}
        for pname, value in given.items():
            schemas = [_schema(s.cargo, pname) for _, s, _ in matched if _accepts(s.cargo, pname)]
            dynamic = [p for p, s, _ in matched if _has_dynamic_schema(s) and not _accepts(s.cargo, pname)]
            if dynamic:
                pending.append(_Pending(f"{where}.params.{pname}", pname, value, dynamic, not schemas,
                                        (clean["params"], pname), key))
            if not schemas and dynamic:
                clean["params"][pname] = as_data(value)
                continue
            if not schemas:
                names = sorted(set().union(*(_names(s.cargo) for _, s, _ in matched)))
                errors.append(f"{where}.params.{pname}: no such parameter "
                              f"(parameters: {', '.join(names) or 'none'})")
                continue
            for schema in schemas:
                value, problems = check_param(f"{where}.params.{pname}", schema, value)
                errors.extend(problems)
            clean["params"][pname] = as_data(value)
        if "skip" in entry:
            if not isinstance(entry["skip"], bool):
                errors.append(f"{where}.skip: expected true or false, got {entry['skip']!r}")
            clean["skip"] = bool(entry["skip"])
        backend = entry.get("backend")
        if backend is not None:
            if limits is None:
                try:
                    limits = policy.limits_for(recipe_limits(config_tree))
                except PolicyViolation as exc:
                    errors.append(str(exc))
                    limits = {}
            errors += check_backend(f"{where}.backend", backend, policy=policy, limits=limits,
                                    allowed_select=lambda m=matched: _allowed_backends(config_tree, recipe, m))
            clean["backend"] = as_data(backend)
        out.steps[key] = clean


def _check_dynamic(recipe: Any, out: StepOverrides, pending: list, errors: list, config_tree: Any) -> None:
    """Check the params only a step's ``dynamic_schema`` may add against the schema it gives once
    the recipe is resolved with this run's values (:func:`~..recipe.step_schemas.accepted_schemas`),
    as Stimela checks them on its command line; record in :attr:`StepOverrides.dynamic` which steps
    take them."""
    from airflow_provider_stepcab.recipe.step_schemas import accepted_schemas, step_at
    from airflow_provider_stepcab.recipe.suggest import did_you_mean

    def given(path: tuple, cargo: Any) -> dict:
        merged: dict = {}
        for entry in out._matching(path):
            merged.update(entry.get("params") or {})
        return merged

    try:
        schemas = accepted_schemas(recipe, config_tree, out.recipe_params, given)
    except Exception as exc:  # noqa: BLE001 - a recipe that can't be resolved: say so, run nothing
        errors.append(f"{pending[0].where}: can't tell whether the dynamic schema adds it "
                      f"(resolving recipe '{recipe.name}' failed: {exc})")
        return
    for item in pending:
        taken = []
        for path in item.paths:
            accepted = schemas.get(tuple(path))
            if accepted is None or not accepted.accepts(item.pname):
                continue
            taken.append(".".join(path))
            value, problems = check_param(item.where, accepted.get(item.pname), item.value)
            errors.extend(problems)
            item.store[0][item.store[1]] = as_data(value)
        if item.conf_key is not None:
            out.dynamic.setdefault(item.conf_key, {})[item.pname] = set(taken)
        if not taken and item.required:
            cabs = sorted({f"'{step_at(recipe, p).cab.name}' ({step_at(recipe, p).cab.dynamic_schema})"
                           for p in item.paths})
            known = set().union(*(schemas[tuple(p)].names for p in item.paths if tuple(p) in schemas))
            hint = did_you_mean(item.pname, known)
            errors.append(f"{item.where}: no such parameter: the dynamic schema of cab {', '.join(cabs)} does not "
                          f"add '{item.pname}' for the values of step {', '.join('.'.join(p) for p in item.paths)}"
                          + (f"; {hint}" if hint else ""))

