"""Hostile recipe files (issue 15): each is small to write and, without the loading limits, hangs,
crashes or floods the loader. Shared by test_loading_limits.py and test_hostile_folder.py.

Each writer takes a folder and returns the path of the file it wrote; every file has a ``steps:``
line, so that DAG discovery picks it up as a recipe file.
"""

from __future__ import annotations

import os
from pathlib import Path

#: lines of a file an include must never quote (shaped like /etc/shadow)
SECRET_LINES = ["root:$6$s3cr3tsalt$hashhashhash:19000:0:99999:7:::",
                "daemon:*:19000:0:99999:7:::", "alice:$6$pepper$morehash:19000:0:99999:7:::"]
#: words of those lines that no error message may contain
SECRET_WORDS = ["s3cr3tsalt", "hashhashhash", "daemon", "alice", "pepper", "morehash", "99999"]


def alias_bomb(folder: Path) -> Path:
    """The 9-line "billion laughs": 9**8 strings once every alias is expanded."""
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefg", "bcdefgh"):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    lines.append("bomb:\n  steps: {s: {cab: c, params: {v: *h}}}")
    path = folder / "alias_bomb.yml"
    path.write_text("\n".join(lines) + "\n")
    return path


def interp_bomb(folder: Path) -> Path:
    """The same with OmegaConf interpolations of lists (``${vars.a}``) instead of aliases."""
    lines = ["vars:", "  a: [x,x,x,x,x,x,x,x,x]"]
    for prev, name in zip("abcdefg", "bcdefgh"):
        lines.append(f"  {name}: [" + ",".join([f'"${{vars.{prev}}}"'] * 9) + "]")
    path = folder / "interp_bomb.yml"
    path.write_text("\n".join(lines) + "\nbomb:\n  steps: {}\n")
    return path


def string_bomb(folder: Path) -> Path:
    """Interpolated strings, each nine times the previous one (10 chars -> 3.9 GB)."""
    lines = ["vars:", '  a: "xxxxxxxxxx"']
    for prev, name in zip("abcdefghi", "bcdefghij"):
        lines.append(f'  {name}: "' + f"${{vars.{prev}}}" * 9 + '"')
    path = folder / "string_bomb.yml"
    path.write_text("\n".join(lines) + "\nbomb:\n  steps: {}\n")
    return path


def use_bomb(folder: Path) -> Path:
    """``_use`` of sections that each ``_use`` the previous one nine times."""
    lines = ["lib:", "  misc:", "    a: {x1: 1, x2: 2, x3: 3, x4: 4, x5: 5, x6: 6, x7: 7, x8: 8, x9: 9}"]
    for prev, name in zip("abcdefg", "bcdefgh"):
        lines.append(f"    {name}: {{" + ", ".join(f"k{i}: {{_use: lib.misc.{prev}}}" for i in range(9)) + "}")
    path = folder / "use_bomb.yml"
    path.write_text("\n".join(lines) + "\nbomb:\n  steps: {}\n")
    return path


def deep_flow(folder: Path, depth: int = 100_000) -> Path:
    """``depth`` nested ``[`` (libyaml's composer recursion overflows the C stack)."""
    path = folder / "deep_flow.yml"
    path.write_text("steps: " + "[" * depth + "\n")
    return path


def deep_block(folder: Path, depth: int = 20_000) -> Path:
    """Block sequences nested ``depth`` deep on one line (``- - - - x``)."""
    path = folder / "deep_block.yml"
    path.write_text("steps:\n" + "- " * depth + "x\n")
    return path


def format_bomb(folder: Path) -> Path:
    """A ``{}`` substitution asking for a 1 GB wide field."""
    path = folder / "format_bomb.yml"
    path.write_text("cabs:\n  c: {command: echo, inputs: {y: {dtype: str}}}\n"
                    "fmt:\n  inputs: {x: {dtype: str, default: a}}\n"
                    "  steps:\n    s: {cab: c, params: {y: '{recipe.x:>999999999}'}}\n")
    return path


