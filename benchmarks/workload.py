"""Generate benchmark DAG folders: the same DAG shapes as Stimela recipes, dag-factory YAML and
hand-written Python DAG files.

A *shape* is ``N`` recipe files × ``M`` steps. Every contender gets its own folder holding exactly
``N`` DAGs of ``M`` tasks each, chained one after the other (Stimela runs steps in order, so the
stepcab DAG is a chain too):

- ``stepcab/``: ``N`` recipe files, each ``_include``-ing the shared ``lib/cabs.yml`` (realistic
  cabs: 10-30 typed params with policies, a wrangler, an image), with recipe inputs and step params
  using formulas and ``{}`` substitutions, plus the two-line loader ``stepcab_dags.py``;
- ``dagfactory/``: ``N`` dag-factory 1.x YAML files (``BashOperator`` tasks with the command line
  the step would run, ``dependencies`` on the previous task) plus its loader ``.py``;
- ``python/``: ``N`` hand-written-style Python DAG files with the same tasks and commands.

No Airflow import here (the smoke test and the runner use it before any interpreter choice).
"""

from __future__ import annotations

import os
import random
import shutil
from dataclasses import dataclass

BASH = "airflow.providers.standard.operators.bash.BashOperator"
DTYPES = ["str", "int", "float", "bool", "File", "Directory", "MS", "List[str]", "List[int]",
          "Optional[str]", "Union[str, List[str]]", "List[File]"]
CONTENDERS = ("stepcab", "dagfactory", "python")
#: N recipes × M steps, plus one recipe of 1,000 steps
SHAPES = [(1, 10), (1, 100), (10, 10), (10, 100), (100, 10), (100, 100), (1, 1000)]


@dataclass(frozen=True)
class Cab:
    name: str
    command: str
    inputs: tuple  # (name, dtype, default-or-None, policies dict)
    outputs: tuple


def _literal(dtype: str, rnd: random.Random) -> object:
    return {"int": rnd.randint(1, 4096), "float": round(rnd.random() * 10, 3), "bool": rnd.random() < 0.5,
            "List[int]": [rnd.randint(0, 9) for _ in range(3)],
            "List[str]": ["a", "b"]}.get(dtype, f"v{rnd.randint(0, 99)}")


def make_cabs(count: int = 8, seed: int = 1) -> list[Cab]:
    """``count`` cabs with 10-30 params each (deterministic)."""
    rnd = random.Random(seed)
    cabs = []
    for c in range(count):
        n = 10 + (c * 7) % 21
        inputs = []
        for i in range(n):
            dtype = DTYPES[(c + i) % len(DTYPES)]
            pol: dict = {}
            if i == 0:
                pol = {"positional": True}
            elif dtype.startswith("List"):
                pol = {"repeat": "list"} if i % 2 else {"repeat": ","}
            elif i % 5 == 0:
                pol = {"key_value": True}
            default = _literal(dtype, rnd) if (i % 3 == 1 and dtype in ("int", "float", "bool", "str")) else None
            inputs.append((f"param_{i}" if i else "ms", "MS" if i == 0 else dtype, default, pol))
        outputs = (("out", "File", None, {"prefix": "--"}),)
        cabs.append(Cab(f"tool{c}", f"tool{c}-cli", tuple(inputs), outputs))
    return cabs


def _yaml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return "[" + ", ".join(_yaml_value(x) for x in v) + "]"
    if isinstance(v, str):
        return '"' + v.replace('"', '\\"') + '"'
    return str(v)


def cab_file_text(cabs: list[Cab]) -> str:
    """The shared ``lib/cabs.yml``."""
    out = ["# shared cab definitions (generated)", "cabs:"]
    for cab in cabs:
        out += [f"  {cab.name}:", f"    info: generated tool {cab.name} for the parse benchmark",
                f"    command: {cab.command}", "    image:", "      name: python-astro",
                "      version: cc0.2.0", "    policies:", "      prefix: '--'", "      replace: {'_': '-'}",
                "    management:", "      wranglers:", "        'ERROR: (.*)': ERROR",
                "        'progress (\\d+)%': SUPPRESS", "    inputs:"]
        for name, dtype, default, pol in cab.inputs:
            out += [f"      {name}:", f"        dtype: {dtype}", f"        info: the {name} setting of {cab.name}"]
            if name == "ms":
                out.append("        required: true")
            if default is not None:
                out.append(f"        default: {_yaml_value(default)}")
            if pol:
                out.append("        policies: {" + ", ".join(f"{k}: {_yaml_value(v)}" for k, v in pol.items()) + "}")
        out.append("    outputs:")
        for name, dtype, _, pol in cab.outputs:
            out += [f"      {name}:", f"        dtype: {dtype}", "        required: true",
                    "        policies: {" + ", ".join(f"{k}: {_yaml_value(v)}" for k, v in pol.items()) + "}"]
    return "\n".join(out) + "\n"


