"""Step selection from the command line, with Stimela 2.1.4's rules (``-s -k -t --skip-tags -e``).

Pure Python, no I/O. :func:`select_steps` takes a recipe (anything with ``steps``: label →
step with ``tags`` and ``recipe``) and the option strings as given on the command line, and
returns a :class:`StepChoice`: for every step, sub-recipe steps included, whether it is
*enabled* (selected) and whether it is *unskipped* (its ``skip``/``skip_if_outputs`` are
ignored). Stimela then forces ``skip`` on every disabled step, and clears ``skip`` and
``skip_if_outputs`` of unskipped steps that are not disabled; :meth:`StepChoice.forced_skip`
gives that outcome per step.

The rules (``stimela run`` 2.1.4, ``kitchen/run_state.py``), which we reproduce, quirks included:

* Every option takes commas and repeats; a name is a step label relative to the top recipe,
  ``sub.inner`` names a step of sub-recipe ``sub``; ``A:B``, ``A:`` and ``:B`` are ranges over
  the steps in recipe order (depth first, sub-recipe steps right after their parent).
  A range without a start begins at the recipe's very first step, one without an end stops at
  the very last step of the whole tree; ``:B`` leaves out the steps that contain ``B``.
* ``-s`` marks steps *enabled* (a single step) or *weakly enabled* (a range); ``-k`` marks them
  *disabled* or *weakly disabled*; ``-t TAG`` enables the direct children of a recipe that
  carry ``TAG`` (``-t sub.TAG`` for the children of ``sub``), ``--skip-tags`` disables them;
  a step tagged ``always`` is weakly enabled, one tagged ``never`` weakly disabled.
  A tag that no such child carries, and a step that does not exist, are errors.
* With any ``-s`` or ``-t``, unmarked steps are off; without, on.
* Per step the strongest mark wins: disabled > enabled > weakly disabled > weakly enabled.
  A disabled step disables its sub-steps; an enabled one turns on the steps containing it
  (and through them nothing else); the weak marks do the same, weakly. Sub-steps of an
  enabled or weakly enabled step are on unless marked otherwise.
* ``-s STEP`` given without a ``:`` anywhere in the option value also unskips STEP
  (``-s a -s b:c`` unskips ``a``; ``-s a,b:c`` unskips nothing); ``-e`` unskips (ranges too).

Ours, on top: a name with ``*``, ``?`` or ``[`` is a glob over the dotted step paths
(``image.*``: every step of ``image``); each step it matches is marked as if named alone, but a
glob in ``-s`` does not unskip (as a range does not; in ``-e`` it does), and one that matches
nothing is an error.

The same rules serve ``stepcab run`` and a DAG run's conf (``select``, ``skip_steps``, ``tags``,
``skip_tags``, ``enable_steps``: :mod:`..operators.overrides`).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

Path = tuple

#: Stimela's status precedence, strongest first.
_PRECEDENCE = ("disabled", "enabled", "weakly_disabled", "weakly_enabled")
_ON = frozenset(("enabled", "weakly_enabled", "implicitly_enabled"))
_OFF_BY_DEFAULT = "weakly_off"  # Stimela's default status with inclusions (it is never "on")


class SelectionError(ValueError):
    """A step, range or tag on the command line that the recipe does not have (exit code 2)."""


@dataclass(frozen=True)
class Selection:
    """The selection options as given (each entry may hold commas)."""

    steps: Sequence[str] = ()        # -s/--step
    skip_steps: Sequence[str] = ()   # -k/--skip-step
    tags: Sequence[str] = ()         # -t/--tags
    skip_tags: Sequence[str] = ()    # --skip-tags
    enable_steps: Sequence[str] = ()  # -e/--enable-step

    def __bool__(self) -> bool:
        return any((self.steps, self.skip_steps, self.tags, self.skip_tags, self.enable_steps))


@dataclass
class StepChoice:
    """The outcome of :func:`select_steps`; paths are tuples of labels from the top recipe."""

    order: list = field(default_factory=list)      # every step path, in recipe order
    enabled: dict = field(default_factory=dict)    # path -> bool
    unskipped: set = field(default_factory=set)

    def children(self, parent: Path) -> list:
        return [p for p in self.order if len(p) == len(parent) + 1 and p[:len(parent)] == parent]

    def anything_selected(self) -> bool:
        """Stimela runs nothing (and exits 0) when no top-level step is enabled."""
        return any(self.enabled[p] for p in self.children(()))

    def forced_skip(self, path: Path) -> bool | None:
        """``True``: skip whatever the recipe says; ``False``: run even if the recipe skips it
        (``skip_if_outputs`` ignored too); ``None``: as the recipe says."""
        if not self.enabled[path]:
            return True
        return False if path in self.unskipped else None

    def running(self) -> list:
        """Paths that are not force-skipped, nor inside a force-skipped step."""
        return [p for p in self.order if all(self.enabled[p[:i]] for i in range(1, len(p) + 1))]


# --------------------------------------------------------------------------- the tree

@dataclass
class _Tree:
    order: list        # non-root paths, depth first
    tags: dict         # path -> tuple of tags

    @classmethod
    def of(cls, recipe: Any) -> _Tree:
        order: list = []
        tags: dict = {}

        def walk(level: Any, prefix: Path) -> None:
            for label, step in level.steps.items():
                path = prefix + (label,)
                order.append(path)
                tags[path] = tuple(getattr(step, "tags", None) or ())
                if getattr(step, "recipe", None) is not None:
                    walk(step.recipe, path)

        walk(recipe, ())
        return cls(order, tags)

    @property
    def nodes(self) -> list:
        return [()] + self.order

    def has(self, path: Path) -> bool:
        return path == () or path in self.tags

    def children(self, parent: Path) -> list:
        return [p for p in self.order if len(p) == len(parent) + 1 and p[:len(parent)] == parent]


def _split(options: Iterable[str]) -> set:
    return {part for opt in options for part in str(opt).split(",")}


def _parent_and_last(spec: str) -> tuple[Path, str]:
    """``sub.inner`` → ``(("sub",), "inner")``; a range's ``:`` stays in the last part."""
    parts = spec.split(".")
    return tuple(parts[:-1]), parts[-1]


