"""Command lines for every cab flavour, as Stimela 2.1.4 builds them.

* ``binary``: :func:`..plan.argv.build_argv` (the cab's command line rules).
* ``python``: ``<interpreter> -u -c <code> <params>`` where ``<code>`` imports
  ``pkg.mod`` and calls ``func(**inputs)`` and ``<params>`` is
  ``base64(zlib(json(inputs)))`` with names mangled ``-``→``_`` and ``.``→``__``.
* ``python-code``: ``<interpreter> -u -c <prelude + code + epilogue> <json(inputs)>``.
* ``casa-task``: ``xvfb-run -a casa --log2term --nologger --nologfile -c "task(**{...})"``.

Pure: no I/O, no Airflow. Outputs of Python flavours come back as
``### YIELDING CAB OUTPUT ## <json>`` lines (see :mod:`..recipe.wranglers`).
"""

from __future__ import annotations

import base64
import json
import os.path
import shlex
import zlib
from typing import Any, Callable, Optional

from ..recipe.errors import UNKNOWN_LOC, Problems, RecipeError
from ..recipe.wranglers import CAB_OUTPUT_PREFIX

_PY = {"interpreter_binary": "python", "interpreter_command": "{python} -u",
       "pre_commands": None, "post_commands": None}
_CALLABLE = {"output_dict": False, "output": None}

#: Options each flavour accepts, with Stimela's defaults.
FLAVOUR_OPTIONS: dict = {
    "binary": {},
    "python": {**_CALLABLE, **_PY},
    "python-code": {"input_dict": None, "input_vars": True, "output_vars": True, "subst": False, **_PY},
    "casa-task": {**_CALLABLE, "path": None, "opts": [], "wrapper": None},
}

#: Parameter dtypes whose outputs are "named" (passed to the cab like inputs).
FILE_TYPES = frozenset({"File", "Directory", "MS", "URI"})

#: Defaults of ``opts.runtime.casa``.
CASA_DEFAULT_OPTS = ["--log2term", "--nologger", "--nologfile"]
CASA_DEFAULT_WRAPPER = "xvfb-run -a"


class FlavourError(RecipeError):
    """A flavour is misconfigured or cannot build a command line."""


def validate_flavour(cab: Any, problems: Problems, *, key_path: str = "") -> None:
    """Report an unknown kind or option, ``output`` with ``output_dict``, or an unknown ``output``."""
    flavour = cab.flavour
    key = f"{key_path}.flavour" if key_path else "flavour"
    loc = getattr(cab, "loc", UNKNOWN_LOC)
    kind = flavour.kind or "binary"
    if kind not in FLAVOUR_OPTIONS:
        problems.error(loc, key, f"unknown flavour '{kind}'", code="bad-flavour")
        return
    options = flavour.options or {}
    for name in options:
        if name != "kind" and name not in FLAVOUR_OPTIONS[kind]:
            problems.error(loc, f"{key}.{name}", f"unknown option for flavour '{kind}'", code="bad-flavour")
    if options.get("output_dict") and options.get("output"):
        problems.error(loc, key, f"cab {cab.name}: can't specify both 'output_dict' and 'output'",
                       code="bad-flavour")
    elif options.get("output") and options["output"] not in cab.outputs:
        problems.error(loc, f"{key}.output", f"cab {cab.name}: '{options['output']}' is not a known output",
                       code="bad-flavour")
    if kind == "python" and "." not in (cab.command or ""):
        problems.error(loc, f"{key_path}.command" if key_path else "command",
                       f"cab {cab.name}: python flavour requires a command of the form module.function",
                       code="bad-flavour")


def flavour_options(cab: Any) -> dict:
    """The flavour's options with Stimela's defaults filled in."""
    kind = cab.flavour.kind or "binary"
    if kind not in FLAVOUR_OPTIONS:
        raise FlavourError(f"cab {cab.name}: unknown flavour '{kind}'")
    opts = dict(FLAVOUR_OPTIONS[kind])
    opts.update({k: v for k, v in (cab.flavour.options or {}).items() if k != "kind"})
    return opts


def is_named_output(param: Any) -> bool:
    """An output of type File/Directory/MS/URI that isn't implicit (it is passed like an input)."""
    return (bool(getattr(param, "is_output", False)) and str(param.dtype_str).replace(" ", "") in FILE_TYPES
            and not param.implicit)