def _steps(cabs: list[Cab], m: int, seed: int) -> list[tuple]:
    """``(label, cab, params)`` for ``m`` steps; params as (name, yaml text, shell text)."""
    rnd = random.Random(seed)
    steps = []
    for s in range(m):
        cab = cabs[s % len(cabs)]
        params = [("ms", "=recipe.ms", "obs.ms"), ("out", f'"{{recipe.prefix}}-s{s}.out"', f"run-s{s}.out")]
        for name, dtype, _, _ in cab.inputs[1:5]:
            if dtype in ("int", "float", "bool", "List[int]"):
                v = _literal(dtype, rnd)
                params.append((name, _yaml_value(v), str(v).lower()))
            elif dtype in ("str", "Optional[str]"):
                params.append((name, f'"{{recipe.prefix}}-{name}"', f"run-{name}"))
        first = cab.inputs[1]
        if s and first[1] in ("str", "File", "Directory", "MS", "Optional[str]"):
            params.append((first[0], "=IFSET(previous.out)", f"run-s{s - 1}.out"))
        steps.append((f"step-{s:04d}", cab, params))
    return steps


def recipe_text(name: str, cabs: list[Cab], m: int, seed: int) -> str:
    out = ["_include:", "  - lib/cabs.yml", "", f"{name}:",
           f"  info: generated recipe {name} with {m} steps for the parse benchmark", "  inputs:",
           "    ms: {dtype: MS, required: true, info: the measurement set}",
           "    prefix: {dtype: str, default: run, info: prefix of the output files}",
           "    niter: {dtype: int, default: 1000, info: clean iterations}", "  steps:"]
    for label, cab, params in _steps(cabs, m, seed):
        out += [f"    {label}:", f"      info: run {cab.name}", f"      cab: {cab.name}", "      params:"]
        out += [f"        {k}: {v}" for k, v, _ in params]
    return "\n".join(out) + "\n"


def _command(cab: Cab, params: list) -> str:
    """The command line the step would run (what the BashOperator contenders execute)."""
    return " ".join([cab.command] + [f"--{name.replace('_', '-')} {shell}" for name, _, shell in params])


def dagfactory_text(dag_id: str, cabs: list[Cab], m: int, seed: int) -> str:
    out = ["default:", "  default_args:", "    owner: bench", "    start_date: 2024-01-01", "  schedule: null",
           "  catchup: false", "", f"{dag_id}:", f"  description: generated DAG {dag_id} with {m} tasks",
           "  tasks:"]
    prev = None
    for label, cab, params in _steps(cabs, m, seed):
        out += [f"    - task_id: {label}", f"      operator: {BASH}",
                f"      bash_command: {_yaml_value(_command(cab, params))}"]
        if prev:
            out.append(f"      dependencies: [{prev}]")
        prev = label
    return "\n".join(out) + "\n"


def python_text(dag_id: str, cabs: list[Cab], m: int, seed: int) -> str:
    out = ['"""Hand-written DAG (generated for the parse benchmark)."""', "import pendulum",
           "from airflow.sdk import DAG", "from airflow.providers.standard.operators.bash import BashOperator", "",
           f"with DAG(dag_id={dag_id!r}, schedule=None, catchup=False,",
           "         start_date=pendulum.datetime(2024, 1, 1, tz='UTC'), default_args={'owner': 'bench'},",
           f"         description={f'generated DAG {dag_id} with {m} tasks'!r}):"]
    names = []
    for i, (label, cab, params) in enumerate(_steps(cabs, m, seed)):
        out.append(f"    t{i} = BashOperator(task_id={label!r}, bash_command={_command(cab, params)!r})")
        names.append(f"t{i}")
    for a, b in zip(names, names[1:]):
        out.append(f"    {a} >> {b}")
    return "\n".join(out) + "\n"


STEPCAB_LOADER = "from airflow_provider_stepcab.dag_factory import build_dags\n\nbuild_dags(globals())\n"
DAGFACTORY_LOADER = ("# airflow DAG loader for dag-factory YAML files\nimport os\n\nfrom dagfactory import load_yaml_dags\n\n"
                     "load_yaml_dags(globals_dict=globals(), dags_folder=os.path.dirname(os.path.abspath(__file__)))\n")


def write_shape(root: str, n: int, m: int, *, cab_count: int = 8) -> dict:
    """Write the three folders of shape ``n`` × ``m`` under ``root`` (replacing them); return paths."""
    cabs = make_cabs(cab_count)
    paths = {}
    for contender in CONTENDERS:
        folder = os.path.join(root, f"{contender}-{n}x{m}")
        shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(folder)
        paths[contender] = folder
    os.makedirs(os.path.join(paths["stepcab"], "lib"))
    with open(os.path.join(paths["stepcab"], "lib", "cabs.yml"), "w") as fh:
        fh.write(cab_file_text(cabs))
    with open(os.path.join(paths["stepcab"], "stepcab_dags.py"), "w") as fh:
        fh.write(STEPCAB_LOADER)
    with open(os.path.join(paths["dagfactory"], "dagfactory_dags.py"), "w") as fh:
        fh.write(DAGFACTORY_LOADER)
    for i in range(n):
        name = f"bench_{n}x{m}_{i:03d}"
        with open(os.path.join(paths["stepcab"], f"{name}.yml"), "w") as fh:
            fh.write(recipe_text(name.replace("_", "-"), cabs, m, i))
        with open(os.path.join(paths["dagfactory"], f"{name}.yml"), "w") as fh:
            fh.write(dagfactory_text(name, cabs, m, i))
        with open(os.path.join(paths["python"], f"{name}.py"), "w") as fh:
            fh.write(python_text(name, cabs, m, i))
    return paths
