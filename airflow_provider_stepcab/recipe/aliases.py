"""Recipe aliases: exposing step parameters as recipe parameters (Stimela ``Recipe._add_alias``).

Targets are ``label.param``, ``(cabname).param`` (every step using that cab or lib recipe),
label globs (``ddcal*.NCPU``), and ``$`` / ``$$`` (replaced by the last component / the whole
alias name). Step parameters that are required-or-unset and have no value are auto-aliased as
``label.param`` recipe parameters. After :func:`finalize_aliases`, ``recipe.aliases`` maps each
recipe parameter to its concrete ``label.param`` targets, and the recipe's inputs/outputs hold
the alias schemas.
"""

from __future__ import annotations

import fnmatch
import re
from typing import Any, Optional

from .errors import Loc, Problems
from .model import UNSET, Parameter, Recipe, Step

_CAB_SPEC = r"^\((.+)\)$"  # compiled by ``re`` on first use


def step_schema(step: Step) -> tuple[dict, dict]:
    """(inputs, outputs) of a step's cargo (empty if it failed to build)."""
    cargo = step.cargo
    if cargo is None:
        return {}, {}
    return cargo.inputs, cargo.outputs


def step_defaults(step: Step) -> dict:
    cargo = step.cargo
    return dict(getattr(cargo, "defaults", None) or {})


def _shallow_copy(p: Parameter) -> Parameter:
    """``copy.copy`` of a parameter without the pickle protocol (one per auto-alias)."""
    new = object.__new__(type(p))
    new.__dict__.update(p.__dict__)
    return new


def _is_implicit(p: Parameter) -> bool:
    return p.implicit is not UNSET and p.implicit is not None