def filter_input_params(cab: Any, params: dict, *, apply_nom_de_guerre: bool = True) -> dict:
    """Inputs and named outputs that are not skipped, keyed by their ``nom_de_guerre`` (Stimela's rule)."""
    result = {}
    for name, schema in {**cab.inputs, **cab.outputs}.items():
        skip = _policy(cab, schema, "skip")
        if skip is None and schema.implicit:
            skip = _policy(cab, schema, "skip_implicits")
        if skip:
            continue
        if not (name in cab.inputs or is_named_output(schema)) and skip is not False:
            continue
        key = (apply_nom_de_guerre and schema.nom_de_guerre) or name
        if name in params:
            result[key] = params[name]
        elif _policy(cab, schema, "pass_missing_as_none"):
            result[key] = None
    return result


def _policy(cab: Any, schema: Any, name: str) -> Any:
    value = getattr(schema.policies, name, None)
    return value if value is not None else getattr(cab.policies, name, None)


def mangle(name: str) -> str:
    """Parameter name → Python identifier (``-``→``_``, ``.``→``__``)."""
    return name.replace("-", "_").replace(".", "__")


def interpreter_args(opts: dict, *, python: str = "python3", virtual_env: Optional[str] = None) -> list:
    """``interpreter_command`` with ``{python}`` = ``interpreter_binary`` (in ``VENV/bin`` if given).

    ``opts`` are the cab's own flavour options: ``python`` stands in for Stimela's
    default binary name ``python`` when the cab doesn't set ``interpreter_binary``.
    """
    binary = opts.get("interpreter_binary") or python
    if virtual_env:
        binary = f"{os.path.expanduser(virtual_env)}/bin/{binary}"
    command = opts.get("interpreter_command") or FLAVOUR_OPTIONS["python"]["interpreter_command"]
    return command.format(python=binary).split()


def python_callable_code(module: str, function: str, *, yield_output: bool, verbose: bool = False,
                         pre_commands: Optional[dict] = None, post_commands: Optional[dict] = None,
                         command: Optional[str] = None) -> str:
    """The ``-c`` program of the ``python`` flavour, character for character as Stimela 2.1.4 emits it."""
    command = command or f"{module}.{function}"
    if verbose:
        msgs = [f"print('## importing {module}.{function}')",
                f"print(f'## invoking callable {command}({{repr(_inputs)}}) (as click command) "
                f"using external interpreter')",
                f"print(f'## invoking callable {command}({{repr(_inputs)}}) using external interpreter')",
                "print('## return value is ', _result)"]
    else:
        msgs = [""] * 4
    out = f"print(f'{CAB_OUTPUT_PREFIX}{{json.dumps(_result)}}')" if yield_output else ""
    lines = [
        "",
        "import sys, json, zlib, base64",
        "_inputs = json.loads(zlib.decompress(",
        " " * 24 + 'base64.b64decode(sys.argv[1].encode("ascii"))',
        " " * 20 + ').decode("ascii"))',
        "sys.path.append('.')",
        "\n".join((pre_commands or {}).values()),
        msgs[0],
        f"from {module} import {function}",
        "try:",
        "    from click import Command",
        "except ImportError:",
        "    Command = None",
        f"if Command is not None and isinstance({function}, Command):",
        f"    {msgs[1]}",
        f"    {function} = {function}.callback",
        "else:",
        f"    {msgs[2]}",
        "    pass",
        f"_result = {function}(**_inputs)",
        msgs[3],
        out,
        "\n".join((post_commands or {}).values()),
        " " * 8,
    ]
    return "\n".join(lines)


def encode_params(params: dict) -> str:
    """``base64(zlib(json(params), level 2))`` as the ``python`` flavour passes them."""
    raw = json.dumps(params).encode("ascii")
    return base64.b64encode(zlib.compress(raw, 2)).decode("ascii")


def _python_argv(cab, params, opts, *, python, virtual_env, verbose, substitute):
    command = substitute(cab.command) if substitute else cab.command
    if "." not in command:
        raise FlavourError(f"cab {cab.name}: python flavour requires a command of the form module.function")
    module, function = cab.command.rsplit(".", 1)  # Stimela imports the unsubstituted name
    if opts.get("output_dict") and opts.get("output"):
        raise FlavourError(f"cab {cab.name}: can't specify both 'output_dict' and 'output'")
    inputs = {mangle(k): v for k, v in filter_input_params(cab, params).items()}
    code = python_callable_code(
        module, function, verbose=verbose, command=command,
        yield_output=opts.get("output") is not None or bool(opts.get("output_dict")),
        pre_commands=opts.get("pre_commands"), post_commands=opts.get("post_commands"))
    args = interpreter_args(cab.flavour.options or {}, python=python, virtual_env=virtual_env)
    return args + ["-c", code, encode_params(inputs)]


