"""Building :class:`~.model.Recipe` objects (with their steps) from the merged YAML tree.

A step names a cab (a key of ``cabs``, or an inline cab mapping) *or* a recipe (a key of
``lib.recipes``, a dotted config path, or an inline recipe mapping). Nested recipes are built
recursively; aliases (explicit and automatic) are resolved by :mod:`.aliases` once the steps
exist. Every problem is recorded with file, line and key path; building never stops early.
"""

from __future__ import annotations

from typing import Any, Optional

from .aliases import finalize_aliases
from .backends import parse_backend_options
from .errors import Loc, Problems
from .model import ForLoop, Recipe, Step
from .params import flatten_into
from .validate import check_expression, check_expressions, check_step_params, is_formula_text
from .yamlio import CMap, loc_of

RECIPE_KEYS = {"name", "fqname", "info", "extra_info", "inputs", "outputs", "defaults", "dynamic_schema",
               "preamble", "epilogue", "steps", "assign", "assign_based_on", "aliases", "backend", "for_loop"}
STEP_KEYS = {"cab", "recipe", "params", "info", "skip", "skip_if_outputs", "tags", "name", "fqname",
             "assign", "assign_based_on", "backend", "preamble", "epilogue"}
FOR_LOOP_KEYS = {"var", "over", "scatter", "display_status", "output_elements"}
SKIP_IF_OUTPUTS = ("exist", "fresh")


class BuildContext:
    """State shared while building the recipes of one :class:`LoadedConfig`."""

    def __init__(self, config: Any, problems: Problems, strict: bool = False):
        self.tree = getattr(config, "tree", config) or CMap()
        self.top_names = set(getattr(config, "recipe_names", None) or ())
        self.problems = problems
        self.strict = strict
        self.cabs: dict = {}     # cab name -> Cab or None (failed)
        self.stack: list = []    # recipe names being built (cycle detection)

    def unknown_key(self, loc: Loc, key: str, what: str, name: Any) -> None:
        msg = f"unknown {what} field '{name}'"
        if self.strict:
            self.problems.error(loc, key, msg, "unknown-key")
        else:
            self.problems.warning(loc, key, msg + " (Stimela would reject it)", "unknown-key")

    def recipe_key_path(self, name: str) -> str:
        return name if name in self.top_names else f"lib.recipes.{name}"

    def lib_recipes(self) -> dict:
        lib = self.tree.get("lib") if isinstance(self.tree, dict) else None
        recipes = lib.get("recipes") if isinstance(lib, dict) else None
        return recipes if isinstance(recipes, dict) else {}

    def cab(self, name: str, loc: Loc, key: str) -> Any:
        from .cab import build_cab
        if name in self.cabs:
            return self.cabs[name]
        cabs = self.tree.get("cabs") if isinstance(self.tree, dict) else None
        node = cabs.get(name) if isinstance(cabs, dict) else None
        if node is None:
            self.problems.error(loc, key, f"unknown cab '{name}'", "unknown-cab")
            self.cabs[name] = None
            return None
        self.cabs[name] = _safe_build_cab(build_cab, name, node, f"cabs.{name}", self)
        return self.cabs[name]


def _safe_build_cab(build_cab: Any, name: str, node: Any, key_path: str, ctx: BuildContext) -> Any:
    n_err = len(ctx.problems.errors)
    try:
        cab = build_cab(name, node, key_path, ctx.problems, strict=ctx.strict)
    except Exception as exc:  # noqa: BLE001 - a broken cab must not stop the others
        ctx.problems.error(loc_of(node), key_path, f"cab '{name}' could not be built: {exc}", "bad-cab")
        return None
    for pname, param in {**getattr(cab, "inputs", {}), **getattr(cab, "outputs", {})}.items():
        check_name(pname, "parameter", getattr(param, "loc", loc_of(node)),
                   f"{key_path}.{'outputs' if getattr(param, 'is_output', False) else 'inputs'}.{pname}", ctx.problems)
    if cab is not None and len(ctx.problems.errors) == n_err and isinstance(getattr(cab, "backend", None), dict):
        parse_backend_options(cab.backend, loc_of(node, "backend"), f"{key_path}.backend", ctx.problems,
                              ctx.strict)
    return cab


def check_name(name: Any, what: str, loc: Loc, key_path: str, problems: Problems) -> None:
    """Record an error for a name with a control character (a newline in a recipe, step, cab or
    parameter name would end a ``#`` comment of a generated shell script and run the rest)."""
    text = str(name)
    if not text.isprintable():
        problems.error(loc, key_path, f"{what} name {text!r} has a control character", "bad-name")


