"""Resolving parameter values of every step, as far as they can be known before running.

Follows Stimela's prevalidation order: the recipe's own parameters (given, else defaults),
``assign``/``assign_based_on``, alias values pushed from the recipe down to steps, then each step
in order with ``current``/``previous``/``steps.<label>`` namespaces. Anything that can only be known
at run time (outputs of earlier steps, ``GLOB``/``EXISTS``, ``config.run.*``) becomes an
:class:`Unresolved` value carrying the text as written and the reason. For-loops are unrolled.

Nothing here does I/O; recipes are not modified (values are copied).
"""

from __future__ import annotations

import copy
import re
from dataclasses import field
from typing import Any, Iterator, Mapping, Optional

from .aliases import implicit_aliases
from .data import ConfValue, is_data
from .evaluation import (  # noqa: F401 - re-exported: callers import them from here
    CLI_LOC, Unresolved, NS, LazyNS, given_source, _contains_unresolved, evaluate, evaluate_params)
from .errors import FormulaError, Loc, Problems
from .model import UNSET, Recipe, Step
from .records import record
from .sources import alias_source, default_source
from .sources import written_source as _written
from .validate import is_deferred, is_formula_text

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
    sources: dict = field(default_factory=dict)     # name -> where the value came from (.sources)

    @property
    def unresolved(self) -> dict:
        return {k: v for k, v in self.params.items() if isinstance(v, Unresolved)}


