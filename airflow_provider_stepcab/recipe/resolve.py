"""Resolving parameter values of every step, as far as they can be known before running.

Follows Stimela's prevalidation order: the recipe's own parameters (given, else defaults),
``assign``/``assign_based_on``, alias values pushed from the recipe down to steps, then each step
in order with ``current``/``previous``/``steps.<label>`` namespaces. Anything that can only be known
at run time (outputs of earlier steps, ``GLOB``/``EXISTS``, ``config.run.*``) becomes an
:class:`Unresolved` value carrying the text as written and the reason. For-loops are unrolled.

Nothing here does I/O; recipes are not modified (values are copied).
"""

from __future__ import annotations

import re
from dataclasses import field
from typing import Any, Iterator, Mapping, Optional

from .aliases import implicit_aliases
from .errors import FormulaError, Loc, Problems
from .model import UNSET, Recipe, Step
from .records import record
from .validate import is_deferred, is_formula_text

_RUNTIME_FUNCS = r"\b(GLOB|EXISTS)\s*\("  # compiled by ``re`` on first use
_MISSING = object()
CLI_LOC = Loc("<command line>", 0)


class Unresolved:
    """A value only known at run time: ``text`` as written, ``reason`` why."""

    def __init__(self, text: Any, reason: str):
        self.text = text
        self.reason = reason

    def __str__(self) -> str:
        return str(self.text)

    def __repr__(self) -> str:
        return f"Unresolved({self.text!r}: {self.reason})"

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, Unresolved) and (self.text, self.reason) == (other.text, other.reason)

    def __hash__(self) -> int:
        return hash((str(self.text), self.reason))


class NS(dict):
    """A namespace dict where dotted keys (``input_ms.path``, ``step.param``) are also reachable
    one component at a time (``ns["input_ms"]["path"]``), as formulas and substitutions walk them."""

    def _sub(self, key: str) -> Optional["NS"]:
        prefix = f"{key}."
        sub = NS({k[len(prefix):]: v for k, v in self.items() if isinstance(k, str) and k.startswith(prefix)})
        return sub or None

    def __contains__(self, key: object) -> bool:
        return dict.__contains__(self, key) or (isinstance(key, str) and self._sub(key) is not None)

    def __getitem__(self, key: Any) -> Any:
        if dict.__contains__(self, key):
            return dict.__getitem__(self, key)
        sub = self._sub(key) if isinstance(key, str) else None
        if sub is None:
            raise KeyError(key)
        return sub

    def get(self, key: Any, default: Any = None) -> Any:
        return self[key] if key in self else default


@record
class ResolvedStep:
    """One cab step with its parameters resolved as far as possible."""

    fqname: str                       # outer.inner.step, with loop indices (outer.loop.0.step)
    path: tuple                       # step labels from the top recipe
    step: Step
    recipes: list                     # recipe chain, outermost first
    params: dict                      # name -> value (maybe Unresolved)
    skip: Any = False                 # True / False / Unresolved
    loop: Optional[dict] = None       # {"var", "value", "index", "scatter"} of the innermost loop
    command_ns: dict = field(default_factory=dict)  # namespaces for {} in command/args

    @property
    def unresolved(self) -> dict:
        return {k: v for k, v in self.params.items() if isinstance(v, Unresolved)}


def _contains_unresolved(value: Any) -> bool:
    if isinstance(value, Unresolved):
        return True
    if isinstance(value, (list, tuple)):
        return any(_contains_unresolved(v) for v in value)
    if isinstance(value, Mapping):
        return any(_contains_unresolved(v) for v in value.values())
    return False


def _walk(ns: Any, ref: str) -> Any:
    node = ns
    for part in ref.split("."):
        if isinstance(node, Unresolved):
            return node
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        else:
            return _MISSING
    return node


def references(value: Any) -> set:
    """Dotted names read by a value (formula or substitution), recursively."""
    from .subst import subst_references
    if isinstance(value, str):
        if is_formula_text(value):
            from .formula import formula_references
            return set(formula_references(value))
        return set(subst_references(value)) if "{" in value else set()
    if isinstance(value, (list, tuple)):
        return set().union(*[references(v) for v in value]) if value else set()
    if isinstance(value, Mapping):
        return set().union(*[references(v) for v in value.values()]) if value else set()
    return set()


def _has_runtime_funcs(value: Any) -> bool:
    if isinstance(value, str):
        return is_formula_text(value) and bool(re.search(_RUNTIME_FUNCS, value))
    if isinstance(value, (list, tuple)):
        return any(_has_runtime_funcs(v) for v in value)
    if isinstance(value, Mapping):
        return any(_has_runtime_funcs(v) for v in value.values())
    return False