def build_recipe(name: str, node: Any, config: Any, problems: Problems, key_path: Optional[str] = None,
                 *, strict: bool = False, _ctx: Optional[BuildContext] = None) -> Recipe:
    """Build a recipe (and, recursively, its steps) from its YAML mapping.

    :param name: the recipe name (top-level key / ``lib.recipes`` key / step label for inline ones).
    :param node: the recipe mapping from the merged tree.
    :param config: the :class:`~.config.LoadedConfig` (or its ``tree``) for cab/recipe lookups.
    :param problems: where every problem goes.
    :param key_path: dotted path of ``node`` (default: ``name`` for top-level recipes).
    """
    ctx = _ctx or BuildContext(config, problems, strict)
    key_path = key_path or ctx.recipe_key_path(name)
    recipe = Recipe(name=name, loc=loc_of(node))
    if not isinstance(node, dict):
        problems.error(loc_of(node), key_path, f"recipe '{name}' must be a mapping", "bad-recipe")
        return recipe
    from .params import parse_schema
    for key in node:
        if key not in RECIPE_KEYS:
            ctx.unknown_key(loc_of(node, key), f"{key_path}.{key}", "recipe", key)
    recipe.info = str(node.get("info") or "")
    recipe.extra_info = dict(node.get("extra_info") or {})
    recipe.dynamic_schema = node.get("dynamic_schema")
    recipe.inputs = parse_schema(node.get("inputs") or CMap(), f"{key_path}.inputs", problems, strict=ctx.strict)
    recipe.outputs = parse_schema(node.get("outputs") or CMap(), f"{key_path}.outputs", problems,
                                  is_output=True, strict=ctx.strict)
    for pname in set(recipe.inputs) & set(recipe.outputs):
        problems.error(recipe.outputs[pname].loc, f"{key_path}.outputs.{pname}",
                       f"parameter '{pname}' appears in both inputs and outputs", "bad-schema")
    check_name(name, "recipe", recipe.loc, key_path, problems)
    for pname, param in recipe.schema.items():
        check_name(pname, "parameter", param.loc, f"{key_path}.{'outputs' if param.is_output else 'inputs'}.{pname}",
                   problems)
    recipe.defaults = _flat(node.get("defaults") or {}, recipe.schema)
    recipe.assign = dict(node.get("assign") or {})
    recipe.assign_based_on = _assign_based_on(node, key_path, problems)
    check_expressions(node.get("assign") or {}, key_path=f"{key_path}.assign", loc=recipe.loc, problems=problems)
    recipe.backend = _backend(node, key_path, ctx)

    ctx.stack.append(name)
    steps = node.get("steps") or {}
    if not isinstance(steps, dict):
        problems.error(loc_of(node, "steps"), f"{key_path}.steps", "steps must be a mapping", "bad-recipe")
        steps = {}
    for label, snode in steps.items():
        check_name(label, "step", loc_of(steps, label), f"{key_path}.steps.{label}", problems)
        recipe.steps[label] = build_step(str(label), snode, f"{key_path}.steps.{label}", loc_of(steps, label), ctx)
    ctx.stack.pop()

    declared = set(recipe.inputs) | set(recipe.outputs)
    raw_aliases, alias_locs = _raw_aliases(node.get("aliases"), key_path, problems)
    finalize_aliases(recipe, problems, key_path, raw_aliases, alias_locs, _explicit_required(node))
    recipe.for_loop = _for_loop(node, recipe, key_path, ctx, declared)
    for label, step in recipe.steps.items():
        check_step_params(step, f"{key_path}.steps.{label}", problems)
    return recipe


