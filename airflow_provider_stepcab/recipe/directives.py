"""Stimela's load-time directives: ``_include``, ``_use``, ``_scrub`` (and ``*_post``).

Behaviour follows ``scabha/configuratt`` of Stimela 2.1.4 (read for facts only):

- Directives may appear in any mapping at any depth. For one mapping, until no
  include is left (at most 20 passes): files named by ``_include`` are loaded and
  merged in order (later wins), ``_scrub`` deletes paths from that merged
  content, then the mapping's own content is merged on top, then ``_include_post``
  content (scrubbed by ``_scrub_post``) on top of that. Then ``_use`` sections are
  looked up (current file first, then the already loaded config), merged in
  order, resolved, scrubbed, and the local content merged on top; ``_use_post``
  goes on top of the result. Then children (mapping values, list items) are
  processed the same way.
- ``_scrub`` goes with ``_include`` when the mapping has one, else with ``_use``.
- Included files are loaded without resolving their ``_use``: that happens once
  their content sits inside the including file.
- Include specs: a string, a list, or a mapping whose keys prefix the nested
  entries (``{"(cultcargo)": ["a.yml", {"casa": ["flag.yml"]}]}`` →
  ``(cultcargo)/a.yml``, ``(cultcargo)/casa/flag.yml``). ``[optional]`` and
  ``[warn]`` suffixes tolerate a missing file. See :func:`find_include`.

``_requires``/``_contingent`` are checked afterwards on the merged config with
:func:`check_requirements`. Problems are recorded, never raised: a broken
include is skipped and loading goes on.
"""

from __future__ import annotations

import errno
import importlib.util
import os
import re
import stat
from typing import Any, Callable, Sequence

from .errors import Loc, Problems
from .foreign import Inclusion
from .limits import current_limits, setting_names
from .merge import lookup, merge, scrub
from .yamlguard import file_kind
from .yamlio import CList, CMap, count_nodes, loc_of

IMPLICIT_EXTENSIONS = (".yml", ".yaml")
MAX_PASSES = 20

#: ``load_file(path, location, stack) -> CMap | None`` — loads an included file
#: (parse + interpolation + its own includes, no ``_use``), recording its problems.
LoadFile = Callable[[str, str, list], Any]


class IncludeError(Exception):
    """An include spec could not be turned into a file (message is user-facing)."""


def _sub(location: str, key: Any) -> str:
    return f"{location}.{key}" if location else str(key)


# ---------------------------------------------------------------------------------
# include path resolution
# ---------------------------------------------------------------------------------

def default_search_path(include_dirs: Sequence[str] = (), opts_include: Sequence[str] = ()) -> list[str]:
    """Stimela's include search path (after ``"."`` and the including file's directory).

    ``-I`` dirs, ``STIMELA_INCLUDE`` entries (colon-separated), ``~/.stimela`` (if it
    exists), ``$VIRTUAL_ENV/lib/stimela``, ``$VIRTUAL_ENV``, ``~/lib/stimela``,
    ``/usr/lib/stimela``, ``/usr/local/lib/stimela``, ``.``, then ``opts.include``.
    """
    path = [os.path.expanduser(p) for p in include_dirs]
    env = os.environ.get("STIMELA_INCLUDE")
    if env:
        path += env.split(":")
    confdir = os.path.expanduser("~/.stimela")
    if os.path.isdir(confdir):
        path.append(confdir)
    venv = os.environ.get("VIRTUAL_ENV")
    if venv:
        path += [os.path.join(venv, "lib/stimela"), venv]
    path += [os.path.expanduser("~/lib/stimela"), "/usr/lib/stimela", "/usr/local/lib/stimela", "."]
    return path + [str(p) for p in opts_include]


def split_flags(spec: str) -> tuple[str, bool, bool]:
    """``"x.yml[optional,warn]"`` → ``("x.yml", optional, warn)``."""
    m = re.match(r"^(.*)\[(.*)\]$", spec)
    if not m:
        return spec, False, False
    flags = {f.strip().lower() for f in m.group(2).split(",")}
    return m.group(1), "optional" in flags, "warn" in flags