def _deferred(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return any(_deferred(v) for v in value)
    if isinstance(value, Mapping):
        return any(_deferred(v) for v in value.values())
    return is_deferred(value) or (isinstance(value, str) and value.startswith("=="))


def evaluate(value: Any, ns: Mapping, *, allow_io: bool = False) -> Any:
    """Evaluate a value as written, or return :class:`Unresolved` when it depends on run time."""
    if isinstance(value, Unresolved) or not _deferred(value):
        return value
    if not allow_io and _has_runtime_funcs(value):
        return Unresolved(value, "uses the filesystem (GLOB/EXISTS): evaluated at run time")
    try:
        refs = references(value)
    except FormulaError as exc:
        return Unresolved(value, f"bad expression: {exc}")
    for ref in sorted(refs):
        if ref.startswith("config.run.") or ref == "config.run":
            return Unresolved(value, f"'{ref}' is known at run time")
        hit = _walk(ns, ref)
        if isinstance(hit, Unresolved) or _contains_unresolved(hit):
            return Unresolved(value, f"depends on '{ref}', known at run time")
    from .subst import evaluate_value
    try:
        return evaluate_value(value, ns)
    except FormulaError as exc:
        name = getattr(exc, "name", None)
        reason = f"'{name}' is not known before running" if name else str(exc)
        return Unresolved(value, reason)
    except Exception as exc:  # noqa: BLE001 - evaluation errors are reported, not raised
        return Unresolved(value, f"{type(exc).__name__}: {exc}")


def evaluate_params(raw: Mapping[str, Any], base_ns: Mapping[str, Any], *, allow_io: bool = False) -> dict:
    """Evaluate every parameter; ``current.x`` references are resolved first (lazily)."""
    done: dict = {}
    busy: set = set()
    current = NS(raw)

    def get(name: str) -> Any:
        if name in done:
            return done[name]
        if name in busy:
            return Unresolved(raw[name], "circular reference")
        busy.add(name)
        value = raw[name]
        try:
            refs = references(value) if _deferred(value) else set()
        except FormulaError:
            refs = set()
        for ref in refs:
            head, _, rest = ref.partition(".")
            if head == "current" and rest:
                for key in raw:
                    if rest == key or rest.startswith(f"{key}."):
                        current[key] = get(key)
        ns = dict(base_ns, current=current)
        result = evaluate(value, ns, allow_io=allow_io)
        busy.discard(name)
        done[name] = current[name] = result
        return result

    for name in list(raw):
        get(name)
    return {k: v for k, v in done.items() if v is not UNSET}


class Resolver:
    """Walks a recipe (recursively, loops unrolled) yielding :class:`ResolvedStep` objects."""

    def __init__(self, config_tree: Any, problems: Problems, *, allow_io: bool = False,
                 step_outputs: Optional[Mapping[str, Mapping]] = None):
        from .yamlio import to_plain
        self.config = NS(to_plain(config_tree or {}))
        self.problems = problems
        self.allow_io = allow_io
        self.step_outputs = step_outputs or {}

    # ---------------------------------------------------------------- recipes
    def recipe(self, recipe: Recipe, params: Mapping[str, Any], *, fqname: str, path: tuple = (),
               chain: tuple = (), parent_ns: Optional[dict] = None, root_ns: Optional[dict] = None,
               key_path: str = "", locs: Optional[Mapping[str, Loc]] = None) -> Iterator[ResolvedStep]:
        own, step_over = self._split(recipe, params, key_path, locs or {})
        assigned_steps: dict = {}
        fl = recipe.for_loop
        values: list = [None]
        if fl is not None:
            over = fl.over
            if isinstance(over, str):
                over = own.get(over, recipe.assign.get(over, UNSET))
            over = evaluate(over, self._ns(recipe, own, {}, parent_ns, root_ns, fqname), allow_io=self.allow_io)
            if isinstance(over, Unresolved) or over is UNSET:
                values = [Unresolved(fl.over, "loop values known at run time")]
            else:
                values = list(over) if isinstance(over, (list, tuple)) else [over]
        for index, value in enumerate(values):
            p = dict(own)
            loop = None
            task = fqname
            vars_: dict = {}
            if fl is not None:
                if fl.var in recipe.inputs or fl.var in recipe.outputs:
                    p[fl.var] = value
                else:
                    vars_[fl.var] = value
                vars_[f"{fl.var}@index"] = index
                loop = {"var": fl.var, "value": value, "index": index, "scatter": fl.scatter,
                        "count": len(values)}
                task = f"{fqname}.{index}"
            p = self._defaults(recipe, p)
            ns0 = self._ns(recipe, p, vars_, parent_ns, root_ns, fqname)
            vars_, assigned_steps = self._assign(recipe, recipe, p, vars_, ns0, key_path)
            p = evaluate_params(p, self._ns(recipe, p, vars_, parent_ns, root_ns, fqname), allow_io=self.allow_io)
            self._check_missing(recipe, p, key_path)
            yield from self._steps(recipe, p, vars_, step_over, assigned_steps, task, path, chain + (recipe,),
                                   parent_ns, root_ns, loop, key_path)

    def _split(self, recipe: Recipe, params: Mapping, key_path: str, locs: Mapping) -> tuple[dict, dict]:
        own, step_over = {}, {}
        for name, value in params.items():
            if name in recipe.inputs or name in recipe.outputs:
                own[name] = value
            elif "." in name and name.split(".", 1)[0] in recipe.steps:
                label, sub = name.split(".", 1)
                step_over.setdefault(label, {})[sub] = value
            else:
                self.problems.error(locs.get(name, CLI_LOC), f"{key_path or recipe.name}.{name}",
                                    f"'{name}' is not a known parameter or step of recipe '{recipe.name}'",
                                    "unknown-param")
        return own, step_over

    @staticmethod
    def _defaults(cargo: Any, params: dict) -> dict:
        out = dict(params)
        for name, schema in cargo.schema.items():
            if name in out:
                continue
            if name in cargo.defaults:
                out[name] = cargo.defaults[name]
            elif schema.default is not UNSET and schema.default != "UNSET":
                out[name] = schema.default
            elif schema.implicit is not UNSET and schema.implicit is not None:
                out[name] = schema.implicit
        return out

    def _ns(self, recipe: Recipe, params: dict, vars_: dict, parent_ns: Optional[dict],
            root_ns: Optional[dict], fqname: str, label: str = "") -> dict:
        rec = NS({**params, **vars_})
        parts = label.split("-") if label else []
        info = {"fqname": f"{fqname}.{label}" if label else fqname, "taskname": f"{fqname}.{label}" if label
                else fqname, "label": label, "label_parts": parts,
                "suffix": parts[-1] if len(parts) > 1 else ""}
        ns = {"recipe": rec, "root": root_ns if root_ns is not None else rec, "current": rec,
              "previous": NS(), "steps": NS(), "info": info, "self": info, "config": self.config}
        if parent_ns is not None:
            ns["parent"] = parent_ns
        return ns

    def _assign(self, recipe: Recipe, whose: Any, params: dict, vars_: dict, ns: dict,
                key_path: str) -> tuple[dict, dict]:
        """Apply ``assign`` then ``assign_based_on`` of ``whose`` (recipe or step)."""
        vars_ = dict(vars_)
        to_steps: dict = {}
        blocks = [whose.assign]
        for var, cases in (whose.assign_based_on or {}).items():
            value = _walk({**ns["recipe"], **vars_}, var) if not var.startswith("config.") else \
                _walk(self.config, var[len("config."):])
            if value is _MISSING and var in recipe.schema and recipe.schema[var].default is not UNSET:
                value = recipe.schema[var].default
            if value is _MISSING or isinstance(value, Unresolved):
                continue
            key = str(value)
            if key not in cases:
                if "DEFAULT" not in cases:
                    self.problems.error(getattr(whose, "loc", recipe.loc), f"{key_path}.assign_based_on.{var}",
                                        f"neither the '{var}={value}' case nor a DEFAULT case is defined",
                                        "assign-based-on")
                    continue
                key = "DEFAULT"
            if cases[key]:
                blocks.append(cases[key])
        for block in blocks:
            for key, raw in (block or {}).items():
                ns_now = dict(ns, recipe=NS({**ns["recipe"], **vars_}))
                value = evaluate(raw, ns_now, allow_io=self.allow_io)
                head = key.split(".", 1)[0]
                if key in recipe.schema:
                    if key not in params:
                        params[key] = value
                elif "." in key and head in recipe.steps:
                    to_steps.setdefault(head, {})[key.split(".", 1)[1]] = value
                elif head in ("config", "log"):
                    continue  # config/log assignments do not change step parameters at plan time
                else:
                    vars_[key] = value
        return vars_, to_steps

    def _check_missing(self, cargo: Any, params: dict, key_path: str) -> None:
        for name, schema in cargo.inputs.items():
            if schema.required and params.get(name, UNSET) is UNSET and not _implicit(schema):
                self.problems.error(schema.loc if schema.loc.line else cargo.loc, f"{key_path or cargo.name}.{name}",
                                    f"missing required parameter '{name}'", "missing-param")
                params[name] = Unresolved(f"<{name}?>", "missing required parameter")

    # ---------------------------------------------------------------- steps
    def _steps(self, recipe: Recipe, params: dict, vars_: dict, step_over: dict, assigned: dict, fqname: str,
               path: tuple, chain: tuple, parent_ns: Optional[dict], root_ns: Optional[dict],
               loop: Optional[dict], key_path: str) -> Iterator[ResolvedStep]:
        rec_ns = NS({**params, **vars_})
        root = root_ns if root_ns is not None else rec_ns
        from_recipe: dict = {}
        skip_up = implicit_aliases(recipe)
        for alias, targets in recipe.aliases.items():
            if alias in params and alias not in skip_up:
                for t in targets:
                    label, pname = t.split(".", 1)
                    from_recipe.setdefault(label, {})[pname] = params[alias]
        previous: dict = NS()
        steps_ns: dict = NS()
        for label, step in recipe.steps.items():
            skey = f"{key_path or recipe.name}.steps.{label}"
            raw = {**step.params, **from_recipe.get(label, {}), **assigned.get(label, {}),
                   **step_over.get(label, {})}
            cargo = step.cargo
            ns = self._ns(recipe, params, vars_, parent_ns, root, fqname, label)
            ns.update(previous=previous, steps=steps_ns, recipe=rec_ns, root=root)
            svars, to_steps = self._assign(recipe, step, params, vars_, ns, skey)
            ns["recipe"] = NS({**params, **svars})
            raw.update(to_steps.get(label, {}))
            sub_over = {}
            if cargo is not None:
                if step.recipe is not None:
                    sub_over = {k: v for k, v in raw.items() if k not in cargo.schema}
                    raw = {k: v for k, v in raw.items() if k in cargo.schema}
                raw = self._defaults(cargo, raw)
            values = evaluate_params(raw, ns, allow_io=self.allow_io)
            skip = step.skip if isinstance(step.skip, bool) else evaluate(step.skip, dict(ns, current=NS(values)))
            if "never" in step.tags:
                skip = True
            spath, sfq = path + (label,), f"{fqname}.{label}"
            if step.recipe is not None:
                yield from self.recipe(step.recipe, {**values, **sub_over}, fqname=sfq, path=spath, chain=chain,
                                       parent_ns=ns["recipe"], root_ns=root, key_path=f"{skey}.recipe",
                                       locs=step.param_locs)
            elif step.cab is not None:
                yield ResolvedStep(fqname=sfq, path=spath, step=step, recipes=list(chain), params=values,
                                   skip=skip, loop=loop, command_ns=dict(ns, current=NS(values)))
            outs = dict(values)
            if cargo is not None:
                for name in cargo.outputs:
                    if name not in outs:
                        outs[name] = Unresolved(f"{label}.{name}", f"output of step '{label}'")
            outs.update(self.step_outputs.get(sfq, {}))
            previous = NS(outs)
            steps_ns[label] = previous
            for alias, targets in recipe.aliases.items():
                if alias not in params:
                    for t in targets:
                        tl, pname = t.split(".", 1)
                        if tl == label and pname in outs:
                            params[alias] = outs[pname]
                            rec_ns[alias] = outs[pname]
                            break


def _implicit(schema: Any) -> bool:
    return schema.implicit is not UNSET and schema.implicit is not None


def resolve_recipe(recipe: Recipe, config_tree: Any, params: Optional[Mapping[str, Any]] = None, *,
                   problems: Optional[Problems] = None, allow_io: bool = False,
                   step_outputs: Optional[Mapping[str, Mapping]] = None,
                   param_locs: Optional[Mapping[str, Loc]] = None) -> list[ResolvedStep]:
    """Resolve every cab step of ``recipe`` (nested recipes flattened, loops unrolled).

    :param params: recipe inputs, or ``label.param`` values for steps (as on the command line).
    :param problems: receives missing parameters, unknown names, assign_based_on failures.
    :param allow_io: evaluate ``GLOB``/``EXISTS`` (run time) instead of deferring them.
    :param step_outputs: fqname → outputs of steps that already ran (run time).
    """
    problems = problems if problems is not None else Problems()
    res = Resolver(config_tree, problems, allow_io=allow_io, step_outputs=step_outputs)
    return list(res.recipe(recipe, dict(params or {}), fqname=recipe.name, locs=param_locs or {}))