def build_step(label: str, node: Any, key_path: str, loc: Loc, ctx: BuildContext) -> Step:
    """Build one step; the cab or nested recipe is looked up or built inline."""
    problems = ctx.problems
    step = Step(label=label, loc=loc)
    if not isinstance(node, dict):
        problems.error(loc, key_path, "step must be a mapping", "bad-step")
        return step
    for key in node:
        if key not in STEP_KEYS:
            ctx.unknown_key(loc_of(node, key), f"{key_path}.{key}", "step", key)
    cab, rec = node.get("cab"), node.get("recipe")
    if not cab and not rec:
        problems.error(step.loc, key_path, f"step '{label}' must specify either a cab or a nested recipe",
                       "bad-step")
    elif cab and rec:
        problems.error(step.loc, key_path, f"step '{label}' can't specify both a cab and a nested recipe",
                       "bad-step")
    elif cab:
        _attach_cab(step, cab, key_path, loc_of(node, "cab"), ctx)
    else:
        _attach_recipe(step, rec, key_path, loc_of(node, "recipe"), ctx)

    params = node.get("params") or CMap()
    if not isinstance(params, dict):
        problems.error(loc_of(node, "params"), f"{key_path}.params", "params must be a mapping", "bad-step")
        params = CMap()
    step.params, step.param_locs = _flatten_params(params, step)
    step.info = str(node.get("info") or "")
    tags = node.get("tags") or []
    step.tags = [tags] if isinstance(tags, str) else [str(t) for t in tags]
    step.skip = _skip(node.get("skip"), f"{key_path}.skip", loc_of(node, "skip"), problems)
    sio = node.get("skip_if_outputs")
    if sio is not None and sio not in SKIP_IF_OUTPUTS:
        problems.error(loc_of(node, "skip_if_outputs"), f"{key_path}.skip_if_outputs",
                       f"invalid 'skip_if_outputs={sio}' setting (expected exist or fresh)", "bad-step")
    step.skip_if_outputs = sio if sio in SKIP_IF_OUTPUTS else None
    step.assign = dict(node.get("assign") or {})
    check_expressions(node.get("assign") or {}, key_path=f"{key_path}.assign", loc=step.loc, problems=problems)
    step.assign_based_on = _assign_based_on(node, key_path, problems)
    step.backend = _backend(node, key_path, ctx)
    for section in ("preamble", "epilogue"):
        value = node.get(section) or {}
        for k, v in value.items():
            if not isinstance(v, list):
                problems.error(loc_of(value, k), f"{key_path}.{section}.{k}",
                               f"{section}.{k} must be a list of expressions", "bad-step")
        setattr(step, section, dict(value))
    return step


def _attach_cab(step: Step, cab: Any, key_path: str, loc: Loc, ctx: BuildContext) -> None:
    if isinstance(cab, str):
        check_name(cab, "cab", loc, f"{key_path}.cab", problems=ctx.problems)
        step.cab_name = cab
        step.cab = ctx.cab(cab, loc, f"{key_path}.cab")
    elif isinstance(cab, dict):
        from .cab import build_cab
        name = str(cab.get("name") or step.label)
        step.cab_name = None
        step.cab = _safe_build_cab(build_cab, name, cab, f"{key_path}.cab", ctx)
    else:
        ctx.problems.error(loc, f"{key_path}.cab", "cab must be a name or an inline cab", "bad-step")


def _attach_recipe(step: Step, rec: Any, key_path: str, loc: Loc, ctx: BuildContext) -> None:
    problems = ctx.problems
    if isinstance(rec, dict):
        step.recipe = build_recipe(str(rec.get("name") or step.label), rec, None, problems,
                                   f"{key_path}.recipe", _ctx=ctx)
        return
    if not isinstance(rec, str):
        problems.error(loc, f"{key_path}.recipe", "recipe must be a name or an inline recipe", "bad-step")
        return
    step.recipe_name = rec
    if "." not in rec:
        node, rkey = ctx.lib_recipes().get(rec), ctx.recipe_key_path(rec)
    else:
        node, rkey = _dotted(ctx.tree, rec), rec
    if node is None:
        problems.error(loc, f"{key_path}.recipe", f"unknown recipe '{rec}'", "unknown-recipe")
        return
    if rec in ctx.stack:
        chain = " -> ".join(ctx.stack + [rec])
        problems.error(loc, f"{key_path}.recipe", f"recursive recipe reference: {chain}", "recursive-recipe")
        return
    step.recipe = build_recipe(rec.rsplit(".", 1)[-1], node, None, problems, rkey, _ctx=ctx)


def _dotted(tree: Any, path: str) -> Any:
    node = tree
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _flatten_params(params: dict, step: Step) -> tuple[dict, dict]:
    """Flatten nested mappings into dotted names when the cargo schema (or a sub-step label)
    says the mapping is a section rather than a dict-valued parameter."""
    schema = step.cargo.schema if step.cargo is not None else {}
    labels = set(step.recipe.steps) if step.recipe is not None else set()
    out: dict = {}
    locs: dict = {}
    flatten_into(params, "", schema, labels, out, locs)
    return out, locs


def _flat(d: dict, schema: dict, prefix: str = "") -> dict:
    """Flatten ``{a: {b: 1}}`` to ``{"a.b": 1}`` where the schema has ``a.*`` names."""
    out = {}
    for k, v in d.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict) and name not in schema and any(s.startswith(f"{name}.") for s in schema):
            out.update(_flat(v, schema, f"{name}."))
        else:
            out[name] = v
    return out


def _skip(value: Any, key: str, loc: Loc, problems: Problems) -> Any:
    if value is True or value in ("True", "true", "1", 1):
        return True
    if value in (None, False, "False", "false", "0", "", 0):
        return False
    if isinstance(value, str):
        check_expression(value, key_path=key, loc=loc, problems=problems)
    return value