class Resolver:
    """Walks a recipe as Stimela 2.1.4 runs it (nested recipes entered, loops unrolled), yielding a
    :class:`ResolvedStep` per cab step.

    Per recipe level (Stimela's ``Recipe.prevalidate`` then ``Recipe._run``): the recipe's own
    params are settled first (given values, then defaults — including defaults that ``assign`` /
    ``assign_based_on`` provide); then, with a fresh ``recipe`` namespace holding those params,
    assignments are updated once, and for every step: the recipe's assignments again (with the
    step's ``info``), the step's own, the step is resolved, and the recipe's assignments once more
    (:mod:`.assignments`). The namespace persists across steps, as Stimela's does.

    Each :class:`ResolvedStep` says where every value came from (``sources``, see
    :mod:`.sources`): noted where the value enters the step's params (its own ``params``, an
    alias, ``assign``/``assign_based_on``, a ``label.param`` from above, ``step_params``, the
    cab's defaults), recipe inputs' sources passed down to the steps and sub-recipes they reach.

    :param step_outputs: fqname → values of steps that already ran (run time): they replace what
        the plan-time walk would infer for that step (``previous``/``steps.<label>``).
    :param target: stop after the cab step at this path (run time: one task resolves one step).
    :param loop_index: with ``target``, the iteration of the loops on its path (a DAG's mapped loop).
    :param loop_indices: with ``target``, ``{path of a looping recipe: iteration}`` for loops on its
        path whose iteration is fixed apart (a DAG's unrolled loops); they win over ``loop_index``.
    :param step_params: ``step_params(path, cargo) -> dict`` values merged last into a step's
        params (trigger-time overrides: data, :func:`.data.as_data`).
    :param tag_skips: a ``never`` tag skips the step (off at run time, where step selection —
        which can pick a ``never`` step — is applied apart).
    :param fetch: ``fetch(path, loop_index) -> Mapping`` the values of an earlier cab step that
        ran (run time; preferably a :class:`LazyNS`), used instead of resolving that step.
    """

    def __init__(self, config_tree: Any, problems: Problems, *, allow_io: bool = False,
                 step_outputs: Optional[Mapping[str, Mapping]] = None, target: Optional[tuple] = None,
                 loop_index: Optional[int] = None, step_params: Optional[Any] = None,
                 config_ns: Optional[Mapping] = None, cwd: Optional[str] = None, resolve_links: bool = False,
                 fetch: Optional[Any] = None, tag_skips: bool = True,
                 loop_indices: Optional[Mapping[tuple, int]] = None):
        from .yamlio import to_plain
        self.fetch, self.tag_skips = fetch, tag_skips
        self.cwd, self.resolve_links = cwd, resolve_links
        self.config = NS(config_ns) if config_ns is not None else NS(to_plain(config_tree or {}))
        self.problems = problems
        self.allow_io = allow_io
        self.step_outputs = step_outputs if step_outputs is not None else {}
        self.target = tuple(target) if target else None
        self.loop_index = loop_index
        self.loop_indices = {tuple(k): v for k, v in (loop_indices or {}).items()}
        self.step_params = step_params
        self.done = False
        self.loops: dict = {}   # path of a looping recipe -> the values it iterates over
        self._unknown_loop: Optional[str] = None  # key path of the loop being walked without values
        self.results: dict = {}  # path of a (sub-)recipe -> its params and outputs once walked

    def _eval(self, value: Any, ns: dict) -> Any:
        return evaluate(value, ns, allow_io=self.allow_io)

    def _update(self, recipe: Recipe, whose: Any, rec: NS, ns: dict, assigned: Any, key_path: str,
                loop_var: Optional[str]) -> None:
        from .assignments import update_assignments
        ns = dict(ns, recipe=rec)
        update_assignments(recipe=recipe, whose=whose, rec=rec, ns=ns, assigned=assigned,
                           evaluate=self._eval, is_unresolved=_contains_unresolved, problems=self.problems,
                           key_path=key_path, loop_var=loop_var)

    # ---------------------------------------------------------------- recipes
    def recipe(self, recipe: Recipe, params: Mapping[str, Any], *, fqname: str, path: tuple = (),
               chain: tuple = (), parent_ns: Optional[dict] = None, root_ns: Optional[dict] = None,
               key_path: str = "", locs: Optional[Mapping[str, Loc]] = None, info_fq: str = "",
               skip_all: Any = False, param_sources: Optional[Mapping[str, str]] = None) -> Iterator[ResolvedStep]:
        """Resolve the cab steps of ``recipe`` given ``params`` (``param_sources``: where each
        came from, when a parent step gave them; else :func:`given_source`)."""
        from .assignments import Assigned
        info_fq = info_fq or recipe.name
        own, step_over = self._split(recipe, params, key_path, locs or {})
        sources = {n: (param_sources or {}).get(n) or given_source(v) for n, v in params.items()}
        fl = recipe.for_loop
        loop_var = fl.var if fl is not None else None
        # --- prevalidation: settle the recipe's own params (assigned defaults count)
        assigned = Assigned(recipe.defaults)
        pre = NS(own)
        ns_pre = self._ns(recipe, pre, {}, parent_ns, root_ns, info_fq)
        self._update(recipe, recipe, pre, ns_pre, assigned, key_path or recipe.name, loop_var)
        p = self._defaults(recipe, dict(own), assigned.defaults)
        for name in p.keys() - own.keys():
            sources[name] = assigned.kinds.get(name) or default_source(
                recipe.schema[name], from_defaults=name in assigned.defaults, cab=False)
        outer_ns = self._ns(recipe, NS(p), {}, parent_ns, root_ns, info_fq)
        p = evaluate_params(p, outer_ns, allow_io=self.allow_io)
        if self.cwd is not None:
            from .paths import normalise_params
            p = normalise_params(recipe.schema, p, self.cwd, resolve=self.resolve_links, skip=_contains_unresolved)
        values: list = [None]
        if fl is not None:
            over = fl.over
            if isinstance(over, str) and not is_formula_text(over) and "{" not in over:
                over = p.get(over, pre.get(over, recipe.assign.get(over, UNSET)))
            over = evaluate(over, self._ns(recipe, NS({**pre, **p}), {}, parent_ns, root_ns, info_fq),
                            allow_io=self.allow_io)
            if isinstance(over, Unresolved) or over is UNSET:
                values = [Unresolved(fl.over, "loop values known at run time")]
            else:
                values = list(over) if isinstance(over, (list, tuple)) else [over]
            self.loops[path] = values
            if self.target is None:
                self._check_loop(fl, over, key_path or recipe.name)
        enclosing = self._unknown_loop
        if fl is not None and isinstance(values[0], Unresolved):
            self._unknown_loop = key_path or recipe.name
        self._check_missing(recipe, p, key_path)
        indices = range(len(values))
        index = self.loop_indices.get(path, self.loop_index)
        if self.target is not None and fl is not None and index is not None and self.target[:len(path)] == path:
            indices = [index] if index < len(values) else []
        for index in indices:
            value = values[index]
            it = dict(p)
            loop = None
            task = fqname
            loop_vars: dict = {}
            it_sources = dict(sources)
            if fl is not None:
                if fl.var in recipe.inputs or fl.var in recipe.outputs:
                    it[fl.var] = value
                    it_sources[fl.var] = "loop"
                else:
                    loop_vars[fl.var] = value
                loop_vars[f"{fl.var}@index"] = index
                loop = {"var": fl.var, "value": value, "index": index, "scatter": fl.scatter,
                        "count": len(values)}
                task = f"{fqname}.{index}"
            yield from self._run(recipe, it, loop_vars, step_over, assigned, task, path, chain + (recipe,),
                                 parent_ns, root_ns, loop, key_path or recipe.name, info_fq, skip_all,
                                 sources=it_sources)
            self.results[path] = it   # params + outputs its steps provided (the last iteration's)
            if self.done:
                break
        self._unknown_loop = enclosing

    def _check_loop(self, fl: Any, over: Any, key_path: str) -> None:
        """Plan time: a loop whose values are known only at run time is walked once, with its
        variable unknown (a warning says so); inside another such loop, the (outer, inner)
        iterations can't be laid out at all (an error: neither a plan nor a DAG can unroll them)."""
        if not isinstance(over, Unresolved) and over is not UNSET:
            if self._unknown_loop is not None:
                self.problems.error(fl.loc, f"{key_path}.for_loop",
                                    f"nested for_loop inside the loop of '{self._unknown_loop}', whose values are "
                                    "known only at run time: its iterations can't be laid out before running",
                                    "nested-loop-unresolved")
            return
        why = over.reason if isinstance(over, Unresolved) else f"'{fl.over}' is not set"
        if self._unknown_loop is not None:
            self.problems.error(fl.loc, f"{key_path}.for_loop",
                                f"nested for_loop over {fl.over!r} inside the loop of '{self._unknown_loop}': "
                                f"neither loop's values are known before running ({why})", "nested-loop-unresolved")
        else:
            self.problems.warning(fl.loc, f"{key_path}.for_loop",
                                  f"for_loop over {fl.over!r}: its values are known at run time ({why}); "
                                  f"planned once, with '{fl.var}' unknown", "loop-unresolved")

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
    def _defaults(cargo: Any, params: dict, assigned: Optional[Mapping] = None) -> dict:
        out = dict(params)
        defaults = assigned if assigned is not None else cargo.defaults
        for name, schema in cargo.schema.items():
            if name in out:
                continue
            if name in defaults:
                out[name] = defaults[name]
            elif schema.default is not UNSET and schema.default != "UNSET":
                out[name] = schema.default
            elif schema.implicit is not UNSET and schema.implicit is not None:
                out[name] = schema.implicit
        return out

    def _ns(self, recipe: Recipe, rec: NS, vars_: dict, parent_ns: Optional[dict],
            root_ns: Optional[dict], info_fq: str, label: str = "", taskname: str = "") -> dict:
        if vars_:
            rec.update(vars_)
        parts = label.split("-") if label else []
        fq = f"{info_fq}.{label}" if label else info_fq
        info = {"fqname": fq, "taskname": taskname or fq, "label": label, "label_parts": parts,
                "suffix": parts[-1] if len(parts) > 1 else ""}
        ns = {"recipe": rec, "root": root_ns if root_ns is not None else rec, "current": rec,
              "previous": NS(), "steps": NS(), "info": info, "self": info, "config": self.config}
        if parent_ns is not None:
            ns["parent"] = parent_ns
        return ns

    def _check_missing(self, cargo: Any, params: dict, key_path: str) -> None:
        for name, schema in cargo.inputs.items():
            if schema.required and params.get(name, UNSET) is UNSET and not _implicit(schema):
                if self.target is not None:
                    continue  # run time: the step that needs it says so
                self.problems.error(schema.loc if schema.loc.line else cargo.loc, f"{key_path or cargo.name}.{name}",
                                    f"missing required parameter '{name}'", "missing-param")
                params[name] = Unresolved(f"<{name}?>", "missing required parameter")

    # ---------------------------------------------------------------- steps
    def _run(self, recipe: Recipe, params: dict, loop_vars: dict, step_over: dict, assigned: Any,
             fqname: str, path: tuple, chain: tuple, parent_ns: Optional[dict], root_ns: Optional[dict],
             loop: Optional[dict], key_path: str, info_fq: str, skip_all: Any, *,
             sources: Mapping[str, str]) -> Iterator[ResolvedStep]:
        rec = NS(params)
        rec.update(loop_vars)
        root = root_ns if root_ns is not None else rec
        lv = recipe.for_loop.var if recipe.for_loop is not None else None
        base = self._ns(recipe, rec, {}, parent_ns, root, info_fq, taskname=fqname)
        self._update(recipe, recipe, rec, base, assigned, key_path, lv)
        from_recipe: dict = {}
        alias_sources: dict = {}
        skip_up = implicit_aliases(recipe)
        for alias, targets in recipe.aliases.items():
            if alias in params and alias not in skip_up:
                for t in targets:
                    label, pname = t.split(".", 1)
                    from_recipe.setdefault(label, {})[pname] = params[alias]
                    alias_sources.setdefault(label, {})[pname] = alias_source(sources.get(alias, "recipe"))
        previous: dict = NS()
        steps_ns: dict = NS()
        for label, step in recipe.steps.items():
            spath, sfq = path + (label,), f"{fqname}.{label}"
            skey = f"{key_path}.steps.{label}"
            ns = self._ns(recipe, rec, {}, parent_ns, root, info_fq, label, taskname=sfq)
            ns.update(previous=previous, steps=steps_ns)
            rec.update(loop_vars)
            self._update(recipe, recipe, rec, ns, assigned, key_path, lv)
            self._update(recipe, step, rec, ns, assigned, skey, lv)
            raw = {**step.params, **from_recipe.get(label, {}), **assigned.to_steps.get(label, {}),
                   **step_over.get(label, {})}
            src = {k: given_source(v) for k, v in step.params.items()}
            src.update(alias_sources.get(label, {}))
            src.update({k: assigned.kinds.get(f"{label}.{k}", "assign") for k in assigned.to_steps.get(label, {})})
            src.update({k: sources.get(f"{label}.{k}") or given_source(v)
                        for k, v in step_over.get(label, {}).items()})
            cargo = step.cargo
            if self.step_params is not None and cargo is not None and step.cab is not None:
                given = self.step_params(spath, cargo) or {}
                raw.update(given)
                src.update(dict.fromkeys(given, "run conf"))
            sub_over = {}
            if cargo is not None:
                if step.recipe is not None:
                    sub_over = {k: v for k, v in raw.items() if k not in cargo.schema}
                    raw = {k: v for k, v in raw.items() if k in cargo.schema}
                filled = self._defaults(cargo, raw)
                for name in filled.keys() - raw.keys():
                    src[name] = default_source(cargo.schema[name], from_defaults=name in cargo.defaults,
                                               cab=step.cab is not None)
                raw = filled
            known = None
            if step.cab is not None and (self.target is None or spath != self.target):
                known = self.step_outputs.get(sfq)
                if known is None and self.fetch is not None:
                    known = self.fetch(spath, loop["index"] if loop else None)
            if known is not None:  # the step already ran: its published values stand
                previous = known if isinstance(known, NS) else NS(known)
                steps_ns[label] = previous
                self._after_step(recipe, label, rec, ns, previous, steps_ns, params, assigned, key_path, lv)
                continue
            values = evaluate_params(raw, ns, allow_io=self.allow_io)
            if step.cab is not None and step.cab.dynamic_schema:
                step, values = self._dynamic_schema(step, values, ns, skey)
                cargo = step.cab
            if self.cwd is not None and step.cab is not None:
                from .paths import normalise_params
                values = normalise_params(cargo.schema, values, self.cwd, resolve=self.resolve_links,
                                          skip=_contains_unresolved)
            if skip_all is True or (self.tag_skips and "never" in step.tags):
                skip = True
            elif isinstance(step.skip, bool):
                skip = step.skip
            else:
                skip = evaluate(step.skip, dict(ns, current=NS(values)), allow_io=self.allow_io)
            if skip_all is not False and skip is False:
                skip = skip_all
            if step.recipe is not None:
                yield from self.recipe(step.recipe, {**values, **sub_over}, fqname=sfq, path=spath, chain=chain,
                                       parent_ns=rec, root_ns=root, key_path=f"{skey}.recipe",
                                       locs=step.param_locs, info_fq=f"{info_fq}.{label}", skip_all=skip,
                                       param_sources=src)
                values = dict(values)
                done = self.results.get(spath) or {}
                for name in step.recipe.outputs:
                    if name in done and not (isinstance(done[name], Unresolved) and name in values):
                        values[name] = done[name]
                    values.setdefault(name, Unresolved(f"{label}.{name}", f"output of step '{label}'"))
                if self.done:
                    return
            elif step.cab is not None:
                yield ResolvedStep(fqname=sfq, path=spath, step=step, recipes=list(chain), params=values,
                                   skip=skip, loop=loop, command_ns=dict(ns, current=NS(values)),
                                   sources={k: src.get(k, "step") for k in values})
                if self.target is not None and spath == self.target:
                    self.done = True
                    return
            outs = dict(values)
            if cargo is not None and step.cab is not None:
                for name in cargo.outputs:
                    if name not in outs:
                        outs[name] = Unresolved(f"{label}.{name}", f"output of step '{label}'")
            previous = NS(outs)
            steps_ns[label] = previous
            self._after_step(recipe, label, rec, ns, previous, steps_ns, params, assigned, key_path, lv)

    def _dynamic_schema(self, step: Step, values: dict, ns: dict, key_path: str) -> tuple[Step, dict]:
        """A ``dynamic_schema`` cab's step as Stimela prevalidates it: the hook runs with the values
        known now (:func:`.dynamic_schema.apply_dynamic_schema`), the params are flattened with the
        schema it returns (``K: {type: delay}`` → ``K.type``) and the parameters it adds get their
        defaults and implicit values. Returns a copy of ``step`` holding that cab (what the argv,
        validation and outputs use) and the values; a hook that can't run here changes nothing
        (validation warns, once per cab)."""
        from .dynamic_schema import DynamicSchemaUnavailable, apply_dynamic_schema, flatten_params
        from .errors import RecipeError
        from .validate import contains_deferred
        known = {k: v for k, v in values.items() if not _contains_unresolved(v)}
        try:
            cab = apply_dynamic_schema(step.cab, known)
        except DynamicSchemaUnavailable:
            return step, values
        except RecipeError as exc:
            if len(known) == len(values):  # else it may fail only for want of a run-time value
                self.problems.extend(exc.problems)
            return step, values
        flat, locs = flatten_params(values, cab.schema, step.param_locs)
        current = NS(flat)
        for name, raw in self._defaults(cab, {}).items():
            if name not in current:
                current[name] = evaluate(raw, dict(ns, current=current), allow_io=self.allow_io)
        if self.target is None and any(contains_deferred(v) for v in step.params.values()):
            for name in current:  # validation could not tell yet: it waited for these values
                if name not in cab.schema and len(known) == len(values):
                    self.problems.error(locs.get(name) or step.loc, f"{key_path}.params.{name}",
                                        f"unknown parameter '{name}': the dynamic schema of cab '{cab.name}' "
                                        "does not add it for these values", "unknown-param")
        new = copy.copy(step)
        new.cab, new.param_locs = cab, locs
        return new, dict(current)

    def _after_step(self, recipe: Recipe, label: str, rec: NS, ns: dict, previous: Mapping, steps_ns: NS,
                    params: dict, assigned: Any, key_path: str, loop_var: Optional[str]) -> None:
        """After a step: the recipe's assignments again, and recipe outputs its values provide."""
        self._update(recipe, recipe, rec, dict(ns, previous=previous, steps=steps_ns), assigned, key_path, loop_var)
        for alias, targets in recipe.aliases.items():
            if alias in params:
                continue
            for t in targets:
                tl, pname = t.split(".", 1)
                if tl == label and pname in previous:
                    params[alias] = rec[alias] = previous[pname]
                    break


