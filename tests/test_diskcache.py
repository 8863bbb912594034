"""The persistent cache shared by fresh processes (airflow_provider_stepcab/diskcache.py): an entry is
used only while the files it was built from and the package code that built it are unchanged."""

from __future__ import annotations

import os
import sys
import types

import pytest

from airflow_provider_stepcab import diskcache


@pytest.fixture
def cache(tmp_path, monkeypatch):
    directory = tmp_path / "cache"
    monkeypatch.setenv(diskcache.ENV_DIR, str(directory))
    diskcache._checked_dirs.clear()
    return directory


def test_round_trip_and_content_invalidation(cache, tmp_path):
    src = tmp_path / "recipe.yml"
    src.write_text("a: 1\n")
    diskcache.put(("k", 1), {"value": [1, 2]}, {str(src): diskcache.digest(str(src))})
    assert diskcache.get(("k", 1))[:2] == (True, {"value": [1, 2]})
    assert diskcache.get(("k", 2))[0] is False, "another key is another entry"
    src.write_text("a: 2\n")
    assert diskcache.get(("k", 1))[0] is False, "an edited source file must invalidate the entry"


def test_an_edit_of_a_loaded_package_module_invalidates_entries(cache, tmp_path, monkeypatch):
    # a stand-in package directory with one loaded module, so that no real source file is touched
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    mod_file = pkg / "builder.py"
    mod_file.write_text("X = 1\n")
    module = types.ModuleType(diskcache.PACKAGE + ".fake_builder")
    module.__file__ = str(mod_file)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setattr(diskcache, "PACKAGE_DIR", str(pkg))
    monkeypatch.setattr(diskcache, "_state_memo", None)
    assert diskcache.code_state() == {str(mod_file): (mod_file.stat().st_size, mod_file.stat().st_mtime_ns)}

    def new_process():  # the code a fresh process loads is what is on disk now
        monkeypatch.setattr(diskcache, "_state_memo", None)

    diskcache.put("entry", "built by X = 1", {})
    assert diskcache.get("entry")[:2] == (True, "built by X = 1")
    mod_file.write_text("X = 22\n")  # new code: size (and mtime) differ
    assert diskcache.get("entry")[0] is False
    # this process still runs the code it loaded: what it writes now is not trusted either
    diskcache.put("entry", "built by the old code", {})
    assert diskcache.get("entry")[0] is False
    new_process()
    diskcache.put("entry", "built by X = 22", {})
    assert diskcache.get("entry")[:2] == (True, "built by X = 22")
    st = mod_file.stat()
    os.utime(mod_file, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # same size, touched
    assert diskcache.get("entry")[0] is False
    new_process()
    diskcache.put("entry", "again", {})
    assert diskcache.get("entry")[0] is True
    mod_file.unlink()
    assert diskcache.get("entry")[0] is False, "a module that disappeared invalidates the entry"


def test_real_entries_record_the_loaded_recipe_layer(cache, monkeypatch):
    import airflow_provider_stepcab.recipe.api  # noqa: F401 - the code that builds cached recipes

    monkeypatch.setattr(diskcache, "_state_memo", None)

    state = diskcache.code_state()
    assert os.path.abspath(airflow_provider_stepcab.recipe.api.__file__) in state
    assert all(p.startswith(diskcache.PACKAGE_DIR) for p in state)


def test_a_directory_writable_by_others_is_not_used(tmp_path, monkeypatch):
    directory = tmp_path / "shared"
    directory.mkdir()
    directory.chmod(0o777)
    monkeypatch.setenv(diskcache.ENV_DIR, str(directory))
    diskcache._checked_dirs.clear()
    diskcache.put("k", "v", {})
    assert diskcache.get("k")[0] is False
    assert not any(directory.iterdir()), "nothing may be written to a world-writable directory"


def test_corrupt_entry_is_a_miss(cache):
    diskcache.put("k", "v", {})
    [entry] = [p for p in cache.rglob("*.pkl")]
    entry.write_bytes(b"not a pickle")
    assert diskcache.get("k")[0] is False
    diskcache.put("k", "v2", {})
    assert diskcache.get("k")[:2] == (True, "v2")


def test_off_disables(tmp_path, monkeypatch):
    monkeypatch.setenv(diskcache.ENV_DIR, "off")
    assert diskcache.cache_dir() is None
    diskcache.put("k", "v", {})
    assert diskcache.get("k")[0] is False


def test_another_release_does_not_read_this_releases_entries(cache, monkeypatch):
    import airflow_provider_stepcab

    diskcache.put("k", "v", {})
    assert diskcache.get("k")[0] is True
    monkeypatch.setattr(airflow_provider_stepcab, "__version__", "99.0")
    assert diskcache.get("k")[0] is False


def test_code_state_is_computed_once_per_set_of_loaded_modules(monkeypatch):
    monkeypatch.setattr(diskcache, "_state_memo", None)
    first = diskcache.code_state()
    assert diskcache.code_state() is first, "no import in between: no new walk of sys.modules"
    module = types.ModuleType(diskcache.PACKAGE + ".fake_new_module")
    module.__file__ = diskcache.__file__
    monkeypatch.setitem(sys.modules, module.__name__, module)
    assert diskcache.code_state() is not first
