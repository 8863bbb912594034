"""Load Stimela 2 recipe/config documents into one merged, location-aware tree.

This mirrors ``stimela run`` (2.1.4): system configuration first, then every
given file in order (``configuratt.load`` + ``load_recipe_files``):

1. **Built-in defaults** (:data:`DEFAULTS_YAML`): the section skeleton of
   Stimela's config schema plus the values of Stimela's own ``stimela.conf`` and
   schema defaults that recipes rely on. Kept minimal on purpose; the backend
   options' other defaults belong to ``recipe/backends.py``.
2. **cult-cargo's** ``stimela.conf`` when the ``cultcargo`` package is installed
   (Stimela reads it as a system config, whether or not a recipe includes
   ``(cultcargo)``). It sets ``vars.cult-cargo.images`` and ``images.default-*``.
   The per-user configs Stimela also reads (``./stimela.conf``,
   ``~/.stimela/stimela.conf``, ``~/.config/stimela.conf``,
   ``$VIRTUAL_ENV/stimela.conf``) are deliberately *not* read, so that a recipe
   means the same thing on every Airflow worker.
3. Each given file: parsed, ``${...}``-interpolated (per file), directives
   resolved with ``_use`` looked up in the file itself, then the system config,
   then the files loaded before it; merged over the previous files.
4. ``_requires``/``_contingent`` are applied to the merged files.
5. Top-level keys ``images lib cabs opts vars run`` merge into the config,
   ``DEFAULT: name`` names the default recipe, every other key is a recipe,
   stored as ``lib.recipes.<name>``.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import field
from typing import Any, Iterable, Sequence

from .directives import IncludeError, Resolver, _sub, default_search_path, package_dir
from .errors import Loc, Problems, RecipeError
from .interp import interpolate
from .limits import current_limits
from .merge import merge
from .records import record
from .yamlguard import decode_text, read_bytes
from .yamlio import CList, CMap, copy_tree, load_yaml_file, load_yaml_text, loc_of

CONFIG_SECTIONS = ("images", "lib", "cabs", "opts", "vars", "run")

DEFAULTS_FILE = "<stimela-defaults>"

#: Stimela 2.1.4 built-in configuration (schema skeleton + package ``stimela.conf``).
DEFAULTS_YAML = """\
images:                       # stimela/stimela.conf (cult-cargo's stimela.conf overrides)
  default-python: {registry: quay.io/stimela2, name: python-astro, version: cc0.2.0}
  default-casa: {registry: quay.io/stimela2, name: casa, version: cc0.2.0}
lib: {params: {}, recipes: {}, steps: {}, misc: {}, wisdom: {}}
cabs: {}
opts:
  backend:                    # StimelaBackendOptions defaults that recipes refer to
    default_registry: quay.io/stimela2
    select: singularity,native
  log:                        # StimelaLogConfig defaults
    enable: true
    name: log-{info.fqname}
    ext: .txt
    dir: .
    nest: 999
    level: INFO
  include: []
  runtime:
    casa:
      path: casa
      opts: [--log2term, --nologger, --nologfile]
      wrapper: xvfb-run -a