def fifo(folder: Path) -> Path:
    """A named pipe called ``*.yml`` (opening it for reading blocks until a writer comes)."""
    path = folder / "fifo.yml"
    os.mkfifo(path)
    return path


def huge(folder: Path, size: int = 20 * 1024 * 1024) -> Path:
    """A 20 MB recipe file (valid YAML: one long list of steps)."""
    path = folder / "huge.yml"
    step = "  s{0:07d}: {{cab: c, params: {{x: 1}}}}\n"
    with open(path, "w") as fh:
        fh.write("cabs:\n  c: {command: echo}\nhuge:\n steps:\n")
        written, i = 0, 0
        while written < size:
            line = " " + step.format(i)
            fh.write(line)
            written += len(line)
            i += 1
    return path


def not_utf8(folder: Path) -> Path:
    path = folder / "not_utf8.yml"
    path.write_bytes(b"bad:\n  steps: {}\n  info: \"caf\xe9 \xff\xfe\"\n")
    return path


def secret_file(folder: Path) -> Path:
    """A file that is not a recipe, shaped like /etc/shadow (no YAML suffix)."""
    path = folder / "shadow"
    path.write_text("\n".join(SECRET_LINES) + "\n")
    return path


def include_secret(folder: Path) -> Path:
    secret = secret_file(folder)
    path = folder / "include_secret.yml"
    path.write_text(f"leak:\n  _include: {secret}\n  steps: {{}}\n")
    return path


def include_secret_yml(folder: Path) -> Path:
    """The same secret behind a ``.yml`` name, with YAML syntax errors in it."""
    secret = folder / "secret.yml"
    secret.write_text('a: "' + SECRET_LINES[0] + '\n' + SECRET_LINES[1] + ": x: y\n")
    path = folder / "include_secret_yml.yml"
    path.write_text("leak2:\n  _include: secret.yml\n  steps: {}\n")
    return path


def include_foreign_yml(folder: Path) -> Path:
    """A valid YAML mapping that is not a recipe (keys and values from the secret lines), included
    as a recipe, a step and a cab."""
    secret = folder / "accounts.yml"
    secret.write_text('alice: "$6$pepper$morehash:19000:0:99999:7:::"\n'
                      "daemon: {s3cr3tsalt: hashhashhash}\n")
    path = folder / "include_foreign_yml.yml"
    path.write_text("cabs:\n  c:\n    _include: accounts.yml\n    command: echo\n"
                    "leak3:\n  _include: accounts.yml\n  steps:\n    s:\n      _include: accounts.yml\n"
                    "      cab: c\n")
    return path


def include_loop(folder: Path) -> Path:
    (folder / "loop_a.yml").symlink_to("loop_b.yml")
    (folder / "loop_b.yml").symlink_to("loop_a.yml")
    path = folder / "include_loop.yml"
    path.write_text("loops:\n  _include: loop_a.yml\n  steps: {}\n")
    return path


def include_dir(folder: Path) -> Path:
    (folder / "adir.yml").mkdir()
    path = folder / "include_dir.yml"
    path.write_text("dirs:\n  _include: adir.yml\n  steps: {}\n")
    return path


def include_fifo(folder: Path) -> Path:
    os.mkfifo(folder / "pipe.yml")
    path = folder / "include_fifo.yml"
    path.write_text("pipes:\n  _include: pipe.yml\n  steps: {}\n")
    return path


ALL = [alias_bomb, interp_bomb, string_bomb, use_bomb, deep_flow, deep_block, format_bomb, fifo, huge,
       not_utf8, include_secret, include_secret_yml, include_loop, include_dir, include_fifo]

GOOD_RECIPE = """\
cabs:
  echo:
    command: echo
    inputs:
      text: {dtype: str, policies: {positional: true}}
good:
  info: a recipe that must survive its hostile neighbours
  steps:
    hello: {cab: echo, params: {text: hi}}
"""