def _implicit(schema: Any) -> bool:
    return schema.implicit is not UNSET and schema.implicit is not None


def resolve_recipe(recipe: Recipe, config_tree: Any, params: Optional[Mapping[str, Any]] = None, *,
                   problems: Optional[Problems] = None, allow_io: bool = False,
                   step_outputs: Optional[Mapping[str, Mapping]] = None,
                   param_locs: Optional[Mapping[str, Loc]] = None, target: Optional[tuple] = None,
                   loop_index: Optional[int] = None, step_params: Optional[Any] = None,
                   config_ns: Optional[Mapping] = None, cwd: Optional[str] = None,
                   resolve_links: bool = False) -> list[ResolvedStep]:
    """Resolve every cab step of ``recipe`` (nested recipes flattened, loops unrolled), as Stimela
    2.1.4 evaluates them (:class:`Resolver`).

    :param params: recipe inputs, or ``label.param`` values for steps (as on the command line);
        :func:`.data.as_data` values are taken as data.
    :param problems: receives missing parameters, unknown names, assign_based_on failures.
    :param allow_io: evaluate ``GLOB``/``EXISTS`` (run time) instead of deferring them.
    :param step_outputs: fqname → values of steps that already ran (run time).
    :param target: only walk as far as the cab step at this path (its :class:`ResolvedStep` is last).
    :param loop_index: with ``target``: the loop iteration the target belongs to.
    :param step_params: ``f(path, cargo) -> dict`` merged last into each cab step's params.
    :param config_ns: the ``config`` namespace as is (run time: with ``config.run``).
    :param cwd: the run directory: path parameters are written as Stimela passes them
        (:mod:`.paths`); ``resolve_links`` also resolves symbolic links (run time).
    """
    problems = problems if problems is not None else Problems()
    res = Resolver(config_tree, problems, allow_io=allow_io, step_outputs=step_outputs, target=target,
                   loop_index=loop_index, step_params=step_params, config_ns=config_ns, cwd=cwd,
                   resolve_links=resolve_links)
    return list(res.recipe(recipe, dict(params or {}), fqname=recipe.name, locs=param_locs or {}))