vars: {}
run: {}
"""


@record
class LoadedConfig:
    """Result of :func:`load_documents`.

    :ivar tree: the merged config; recipes live in ``tree["lib"]["recipes"]``.
    :ivar recipe_names: top-level recipe keys of the given files, in order.
    :ivar default: the ``DEFAULT:`` recipe name, if any.
    :ivar files: absolute path of every file read (system configs, given files,
        includes), in the order first read; a cache key.
    :ivar problems: everything that went wrong, with file:line and key path.
    :ivar recipe_file: recipe name → absolute path of the given file it came from
        (the last given file whose content had it at top level, includes included).
    """

    tree: CMap
    recipe_names: list[str] = field(default_factory=list)
    default: str | None = None
    files: list[str] = field(default_factory=list)
    problems: Problems = field(default_factory=Problems)
    recipe_file: dict[str, str] = field(default_factory=dict)
    #: every included file and where (:class:`.foreign.Inclusion`): see :func:`.foreign.hide_foreign_content`
    inclusions: list = field(default_factory=list)
    #: absolute path of each given file -> the top-level keys written in it (before its includes)
    written_keys: dict[str, list] = field(default_factory=dict)


def check_requirements(conf: Any, bases: Sequence[Any], problems: Problems) -> list[tuple[str, str]]:
    """Apply ``_requires``/``_contingent`` everywhere in ``conf`` (in place).

    A name starting with ``.`` is looked up in the section itself, others in ``conf``
    then ``bases``. A missing ``_requires`` is an error; a missing ``_contingent``
    silently removes the section holding it (a list item is removed from its list).

    :returns: ``(location, name)`` of every section removed.
    """
    dropped: list[tuple[str, str]] = []

    def present(section: Any, name: str) -> bool:
        if name.startswith("."):
            configs, keys = [section], name[1:].split(".")
        else:
            configs, keys = [conf, *bases], name.split(".")
        for node in configs:
            for key in keys:
                if not isinstance(node, dict) or key not in node:
                    break
                node = node[key]
            else:
                return True
        return False

    def names(section: dict, kw: str, location: str) -> list[str]:
        value, loc = section.pop(kw, []), loc_of(section, kw)
        value = [value] if isinstance(value, str) else value
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            problems.error(loc, _sub(location, kw), "must be a string or a list of strings",
                           code="bad-directive")
            return []
        return list(value)

    def scan(section: Any, location: str) -> bool:
        drop = False
        if isinstance(section, dict):
            rloc = loc_of(section, "_requires")
            for req in names(section, "_requires", location):
                if not present(section, req):
                    problems.error(rloc, _sub(location, "_requires"),
                                   f"section '{location}' has missing requirement '{req}'",
                                   code="missing-requirement")
            for cont in names(section, "_contingent", location):
                if not present(section, cont):
                    dropped.append((location, cont))
                    drop = True
            for key in [k for k, v in list(section.items()) if scan(v, _sub(location, k))]:
                del section[key]
        elif isinstance(section, list):
            for i in [i for i, v in enumerate(section) if scan(v, f"{location}[{i}]")][::-1]:
                del section[i]
                if isinstance(section, CList) and i < len(section.item_locs):
                    del section.item_locs[i]
        return drop

    if scan(conf, ""):
        problems.error(loc_of(conf), "_contingent", "top-level configuration is contingent on missing sections",
                       code="missing-requirement")
    return dropped


def _kind(value: Any) -> str:
    """User-facing name of a YAML value's type."""
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return "nothing (null)" if value is None else type(value).__name__


_PARSED: dict[str, tuple[bytes, Any, list]] = {}
_PARSED_MAX = 512
#: files whose text has ``_requires``/``_contingent`` (only those need :func:`check_requirements`)
_REQUIRING: set[str] = set()
_REQUIREMENT_MARKERS = (b"_requires", b"_contingent")


def _parse_uncached(path: str, text: str | None) -> tuple[Any, list]:
    problems = Problems()
    try:
        tree = load_yaml_file(path) if text is None else load_yaml_text(text, path)
    except RecipeError as exc:
        problems.extend(exc.problems)
        return None, list(problems)
    if tree is None:  # an empty file is an empty mapping (as OmegaConf)
        tree = CMap(loc=Loc(path, 1))
    # no "${" in the text (nor a backslash, which could escape one in a quoted string): no value
    # can hold an interpolation, so skip walking the whole tree for one
    if text is None or "${" in text or "\\" in text:
        interpolate(tree, path, problems)
    return tree, list(problems)


def parse_file(path: str, *, share: bool = True) -> tuple[Any, list]:
    """``(tree, problems)`` of one file: parsed and ``${...}``-interpolated (``None`` if unreadable).

    Cached for the whole process by path and content digest, because the same includes (a shared
    cab library, cult-cargo's ``stimela.conf``) are read once per recipe file, and the DAG factory
    loads every recipe file of a folder. The returned tree is shared: callers copy it. With
    ``share=False`` the tree is parsed afresh, not cached, and belongs to the caller.
    """
    try:
        data = read_bytes(path, current_limits().max_file_size)
        text = decode_text(data, path)
    except RecipeError as exc:  # not a regular file, too large, not UTF-8: file, line and reason
        return None, list(exc.problems)
    if any(marker in data for marker in _REQUIREMENT_MARKERS):
        _REQUIRING.add(path)
    else:
        _REQUIRING.discard(path)
    if not share:
        return _parse_uncached(path, text)
    digest = hashlib.sha256(data).digest()
    hit = _PARSED.get(path)
    if hit is not None and hit[0] == digest:
        return hit[1], list(hit[2])
    tree, problems = _parse_uncached(path, text)
    if len(_PARSED) >= _PARSED_MAX:
        _PARSED.pop(next(iter(_PARSED)))
    _PARSED[path] = (digest, tree, problems)
    return tree, list(problems)


