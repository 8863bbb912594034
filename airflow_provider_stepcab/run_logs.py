"""``stepcab run``'s working files: Stimela's per-step log files and terminal progress.

Stimela 2.1.4 writes ``{opts.log.dir}/{opts.log.name}{opts.log.ext}`` (default
``./log-{info.fqname}.txt``) for the recipe and every step down to ``opts.log.nest`` levels
(``log-stimela.txt`` for the command itself, ``log-RECIPE.txt``, ``log-RECIPE.STEP.txt``,
``log-RECIPE.SUB.STEP.txt``; a loop's iterations share one file); a step deeper than ``nest``
writes into its ancestor's file. Characters other than ``[a-zA-Z0-9_./-]`` become ``_``.
:class:`StepLogs` does the same with the lines Airflow logs for each task (the task logs of
``dag.test()`` are not files), so a user's ``tail -f log-*.txt`` habits keep working.

Nothing here imports Airflow; :mod:`.run_cli` feeds it log events.
"""

from __future__ import annotations

import datetime
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Any, TextIO

_SUBST = re.compile(r"\{([A-Za-z_][\w.-]*)\}")
_BAD_CHARS = re.compile(r"[^a-zA-Z0-9_./-]")


@dataclass
class LogOptions:
    """Stimela's ``opts.log`` (the keys ``stepcab run`` honours)."""

    enable: bool = True
    name: str = "log-{info.fqname}"
    ext: str = ".txt"
    dir: str = "."
    nest: int = 999

    @classmethod
    def from_tree(cls, tree: Any) -> LogOptions:
        log = ((tree or {}).get("opts") or {}).get("log") or {}
        out = cls()
        for key in ("enable", "name", "ext", "dir", "nest"):
            if log.get(key) is not None:
                setattr(out, key, type(getattr(out, key))(log[key]))
        return out


def _substitute(text: str, values: dict) -> str:
    return _SUBST.sub(lambda m: str(values.get(m.group(1), m.group(0))), text)


def _info(fqname: str) -> dict:
    parts = fqname.split(".")
    return {"info.fqname": fqname, "info.label": parts[-1], "info.taskname": fqname,
            "info.label_parts": parts, "info.suffix": ""}


@dataclass
class StepLogs:
    """Per-step log files in ``workdir`` (see the module docstring).

    :param recipe_name: the top recipe's name (first part of every fqname).
    :param run_values: ``config.run`` values for ``{config.run.X}`` in the log name/dir.
    :param namespaces: fqname → the recipe's namespace at that step (``root``, ``recipe``,
        ``config`` ...: :attr:`..recipe.resolve.ResolvedStep.command_ns`), for the other names a log
        dir/name may use, as Stimela substitutes them (``dir: '{root.dir_out}/logs'``). As in
        Stimela 2.1.4, a recipe's own file is named before its inputs are known (only ``config``
        and ``info``; other names give empty text), and a path that cannot be substituted (the
        command's own ``log-stimela.txt``) keeps the default ``./log-{info.fqname}.txt``.
    """

    workdir: str
    recipe_name: str
    options: LogOptions = field(default_factory=LogOptions)
    run_values: dict = field(default_factory=dict)
    namespaces: dict = field(default_factory=dict)
    _files: dict = field(default_factory=dict)
    written: list = field(default_factory=list)

    def path_for(self, fqname: str) -> str:
        values = {**_info(fqname), **{f"config.run.{k}": v for k, v in self.run_values.items()}}
        path = os.path.join(self.options.dir or ".", self.options.name + self.options.ext)
        path = _substitute(path, values)
        if "{" in path and self.namespaces:
            path = self._from_recipe(fqname, path)
        if "{" in path:  # Stimela: "bad substitution in log path", the file logger stays as it was
            default = LogOptions()
            path = _substitute(os.path.join(default.dir, default.name + default.ext), values)
        path = _BAD_CHARS.sub("_", os.path.expanduser(path))
        return os.path.join(self.workdir, path)

    def _from_recipe(self, fqname: str, path: str) -> str:
        from airflow_provider_stepcab.recipe.errors import FormulaError
        from airflow_provider_stepcab.recipe.subst import substitute

        ns, forgive = self.namespaces.get(fqname), None
        if ns is None:  # a recipe's own file: named when only config and info are known
            prefix = fqname + "."
            first = next((ns for name, ns in self.namespaces.items() if name.startswith(prefix)), None)
            if first is None:
                return path
            ns, forgive = {"config": first.get("config"), "info": _info(fqname)}, ""
        try:
            return substitute(path, ns, forgive=forgive)
        except FormulaError:
            return path

    def owner(self, step_path: tuple) -> str:
        """The fqname whose file receives the lines of ``step_path`` (``nest`` applied)."""
        depth = max(0, min(len(step_path), self.options.nest))
        return ".".join((self.recipe_name,) + tuple(step_path[:depth]))

    def _file(self, fqname: str) -> TextIO | None:
        if not self.options.enable:
            return None
        fh = self._files.get(fqname)
        if fh is None:
            path = self.path_for(fqname)
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            fh = self._files[fqname] = open(path, "w")  # noqa: SIM115 - closed by close()
            self.written.append(path)
        return fh

    def write(self, step_path: tuple | None, text: str, *, logger: str = "", level: str = "INFO") -> None:
        """One log line; ``step_path`` ``None`` is the command itself (``log-stimela.txt``)."""
        fqname = "stimela" if step_path is None else self.owner(step_path)
        fh = self._file(fqname)
        if fh is None:
            return
        stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
        name = logger or ("STIMELA" if step_path is None else f"STEPCAB.{fqname}")
        for line in str(text).splitlines() or [""]:
            fh.write(f"{stamp} {name} {level.upper()}: {line}\n")
        fh.flush()

    def open_levels(self, step_path: tuple) -> None:
        """Create the files of the recipe levels above ``step_path`` (Stimela has one per level)."""
        for i in range(len(step_path)):
            self._file(self.owner(step_path[:i]))

    def close(self) -> None:
        for fh in self._files.values():
            fh.close()
        self._files.clear()


@dataclass
class Progress:
    """``[done/total] step`` lines on a terminal (silent when ``out`` is not a tty)."""

    total: int
    out: TextIO = sys.stdout
    done: int = 0

    @property
    def enabled(self) -> bool:
        return bool(getattr(self.out, "isatty", lambda: False)())

    def start(self, label: str) -> None:
        if self.enabled:
            self.out.write(f"stepcab run: [{self.done}/{self.total}] running {label}\n")
            self.out.flush()

    def finish(self, label: str, state: str) -> None:
        self.done += 1
        if self.enabled:
            self.out.write(f"stepcab run: [{self.done}/{self.total}] {label}: {state}\n")
            self.out.flush()