class _Aliaser:
    def __init__(self, recipe: Recipe, problems: Problems, key_path: str, explicit_required: set):
        self.recipe = recipe
        self.problems = problems
        self.key_path = key_path
        self.explicit_required = explicit_required
        self.targets: dict[str, list[str]] = {}        # alias -> ["label.param", ...]
        self.mapped: dict[tuple, str] = {}              # (label, param) -> alias
        self.orig: dict[str, Optional[Parameter]] = {}  # alias -> recipe's own schema, if any

    def _explicit(self, alias: str, orig: Parameter) -> bool:
        """Was ``required`` written in the recipe's own schema (Stimela's tri-state)?"""
        return alias in self.explicit_required or "required" in getattr(orig, "given_fields", ())

    def err(self, loc: Loc, key: str, msg: str, code: str = "bad-alias") -> None:
        self.problems.error(loc, key, f"recipe '{self.recipe.name}': {msg}", code)

    def expand(self, alias: str, target: str, loc: Loc, key: str) -> list[tuple[str, Optional[Step], str, bool]]:
        target = target.replace("$$", alias).replace("$", alias.rsplit(".", 1)[-1])
        if "." not in target:
            self.err(loc, key, f"alias '{alias}': invalid target '{target}' (missing dot)")
            return []
        spec, pname = target.split(".", 1)
        steps = self.recipe.steps
        m = re.match(_CAB_SPEC, spec)
        if m:
            want = m.group(1)
            return [(lab, st, pname, True) for lab, st in steps.items()
                    if (st.cab is not None and st.cab_name == want)
                    or (st.recipe is not None and st.recipe_name == want)]
        if any(ch in spec for ch in "*?["):
            return [(lab, st, pname, True) for lab, st in steps.items() if fnmatch.fnmatchcase(lab, spec)]
        return [(spec, steps.get(spec), pname, False)]

    def add(self, alias: str, label: str, step: Optional[Step], pname: str, wildcard: bool,
            loc: Loc, key: str, category: Optional[str] = None) -> None:
        recipe = self.recipe
        if step is None:
            self.err(loc, key, f"alias '{alias}' refers to unknown step '{label}'", "unknown-step")
            return
        if step.cargo is None:  # the step itself failed to build; already reported
            return
        inputs, outputs = step_schema(step)
        in_schema, out_schema = inputs.get(pname), outputs.get(pname)
        schema = in_schema or out_schema
        if wildcard and (schema is None or pname in step.params):
            return
        if schema is None:
            self.err(loc, key, f"alias '{alias}' refers to unknown step parameter '{label}.{pname}'",
                     "unknown-param")
            return
        if in_schema is not None and _is_implicit(in_schema):
            self.err(loc, key, f"alias '{alias}' refers to implicit input '{label}.{pname}'")
            return
        defaults = step_defaults(step)
        if alias in self.targets:
            io = recipe.outputs if alias in recipe.outputs else recipe.inputs
            if io is recipe.outputs:
                self.err(loc, key, f"output alias '{alias}' is defined more than once")
                return
            if out_schema is not None:
                self.err(loc, key, f"alias '{alias}' refers to both an input and an output")
                return
            alias_schema = io[alias]
            if str(alias_schema.dtype_str) != str(schema.dtype_str):
                self.err(loc, key, f"alias '{alias}': dtype {schema.dtype_str} of '{label}.{pname}' "
                         f"doesn't match previous dtype {alias_schema.dtype_str}")
                return
            orig = self.orig[alias]
        else:
            io = recipe.inputs if in_schema is not None else recipe.outputs
            orig = io.get(alias)
            self.orig[alias] = orig
            alias_schema = _shallow_copy(schema)
            alias_schema.name = alias
            alias_schema.aliases = []
            alias_schema.loc = orig.loc if orig is not None else (step.param_locs.get(pname) or step.loc)
            if orig is not None and orig.default is not UNSET:
                step.params.pop(pname, None)
                alias_schema.default = orig.default
            else:
                defval = step.params.get(pname, defaults.get(pname, schema.default))
                if defval is not UNSET:
                    alias_schema.required = False
                    alias_schema.default = defval
            if orig is not None and orig.info:
                alias_schema.info = orig.info
            if orig is not None and self._explicit(alias, orig):
                alias_schema.required = orig.required
            if category is not None:
                alias_schema.category = category
            elif orig is not None and orig.category is not None:
                alias_schema.category = orig.category
            io[alias] = alias_schema
        have_step_param = (pname in step.params or pname in defaults
                           or alias_schema.default is not UNSET or _is_implicit(schema))
        if schema.required and not have_step_param and not (orig is not None and self._explicit(alias, orig)):
            alias_schema.required = True
        self.mapped[label, pname] = alias
        self.targets.setdefault(alias, []).append(f"{label}.{pname}")

    def run(self, raw_aliases: dict, raw_alias_locs: dict) -> None:
        recipe = self.recipe
        declared = set(recipe.inputs) | set(recipe.outputs)
        for io_name, io in (("inputs", recipe.inputs), ("outputs", recipe.outputs)):
            for name, p in list(io.items()):
                for target in p.aliases or []:
                    self._add_target(name, target, p.loc, f"{self.key_path}.{io_name}.{name}.aliases")
        for name, targets in raw_aliases.items():
            if name in declared:
                self.err(raw_alias_locs.get(name, recipe.loc), f"{self.key_path}.aliases.{name}",
                         f"alias '{name}' also appears under inputs or outputs")
                continue
            for target in targets:
                self._add_target(name, target, raw_alias_locs.get(name, recipe.loc),
                                 f"{self.key_path}.aliases.{name}")
        # auto-aliases for unset step parameters
        unset_of: dict[int, list] = {}  # per cargo (steps share cabs): params that may need one
        for label, step in recipe.steps.items():
            inputs, outputs = step_schema(step)
            candidates = unset_of.get(id(step.cargo))
            if candidates is None:
                defaults = getattr(step.cargo, "defaults", None) or {}
                candidates = unset_of[id(step.cargo)] = [
                    (pname, schema) for pname, schema in {**inputs, **outputs}.items()
                    if pname not in defaults and schema.default is UNSET and not _is_implicit(schema)]
            params, mapped = step.params, self.mapped
            for pname, schema in candidates:
                if pname in params or (label, pname) in mapped:
                    continue
                auto = f"{label}.{pname}"
                if auto in recipe.inputs or auto in recipe.outputs:
                    self.err(step.loc, f"{self.key_path}.steps.{label}",
                             f"auto-generated parameter name '{auto}' conflicts with another name. "
                             f"Please define an explicit alias for this.")
                    continue
                category = "Required" if schema.required else "Obscure"
                if step.cargo is not None and (pname in inputs) != (pname in outputs):
                    self._add_auto(auto, label, step, pname, schema, pname in inputs, category)
                else:
                    self.add(auto, label, step, pname, False, step.loc, f"{self.key_path}.steps.{label}",
                             category=category)
        recipe.aliases = self.targets

    def _add_auto(self, alias: str, label: str, step: Step, pname: str, schema: Parameter, is_input: bool,
                  category: str) -> None:
        """:meth:`add` for an auto-alias (``label.param`` of an unset, explicit-value-free step
        parameter, which no other alias names): the same result without its general checks, as a
        100-step recipe has about 1,200 of these."""
        alias_schema = object.__new__(type(schema))
        fields = alias_schema.__dict__
        fields.update(schema.__dict__)
        fields.update(name=alias, aliases=[], loc=step.param_locs.get(pname) or step.loc, category=category)
        if schema.required:
            fields["required"] = True
        (self.recipe.inputs if is_input else self.recipe.outputs)[alias] = alias_schema
        self.orig[alias] = None
        self.mapped[label, pname] = alias
        self.targets.setdefault(alias, []).append(f"{label}.{pname}")

    def _add_target(self, alias: str, target: Any, loc: Loc, key: str) -> None:
        if not isinstance(target, str):
            self.err(loc, key, f"alias '{alias}': name or list of names expected")
            return
        for label, step, pname, wildcard in self.expand(alias, target, loc, key):
            self.add(alias, label, step, pname, wildcard, loc, key)


def finalize_aliases(recipe: Recipe, problems: Problems, key_path: str, raw_aliases: dict,
                     raw_alias_locs: Optional[dict] = None, explicit_required: Optional[set] = None) -> None:
    """Resolve every alias of ``recipe`` (steps must be built), including auto-aliases.

    :param raw_aliases: the flattened ``aliases`` section: name → list of targets.
    :param explicit_required: recipe parameters whose ``required`` was written explicitly.
    """
    _Aliaser(recipe, problems, key_path, explicit_required or set()).run(raw_aliases, raw_alias_locs or {})


def implicit_aliases(recipe: Recipe) -> set:
    """Aliases whose value only ever comes up from a step (an implicit step parameter)."""
    out = set()
    for alias, targets in recipe.aliases.items():
        for t in targets:
            label, pname = t.split(".", 1)
            step = recipe.steps.get(label)
            if step is None:
                continue
            inputs, outputs = step_schema(step)
            p = inputs.get(pname) or outputs.get(pname)
            if p is not None and _is_implicit(p):
                out.add(alias)
    return out