#: resolved included files, shared by the loads of one process (a cab library included by every
#: recipe file of a folder is parsed and resolved once): key -> (tree, stat key of the files read)
_INCLUDED: dict[tuple, tuple[Any, tuple]] = {}
_INCLUDED_MAX = 256


class _Session:
    """One load: file cache, problems, files read."""

    def __init__(self, include_dirs: Iterable[str], strict: bool):
        self.problems = Problems()
        self.files: list[str] = []
        self.reads: list[str] = []      # every parse, in order (repeats included)
        self._cache: dict[str, Any] = {}
        self.include_dirs = list(include_dirs)
        self.written_keys: dict[str, list] = {}  # given file -> its own top-level keys (before includes)
        self.resolver = Resolver(self._load_included, self.problems,
                                 default_search_path(self.include_dirs), strict)

    def _read(self, path: str) -> None:
        self.reads.append(path)
        if path not in self.files:
            self.files.append(path)

    def parse(self, path: str, *, private: bool = False) -> Any:
        """Parsed and interpolated content of ``path`` (a private copy), ``None`` if unreadable.

        ``private``: a file read once per load (the top-level document) is parsed afresh instead of
        being copied out of the process-wide parse cache.
        """
        self._read(path)
        if private and path not in self._cache:
            tree, problems = parse_file(path, share=False)
            self.problems.extend(problems)
            return tree
        if path not in self._cache:
            tree, problems = parse_file(path)
            self.problems.extend(problems)
            self._cache[path] = tree
        return copy_tree(self._cache[path])

    def _load_included(self, path: str, location: str, stack: list) -> Any:
        key = (path, location, tuple(self.resolver.search_path), self.resolver.strict)
        hit = _INCLUDED.get(key)
        if hit is not None and not any(f in stack for f, _, _ in hit[1]) and _stat_key(f for f, _, _ in hit[1]) == hit[1]:
            for f, _, _ in hit[1]:
                self._read(f)
            return copy_tree(hit[0])
        first_read, first_problem = len(self.reads), len(self.problems.items)
        tree = self.parse(path)
        if not isinstance(tree, dict):
            return tree
        tree = self.resolver.resolve(tree, pathname=path, location=location, use_sources=None,
                                     stack=list(stack) + [path])
        if len(self.problems.items) == first_problem:  # only clean results: problems depend on context
            if len(_INCLUDED) >= _INCLUDED_MAX:
                _INCLUDED.pop(next(iter(_INCLUDED)))
            _INCLUDED[key] = (copy_tree(tree), _stat_key(dict.fromkeys(self.reads[first_read:])))
        return tree

    def load_top(self, path: str, sources: list) -> CMap | None:
        tree = self.parse(path, private=True)
        if tree is None:
            return None
        self.written_keys[os.path.abspath(path)] = list(tree) if isinstance(tree, dict) else []
        if not isinstance(tree, dict):
            self.problems.error(loc_of(tree) if hasattr(tree, "loc") else Loc(path, 1), "",
                                f"top level must be a mapping, not {_kind(tree)}",
                                code="bad-document")
            return None
        use = [tree] + list(sources)
        return self.resolver.resolve(tree, pathname=path, location="", use_sources=use,
                                     stack=[path], top=True)


def _document_path(spec: str) -> str:
    """Absolute path of a given document; ``(module)file`` and ``module::file`` allowed."""
    m = re.fullmatch(r"\((.+)\)/?(.+)", spec) or re.fullmatch(r"([\w.]+)::(.+)", spec)
    if m:
        return os.path.abspath(os.path.join(package_dir(m.group(1)), m.group(2)))
    return os.path.abspath(os.path.expanduser(spec))


#: (stat of the files read) -> (system config, files, problems); see :func:`shared_system_config`
_SYSTEM: dict[tuple, tuple[Any, list, list]] = {}


def _stat_key(files: Iterable[str]) -> tuple:
    out = []
    for f in files:
        try:
            st = os.stat(f)
            out.append((f, st.st_size, st.st_mtime_ns))
        except OSError:
            out.append((f, None, None))
    return tuple(out)


def shared_system_config(session: _Session) -> CMap:
    """:func:`system_config`, built once per process while cult-cargo's files are unchanged.

    The returned tree is shared (read-only): :func:`load_documents` only reads it and copies what it
    keeps. The files it read and its problems are added to ``session`` as if it had been loaded.
    """
    for (key, (conf, files, problems)) in list(_SYSTEM.items()):
        if _stat_key(files) == key:
            break
    else:
        own = _Session(session.include_dirs, session.resolver.strict)
        conf = system_config(own)
        files, problems = list(own.files), list(own.problems)
        _SYSTEM.clear()
        _SYSTEM[_stat_key(files)] = (conf, files, problems)
    for f in files:
        if f not in session.files:
            session.files.append(f)
    session.problems.extend(problems)
    return conf