def _assign_based_on(node: dict, key_path: str, problems: Problems) -> dict:
    abo = node.get("assign_based_on") or {}
    if not isinstance(abo, dict):
        problems.error(loc_of(node, "assign_based_on"), f"{key_path}.assign_based_on", "mapping expected",
                       "bad-assign")
        return {}
    for var, cases in abo.items():
        kp = f"{key_path}.assign_based_on.{var}"
        if not isinstance(cases, dict):
            problems.error(loc_of(abo, var), kp, "mapping expected", "bad-assign")
            continue
        for value, block in cases.items():
            if block is not None and not isinstance(block, dict):
                problems.error(loc_of(cases, value), f"{kp}.{value}", "mapping expected", "bad-assign")
            elif block:
                check_expressions(block, key_path=f"{kp}.{value}", loc=loc_of(cases, value), problems=problems)
    return dict(abo)


def _backend(node: dict, key_path: str, ctx: BuildContext) -> dict:
    b = node.get("backend")
    if b is None:
        return {}
    parse_backend_options(b, loc_of(node, "backend"), f"{key_path}.backend", ctx.problems, ctx.strict)
    check_expressions(b, key_path=f"{key_path}.backend", loc=loc_of(node, "backend"), problems=ctx.problems)
    return b if isinstance(b, dict) else {}


def _raw_aliases(section: Any, key_path: str, problems: Problems) -> tuple[dict, dict]:
    out, locs = {}, {}
    if section is None:
        return out, locs
    if not isinstance(section, dict):
        problems.error(loc_of(section), f"{key_path}.aliases", "aliases must be a mapping", "bad-alias")
        return out, locs

    def walk(d: dict, prefix: str) -> None:
        for k, v in d.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
                continue
            name = f"{prefix}{k}"
            out[name] = [v] if isinstance(v, str) else list(v or [])
            locs[name] = loc_of(d, k)

    walk(section, "")
    return out, locs


def _explicit_required(node: dict) -> set:
    """Recipe parameters whose ``required`` was written (Stimela's ``required`` is tri-state)."""
    names = set()
    for io in ("inputs", "outputs"):
        sec = node.get(io)
        if not isinstance(sec, dict):
            continue
        for name, p in sec.items():
            if isinstance(p, dict) and "required" in p or isinstance(p, str) and "*" in p.split("=")[0]:
                names.add(str(name))
    return names


def _for_loop(node: dict, recipe: Recipe, key_path: str, ctx: BuildContext, declared: set) -> Optional[ForLoop]:
    fl = node.get("for_loop")
    if fl is None:
        return None
    problems, kp, loc = ctx.problems, f"{key_path}.for_loop", loc_of(node, "for_loop")
    if not isinstance(fl, dict):
        problems.error(loc, kp, "for_loop must be a mapping", "bad-for-loop")
        return None
    for key in fl:
        if key not in FOR_LOOP_KEYS:
            ctx.unknown_key(loc_of(fl, key), f"{kp}.{key}", "for_loop", key)
    var = fl.get("var")
    if not isinstance(var, str) or not var:
        problems.error(loc, f"{kp}.var", "for_loop.var must be a variable name", "bad-for-loop")
        return None
    for io, what in ((recipe.inputs, "an input"), (recipe.outputs, "an output")):
        if var in io and var in declared:
            problems.error(loc_of(fl, "var"), f"{kp}.var", f"for_loop.var={var} clashes with {what} parameter",
                           "bad-for-loop")
    over = fl.get("over")
    if isinstance(over, str):
        if is_formula_text(over):
            check_expression(over, key_path=f"{kp}.over", loc=loc_of(fl, "over"), problems=problems)
        elif over not in recipe.inputs:
            problems.error(loc_of(fl, "over"), f"{kp}.over", f"for_loop.over={over} is not a defined input",
                           "bad-for-loop")
        else:
            recipe.inputs[over].required = True
    elif not isinstance(over, list):
        problems.error(loc_of(fl, "over") if "over" in fl else loc, f"{kp}.over",
                       f"for_loop.over must be a list or the name of an input, got {type(over).__name__}",
                       "bad-for-loop")
        over = []
    scatter = fl.get("scatter", 0)
    if isinstance(scatter, bool):
        scatter = -1 if scatter else 0
    elif not isinstance(scatter, int):
        problems.error(loc_of(fl, "scatter"), f"{kp}.scatter", f"for_loop.scatter={scatter!r}: bool or int expected",
                       "bad-for-loop")
        scatter = 0
    return ForLoop(var=var, over=list(over) if isinstance(over, list) else over, scatter=scatter,
                   display_status=fl.get("display_status"), output_elements=dict(fl.get("output_elements") or {}),
                   loc=loc)
