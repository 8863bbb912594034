"""load_documents(): top-level sections, recipes, defaults, files, robustness (recipe/config.py)."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

from airflow_provider_stepcab.recipe.config import DEFAULTS_FILE, LoadedConfig, load_documents
from airflow_provider_stepcab.recipe.directives import package_dir
from airflow_provider_stepcab.recipe.errors import Loc
from airflow_provider_stepcab.recipe.yamlio import CMap, to_plain

DATA = Path(__file__).parent / "data" / "loader"
CULTCARGO = package_dir("cultcargo")


def write(base: Path, name: str, text: str) -> str:
    path = base / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def errors(cfg: LoadedConfig) -> list[str]:
    return [str(p) for p in cfg.problems.errors]


def test_sections_recipes_default_and_recipe_file(tmp_path):
    f = write(tmp_path, "r.yml", """\
        opts: {backend: {select: native}}
        cabs: {c: {command: x}}
        vars: {v: 1}
        images: {img: {name: n}}
        lib: {steps: {s: {cab: c}}}
        run: {anything: 1}
        zeta: {steps: {}}
        DEFAULT: alpha
        alpha: {steps: {}}
        """)
    cfg = load_documents([f])
    assert errors(cfg) == []
    assert isinstance(cfg.tree, CMap)
    assert cfg.recipe_names == ["zeta", "alpha"] and cfg.default == "alpha"
    assert cfg.recipe_file == {"zeta": f, "alpha": f}
    t = to_plain(cfg.tree)
    assert set(t) == {"images", "lib", "cabs", "opts", "vars", "run"}
    assert t["opts"]["backend"] == {"default_registry": "quay.io/stimela2", "select": "native"}
    assert t["cabs"] == {"c": {"command": "x"}} and t["vars"]["v"] == 1 and t["run"] == {"anything": 1}
    assert set(t["lib"]["recipes"]) == {"zeta", "alpha"} and t["lib"]["steps"] == {"s": {"cab": "c"}}
    assert cfg.tree["lib"]["recipes"].key_loc("alpha") == Loc(f, 9)
    assert cfg.tree["lib"]["recipes"]["alpha"].loc == Loc(f, 9)


def test_builtin_defaults_and_cultcargo_system_config(tmp_path):
    cfg = load_documents([write(tmp_path, "r.yml", "r: {steps: {}}\n")])
    t = to_plain(cfg.tree)
    assert t["opts"]["backend"]["default_registry"] == "quay.io/stimela2"
    assert t["opts"]["log"]["name"] == "log-{info.fqname}" and t["opts"]["include"] == []
    assert t["opts"]["runtime"]["casa"]["wrapper"] == "xvfb-run -a"
    assert set(t["lib"]) == {"params", "recipes", "steps", "misc", "wisdom"}
    # cult-cargo's stimela.conf is read as a system config when cultcargo is installed (as Stimela does)
    assert t["vars"]["cult-cargo"]["images"] == {"registry": "quay.io/stimela2", "version": "cc0.2.1"}
    assert t["images"]["default-python"] == {"registry": "quay.io/stimela2", "version": "cc0.2.1",
                                             "name": "python-astro"}
    assert "numba" in t["lib"]["misc"]
    assert os.path.join(CULTCARGO, "stimela.conf") in cfg.files
    assert os.path.join(CULTCARGO, "genesis", "cult-cargo-base.yml") in cfg.files
    assert cfg.tree["opts"]["backend"].key_loc("default_registry").file == DEFAULTS_FILE


def test_files_merge_in_order_later_wins(tmp_path):
    a = write(tmp_path, "a.yml", "cabs: {c: {command: a, info: a}}\nr1: {info: a, steps: {}}\nDEFAULT: r1\n")
    b = write(tmp_path, "b.yml", "cabs: {c: {command: b}}\nr1: {info: b}\nr2: {steps: {}}\nDEFAULT: r2\n")
    cfg = load_documents([a, b])
    assert to_plain(cfg.tree["cabs"]["c"]) == {"command": "b", "info": "a"}
    assert to_plain(cfg.tree["lib"]["recipes"]["r1"]) == {"info": "b", "steps": {}}
    assert cfg.recipe_names == ["r1", "r2"] and cfg.default == "r2"
    assert cfg.recipe_file == {"r1": b, "r2": b}
    assert cfg.files[-2:] == [a, b]


def test_one_broken_file_never_hides_another(tmp_path):
    good = write(tmp_path, "good.yml", "g: {steps: {}}\n")
    cfg = load_documents([str(DATA / "broken.yml"), str(tmp_path / "absent.yml"), good])
    errs = errors(cfg)
    assert errs[0].startswith(f"{DATA / 'broken.yml'}:3: invalid YAML")
    assert errs[1].startswith(f"{tmp_path / 'absent.yml'}: cannot read file")
    assert cfg.recipe_names == ["g"] and cfg.recipe_file == {"g": good}
    assert str(DATA / "broken.yml") in cfg.files


def test_bad_top_level_values(tmp_path):
    f = write(tmp_path, "r.yml", "DEFAULT: [x]\nnotarecipe: 5\nempty:\nok: {steps: {}}\n")
    errs = errors(load_documents([f]))
    assert errs == [f"{f}:1: DEFAULT: must be a recipe name (a string), not a list",
                    f"{f}:2: notarecipe: a recipe (a mapping) was expected, got int",
                    f"{f}:3: empty: a recipe (a mapping) was expected, got nothing (null)"]
    lst = write(tmp_path, "l.yml", "- a\n- b\n")
    assert errors(load_documents([lst])) == [f"{lst}:1: top level must be a mapping, not a list"]


def test_empty_file_and_string_path(tmp_path):
    f = write(tmp_path, "e.yml", "# nothing\n")
    cfg = load_documents(f)
    assert errors(cfg) == [] and cfg.recipe_names == [] and cfg.default is None


def test_package_relative_document_path():
    cfg = load_documents(["(cultcargo)breizorro.yml", "cultcargo::casa/flag.yml"])
    assert errors(cfg) == []
    assert {"breizorro", "casa.flagdata"} <= set(cfg.tree["cabs"])
    cfg = load_documents(["(tartcargo)x.yml"])
    assert errors(cfg) == ["(tartcargo)x.yml: cannot load '(tartcargo)x.yml': package 'tartcargo' is not installed"]


def test_scalars_typed_as_stimela_sees_them(tmp_path):
    f = write(tmp_path, "r.yml", "r: {a: 1e-7, b: 2024-01-01, c: 1.5e3, d: '1e-7', steps: {}}\n")
    r = load_documents([f]).tree["lib"]["recipes"]["r"]
    assert r["a"] == 1e-7 and r["b"] == "2024-01-01" and r["c"] == 1500.0 and r["d"] == "1e-7"


def test_recipes_from_included_files_are_recipes(tmp_path):
    write(tmp_path, "inc.yml", "from-include: {steps: {}}\n")
    f = write(tmp_path, "r.yml", "_include: inc.yml\nmine: {steps: {}}\n")
    cfg = load_documents([f])
    assert cfg.recipe_names == ["from-include", "mine"]
    assert cfg.recipe_file["from-include"] == f
    assert cfg.tree["lib"]["recipes"]["from-include"].loc.file == str(tmp_path / "inc.yml")


def test_does_not_import_airflow():
    import sys
    import subprocess
    code = ("import sys; from airflow_provider_stepcab.recipe import config;"
            "config.load_documents(['(cultcargo)wsclean.yml']);"
            "assert not [m for m in sys.modules if m.split('.')[0] in ('airflow', 'cultcargo')], 'imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