def system_config(session: _Session) -> CMap:
    """Built-in defaults merged with cult-cargo's ``stimela.conf`` when installed."""
    conf = load_yaml_text(DEFAULTS_YAML, DEFAULTS_FILE)
    try:
        ccpath = os.path.join(package_dir("cultcargo"), "stimela.conf")
    except IncludeError:
        ccpath = None
    if ccpath and os.path.isfile(ccpath):
        loaded = session.load_top(ccpath, [conf])
        if loaded is not None:
            conf = merge(conf, loaded)
    check_requirements(conf, [], session.problems)
    return conf


def load_documents(paths: Iterable[str] | str, *, include_dirs: Iterable[str] = (),
                   strict: bool = False) -> LoadedConfig:
    """Load recipe/config files the way ``stimela run f1.yml f2.yml`` does.

    Never raises for a bad file: unreadable files, YAML errors, missing includes
    and the like are recorded in ``.problems`` and loading goes on with the rest.

    :param paths: files in merge order (later ones win); ``(package)file`` allowed.
    :param include_dirs: extra include search dirs (Stimela's ``-I``), searched
        before ``STIMELA_INCLUDE`` and the standard locations.
    :param strict: report loader warnings (e.g. a ``[warn]`` include that is
        missing, a ``_scrub`` with nothing to scrub) as errors.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    session = _Session(include_dirs, strict)
    sysconf = shared_system_config(session)
    opts_include = (sysconf.get("opts") or {}).get("include") or []
    if opts_include:
        session.resolver.search_path += [str(p) for p in opts_include]

    full = CMap()
    recipe_file: dict[str, str] = {}
    for spec in paths:
        spec = os.fspath(spec)
        try:
            path = _document_path(spec)
        except IncludeError as exc:
            session.problems.error(Loc(spec, 0), "", f"cannot load '{spec}': {exc}", code="missing-package")
            continue
        conf = session.load_top(path, [sysconf, full])
        if conf is None:
            continue
        for key in conf:
            recipe_file[key] = path
        full = merge(full, conf, own_base=True, own_override=True)

    if any(f in _REQUIRING for f in session.files):
        check_requirements(full, [sysconf], session.problems)

    # the system config is shared: a shallow layer whose lib.recipes gets the file's recipes;
    # merge() below deep-copies everything it keeps
    tree = CMap(sysconf, loc=sysconf.loc)
    tree.key_locs = dict(sysconf.key_locs)
    lib = sysconf.get("lib")
    tree["lib"] = CMap(lib, loc=lib.loc) if isinstance(lib, CMap) else CMap()
    if isinstance(lib, CMap):
        tree["lib"].key_locs = dict(lib.key_locs)
    old_recipes = tree["lib"].get("recipes")
    recipes = CMap(old_recipes, loc=old_recipes.loc) if isinstance(old_recipes, CMap) else CMap()
    if isinstance(old_recipes, CMap):
        recipes.key_locs = dict(old_recipes.key_locs)
    tree["lib"]["recipes"] = recipes
    update = CMap(loc=full.loc)
    names: list[str] = []
    default = None
    for name, value in full.items():
        loc = loc_of(full, name)
        if name in CONFIG_SECTIONS:
            update.set(name, value, loc)
        elif name == "DEFAULT":
            if isinstance(value, str):
                default = value
            else:
                session.problems.error(loc, "DEFAULT", f"must be a recipe name (a string), not "
                                       f"{_kind(value)}", code="bad-default")
        elif not isinstance(value, dict):
            session.problems.error(loc, str(name), f"a recipe (a mapping) was expected, got "
                                   f"{_kind(value)}", code="bad-recipe")
        else:
            recipes[name] = value
            if isinstance(recipes, CMap):
                recipes.key_locs[name] = loc
            names.append(name)
    tree = merge(tree, update, own_override=True)  # the system config part is shared: copied
    return LoadedConfig(tree=tree, recipe_names=names, default=default, files=list(session.files),
                        problems=session.problems,
                        recipe_file={n: recipe_file[n] for n in names if n in recipe_file},
                        inclusions=list(session.resolver.inclusions), written_keys=session.written_keys)
