"""Load every public recipe of the shared corpus and every cab file of the installed cult-cargo.

Each file either loads without errors or fails with the specific, correct message
(Stimela 2.1.4 fails on the same files, for the same reasons).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from airflow_provider_stepcab.recipe.config import load_documents
from airflow_provider_stepcab.recipe.directives import package_dir
from airflow_provider_stepcab.recipe.yamlio import load_yaml_file, to_plain

from needs import missing

CORPUS = Path(os.environ.get("STEPCAB_CORPUS") or Path(__file__).resolve().parents[2] / "shared" / "corpus")
CULTCARGO = Path(package_dir("cultcargo"))


def _need_corpus() -> None:
    """Skip without ``../shared/corpus`` locally; on CI (which has it) its absence is a failure."""
    if not CORPUS.is_dir():
        missing(f"shared corpus not available at {CORPUS} (set STEPCAB_CORPUS)")


def test_corpus_is_there():
    """The parametrised corpus tests below collect nothing without the corpus: say so."""
    _need_corpus()
    assert _yaml_files(CORPUS), f"no YAML files under {CORPUS}"


def _yaml_files(root: Path) -> list[str]:
    if not root.is_dir():
        return []
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.suffix in (".yml", ".yaml"))


#: corpus file -> (file:line, message) of every expected error
CORPUS_ERRORS = {
    "stimela-tests/test_slurm.yml": [
        (4, "_include: cannot include 'test_slurm_config.yml': not found; searched ")],
    "tart-stimela-run/tart_dl.yaml": [
        (21 + i, f"_include: cannot include '(tartcargo)/{name}': package 'tartcargo' is not installed")
        for i, name in enumerate(["tart2ms.yml", "tart-download-data.yml", "disko.yml", "disko-draw.yml"])],
}

#: cult-cargo 0.2.1 file -> expected errors (a real bug in cult-cargo: casa6 settings never included)
CULTCARGO_ERRORS = {
    "casa/importgmrt.yml": [
        (11, "cabs.casa.importgmrt._use: 'lib.misc.casa6.command-data' not found")],
}


def check(path: str, expected: list, cfg) -> None:
    errs = [str(p) for p in cfg.problems.errors]
    assert len(errs) == len(expected), "\n".join(errs)
    for err, (line, message) in zip(errs, expected):
        assert err.startswith(f"{path}:{line}: {message}"), err


@pytest.mark.skipif(not CORPUS.is_dir(), reason="shared corpus not available")
@pytest.mark.parametrize("name", _yaml_files(CORPUS))
def test_corpus_file_loads(name):
    path = str(CORPUS / name)
    cfg = load_documents([path])
    if name in CORPUS_ERRORS:
        check(path, CORPUS_ERRORS[name], cfg)
    else:
        # files added to the corpus later: only missing includes/packages are acceptable failures
        for p in cfg.problems.errors:
            assert p.code == "missing-include", str(p)
    assert path in cfg.files


def test_corpus_details():
    _need_corpus()
    tart = load_documents([str(CORPUS / "tart-stimela-run" / "tart_dl.yaml")])
    cabs = to_plain(tart.tree["cabs"])
    assert cabs["casa.listobs"]["image"] == {"registry": "quay.io/stimela2", "version": "cc0.2.1", "name": "casa"}
    assert cabs["casa.listobs"]["inputs"]["vis"]["dtype"] == "MS"
    assert "wsclean" in cabs and "mkdir" in cabs and tart.recipe_names == ["tart-image"]
    assert str(CORPUS / "tart-stimela-run" / "casa" / "tclean.yaml") in tart.files

    scatter = load_documents([str(CORPUS / "stimela-tests" / "test_scatter.yml")])
    basic = to_plain(scatter.tree["lib"]["recipes"]["basic_loop"])
    assert basic["for_loop"] == {"var": "arg", "over": "args"} and basic["defaults"]["args"][0] == 1
    assert set(basic["inputs"]) == {"args", "for_loop"}

    loop = load_documents([str(CORPUS / "stimela-tests" / "test_loop_recipe.yml")])
    recipes = to_plain(loop.tree["lib"]["recipes"])
    assert recipes["same_as_cubical_image_loop"] == recipes["cubical_image_loop"]

    cc = load_documents([str(CORPUS / "cult-cargo-tests" / "test-recipe.yml")])
    assert cc.recipe_names == ["dummy-recipe"] and cc.tree["cabs"]["wsclean"]["command"] == "wsclean"


@pytest.mark.parametrize("name", _yaml_files(CULTCARGO))
def test_cultcargo_file_loads(name):
    path = str(CULTCARGO / name)
    cfg = load_documents([path])
    check(path, CULTCARGO_ERRORS.get(name, []), cfg)
    raw = load_yaml_file(path)
    if isinstance(raw, dict) and "cabs" in raw and name not in CULTCARGO_ERRORS:
        cabs = cfg.tree["cabs"]
        for cab in [c for c in raw["cabs"] if not c.startswith("_")]:
            assert cab in cabs
            assert "command" in cabs[cab], cab
            image = cabs[cab].get("image")
            if isinstance(image, dict):  # `_use: vars.cult-cargo.images` resolved
                assert {"registry", "name", "version"} <= set(image), (cab, image)
        assert not [k for k in _all_keys(cfg.tree) if k in DIRECTIVES]


DIRECTIVES = {"_include", "_include_post", "_use", "_use_post", "_scrub", "_scrub_post", "_requires",
              "_contingent"}


def _all_keys(node):
    if isinstance(node, dict):
        for k, v in node.items():
            yield k
            yield from _all_keys(v)
    elif isinstance(node, list):
        for v in node:
            yield from _all_keys(v)