def package_dir(modname: str) -> str:
    """Directory of an installed package (or of the module's parent), without importing it.

    Only the top-level package is located with :func:`importlib.util.find_spec`;
    sub-packages are found by walking its directories, so no package code runs.

    :raises IncludeError: the package is not installed / cannot be located.
    """
    top, *rest = modname.split(".")
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        raise IncludeError(f"package '{top}' is not installed")
    if spec.submodule_search_locations:
        where = list(spec.submodule_search_locations)[0]
    elif spec.origin and not rest:
        return os.path.dirname(spec.origin)
    else:
        raise IncludeError(f"can't resolve a directory for '{modname}'")
    for i, part in enumerate(rest):
        if os.path.isdir(os.path.join(where, part)):
            where = os.path.join(where, part)
        elif i == len(rest) - 1 and os.path.isfile(os.path.join(where, part + ".py")):
            break
        else:
            raise IncludeError(f"module '{modname}' not found (package '{top}' has no '{part}')")
    return where


def _candidates(path: str) -> list[str]:
    if path.endswith(IMPLICIT_EXTENSIONS):
        return [path]
    return [path + ext for ext in IMPLICIT_EXTENSIONS]


def _first_file(path: str, notes: list[str]) -> str | None:
    """Absolute path of the first candidate for ``path`` that is a regular file, else ``None``.

    Only ``.yml``/``.yaml`` files are included (a deliberate difference from Stimela, which reads
    any file: an include of ``/etc/shadow`` would put its lines into the error messages). Why
    candidates that exist were passed over goes into ``notes``.
    """
    for cand in _candidates(path):
        try:
            st = os.stat(cand)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                notes.append(f"{cand} is a symbolic link loop")
            continue
        if stat.S_ISREG(st.st_mode):
            return os.path.abspath(cand)
        notes.append(f"{cand} is {file_kind(st.st_mode)}, not a regular file")
    if not path.endswith(IMPLICIT_EXTENSIONS) and os.path.lexists(path):
        notes.append(f"{path} is not a .yml/.yaml file (only YAML files are included)")
    return None


def _not_found(what: str, notes: list[str]) -> IncludeError:
    return IncludeError(notes[0] if notes else what)


def _describe(path: str) -> str:
    return path if path.endswith(IMPLICIT_EXTENSIONS) else f"{path} (tried {', '.join(IMPLICIT_EXTENSIONS)})"


def find_include(spec: str, includer: str, search_path: Sequence[str]) -> str:
    """Absolute path of the file an include spec (flags already removed) names.

    - ``(module)file`` / ``(module)/file``: inside an installed package;
    - ``(.)file``, ``(..)file``: relative to the including file's directory;
    - absolute paths as they are;
    - relative paths: ``"."``, the including file's directory, then ``search_path``.

    Without a ``.yml``/``.yaml`` suffix, those two are appended; only regular files count.

    :raises IncludeError: with a message naming what was tried, or why an existing path is not
        included (a directory, a FIFO, a symbolic link loop, not a YAML file).
    """
    notes: list[str] = []
    m = re.match(r"^\((.+)\)/?(.+)$", spec)
    if m:
        modname, filename = m.groups()
        if modname.startswith("."):
            target = os.path.join(os.path.dirname(includer), modname, filename)
        else:
            target = os.path.join(package_dir(modname), filename)
        found = _first_file(target, notes)
        if found is None:
            raise _not_found(f"{_describe(os.path.normpath(target))} does not exist", notes)
        return found
    if os.path.isabs(spec):
        found = _first_file(spec, notes)
        if found is None:
            raise _not_found(f"{_describe(spec)} does not exist", notes)
        return found
    dirs = [".", os.path.dirname(includer)] + list(search_path)
    for d in dirs:
        found = _first_file(os.path.join(d, spec), notes)
        if found is not None:
            return found
    shown = list(dict.fromkeys(os.path.abspath(d) if d == "." else d for d in dirs))
    raise _not_found(f"not found; searched {':'.join(shown)}", notes)


def include_specs(directive: Any, loc: Loc, problems: Problems, key: str) -> list[tuple[str, Loc]]:
    """Flatten an ``_include`` value (string / list / prefix mapping) to ``(spec, loc)`` pairs."""
    out: list[tuple[str, Loc]] = []

    def walk(value: Any, where: Loc, prefix: str | None) -> None:
        if isinstance(value, str):
            out.append((value if prefix is None else f"{prefix}/{value}", where))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                walk(item, loc_of(value, i) if isinstance(value, CList) else where, prefix)
        elif isinstance(value, dict):
            for k, item in value.items():
                walk(item, loc_of(value, k), str(k) if prefix is None else f"{prefix}/{k}")
        else:
            problems.error(where, key, f"contains an invalid entry of type {type(value).__name__}",
                           code="bad-directive")

    walk(directive, loc, None)
    return out


