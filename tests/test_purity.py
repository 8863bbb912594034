"""recipe/ and plan/ never import Airflow (checked in a subprocess where Airflow can't be imported)."""

import pkgutil
import subprocess
import sys
from pathlib import Path

import airflow_provider_stepcab

ROOT = Path(airflow_provider_stepcab.__file__).parent

BLOCKER = """
import importlib, pkgutil, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "airflow" or name.startswith("airflow."):
            raise ImportError("airflow is blocked in this test")
        return None
sys.meta_path.insert(0, Block())
for pkg in ("airflow_provider_stepcab.recipe", "airflow_provider_stepcab.plan"):
    mod = importlib.import_module(pkg)
    for info in pkgutil.iter_modules(mod.__path__):
        importlib.import_module(f"{pkg}.{info.name}")
import airflow_provider_stepcab.cli
assert not any(m == "airflow" or m.startswith("airflow.") for m in sys.modules), "airflow got imported"
print("ok")
"""


def test_recipe_and_plan_import_without_airflow():
    out = subprocess.run([sys.executable, "-c", BLOCKER], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_every_module_was_covered():
    names = [i.name for i in pkgutil.iter_modules([str(ROOT / "recipe")])]
    assert {"backends", "recipes", "validate", "api", "resolve"} <= set(names)