def _python_code_argv(cab, params, opts, *, python, virtual_env, substitute, inline_yield):
    command = cab.command
    if opts.get("subst") and substitute:
        command = substitute(command)
    inputs = filter_input_params(cab, params)
    var = opts.get("input_dict") or "_params"
    pre = f"\nimport sys, json\n{var} = json.loads(sys.argv[1])\n"
    if opts.get("pre_commands"):
        pre += "\n".join(opts["pre_commands"].values())
    if opts.get("input_vars"):
        pre += "".join(f'{mangle(name)} = {var}["{name}"]\n' for name in inputs)
    post = ""
    yielded = [name for name, p in cab.outputs.items() if not is_named_output(p) and not p.implicit]
    if yielded:
        if inline_yield:
            post += ("import json as _json\ndef yield_output(**kw):\n"
                     f"    print({CAB_OUTPUT_PREFIX!r} + _json.dumps(kw), flush=True)\n")
        else:
            post += "from scabha.cab_utils import yield_output\n"
        if opts.get("output_vars"):
            post += "".join(f"yield_output(**{{'{name}': {mangle(name)}}})\n" for name in yielded)
    if opts.get("post_commands"):
        post += "\n".join(opts["post_commands"].values())
    args = interpreter_args(cab.flavour.options or {}, python=python, virtual_env=virtual_env)
    return args + ["-c", pre + command + post, json.dumps(inputs)]


def _casa_argv(cab, params, opts, *, substitute, casa_config):
    sub = substitute or (lambda text: text)
    config = casa_config or {}
    command = sub(cab.command)
    casa = sub(opts.get("path") or config.get("path", "casa"))
    casa_opts = opts.get("opts") or config.get("opts", CASA_DEFAULT_OPTS) or []
    casa_opts = [sub(o) for o in casa_opts]
    wrapper = opts.get("wrapper")
    if wrapper is None:
        wrapper = config.get("wrapper", CASA_DEFAULT_WRAPPER)
    wrapper = sub(wrapper).split() if wrapper else []
    code = f"{command}(**{dict(filter_input_params(cab, params))})"
    return wrapper + casa.strip().split() + list(casa_opts) + ["-c", code]


def venv_wrap(argv: list, virtual_env: str) -> list:
    """Run ``argv`` with ``VENV/bin/activate`` sourced: ``/bin/bash -c ". VENV/bin/activate && ..."``
    (the path and every argument quoted: the shell sees them as words, never as commands)."""
    activate = shlex.quote(os.path.expanduser(str(virtual_env)) + "/bin/activate")
    script = f". {activate} && " + " ".join(shlex.quote(str(a)) for a in argv)
    return ["/bin/bash", "-c", script]


def build_flavour_argv(cab: Any, params: dict, *, python: str = "python3", virtual_env: Optional[str] = None,
                       verbose: bool = False, substitute: Optional[Callable[[str], str]] = None,
                       casa_config: Optional[dict] = None, inline_yield: bool = False) -> list:
    """The argv that runs ``cab`` with resolved ``params`` (defaults filled), for any flavour.

    :param python: interpreter used when the cab leaves ``interpreter_binary`` at
        Stimela's default (``python``); pass ``"python"`` for Stimela's exact argv.
    :param virtual_env: native ``virtual_env``: binary cabs run through
        ``/bin/bash -c ". VENV/bin/activate && ..."``, Python flavours use ``VENV/bin/<python>``.
    :param verbose: like ``stimela -v`` (the ``python`` flavour's code prints progress).
    :param substitute: ``{}``-substitution of the Python/CASA command and CASA path/opts/wrapper
        (identity when ``None``). Not applied to ``binary`` cabs: substitute their command/args
        first, or call :func:`.argv.build_argv` with ``subst``.
    :param casa_config: ``opts.runtime.casa`` (``path``, ``opts``, ``wrapper``).
    :param inline_yield: ``python-code`` defines ``yield_output`` inline instead of
        importing it from ``scabha`` (for interpreters without Stimela installed).
    :raises FlavourError: unknown flavour or bad flavour options.
    """
    kind = cab.flavour.kind or "binary"
    opts = flavour_options(cab)
    if kind == "binary":
        from .argv import build_argv  # another module; imported lazily on purpose

        argv = list(build_argv(cab, params))
        return venv_wrap(argv, virtual_env) if virtual_env else argv
    if kind == "python":
        return _python_argv(cab, params, opts, python=python, virtual_env=virtual_env, verbose=verbose,
                            substitute=substitute)
    if kind == "python-code":
        return _python_code_argv(cab, params, opts, python=python, virtual_env=virtual_env,
                                 substitute=substitute, inline_yield=inline_yield)
    return _casa_argv(cab, params, opts, substitute=substitute, casa_config=casa_config)