# ---------------------------------------------------------------------------------
# the resolver
# ---------------------------------------------------------------------------------

class Resolver:
    """Resolves directives of one load session.

    :param load_file: loads an included file (see :data:`LoadFile`).
    :param problems: where problems go.
    :param search_path: include search path after ``"."`` and the includer's dir.
    :param strict: report warnings (``[warn]`` includes ...) as errors.
    """

    def __init__(self, load_file: LoadFile, problems: Problems, search_path: Sequence[str],
                 strict: bool = False):
        self.load_file = load_file
        self.problems = problems
        self.search_path = list(search_path)
        self.strict = strict
        self.max_nodes = current_limits().max_alias_nodes
        self.copied = 0  # nodes that _use sections and nested _include files copied into the tree
        self.inclusions: list = []  # every included file (see .foreign), in the order merged

    def _count_copy(self, value: Any, loc: Loc, key: str, what: str) -> bool:
        """Count the nodes a ``_use``/nested ``_include`` copies (each copy of a section that itself
        copies others multiplies the document, as YAML aliases do); False (and an error) once
        over ``max_alias_nodes``."""
        if value is not None:
            self.copied += count_nodes(value, self.max_nodes - self.copied)
        if self.copied <= self.max_nodes:
            return True
        self.problems.error(loc, key, f"{what}: _use and _include copy more than {self.max_nodes} "
                            f"nodes ({setting_names('max_alias_nodes')})", code="alias-limit")
        return False

    def _warn(self, loc: Loc, key: str, message: str, code: str) -> None:
        (self.problems.error if self.strict else self.problems.warning)(loc, key, message, code)

    def resolve(self, conf: Any, *, pathname: str, location: str, use_sources: list | None,
                stack: list[str], top: bool = False, use_stack: tuple = ()) -> Any:
        """Resolve directives in ``conf`` and below; returns the (possibly new) node.

        :param use_sources: ``[this file's top mapping, *loaded configs]``, or ``None``
            to leave ``_use`` alone (included files). With ``top=True`` the first
            entry is kept pointing at the current state of ``conf``.
        """
        if isinstance(conf, dict):
            for _ in range(MAX_PASSES):
                pre = self._includes(conf, "_include", pathname, location, stack)
                post = self._includes(conf, "_include_post", pathname, location, stack)
                if pre is None and post is None:
                    break
                # conf, pre and post are this load's private trees: merged without copies
                conf = merge(merge(pre or CMap(loc=conf.loc), conf, own_base=True, own_override=True), post,
                             own_base=True, own_override=True)
                if top and use_sources is not None:
                    use_sources[0] = conf
            else:
                self.problems.error(loc_of(conf), location or "<top>",
                                    "recursion limit exceeded, check your _use and _include statements",
                                    code="recursion")
            if use_sources is not None:
                base = self._uses(conf, "_use", pathname, location, use_sources, stack, use_stack)
                if base is not None:
                    conf = merge(base, conf, own_base=True, own_override=True)
                post = self._uses(conf, "_use_post", pathname, location, use_sources, stack, use_stack)
                if post is not None:
                    conf = merge(conf, post, own_base=True, own_override=True)
                if top:
                    use_sources[0] = conf
                for kw in ("_scrub", "_scrub_post"):
                    if kw in conf:
                        self._warn(conf.key_loc(kw) if isinstance(conf, CMap) else loc_of(conf),
                                   _sub(location, kw), f"{kw} has no effect without an _include or _use",
                                   code="unused-directive")
                        del conf[kw]
            for key in list(conf.keys()):
                value = conf[key]
                if isinstance(value, (dict, list)):
                    new = self.resolve(value, pathname=pathname, location=_sub(location, key),
                                       use_sources=use_sources, stack=stack, use_stack=use_stack)
                    if new is not value:
                        conf[key] = new
        elif isinstance(conf, list):
            for i, value in enumerate(conf):
                if isinstance(value, (dict, list)):
                    new = self.resolve(value, pathname=pathname, location=f"{location}[{i}]",
                                       use_sources=use_sources, stack=stack, use_stack=use_stack)
                    if new is not value:
                        conf[i] = new
        return conf

    @staticmethod
    def _pop(conf: dict, key: str) -> tuple[Any, Loc]:
        loc = loc_of(conf, key)
        return conf.pop(key, None), loc

    def _includes(self, conf: dict, keyword: str, pathname: str, location: str,
                  stack: list[str]) -> CMap | None:
        if keyword not in conf:
            return None
        directive, dloc = self._pop(conf, keyword)
        scrub_kw = keyword.replace("include", "scrub")
        scrubs, sloc = self._pop(conf, scrub_kw) if scrub_kw in conf else (None, dloc)
        key = _sub(location, keyword)
        accum: Any = CMap(loc=dloc)
        for spec, loc in include_specs(directive, dloc, self.problems, key):
            if not spec:
                self.problems.error(loc, key, f"empty {keyword} specifier", code="bad-directive")
                continue
            name, optional, warn = split_flags(spec)
            try:
                path = find_include(name, pathname, self.search_path)
            except IncludeError as exc:
                msg = f"cannot include '{spec}': {exc}"
                if not optional:
                    self.problems.error(loc, key, msg, code="missing-include")
                elif warn:
                    self._warn(loc, key, f"optional {msg}", code="missing-include")
                continue
            chain = next((stack[i:] for i, p in enumerate(stack) if _same(p, path)), None)
            if chain is not None:
                cycle = " -> ".join(chain + [path])
                self.problems.error(loc, key, f"'{spec}' is included recursively: {cycle}",
                                    code="include-cycle")
                continue
            if location and not self._count_copy(None, loc, key, f"cannot include '{spec}'"):
                continue  # over the limit already: not even loaded
            incl = self.load_file(path, location, stack)
            if incl is None:
                continue
            if location and not self._count_copy(incl, loc, key, f"cannot include '{spec}'"):
                continue
            if not isinstance(incl, dict):
                self.problems.error(loc, key, f"cannot include '{spec}': {path} does not contain a mapping",
                                    code="bad-include")
                continue
            self.inclusions.append(inclusion(path, loc, key, incl))
            accum = merge(accum, incl, own_base=True, own_override=True)
        if scrubs is not None:
            for err in scrub(accum, scrubs):
                self.problems.error(sloc, _sub(location, scrub_kw), f"cannot scrub: {err}", code="scrub")
        return accum

    def _uses(self, conf: dict, keyword: str, pathname: str, location: str, sources: list,
              stack: list[str], use_stack: tuple) -> Any:
        if keyword not in conf:
            return None
        names, dloc = self._pop(conf, keyword)
        scrub_kw = keyword.replace("use", "scrub")
        scrubs, sloc = self._pop(conf, scrub_kw) if scrub_kw in conf else (None, dloc)
        key = _sub(location, keyword)
        if isinstance(names, str):
            names = [names]
        if not isinstance(names, list):
            self.problems.error(dloc, key, f"must be a string or a list, not {type(names).__name__}",
                                code="bad-directive")
            return None
        base: Any = None
        for i, name in enumerate(names):
            loc = loc_of(names, i) if isinstance(names, CList) else dloc
            if not isinstance(name, str):
                self.problems.error(loc, key, f"invalid entry {name!r}", code="bad-directive")
                continue
            if name in use_stack:
                cycle = " -> ".join(list(use_stack) + [name])
                self.problems.error(loc, key, f"'{name}' is used recursively: {cycle}", code="use-cycle")
                continue
            section = lookup(name, sources)
            if section is None:
                self.problems.error(loc, key, f"'{name}' not found (looked in this file, then the loaded config)",
                                    code="unknown-use")
                continue
            if not isinstance(section, dict):
                self.problems.error(loc, key, f"'{name}' is a {type(section).__name__}, not a section",
                                    code="bad-use")
                continue
            if not self._count_copy(section, loc, key, f"cannot use '{name}'"):
                continue
            section = merge(CMap(loc=section.loc), section)  # a private copy
            section = self.resolve(section, pathname=pathname, location=key, use_sources=sources,
                                   stack=stack, use_stack=use_stack + (name,))
            base = section if base is None else merge(base, section, own_base=True, own_override=True)
        if base is not None and scrubs is not None:
            for err in scrub(base, scrubs):
                self.problems.error(sloc, _sub(location, scrub_kw), f"cannot scrub: {err}", code="scrub")
        return base


def inclusion(path: str, site: Loc, key: str, content: dict) -> Inclusion:
    """What :mod:`.foreign` needs to know of an included file: the lines of its own top-level keys."""
    locs = getattr(content, "key_locs", {})
    keys = tuple(sorted((loc.line, str(k)) for k, loc in locs.items() if loc.file == path and loc.line))
    return Inclusion(path, site, key, keys)


def _same(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)
