"""Backend settings: typed option models, layer merging and backend selection.

Stimela 2.1.4 merges backend settings as plain mappings, in this order (later wins)::

    config.opts.backend <- outer recipe.backend <- inner recipe.backend <- cab.backend <- step.backend

and only then applies its schema (``StimelaBackendOptions``). Keys unknown to that schema make
Stimela fail; real recipes still carry stale ones (``singularity.auto_update``), so here an unknown
key is a *warning* by default and an *error* with ``strict``. Wrong value types are always errors.
String values that are formulas (``=...``) or contain ``{}`` substitutions are kept as written:
Stimela evaluates the whole merged subtree per step before applying the schema.

Sections ``docker`` (a placeholder in Stimela) and our own extras ``podman``/``airflow`` are kept
as raw mappings in :attr:`BackendOptions.extras`.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from typing import Any, Dict, List, Optional, Union

from .backend_schema import (  # noqa: F401 - re-exported
    DEFAULT_SELECT, BackendOptions, BindDir, DaskCluster, KubeDebug, KubeInfrastructure, KubeOptions,
    KubePodSpec, KubeUser, KubeVolume, NativeOptions, PodLimits, PodmanOptions, SingularityOptions, SlurmOptions,
)
from .coerce import coerce as _coerce
from .coerce import value_name as _vname
from .errors import UNKNOWN_LOC, Loc, Problems
from .suggest import unknown_key_message
from .yamlio import CMap, loc_of

#: backends Stimela 2.1.4 can select (``slurm`` is a wrapper, not a selectable backend),
#: plus stepcab's container engines ``podman``/``docker`` (settings in :attr:`BackendOptions.extras`)
SELECTABLE = ("singularity", "kube", "native", "podman", "docker")
#: backends that need a container image in the cab
NEEDS_IMAGE = ("singularity", "kube", "podman", "docker")
#: selectable backends whose settings stay raw in :attr:`BackendOptions.extras`
ENGINE_SECTIONS = ("podman", "docker")
#: sections accepted without a schema
EXTRA_SECTIONS = ("docker", "podman", "airflow")


# --------------------------------------------------------------------------- merging

def merge_backend_layers(*layers: Any) -> CMap:
    """Merge backend layers, later ones winning (OmegaConf ``merge``: mappings merge
    recursively, scalars and lists replace). ``None``/empty layers are skipped.
    Locations of the winning values are kept."""
    result = CMap()
    for layer in layers:
        if isinstance(layer, dict) and layer:
            result = _merge(result, layer)
    return result


def _merge(base: dict, over: dict) -> CMap:
    out = CMap(loc=getattr(over, "loc", None) or getattr(base, "loc", UNKNOWN_LOC))
    for src in (base, over):
        for k, v in src.items():
            old = out.get(k)
            if isinstance(old, dict) and isinstance(v, dict):
                v = _merge(old, v)
            elif isinstance(v, dict):
                v = _merge(CMap(), v)
            out.set(k, v, loc_of(src, k))
    return out


def select_list(value: Any) -> List[str]:
    """``select`` as Stimela reads it: ``"a,b"`` / ``"a"`` / ``[a, b]`` → list of names."""
    if value is None:
        return list(DEFAULT_SELECT)
    if isinstance(value, str):
        return [x.strip() for x in value.split(",") if x.strip()]
    if isinstance(value, (list, tuple)):
        return [str(x).strip() for x in value]
    raise ValueError(f"invalid backend.select setting of type {type(value).__name__}")


# --------------------------------------------------------------------------- parsing

def _is_deferred(value: Any) -> bool:
    return isinstance(value, str) and (value.startswith("=") or "{" in value)


class _Parser:
    def __init__(self, problems: Optional[Problems], strict: bool):
        self.problems = problems
        self.strict = strict

    def unknown(self, loc: Loc, key: str, message: str) -> None:
        if self.problems is None:
            return
        if self.strict:
            self.problems.error(loc, key, message, "unknown-backend-key")
        else:
            self.problems.warning(loc, key, message + ": Stimela 2.1.4 would reject it", "unknown-backend-key")

    def error(self, loc: Loc, key: str, message: str) -> None:
        if self.problems is not None:
            self.problems.error(loc, key, message, "backend-type")

    def dataclass(self, cls: type, node: Any, key_path: str, loc: Loc) -> Any:
        obj = cls()
        if node is None:
            return obj
        if not isinstance(node, dict):
            self.error(loc, key_path, f"expected a mapping, got {_vname(node)}")
            return obj
        hints, fields = _schema_of(cls)
        for key, value in node.items():
            kpath = f"{key_path}.{key}" if key_path else str(key)
            kloc = loc_of(node, key)
            if cls is BackendOptions and key in EXTRA_SECTIONS:
                obj.extras[key] = value
                continue
            f = fields.get(key)
            if f is None or key == "extras":
                known = [k for k in fields if k != "extras"]
                known += list(EXTRA_SECTIONS) if cls is BackendOptions else []
                self.unknown(kloc, kpath, unknown_key_message("backend option", key, known,
                                                              f"not in {cls.__name__}"))
                continue
            if cls is BackendOptions and key == "select":
                try:
                    obj.select = select_list(value)
                except ValueError as exc:
                    self.error(kloc, kpath, str(exc))
                for name in obj.select:
                    if name not in SELECTABLE and not _is_deferred(name):
                        self.unknown(kloc, kpath, unknown_key_message("backend", name, SELECTABLE,
                                                                      "in select"))
                continue
            setattr(obj, key, self.value(hints[key], value, kpath, kloc, f.metadata.get("choices"),
                                         getattr(obj, key)))
        return obj

    def value(self, tp: Any, value: Any, kpath: str, kloc: Loc, choices: Any, default: Any) -> Any:
        if _is_deferred(value):
            return value
        inner = tp
        if typing.get_origin(tp) is Union:  # Optional[Dataclass] / Optional[Dict]
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if value is None:
                return None
            if len(args) == 1:
                inner = args[0]
        if dataclasses.is_dataclass(inner):
            return self.dataclass(inner, value, kpath, kloc)
        origin = typing.get_origin(inner)
        if origin in (dict, Dict) and isinstance(value, dict):
            _, vtp = typing.get_args(inner)
            return {k: self.value(vtp, v, f"{kpath}.{k}", loc_of(value, k), None, None)
                    for k, v in value.items()}
        if origin in (list, List) and isinstance(value, list):
            (etp,) = typing.get_args(inner)
            return [self.value(etp, v, f"{kpath}[{i}]", loc_of(value, i), None, None)
                    for i, v in enumerate(value)]
        try:
            value = _coerce(tp, value)
        except ValueError as exc:
            self.error(kloc, kpath, str(exc))
            return default
        if choices and value not in choices:
            self.error(kloc, kpath, f"'{value}' is not one of {', '.join(choices)}")
            return default
        return value


def parse_backend_options(tree: Any, loc: Optional[Loc] = None, key_path: str = "backend",
                          problems: Optional[Problems] = None, strict: bool = False) -> BackendOptions:
    """Apply the backend schema to a (merged or single-layer) backend mapping.

    :param tree: the mapping (``opts.backend``, a recipe's/cab's/step's ``backend``, or a merge).
    :param loc: location to report when ``tree`` itself is not a mapping.
    :param key_path: dotted key path of ``tree`` used in problem messages.
    :param problems: where to record problems (``None``: don't report).
    :param strict: unknown keys are errors instead of warnings.
    """
    return _Parser(problems, strict).dataclass(BackendOptions, tree, key_path, loc or loc_of(tree))


def check_config_backend(tree: Any, problems: Problems, strict: bool = False) -> None:
    """Check the merged config's ``opts.backend`` (Stimela rejects a whole run for a bad key there).

    Unknown keys are warnings, errors with ``strict``; wrong value types are errors. Locations
    are those of the file that wrote each key.
    """
    opts = tree.get("opts") if isinstance(tree, dict) else None
    node = opts.get("backend") if isinstance(opts, dict) else None
    if node is not None:
        parse_backend_options(node, loc_of(opts, "backend"), "opts.backend", problems, strict)


def effective_backend(config_tree: Any, recipe_chain: Any = (), cab: Any = None, step: Any = None,
                      override: Any = None, *, problems: Optional[Problems] = None,
                      strict: bool = False) -> tuple[BackendOptions, CMap]:
    """Merged backend settings of one step, in Stimela's order, plus an ``override`` layer on top
    (e.g. ``stepcab plan --backend`` or a trigger-time ``conf``).

    :param config_tree: the merged config (its ``opts.backend`` is the base layer).
    :param recipe_chain: recipes from outermost to innermost (objects with ``.backend`` or mappings).
    :param override: a mapping, or a backend name / comma list meaning ``{select: ...}``.
    :returns: ``(BackendOptions, merged mapping)``.
    """
    base = ((config_tree or {}).get("opts") or {}).get("backend") if isinstance(config_tree, dict) else None
    layers = [base]
    layers += [_backend_of(r) for r in recipe_chain]
    layers += [_backend_of(cab), _backend_of(step)]
    if isinstance(override, (str, list, tuple)) and not isinstance(override, dict):
        override = {"select": select_list(override)}
    layers.append(override)
    merged = merge_backend_layers(*layers)
    return parse_backend_options(merged, None, "backend", problems, strict), merged


@functools.lru_cache(maxsize=None)
def _schema_of(cls: type) -> tuple[dict, dict]:
    """``(type hints, fields by name)`` of an options dataclass (``get_type_hints`` is slow)."""
    return typing.get_type_hints(cls), {f.name: f for f in dataclasses.fields(cls)}


def _backend_of(obj: Any) -> Any:
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get("backend") if "backend" in obj else obj
    return getattr(obj, "backend", None)


def select_backend(opts: BackendOptions, cab: Any = None,
                   available: Optional[typing.Collection[str]] = None) -> tuple[Optional[str], dict]:
    """Pick the backend like Stimela: the first name in ``select`` that is known, enabled,
    available (when ``available`` is given) and, for container backends, has a cab image.

    :returns: ``(name or None, {name: excuse})``.
    """
    excuses: dict = {}
    for name in opts.select or DEFAULT_SELECT:
        sub = getattr(opts, name, None) if name in SELECTABLE else None
        enable = getattr(sub, "enable", True)
        if name in ENGINE_SECTIONS:
            section = opts.extras.get(name)
            enable = section.get("enable", True) if isinstance(section, dict) else True
        if name not in SELECTABLE:
            excuses[name] = "unknown backend"
        elif enable is False:
            excuses[name] = "disabled"
        elif available is not None and name not in available:
            excuses[name] = "not available"
        elif name in NEEDS_IMAGE and cab is not None and not getattr(cab, "image", None):
            excuses[name] = "container image not specified by cab"
        else:
            return name, excuses
    return None, excuses


def engine_options(opts: BackendOptions, name: str = "podman", *, problems: Optional[Problems] = None,
                   strict: bool = False) -> PodmanOptions:
    """The typed :class:`PodmanOptions` of the ``podman`` or ``docker`` section kept raw in
    :attr:`BackendOptions.extras` (unknown keys: warnings, errors with ``strict``)."""
    node = (opts.extras or {}).get(name) if opts is not None else None
    return _Parser(problems, strict).dataclass(PodmanOptions, node, f"backend.{name}", loc_of(node))


__all__ = [
    "BackendOptions", "NativeOptions", "SingularityOptions", "KubeOptions", "SlurmOptions", "BindDir",
    "KubeVolume", "KubePodSpec", "merge_backend_layers", "parse_backend_options", "effective_backend",
    "select_list", "select_backend", "SELECTABLE", "EXTRA_SECTIONS", "PodmanOptions", "engine_options",
    "check_config_backend",
]
