"""Problems about an included file that is not a recipe, cab or config file: reported without its content.

``_include: secrets.yml`` of a YAML file that is not Stimela's (a site's credentials, an inventory)
turns every one of its keys into an "unknown field" warning, or a recipe name that is "not a
mapping", and each message would quote a key of that file in the import errors shown in the UI
(``docs/security.md``, "Loading limits"). When *every* top-level key of an included file has a
problem of its own (the key itself is unknown or invalid there), the file does not fit where it is included: its problems are replaced by one, naming the
file, the first line concerned, where it is included and the kinds of problem, and quoting nothing of
the file. An included fragment with one typo among good keys keeps its precise messages.

Pure: no I/O.
"""

from __future__ import annotations

from typing import Iterable, NamedTuple

from .errors import ERROR, WARNING, Loc, Problem, Problems


class Inclusion(NamedTuple):
    """One file an ``_include`` merged in: where, and ``(line, name)`` of its own top-level keys."""

    path: str
    site: Loc
    site_key: str
    keys: tuple


def hide_foreign_content(problems: Problems, inclusions: Iterable[Inclusion]) -> Problems:
    """``problems`` with those of each foreign included file (see the module doc) replaced by one."""
    by_file: dict = {}
    for inc in inclusions:
        if inc.keys:
            by_file.setdefault(inc.path, []).append(inc)
    if not by_file:
        return problems
    own: dict = {}
    for p in problems:
        if p.loc.file in by_file and p.severity in (ERROR, WARNING):
            own.setdefault(p.loc.file, []).append(p)
    foreign = {path for path, found in own.items() if _every_key_has_a_problem(by_file[path], found)}
    if not foreign:
        return problems
    out, done = Problems(), set()
    for p in problems:
        path = p.loc.file
        if path not in foreign:
            out.add(p)
        elif path not in done:
            done.add(path)
            out.add(_summary(path, by_file[path], own[path]))
    return out


def _every_key_has_a_problem(inclusions: list, found: list) -> bool:
    """Each top-level key has a problem about that key itself: at its line, with a key path ending
    in its name (a problem deeper inside, such as a bad parameter of a cab, does not count)."""
    hit = {(p.loc.line, p.key.rsplit(".", 1)[-1]) for p in found}
    return all((line, name) in hit for inc in inclusions for line, name in inc.keys)


def _summary(path: str, inclusions: list, found: list) -> Problem:
    site = inclusions[0]
    kinds = ", ".join(sorted({p.code or "problem" for p in found}))
    keys = len(set(site.keys))
    where = f"included at {site.site}" + (f" ({site.site_key})" if site.site_key else "")
    others = len({inc.site for inc in inclusions}) - 1
    if others:
        where += f" and {others} other place(s)"
    severity = ERROR if any(p.is_error for p in found) else WARNING
    return Problem(Loc(path, min(p.loc.line for p in found)), site.site_key,
                   f"{where}: this file does not fit there (not a recipe, cab or config file?): none of "
                   f"its {keys} top-level key(s) is valid in that place ({len(found)} problem(s): {kinds}); "
                   "its content is not quoted", severity, "foreign-include")


__all__ = ["Inclusion", "hide_foreign_content"]