def _is_glob(spec: str) -> bool:
    return any(c in spec for c in "*?[")


def _range(tree: _Tree, spec: str) -> list:
    """The step paths a step name, glob or range ``spec`` covers (Stimela's slicing, module doc)."""
    if _is_glob(spec) and ":" not in spec:
        hits = [p for p in tree.order if fnmatch.fnmatchcase(".".join(p), spec)]
        if not hits:
            raise SelectionError(f"'{spec}' matches no step")
        return hits
    parent, last = _parent_and_last(spec)
    bounds = last.split(":")
    if len(bounds) > 2:
        raise SelectionError(f"'{last}': a range has one ':' (BEGIN:END)")
    nodes = tree.nodes
    if len(nodes) < 2:
        raise SelectionError(f"'{spec}': the recipe has no steps")
    begin, end = (bounds[0], bounds[0]) if len(bounds) == 1 else bounds
    start = parent + (begin,) if begin else nodes[1]
    stop = parent + (end,) if end else nodes[-1]
    if not (tree.has(start) and tree.has(stop)):
        where = ".".join(parent) or "the top recipe"
        raise SelectionError(f"step(s) '{last}' not in {where}")
    covered = nodes[nodes.index(start):nodes.index(stop) + 1]
    if len(bounds) == 2 and not begin:  # ":B" leaves out the steps that contain B
        covered = [p for p in covered if not (len(p) < len(stop) and stop[:len(p)] == p)]
    return covered


def _mark_tags(tree: _Tree, marks: dict, specs: set, status: str) -> None:
    for spec in specs:
        parent, tag = _parent_and_last(spec)
        if not tree.has(parent):
            raise SelectionError(f"tag '{spec}': no step '{'.'.join(parent)}'")
        hits = [p for p in tree.children(parent) if tag in tree.tags[p]]
        if not hits:
            where = f"'{'.'.join(parent)}'" if parent else "the top recipe"
            raise SelectionError(f"'{tag}' is not a tag of any step of {where}")
        for p in hits:
            marks.setdefault(p, set()).add(status)


def _mark_steps(tree: _Tree, marks: dict, specs: set, single: str, ranged: str) -> None:
    for spec in specs:
        status = ranged if ":" in spec.split(".")[-1] and not _is_glob(spec) else single
        for p in _range(tree, spec):
            marks.setdefault(p, set()).add(status)


def _ancestors(path: Path) -> list:
    """Parent first, the root ``()`` last."""
    return [path[:i] for i in range(len(path) - 1, -1, -1)]


def _resolve(tree: _Tree, marks: dict, default: str) -> dict:
    """Stimela's ``resolve_states``: marks → final status per node (root included)."""
    status = {p: next(s for s in _PRECEDENCE if s in m) for p, m in marks.items()}
    nodes = tree.nodes
    for strong, weak in (("disabled", "enabled"), ("weakly_disabled", "weakly_enabled")):
        stop_at = ("enabled",) if weak == "enabled" else ("enabled", "weakly_enabled")
        for node in nodes:
            s = status.get(node)
            if s == strong:
                for child in tree.children(node):
                    status[child] = strong
            elif s == weak:
                for anc in _ancestors(node):
                    if status.get(anc) in stop_at:
                        break
                    status[anc] = "implicitly_enabled"
    status.setdefault((), default)
    for node in tree.order:
        s = status.get(node)
        if s in (None, "implicitly_enabled"):
            if status[node[:-1]] in ("enabled", "weakly_enabled"):
                status[node] = "weakly_enabled"
            else:
                status[node] = s or default
    return status


def select_steps(recipe: Any, selection: Selection) -> StepChoice:
    """Which steps of ``recipe`` run under ``selection`` (Stimela 2.1.4's rules, module doc).

    :raises SelectionError: a step, range or tag the recipe does not have.
    """
    tree = _Tree.of(recipe)
    marks: dict = {}
    for path, tags in tree.tags.items():
        if "always" in tags:
            marks.setdefault(path, set()).add("weakly_enabled")
        if "never" in tags:
            marks.setdefault(path, set()).add("weakly_disabled")
    _mark_tags(tree, marks, _split(selection.tags), "enabled")
    _mark_tags(tree, marks, _split(selection.skip_tags), "disabled")
    _mark_steps(tree, marks, _split(selection.steps), "enabled", "weakly_enabled")
    _mark_steps(tree, marks, _split(selection.skip_steps), "disabled", "weakly_disabled")
    implicit = [s for s in selection.steps if ":" not in s]
    unskips = _split(selection.enable_steps) | {s for s in _split(implicit) if not _is_glob(s)}
    unskipped = {p for spec in unskips for p in _range(tree, spec)}
    default = _OFF_BY_DEFAULT if (selection.tags or selection.steps) else "weakly_enabled"
    status = _resolve(tree, marks, default)
    return StepChoice(order=list(tree.order), enabled={p: status[p] in _ON for p in tree.order},
                      unskipped=unskipped)
